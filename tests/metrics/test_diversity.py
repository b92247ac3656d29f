"""Diversity of a set of samples against hand-computed values."""

import math

import music21
import pytest
import symusic

from museforge.data.formats import load_score
from museforge.metrics import distinct_ngram_share, mean_pitch_class_entropy, pitch_class_entropy


def test_distinct_ngram_share_counts_repeats_within_and_across_sequences():
    assert distinct_ngram_share([[1, 2, 3, 4, 5]], n=4) == 1.0  # (1234), (2345)
    assert distinct_ngram_share([[1, 2, 3, 4], [1, 2, 3, 4]], n=4) == 0.5  # one 4-gram, twice
    assert distinct_ngram_share([[7, 7, 7, 7, 7, 7]], n=4) == pytest.approx(1 / 3)  # (7777) three times
    assert distinct_ngram_share([[1, 2], [3, 4]], n=2) == 1.0
    assert math.isnan(distinct_ngram_share([[1, 2, 3]], n=4))
    with pytest.raises(ValueError, match="n must be"):
        distinct_ngram_share([[1]], n=0)


def test_mean_pitch_class_entropy_is_musPys_per_piece_value_averaged():
    chorale = load_score(music21.corpus.getWork("bach/bwv66.6"))
    drone = symusic.Score(480)
    track = symusic.Track()
    for i in range(8):
        track.notes.append(symusic.Note(i * 480, 480, 60, 80))  # only C: 0 bits
    drone.tracks.append(track)
    assert mean_pitch_class_entropy([chorale, drone]) == pytest.approx(pitch_class_entropy(chorale) / 2)
    assert math.isnan(mean_pitch_class_entropy([symusic.Score(480)]))
