"""Multi-track REMI with a tiny Transformer trained here on chorales with their parts kept: a continued chorale
keeps its four parts and programs, and a part written again leaves every other note of the piece as it was."""

import numpy as np
import pytest
import symusic
from typer.testing import CliRunner

from conftest import corpus_path
from museforge.cli import app
from museforge.data.build import BuildOptions, build_dataset
from museforge.data.corpora import music21_units
from museforge.data.formats import load_score
from museforge.families import RequestError, get_family
from museforge.families.base import Limits
from museforge.families.serving import generate_song, get_model
from museforge.models.zoo import model_info, models_dir
from museforge.tokenizers.attributes import bar_bounds

pytestmark = pytest.mark.xdist_group("recipes")
runner = CliRunner()
PROGRAMS = (52, 52, 42, 32)  # choir aahs twice, cello, contrabass: two parts share a program


def _run(*args: str) -> None:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny multi-track REMI Transformer trained with fill-in windows (bars and parts)."""
    root = tmp_path_factory.mktemp("multitrack")
    data = root / "data"
    build_dataset(music21_units(["bach"]), data,
                  BuildOptions(limit=8, workers=2, progress=False, valid=0.25, test=0.0))  # fmt: skip
    _run("data", "tokenize", "--data", str(data), "--config", '{"use_programs": true}', "--workers", "1")
    _run("train", "--model", "transformer", "--preset", "tiny", "--device", "cpu", "--data", str(data),
         "--out", str(root / "run"), "--max-steps", "20", "--infill", "0.5")  # fmt: skip
    return root / "run" / "best"


@pytest.fixture(scope="module")
def chorale() -> symusic.Score:
    score = load_score(corpus_path("bach/bwv66.6"))
    for track, program in zip(score.tracks, PROGRAMS, strict=True):
        track.program = program
    return score


def _notes(track: symusic.Track) -> list[tuple[int, int, int, int]]:
    return sorted((n.time, n.duration, n.pitch, n.velocity) for n in track.notes)


def test_a_continued_chorale_keeps_its_parts_and_programs(model, chorale):
    loaded = get_model(model)
    assert loaded.tokenizer.config.use_programs
    lines = bar_bounds(chorale, until=max(t.end() for t in chorale.tracks))
    for seed in range(2):
        (song,) = generate_song(loaded, primer=chorale, primer_bars=2, bars=2, seed=seed)
        parts = song.score.tracks[: len(chorale.tracks)]
        assert [(t.name, t.program) for t in parts] == [(t.name, t.program) for t in chorale.tracks]
        for source, part in zip(chorale.tracks, parts, strict=True):
            kept = [n for n in _notes(source) if n[0] < lines[2]]
            assert [n for n in _notes(part) if n[0] < lines[2]] == kept
        written = sum(len(t.notes) for t in song.score.tracks) - sum(
            1 for t in chorale.tracks for n in t.notes if n.time < lines[2]
        )
        assert written > 0


@pytest.mark.parametrize(("track", "span"), [(2, "2"), (4, "1"), (1, "5")])
def test_every_note_outside_the_part_and_bars_is_the_sources(model, chorale, track, span):
    """One bar at a time: the tiny model's 128-token context holds about one bar of four parts and its voice."""
    loaded = get_model(model)
    first = last = int(span) - 1
    lines = bar_bounds(chorale, until=max(t.end() for t in chorale.tracks))
    inside = lambda n: lines[first] <= n[0] < lines[last + 1]  # noqa: E731
    for seed in range(2):
        (song,) = generate_song(loaded, primer=chorale, track=track, infill=span, seed=seed)
        assert song.params["track"] == track
        out = song.score.tracks
        assert [(t.name, t.program) for t in out] == [(t.name, t.program) for t in chorale.tracks]
        for i, (source, made) in enumerate(zip(chorale.tracks, out, strict=True)):
            if i != track - 1:
                assert _notes(made) == _notes(source)
            else:
                assert [n for n in _notes(made) if not inside(n)] == [
                    n for n in _notes(source) if not inside(n)
                ]
                onsets = np.array([n[0] for n in _notes(made) if inside(n)])
                assert ((onsets >= lines[first]) & (onsets < lines[last + 1])).all()


def test_the_cli_writes_a_part_again(model, chorale, tmp_path):
    source = tmp_path / "in.mid"
    chorale.dump_midi(str(source))
    out = tmp_path / "out.mid"
    _run("generate", "--model", str(model), "--source", str(source), "--track", "3", "--infill", "2",
         "--out", str(out), "--seed", "1")  # fmt: skip
    made = symusic.Score(str(out))
    assert [t.name for t in made.tracks] == [t.name for t in chorale.tracks]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"track": 5, "infill": "2"}, "not a pitched part"),
        ({"track": 2, "operation": "continue"}, "track is for the 'infill' operation"),
        ({"track": 0, "infill": "2"}, "track"),
        ({"track": 2}, "context"),  # the whole piece, past the tiny model's context
    ],
)
def test_a_bad_part_fill_in_is_refused_by_name(model, chorale, options, message):
    with pytest.raises(RequestError, match=message):
        generate_song(get_model(model), primer=chorale, **options)


def test_music_from_nothing_has_the_voices_asked_or_the_styles_usual_number(model):
    """The chorales it learnt from have four parts (fitted at tokenizing); asked for two voices, it writes two at
    most."""
    loaded = get_model(model)
    assert model_info(model).multi_track and loaded.tokenizer.config.parts_of("chorale") == 4
    for voices, expected in ((None, 4), (2, 2), (1, 1)):
        songs = generate_song(loaded, style="chorale", bars=4, voices=voices, num_samples=3, seed=voices or 0)
        for song in songs:
            assert song.params["voices"] == expected
            assert 1 <= len([t for t in song.score.tracks if t.notes]) <= expected


def test_voices_are_refused_for_a_single_stream_model():
    info = model_info(models_dir() / "remi-transformer")  # the shipped model
    assert not info.multi_track
    family = get_family(info.family)
    with pytest.raises(RequestError, match="voices needs a multi-track model"):
        family.check(family.request(voices=2, style=info.styles[0]), info)


def test_only_a_multi_track_model_shows_voices_and_part_fill_in(model):
    family = get_family(model_info(model).family)
    for info, shown in ((model_info(model), True), (model_info(models_dir() / "remi-transformer"), False)):
        names = {c.name for c in family.controls(info, Limits(max_bars=64, max_seconds=120.0, max_samples=4))}
        assert {"voices", "track"} <= names if shown else not {"voices", "track"} & names
        assert ("track" in family.operation_controls("infill", info)) is shown
        assert ("voices" in family.operation_controls("generate", info)) is shown
        assert "bars" in family.operation_controls("generate", info)
