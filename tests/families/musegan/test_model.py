"""MuseGAN: gradient penalty, generator shapes and range, binarization, decoding with programs, the WGAN-GP
critic learning real chorale phrases apart from noise, and `museforge train --model musegan` end to end."""

import json
from functools import partial

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from museforge.cli import app
from museforge.data.build import BuildOptions, build_dataset
from museforge.data.corpora import music21_units
from museforge.data.dataset import TokenizeOptions, tokenize_dataset
from museforge.families import load_checkpoint
from museforge.families.musegan.gan import (
    PART_TRACKS,
    GANTrainer,
    PhraseDataset,
    ProfileMatch,
    onset_distance,
    pianoroll_config_for,
    table_gap,
)
from museforge.families.musegan.generate import generate_piece
from museforge.families.musegan.model import (
    REFINER_KERNEL,
    MuseGAN,
    MuseGANConfig,
    beat_chroma,
    binarize,
    binary_straight_through,
    blip_profile,
    gradient_penalty,
    note_switches,
    onset_profile,
    pitch_class_profile,
    to_model_range,
)
from museforge.metrics.musegan import used_pitch_classes
from museforge.models.checkpoint import save_checkpoint
from museforge.tokenizers.pianoroll import PianoRollConfig, PianoRollTokenizer
from museforge.training.trainer import TrainConfig

pytestmark = pytest.mark.xdist_group("musegan")
TINY = {"g_width": 4, "d_width": 4, "latent_dim": 32, "genre_dim": 8}


