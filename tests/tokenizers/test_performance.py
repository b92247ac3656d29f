"""Performance events: vocabulary layout, round trips against our own seconds and 10 ms grid, Magenta decoding."""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict

import numpy as np
import pytest
import symusic

from museforge.tokenizers import PerformanceConfig, PerformanceTokenizer, build_tokenizer, load_tokenizer


@pytest.fixture(scope="module")
def perf() -> PerformanceTokenizer:
    return PerformanceTokenizer()


def seconds_of(score: symusic.Score):
    """Tick → seconds through the tempo map, integrated here (not by symusic)."""
    tempos = sorted((t.time, t.qpm) for t in score.tempos) or [(0, 120.0)]
    if tempos[0][0] > 0:
        tempos.insert(0, (0, 120.0))
    starts, offsets = [], []
    elapsed = 0.0
    for i, (time, _) in enumerate(tempos):
        if i:
            prev_time, prev_qpm = tempos[i - 1]
            elapsed += (time - prev_time) / score.tpq * 60.0 / prev_qpm
        starts.append(time)
        offsets.append(elapsed)

    def convert(tick: int) -> float:
        i = bisect.bisect_right(starts, tick) - 1
        return offsets[i] + (tick - starts[i]) / score.tpq * 60.0 / tempos[i][1]

    return convert


def true_notes(score: symusic.Score) -> list[tuple[float, float, int]]:
    to_s = seconds_of(score)
    return [
        (to_s(n.time), to_s(n.time + n.duration), n.pitch)
        for t in score.tracks
        if not t.is_drum
        for n in t.notes
    ]


def expected_steps(score: symusic.Score) -> Counter:
    """(onset step, offset step, pitch) on the 10 ms grid, one voice per pitch, computed independently."""
    by_pitch: dict[int, dict[int, int]] = defaultdict(dict)
    for start, end, pitch in true_notes(score):
        on = round(start * 100)
        off = max(on + 1, round(end * 100))
        by_pitch[pitch][on] = max(off, by_pitch[pitch].get(on, 0))
    out: Counter = Counter()
    for pitch, notes in by_pitch.items():
        onsets = sorted(notes)
        for i, on in enumerate(onsets):
            off = notes[on] if i + 1 == len(onsets) else min(notes[on], onsets[i + 1])
            out[(on, off, pitch)] += 1
    return out


def test_vocabulary_layout(perf: PerformanceTokenizer) -> None:
    assert perf.vocab_size == 388
    names = [perf.token_name(i) for i in (0, 127, 128, 255, 256, 355, 356, 387)]
    assert names == [
        "NOTE_ON_0",
        "NOTE_ON_127",
        "NOTE_OFF_0",
        "NOTE_OFF_127",
        "TIME_SHIFT_10ms",
        "TIME_SHIFT_1000ms",
        "VELOCITY_0",
        "VELOCITY_31",
    ]
    assert (perf.note_on(60), perf.note_off(60), perf.time_shift(100), perf.velocity(31)) == (
        60,
        188,
        355,
        387,
    )
    bins = perf.velocity_bin(np.arange(1, 128))
    assert bins.min() == 0 and bins.max() == 31 and (np.diff(bins) >= 0).all()
    assert all(perf.velocity_bin(perf.bin_velocity(b)) == b for b in range(32))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        perf.token_name(388)
    with pytest.raises(ValueError, match="time shift"):
        perf.time_shift(0)


def test_round_trip_keeps_notes_on_the_10ms_grid(perf: PerformanceTokenizer, scores, piece: str) -> None:
    score = scores[piece]
    ids = perf.encode(score)
    assert ids.dtype == np.int32 and ids.min() >= 0 and ids.max() < 388
    decoded = perf.decode(ids, tpq=480, tempo=120.0)  # 9.6 ticks per 10 ms step
    got = Counter(
        (round(n.time / 9.6), round((n.time + n.duration) / 9.6), n.pitch) for n in decoded.tracks[0].notes
    )
    assert got == expected_steps(score)
    assert decoded.tracks[0].is_drum is False


def test_time_shifts_follow_the_real_clock(perf: PerformanceTokenizer, scores, piece: str) -> None:
    """Every note-on sits within half a step (5 ms) of the true onset; the shifts sum to the piece's length."""
    score = scores[piece]
    ids = perf.encode(score)
    now, onsets = 0, defaultdict(list)
    for token in ids.tolist():
        if 256 <= token < 356:
            now += token - 255
        elif token < 128:
            onsets[token].append(now / 100)
    truth = defaultdict(list)
    notes = true_notes(score)
    for start, _, pitch in notes:
        truth[pitch].append(start)
    for pitch, times in onsets.items():
        true_sorted = sorted(set(truth[pitch]))
        assert len(times) == len({round(t * 100) for t in true_sorted})
        for t in times:
            nearest = min(true_sorted, key=lambda x: abs(x - t))
            assert abs(nearest - t) <= 0.005 + 1e-6
    end = max(e for _, e, _ in notes)
    assert abs(now / 100 - end) <= 0.010 + 1e-6


