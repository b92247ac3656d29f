"""MuseMorphose as a tool, on a tiny model trained here on real folk tunes: control, transfer, interpolation,
continuation and the `museforge transfer` / `interpolate` commands."""

import json
from dataclasses import replace
from pathlib import Path

import music21
import numpy as np
import pytest
import symusic
import torch
from typer.testing import CliRunner

from museforge.cli import app
from museforge.data.build import BuildOptions, build_dataset
from museforge.data.corpora import music21_units
from museforge.data.dataset import TokenizeOptions, tokenize_dataset
from museforge.data.formats import load_score
from museforge.data.manifest import load_manifest
from museforge.families.card import ShipOptions
from museforge.families.musemorphose.decode import (
    KEPT_CLASS_WEIGHT,
    choose_candidate,
    continue_piece,
    encode_piece,
    generate,
    interpolate,
    shifted_classes,
    transfer,
)
from museforge.families.musemorphose.evaluate import SHIFTS, evaluate_transfer, reconstruction_nll
from museforge.families.musemorphose.model import MuseMorphose
from museforge.families.musemorphose.sample import one_track, restyle_song
from museforge.families.remi.model import TransformerConfig, TransformerLM
from museforge.families.serving import clear_model_cache, generate_song, get_model, half_precision_kl
from museforge.families.training import prepare_training
from museforge.generation.precision import PrecisionDecision, model_key, save_decision
from museforge.lab.model_card import resample_card, ship_model
from museforge.machine import cpu_model
from museforge.metrics.controls import spearman
from museforge.metrics.originality import OriginalityIndex
from museforge.metrics.transfer import bar_similarity
from museforge.models.checkpoint import save_checkpoint
from museforge.tokenizers.attributes import AttributeBoundaries, bar_bounds

pytestmark = pytest.mark.xdist_group("musemorphose")
runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny MuseMorphose trained through the recipe on 30 Essen folk songs (about 10 s on one thread)."""
    torch.set_num_threads(1)
    data = tmp_path_factory.mktemp("ds")
    build_dataset(
        music21_units(["essenFolksong"]),
        data,
        BuildOptions(limit=30, workers=2, progress=False, valid=0.1, test=0.2),
    )
    # MuseMorphose's boundaries were set on pop piano: on folk melodies every bar would be class 0, so the
    # classes are fitted to the data (as for the shipped model) and training keeps the cache's tokenizer.
    bounds = AttributeBoundaries.fit_quantiles(
        load_score(r.midi_path(data)) for r in load_manifest(data, "train")
    )
    config = {"rhythm_boundaries": list(bounds.rhythm), "polyphony_boundaries": list(bounds.polyphony)}
    tokenize_dataset(data, "remi", TokenizeOptions(config=config, workers=2, progress=False))
    out = tmp_path_factory.mktemp("run")
    run = prepare_training(
        "musemorphose", data, "tiny", out,
        train_overrides={"max_steps": 1500, "epochs": 100, "progress": False, "lr": 3e-3},
        model_overrides={"d_model": 64, "d_ff": 128, "dropout": 0.0}, workers=2,
    )  # fmt: skip
    run.trainer.fit()
    loaded = get_model(out / "best")
    pieces = [r.midi_path(data) for r in load_manifest(data, split="test")]
    assert len(pieces) >= 3
    return loaded.checkpoint.model, loaded.tokenizer, out / "best", pieces, data


def measured(tok, score, n_bars):
    """Per-bar classes of a score by the model's tokenizer (its boundaries), as training measured them."""
    return tok.bar_classes(score, n_bars)


def bars_of(tok, tokens):
    return sum(t == tok.bar_id for t in tokens)


def test_generation_follows_the_rhythm_plan(trained):
    """Asked for busier bars, the tiny model writes busier bars (in direction: it is trained for seconds). Every
    bar is measured, the last included: it ends like the others, not as a pile of notes."""
    model, tok, _, _, _ = trained
    low = generate(model, tok, bars=4, plan=[(1, 0)] * 4, style="folk", num_samples=8, seed=1)
    high = generate(model, tok, bars=4, plan=[(6, 0)] * 4, style="folk", num_samples=8, seed=1)
    for song in low + high:
        assert bars_of(tok, song.tokens) == 4 and song.score.note_num() > 0
    lo = np.stack([measured(tok, s.score, 4)[0] for s in low])  # [songs, bars]
    hi = np.stack([measured(tok, s.score, 4)[0] for s in high])
    assert hi.mean() > lo.mean(), (lo, hi)
    assert hi[:, -1].mean() <= hi[:, :-1].mean() + 1.0  # the last bar is no busier than the rest


