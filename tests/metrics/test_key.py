"""Krumhansl–Kessler key finding: exact on its own profiles, equivariant under transposition, and in agreement
with music21's implementation on real chorales."""

from __future__ import annotations

import math

import music21
import numpy as np
import pytest
import symusic

from museforge.data.formats import load_score
from museforge.generation.output import transpose
from museforge.metrics.key import PROFILES, Key, estimate_key

CHORALES = ("bach/bwv66.6", "bach/bwv7.7", "bach/bwv11.6", "bach/bwv26.6", "bach/bwv65.2")


def weighted(durations: np.ndarray, drum: bool = False) -> symusic.Score:
    """One note per pitch class (octave 4), each lasting its duration in ticks."""
    score = symusic.Score(480)
    track = symusic.Track("x", 0, drum)
    for pc, d in enumerate(durations):
        if d > 0:
            track.notes.append(symusic.Note(0, int(d), 60 + pc, 80))
    score.tracks.append(track)
    return score


@pytest.mark.parametrize(("mode", "tonic"), [("major", 5), ("minor", 9), ("major", 0), ("minor", 6)])
def test_a_profile_is_its_own_key_with_perfect_correlation(mode, tonic):
    key = estimate_key(weighted(np.roll(PROFILES[mode], tonic) * 100))
    assert (key.tonic, key.mode) == (tonic, mode)
    assert math.isclose(key.strength, 1.0, rel_tol=1e-9)


def test_no_key_without_pitched_notes_or_with_a_flat_distribution():
    assert estimate_key(symusic.Score(480)) is None
    assert estimate_key(weighted(np.full(12, 240))) is None
    assert estimate_key(weighted(PROFILES["major"] * 100, drum=True)) is None


def test_keys_are_spelled_as_musicians_spell_them():
    assert str(Key(10, "major")) == "Bb major"
    assert str(Key(8, "minor")) == "G# minor"
    assert str(Key(6, "minor")) == "F# minor"


@pytest.fixture(scope="module")
def chorales() -> dict[str, symusic.Score]:
    return {w: load_score(music21.corpus.getWork(w)) for w in CHORALES}


def test_transposing_a_chorale_moves_its_key_by_as_much(chorales):
    score = chorales["bach/bwv66.6"]
    home = estimate_key(score)
    for k in range(-6, 6):
        moved = estimate_key(transpose(score, k))
        assert (moved.tonic, moved.mode) == ((home.tonic + k) % 12, home.mode)


def test_agrees_with_music21_on_chorales(chorales):
    for work, score in chorales.items():
        theirs = music21.corpus.parse(work).analyze("key.krumhanslkessler")
        ours = estimate_key(score)
        assert (ours.tonic, ours.mode) == (theirs.tonic.pitchClass, theirs.mode), work
