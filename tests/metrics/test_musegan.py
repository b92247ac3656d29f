"""MuseGAN's per-track metrics on hand-built piano rolls (tracks, bars, 48 steps, 84 pitches from MIDI 24)."""

import math

import numpy as np
import pytest

from museforge.metrics import musegan
from museforge.tokenizers.pianoroll import PianoRollConfig, PianoRollTokenizer


def note(roll, bar, step, length, pitch_index):
    roll[bar, step, pitch_index] = 2
    roll[bar, step + 1 : step + length, pitch_index] = 1


@pytest.fixture
def melody_roll():
    """Two bars: bar 0 holds C (12 steps) and a 2-step E; bar 1 is empty."""
    roll = np.zeros((2, 48, 84), np.uint8)
    note(roll, 0, 0, 12, 36)  # MIDI 60 = C
    note(roll, 0, 12, 2, 40)  # MIDI 64 = E, shorter than 3 steps
    return roll


def test_empty_bars_pitch_classes_and_qualified_notes(melody_roll):
    assert musegan.empty_bar_rate(melody_roll) == 0.5
    assert musegan.used_pitch_classes(melody_roll) == 2.0  # the empty bar is left out
    # at 48 steps a 32nd note is 1.5 steps: the 2-step E qualifies
    assert musegan.qualified_note_rate(melody_roll) == 1.0
    assert musegan.qualified_note_rate(melody_roll, min_steps=3) == 0.5
    assert math.isnan(musegan.used_pitch_classes(np.zeros((2, 48, 84))))


def test_a_qualified_note_is_a_32nd_note_at_any_resolution():
    """The paper's 3 steps at 96 steps per bar: the same musical length, rounded up, at other resolutions."""
    assert [musegan.qualified_note_steps(s) for s in (96, 48, 24, 16)] == [3, 2, 1, 1]
    roll = np.zeros((1, 96, 84), np.uint8)
    note(roll, 0, 0, 3, 10)  # a 32nd note at 96 steps
    note(roll, 0, 10, 2, 10)  # a 64th note
    assert musegan.qualified_note_rate(roll) == 0.5
    single = np.zeros((1, 48, 84), np.uint8)
    single[0, 0, 10] = 2  # one step at 48 per bar: shorter than a 32nd
    assert musegan.qualified_note_rate(single) == 0.0
    with pytest.raises(ValueError, match="min_steps"):
        musegan.qualified_note_rate(single, min_steps=0)


def test_onset_marks_keep_repeated_notes_apart():
    roll = np.zeros((1, 48, 84), np.uint8)
    note(roll, 0, 0, 3, 10)
    note(roll, 0, 3, 3, 10)
    assert musegan.qualified_note_rate(roll, min_steps=4) == 0.0  # two notes of 3 steps
    assert musegan.qualified_note_rate(roll > 0, min_steps=4) == 1.0  # binary: one note of 6 steps


def test_note_tied_over_a_bar_line_is_one_note():
    roll = np.zeros((2, 48, 84), np.uint8)
    note(roll, 0, 46, 2, 5)
    roll[1, 0, 5] = 1
    assert musegan.qualified_note_rate(roll) == 1.0


def test_drum_pattern_with_tolerance():
    drums = np.zeros((1, 48, 84), np.uint8)
    for step in (0, 3, 6, 1):  # three on the 16th grid, one a step off it
        drums[0, step, 12] = 2
    assert musegan.drum_pattern_rate(drums) == pytest.approx((3 + 0.1) / 4)
    assert musegan.drum_pattern_rate(drums, tolerance=0.0) == pytest.approx(3 / 4)
    fine = np.zeros((1, 96, 84), np.uint8)
    fine[0, [0, 3], 12] = 2  # at 96 steps a 16th is 6 steps: step 3 is a 32nd off, weight 0
    assert musegan.drum_pattern_rate(fine) == 0.5
    with pytest.raises(ValueError, match="steps per bar"):
        musegan.drum_pattern_rate(np.zeros((1, 50, 84)))


def test_tonal_distance_hand_value():
    c, f_sharp = np.zeros((1, 48, 84)), np.zeros((1, 48, 84))
    c[0, :, 36] = 1
    f_sharp[0, :, 42] = 1
    # Tonal centroids: C = (0, 1, 0, 1, 0, .5), F# = (0, −1, 0, −1, 0, .5): distance √8.
    assert musegan.tonal_distance(c, f_sharp) == pytest.approx(math.sqrt(8))
    assert musegan.tonal_distance(c, c) == pytest.approx(0.0)
    assert math.isnan(musegan.tonal_distance(c, np.zeros((1, 48, 84))))


def test_table_from_tokenizer_rolls(fixtures_dir):
    from museforge.data.formats import load_score

    config = PianoRollConfig()
    roll = PianoRollTokenizer(config).encode(load_score(fixtures_dir / "multitrack_drums.mid"))
    names = [spec.name for spec in config.tracks]
    table = musegan.musegan_table([roll, roll], names, drum_track="Drums")
    assert table["EB"]["Guitar"] == 100.0  # the fixture has no guitar
    assert table["EB"]["Piano"] == 0.0
    assert table["DP"]["Drums"] == 100.0  # 8th-note hats and quarter kicks/snares
    assert table["UPC"]["Bass"] == 1.0  # one bass pitch class per bar
    assert set(table["TD"]) >= {"Piano-Bass", "Piano-Strings", "Bass-Strings"}
    with pytest.raises(ValueError, match="track_names"):
        musegan.musegan_metrics(roll, names[:2])