def test_candidates_bring_each_bar_nearer_its_asked_classes(trained):
    """With 4 tries per bar the kept bars are, on average, nearer the asked classes than single samples are, and
    every song still has exactly the bars asked for; the same seed gives the same song."""
    model, tok, _, _, _ = trained
    plan = [(7, 7), (0, 0), (7, 0), (0, 7)]

    def mean_distance(candidates):
        songs = generate(
            model, tok, bars=4, plan=plan, style="folk", num_samples=6, seed=3, candidates=candidates
        )
        total = 0
        for song in songs:
            assert bars_of(tok, song.tokens) == 4 and song.score.note_num() > 0
            rhythm, poly = measured(tok, song.score, 4)
            total += sum(
                abs(int(r) - a) + abs(int(p) - b) for r, p, (a, b) in zip(rhythm, poly, plan, strict=True)
            )
        return total / (len(songs) * len(plan)), songs

    single, _ = mean_distance(1)
    best, songs = mean_distance(4)
    assert best < single, (best, single)
    again = generate(model, tok, bars=4, plan=plan, style="folk", num_samples=1, seed=3, candidates=4)[0]
    assert again.tokens == songs[0].tokens
    with pytest.raises(ValueError, match="candidates must be >= 1"):
        generate(model, tok, bars=2, candidates=0)


def test_choose_candidate_weighs_a_kept_class_more():
    """Tries measured (rhythm, polyphony): plain L1 to the asked classes with the first on a tie; given the bar's
    own classes, a miss on the one asked to stay counts KEPT_CLASS_WEIGHT times."""
    tries = [(4, 2), (3, 3), (5, 5)]
    assert choose_candidate(tries, (3, 2)) == 0  # (1 + 0) ties (0 + 1): the first
    assert choose_candidate(tries, (3, 2), own=(3, 5)) == 1  # rhythm stays: 3·1 + 0 against 3·0 + 1
    assert choose_candidate(tries, (3, 2), own=(1, 2)) == 0  # polyphony stays: 1 + 3·0 against 0 + 3·1
    assert choose_candidate(tries, (3, 2), own=(3, 2)) == 0  # both stay: weighed alike, as without own
    assert KEPT_CLASS_WEIGHT > 1
    # a kept class's miss costs more, but a far larger miss on the moved class still loses
    assert choose_candidate([(3, 7), (4, 2)], (3, 2), own=(3, 5)) == 1
    with pytest.raises(ValueError, match="measured is empty"):
        choose_candidate([], (3, 2))


def test_transfer_moves_rhythm_in_the_requested_direction_and_keeps_the_rest(trained):
    model, tok, _, pieces, _ = trained
    ups, downs = [], []
    for piece in pieces[:3]:
        enc = tok.encode(load_score(piece))
        n = len(enc.bar_starts)
        up = transfer(model, tok, piece, rhythm=+3, seed=0)
        down = transfer(model, tok, piece, rhythm=-3, seed=0)
        assert bars_of(tok, up.tokens) == bars_of(tok, down.tokens) == n
        ups.append(measured(tok, up.score, n)[0])
        downs.append(measured(tok, down.score, n)[0])
    assert np.concatenate(ups).mean() > np.concatenate(downs).mean()
    # bars outside the selection are kept token for token
    piece = pieces[0]
    enc = tok.encode(load_score(piece))
    starts = [*enc.bar_starts.tolist(), len(enc.ids)]
    for candidates in (1, 3):
        part = transfer(model, tok, piece, rhythm=+2, bars=[1], seed=0, candidates=candidates)
        out_starts = [i for i, t in enumerate(part.tokens) if t == tok.bar_id] + [len(part.tokens)]
        assert part.tokens[out_starts[0] : out_starts[1]] == enc.ids[starts[0] : starts[1]].tolist()
        assert part.tokens[out_starts[2] :] == enc.ids[starts[2] :].tolist()
    assert part.rhythm[1] == min(7, enc.ids[starts[1] + 1] - tok.rhythm_ids[0] + 2)
    with pytest.raises(ValueError, match="outside the piece's bars"):
        transfer(model, tok, piece, rhythm=+1, bars=[500])


