"""Per-piece facts for the manifest: a content id, key, meter, tempo, bars, instruments, size."""

from __future__ import annotations

import hashlib

import numpy as np
import symusic
from miditok.constants import MIDI_INSTRUMENTS

from museforge.score import bar_starts, end_tick, note_array

HASH_TPQ = 480
PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
# Krumhansl–Kessler key profiles (C major / C minor), the usual choice for key finding from note durations.
_MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def content_id(score: symusic.Score) -> str:
    """A hash of the music itself (notes per track at a fixed resolution), not of the file.

    Two files holding the same notes (a MIDI and the MusicXML it came from, a re-saved copy with other
    metadata) get the same id, so a dataset stores them once. Velocities and track names are left out on
    purpose: they do not change what is played.
    """
    resampled = score.resample(HASH_TPQ, min_dur=1) if score.tpq != HASH_TPQ else score
    tracks = []
    for track in resampled.tracks:
        notes = track.notes.numpy()
        arr = np.stack([notes["time"], notes["duration"], notes["pitch"]], axis=1).astype(np.int64)
        arr = arr[np.lexsort((arr[:, 2], arr[:, 1], arr[:, 0]))]
        tracks.append((-1 if track.is_drum else int(track.program), arr.tobytes()))
    digest = hashlib.sha256()
    for program, data in sorted(tracks):
        digest.update(program.to_bytes(2, "big", signed=True))
        digest.update(data)
    return digest.hexdigest()[:24]


def family_id(score: symusic.Score) -> str:
    """A transposition-invariant hash of the music: the pitched notes with pitches taken relative to the lowest.

    Pieces that differ only by transposition (the same tune notated in two keys, common in folk collections)
    share a family; splits are drawn per family so such a pair never straddles train and test.
    """
    resampled = score.resample(HASH_TPQ, min_dur=1) if score.tpq != HASH_TPQ else score
    notes = note_array(resampled, drums=False)
    if len(notes) == 0:
        return content_id(score)
    arr = np.stack([notes["time"], notes["duration"], notes["pitch"] - notes["pitch"].min()], axis=1)
    arr = arr[np.lexsort((arr[:, 2], arr[:, 1], arr[:, 0]))].astype(np.int64)
    return hashlib.sha256(arr.tobytes()).hexdigest()[:24]


def pitch_class_durations(score: symusic.Score) -> np.ndarray:
    """Total sounding time (in quarters) per pitch class over the non-drum tracks."""
    hist = np.zeros(12)
    for track in score.tracks:
        if track.is_drum or len(track.notes) == 0:
            continue
        notes = track.notes.numpy()
        np.add.at(hist, notes["pitch"] % 12, notes["duration"] / max(score.tpq, 1))
    return hist


def estimate_key(score: symusic.Score) -> str | None:
    """Key by Krumhansl–Schmuckler: the rotation of the major/minor profile best correlated with the
    duration-weighted pitch-class histogram.

    When the file notates a key signature, only its two keys (the major and its relative minor) compete, so a
    notated G major is never reported as, say, D major.
    """
    hist = pitch_class_durations(score)
    if hist.sum() == 0 or np.all(hist == hist[0]):
        return None
    candidates = [(tonic, mode) for tonic in range(12) for mode in ("major", "minor")]
    if len(score.key_signatures) > 0:
        sharps = int(score.key_signatures[0].key)
        major_tonic = (7 * sharps) % 12
        candidates = [(major_tonic, "major"), ((major_tonic + 9) % 12, "minor")]
    best, best_r = None, -2.0
    for tonic, mode in candidates:
        profile = np.roll(_MAJOR_PROFILE if mode == "major" else _MINOR_PROFILE, tonic)
        r = float(np.corrcoef(hist, profile)[0, 1])
        if r > best_r:
            best, best_r = (tonic, mode), r
    assert best is not None
    tonic, mode = best
    name = PITCH_NAMES[tonic]
    return f"{name} major" if mode == "major" else f"{name.lower()} minor"


def instrument_name(track: symusic.Track) -> str:
    """The track's own name if it has one, else its General MIDI program name."""
    if track.name.strip():
        return track.name.strip()
    if track.is_drum:
        return "Drums"
    return str(MIDI_INSTRUMENTS[int(track.program)]["name"])


def describe(score: symusic.Score) -> dict[str, object]:
    """Manifest fields derived from the notes: meter, tempo, bars, instruments, note count, duration."""
    sigs: list[str] = []
    for ts in score.time_signatures:
        label = f"{ts.numerator}/{ts.denominator}"
        if not sigs or sigs[-1] != label:
            sigs.append(label)
    seconds = score.to("second")
    return {
        "key": estimate_key(score),
        "time_signatures": sigs or ["4/4"],
        "tempo": round(float(score.tempos[0].qpm), 3) if len(score.tempos) else 120.0,
        "bars": len(bar_starts(score)) if end_tick(score) > 0 else 0,
        "instruments": [instrument_name(t) for t in score.tracks],
        "programs": [-1 if t.is_drum else int(t.program) for t in score.tracks],
        "n_notes": int(sum(len(t.notes) for t in score.tracks)),
        "duration_s": round(float(seconds.end()), 3),
    }


def split_of(piece_id: str, valid: float = 0.1, test: float = 0.1) -> str:
    """Deterministic split from an id alone (the build passes the piece's `family_id`), so a piece keeps its
    split when others are added.

    The id is hashed again, so its leading 32 bits are uniform: the first ``valid`` share goes to valid, the next
    ``test`` share to test, the rest to train.
    """
    if not (0 <= valid < 1 and 0 <= test < 1 and valid + test < 1):
        raise ValueError(f"split ratios must be in [0, 1) and sum below 1, got valid={valid}, test={test}")
    u = int(hashlib.sha256(piece_id.encode()).hexdigest()[:8], 16) / 2**32
    if u < valid:
        return "valid"
    if u < valid + test:
        return "test"
    return "train"