class Linear(torch.nn.Module):
    """D(x) = <w, x>: its gradient is w everywhere, so the penalty is (‖w‖ − 1)² exactly."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = w

    def forward(self, x):
        return (x.flatten(1) * self.w).sum(1)


class HalfSquare(torch.nn.Module):
    """D(x) = ‖x‖² / 2: its gradient is x itself, so the penalty shows where it was taken."""

    def forward(self, x):
        return 0.5 * (x.flatten(1) ** 2).sum(1)


def test_gradient_penalty_is_taken_on_interpolates():
    real, fake = torch.randn(6, 2, 3, 4), torch.randn(6, 2, 3, 4)
    got = gradient_penalty(HalfSquare(), real, fake, generator=torch.Generator().manual_seed(5))
    alpha = torch.rand(6, 1, 1, 1, generator=torch.Generator().manual_seed(5))
    mixed = alpha * real + (1 - alpha) * fake
    expected = ((mixed.flatten(1).norm(dim=1) - 1) ** 2).mean()
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    at_real = ((real.flatten(1).norm(dim=1) - 1) ** 2).mean()
    assert abs(got.item() - at_real.item()) > 1e-3  # not the penalty at the real points
    assert got.requires_grad  # it trains the critic


def test_gradient_penalty_vanishes_for_a_one_lipschitz_critic():
    w = torch.randn(24)
    real, fake = torch.randn(8, 24), torch.randn(8, 24)
    assert gradient_penalty(Linear(w / w.norm()), real, fake).item() == pytest.approx(0.0, abs=1e-10)
    assert gradient_penalty(Linear(3 * w / w.norm()), real, fake).item() == pytest.approx(4.0, rel=1e-5)


@pytest.mark.parametrize("tracks,genres", [(5, ()), (2, ("chorale", "renaissance"))])
def test_generator_shape_and_range_for_any_track_count(tracks, genres):
    torch.manual_seed(0)
    model = MuseGAN(MuseGANConfig(n_tracks=tracks, genres=genres, **TINY))
    genre = torch.tensor([0, 1, 1]) if genres else None
    out = model(model.sample_latents(3), genre)
    assert out.shape == (3, tracks, 4, 48, 84)
    assert out.min() >= -1 and out.max() <= 1 and out.std() > 0
    assert model.critic(out, genre).shape == (3,)
    if genres:  # the genre changes the music and the critic's score
        other = model(model.sample_latents(3, torch.Generator().manual_seed(1)), torch.tensor([1, 0, 0]))
        same = model(model.sample_latents(3, torch.Generator().manual_seed(1)), genre)
        assert not torch.allclose(other, same)
        with pytest.raises(ValueError, match="pass genre indices"):
            model(model.sample_latents(3))


def test_config_refuses_shapes_the_generator_cannot_build():
    with pytest.raises(ValueError, match="product is steps_per_bar"):
        MuseGANConfig(steps_per_bar=40)
    with pytest.raises(ValueError, match="whole octaves"):
        MuseGANConfig(n_pitches=80)
    with pytest.raises(ValueError, match="unknown genre 'jazz'"):
        MuseGANConfig(genres=("rock",)).genre_index("jazz")
    with pytest.raises(ValueError, match="onset_matching must be >= 0"):
        MuseGANConfig(onset_matching=-1.0)
    with pytest.raises(ValueError, match="blip_matching must be >= 0"):
        MuseGANConfig(blip_matching=-0.5)
    with pytest.raises(ValueError, match="pitch_class_matching must be >= 0"):
        MuseGANConfig(pitch_class_matching=-2.0)


def test_binarization():
    x = torch.tensor([-1.0, -0.2, 0.0, 1e-4, 0.7, 1.0])
    assert binarize(x).tolist() == [False, False, False, True, True, True]
    g = torch.Generator().manual_seed(0)
    assert binarize(torch.full((1000,), 1.0), "bernoulli", g).all()
    assert not binarize(torch.full((1000,), -1.0), "bernoulli", g).any()
    share = binarize(torch.full((20000,), 0.5), "bernoulli", g).float().mean().item()
    assert share == pytest.approx(0.75, abs=0.02)
    roll = torch.tensor([0, 1, 2, 0], dtype=torch.uint8)
    assert to_model_range(roll).tolist() == [-1.0, 1.0, 1.0, -1.0]
    assert binarize(to_model_range(roll)).tolist() == [False, True, True, False]


def test_binary_neurons_emit_the_played_roll_and_pass_the_gradient_through():
    x = torch.tensor([-0.9, -0.1, 0.0, 0.05, 0.8], requires_grad=True)
    y = binary_straight_through(x)
    assert y.tolist() == [-1.0, -1.0, -1.0, 1.0, 1.0]
    (y * torch.arange(5.0)).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]  # the identity's gradient

    torch.manual_seed(0)
    soft = MuseGAN(MuseGANConfig(n_tracks=3, **TINY))
    hard = MuseGAN(MuseGANConfig(n_tracks=3, binary_neurons=True, **TINY))
    hard.load_state_dict(soft.state_dict())  # no extra weights: a trained model can be fine-tuned with them
    z = soft.sample_latents(2, torch.Generator().manual_seed(1))
    out = hard(z)
    assert set(out.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(binarize(out), binarize(soft(z)))  # the same notes as thresholding afterwards
    hard.critic(out).sum().backward()  # the critic's judgement of the played roll reaches the generator
    grads = [p.grad for p in hard.generator.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_feature_streams_count_note_switches_and_pitch_classes():
    on = torch.zeros(1, 2, 4, 48, 84)  # [B, K, N, S, P]: two tracks, four bars
    on[0, 0, 0, 3:9, 40] = 1  # a note of track 0 from step 3 to 8
    on[0, 0, 0, 6:7, 52] = 1  # a one-step blip an octave up, inside it
    on[0, 1, 0, 40:, 7] = on[0, 1, 1, :12, 7] = 1  # track 1: a note held across the bar line to step 48 + 11
    switches = note_switches(on)  # [1, 4, 192]: onsets of tracks 0, 1, then offsets of tracks 0, 1
    assert torch.nonzero(switches[0, 0]).flatten().tolist() == [3, 6]
    assert torch.nonzero(switches[0, 2]).flatten().tolist() == [7, 9]
    assert torch.nonzero(switches[0, 1]).flatten().tolist() == [40]  # no new onset at the bar line
    assert torch.nonzero(switches[0, 3]).flatten().tolist() == [60]
    chroma = beat_chroma(on, 4)  # [1, 2, 4, 4, 12]
    assert chroma[0, 0, 0, 0, 4].item() == pytest.approx(
        7 / 12
    )  # pitch class 4: 6 steps of 12, plus the blip
    assert chroma[0, 0, 0, 1:].sum().item() == 0
    assert chroma[0, 1, 1, 0, 7].item() == 1 and chroma[0, 1, 1, 1:].sum().item() == 0

    torch.manual_seed(0)
    plain = MuseGAN(MuseGANConfig(n_tracks=2, genres=("a",), **TINY))
    streams = MuseGAN(MuseGANConfig(n_tracks=2, genres=("a",), feature_streams=True, **TINY))
    missing, unexpected = streams.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("critic.streams.") for k in missing)
    x, g = on * 2 - 1, torch.tensor([0])
    added = streams.critic.streams(x)
    assert torch.allclose(streams.critic(x, g), plain.critic(x, g) + added)  # one more score, added


def test_onset_profile_counts_where_notes_start_and_end_within_the_beat():
    on = torch.zeros(2, 1, 2, 48, 84)  # [B, K, N, S, P]: one track, two bars of 4 beats × 12 steps
    on[0, 0, 0, 0:12, 40] = 1  # a beat-long note on beat 1: it ends at step 0 of the next beat
    on[0, 0, 1, 13:14, 50] = 1  # a one-step fragment at step 1 of bar 2's beat 2: ends at step 2
    profile = onset_profile(on, 4)  # [2, 12]: onsets, then offsets, per beat at each step of the beat
    beats = 2 * 2 * 4  # phrases × bars × beats the means run over
    assert profile.shape == (2, 12)
    assert torch.nonzero(profile[0]).flatten().tolist() == [0, 1]
    assert profile[0, 0].item() == profile[0, 1].item() == pytest.approx(1 / beats)
    assert torch.nonzero(profile[1]).flatten().tolist() == [0, 2]
    assert onset_distance(profile, profile).item() == 0
    fragment_free = onset_profile(on[:, :, :1], 4)
    assert onset_distance(profile, fragment_free).item() > 0


def test_blip_profile_counts_notes_one_step_long_where_they_start():
    on = torch.zeros(1, 2, 2, 48, 84)  # [B, K, N, S, P]: two tracks, two bars of 4 beats × 12 steps
    on[0, 0, 0, 0:12, 40] = 1  # a held note
    on[0, 0, 0, 5, 41] = 1  # a one-step blip beside it, at step 5 of beat 1
    on[0, 0, 0, 20:22, 50] = 1  # two steps: a short note, not a blip
    on[0, 0, 1, 47, 60] = 1  # one step at the end of the phrase (silence follows it)
    on[0, 1, 0, 0, 30] = 1  # the second track's blip at the start of the phrase
    profile = blip_profile(on, 4)  # [K, 12]
    beats = 2 * 4  # bars × beats the means run over
    assert profile.shape == (2, 12)
    assert torch.nonzero(profile[0]).flatten().tolist() == [5, 11]
    assert profile[0, 5].item() == profile[0, 11].item() == pytest.approx(1 / beats)
    assert torch.nonzero(profile[1]).flatten().tolist() == [0]
    soft = on.clone()
    soft[0, 0, 0, 4, 41] = 0.5  # a half-sounding neighbour makes the blip half a blip
    assert blip_profile(soft, 4)[0, 5].item() == pytest.approx(0.5 / beats)


def test_pitch_class_profile_counts_the_classes_a_bar_is_spread_over():
    on = torch.zeros(1, 1, 3, 48, 84)  # [B, K, N, S, P]: one track, three bars
    on[0, 0, 0, :24, 40] = 1  # bar 1: two classes, equally long -> 2
    on[0, 0, 0, 24:36, 45] = 1
    on[0, 0, 0, 36:, 57] = 1  # 57 = 45 + 12: the same class an octave up
    on[0, 0, 1, :36, 40] = 1  # bar 2: three quarters one class, a quarter another -> 4² / (3² + 1²) = 1.6
    on[0, 0, 1, 36:, 47] = 1
    # bar 3 is empty and counts in neither sum
    assert pitch_class_profile(on).item() == pytest.approx((2.0 + 1.6) / 2, rel=1e-5)
    on.requires_grad_(True)
    pitch_class_profile(on).backward()
    assert on.grad[0, 0, 1, 0, 43].item() > 0  # an absent class of bar 2 is pulled in
    assert on.grad[0, 0, 1, 0, 40].item() < 0  # and its dominant class pushed back


def test_pitch_class_profile_is_at_most_the_upc_of_real_chorale_phrases(chorale_data):
    """Effective classes are UPC when a bar's classes sound equally long, fewer otherwise: on real chorale
    phrases the profile lies a little under the MuseGAN table's UPC, track by track."""
    config = pianoroll_config_for(chorale_data)
    tokenize_dataset(chorale_data, "pianoroll", TokenizeOptions(config=config, workers=1, progress=False))
    data = PhraseDataset(chorale_data, "train", ("chorale",), hop_bars=1, min_notes_per_bar=4, min_tracks=3)
    on = torch.stack([data[i]["roll"] for i in range(0, len(data), 7)]).float()  # [B, K, N, S, P] in {0, 1}
    profile = pitch_class_profile(on)  # [K]
    for k in range(4):
        bars = on[:, k].flatten(0, 1).numpy()  # [B·N, S, P] in the rolls' default pitch window
        upc = used_pitch_classes(bars, PianoRollConfig().lowest_pitch)
        assert 2.0 < upc < 5.0  # a chorale part's few pitch classes per bar
        assert 0.6 * upc < profile[k].item() < upc


