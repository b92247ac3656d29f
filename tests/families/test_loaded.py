"""`generate_song` on checkpoints of tiny models trained here on real music (chorales, folk tunes): bar counts,
styles, primers, attribute plans, seconds, seeds, controls, the model cache and the originality guard."""

from pathlib import Path

import music21
import numpy as np
import pytest
import symusic
import torch

from museforge.data.formats import list_units, load_score, read_unit
from museforge.families.loaded import GeneratedSong
from museforge.families.performance.model import (
    PerformanceRNN,
    PerformanceRNNConfig,
    controls_for_events,
    density_class,
    unset_at_random,
)
from museforge.families.performance.sample import close_open_notes
from museforge.families.remi.model import TransformerConfig, TransformerLM
from museforge.families.serving import clear_model_cache, generate_song, get_model, half_precision_kl
from museforge.generation.precision import PrecisionDecision, model_key, save_decision
from museforge.machine import cpu_model
from museforge.metrics.originality import OriginalityIndex
from museforge.models.checkpoint import save_checkpoint
from museforge.score import bar_starts
from museforge.tokenizers import build_tokenizer
from museforge.training import TrainConfig, Trainer

REMI = build_tokenizer("remi")
PERF = build_tokenizer("performance")
CHORALES = ("bach/bwv66.6", "bach/bwv7.7", "bach/bwv10.7", "bach/bwv101.7")


def chorales() -> list[symusic.Score]:
    return [load_score(music21.corpus.getWork(n)) for n in CHORALES]


def folk_tunes(n: int = 6) -> list[symusic.Score]:
    """Single-line German folk songs: sparse (~1 note/s) next to four-voice chorales (~7 notes/s)."""
    units = list_units(Path(music21.corpus.getWork("essenFolksong/altdeu10")))[:n]
    return [read_unit(u).score for u in units]