def test_drums_are_dropped(perf: PerformanceTokenizer, scores) -> None:
    score = scores["multitrack_drums"]
    no_drums = score.copy()
    no_drums.tracks = [t for t in no_drums.tracks if not t.is_drum]
    assert np.array_equal(perf.encode(score), perf.encode(no_drums))


def test_decode_follows_magenta_rules(perf: PerformanceTokenizer) -> None:
    ids = [
        perf.note_off(40),
        perf.velocity(20),
        perf.note_on(60),
        perf.time_shift(50),
        perf.note_off(60),
        perf.note_on(64),
        perf.time_shift(100),
        perf.time_shift(100),
    ]
    notes = perf.decode(ids, tpq=100, tempo=60.0).tracks[0].notes  # 1 tick = 10 ms
    assert [(n.time, n.duration, n.pitch) for n in notes] == [(0, 50, 60), (50, 500, 64)]
    assert notes[0].velocity == perf.bin_velocity(20)
    with pytest.raises(ValueError, match="token ids"):
        perf.decode([388])


def test_long_gaps_and_empty_scores(perf: PerformanceTokenizer) -> None:
    score = symusic.Score(480)
    track = symusic.Track(program=0)
    track.notes.append(symusic.Note(0, 480, 60, 100))
    track.notes.append(symusic.Note(480 * 10, 480, 62, 100))  # 5 s later at 120 qpm
    score.tracks.append(track)
    ids = perf.encode(score).tolist()
    assert [perf.token_name(i) for i in ids] == [
        "VELOCITY_24",
        "NOTE_ON_60",
        "TIME_SHIFT_500ms",
        "NOTE_OFF_60",
        "TIME_SHIFT_1000ms",
        "TIME_SHIFT_1000ms",
        "TIME_SHIFT_1000ms",
        "TIME_SHIFT_1000ms",
        "TIME_SHIFT_500ms",
        "NOTE_ON_62",
        "TIME_SHIFT_500ms",
        "NOTE_OFF_62",
    ]
    assert len(perf.encode(symusic.Score(480))) == 0


def test_config_save_load(tmp_path, scores) -> None:
    cfg = PerformanceConfig(steps_per_second=125, max_shift_steps=125, num_velocity_bins=16)
    assert PerformanceConfig.from_dict(cfg.to_dict()) == cfg
    tok = build_tokenizer("performance", cfg.to_dict())
    assert tok.vocab_size == 256 + 125 + 16
    tok.save(tmp_path / "perf.json")
    loaded = load_tokenizer(tmp_path / "perf.json")
    assert isinstance(loaded, PerformanceTokenizer) and loaded.config == cfg
    assert np.array_equal(loaded.encode(scores["chorale"]), tok.encode(scores["chorale"]))
    with pytest.raises(ValueError, match="num_velocity_bins"):
        PerformanceConfig(num_velocity_bins=0)


def test_token_space_transposition_equals_tokenizing_the_transposed_score(
    perf: PerformanceTokenizer, scores, piece: str
) -> None:
    score = scores[piece]
    ids = perf.encode(score)
    for k in (-5, 2):
        moved = score.copy()
        for track in moved.tracks:
            if not track.is_drum:
                track.shift_pitch(k, inplace=True)
        np.testing.assert_array_equal(perf.transpose_ids(ids, k), perf.encode(moved))
    assert perf.transpose_ids(ids, 128) is None


def test_event_times_and_onset_pitches(perf: PerformanceTokenizer) -> None:
    ids = np.array(
        [
            perf.velocity(10),
            perf.note_on(60),
            perf.time_shift(50),
            perf.note_off(60),
            perf.note_on(64),
            perf.time_shift(100),
            perf.time_shift(25),
            perf.note_off(64),
        ]
    )
    np.testing.assert_allclose(perf.event_times(ids), [0, 0, 0, 0.5, 0.5, 0.5, 1.5, 1.75])
    np.testing.assert_array_equal(perf.onset_pitches(ids), [-1, 60, -1, -1, 64, -1, -1, -1])


def test_event_helpers_accept_the_caches_unsigned_ids(perf: PerformanceTokenizer, scores) -> None:
    ids = perf.encode(scores["chorale"])
    narrow = ids.astype(np.uint16)
    np.testing.assert_array_equal(perf.onset_pitches(narrow), perf.onset_pitches(ids))
    np.testing.assert_array_equal(perf.event_times(narrow), perf.event_times(ids))
    np.testing.assert_array_equal(perf.transpose_ids(narrow, -3), perf.transpose_ids(ids, -3))