def test_profile_match_compares_each_genre_with_its_own_real_phrases():
    """Two genres with different rhythms: a generated batch that plays each genre's rhythm matches exactly, and
    one that swaps them does not, although both batches pool to the real batches' profile."""
    busy = torch.zeros(1, 1, 1, 48, 84)  # [B, K, N, S, P]: a new note on every beat
    for beat in range(4):
        busy[0, 0, 0, 12 * beat : 12 * beat + 12, 40 + beat] = 1
    calm = torch.zeros(1, 1, 1, 48, 84)
    calm[0, 0, 0, :, 40] = 1  # one note held through the bar
    real, genre = torch.cat([busy, calm, busy, calm]), torch.tensor([0, 1, 0, 1])
    match = ProfileMatch(partial(onset_profile, beats=4))
    match.add_real(real[:2], genre[:2])  # the step's real batches, counted one by one
    match.add_real(real[2:], genre[2:])
    assert match.distance(real, genre).item() == pytest.approx(0.0, abs=1e-12)
    swapped = torch.cat([calm, busy, calm, busy])
    assert onset_distance(onset_profile(swapped, 4), onset_profile(real, 4)).item() == pytest.approx(
        0.0, abs=1e-12
    )
    assert match.distance(swapped, genre).item() > 0.1
    pooled = ProfileMatch(partial(onset_profile, beats=4))  # an unconditional model: one group
    pooled.add_real(real, None)
    assert pooled.distance(swapped, None).item() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="no real phrases of genre 2"):
        match.distance(busy, torch.tensor([2]))


