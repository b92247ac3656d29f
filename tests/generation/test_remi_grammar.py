"""The REMI grammar mask: real music passes it, and every sample of a model trained here on Bach chorales
decodes to a valid MIDI file with the asked-for number of bars and forced attributes, and ends where the model
ends it."""

import itertools

import music21
import numpy as np
import pytest
import symusic
import torch

from museforge.data.formats import load_score
from museforge.families.remi.model import TransformerConfig, TransformerLM
from museforge.families.serving import generate_song
from museforge.generation import generate_transformer
from museforge.generation.remi_grammar import RemiGrammar, stop_at_eos
from museforge.models.checkpoint import save_checkpoint
from museforge.tokenizers import build_tokenizer
from museforge.training import TrainConfig, Trainer

CHORALES = ("bach/bwv66.6", "bach/bwv7.7", "bach/bwv10.7", "bach/bwv101.7")
TOK = build_tokenizer("remi")


def encode(name: str, style: str = "chorale") -> np.ndarray:
    ids = TOK.encode(load_score(music21.corpus.getWork(name)), style=style).ids.astype(np.int64)
    return np.append(ids, TOK.eos_id)


@pytest.fixture(scope="module")
def chorale_model(tmp_path_factory) -> TransformerLM:
    """A tiny Transformer trained for a few seconds on four chorales (loss ~0.7): it writes chorale-like token
    streams, imperfect enough that the grammar has work to do."""
    tokens = torch.as_tensor(np.concatenate([encode(n) for n in CHORALES]))  # ~3,300 tokens
    windows = [tokens[i : i + 64] for i in range(0, len(tokens) - 64, 16)]
    torch.manual_seed(0)
    config = TransformerConfig.preset("tiny", vocab_size=TOK.vocab_size, d_model=64, d_ff=128, dropout=0.0)
    model = TransformerLM(config)
    cfg = TrainConfig(
        out_dir=str(tmp_path_factory.mktemp("remi")),
        batch_size=8,
        epochs=15,
        lr=5e-3,
        warmup_steps=10,
        progress=False,
        checkpoint_every=10_000,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    Trainer(model, windows, cfg).fit()
    torch.set_num_threads(threads)
    return model.eval()


@pytest.mark.parametrize("piece", ["bach/bwv66.6", "essenFolksong/altdeu10", "oneills1850/0001-0050.abc"])
def test_real_encodings_never_hit_the_mask(piece):
    ids = torch.as_tensor(encode(piece, style="folk"))
    grammar = RemiGrammar(TOK)
    for i in range(len(ids)):
        allowed = grammar(ids[None, :i])
        assert allowed[0, ids[i]], f"{piece}: token {i} {TOK.token_name(int(ids[i]))} refused"


def check_well_formed(names: list[str], n_bars: int) -> None:
    """Independent check of the REMI order rules on token names."""
    assert names[0].startswith("Style_") and names[1] == "Bar_None"
    assert names[-1] == "EOS_None" and names.count("Bar_None") == n_bars
    position, bar_len = -1, 32
    for prev, name in itertools.pairwise(names):
        kind, _, value = name.partition("_")
        if prev.startswith("Pitch_"):
            assert kind == "Velocity"
        if prev.startswith("Velocity_"):
            assert kind == "Duration"
        if kind in ("Velocity", "Duration"):
            assert prev.split("_")[0] in ("Pitch", "Velocity")
        if kind == "Bar":
            position = -1
        if kind == "TimeSig":
            bar_len = int(value.split("/")[0]) * 8
        if kind == "Position":
            assert position < int(value) < bar_len
            position = int(value)


def test_every_sample_decodes_to_valid_midi(chorale_model):
    n_bars, style = 2, TOK.style_token("chorale")
    for seed in range(25):
        out = generate_transformer(
            chorale_model,
            [style],
            300,
            num_samples=4,
            seed=seed,
            temperature=1.2,
            mask_fn=RemiGrammar(TOK, max_bars=n_bars, max_new_tokens=300),
            stop_fn=stop_at_eos(TOK.eos_id),
        )
        for ids in out.sequences():
            check_well_formed([TOK.token_name(i) for i in ids], n_bars)
            score = TOK.decode(ids)
            reread = symusic.Score.from_midi(score.dumps_midi())
            notes = [n for t in reread.tracks for n in t.notes]
            assert notes and all(n.duration > 0 and 0 <= n.pitch < 128 for n in notes)


def test_without_the_mask_the_same_model_writes_malformed_streams(chorale_model):
    style = TOK.style_token("chorale")
    out = generate_transformer(chorale_model, [style], 200, num_samples=16, seed=0, temperature=1.2)
    grammar = RemiGrammar(TOK)
    refused = 0
    for row in out.tokens:
        for i in range(1, len(row)):
            if not grammar(row[None, :i])[0, row[i]]:
                refused += 1
                break
    assert refused > 0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_forced_attributes_and_bar_count(chorale_model, seed):
    wanted = [(7, 0), None, (0, 7)]
    grammar = RemiGrammar(TOK, max_bars=3, bar_attributes=wanted, max_new_tokens=400)
    out = generate_transformer(
        chorale_model,
        [TOK.style_token("chorale")],
        400,
        num_samples=4,
        seed=seed,
        mask_fn=grammar,
        stop_fn=stop_at_eos(TOK.eos_id),
    )
    for ids in out.sequences():
        assert ids.count(TOK.bar_id) == 3 and ids[-1] == TOK.eos_id
        bars = [i for i, t in enumerate(ids) if t == TOK.bar_id]
        for b, attrs in enumerate(wanted):
            if attrs is not None:
                assert ids[bars[b] + 1 : bars[b] + 3] == TOK.attribute_tokens(*attrs)


@pytest.mark.parametrize(
    ("budget", "bars", "attributes"), [(40, 3, None), (23, 2, [(3, 4), (5, 2)]), (300, 8, None)]
)
def test_an_untrained_model_ends_within_its_budget(budget, bars, attributes):
    """A random model never chooses EOS on its own: only the budget can end its samples, and it must do so
    with every bar asked for, a note in the last one, and the sequence well formed."""
    torch.manual_seed(budget)
    model = TransformerLM(
        TransformerConfig.preset("tiny", vocab_size=TOK.vocab_size, d_model=32, d_ff=64)
    ).eval()
    grammar = RemiGrammar(TOK, max_bars=bars, bar_attributes=attributes, max_new_tokens=budget)
    prompt = [TOK.style_token("folk")]
    out = generate_transformer(
        model, prompt, budget, num_samples=6, seed=0, mask_fn=grammar, stop_fn=stop_at_eos(TOK.eos_id)
    )
    for ids in out.sequences():
        names = [TOK.token_name(i) for i in ids]
        assert len(ids) <= len(prompt) + budget
        check_well_formed(names, bars)
        last_bar = max(i for i, n in enumerate(names) if n == "Bar_None")
        assert any(n.startswith("Pitch_") for n in names[last_bar:])  # the last bar sounds
        starts = [i for i, n in enumerate(names) if n == "Bar_None"]
        for b, attrs in enumerate(attributes or []):
            assert ids[starts[b] + 1 : starts[b] + 3] == TOK.attribute_tokens(*attrs)


def test_a_budget_too_small_for_the_bars_is_refused():
    grammar = RemiGrammar(TOK, max_bars=4, max_new_tokens=10)
    with pytest.raises(ValueError, match="budget of 10 new tokens"):
        grammar(torch.tensor([[TOK.style_token("folk")]]))


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_bars"):
        RemiGrammar(TOK, max_bars=0)
    with pytest.raises(ValueError, match="rhythm"):
        RemiGrammar(TOK, bar_attributes=[(8, 0)])
    with pytest.raises(ValueError, match="max_new_tokens"):
        RemiGrammar(TOK, max_new_tokens=0)


def names(allowed: torch.Tensor) -> set[str]:
    """The token types a mask row allows."""
    return {TOK.token_name(i).split("_")[0] for i in torch.nonzero(allowed).flatten().tolist()}


@pytest.mark.parametrize("end_with_bar", [False, True])
def test_the_last_bar_holds_a_note_and_then_may_end(end_with_bar):
    grammar = RemiGrammar(TOK, max_bars=2, end_with_bar=end_with_bar)
    ids = {TOK.token_name(i): i for i in range(TOK.vocab_size)}
    bar, timesig = TOK.bar_id, ids["TimeSig_4/4"]
    note = [ids["Position_0"], ids["Pitch_60"], ids["Velocity_91"], ids["Duration_1.0.8"]]
    first = [TOK.style_token("folk"), bar, timesig, *note]
    assert names(grammar(torch.tensor([first]))[0]) == {"Position", "Pitch", "Bar"}  # bar 1: no end yet
    last = [*first, bar, timesig]
    assert names(grammar(torch.tensor([last]))[0]) == {"Position"}  # an empty last bar cannot end
    ended = {"Position", "Pitch", "EOS"} | ({"Bar"} if end_with_bar else set())
    assert names(grammar(torch.tensor([[*last, *note]]))[0]) == ended


def test_songs_end_where_the_model_ends_them(chorale_model, tmp_path):
    """The model may close the last bar by starting another one (taken as the end): its last bar is then as
    full as any other, not a pile of the notes it wrote while every other way out was closed."""
    path = save_checkpoint(tmp_path / "m", chorale_model, tokenizer=TOK.state_dict(), step=0, metrics={})
    songs = generate_song(path, style="chorale", bars=3, seed=0, num_samples=8)
    per_bar = []
    for song in songs:
        ids = song.tokens
        assert ids.count(TOK.bar_id) == 3 and ids[-1] == TOK.eos_id
        starts = [i for i, t in enumerate(ids) if t == TOK.bar_id] + [len(ids)]
        per_bar.append([
            sum(TOK.token_name(t).startswith("Pitch") for t in ids[a:b]) for a, b in itertools.pairwise(starts)
        ])  # fmt: skip
    notes = np.array(per_bar)  # [songs, bars]
    assert (notes > 0).all()
    assert notes[:, -1].mean() <= 1.5 * notes[:, :-1].mean(), notes


@pytest.mark.parametrize("max_voices", [1, 3])
def test_a_random_multi_track_model_writes_no_more_voices_than_allowed(max_voices):
    """An untrained model picks Program tokens at random (dozens of voices in 8 bars without a cap); with
    ``max_voices`` every sample uses at most that many, and a prompt's voices count among them."""
    tok = build_tokenizer("remi", {"use_programs": True})
    torch.manual_seed(max_voices)
    model = TransformerLM(
        TransformerConfig.preset("tiny", vocab_size=tok.vocab_size, d_model=32, d_ff=64)
    ).eval()

    def voices(ids: list[int]) -> set[str]:
        return {tok.token_name(i) for i in ids if tok.token_name(i).startswith("Program_")}

    def sample(prompt: list[int], cap: int | None) -> list[list[int]]:
        grammar = RemiGrammar(tok, max_bars=8, max_new_tokens=300, max_voices=cap)
        out = generate_transformer(
            model, prompt, 300, num_samples=4, seed=0, mask_fn=grammar, stop_fn=stop_at_eos(tok.eos_id)
        )
        return out.sequences()

    start = [tok.style_token("chorale")]
    assert max(len(voices(ids)) for ids in sample(start, None)) > 3
    for ids in sample(start, max_voices):
        assert 1 <= len(voices(ids)) <= max_voices
    chorale = tok.encode(load_score(music21.corpus.getWork("bach/bwv66.6")), style="chorale").ids.tolist()
    primer = chorale[: int(np.flatnonzero(np.array(chorale) == tok.bar_id)[2])]  # two bars of four parts
    assert len(voices(primer)) == 4
    for ids in sample(primer, max_voices):
        assert voices(ids) == voices(primer)  # the cap is reached already: only the primer's parts go on
    with pytest.raises(ValueError, match="max_voices"):
        RemiGrammar(TOK, max_voices=2)  # no Program tokens to count