def train(model: torch.nn.Module, windows: list, out: Path, epochs: int) -> None:
    """Module fixtures run before the per-test one-thread fixture, so they set the thread count themselves."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = TrainConfig(
        out_dir=str(out / "run"),
        batch_size=16,
        epochs=epochs,
        lr=5e-3,
        warmup_steps=10,
        progress=False,
        checkpoint_every=100_000,
    )
    Trainer(model, windows, cfg).fit()
    torch.set_num_threads(threads)
    model.eval()


@pytest.fixture(scope="module")
def remi_ckpt(tmp_path_factory) -> Path:
    """A tiny REMI Transformer on chorales (style chorale) and folk songs (style folk), saved as a checkpoint."""
    out = tmp_path_factory.mktemp("remi")
    seqs = [REMI.encode(s, style="chorale").ids for s in chorales()]
    seqs += [REMI.encode(s, style="folk").ids for s in folk_tunes()]
    tokens = torch.as_tensor(np.concatenate([np.append(s, REMI.eos_id) for s in seqs]).astype(np.int64))
    windows = [tokens[i : i + 64] for i in range(0, len(tokens) - 64, 16)]
    torch.manual_seed(0)
    config = TransformerConfig.preset("tiny", vocab_size=REMI.vocab_size, d_model=64, d_ff=128, dropout=0.0)
    model = TransformerLM(config)
    train(model, windows, out, epochs=12)
    return save_checkpoint(out / "ckpt", model, tokenizer=REMI.state_dict(), step=1, metrics={})


def event_controls(ids: np.ndarray) -> torch.Tensor:
    return controls_for_events(PERF.event_times(ids), PERF.onset_pitches(ids))


def transposed(score: symusic.Score, k: int) -> symusic.Score:
    out = score.copy()
    for track in out.tracks:
        track.shift_pitch(k, inplace=True)
    return out


@pytest.fixture(scope="module")
def perf_ckpt(tmp_path_factory) -> Path:
    """A tiny Performance RNN on dense chorales and sparse folk songs with their controls (30 % unset)."""
    out = tmp_path_factory.mktemp("perf")
    gen = torch.Generator().manual_seed(0)
    windows = []
    for score in [*chorales(), *folk_tunes()]:
        for k in (-6, -3, 0, 3):  # enough keys for the pitch-class control to mean something
            ids = PERF.encode(transposed(score, k)).astype(np.int64)
            controls = event_controls(ids)
            for i in range(0, len(ids) - 65, 32):
                c = unset_at_random(controls[i : i + 65], 0.3, gen)
                windows.append({"input_ids": torch.as_tensor(ids[i : i + 65]), "controls": c})
    torch.manual_seed(0)
    model = PerformanceRNN(PerformanceRNNConfig(embed_dim=32, hidden_size=128, n_layers=1))
    train(model, windows, out, epochs=30)
    return save_checkpoint(out / "ckpt", model, tokenizer=PERF.state_dict(), step=1, metrics={})


def reread(song: GeneratedSong) -> symusic.Score:
    """The song as a MIDI file reads back: proof that it is valid MIDI."""
    return symusic.Score.from_midi(song.score.dumps_midi())


def test_every_remi_sample_has_exactly_the_requested_bars_and_decodes(remi_ckpt):
    for seed in range(6):
        songs = generate_song(remi_ckpt, style="chorale", bars=3, seed=seed, num_samples=4, temperature=1.2)
        assert len(songs) == 4
        for song in songs:
            assert song.tokens.count(REMI.bar_id) == 3 and song.tokens[-1] == REMI.eos_id
            notes = [n for t in reread(song).tracks for n in t.notes]
            assert notes and all(n.duration > 0 for n in notes)
            starts = bar_starts(song.score)  # follows the sampled time signatures
            assert np.searchsorted(starts, max(n.time for n in notes), side="right") <= 3
            assert song.params["seed"] == seed and song.params["bars"] == 3 and song.new_tokens > 3


def test_style_prompt_is_honored(remi_ckpt):
    """Chorales are four voices, the folk songs one line: the asked style shows in the notes per onset."""

    def notes_per_onset(style: str) -> float:
        songs = generate_song(remi_ckpt, style=style, bars=4, seed=0, num_samples=8)
        assert all(s.tokens[0] == REMI.style_token(style) for s in songs)
        notes = [n.time for s in songs for t in s.score.tracks for n in t.notes]
        return len(notes) / len(set(notes)) if notes else 0.0

    chorale, folk = notes_per_onset("chorale"), notes_per_onset("folk")
    assert chorale > folk + 1.0, (chorale, folk)


def test_primer_continuation_keeps_the_primer(remi_ckpt, tmp_path):
    """The model hears the chorale's first two bars; the song keeps them as the chorale's own four parts, note for
    note with their programs, and the model's bars follow on a track of their own."""
    primer = tmp_path / "primer.mid"
    chorale = load_score(music21.corpus.getWork("bach/bwv66.6"))
    for track, program in zip(chorale.tracks, (52, 40, 41, 32), strict=True):
        track.program = program
    chorale.dump_midi(str(primer))
    source = load_score(primer)
    primer_tokens = REMI.encode(source, style="chorale")
    head = primer_tokens.ids[: primer_tokens.bar_starts[2]].tolist()
    cut = int(bar_starts(source)[2])
    expected = [sorted((n.time, n.pitch, n.duration) for n in t.notes if n.time < cut) for t in source.tracks]
    songs = generate_song(
        remi_ckpt, style="chorale", primer=primer, primer_bars=2, bars=2, seed=3, num_samples=3
    )
    for song in songs:
        assert song.tokens[: len(head)] == head
        assert song.tokens.count(REMI.bar_id) == 4 and song.params["primer_bars_used"] == 2
        score = reread(song)
        parts = [(t.name, t.program) for t in score.tracks]
        assert parts == [("Soprano", 52), ("Alto", 40), ("Tenor", 41), ("Bass", 32), ("ckpt continuation", 0)]
        kept = [sorted((n.time, n.pitch, n.duration) for n in t.notes) for t in score.tracks[:4]]
        assert kept == expected
        assert min(n.time for n in score.tracks[4].notes) >= cut  # new music after the primer


def test_attribute_plan_forces_the_tokens(remi_ckpt):
    plan = {"rhythm": [7, None, 0], "polyphony": [0, None, None]}
    for song in generate_song(remi_ckpt, style="folk", bars=3, **plan, seed=5, num_samples=4):
        ids = song.tokens
        bars = [i for i, t in enumerate(ids) if t == REMI.bar_id]
        assert ids[bars[0] + 1 : bars[0] + 3] == REMI.attribute_tokens(7, 0)
        assert ids[bars[2] + 1] == REMI.rhythm_ids[0] and ids[bars[2] + 2] in REMI.polyphony_ids
    songs = generate_song(remi_ckpt, style="folk", bars=2, rhythm=[3, 6], polyphony=[3, 6], seed=1)
    ids = songs[0].tokens
    bars = [i for i, t in enumerate(ids) if t == REMI.bar_id]
    assert [ids[b + 1 : b + 3] for b in bars] == [REMI.attribute_tokens(3, 3), REMI.attribute_tokens(6, 6)]


