"""MuseGAN (Dong et al. 2018): multi-track piano-roll phrases from latent vectors, trained as a WGAN-GP.

Shapes (letters used below): B batch, K tracks, N bars per phrase, S steps per bar, P pitches, L latent width
of one latent part, C channels. A phrase is ``[B, K, N, S, P]`` in ``[-1, 1]`` (tanh); real rolls are mapped to
``-1`` (silent) / ``+1`` (sounding), so binarizing at 0 inverts the map.

Generator, the paper's *hybrid* model: four latent parts per sample — inter-track static ``z``, inter-track
temporal ``z_t`` (through a shared temporal generator: one vector per bar), intra-track static ``z_k`` and
intra-track temporal ``z_kt`` (through each track's private temporal generator). Each bar of each track is made
from the concatenation of the four (plus the genre embedding) by a bar generator whose first blocks are shared
by all tracks and whose last blocks are private per track, as in the MuseGAN PyTorch tutorial. Time is built
up as ``time_factors`` (e.g. 4 beats × 4 × 3 = 48 steps) and pitch as octaves × 12 pitch classes.

Critic: private per-track convolution blocks (pitch classes, then sub-beat steps), then a shared stack over the
concatenated tracks down to one feature vector; blocks use layer norm, never batch norm (a per-sample gradient
penalty needs per-sample outputs). Genre enters projection-discriminator style (Miyato & Koyama 2018): the
score is ``linear(h) + <embed(genre), h>``.

``feature_streams`` adds the two extra critic streams of the same paper, each with its own score added to the
main one: a chroma stream (pitch classes per beat, octaves summed), and an onset/offset stream (how many pitches
switch on and off at each step), which shows the critic at once the short fragments a generator strews between
the sixteenth-note steps where real notes start and end. The critic's other weights are unchanged, so a
trained model can be fine-tuned with the streams added (they start from fresh weights).

``binary_neurons`` makes the generator's last layer deterministic binary neurons (Dong & Yang 2018, "Convolutional
Generative Adversarial Networks with Binary Neurons for Polyphonic Music Generation"): the output is the
thresholded roll itself (exactly ±1), with the tanh's gradient passed straight through. The critic then judges
what will be played, rather than a real-valued roll whose values near 0 flicker across the threshold and
break sustained notes into fragments once binarized.

``refiner`` (a number of residual units; 0 = none) adds BinaryMuseGAN's refiner after the generator: residual
units that rewrite each track's output logits from the whole track's roll over the few steps around each step,
trained only through the critic. A fragment is a local event: a pitch that sounds for one or two steps while
its neighbours hold another note. The generator's last layers upsample time with kernel = stride, so each
sub-step comes from its own weights with no view of the next; the refiner is the first layer that sees a note's
start, middle and end at once. Unlike the paper's (3 steps × 12 pitches) kernels it mixes all of a track's
pitches (a 1-D convolution over time, pitches as channels), so a unit judges a second pitch against the note
already held, and it runs several times faster on a CPU (measured forward for a batch of 32: 0.07 s for a 1-D
unit of 64 channels per track, 0.59 s for a 3 × 12 unit of only 8). Each unit's last convolution starts at
zero, so a refiner added to a trained generator starts as the identity and fine-tuning begins from the model as
it was.

``onset_matching`` is not part of the network: it weighs a term the trainer adds to the generator's loss (see
`museforge.families.musegan.gan`), the distance between where generated and real notes start and end within a beat
(`onset_profile`). It lives in the config so that a resumed or fine-tuned run keeps it and the model card shows
it. On the music21 chorales, string quartets and Renaissance voices, real notes start and end almost only on
the beat and the eighth (0.3-0.4 onsets per beat on it, under 0.01 at most other steps); the shipped critic,
even with its onset stream, let the generator's soprano start or end 0.03-0.07 notes per beat at every other
step — fragments a 32nd note long or less. Feature matching (Salimans et al. 2016) gives the generator that
statistic's gradient directly. ``blip_matching`` does the same for the fragments themselves (`blip_profile`:
notes one step long, 0.25 per beat in the soprano that onset matching left, against the data's 0.0025).
``pitch_class_matching`` matches over how many pitch classes each part spreads a bar (`pitch_class_profile`):
with the two terms above the generated chorales used 1.9 pitch classes per bar against the data's 3.0-3.8, and
the alto as a whole 12 % too few. The trainer matches all three genre by genre.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from museforge.models.config import ModelConfig
from museforge.models.modules import BlockConv3d, BlockConvTranspose3d

N_LATENT_PARTS = 4  # z, z_t, z_k, z_kt
REFINER_KERNEL = 5  # steps a refiner convolution sees: a fragment of 1-2 steps and the steps either side


@dataclass
class MuseGANConfig(ModelConfig):
    """Sizes of `MuseGAN`. Defaults: LPD-5 (5 tracks, 4 bars × 48 steps × 84 pitches), latent 128 as in the paper.

    ``latent_dim`` is the width of the four latent parts together; ``genres`` names the conditioning classes
    (empty: unconditional). ``g_width`` / ``d_width`` scale every generator / critic channel count.
    ``binary_neurons`` binarizes the generator's output in its forward pass and ``feature_streams`` adds the
    critic's chroma and onset/offset streams, and ``refiner`` adds that many refiner units after the generator
    (see the module docstring); none changes the other weights, so a model trained without them can be
    fine-tuned with them. ``onset_matching``, ``blip_matching`` and ``pitch_class_matching`` weigh the trainer's
    onset-profile, one-step-note and pitch-classes-per-bar terms (0: the paper's loss).
    """

    model_name: ClassVar[str] = "musegan"

    n_tracks: int = 5
    n_bars: int = 4
    steps_per_bar: int = 48
    n_pitches: int = 84
    time_factors: tuple[int, ...] = (4, 4, 3)  # beats per bar, then sub-beat factors; product = steps_per_bar
    latent_dim: int = 128
    genres: tuple[str, ...] = ()
    genre_dim: int = 32
    g_width: int = 32
    d_width: int = 32
    binary_neurons: bool = False
    feature_streams: bool = False
    refiner: int = 0  # residual units of the refiner (0: none)
    onset_matching: float = 0.0  # weight of the trainer's onset-profile term (0: the paper's loss)
    blip_matching: float = 0.0  # weight of the trainer's one-step-note term (0: the paper's loss)
    pitch_class_matching: float = 0.0  # weight of the trainer's pitch-class term (0: the paper's loss)

    def __post_init__(self) -> None:
        self.time_factors = tuple(int(f) for f in self.time_factors)
        self.genres = tuple(str(g) for g in self.genres)
        for name in ("n_tracks", "n_bars", "steps_per_bar", "n_pitches", "latent_dim", "g_width", "d_width"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.refiner < 0:
            raise ValueError(f"refiner must be >= 0 residual units, got {self.refiner}")
        for name in ("onset_matching", "blip_matching", "pitch_class_matching"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if len(self.time_factors) != 3 or math.prod(self.time_factors) != self.steps_per_bar:
            raise ValueError(
                f"time_factors must be 3 factors whose product is steps_per_bar={self.steps_per_bar}, "
                f"got {self.time_factors}"
            )
        if self.n_pitches % 12:
            raise ValueError(f"n_pitches must be whole octaves (a multiple of 12), got {self.n_pitches}")
        if self.latent_dim % N_LATENT_PARTS:
            raise ValueError(
                f"latent_dim must split into {N_LATENT_PARTS} equal parts, got {self.latent_dim}"
            )
        if len(set(self.genres)) != len(self.genres):
            raise ValueError(f"genres must be distinct, got {self.genres}")
        if self.genres and self.genre_dim < 1:
            raise ValueError(f"genre_dim must be >= 1 with genres, got {self.genre_dim}")

    @property
    def part_dim(self) -> int:
        return self.latent_dim // N_LATENT_PARTS

    @property
    def n_genres(self) -> int:
        return len(self.genres)

    def genre_index(self, genre: str) -> int:
        """Index of a genre name; unknown names fail listing the known ones."""
        if genre not in self.genres:
            known = ", ".join(self.genres) or "none (the model is unconditional)"
            raise ValueError(f"unknown genre {genre!r}; this model knows: {known}")
        return self.genres.index(genre)


class GeneratorBlock(nn.Module):
    """ConvTranspose3d + BatchNorm3d + ReLU over (bars, steps, pitches); kernel = stride multiplies a size."""

    def __init__(self, c_in: int, c_out: int, kernel: tuple[int, int, int]) -> None:
        super().__init__()
        self.conv = BlockConvTranspose3d(c_in, c_out, kernel)
        self.norm = nn.BatchNorm3d(c_out)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.norm(self.conv(x)))


class DiscriminatorBlock(nn.Module):
    """Conv3d + layer norm (over channels and positions, per sample) + LeakyReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: tuple[int, int, int]) -> None:
        super().__init__()
        self.conv = BlockConv3d(c_in, c_out, kernel)
        self.norm = nn.GroupNorm(1, c_out)  # one group = layer norm over [C, D, H, W]

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.leaky_relu(self.norm(self.conv(x)), 0.2)


