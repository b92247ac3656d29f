import numpy as np
import symusic

from conftest import FIXTURES, corpus_path
from museforge.data.formats import load_score
from museforge.data.metadata import content_id, describe, estimate_key, family_id, split_of


def test_describe_fixtures():
    odd = describe(load_score(FIXTURES / "odd_meter.mid"))
    assert odd["time_signatures"] == ["7/8", "5/4"] and odd["bars"] == 4
    tempo = describe(load_score(FIXTURES / "tempo_changes.mid"))
    # 4 beats at 120, 4 at 90, 4 at 140, then 3.75 at 60 qpm
    assert tempo["tempo"] == 120.0
    assert abs(tempo["duration_s"] - (2 + 4 * 60 / 90 + 4 * 60 / 140 + 3.75)) < 1e-3
    multi = describe(load_score(FIXTURES / "multitrack_drums.mid"))
    assert multi["programs"] == [0, 33, -1, 48] and multi["instruments"][2] == "Drums"


def test_key_estimates():
    assert estimate_key(load_score(FIXTURES / "single_track.mid")) == "C major"
    # bwv66.6 is in F# minor (three sharps); the notated signature restricts the choice to A major / f# minor
    assert estimate_key(load_score(corpus_path("bach/bwv66.6"))) == "f# minor"


def test_content_id_ignores_file_details_but_not_notes(tmp_path):
    score = load_score(FIXTURES / "single_track.mid")
    other = score.copy()
    other.tracks[0].name = "Renamed"
    other = other.resample(960)
    for note in other.tracks[0].notes:
        note.velocity = 64
    assert content_id(score) == content_id(other)
    assert content_id(score) != content_id(score.copy().shift_pitch(1))
    moved = score.copy()
    moved.tracks[0].notes[3].time += 1
    assert content_id(score) != content_id(moved)


def test_splits_are_deterministic_and_near_the_ratios():
    rng = np.random.default_rng(0)
    ids = [f"{x:024x}" for x in rng.integers(0, 2**62, size=20000)]
    splits = [split_of(i) for i in ids]
    assert splits == [split_of(i) for i in ids]
    shares = {s: splits.count(s) / len(ids) for s in ("train", "valid", "test")}
    assert abs(shares["valid"] - 0.1) < 0.01 and abs(shares["test"] - 0.1) < 0.01
    assert [split_of(i, 0.2, 0.0) for i in ids[:50]].count("test") == 0


def test_content_id_of_real_piece_is_stable():
    path = corpus_path("bach/bwv66.6")
    assert content_id(load_score(path)) == content_id(symusic.Score.from_midi(load_score(path).dumps_midi()))


def test_transposed_copies_share_a_family_and_a_split():
    score = load_score(FIXTURES / "multitrack_drums.mid")
    up = score.copy().shift_pitch(5)
    for track in up.tracks:  # shift_pitch moves drums too; put them back: a transposition leaves drums alone
        if track.is_drum:
            track.notes = score.tracks[[t.is_drum for t in score.tracks].index(True)].notes.copy()
    assert content_id(score) != content_id(up)
    assert family_id(score) == family_id(up)
    assert split_of(family_id(score)) == split_of(family_id(up))
    assert family_id(score) != family_id(load_score(FIXTURES / "single_track.mid"))