@pytest.mark.parametrize(
    ("option", "profile"),
    [
        ("onset_matching", partial(onset_profile, beats=4)),
        ("blip_matching", partial(blip_profile, beats=4)),
        ("pitch_class_matching", pitch_class_profile),
    ],
)
def test_matching_pulls_the_generated_profile_towards_the_datas(chorale_data, tmp_path, option, profile):
    """The same tiny GAN from the same seed, trained with and without a feature-matching term: with it, the
    generated phrases start and end notes where the chorales do (onsets), play as few one-step notes (blips),
    or spread their bars over as many pitch classes, more closely. The generator starts sparse, as a trained one
    is (its output biases at -1: 0.3 % of the roll sounds), since the terms are for fine-tuning."""
    config = pianoroll_config_for(chorale_data)
    tokenize_dataset(chorale_data, "pianoroll", TokenizeOptions(config=config, workers=1, progress=False))
    data = PhraseDataset(chorale_data, "train", ("chorale",), hop_bars=1, min_notes_per_bar=4, min_tracks=3)
    real = torch.stack([to_model_range(data[i]["roll"]) for i in range(len(data))])
    target = profile((real + 1) / 2)
    genre = torch.zeros(64, dtype=torch.long)
    distances = {}
    for weight in (0.0, 100.0):
        torch.manual_seed(0)
        model = MuseGAN(
            MuseGANConfig(n_tracks=4, genres=("chorale",), binary_neurons=True, **{option: weight}, **TINY)
        )
        with torch.no_grad():
            for head in model.generator.private:
                head[-1].bias.fill_(-1.0)  # [K] track heads: tanh(-1 + ...) sounds rarely
        train = TrainConfig(
            out_dir=str(tmp_path / f"run{weight}"), batch_size=8, grad_accum=2, max_steps=30, lr=1e-3,
            beta1=0.5, beta2=0.9, warmup_steps=0, min_lr_ratio=1.0, weight_decay=0.0, grad_clip=None,
            progress=False, epochs=50,
        )  # fmt: skip
        GANTrainer(model, data, train, track_names=[t["name"] for t in PART_TRACKS]).fit()
        with torch.no_grad():
            fake = model(model.sample_latents(64, torch.Generator().manual_seed(3)), genre)
        distances[weight] = onset_distance(profile(binarize(fake).float()), target).item()
    assert distances[100.0] < 0.5 * distances[0.0]