class TemporalGenerator(nn.Module):
    """A latent [B, L] to one latent per bar [B, L, N] (ConvTranspose over the bar axis)."""

    def __init__(self, dim: int, n_bars: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            GeneratorBlock(dim, 2 * dim, (n_bars, 1, 1)),
            BlockConvTranspose3d(2 * dim, dim, (1, 1, 1)),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z[:, :, None, None, None])[:, :, :, 0, 0]  # [B, L, N]


class RefinerUnit(nn.Module):
    """One residual unit of the refiner over ``[B, K·P, T]`` logits (K tracks' P pitches as channels, T steps):
    ``u + conv(relu(norm(conv(tanh(u)))))``, each convolution private per track (groups = K) and
    ``REFINER_KERNEL`` steps wide. The last convolution starts at zero: a new unit is the identity."""

    def __init__(self, n_tracks: int, n_pitches: int, width: int) -> None:
        super().__init__()
        k, pad = n_tracks, REFINER_KERNEL // 2
        self.inp = nn.Conv1d(k * n_pitches, k * width, REFINER_KERNEL, padding=pad, groups=k)
        self.norm = nn.BatchNorm1d(k * width)
        self.out = nn.Conv1d(k * width, k * n_pitches, REFINER_KERNEL, padding=pad, groups=k)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, u: Tensor) -> Tensor:
        return u + self.out(torch.relu(self.norm(self.inp(torch.tanh(u)))))  # [B, K·P, T]