def test_seeds_reproduce_and_differ(remi_ckpt):
    a = generate_song(remi_ckpt, style="folk", bars=2, seed=7, num_samples=2)
    b = generate_song(remi_ckpt, style="folk", bars=2, seed=7, num_samples=2)
    c = generate_song(remi_ckpt, style="folk", bars=2, seed=8, num_samples=2)
    assert [s.tokens for s in a] == [s.tokens for s in b]
    assert [s.tokens for s in a] != [s.tokens for s in c]
    assert a[0].tokens != a[1].tokens
    drawn = generate_song(remi_ckpt, style="folk", bars=1)[0]
    again = generate_song(remi_ckpt, style="folk", bars=1, seed=drawn.params["seed"])[0]
    assert drawn.tokens == again.tokens  # a drawn seed is recorded, so any song can be made again


def test_model_cache_loads_once(remi_ckpt):
    clear_model_cache()
    first = get_model(remi_ckpt)
    assert get_model(str(remi_ckpt)) is first
    generate_song(remi_ckpt, style="folk", bars=1, seed=0)
    assert get_model(remi_ckpt) is first
    assert first.family == "transformer" and "folk" in first.styles


def test_auto_precision_samples_small_batches_in_float16(remi_ckpt, tmp_path):
    """Where this machine's probe found float16 faster (recorded here: the speed is the machine's), batches up
    to 4 sample in float16."""
    save_decision(
        PrecisionDecision(
            "fp16", "faster", cpu_model(), torch.__version__, model_key(remi_ckpt / "model.safetensors"), 1
        ),
        tmp_path,
    )
    clear_model_cache()  # an earlier load may have followed this machine's own probe
    loaded = get_model(remi_ckpt, precision="auto", cache_dir=tmp_path)
    assert loaded is not get_model(remi_ckpt) and loaded.precision == "fp16 up to batch 4"
    assert half_precision_kl(loaded.checkpoint.model, loaded.half) < 1e-3
    model, precision = loaded.sampler(1)
    assert precision == "fp16" and next(model.parameters()).dtype == torch.float16
    assert loaded.sampler(8) == (loaded.checkpoint.model, "fp32")
    songs = generate_song(loaded, style="chorale", bars=12, seed=3)  # slides past the window in fp16 too
    assert songs[0].params["precision"] == "fp16" and reread(songs[0]).tracks
    assert songs[0].tokens.count(REMI.bar_id) == 12
    batch = generate_song(loaded, style="folk", bars=2, seed=3, num_samples=5)
    assert {s.params["precision"] for s in batch} == {"fp32"}
    assert get_model(remi_ckpt, precision="fp16").precision == "fp16"


def test_auto_precision_keeps_float32_where_float16_overflows(remi_ckpt, tmp_path):
    """Embeddings past float16's range (65504) make its logits inf: `auto` must notice and stay float32."""
    ckpt = get_model(remi_ckpt).checkpoint
    model = TransformerLM(ckpt.config)
    model.load_state_dict(ckpt.model.state_dict())
    with torch.no_grad():
        model.tok_emb.weight.mul_(1e6)
    path = save_checkpoint(tmp_path / "loud", model, tokenizer=REMI.state_dict(), step=1, metrics={})
    loaded = get_model(path, precision="auto")
    assert loaded.half is None and loaded.precision == "fp32"
    assert generate_song(loaded, style="folk", bars=2, seed=0)[0].params["precision"] == "fp32"


def test_precision_errors_are_clear(remi_ckpt, perf_ckpt):
    with pytest.raises(ValueError, match=r"precision must be one of \('fp32', 'fp16', 'auto'\), got 'int8'"):
        get_model(remi_ckpt, precision="int8")
    with pytest.raises(ValueError, match="precision fp16 is not for a Performance RNN: it samples in fp32"):
        get_model(perf_ckpt, precision="fp16")
    assert get_model(perf_ckpt, precision="auto").precision == "fp32"


