"""MuseGAN accompaniment of a real chorale part, latent interpolation, and `museforge generate --model musegan`
(genre, bars, accompaniment, morph) on a checkpoint of a tiny model."""

import numpy as np
import pytest
import symusic
import torch
from typer.testing import CliRunner

from conftest import corpus_path
from museforge.cli import app
from museforge.data.formats import load_score
from museforge.families.musegan.gan import PART_TRACKS
from museforge.families.musegan.generate import (
    accompaniment_score,
    accompany,
    chain_latents,
    given_rolls,
    interpolate_latents,
    morph_piece,
    parse_track_map,
    render_latents,
)
from museforge.families.musegan.model import MuseGAN, MuseGANConfig
from museforge.families.serving import clear_model_cache, generate_song
from museforge.models.checkpoint import save_checkpoint
from museforge.tokenizers.pianoroll import PianoRollConfig, PianoRollTokenizer

TOK = PianoRollTokenizer(PianoRollConfig(tracks=PART_TRACKS, assign="order"))
NAMES = [t["name"] for t in PART_TRACKS]


@pytest.fixture(scope="module")
def chorale() -> symusic.Score:
    return load_score(corpus_path("bach/bwv66.6"))


@pytest.fixture(scope="module")
def model() -> MuseGAN:
    torch.manual_seed(0)
    return MuseGAN(
        MuseGANConfig(n_tracks=4, genres=("chorale", "renaissance"), g_width=4, d_width=4, latent_dim=32)
    ).eval()


def test_track_map_parsing():
    assert parse_track_map("Soprano:0, bass:3", NAMES) == {0: 0, 3: 3}
    with pytest.raises(ValueError, match="unknown track 'piano'"):
        parse_track_map("piano:0", NAMES)
    with pytest.raises(ValueError, match="name:index"):
        parse_track_map("soprano", NAMES)


def test_accompaniment_keeps_the_given_track_and_fits_it(chorale, model):
    track_map = {0: 0}  # the model's soprano is the chorale's soprano
    given = given_rolls(chorale, TOK, track_map, max_bars=8)
    assert given[0].shape == (8, 48, 84) and given[0].any()
    searched = accompany(model, given, genre=0, steps=30, generator=torch.Generator().manual_seed(1))
    assert searched.roll.shape == (4, 8, 48, 84)
    assert np.array_equal(searched.roll[0], given[0])  # onsets and holds exactly as given
    assert searched.roll[1:].any()  # the other parts are generated
    assert len(searched.losses) == 30 and searched.losses[-1] < searched.losses[0]  # the search fits the part
    assert 0.0 <= searched.fit_f1 <= 1.0
    score = accompaniment_score(searched.roll, chorale, TOK, track_map)
    original = chorale.tracks[0]
    end = 8 * 4 * chorale.tpq
    kept = [(n.time, n.duration, n.pitch, n.velocity) for n in original.notes if n.time < end]
    assert [(n.time, n.duration, n.pitch, n.velocity) for n in score.tracks[0].notes] == kept
    assert score.tracks[0].name == original.name and score.tracks[0].program == original.program
    assert [t.program for t in score.tracks[1:]] == [t["program"] for t in PART_TRACKS[1:]]


def test_accompaniment_refuses_what_it_cannot_do(chorale, model):
    given = given_rolls(chorale, TOK, {0: 0}, max_bars=4)
    with pytest.raises(ValueError, match="nothing left"):
        accompany(model, {k: given[0] for k in range(4)}, genre=0)
    with pytest.raises(ValueError, match="choose a genre"):
        accompany(model, given)
    with pytest.raises(ValueError, match=r"tracks 0\.\.3, not 7"):
        given_rolls(chorale, TOK, {0: 7})


def test_interpolation_runs_from_one_phrase_to_the_other(model):
    a = model.sample_latents(2, torch.Generator().manual_seed(0))
    b = model.sample_latents(2, torch.Generator().manual_seed(1))
    path = interpolate_latents(a, b, 5)
    assert path.shared.shape == (10, model.config.part_dim)
    assert torch.allclose(path.track[:2], a.track) and torch.allclose(path.track[-2:], b.track)
    mid = path.shared[4:6].norm(dim=-1)  # slerp keeps the norm between the ends' norms
    lo = torch.minimum(a.shared.norm(dim=-1), b.shared.norm(dim=-1))
    hi = torch.maximum(a.shared.norm(dim=-1), b.shared.norm(dim=-1))
    assert ((mid >= lo - 1e-4) & (mid <= hi + 1e-4)).all()
    rolls = render_latents(model, path, genre=1)
    assert rolls.shape == (10, 4, 4, 48, 84)
    assert np.array_equal(rolls[:2], render_latents(model, a, genre=1))