def test_refiner_starts_as_the_identity_and_sees_its_track_a_few_steps_around():
    torch.manual_seed(0)
    plain = MuseGAN(MuseGANConfig(n_tracks=2, **TINY)).eval()
    refined = MuseGAN(MuseGANConfig(n_tracks=2, refiner=2, **TINY)).eval()
    missing, unexpected = refined.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("generator.refiner.") for k in missing)
    z = plain.sample_latents(3, torch.Generator().manual_seed(1))
    assert torch.equal(refined(z), plain(z))  # a refiner added to a trained generator changes nothing yet

    refiner = refined.generator.refiner
    for unit in refiner.units:
        torch.nn.init.normal_(unit.out.weight, std=0.1)
    u = torch.zeros(1, 2, 4, 48, 84, requires_grad=True)  # [B, K, N, S, P] logits
    refiner(u)[0, 0, 1, 0, 40].backward()  # one output: track 0, the first step of bar 2, pitch 40
    seen = u.grad[0].abs().sum(-1).flatten(1, 2) > 0  # [K, N·S]: the (track, step) inputs it depends on
    reach = 2 * (REFINER_KERNEL // 2) * len(refiner.units)  # two convolutions per unit
    assert torch.nonzero(seen[0]).flatten().tolist() == list(range(48 - reach, 48 + reach + 1))  # across bars
    assert not seen[1].any()  # each track is refined on its own
    assert (u.grad[0, 0, 1, 0] != 0).sum() > 1  # and from its other pitches too: a blip against a held note


def test_checkpoint_round_trip_keeps_genres(tmp_path):
    model = MuseGAN(MuseGANConfig(n_tracks=4, genres=("chorale", "renaissance"), **TINY)).eval()
    save_checkpoint(tmp_path / "ck", model, tokenizer={"name": "pianoroll"}, step=3, metrics={})
    loaded = load_checkpoint(tmp_path / "ck")
    assert loaded.config.genres == ("chorale", "renaissance")
    z = model.sample_latents(2, torch.Generator().manual_seed(0))
    g = torch.tensor([0, 1])
    assert torch.equal(model(z, g), loaded.model(z, g))


@pytest.mark.parametrize("layout", ["lpd5", "parts"])
def test_generated_piece_decodes_with_each_tracks_program(layout):
    config = PianoRollConfig() if layout == "lpd5" else PianoRollConfig(tracks=PART_TRACKS, assign="order")
    tok = PianoRollTokenizer(config)
    torch.manual_seed(0)
    model = MuseGAN(MuseGANConfig(n_tracks=config.n_tracks, **TINY))
    roll = generate_piece(model, bars=6, generator=torch.Generator().manual_seed(2))
    assert roll.shape == (config.n_tracks, 6, 48, 84) and roll.dtype == bool
    score = tok.decode(roll)
    assert [t.program for t in score.tracks] == [s.program for s in config.tracks]
    assert [t.name for t in score.tracks] == [s.name for s in config.tracks]
    assert [t.is_drum for t in score.tracks] == [s.is_drum for s in config.tracks]
    assert score.end() <= 6 * 4 * score.tpq
    for k, track in enumerate(score.tracks):  # every sounding cell of a track is one of its notes
        assert (len(track.notes) > 0) == bool(roll[k].any())
        if len(track.notes):
            assert {n.pitch for n in track.notes} == {
                p + 24 for p in np.flatnonzero(roll[k].any(axis=(0, 1)))
            }


@pytest.fixture(scope="module")
def chorale_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("chorales")
    build_dataset(
        music21_units(["bach"]), out, BuildOptions(limit=10, workers=2, progress=False, valid=0.2, test=0.2)
    )
    return out


def test_balance_genres_cycles_each_genres_phrases_up_to_the_largest_genres_count(tmp_path):
    units = music21_units(["bach"])[:3] + music21_units(["josquin"])[:2]
    build_dataset(units, tmp_path, BuildOptions(workers=1, progress=False, valid=0.0, test=0.0))
    config = pianoroll_config_for(tmp_path)
    tokenize_dataset(tmp_path, "pianoroll", TokenizeOptions(config=config, workers=1, progress=False))
    genres = ("chorale", "renaissance")
    plain = PhraseDataset(tmp_path, "train", genres, hop_bars=1, min_notes_per_bar=2)
    balanced = PhraseDataset(tmp_path, "train", genres, hop_bars=1, min_notes_per_bar=2, balance_genres=True)
    counts = np.bincount(plain.genre_ids, minlength=2)
    assert counts.min() > 0 and counts[0] != counts[1]
    assert np.bincount(balanced.genre_ids).tolist() == [counts.max()] * 2
    for g in (0, 1):
        mine = plain.segments[plain.genre_ids == g]
        repeats = np.unique(balanced.segments[balanced.genre_ids == g], return_counts=True)
        assert repeats[0].tolist() == sorted(mine.tolist())  # every phrase, and only that genre's
        assert repeats[1].max() - repeats[1].min() <= 1  # cycled evenly
    assert torch.equal(balanced[len(balanced) - 1]["genre"], torch.tensor(balanced.genre_ids[-1]))


def test_table_gap_is_zero_for_identical_metrics_and_grows_with_distance():
    ref = {"EB": {"a": 10.0}, "UPC": {"a": 3.0}, "QN": {"a": 80.0}, "DP": {}, "TD": {}}
    assert table_gap(ref, ref) == 0.0
    off = {"EB": {"a": 30.0}, "UPC": {"a": 3.3}, "QN": {"a": float("nan")}, "DP": {}, "TD": {}}
    assert table_gap(off, ref) == pytest.approx((0.2 + 0.1 + 1.0) / 3)
    silent = {"EB": {"a": 100.0}, "UPC": {"a": float("nan")}, "QN": {"a": float("nan")}, "DP": {}, "TD": {}}
    noisy = {"EB": {"a": 10.0}, "UPC": {"a": 9.0}, "QN": {"a": 8.0}, "DP": {}, "TD": {}}
    assert table_gap(noisy, ref) == pytest.approx((0.0 + 1.0 + 0.9) / 3)  # UPC 3x too many: capped at 1
    assert table_gap(noisy, ref) < table_gap(silent, ref)  # playing something beats playing nothing


def test_tiny_gan_critic_separates_real_from_noise(chorale_data, tmp_path):
    config = pianoroll_config_for(chorale_data)
    tokenize_dataset(chorale_data, "pianoroll", TokenizeOptions(config=config, workers=1, progress=False))
    data = PhraseDataset(chorale_data, "train", ("chorale",), hop_bars=1, min_notes_per_bar=4, min_tracks=3)
    assert len(data) >= 16
    torch.manual_seed(0)
    model = MuseGAN(MuseGANConfig(n_tracks=4, genres=("chorale",), **{**TINY, "d_width": 8}))
    train = TrainConfig(
        out_dir=str(tmp_path / "run"), batch_size=8, grad_accum=3, max_steps=12, lr=1e-3, beta1=0.5, beta2=0.9,
        warmup_steps=0, min_lr_ratio=1.0, weight_decay=0.0, grad_clip=None, progress=False, epochs=50,
    )  # fmt: skip
    trainer = GANTrainer(model, data, train, track_names=[t["name"] for t in PART_TRACKS])
    real = torch.stack([to_model_range(data[i]["roll"]) for i in range(16)])  # [16, 4, 4, 48, 84]
    noise = torch.rand(real.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1  # the output range
    genre = torch.zeros(16, dtype=torch.long)

    def separation(other: torch.Tensor) -> float:
        """Share of (real, other) pairs the critic scores in the right order."""
        with torch.no_grad():
            r, o = model.critic(real, genre), model.critic(other, genre)
        return (r[:, None] > o[None, :]).float().mean().item()

    before = separation(noise)
    trainer.fit()
    assert trainer.step == 12
    assert separation(noise) >= 0.95 > before
    with torch.no_grad():
        fake = model(model.sample_latents(16, torch.Generator().manual_seed(3)), genre)
    assert separation(fake) >= 0.95


def test_train_cli_runs_tokenizes_and_resumes_exactly(chorale_data, tmp_path):
    runner = CliRunner()
    base = ["train", "--model", "musegan", "--data", str(chorale_data), "--preset", "tiny", "--device", "cpu"]
    straight, paused = tmp_path / "straight", tmp_path / "paused"
    result = runner.invoke(app, [*base, "--out", str(straight), "--max-steps", "4"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, [*base, "--out", str(paused), "--max-steps", "2"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["train", "--resume", str(paused), "--max-steps", "4", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    a, b = load_checkpoint(straight / "last"), load_checkpoint(paused / "last")
    assert a.step == b.step == 4
    assert a.model_name == "musegan" and a.config.n_tracks == 4 and a.config.genres == ("chorale",)
    assert a.tokenizer["config"]["assign"] == "order"
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    rows = (straight / "log.csv").read_text().splitlines()
    assert any(",eval," in r for r in rows)  # evaluated by the MuseGAN-metric gap


def test_ship_writes_the_musegan_table_for_training_data_and_generated_bars(chorale_data, tmp_path):
    from museforge.families.card import ShipOptions
    from museforge.lab.model_card import ship_model

    run = tmp_path / "run"
    args = ["train", "--model", "musegan", "--data", str(chorale_data), "--preset", "tiny", "--device", "cpu"]
    result = CliRunner().invoke(app, [*args, "--out", str(run), "--max-steps", "2"])
    assert result.exit_code == 0, result.output
    options = ShipOptions(
        name="gan", description="A tiny MuseGAN.", hardware="CPU", n_samples=2, gan_bars=200
    )
    dest = ship_model(run, chorale_data, tmp_path / "zoo", options, log=lambda _: None)
    card = (dest / "MODEL_CARD.md").read_text()
    assert "## MuseGAN metrics: 200 generated bars vs" in card
    assert "| training data | " in card and "| generated | " in card
    assert "UPC soprano" in card and "QN bass %" in card and "TD soprano-alto" in card
    assert "no shorter than a 32nd note (the paper's qualified notes: 2 steps here)" in card  # 48 steps a bar
    assert "Held-out likelihood" not in card
    assert "bars/s while writing the samples" in card and "KV cache" not in card  # a GAN has no tokens
    assert "temperature" not in card.split("## Samples against held-out music")[1].split("\n\n")[0]
    row = next(line for line in card.splitlines() if line.startswith("| training data |"))
    assert "n/a" not in row.split("|")[2]  # the data's EB of the soprano is measured
    report = json.loads((dest / "evaluation" / "report.json").read_text())
    assert report["multitrack"]["tracks"] == ["soprano", "alto", "tenor", "bass"]  # the model's own layout
    assert set(report["multitrack"]["reference"]["UPC"]) >= {"soprano", "bass"}


def test_evaluate_cli_reports_the_musegan_table_in_a_given_layout(chorale_data, tmp_path):
    model = MuseGAN(MuseGANConfig(n_tracks=4, **TINY))
    tok = PianoRollTokenizer(PianoRollConfig(tracks=PART_TRACKS, assign="order"))
    generated = tmp_path / "gen"
    generated.mkdir()
    for i in range(2):
        roll = generate_piece(model, bars=8, generator=torch.Generator().manual_seed(i))
        tok.decode(roll).dump_midi(str(generated / f"{i}.mid"))
    layout = json.dumps({"assign": "order", "tracks": list(PART_TRACKS)})
    args = ["evaluate", str(generated), "--reference", f"{chorale_data}:train", "--out", str(tmp_path / "r")]
    result = CliRunner().invoke(app, [*args, "--roll-config", layout])
    assert result.exit_code == 0, result.output
    section = json.loads((tmp_path / "r" / "report.json").read_text())["multitrack"]
    assert section["tracks"] == ["soprano", "alto", "tenor", "bass"]
    assert (
        1.0 <= section["reference"]["UPC"]["soprano"] <= 12.0
    )  # a chorale soprano: a few pitch classes a bar
    assert section["generated"]["EB"].keys() == section["reference"]["EB"].keys()
    bad = CliRunner().invoke(app, [*args, "--roll-config", '{"assign": "sideways"}'])
    assert bad.exit_code == 2 and "bad --roll-config" in bad.output


def test_fine_tuning_with_binary_neurons_starts_from_the_given_weights(chorale_data, tmp_path):
    runner = CliRunner()
    base = ["train", "--model", "musegan", "--data", str(chorale_data), "--preset", "tiny", "--device", "cpu"]
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "soft"), "--max-steps", "1"])
    assert result.exit_code == 0, result.output
    tuned = [*base, "--init", str(tmp_path / "soft" / "last"), "--max-steps", "1"]
    for bad, message in (("[1]", "must be a JSON object"), ("{oops", "not valid JSON")):
        result = runner.invoke(app, [*tuned, "--out", str(tmp_path / "bad"), "--model-config", bad])
        assert result.exit_code == 2 and message in result.output
    result = runner.invoke(app, [*tuned, "--out", str(tmp_path / "w"), "--model-config", '{"g_width": 8}'])
    assert result.exit_code == 2 and "holds a different model" in result.output  # new weights: no fine-tuning
    out = tmp_path / "hard"
    result = runner.invoke(app, [*tuned, "--out", str(out), "--model-config", '{"binary_neurons": true}'])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "run.json").read_text())["model_overrides"] == {"binary_neurons": True}
    assert "init_fresh" not in json.loads((out / "run.json").read_text())  # binary neurons add no weights
    hard = load_checkpoint(out / "last")
    assert (
        hard.config.binary_neurons and not load_checkpoint(tmp_path / "soft" / "last").config.binary_neurons
    )
    phrase = hard.model.eval()(hard.model.sample_latents(1), torch.tensor([0]))
    assert set(phrase.unique().tolist()) <= {-1.0, 1.0}
    again = [*base, "--init", str(out / "last"), "--max-steps", "1", "--out", str(tmp_path / "again")]
    result = runner.invoke(app, again)  # the preset has no binary neurons; the checkpoint's are kept
    assert result.exit_code == 0, result.output
    assert load_checkpoint(tmp_path / "again" / "last").config.binary_neurons
    assert json.loads((tmp_path / "again" / "run.json").read_text())["model_overrides"] == {}
    balanced = [*again[:-1], str(tmp_path / "balanced"), "--model-config", '{"balance_genres": true}']
    result = runner.invoke(app, balanced)  # a phrase filter, not a model field: fine-tuning may change it
    assert result.exit_code == 0, result.output
    assert load_checkpoint(tmp_path / "balanced" / "last").config == load_checkpoint(out / "last").config


@pytest.mark.parametrize(
    ("override", "added"),
    [('{"feature_streams": true}', "critic.streams."), ('{"refiner": 1}', "generator.refiner.")],
)
def test_fine_tuning_with_added_parts_keeps_the_trained_weights_and_starts_the_parts_fresh(
    override, added, chorale_data, tmp_path
):
    runner = CliRunner()
    base = ["train", "--model", "musegan", "--data", str(chorale_data), "--preset", "tiny", "--device", "cpu"]
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "plain"), "--max-steps", "1"])
    assert result.exit_code == 0, result.output
    source = load_checkpoint(tmp_path / "plain" / "last")
    out = tmp_path / "tuned"
    tuned = ["--init", str(tmp_path / "plain" / "last"), "--out", str(out), "--max-steps", "1"]
    result = runner.invoke(app, [*base, *tuned, "--model-config", override, "--lr", "1e-12"])
    assert result.exit_code == 0, result.output
    fresh = json.loads((out / "run.json").read_text())["init_fresh"]
    assert fresh and all(k.startswith(added) for k in fresh)
    tuned_state = load_checkpoint(out / "last").model.state_dict()
    for name, value in source.model.state_dict().items():  # lr 1e-12: every source weight arrived and stayed
        if "running_" not in name and "num_batches" not in name:  # batch-norm statistics move without lr
            assert torch.allclose(tuned_state[name], value, atol=1e-9), name