def test_sampling_slides_past_the_context_window(remi_ckpt):
    """The tiny model's window is 128 tokens; 12 bars of chorale run past it and still come out whole."""
    song = generate_song(remi_ckpt, style="chorale", bars=12, seed=0)[0]
    assert len(song.tokens) > 128 and song.tokens.count(REMI.bar_id) == 12


def test_remi_errors_are_clear(remi_ckpt):
    with pytest.raises(ValueError, match=r"unknown style 'jazz'.*chorale, folk"):
        generate_song(remi_ckpt, style="jazz")
    with pytest.raises(ValueError, match="bars: Input should be greater than or equal to 1"):
        generate_song(remi_ckpt, bars=0)
    with pytest.raises(ValueError, match="top_p: Input should be greater than 0"):
        generate_song(remi_ckpt, top_p=0.0)
    with pytest.raises(
        ValueError, match="a REMI Transformer model does not take seconds; it takes style, bars"
    ):
        generate_song(remi_ckpt, seconds=10)
    with pytest.raises(ValueError, match="does not take candidates"):
        generate_song(remi_ckpt, candidates=4)
    with pytest.raises(ValueError, match=r"rhythm\.0: Input should be less than or equal to 7"):
        generate_song(remi_ckpt, bars=2, rhythm=[9], polyphony=[0])
    with pytest.raises(ValueError, match="rhythm has 3 entries but only 2 bars"):
        generate_song(remi_ckpt, bars=2, rhythm="-,-,1", polyphony=[None, None, 1])
    with pytest.raises(ValueError, match="unknown model 'no-such-model'"):
        generate_song("no-such-model")
    with pytest.raises(ValueError, match=r"primer .* does not exist"):
        generate_song(remi_ckpt, primer="missing.mid")


def test_originality_guard_flags_copies_of_the_index(remi_ckpt, tmp_path):
    """An index that holds a song's music (as if the model had copied a training piece) flags that song as a
    near-copy; an index of unrelated folk songs does not, and the same seed gives the same song either way."""
    song = generate_song(remi_ckpt, style="chorale", bars=8, seed=0)[0]
    assert song.originality is None  # no index given, none shipped with this checkpoint
    holding = OriginalityIndex.build([song.score], source="holds the song")
    flagged = generate_song(remi_ckpt, style="chorale", bars=8, seed=0, originality_index=holding)[0]
    assert flagged.tokens == song.tokens and flagged.originality is not None
    assert flagged.originality.near_copy and flagged.originality.result.copied_share == 1.0
    assert flagged.originality.index_source == "holds the song"
    index_file = tmp_path / "folk.npz"
    OriginalityIndex.build(folk_tunes(), source="folk").save(index_file)
    other = generate_song(remi_ckpt, style="chorale", bars=8, seed=0, originality_index=index_file)[0]
    assert not other.originality.near_copy and other.originality.result.copied_share < 0.5
    assert other.originality.index_source == str(index_file)


def test_shipped_originality_file_is_used(remi_ckpt, tmp_path):
    import shutil

    ckpt = tmp_path / "with-index"
    shutil.copytree(remi_ckpt, ckpt)
    OriginalityIndex.build(chorales(), source="chorales").save(ckpt / "originality.npz")
    song = generate_song(ckpt, style="chorale", bars=2, seed=0)[0]
    assert song.originality is not None and song.originality.index_source.endswith("originality.npz")


def seconds_of(ids: list[int]) -> float:
    ids_arr = np.asarray(ids)
    shift = (ids_arr >= PERF.time_shift_offset) & (ids_arr < PERF.velocity_offset)
    return float((ids_arr[shift] - PERF.time_shift_offset + 1).sum()) / PERF.config.steps_per_second


def test_performance_stops_at_the_requested_seconds_and_reproduces(perf_ckpt):
    songs = generate_song(perf_ckpt, seconds=4, seed=2, num_samples=3)
    for song in songs:
        assert seconds_of(song.tokens) == pytest.approx(4.0)
        midi = reread(song).to("second")
        end = max(n.time + n.duration for t in midi.tracks for n in t.notes)
        assert 3.0 <= end <= 5.0
    again = generate_song(perf_ckpt, seconds=4, seed=2, num_samples=3)
    assert [s.tokens for s in again] == [s.tokens for s in songs]
    assert generate_song(perf_ckpt, seconds=4, seed=3)[0].tokens != songs[0].tokens


