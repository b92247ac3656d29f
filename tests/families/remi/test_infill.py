"""Filling in bars with a tiny REMI Transformer fine-tuned here to fill in the middle (from a model trained
without the fill tokens, as the shipped one was): every bar outside the gap is the source's, note for note."""

import json

import numpy as np
import pytest
import symusic
from typer.testing import CliRunner

from conftest import corpus_path
from museforge.cli import app
from museforge.data.build import BuildOptions, build_dataset
from museforge.data.corpora import music21_units
from museforge.data.formats import load_score
from museforge.families import RequestError, load_checkpoint
from museforge.families.remi.infill import middle_nll, with_suffix
from museforge.families.serving import generate_song, get_model
from museforge.tokenizers.attributes import bar_bounds

pytestmark = pytest.mark.xdist_group("recipes")
runner = CliRunner()


def _train(args):
    result = runner.invoke(
        app, ["train", "--model", "transformer", "--preset", "tiny", "--device", "cpu", *args]
    )
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(a model without fill tokens, the same model fine-tuned to fill in)."""
    root = tmp_path_factory.mktemp("infill")
    data = root / "data"
    build_dataset(music21_units(["bach", "essenFolksong"]), data,
                  BuildOptions(limit=8, workers=2, progress=False, valid=0.25, test=0.0))  # fmt: skip
    _train(["--data", str(data), "--out", str(root / "base"), "--max-steps", "20"])
    _train(["--data", str(data), "--out", str(root / "fill"), "--max-steps", "20", "--infill", "0.5",
            "--init", str(root / "base" / "best")])  # fmt: skip
    return root / "base" / "best", root / "fill" / "best"


@pytest.fixture(scope="module")
def chorale() -> symusic.Score:
    return load_score(corpus_path("bach/bwv66.6"))


def test_fine_tuning_appends_the_fill_tokens_to_the_vocabulary(models):
    base, fill = (load_checkpoint(p) for p in models)
    assert fill.config.vocab_size == base.config.vocab_size + 3
    assert json.loads((models[1].parent / "run.json").read_text())["infill"] == 0.5
    assert get_model(models[1]).tokenizer.fill_ids and not get_model(models[0]).tokenizer.fill_ids


def _notes(track: symusic.Track) -> list[tuple[int, int, int, int]]:
    return sorted((n.time, n.duration, n.pitch, n.velocity) for n in track.notes)


@pytest.mark.parametrize("span", ["3-4", "1", "8-9"])
def test_every_bar_outside_the_gap_is_the_sources_note_for_note(models, chorale, span):
    first, last = (int(b) - 1 for b in (span.split("-") * 2)[:2])
    lines = bar_bounds(chorale, until=max(t.end() for t in chorale.tracks))
    for seed in range(2):
        (song,) = generate_song(get_model(models[1]), primer=chorale, infill=span, seed=seed)
        assert song.params["infill"] == span and song.params["bars"] == last - first + 1
        by_name = {t.name: t for t in song.score.tracks}
        for track in chorale.tracks:
            outside = [n for n in _notes(track) if not lines[first] <= n[0] < lines[last + 1]]
            assert _notes(by_name[track.name]) == outside
        (filled,) = [t for t in song.score.tracks if t.name.endswith("fill-in")]
        onsets = np.array([n.time for n in filled.notes])
        assert len(onsets) and ((onsets >= lines[first]) & (onsets < lines[last + 1])).all()


def test_the_cli_fills_in_a_source_file(models, chorale, tmp_path):
    source = tmp_path / "in.mid"
    chorale.dump_midi(str(source))
    out = tmp_path / "out.mid"
    result = runner.invoke(app, ["generate", "--model", str(models[1]), "--source", str(source), "--infill",
                                 "2-3", "--out", str(out), "--seed", "1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    made = symusic.Score(str(out))
    assert any(t.name.endswith("fill-in") for t in made.tracks)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"infill": "30-31"}, "the piece has"),
        ({"infill": "5-20"}, "at most 8 bars"),
        ({"infill": "4-2"}, "run forwards"),
        ({"infill": "five"}, "one bar or a range"),
        ({"infill": "2-3", "bars": 4}, "leave out bars"),
        ({"infill": "2-3", "operation": "continue"}, "is for the 'infill' operation"),
        ({"infill": "2-3", "rhythm": "1,2,3"}, "rhythm has 3 entries but only 2 bars"),
    ],
)
def test_a_bad_fill_in_is_refused_by_name(models, chorale, options, message):
    with pytest.raises(RequestError, match=message):
        generate_song(get_model(models[1]), primer=chorale, **options)


def test_a_model_not_trained_to_fill_in_says_so(models, chorale):
    with pytest.raises(RequestError, match="not trained to fill in"):
        generate_song(get_model(models[0]), primer=chorale, infill="2-3")


def test_the_seam_measure_scores_the_gap_against_its_own_or_another_pieces_suffix(models, chorale):
    loaded = get_model(models[1])
    tok, model = loaded.tokenizer, loaded.checkpoint.model
    enc = tok.encode(chorale, style="chorale")
    folk = tok.encode(load_score(corpus_path("essenFolksong/altdeu10")), style="folk")
    mixed = with_suffix(enc, 3, folk)
    starts = enc.bar_starts.tolist()
    assert mixed.ids[: starts[4]].tolist() == enc.ids[: starts[4]].tolist()
    assert len(mixed.bar_starts) == 4 + len(folk.bar_starts)
    assert all(mixed.ids[s] == tok.bar_id for s in mixed.bar_starts)
    own, other = middle_nll(model, tok, enc, 2, 3), middle_nll(model, tok, mixed, 2, 3)
    assert 0 < own < 20 and 0 < other < 20 and own != other  # the suffix is heard