def test_guidance_moves_rhythm_further_and_changes_nothing_where_the_classes_stay(trained):
    """Guidance amplifies what the asked classes change against the piece's own: with +3/-3 shifts the guided
    transfers spread the measured rhythm further apart than unguided ones. Where nothing was asked to change
    (shift 0) the reference is the asked condition itself, so greedy guided decoding gives the unguided tokens;
    with tries per bar (each try with its own reference row) likewise."""
    model, tok, _, pieces, _ = trained

    def spread(guidance):
        ups, downs = [], []
        for piece in pieces[:3]:
            n = len(tok.encode(load_score(piece)).bar_starts)
            for seed in (0, 1):
                up = transfer(model, tok, piece, rhythm=+3, seed=seed, guidance=guidance)
                down = transfer(model, tok, piece, rhythm=-3, seed=seed, guidance=guidance)
                ups.append(measured(tok, up.score, n)[0])
                downs.append(measured(tok, down.score, n)[0])
        return np.concatenate(ups).mean() - np.concatenate(downs).mean()

    assert spread(2.0) > spread(0.0) > 0
    greedy = {"rhythm": 0, "bars": [1, 2], "seed": 0, "temperature": 1e-6}
    plain = transfer(model, tok, pieces[0], guidance=0.0, **greedy).tokens
    assert transfer(model, tok, pieces[0], guidance=3.0, **greedy).tokens == plain
    assert transfer(model, tok, pieces[0], guidance=3.0, candidates=3, **greedy).tokens == plain
    moved = {
        **greedy,
        "rhythm": 3,
    }  # greedy tries are all alike, so the first is kept: the single sample's bars
    single = transfer(model, tok, pieces[0], guidance=2.0, **moved).tokens
    assert transfer(model, tok, pieces[0], guidance=2.0, candidates=3, **moved).tokens == single
    with pytest.raises(ValueError, match=r"guidance must be in 0\.\.4\.0, got 5"):
        transfer(model, tok, pieces[0], rhythm=1, guidance=5)


def test_interpolation_and_continuation(trained):
    model, tok, _, pieces, _ = trained
    steps = interpolate(model, tok, pieces[0], pieces[1], steps=3, seed=0)
    assert len(steps) == 3
    assert len({bars_of(tok, s.tokens) for s in steps}) == 1
    n = bars_of(tok, tok.encode(load_score(pieces[0])).ids)
    more = continue_piece(model, tok, pieces[0], bars=3, seed=0)
    assert bars_of(tok, more.tokens) == n + 3
    with pytest.raises(ValueError, match="steps must be >= 2"):
        interpolate(model, tok, pieces[0], pieces[1], steps=1)


