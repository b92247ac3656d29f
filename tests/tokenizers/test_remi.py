"""REMI round trips against our own quantization, control tokens, BPE, save/load and pickling."""

from __future__ import annotations

import bisect
import pickle
from collections import Counter
from fractions import Fraction
from math import floor

import numpy as np
import pytest
import symusic

from museforge.score import bar_starts
from museforge.tokenizers import RemiConfig, RemiTokenizer, build_tokenizer, load_tokenizer
from museforge.tokenizers.attributes import AttributeBoundaries, bar_attributes
from museforge.tokenizers.remi import voice_programs

GRID = 48  # notes compared in 1/48 quarter notes: a multiple of every REMI grid used here


def half_up(x: Fraction) -> int:
    return floor(x + Fraction(1, 2))


def expected_notes(score: symusic.Score, cfg: RemiConfig) -> Counter:
    """(onset, duration, pitch) REMI should keep, worked out from the config without miditok.

    miditok places 8 positions per beat, the beat being the time signature's note value (so 16 per quarter in
    x/8, 4 in x/2); it rounds half up, drops time signatures outside its vocabulary and snaps durations to the
    nearest duration token (the longer one on a tie).
    """
    supported = {(den, num) for den, nums in cfg.time_signature_range for num in nums}
    sigs = sorted(
        (ts.time, ts.denominator)
        for ts in score.time_signatures
        if (ts.denominator, ts.numerator) in supported
    )
    if not sigs or sigs[0][0] > 0:
        sigs.insert(0, (0, 4))
    sig_times = [t for t, _ in sigs]
    res = max(r for *_, r in cfg.beat_res)
    durations = sorted(
        {Fraction(b) + Fraction(p, r) for b0, b1, r in cfg.beat_res for b in range(b0, b1) for p in range(r)}
        - {Fraction(0)}
        | {Fraction(max(b1 for _, b1, _ in cfg.beat_res))}
    )
    out: Counter = Counter()
    for track in score.tracks:
        if track.is_drum:
            continue
        for note in track.notes:
            if not cfg.pitch_range[0] <= note.pitch < cfg.pitch_range[1]:
                continue
            den = sigs[bisect.bisect_right(sig_times, note.time) - 1][1]
            per_quarter = Fraction(res * den, 4)
            onset = Fraction(half_up(Fraction(note.time) * per_quarter / score.tpq)) / per_quarter
            beats = Fraction(max(1, half_up(Fraction(note.duration) * per_quarter / score.tpq)), res)
            i = bisect.bisect_left(durations, beats)
            if i == len(durations) or (i > 0 and beats - durations[i - 1] < durations[i] - beats):
                i -= 1
            quarters = durations[i] * Fraction(4, den)
            key = (onset * GRID, quarters * GRID)
            assert all(k.denominator == 1 for k in key)
            out[(int(key[0]), int(key[1]), note.pitch)] += 1
    return out


def decoded_notes(score: symusic.Score) -> Counter:
    out: Counter = Counter()
    for track in score.tracks:
        for note in track.notes:
            onset, dur = Fraction(note.time * GRID, score.tpq), Fraction(note.duration * GRID, score.tpq)
            assert onset.denominator == 1 and dur.denominator == 1
            out[(int(onset), int(dur), note.pitch)] += 1
    return out


@pytest.fixture(scope="module")
def remi() -> RemiTokenizer:
    return RemiTokenizer()


@pytest.fixture(scope="module")
def remi_bpe(corpus_scores) -> RemiTokenizer:
    tok = RemiTokenizer()
    tok.train_bpe(
        [corpus_scores[n] for n in ("chorale", "folk1", "folk2", "palestrina", "quartet")],
        tok.base_vocab_size + 300,
    )
    return tok


def test_round_trip_keeps_quantized_notes(remi: RemiTokenizer, scores, piece: str) -> None:
    score = scores[piece]
    expected = expected_notes(score, remi.config)
    enc = remi.encode(score, style="classical")
    assert enc.ids.dtype == np.int32 and enc.bar_starts.dtype == np.int64
    assert decoded_notes(remi.decode(enc.ids)) == expected
    assert sum(expected.values()) > 0


