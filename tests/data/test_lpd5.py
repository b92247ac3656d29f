"""LPD-5 npz files as pypianoroll writes them, built here with numpy, read back with genres attached."""

import json
import zipfile

import numpy as np

from museforge.data.build import BuildOptions, build_dataset
from museforge.data.corpora import lpd5_units
from museforge.data.lpd5 import read_lpd_npz
from museforge.data.manifest import load_manifest

TRACKS = [
    ("Drums", 0, True),
    ("Piano", 0, False),
    ("Guitar", 24, False),
    ("Bass", 32, False),
    ("Strings", 48, False),
]


def write_lpd_npz(path, rolls, resolution=24, tempo=100.0):
    """Write ``rolls`` (tracks × time × 128) the way pypianoroll.save does: CSC parts + info.json."""
    arrays = {
        "tempo": np.full(rolls.shape[1], tempo),
        "downbeat": np.arange(rolls.shape[1]) % (4 * resolution) == 0,
    }
    info = {"beat_resolution": resolution, "name": path.stem}
    for i, (name, program, is_drum) in enumerate(TRACKS):
        matrix = rolls[i]
        cols = [np.flatnonzero(matrix[:, p]) for p in range(128)]
        arrays[f"pianoroll_{i}_csc_data"] = np.concatenate([matrix[c, p] for p, c in enumerate(cols)])
        arrays[f"pianoroll_{i}_csc_indices"] = np.concatenate(cols).astype(np.int32)
        arrays[f"pianoroll_{i}_csc_indptr"] = np.concatenate([[0], np.cumsum([len(c) for c in cols])]).astype(
            np.int32
        )
        arrays[f"pianoroll_{i}_csc_shape"] = np.array(matrix.shape)
        info[str(i)] = {"program": program, "is_drum": is_drum, "name": name}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("info.json", json.dumps(info))


def song(seed, steps=4 * 96):
    rng = np.random.default_rng(seed)
    rolls = np.zeros((5, steps, 128), dtype=bool)
    for t in range(0, steps, 12):
        rolls[0, t : t + 3, 36 + (t // 12) % 2 * 2] = True  # kick/snare
        rolls[3, t : t + 12, 36 + rng.integers(0, 12)] = True  # bass, one note per eighth
    rolls[1, 0:48, [60, 64, 67]] = True  # a C chord for two beats
    rolls[1, 48:96, 62] = True
    return rolls


def make_lpd(root):
    layout = {
        "TRAAAGR128F425B14B": ("b97c529ab9ef783a849b896816001748", 1),
        "TRBBBCD128F4245679": ("0a1b2c3d4e5f60718293a4b5c6d7e8f9", 2),
        "TRCCCXY128F4234567": ("ffeeddccbbaa99887766554433221100", 3),
    }
    for msd, (lpd, seed) in layout.items():
        write_lpd_npz(root / "lpd_5_cleansed" / msd[2] / msd[3] / msd[4] / msd / f"{lpd}.npz", song(seed))
    (root / "cleansed_ids.txt").write_text("".join(f"{lpd}    {msd}\n" for msd, (lpd, _) in layout.items()))
    labels = root / "labels"
    labels.mkdir()
    (labels / "id_list_rock.txt").write_text("TRAAAGR128F425B14B\nTRBBBCD128F4245679\nTRZZZ00000000000\n")
    (labels / "id_list_jazz.txt").write_text("TRBBBCD128F4245679\n")
    return layout


def test_npz_reads_back_notes_programs_and_tempo(tmp_path):
    path = tmp_path / "one.npz"
    write_lpd_npz(path, song(1))
    score = read_lpd_npz(path)
    assert score.tpq == 24 and abs(score.tempos[0].qpm - 100) < 1e-3
    assert [(t.name, t.program, t.is_drum) for t in score.tracks] == [(n, p, d) for n, p, d in TRACKS[:2]] + [
        ("Bass", 32, False)
    ]
    piano = sorted((n.time, n.duration, n.pitch) for n in score.tracks[1].notes)
    assert piano == [(0, 48, 60), (0, 48, 64), (0, 48, 67), (48, 48, 62)]
    assert len(score.tracks[2].notes) == 32  # bass: 32 eighths over 4 bars


def test_lpd5_build_attaches_genres(tmp_path):
    layout = make_lpd(tmp_path)
    units = lpd5_units(tmp_path)
    assert [u.genres for u in units] == [("rock",), ("jazz", "rock"), ()]
    build_dataset(units, tmp_path / "ds", BuildOptions(workers=1, progress=False))
    records = {r.source.rsplit("/", 1)[1].removesuffix(".npz"): r for r in load_manifest(tmp_path / "ds")}
    ids = {lpd: msd for msd, (lpd, _) in layout.items()}
    assert set(records) == set(ids)
    assert records["b97c529ab9ef783a849b896816001748"].style == "rock"
    assert records["0a1b2c3d4e5f60718293a4b5c6d7e8f9"].genres == ["jazz", "rock"]
    assert records["ffeeddccbbaa99887766554433221100"].style == "lpd"
    assert all(
        r.collection == "lpd5" and r.time_signatures == ["4/4"] and r.bars == 4 for r in records.values()
    )