class Refiner(nn.Module):
    """BinaryMuseGAN's refiner (see the module docstring): ``forward(logits [B, K, N, S, P]) -> logits``."""

    def __init__(self, config: MuseGANConfig) -> None:
        super().__init__()
        width = 2 * config.g_width
        self.units = nn.Sequential(
            *(RefinerUnit(config.n_tracks, config.n_pitches, width) for _ in range(config.refiner))
        )

    def forward(self, u: Tensor) -> Tensor:
        b, k, n, s, p = u.shape
        x = u.permute(0, 1, 4, 2, 3).reshape(b, k * p, n * s)  # [B, K·P, T]: a note crosses bar lines
        x = self.units(x)
        return x.view(b, k, p, n, s).permute(0, 1, 3, 4, 2)  # [B, K, N, S, P]


@dataclass
class Latents:
    """The four latent parts of a batch of phrases (see the module docstring)."""

    shared: Tensor  # [B, L]
    shared_temporal: Tensor  # [B, L]
    track: Tensor  # [B, K, L]
    track_temporal: Tensor  # [B, K, L]

    def map(self, fn: Callable[[Tensor], Tensor]) -> Latents:
        """The same function applied to each part (moving, slicing, interpolating)."""
        return Latents(fn(self.shared), fn(self.shared_temporal), fn(self.track), fn(self.track_temporal))

    @property
    def batch_size(self) -> int:
        return self.shared.shape[0]