@pytest.mark.parametrize("name", ["multitrack_drums", "quartet", "chorale", "palestrina"])
def test_programs_keep_every_track_apart(scores, name: str) -> None:
    """Tracks sharing a program (SATB on one, a quartet's two violins) stay apart as voice programs, each with
    its own notes, and decode with their real programs again."""
    tok = RemiTokenizer(RemiConfig(use_programs=True))
    score = scores[name]
    enc = tok.encode(score)
    pitched = [t for t in score.tracks if not t.is_drum and t.notes]
    voices = voice_programs([t.program for t in pitched])
    assert len(set(voices)) == len(voices)
    by_voice = {t.program: t for t in tok.decode(enc.ids).tracks if not t.is_drum}
    for track, voice in zip(pitched, voices, strict=True):
        assert len(by_voice[voice].notes) == sum(1 for n in track.notes if 21 <= n.pitch < 109)
    restored = tok.decode(enc)
    assert sorted(t.program for t in restored.tracks if not t.is_drum) == sorted(t.program for t in pitched)
    assert tok.vocab_size > RemiTokenizer().vocab_size


def test_a_chorale_round_trips_as_its_four_parts(scores) -> None:
    tok = RemiTokenizer(RemiConfig(use_programs=True))
    score = scores["chorale"]  # bwv66.6: Soprano, Alto, Tenor, Bass, all on program 0
    decoded = tok.decode(tok.encode(score, style="chorale"))
    assert len(decoded.tracks) == len(score.tracks) == 4
    assert [t.program for t in decoded.tracks] == [t.program for t in score.tracks]

    def quarters(track: symusic.Track, tpq: int) -> list[tuple[float, float, int]]:
        return sorted((n.time / tpq, n.duration / tpq, n.pitch) for n in track.notes)

    for source, out in zip(score.tracks, decoded.tracks, strict=True):
        assert quarters(out, decoded.tpq) == quarters(source, score.tpq)


def test_voice_programs_stay_in_the_instrument_family() -> None:
    assert voice_programs([0, 0, 0, 0]) == [0, 1, 2, 3]
    assert voice_programs([40, 40, 41, 42]) == [40, 43, 41, 42]
    assert voice_programs([53] * 8) == [53, 48, 49, 50, 51, 52, 54, 55]
    assert voice_programs([5, 73]) == [5, 73]


def test_bar_starts_point_at_bars_followed_by_attributes(remi: RemiTokenizer, scores, piece: str) -> None:
    enc = remi.encode(scores[piece], style="folk")
    ids = enc.ids
    assert ids[0] == remi.style_token("folk")
    assert (ids[enc.bar_starts] == remi.bar_id).all()
    assert np.count_nonzero(ids == remi.bar_id) == len(enc.bar_starts)
    assert np.isin(ids[enc.bar_starts + 1], remi.rhythm_ids).all()
    assert np.isin(ids[enc.bar_starts + 2], remi.polyphony_ids).all()
    assert remi.is_control(ids).sum() == 1 + 2 * len(enc.bar_starts)


def test_bars_and_attribute_tokens_match_the_score(remi: RemiTokenizer, scores, fixture_piece: str) -> None:
    """Attribute tokens describe the music the tokens hold (measured on the decoded score, whose long notes are
    clipped to the longest duration token), bar for bar."""
    score = scores[fixture_piece]
    enc = remi.encode(score)
    assert len(enc.bar_starts) == len(bar_starts(score))
    rhythm, poly = AttributeBoundaries().classes(*bar_attributes(remi.decode(enc.ids)))
    assert [remi.attribute_tokens(r, p) for r, p in zip(rhythm, poly, strict=True)] == [
        list(enc.ids[i + 1 : i + 3]) for i in enc.bar_starts
    ]


def test_control_tokens_are_ignored_by_decode(remi: RemiTokenizer, scores) -> None:
    score = scores["chorale"]
    plain = remi.encode(score, attributes=False)
    assert not remi.is_control(plain.ids).any()
    assert (plain.ids[plain.bar_starts] == remi.bar_id).all()
    controlled = remi.encode(score, style="chorale")
    assert decoded_notes(remi.decode(controlled.ids)) == decoded_notes(remi.decode(plain.ids))
    # control tokens scattered anywhere (as a sampler may leave them) change nothing either
    noisy = np.insert(plain.ids, [0, 5, 17], [remi.style_token("user"), *remi.attribute_tokens(7, 3)])
    assert decoded_notes(remi.decode(noisy)) == decoded_notes(remi.decode(plain.ids))


def test_control_token_names_and_errors(remi: RemiTokenizer) -> None:
    assert remi.token_name(remi.style_token("Chorale")) == "Style_chorale"
    assert [remi.token_name(i) for i in remi.attribute_tokens(0, 7)] == ["Rhythm_0", "Polyphony_7"]
    assert len(remi.control_token_ids()) == len(remi.config.styles) + 16
    with pytest.raises(ValueError, match="unknown style"):
        remi.style_token("disco")
    with pytest.raises(ValueError, match="rhythm class"):
        remi.attribute_tokens(8, 0)
    lpd = RemiTokenizer(RemiConfig(styles=(*RemiConfig().styles, "Hip Hop", "rock")))
    assert lpd.token_name(lpd.style_token("hip_hop")) == "Style_hip-hop"
    assert lpd.style_token("chorale") == remi.style_token("chorale")