def test_a_morph_starts_at_one_sampled_phrase_and_ends_at_the_other(model):
    gen = torch.Generator().manual_seed(4)
    a, b = model.sample_latents(1, gen), model.sample_latents(1, gen)
    piece = morph_piece(model, 4, genre=0, generator=torch.Generator().manual_seed(4))
    assert piece.shape == (4, 16, 48, 84)  # [K, 4 phrases · 4 bars, S, P]
    assert np.array_equal(piece[:, :4], render_latents(model, a, genre=0)[0])
    assert np.array_equal(piece[:, -4:], render_latents(model, b, genre=0)[0])
    assert not np.array_equal(piece[:, 4:8], piece[:, :4])  # the phrases between move


def test_chained_phrases_share_static_latents(model):
    z = chain_latents(model, 3, torch.Generator().manual_seed(0))
    assert torch.equal(z.shared[0], z.shared[2]) and torch.equal(z.track[0], z.track[1])
    assert not torch.equal(z.shared_temporal[0], z.shared_temporal[1])


def test_generate_cli_genre_bars_and_accompaniment(tmp_path, model, chorale):
    ckpt = tmp_path / "musegan"
    save_checkpoint(ckpt, model, tokenizer=TOK.state_dict(), step=1, metrics={})
    clear_model_cache()
    runner = CliRunner()
    out = tmp_path / "song.mid"
    args = [
        "generate",
        "--model",
        str(ckpt),
        "--genre",
        "chorale",
        "--bars",
        "6",
        "--seed",
        "3",
        "--out",
        str(out),
    ]
    result = runner.invoke(app, [*args, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    song = symusic.Score(str(out))
    assert [t.program for t in song.tracks] == [t["program"] for t in PART_TRACKS]
    assert song.end() <= 6 * 4 * song.tpq
    again = generate_song(ckpt, style="chorale", bars=6, seed=3)[0]
    assert [len(t.notes) for t in again.score.tracks] == [len(t.notes) for t in song.tracks]

    melody = tmp_path / "melody.mid"
    chorale.dump_midi(str(melody))
    acc = tmp_path / "acc.mid"
    result = runner.invoke(
        app,
        ["generate", "--model", str(ckpt), "--genre", "chorale", "--accompany", str(melody), "--tracks",
         "soprano:0", "--bars", "4", "--out", str(acc), "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    written_score, given_score = symusic.Score(str(acc)), symusic.Score(str(melody))
    assert written_score.tpq == given_score.tpq
    given, written = given_score.tracks[0], written_score.tracks[0]
    end = 4 * 4 * given_score.tpq  # four bars of four quarters
    assert [(n.time, n.pitch) for n in written.notes] == [
        (n.time, n.pitch) for n in given.notes if n.time < end
    ]
    result = runner.invoke(app, ["generate", "--model", str(ckpt), "--genre", "jazz", "--out", str(acc)])
    assert result.exit_code == 2 and "unknown genre 'jazz'" in result.output

    morph = tmp_path / "morph.mid"
    result = runner.invoke(
        app,
        ["generate", "--model", str(ckpt), "--genre", "chorale", "--morph", "3", "--seed", "2", "--out", str(morph)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    song = symusic.Score(str(morph))
    assert [t.program for t in song.tracks] == [t["program"] for t in PART_TRACKS]
    assert 8 * 4 * song.tpq < song.end() <= 12 * 4 * song.tpq  # three 4-bar phrases
    for bad, message in (
        (["--morph", "1"], "walk: Input should be greater than or equal to 2"),
        (["--morph", "3", "--bars", "4"], "no bars"),
    ):
        result = runner.invoke(
            app, ["generate", "--model", str(ckpt), "--genre", "chorale", *bad, "--out", str(morph)]
        )
        assert result.exit_code == 2 and message in result.output, result.output