class Generator(nn.Module):
    """``forward(latents, genre [B] | None) -> phrase [B, K, N, S, P]`` in [-1, 1]."""

    def __init__(self, config: MuseGANConfig) -> None:
        super().__init__()
        c = self.config = config
        d, w = c.part_dim, c.g_width
        self.temporal = TemporalGenerator(d, c.n_bars)
        self.track_temporal = nn.ModuleList([TemporalGenerator(d, c.n_bars) for _ in range(c.n_tracks)])
        self.genre = nn.Embedding(c.n_genres, c.genre_dim) if c.n_genres else None
        c_in = N_LATENT_PARTS * d + (c.genre_dim if c.n_genres else 0)
        beats, sub1, sub2 = c.time_factors
        octaves = c.n_pitches // 12
        self.shared = nn.Sequential(  # [B·K, c_in, N, 1, 1] -> [B·K, 2w, N, beats·sub1, octaves]
            GeneratorBlock(c_in, 8 * w, (1, beats, 1)),
            GeneratorBlock(8 * w, 4 * w, (1, 1, octaves)),
            GeneratorBlock(4 * w, 2 * w, (1, sub1, 1)),
        )
        self.private = nn.ModuleList(  # per track: -> [B, 1, N, S, P]
            nn.Sequential(
                GeneratorBlock(2 * w, w, (1, sub2, 1)),
                BlockConvTranspose3d(w, 1, (1, 1, 12)),
            )
            for _ in range(c.n_tracks)
        )
        self.refiner = Refiner(c) if c.refiner else None

    def forward(self, latents: Latents, genre: Tensor | None = None) -> Tensor:
        c = self.config
        b, k, n = latents.batch_size, c.n_tracks, c.n_bars
        if latents.track.shape != (b, k, c.part_dim):
            raise ValueError(
                f"track latents must be [batch, {k}, {c.part_dim}], got {tuple(latents.track.shape)}"
            )
        shared = latents.shared[:, None, :, None].expand(b, k, -1, n)  # [B, K, L, N]
        temporal = self.temporal(latents.shared_temporal)[:, None].expand(b, k, -1, n)  # [B, K, L, N]
        private = latents.track[..., None].expand(b, k, -1, n)  # [B, K, L, N]
        private_t = torch.stack(
            [g(latents.track_temporal[:, i]) for i, g in enumerate(self.track_temporal)], 1
        )  # [B, K, L, N]
        parts = [shared, temporal, private, private_t]
        if self.genre is not None:
            if genre is None:
                raise ValueError(f"this model is conditioned on genres {c.genres}: pass genre indices [B]")
            parts.append(self.genre(genre)[:, None, :, None].expand(b, k, -1, n))  # [B, K, G, N]
        elif genre is not None:
            raise ValueError("this model has no genres; pass genre=None")
        x = torch.cat(parts, 2).flatten(0, 1)[..., None, None]  # [B·K, c_in, N, 1, 1]
        x = self.shared(x).unflatten(0, (b, k))  # [B, K, 2w, N, beats·sub1, octaves]
        out = torch.cat([head(x[:, i]) for i, head in enumerate(self.private)], 1)  # [B, K, N, S, P]
        if self.refiner is not None:
            out = self.refiner(out)
        out = torch.tanh(out)
        if c.binary_neurons:
            return binary_straight_through(out)
        return out