def test_cli_transfer_and_interpolate_end_to_end(trained, tmp_path):
    _, tok, ckpt, pieces, _ = trained
    out = tmp_path / "out.mid"
    result = runner.invoke(
        app,
        ["transfer", str(pieces[0]), "--model", str(ckpt), "--rhythm", "+2", "--polyphony", "-1",
         "--bars", "1-2", "--seed", "3", "--candidates", "2", "--guidance", "1.5", "--out", str(out),
         "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    score = load_score(out)
    assert score.note_num() > 0
    n = bars_of(tok, tok.encode(load_score(pieces[0])).ids)
    assert bars_of(tok, tok.encode(score).ids) == n
    bad = runner.invoke(
        app, ["transfer", str(pieces[0]), "--model", str(ckpt), "--bars", "x", "--out", str(out)]
    )
    assert bad.exit_code == 2 and "--bars" in bad.output
    bad = runner.invoke(
        app, ["transfer", str(pieces[0]), "--model", str(ckpt), "--guidance", "9", "--out", str(out)]
    )
    assert bad.exit_code == 2 and "guidance" in bad.output and "less than or equal to" in bad.output
    bad = runner.invoke(  # the request type's bounds, as generate and the API have them
        app, ["interpolate", str(pieces[0]), str(pieces[1]), "--model", str(ckpt), "--candidates", "0",
              "--out", str(tmp_path)],
    )  # fmt: skip
    assert bad.exit_code == 2 and "candidates" in bad.output and "greater than or equal to 1" in bad.output
    folder = tmp_path / "interp"
    result = runner.invoke(
        app,
        [
            "interpolate",
            str(pieces[0]),
            str(pieces[1]),
            "--model",
            str(ckpt),
            "--steps",
            "3",
            "--out",
            str(folder),
        ],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in folder.glob("*.mid")) == ["step-01.mid", "step-02.mid", "step-03.mid"]


def dataset_of(piece):
    return next(p for p in piece.parents if (p / "manifest.jsonl").exists())


def test_bar_similarity_is_one_on_itself_and_drops_only_where_a_bar_changes(trained):
    _, tok, _, pieces, _ = trained
    original = tok.decode(tok.encode(load_score(pieces[0])).ids)
    same = bar_similarity(original, original)
    assert np.allclose(same["chroma"], 1.0) and np.allclose(same["groove"], 1.0)
    changed = original.copy()
    bars = bar_bounds(original)
    notes = changed.tracks[0].notes
    for note in notes:  # bar 1 only: every note a tritone up and a 16th later
        if bars[1] <= note.time < bars[2]:
            note.pitch += 6
            note.time += original.tpq // 4
    sim = bar_similarity(original, changed)
    assert sim["chroma"][1] < 0.9 and sim["groove"][1] < 1.0
    assert np.allclose(np.delete(sim["chroma"], [1, 2]), 1.0)  # a shifted note may sound into bar 2
    assert np.allclose(sim["groove"][[0, *range(2, len(sim["groove"]))]], 1.0)


def test_evaluate_transfer_control_fidelity_and_perplexity(trained):
    model, tok, _, pieces, _ = trained
    result = evaluate_transfer(model, tok, pieces[:3], seed=0)
    assert result["transfers"] == 3 * 2 * 7 and result["bars"] == model.config.n_bars
    for attr in ("rhythm", "polyphony"):
        assert -1.0 <= result["rho"][attr] <= 1.0
        assert 0.0 <= result["fidelity"][attr]["chroma"] <= 1.0
        assert 0.0 <= result["fidelity"][attr]["groove"] <= 1.0
        assert -1.0 <= result["leak"][attr] <= 1.0
        # the leak exact control would show: that of the requested classes themselves, by hand
        other = "polyphony" if attr == "rhythm" else "rhythm"
        asked = {"rhythm": [], "polyphony": []}
        for piece in pieces[:3]:
            encoded = encode_piece(model, tok, piece).head(model.config.n_bars)
            every = list(range(encoded.n_bars))
            for shift in SHIFTS:
                asked[attr].append(shifted_classes(getattr(encoded, attr), shift, every))
                asked[other].append(np.asarray(getattr(encoded, other)))
        inherent = spearman(np.concatenate(asked[attr]), np.concatenate(asked[other]))
        assert result["leak_inherent"][attr] == pytest.approx(inherent)
        assert result["leak_excess"][attr] == pytest.approx(result["leak"][attr] - inherent)
    data = dataset_of(pieces[0])
    trained_nll = reconstruction_nll(model, tok, data, "test")
    assert trained_nll["perplexity"] == pytest.approx(np.exp(trained_nll["nll"]))
    torch.manual_seed(0)
    fresh = MuseMorphose(model.config)
    assert reconstruction_nll(fresh, tok, data, "test")["nll"] > trained_nll["nll"] + 1.0
    with pytest.raises(ValueError, match="pieces is empty"):
        evaluate_transfer(model, tok, [])


def test_generate_song_dispatches_musemorphose(trained):
    _, tok, ckpt, pieces, _ = trained
    loaded = get_model(ckpt)
    songs = generate_song(
        loaded, bars=4, style="folk", rhythm=[1, 6], polyphony=[0, 0], seed=2, num_samples=2
    )
    assert len(songs) == 2 and all(bars_of(tok, s.tokens) == 4 for s in songs)
    assert songs[0].params["family"] == "musemorphose" and songs[0].new_tokens == len(songs[0].tokens)
    cont = generate_song(loaded, bars=2, primer=pieces[0], primer_bars=2, seed=2, candidates=2)[0]
    assert cont.params["candidates"] == 2
    primer = tok.encode(load_score(pieces[0]))
    assert bars_of(tok, cont.tokens) == 4
    kept = cont.tokens[cont.tokens.index(tok.bar_id) :][: primer.bar_starts[2] - primer.bar_starts[0]]
    assert kept == primer.ids[primer.bar_starts[0] : primer.bar_starts[2]].tolist()
    # the song keeps the piece's own track (its name, its exact notes) for those bars, the new bars after them
    source = load_score(pieces[0])
    cut = int(bar_bounds(source)[2])
    assert [t.name for t in cont.score.tracks] == [source.tracks[0].name, "best continuation"]
    kept_notes = sorted((n.time, n.pitch, n.duration) for n in cont.score.tracks[0].notes)
    assert kept_notes == sorted((n.time, n.pitch, n.duration) for n in source.tracks[0].notes if n.time < cut)
    assert min(n.time for n in cont.score.tracks[1].notes) >= cut
    with pytest.raises(ValueError, match="a MuseMorphose model does not take seconds"):
        generate_song(loaded, seconds=5.0)


def test_musemorphose_samples_in_float16_where_it_agrees_with_float32(trained, tmp_path):
    """`auto` precision gives a MuseMorphose a float16 copy when this machine's probe found it faster (recorded
    here: the speed is the machine's); re-styles and generation from the prior then run in it (attention in
    float32) and say so."""
    _, tok, ckpt, pieces, _ = trained
    weights = Path(ckpt) / "model.safetensors"
    save_decision(
        PrecisionDecision("fp16", "faster", cpu_model(), torch.__version__, model_key(weights), 1), tmp_path
    )
    clear_model_cache()  # an earlier load followed this machine's own probe
    loaded = get_model(ckpt, precision="auto", cache_dir=tmp_path)
    assert loaded.precision == "fp16 up to batch 4"
    assert half_precision_kl(loaded.checkpoint.model, loaded.half) < 1e-3
    (song,) = restyle_song(loaded, pieces[0], rhythm=+2, seed=1)
    assert song.params["precision"] == "fp16" and song.score.note_num() > 0
    assert bars_of(tok, song.tokens) == bars_of(tok, tok.encode(load_score(pieces[0])).ids)
    new = generate_song(loaded, bars=3, style="folk", seed=1, candidates=2)[0]
    assert new.params["precision"] == "fp16" and bars_of(tok, new.tokens) == 3
    wide = generate_song(loaded, bars=2, style="folk", seed=1, candidates=5)[0]  # a batch of 5 rows
    assert wide.params["precision"] == "fp32"


def test_restyle_song_samples_variants_and_judges_only_the_replayed_bars(trained, tmp_path):
    """Sample i is `transfer` with seed + i; the originality check sees only the re-played bar, so a piece
    indexed as training data is not called a copy for the bars the user brought."""
    model, tok, ckpt, pieces, _ = trained
    piece = pieces[0]
    index, _ = OriginalityIndex.from_files([piece], source="the piece itself")
    songs = restyle_song(
        get_model(ckpt), piece, rhythm=+2, bars=[1], seed=5, num_samples=2, originality_index=index
    )
    for i, song in enumerate(songs):
        same = transfer(model, tok, piece, rhythm=+2, bars=[1], seed=5 + i)
        assert song.tokens == same.tokens and song.params["attributes"] == [
            [r, p] for r, p in zip(same.rhythm, same.polyphony, strict=True)
        ]
        assert song.params["restyled_bars"] == [1] and song.params["sample"] == i
        bar_at = [j for j, t in enumerate(song.tokens) if t == tok.bar_id] + [len(song.tokens)]
        assert song.new_tokens == bar_at[2] - bar_at[1]
        assert song.originality is not None and song.originality.index_source == "the piece itself"
        # bar 2 is the model's, on a track of its own; the others are the piece's own notes
        source = load_score(piece)
        lines = bar_bounds(source)
        outside = sorted(
            (n.time, n.pitch) for n in source.tracks[0].notes if not lines[1] <= n.time < lines[2]
        )
        own, *played = song.score.tracks  # an empty re-styled bar would leave no track of the model's
        assert own.name == source.tracks[0].name and [t.name for t in played] in ([], ["best re-styled"])
        assert sorted((n.time, n.pitch) for n in own.notes) == outside
        assert all(lines[1] <= n.time < lines[2] for t in played for n in t.notes)
    whole = restyle_song(get_model(ckpt), piece, rhythm=+2, keep_other_bars=False, seed=5)[0]
    assert whole.new_tokens == len(whole.tokens) - whole.tokens.index(tok.bar_id)
    lm = TransformerLM(TransformerConfig.preset("tiny", vocab_size=tok.vocab_size))
    other = save_checkpoint(tmp_path / "lm", lm, tokenizer=tok.state_dict(), step=0, metrics={})
    with pytest.raises(ValueError, match=r"\(transformer\) cannot re-style: use a MuseMorphose"):
        restyle_song(get_model(other), piece)
    with pytest.raises(ValueError, match=r"piece .*nothing\.mid does not exist"):
        restyle_song(get_model(ckpt), tmp_path / "nothing.mid")


def test_cli_evaluate_transfer(trained, tmp_path):
    _, _, ckpt, pieces, _ = trained
    out = tmp_path / "eval.json"
    result = runner.invoke(
        app,
        ["evaluate-transfer", "--data", str(dataset_of(pieces[0])), "--model", str(ckpt), "--pieces", "2",
         "--out", str(out), "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    assert saved["pieces"] == 2 and saved["likelihood"]["nll"] > 0
    assert "rhythm" in result.output and "perplexity" in result.output


def test_ship_then_resample_a_musemorphose_card(trained, tmp_path):
    """`models resample` re-measures what sampling decides (control, transfer speed, samples) and keeps the
    held-out likelihood, which does not sample."""
    _, _, ckpt, _, data = trained
    options = ShipOptions(
        name="tiny-morph", description="Tiny.", hardware="2-core CPU", n_samples=2, bars=4,
        max_test_pieces=4, transfer_pieces=2,
    )  # fmt: skip
    shipped = ship_model(ckpt.parent, data, tmp_path, options, log=lambda _: None)
    before = json.loads((shipped / "evaluation" / "transfer.json").read_text())
    # by default measured three ways: the model alone, with guidance, with guidance and 8 tries per bar
    assert [(a["candidates"], a["guidance"]) for a in before["assisted"]] == [(1, 1.0), (8, 1.0)]
    resample_card(
        shipped, data, replace(options, transfer_pieces=3, candidates=2, guidance=2.0), log=lambda _: None
    )
    after = json.loads((shipped / "evaluation" / "transfer.json").read_text())
    assert after["likelihood"] == before["likelihood"]
    assert before["control"]["pieces"] == 2 and after["control"]["pieces"] == 3
    assert before["control"]["guidance"] == 0.0 and before["control"]["candidates"] == 1
    assert [(a["candidates"], a["guidance"]) for a in after["assisted"]] == [(1, 2.0), (2, 2.0)]
    assert all(a["control"]["pieces"] == 3 and a["control"]["guidance"] == 2.0 for a in after["assisted"])
    card = (shipped / "MODEL_CARD.md").read_text()
    control = card.split("## Attribute control and fidelity (style transfer)\n")[1].split("## Samples")[0]
    assert "Re-measured" in control and "3 test pieces drawn at random" in control
    assert f"| rhythm | one sample per bar | {after['control']['rho']['rhythm']:.3f} |" in control
    best = after["assisted"][1]["control"]["rho"]["polyphony"]
    assert f"| polyphony | guidance 2 + best of 2 per bar | {best:.3f} |" in control
    leak, excess = after["control"]["leak"]["rhythm"], after["control"]["leak_excess"]["rhythm"]
    shown = "n/a" if np.isnan(excess) else f"{excess:.3f}"  # undefined where the asked classes do not vary
    assert f"| {leak:.3f} | {shown} |" in control
    assert "s with guidance 2 + best of 2 per bar (" in control and "s with guidance 2 (" in control
    assert all(a["precision"] in ("fp16", "fp32") for a in after["assisted"])  # what timed each setting
    assert all(a["kept_class_weight"] == KEPT_CLASS_WEIGHT for a in after["assisted"])
    assert (
        f"(in the best of 2, a miss on the attribute asked to stay counts {KEPT_CLASS_WEIGHT:g} times)"
        in control
    )
    assert "## Transfer speed" in control and card.count("## Config") == 1
    resample_card(shipped, data, replace(options, candidates=1, guidance=0.0), log=lambda _: None)
    assert json.loads((shipped / "evaluation" / "transfer.json").read_text())["assisted"] == []
    card = (shipped / "MODEL_CARD.md").read_text()
    assert "| one sample per bar |" in card and "best of" not in card


@pytest.fixture(scope="module")
def chorale_excerpt(tmp_path_factory) -> symusic.Score:
    """The first bars of Bach's four-part bwv66.6, its parts as four tracks."""
    path = tmp_path_factory.mktemp("bwv") / "bwv66.6.musicxml"
    music21.corpus.parse("bach/bwv66.6").measures(0, 4).write("musicxml", fp=path)
    return load_score(path)


def notes_by_track(score, keep=lambda n: True):
    return [sorted((n.time, n.duration, n.pitch) for n in t.notes if keep(n)) for t in score.tracks]


def test_restyle_keeps_each_part_of_a_chorale_as_its_own_track(trained, chorale_excerpt):
    """Each part is re-played from its own latents and comes back as its own track (name, program); outside the
    re-styled bars every part is the source's note for note."""
    _, _, ckpt, _, _ = trained
    source = chorale_excerpt
    song = restyle_song(get_model(ckpt), source, rhythm=+2, bars=[1, 2], seed=3)[0]
    assert song.params["parts"] == "each" and song.params["restyled_bars"] == [1, 2]
    assert [(t.name, t.program) for t in song.score.tracks] == [(t.name, t.program) for t in source.tracks]
    lines = bar_bounds(source)
    outside = lambda n: not lines[1] <= n.time < lines[3]  # noqa: E731
    assert notes_by_track(song.score, outside) == notes_by_track(source, outside)
    assert song.new_tokens > 0
    inside = lambda n: lines[1] <= n.time < lines[3]  # noqa: E731
    for mine, theirs, asked in zip(
        song.score.tracks, source.tracks, song.params["part_attributes"], strict=True
    ):
        played = [n.pitch for n in mine.notes if inside(n)]
        if played:  # moved by whole octaves into the part's register: a bass stays a bass
            assert abs(np.median(played) - np.median([n.pitch for n in theirs.notes])) <= 6
            assert asked["part"] == theirs.name and isinstance(asked["octaves"], int)
    together = restyle_song(get_model(ckpt), source, rhythm=+2, bars=[1, 2], seed=3, parts="together")[0]
    assert together.params["parts"] == "together"
    assert [t.name for t in together.score.tracks][-1] == "best re-styled"  # one merged track of the model's


def test_parts_of_different_lengths_are_replayed_in_groups(trained, chorale_excerpt):
    """A part that stops early has fewer bars: it is re-played with the parts of its length, and the bars it
    does not reach are not asked of it."""
    _, _, ckpt, _, _ = trained
    source = chorale_excerpt.copy()
    lines = bar_bounds(source)
    alto = source.tracks[1]
    kept = [n for n in alto.notes if n.time + n.duration <= lines[2]]
    alto.notes = symusic.core.NoteTickList(kept)
    song = restyle_song(get_model(ckpt), source, rhythm=+1, bars=[3], seed=2)[0]
    assert [(t.name, t.program) for t in song.score.tracks] == [(t.name, t.program) for t in source.tracks]
    assert notes_by_track(song.score)[1] == notes_by_track(source)[1]  # bar 4 is past the alto's end
    before = lambda n: n.time < lines[3]  # noqa: E731
    assert notes_by_track(song.score, before) == notes_by_track(source, before)


def test_bad_parts_are_refused(trained, chorale_excerpt):
    with pytest.raises(ValueError, match="parts must be one of"):
        restyle_song(get_model(trained[2]), chorale_excerpt, parts="some")


def test_one_track_ends_a_note_where_its_pitch_is_struck_again():
    """Merged into one track, a note still sounding when its pitch returns ends there (one MIDI channel cannot
    hold both); other notes keep their lengths, and the track keeps the name and program it is given."""
    kept, made = symusic.Score(480), symusic.Score(480)
    kept.tracks.append(symusic.Track("a", 0, False))
    kept.tracks[0].notes.extend([symusic.Note(0, 960, 69, 80), symusic.Note(0, 960, 72, 80)])
    made.tracks.append(symusic.Track("b", 0, False))
    made.tracks[0].notes.append(symusic.Note(480, 480, 69, 70))
    kept.tracks.extend(made.tracks)
    track = one_track(kept, symusic.Track("Alto", 40, False))
    assert (track.name, track.program) == ("Alto", 40)
    assert sorted((n.time, n.duration, n.pitch) for n in track.notes) == [
        (0, 480, 69),
        (0, 960, 72),
        (480, 480, 69),
    ]
    back = symusic.Score(480)
    back.tracks.append(track)
    read = symusic.Score.from_midi(back.dumps_midi()).resample(480)
    assert sorted((n.time, n.duration, n.pitch) for n in read.tracks[0].notes) == [
        (0, 480, 69),
        (0, 960, 72),
        (480, 480, 69),
    ]