def test_performance_ends_without_crowding_its_last_second(perf_ckpt):
    """Near the end the model may still let time pass (the shift is cut at the end) rather than being made to
    play notes: the last second holds about as many onsets as any other."""
    songs = generate_song(perf_ckpt, seconds=6, seed=0, num_samples=12)
    onsets = np.array([
        np.histogram([n.time for t in s.score.to("second").tracks for n in t.notes], bins=6, range=(0, 6))[0]
        for s in songs
    ])  # fmt: skip  # [songs, seconds]
    assert all(seconds_of(s.tokens) == pytest.approx(6.0) for s in songs)
    assert onsets[:, -1].mean() <= 1.5 * onsets[:, :-1].mean(), onsets


def test_performance_primer_continues_for_the_asked_seconds(perf_ckpt):
    primer = chorales()[0]
    primer_ids = PERF.encode(primer).tolist()
    song = generate_song(perf_ckpt, seconds=2, primer=primer, seed=0)[0]
    assert song.tokens[: len(primer_ids)] == primer_ids
    assert seconds_of(song.tokens[len(primer_ids) :]) == pytest.approx(2.0)
    # the chorale's own four parts up to where it ends, then the model's notes on a track of their own
    parts = reread(song).to("second").tracks
    assert [t.name for t in parts[:4]] == ["Soprano", "Alto", "Tenor", "Bass"] and len(parts) == 5
    end = seconds_of(primer_ids)
    assert parts[4].notes and all(n.time >= end - 1e-6 for n in parts[4].notes)


def test_close_open_notes_ends_notes_at_the_end():
    ids = [PERF.note_on(60), PERF.time_shift(50), PERF.note_on(64), PERF.time_shift(20)]
    closed = close_open_notes(ids, PERF)
    assert closed[len(ids) :] == [PERF.note_off(60), PERF.note_off(64)]
    score = PERF.decode(closed).to("second")
    assert max(n.time + n.duration for n in score.tracks[0].notes) == pytest.approx(0.7)


def onset_rate(songs: list[GeneratedSong], seconds: float) -> float:
    ids = np.concatenate([np.asarray(s.tokens) for s in songs])
    return float((ids < PERF.note_off_offset).sum()) / (seconds * len(songs))


def test_density_control_moves_the_note_rate(perf_ckpt):
    """Trained on chorales (~7 notes/s, class 3) and folk songs (~1 note/s, class 0-1): asking for class 0
    gives sparser music than asking for class 3."""
    assert density_class(7.0) == 3 and density_class(0.7) == 0
    sparse = onset_rate(generate_song(perf_ckpt, seconds=6, density=0, seed=0, num_samples=8), 6)
    dense = onset_rate(generate_song(perf_ckpt, seconds=6, density=3, seed=0, num_samples=8), 6)
    assert dense > 1.5 * sparse, (sparse, dense)


def test_pitch_class_control_moves_the_notes(perf_ckpt):
    def share(histogram: str | list[int], pcs: list[int]) -> float:
        songs = generate_song(perf_ckpt, seconds=4, pitch_classes=histogram, seed=0, num_samples=8)
        ids = np.concatenate([np.asarray(s.tokens[1:]) for s in songs])
        counts = np.bincount(ids[ids < PERF.note_off_offset] % 12, minlength=12)
        return counts[pcs].sum() / counts.sum()

    c_triad, fs_triad = [0, 4, 7], [6, 10, 1]
    assert share("F#,A#,C#", fs_triad) > share(c_triad, fs_triad) + 0.1


def test_performance_errors_are_clear(perf_ckpt):
    with pytest.raises(
        ValueError, match=r"a Performance RNN model does not take style; it takes seconds, density"
    ):
        generate_song(perf_ckpt, style="folk")
    with pytest.raises(ValueError, match="density: Input should be less than or equal to 7"):
        generate_song(perf_ckpt, density=8)
    with pytest.raises(ValueError, match="unknown pitch class 'H'"):
        generate_song(perf_ckpt, pitch_classes="C,H")
    with pytest.raises(ValueError, match="seconds: Input should be greater than 0"):
        generate_song(perf_ckpt, seconds=0)