class FeatureStreams(nn.Module):
    """The critic's chroma and onset/offset streams: ``forward(phrase [B, K, N, S, P]) -> score [B]``."""

    def __init__(self, config: MuseGANConfig) -> None:
        super().__init__()
        c = self.config = config
        w, k = c.d_width, c.n_tracks
        beats, sub1, sub2 = c.time_factors
        self.chroma = nn.Sequential(  # [B, K, N, beats, 12] -> [B, 2w, N, 1, 1]
            DiscriminatorBlock(k, w, (1, 1, 12)),
            DiscriminatorBlock(w, 2 * w, (1, beats, 1)),
        )
        self.onsets = nn.Sequential(  # [B, 2K, N, S, 1] -> [B, 2w, N, 1, 1]
            DiscriminatorBlock(2 * k, w, (1, sub2, 1)),
            DiscriminatorBlock(w, w, (1, sub1, 1)),
            DiscriminatorBlock(w, 2 * w, (1, beats, 1)),
        )
        self.out = nn.Linear(4 * w * c.n_bars, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, k, n, s, _ = x.shape
        on = (x + 1.0) / 2.0  # [B, K, N, S, P] in [0, 1]
        switches = note_switches(on).view(b, 2 * k, n, s, 1)  # [B, 2K, N, S, 1]
        h = torch.cat(
            [
                self.chroma(beat_chroma(on, self.config.time_factors[0])).flatten(1),
                self.onsets(switches).flatten(1),
            ],
            1,
        )  # [B, 4w·N]
        return self.out(h).squeeze(1)  # [B]


def beat_chroma(on: Tensor, beats: int) -> Tensor:
    """Pitch classes per beat: ``on`` [B, K, N, S, P] in [0, 1] (P whole octaves) -> [B, K, N, beats, 12], the
    mean over each beat's steps of the sum over octaves."""
    b, k, n, s, p = on.shape
    return on.view(b, k, n, beats, s // beats, p // 12, 12).mean(4).sum(4)


def onset_profile(on: Tensor, beats: int) -> Tensor:
    """Where notes start and end within a beat: ``on`` [B, K, N, S, P] in [0, 1] -> [2K, S / beats], each
    track's mean number of onsets, then of offsets, per beat at each step of the beat (over the batch and every
    beat of the phrase)."""
    b, k, n, s, _ = on.shape
    return note_switches(on).view(b, 2 * k, n * beats, s // beats).mean((0, 2))


def blip_profile(on: Tensor, beats: int) -> Tensor:
    """Where one-step notes start within a beat: ``on`` [B, K, N, S, P] in [0, 1] -> [K, S / beats], each track's
    mean number per beat at each step of the beat, as `onset_profile` counts onsets. A one-step note is
    ``on[t] (1 - on[t - 1]) (1 - on[t + 1])``: with a binary roll, 1 exactly where a pitch sounds for one step
    alone (the phrase is bounded by silence)."""
    b, k, n, s, _ = on.shape
    steps = on.flatten(2, 3)  # [B, K, N·S, P]
    silent = 1.0 - nn.functional.pad(steps, (0, 0, 1, 1))  # [B, K, N·S + 2, P]
    blips = (steps * silent[:, :, :-2] * silent[:, :, 2:]).sum(-1)  # [B, K, N·S]
    return blips.view(b, k, n * beats, s // beats).mean((0, 2))


def pitch_class_profile(on: Tensor, eps: float = 1e-6) -> Tensor:
    """How many pitch classes each part spreads a bar over: ``on`` [B, K, N, S, P] in [0, 1] -> [K], the mean
    over non-empty bars of the effective number of classes ``M^2 / sum_c m_c^2`` (inverse Simpson index), where
    ``m_c`` sums the roll over the bar's steps and octaves of class c and ``M = sum_c m_c``.

    Why not UPC itself: its indicator "class c sounds somewhere in the bar" is flat almost everywhere (a soft
    version, ``1 - prod (1 - on)``, has no gradient once two cells of a class sound). The effective count is
    UPC when a bar's classes sound equally long and less otherwise, and its gradient always moves mass from a
    bar's dominant classes towards its rare or absent ones (or back, where a part plays too many). ``P`` is
    whole octaves: ``p % 12`` is then the class up to a shift, which changes no count. An empty bar (``M`` 0)
    counts neither in the sum nor in the number of bars."""
    b, k, n, s, p = on.shape
    mass = on.reshape(b, k, n, s * p // 12, 12).sum(3)  # [B, K, N, 12]: m_c
    total = mass.sum(-1)  # [B, K, N]: M
    effective = total.square() / (mass.square().sum(-1) + eps)  # [B, K, N]; 0 for an empty bar
    return effective.sum((0, 2)) / total.clamp(max=1.0).sum((0, 2)).clamp(min=1.0)


def note_switches(on: Tensor) -> Tensor:
    """Pitches switching on and off at each step of a phrase: ``on`` [B, K, N, S, P] in [0, 1] -> [B, 2K, N·S],
    onsets of the K tracks then their offsets (a note sounding at step t and not at t - 1 starts at t; one
    sounding at t - 1 and not at t ends at t; the phrase starts from silence)."""
    steps = on.flatten(2, 3)  # [B, K, N·S, P]
    change = steps.diff(dim=2, prepend=torch.zeros_like(steps[:, :, :1]))  # [B, K, N·S, P]
    return torch.cat([change.clamp(min=0).sum(-1), (-change).clamp(min=0).sum(-1)], 1)


class Critic(nn.Module):
    """``forward(phrase [B, K, N, S, P], genre [B] | None) -> score [B]`` (unbounded: a WGAN critic)."""

    def __init__(self, config: MuseGANConfig) -> None:
        super().__init__()
        c = self.config = config
        w = c.d_width
        beats, sub1, sub2 = c.time_factors
        octaves = c.n_pitches // 12
        self.private = nn.ModuleList(  # per track [B, 1, N, S, P] -> [B, w, N, beats·sub1, octaves]
            nn.Sequential(
                DiscriminatorBlock(1, w, (1, 1, 12)),
                DiscriminatorBlock(w, w, (1, sub2, 1)),
            )
            for _ in range(c.n_tracks)
        )
        self.shared = nn.Sequential(  # [B, K·w, N, beats·sub1, octaves] -> [B, 8w, 1, 1, 1]
            DiscriminatorBlock(c.n_tracks * w, 2 * w, (1, sub1, 1)),
            DiscriminatorBlock(2 * w, 4 * w, (1, 1, octaves)),
            DiscriminatorBlock(4 * w, 4 * w, (1, beats, 1)),
            DiscriminatorBlock(4 * w, 8 * w, (c.n_bars, 1, 1)),
        )
        self.out = nn.Linear(8 * w, 1)
        self.genre = nn.Embedding(c.n_genres, 8 * w) if c.n_genres else None
        self.streams = FeatureStreams(c) if c.feature_streams else None

    def forward(self, x: Tensor, genre: Tensor | None = None) -> Tensor:
        c = self.config
        expected = (c.n_tracks, c.n_bars, c.steps_per_bar, c.n_pitches)
        if x.dim() != 5 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"phrases must be [batch, *{expected}], got {tuple(x.shape)}")
        h = torch.cat([net(x[:, i : i + 1]) for i, net in enumerate(self.private)], 1)  # [B, K·w, N, ., .]
        h = self.shared(h).flatten(1)  # [B, 8w]
        score = self.out(h).squeeze(1)  # [B]
        if self.genre is not None:
            if genre is None:
                raise ValueError(f"this critic is conditioned on genres {c.genres}: pass genre indices [B]")
            score = score + (self.genre(genre) * h).sum(1)  # projection discriminator
        if self.streams is not None:
            score = score + self.streams(x)
        return score


class MuseGAN(nn.Module):
    """Generator and critic in one module, so one checkpoint holds both (the critic is needed to resume)."""

    config_class = MuseGANConfig

    def __init__(self, config: MuseGANConfig) -> None:
        super().__init__()
        self.config = config
        self.generator = Generator(config)
        self.critic = Critic(config)

    def sample_latents(self, batch: int, generator: torch.Generator | None = None) -> Latents:
        """Standard normal latents for ``batch`` phrases on the model's device."""
        c = self.config
        dev = next(self.parameters()).device

        def draw(*shape: int) -> Tensor:
            return torch.randn(*shape, generator=generator, device=dev)

        return Latents(
            draw(batch, c.part_dim),
            draw(batch, c.part_dim),
            draw(batch, c.n_tracks, c.part_dim),
            draw(batch, c.n_tracks, c.part_dim),
        )

    def forward(self, latents: Latents, genre: Tensor | None = None) -> Tensor:
        """The generator: phrases [B, K, N, S, P] in [-1, 1]."""
        return self.generator(latents, genre)


def binary_straight_through(x: Tensor) -> Tensor:
    """``x`` in [-1, 1] thresholded at 0 to exactly -1/+1 in the forward pass, with the identity as its gradient
    (the straight-through estimator; after a tanh this is the paper's sigmoid-adjusted estimator)."""
    hard = torch.where(x > 0, 1.0, -1.0).to(x.dtype)
    return x + (hard - x).detach()


def to_model_range(roll: Tensor) -> Tensor:
    """A bool/0-1-2 roll as the critic's input: -1 silent, +1 sounding."""
    return (roll > 0).float() * 2.0 - 1.0


def binarize(
    phrase: Tensor,
    mode: Literal["threshold", "bernoulli"] = "threshold",
    generator: torch.Generator | None = None,
) -> Tensor:
    """A generator output in [-1, 1] as a bool roll: sounding where > 0, or drawn with P = (x + 1) / 2."""
    if mode == "threshold":
        return phrase > 0
    if mode == "bernoulli":
        p = ((phrase.float() + 1.0) / 2.0).clamp(0.0, 1.0)
        return torch.rand(p.shape, generator=generator, device=p.device) < p
    raise ValueError(f"binarize mode must be 'threshold' or 'bernoulli', got {mode!r}")


def gradient_penalty(
    critic: nn.Module,
    real: Tensor,
    fake: Tensor,
    genre: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """WGAN-GP's penalty E[(‖∇D(x̂)‖₂ − 1)²] on interpolates x̂ = αx + (1 − α)x̃, α ~ U(0, 1) per sample.

    Differentiable (create_graph), so it trains the critic towards unit gradient norm between the two sets.
    """
    if real.shape != fake.shape:
        raise ValueError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)} must have one shape")
    alpha = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), generator=generator, device=real.device)
    mixed = (alpha * real.detach() + (1.0 - alpha) * fake.detach()).requires_grad_(True)  # [B, ...]
    score = critic(mixed, genre) if genre is not None else critic(mixed)
    (grad,) = torch.autograd.grad(score.sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()