def test_empty_score_encodes_to_style_only(remi: RemiTokenizer) -> None:
    enc = remi.encode(symusic.Score(480), style="user")
    assert enc.ids.tolist() == [remi.style_token("user")] and len(enc.bar_starts) == 0
    assert sum(len(t.notes) for t in remi.decode(enc.ids).tracks) == 0


def test_bpe_compresses_keeps_bars_and_round_trips(
    remi: RemiTokenizer, remi_bpe: RemiTokenizer, scores
) -> None:
    assert remi_bpe.vocab_size == remi.vocab_size + 300
    assert remi_bpe.style_token("folk") == remi.style_token("folk")
    for name in ("folk4", "quartet", "odd_meter"):
        plain, packed = remi.encode(scores[name], style="folk"), remi_bpe.encode(scores[name], style="folk")
        if name != "odd_meter":  # 7/8 bars share little with the training pieces
            assert len(packed.ids) < 0.8 * len(plain.ids), (name, len(packed.ids), len(plain.ids))
            assert (packed.ids >= remi_bpe.base_vocab_size).any()
        assert (packed.ids[packed.bar_starts] == remi_bpe.bar_id).all()
        assert len(packed.bar_starts) == len(plain.bar_starts)
        assert np.array_equal(packed.ids[packed.bar_starts + 1], plain.ids[plain.bar_starts + 1])
        assert decoded_notes(remi_bpe.decode(packed.ids)) == decoded_notes(remi.decode(plain.ids))
    merged = next(
        i for i in range(remi_bpe.base_vocab_size, remi_bpe.vocab_size) if "+" in remi_bpe.token_name(i)
    )
    assert "Bar_None" not in remi_bpe.token_name(merged)


def test_save_load_and_pickle_encode_identically(remi_bpe: RemiTokenizer, scores, tmp_path) -> None:
    path = tmp_path / "remi.json"
    remi_bpe.save(path)
    loaded = load_tokenizer(path)
    assert isinstance(loaded, RemiTokenizer) and loaded.config == remi_bpe.config and loaded.is_trained
    clone = pickle.loads(pickle.dumps(remi_bpe))
    for name in ("chorale", "multitrack_drums"):
        ref = remi_bpe.encode(scores[name], style="chorale").ids
        assert np.array_equal(loaded.encode(scores[name], style="chorale").ids, ref)
        assert np.array_equal(clone.encode(scores[name], style="chorale").ids, ref)


def test_config_round_trip_and_overrides(tmp_path) -> None:
    cfg = RemiConfig(
        use_chords=True,
        use_programs=True,
        styles=("folk", "rock"),
        polyphony_boundaries=(1.0, 1.1, 1.2, 1.5, 2.0, 2.5, 3.0),
    )
    assert RemiConfig.from_dict(cfg.to_dict()) == cfg
    tok = build_tokenizer("remi", cfg.to_dict())
    tok.save(tmp_path / "t.json")
    assert load_tokenizer(tmp_path / "t.json").config == cfg
    assert build_tokenizer("remi", {"use_programs": True}).config.use_programs
    with pytest.raises(ValueError, match="unknown RemiConfig fields: colour"):
        RemiConfig.from_dict({"colour": 1})
    with pytest.raises(ValueError, match="pitch_range"):
        RemiConfig(pitch_range=(100, 20))
    with pytest.raises(ValueError, match="style names"):
        RemiConfig(styles=("rock/pop",))
    with pytest.raises(ValueError, match="vocab_size"):
        RemiTokenizer().train_bpe([], 10)


def test_token_space_transposition_equals_tokenizing_the_transposed_score(
    remi: RemiTokenizer, scores, piece: str
) -> None:
    score = scores[piece]
    ids = remi.encode(score, style="folk").ids
    for k in (-3, 4):
        moved = score.copy()
        for track in moved.tracks:
            if not track.is_drum:
                track.shift_pitch(k, inplace=True)
        np.testing.assert_array_equal(remi.transpose_ids(ids, k), remi.encode(moved, style="folk").ids)
    assert remi.transpose_ids(ids, 90) is None


def test_token_space_transposition_refuses_bpe(remi_bpe: RemiTokenizer, scores) -> None:
    with pytest.raises(ValueError, match="without BPE"):
        remi_bpe.transpose_ids(remi_bpe.encode(scores["chorale"]).ids, 1)
