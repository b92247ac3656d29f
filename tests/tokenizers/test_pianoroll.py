"""Piano rolls: round trips against our own 12-steps-per-quarter grid and program mapping, order mode, binary rolls."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest
import symusic

from museforge.tokenizers import (
    PianoRollConfig,
    PianoRollTokenizer,
    TrackSpec,
    build_tokenizer,
    load_tokenizer,
)

LPD5_PROGRAMS = [(0, True), (0, False), (25, False), (33, False), (48, False)]


def lpd5_slot(track: symusic.Track) -> int:
    if track.is_drum:
        return 0
    return 1 if track.program < 24 else 2 if track.program < 32 else 3 if track.program < 40 else 4


def expected_roll_notes(score: symusic.Score, slot_of) -> Counter:
    """(track, onset step, offset step, pitch) at 12 steps per quarter, MIDI 24..107, one voice per pitch."""
    notes: dict[tuple[int, int], dict[int, int]] = defaultdict(dict)
    for index, track in enumerate(score.tracks):
        for n in track.notes:
            if 24 <= n.pitch < 108:
                on = round(n.time * 12 / score.tpq)
                off = max(on + 1, round((n.time + n.duration) * 12 / score.tpq))
                key = (slot_of(index, track), n.pitch)
                notes[key][on] = max(off, notes[key].get(on, 0))
    out: Counter = Counter()
    for (slot, pitch), by_onset in notes.items():
        onsets = sorted(by_onset)
        for i, on in enumerate(onsets):
            off = by_onset[on] if i + 1 == len(onsets) else min(by_onset[on], onsets[i + 1])
            out[(slot, on, off, pitch)] += 1
    return out


def roll_notes(score: symusic.Score) -> Counter:
    """Decoded notes in steps (decode uses tpq 480: 40 ticks per step)."""
    out: Counter = Counter()
    for slot, track in enumerate(score.tracks):
        for n in track.notes:
            assert n.time % 40 == 0 and n.duration % 40 == 0
            out[(slot, n.time // 40, (n.time + n.duration) // 40, n.pitch)] += 1
    return out


@pytest.fixture(scope="module")
def roll_tok() -> PianoRollTokenizer:
    return PianoRollTokenizer()


def test_round_trip_with_lpd5_tracks(roll_tok: PianoRollTokenizer, scores, piece: str) -> None:
    score = scores[piece]
    roll = roll_tok.encode(score)
    assert roll.dtype == np.uint8 and roll.shape[0] == 5 and roll.shape[2:] == (48, 84)
    assert set(np.unique(roll)) <= {0, 1, 2}
    decoded = roll_tok.decode(roll)
    assert [(t.program, t.is_drum) for t in decoded.tracks] == LPD5_PROGRAMS
    assert roll_notes(decoded) == expected_roll_notes(score, lambda _i, t: lpd5_slot(t))
    assert roll.shape[1] == max(1, -(-max(k[2] for k in expected_roll_notes(score, lambda _i, t: 0)) // 48))


def test_order_assignment_keeps_chorale_voices(scores) -> None:
    satb = [TrackSpec(name, program=52) for name in ("Soprano", "Alto", "Tenor", "Bass")]
    tok = PianoRollTokenizer(PianoRollConfig(tracks=satb, assign="order"))
    score = scores["chorale"]
    decoded = tok.decode(tok.encode(score))
    assert [t.name for t in decoded.tracks] == ["Soprano", "Alto", "Tenor", "Bass"]
    assert roll_notes(decoded) == expected_roll_notes(score, lambda i, _t: i)
    merged = PianoRollTokenizer().decode(PianoRollTokenizer().encode(score))
    assert sum(len(t.notes) for t in decoded.tracks) > sum(len(t.notes) for t in merged.tracks)  # unisons
    with pytest.raises(ValueError, match="5 parts with notes"):
        tok.encode(scores["palestrina"])


def test_binary_rolls_merge_repeated_notes(roll_tok: PianoRollTokenizer, scores) -> None:
    roll = roll_tok.encode(scores["single_track"])
    onset_notes = roll_notes(roll_tok.decode(roll))
    binary_notes = roll_notes(roll_tok.decode(roll > 0))
    assert roll_notes(roll_tok.decode((roll > 0).astype(np.uint8))) == binary_notes
    # beats 3 and 4 of bar 1 repeat C4: two notes with onsets, one long note without
    assert {(1, 36, 48, 60), (1, 48, 60, 60)} <= set(onset_notes)
    assert (1, 36, 60, 60) in binary_notes and (1, 48, 60, 60) not in binary_notes
    assert sum(binary_notes.values()) < sum(onset_notes.values())


def test_decode_rejects_bad_rolls(roll_tok: PianoRollTokenizer) -> None:
    with pytest.raises(ValueError, match="shape"):
        roll_tok.decode(np.zeros((4, 1, 48, 84), dtype=np.uint8))
    with pytest.raises(ValueError, match="threshold float"):
        roll_tok.decode(np.zeros((5, 1, 48, 84), dtype=np.float32))
    empty = roll_tok.encode(symusic.Score(480))
    assert empty.shape == (5, 1, 48, 84) and not empty.any()


def test_config_save_load(tmp_path, scores) -> None:
    cfg = PianoRollConfig(
        tracks=(TrackSpec("Lead", ((0, 127),), program=73), TrackSpec("Kit", is_drum=True)),
        lowest_pitch=36,
        n_pitches=60,
        steps_per_bar=24,
        quarters_per_bar=3,
    )
    assert PianoRollConfig.from_dict(cfg.to_dict()) == cfg
    tok = build_tokenizer("pianoroll", cfg.to_dict())
    tok.save(tmp_path / "roll.json")
    loaded = load_tokenizer(tmp_path / "roll.json")
    assert isinstance(loaded, PianoRollTokenizer) and loaded.config == cfg
    roll = loaded.encode(scores["multitrack_drums"])
    assert roll.shape[0] == 2 and roll.shape[2:] == (24, 60)
    assert np.array_equal(roll, tok.encode(scores["multitrack_drums"]))
    with pytest.raises(ValueError, match="assign"):
        PianoRollConfig(assign="random")
    with pytest.raises(ValueError, match="program ranges"):
        TrackSpec("x", ((10, 200),))
