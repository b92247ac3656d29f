"""LPD-5 (Lakh Pianoroll Dataset, 5 tracks) read with numpy alone.

An LPD npz file is what pypianoroll's ``save`` writes: per track ``pianoroll_<i>_csc_{data,indices,indptr,shape}``
(a scipy CSC matrix of shape time × 128), optional ``tempo`` and ``downbeat`` arrays per time step, and an
``info.json`` member with the resolution (``resolution``, or ``beat_resolution`` in files written by
pypianoroll < 1.0) and per track ``{"program", "is_drum", "name"}`` under keys "0", "1", ….

Genres follow LPD-5-cleansed: ``id_list_<genre>.txt`` files list Million Song Dataset ids; ``cleansed_ids.txt``
pairs each LPD file id (the npz name) with its MSD id. In the LPD folder tree the npz also sits in a folder named
after its MSD id, which is used when ``cleansed_ids.txt`` is absent.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import numpy as np
import symusic

from museforge.data.limits import InputError

_MSD_ID = re.compile(r"^TR[A-Z0-9]{16}$")


def _dense_from_csc(
    data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, shape: np.ndarray
) -> np.ndarray:
    """Rebuild a dense (time, 128) matrix from CSC components without scipy's help."""
    n_rows, n_cols = (int(x) for x in shape)
    dense = np.zeros((n_rows, n_cols), dtype=data.dtype if data.size else np.uint8)
    cols = np.repeat(np.arange(n_cols), np.diff(indptr))
    dense[indices, cols] = data
    return dense


def read_lpd_npz(path: Path) -> symusic.Score:
    """Read one LPD/pypianoroll npz file into a multi-track Score (4/4, tempo from the file)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files if k != "info.json"}
            if "info.json" not in npz.files:
                raise InputError("npz has no info.json (not written by pypianoroll)")
            raw = npz["info.json"]  # numpy hands a non-.npy member back as bytes
            info = json.loads(bytes(raw).decode("utf-8"))
    except (OSError, ValueError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise InputError(f"unreadable npz: {exc}") from exc
    resolution = int(info.get("resolution") or info.get("beat_resolution") or 0)
    if resolution <= 0:
        raise InputError("npz info.json has no positive resolution")
    score = symusic.Score(resolution)
    tempo = arrays.get("tempo")
    qpm = float(tempo.reshape(-1)[0]) if tempo is not None and tempo.size else 120.0
    score.tempos.append(symusic.Tempo(0, qpm))
    if tempo is not None and tempo.size > 1:
        flat = tempo.reshape(-1)
        for step in np.flatnonzero(np.diff(flat)) + 1:
            score.tempos.append(symusic.Tempo(int(step), float(flat[step])))
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    index = 0
    while str(index) in info:
        meta = info[str(index)]
        prefix = f"pianoroll_{index}"
        track = symusic.Track(
            name=str(meta.get("name") or ""),
            program=int(meta.get("program") or 0),
            is_drum=bool(meta.get("is_drum")),
        )
        if f"{prefix}_csc_data" in arrays:
            roll = _dense_from_csc(
                arrays[f"{prefix}_csc_data"],
                arrays[f"{prefix}_csc_indices"],
                arrays[f"{prefix}_csc_indptr"],
                arrays[f"{prefix}_csc_shape"],
            )
            _roll_to_notes(roll, track)
        score.tracks.append(track)
        index += 1
    score.tracks = [t for t in score.tracks if len(t.notes)]
    if not score.tracks:
        raise InputError("no notes")
    return score


def _roll_to_notes(roll: np.ndarray, track: symusic.Track) -> None:
    """Append one note per run of non-zero steps per pitch; boolean rolls get velocity 100."""
    active = roll > 0
    padded = np.zeros((active.shape[0] + 2, active.shape[1]), dtype=np.int8)
    padded[1:-1] = active
    change = np.diff(padded, axis=0)
    starts_t, starts_p = np.nonzero(change == 1)
    ends_t, ends_p = np.nonzero(change == -1)
    order_s = np.lexsort((starts_t, starts_p))
    order_e = np.lexsort((ends_t, ends_p))
    for s, e, pitch in zip(starts_t[order_s], ends_t[order_e], starts_p[order_s], strict=True):
        value = roll[s, pitch]
        velocity = 100 if roll.dtype == bool or value == 1 else int(min(127, max(1, value)))
        track.notes.append(symusic.Note(int(s), int(e - s), int(pitch), velocity))


def read_genre_labels(root: Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    """``(msd_id -> sorted genres, lpd_id -> msd_id)`` from the id lists and cleansed_ids.txt under ``root``."""
    genres: dict[str, set[str]] = {}
    for path in sorted(root.rglob("id_list_*.txt")):
        genre = path.stem.removeprefix("id_list_")
        for line in path.read_text(encoding="utf-8").split():
            genres.setdefault(line.strip(), set()).add(genre)
    lpd_to_msd: dict[str, str] = {}
    for path in sorted(root.rglob("cleansed_ids.txt")):
        for line in path.read_text(encoding="utf-8").splitlines():
            parts = line.split()
            if len(parts) >= 2:
                lpd_to_msd[parts[0]] = parts[1]
    return {k: sorted(v) for k, v in genres.items()}, lpd_to_msd


def lpd5_files(root: Path) -> list[tuple[Path, tuple[str, ...]]]:
    """Every npz under ``root`` with its last.fm genres (none when its MSD id is unknown), in a stable order."""
    if not root.is_dir():
        raise ValueError(f"LPD-5 folder {root} does not exist")
    genres, lpd_to_msd = read_genre_labels(root)
    out = []
    for path in sorted(root.rglob("*.npz")):
        msd_id = lpd_to_msd.get(path.stem) or (path.parent.name if _MSD_ID.match(path.parent.name) else None)
        out.append((path, tuple(genres.get(msd_id, ())) if msd_id else ()))
    return out
