"""MuseGAN training: WGAN-GP on multi-track piano-roll phrases, through the one `Trainer`.

Why a `Trainer` subclass and not a second loop: seeding, the resumable sampler, checkpoints with optimizer and
RNG state, exact resume, the progress bar and the CSV log all stay the trainer's. Only the optimizer step
differs, so `GANTrainer` overrides `_update` (and `_make_optimizer`, `evaluate`):

* one "optimizer step" of the trainer is one generator step; it consumes ``config.grad_accum`` real batches,
  which is therefore MuseGAN's ``n_critic`` (5 in the paper): one critic step per real batch, then the
  generator step;
* one Adam holds the generator's and the critic's parameters as two groups; a step only moves parameters
  that have gradients (the critic loss sees a detached fake, the generator loss runs with the critic frozen),
  so one optimizer state — saved and resumed by the trainer as it is — serves both networks;
* with the model's ``onset_matching`` > 0 the generator's loss adds that weight times `onset_distance` between
  the generated batch's `onset_profile` and the step's real batches' (feature matching on where notes start
  and end within a beat; see `museforge.families.musegan.model`), and with ``blip_matching`` > 0 that weight times the
  distance between their `blip_profile`s (notes one step long), and with ``pitch_class_matching`` > 0 between
  their `pitch_class_profile`s (pitch classes per bar); all genre by genre (`ProfileMatch`);
* there is no validation likelihood for a GAN: `evaluate` samples phrases with a fixed seed and scores how far
  their MuseGAN metrics (EB, UPC, QN per track) are from the validation data's (`table_gap`); the trainer keeps
  the checkpoint with the smallest gap as ``best`` and stops on its plateau.

One process only: DDP would need the generator and critic wrapped separately.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from museforge.data.dataset import PianoRollDataset, TokenCache, TokenizeOptions, tokenize_dataset
from museforge.data.manifest import load_manifest
from museforge.families.musegan.model import (
    MuseGAN,
    MuseGANConfig,
    binarize,
    blip_profile,
    gradient_penalty,
    onset_profile,
    pitch_class_profile,
    to_model_range,
)
from museforge.metrics.musegan import average_metrics, musegan_metrics, musegan_table, qualified_note_steps
from museforge.tokenizers.pianoroll import PianoRollTokenizer
from museforge.training.distributed import dist_info, seed_everything
from museforge.training.trainer import TrainConfig, Trainer

# Preset fields that choose the training phrases rather than the model (`prepare_musegan`).
PHRASE_FILTERS = ("min_notes_per_bar", "min_tracks", "hop_bars", "balance_genres")
GP_WEIGHT = 10.0  # the WGAN-GP paper's and MuseGAN's λ


class PhraseDataset(PianoRollDataset):
    """`PianoRollDataset` phrases with their piece's genre, filtered and augmented for a GAN.

    Item: ``roll`` bool [tracks, n_bars, steps, pitches] and ``genre`` (index into ``genres``; 0 when
    ``genres`` is empty). Kept are phrases of a known genre whose bars hold on average at least
    ``min_notes_per_bar`` onsets and in which at least ``min_tracks`` tracks sound (so one-part folk tunes do
    not teach a four-part model that three parts are silent). ``max_shift`` transposes a phrase at random by up
    to that many semitones where no note would leave the roll, drawing from torch's seeded global RNG.
    ``balance_genres`` repeats the phrases of the smaller genres until every genre has as many as the largest:
    on the music21 corpus 8 % of the phrases are chorales, too few for the critic to teach the generator their
    rhythm (the shipped generator's chorales started half as many notes per beat as the real ones).
    """

    def __init__(
        self,
        data_dir: Path | str,
        split: str,
        genres: Sequence[str] = (),
        n_bars: int = 4,
        hop_bars: int | None = None,
        min_notes_per_bar: float = 0.0,
        min_tracks: int = 1,
        max_shift: int = 0,
        balance_genres: bool = False,
    ) -> None:
        super().__init__(data_dir, split, n_bars, hop_bars)
        self.genres, self.max_shift = tuple(genres), max_shift
        offsets = self.cache.offsets
        piece_of = np.searchsorted(offsets, self.segments, side="right") - 1  # [segments]
        keep, genre_ids = [], []
        for piece in np.unique(piece_of):
            style = self.cache.pieces[piece]["style"]
            if self.genres and style not in self.genres:
                continue
            bars = self.cache.piece(int(piece))  # [bars, tracks, steps, pitches]
            onsets = (bars == 2).sum(axis=(1, 2, 3))  # [bars]
            sounding = (bars > 0).any(axis=(2, 3))  # [bars, tracks]
            for s in self.segments[piece_of == piece]:
                b = int(s - offsets[piece])
                if onsets[b : b + n_bars].sum() < min_notes_per_bar * n_bars:
                    continue
                if sounding[b : b + n_bars].any(axis=0).sum() < min_tracks:
                    continue
                keep.append(s)
                genre_ids.append(self.genres.index(style) if self.genres else 0)
        self.segments = np.asarray(keep, dtype=np.int64)
        self.genre_ids = np.asarray(genre_ids, dtype=np.int64)
        if balance_genres and len(self.genre_ids):
            counts = np.bincount(self.genre_ids)
            rows = np.concatenate(  # each genre's phrases, cycled up to the largest genre's count
                [np.resize(np.flatnonzero(self.genre_ids == g), counts.max()) for g in np.flatnonzero(counts)]
            )
            self.segments, self.genre_ids = self.segments[rows], self.genre_ids[rows]

    def pieces_used(self) -> np.ndarray:
        """Indices (into ``cache.pieces``) of the pieces the kept phrases come from."""
        return np.unique(np.searchsorted(self.cache.offsets, self.segments, side="right") - 1)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        roll = super().__getitem__(i)["roll"]  # [K, N, S, P] bool
        if self.max_shift > 0:
            used = np.flatnonzero(roll.any(dim=(0, 1, 2)).numpy())
            if len(used):
                low = max(-self.max_shift, -int(used[0]))
                high = min(self.max_shift, roll.shape[-1] - 1 - int(used[-1]))
                shift = int(torch.randint(low, high + 1, ()).item())
                roll = torch.roll(roll, shift, dims=-1)  # nothing wraps: the shift stays inside the range
        return {"roll": roll, "genre": torch.tensor(int(self.genre_ids[i]))}


def onset_distance(fake: Tensor, real: Tensor, eps: float = 1e-4) -> Tensor:
    """Squared Hellinger distance between two onset profiles [2K, S / beats] (`onset_profile`; or two other
    `ProfileMatch` profiles of counts), summed over tracks: ``sum (sqrt(fake + eps) - sqrt(real + eps))^2``.
    On square roots, a step where real notes almost never start (0.004 onsets per beat) and generated ones start
    ten times as often weighs as much as 46 % too many on the beat, where most notes start: the rare steps,
    where fragments show, are not drowned out.
    ``eps`` keeps the gradient finite at an empty step."""
    return ((fake + eps).sqrt() - (real + eps).sqrt()).square().sum()


class ProfileMatch:
    """Feature matching, genre by genre, on a profile of a batch (`onset_profile`, `blip_profile`,
    `pitch_class_profile`: ``profile(on) -> counts``, its beat length already bound).

    ``add_real`` collects the real batches' profile per genre; ``distance`` is the generated batch's
    `onset_distance` from it per genre, weighted by each genre's share of the batch (so every phrase weighs
    the same). Per genre, because a batch-wide profile lets genres make up for one another: the shipped
    generator's chorales started half as many notes per beat as the real ones and its Renaissance voices a
    third too many, and the pooled profile was nearly right.
    """

    def __init__(self, profile: Callable[[Tensor], Tensor]) -> None:
        self.profile = profile
        self.sums: dict[int, Tensor] = {}  # genre -> sum over real phrases of their profile
        self.counts: dict[int, int] = {}  # genre -> real phrases seen

    def add_real(self, on: Tensor, genre: Tensor | None) -> None:
        """Count a real batch ``on`` [B, K, N, S, P] in [0, 1] with its genres [B] (None: one group)."""
        for g, rows in _genre_rows(genre, on):
            n = len(rows)
            self.sums[g] = self.sums.get(g, 0.0) + self.profile(on[rows]).detach() * n
            self.counts[g] = self.counts.get(g, 0) + n

    def distance(self, on: Tensor, genre: Tensor | None) -> Tensor:
        """The generated batch's distance from the real profiles of its genres (each must have been seen)."""
        total = on.new_zeros(())
        for g, rows in _genre_rows(genre, on):
            if g not in self.counts:
                raise ValueError(f"no real phrases of genre {g} to match")
            real = self.sums[g] / self.counts[g]
            total = total + len(rows) / on.shape[0] * onset_distance(self.profile(on[rows]), real)
        return total


def _genre_rows(genre: Tensor | None, on: Tensor) -> list[tuple[int, Tensor]]:
    """(genre, indices of its rows) for each genre in a batch ``on``; one group for an unconditional model."""
    labels = torch.zeros(on.shape[0], dtype=torch.long, device=on.device) if genre is None else genre
    return [(int(g), torch.nonzero(labels == g).flatten()) for g in torch.unique(labels)]


def table_gap(generated: dict[str, dict[str, float]], reference: dict[str, dict[str, float]]) -> float:
    """How far generated MuseGAN metrics are from the reference's: the mean over tracks of |ΔEB| / 100 and, for
    pitched tracks, the relative errors of UPC and QN (the issue's goal: within 10 %). A metric the generated
    set cannot produce (no notes at all) counts as an error of 1, and no error counts more: otherwise an early
    generator that plays nothing would score better than one that plays too many pitch classes, and be kept
    as the best checkpoint (it was, in the first CPU run)."""
    errors = []
    for metric, scale in (("EB", None), ("UPC", "relative"), ("QN", "relative")):
        for track, ref in reference.get(metric, {}).items():
            gen = generated.get(metric, {}).get(track, math.nan)
            if math.isnan(ref):
                continue
            if math.isnan(gen):
                errors.append(1.0)
            elif scale is None:
                errors.append(abs(gen - ref) / 100.0)
            else:
                errors.append(min(1.0, abs(gen - ref) / max(abs(ref), 1e-9)))
    return float(np.mean(errors)) if errors else math.nan


class GANTrainer(Trainer):
    """WGAN-GP training of a `MuseGAN` (see the module docstring); ``config.grad_accum`` is ``n_critic``.

    ``track_names`` / ``drum_track`` / ``lowest_pitch`` describe the roll for the evaluation metrics;
    ``eval_phrases`` phrases are generated (and at most as many validation phrases read) per evaluation.
    """

    def __init__(
        self,
        model: MuseGAN,
        train_data: Dataset,
        config: TrainConfig,
        *,
        track_names: Sequence[str],
        drum_track: str | None = None,
        lowest_pitch: int = 24,
        eval_data: Dataset | None = None,
        tokenizer: dict[str, Any] | None = None,
        gp_weight: float = GP_WEIGHT,
        eval_phrases: int = 128,
    ) -> None:
        if dist_info().world_size > 1:
            raise ValueError("MuseGAN trains in one process; launch it without torchrun")
        if not isinstance(model, MuseGAN):
            raise ValueError(f"GANTrainer trains a MuseGAN, got {type(model).__name__}")
        if len(track_names) != model.config.n_tracks:
            raise ValueError(f"{len(track_names)} track names for a {model.config.n_tracks}-track model")
        self.gan = model
        self.track_names, self.drum_track, self.lowest_pitch = list(track_names), drum_track, lowest_pitch
        self.gp_weight, self.eval_phrases = gp_weight, eval_phrases
        self._reference: dict[str, dict[str, float]] | None = None
        self._reference_genres = torch.zeros(0, dtype=torch.long)
        super().__init__(model, train_data, config, eval_data=eval_data, tokenizer=tokenizer)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        """Adam (no weight decay), generator and critic as two groups; only parameters with gradients move."""
        c = self.config
        groups = [
            {"params": list(self.gan.generator.parameters())},
            {"params": list(self.gan.critic.parameters())},
        ]
        return torch.optim.Adam(groups, lr=c.lr, betas=(c.beta1, c.beta2))

    def _genre(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        return batch["genre"] if self.gan.config.n_genres else None

    def _update(self, batches: Iterator[Any], group: int) -> tuple[float, float, float, float]:
        """``group`` critic steps on real batches, then one generator step: (mean critic loss, real bars seen,
        generator gradient norm, lr)."""
        gan, opt = self.gan, self.optimizer
        lr = self.scheduler.get_last_lr()[0]
        critic_loss, bars = 0.0, 0.0
        genre = None
        beats = gan.config.time_factors[0]
        matches = [
            (weight, ProfileMatch(profile))
            for weight, profile in (
                (gan.config.onset_matching, partial(onset_profile, beats=beats)),
                (gan.config.blip_matching, partial(blip_profile, beats=beats)),
                (gan.config.pitch_class_matching, pitch_class_profile),
            )
            if weight
        ]
        for _ in range(group):
            batch = self._to_device(next(batches))
            real = to_model_range(batch["roll"])  # [B, K, N, S, P] in {-1, 1}
            genre = self._genre(batch)
            if matches:
                on = (real + 1.0) / 2.0  # [B, K, N, S, P] in {0, 1}
                for _, match in matches:
                    match.add_real(on, genre)
            with torch.no_grad():
                fake = gan.generator(gan.sample_latents(real.shape[0]), genre)
            with self._autocast():
                wasserstein = gan.critic(real, genre).mean() - gan.critic(fake, genre).mean()
            penalty = gradient_penalty(gan.critic, real.float(), fake.float(), genre)
            loss = -wasserstein + self.gp_weight * penalty
            loss.backward()
            opt.step()  # the generator has no gradients here: only the critic moves
            opt.zero_grad(set_to_none=True)
            critic_loss += loss.item()
            bars += real.shape[0] * real.shape[2]
        gan.critic.requires_grad_(False)
        try:
            with self._autocast():
                fake = gan.generator(
                    gan.sample_latents(real.shape[0]), genre
                )  # genres of the last real batch
                gen_loss = -gan.critic(fake, genre).mean()
                if matches:
                    on = (fake.float() + 1.0) / 2.0  # [B, K, N, S, P]
                    for weight, match in matches:
                        gen_loss = gen_loss + weight * match.distance(on, genre)
            gen_loss.backward()
        finally:
            gan.critic.requires_grad_(True)
        grad_norm = torch.nn.utils.clip_grad_norm_(
            gan.generator.parameters(), self.config.grad_clip or math.inf
        )
        opt.step()
        self.scheduler.step()
        opt.zero_grad(set_to_none=True)
        return critic_loss / group, bars, float(grad_norm), lr

    def _table(self, rolls: list[np.ndarray]) -> dict[str, dict[str, float]]:
        return musegan_table(rolls, self.track_names, self.drum_track, self.lowest_pitch)

    def reference_table(self) -> dict[str, dict[str, float]]:
        """MuseGAN metrics of (up to ``eval_phrases``) validation phrases, read once with their genres."""
        if self._reference is None:
            assert self.eval_data is not None
            n = min(len(self.eval_data), self.eval_phrases)
            items = [self.eval_data[int(i)] for i in np.linspace(0, len(self.eval_data) - 1, n).round()]
            self._reference = self._table([item["roll"].numpy() for item in items])
            self._reference_genres = torch.stack([item["genre"] for item in items])  # [n]
        return self._reference

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """``loss``: `table_gap` between ``eval_phrases`` phrases sampled with a fixed seed (with the genres of
        the validation phrases) and those validation phrases."""
        if self.eval_data is None or len(self.eval_data) == 0:
            return {}
        reference = self.reference_table()
        gen = torch.Generator(device=self.device).manual_seed(self.config.seed)
        genre = None
        if self.gan.config.n_genres:
            genre = self._reference_genres.repeat(-(-self.eval_phrases // len(self._reference_genres)))
            genre = genre[: self.eval_phrases].to(self.device)
        was_training = self.gan.training
        self.gan.eval()
        phrases = self.gan.generator(self.gan.sample_latents(self.eval_phrases, gen), genre)
        self.gan.train(was_training)
        rolls = binarize(phrases).cpu().numpy()  # [E, K, N, S, P]
        return {"loss": table_gap(self._table(list(rolls)), reference)}


# Four parts in score order (SATB chorales, string quartets, four-voice Renaissance polyphony), for corpora
# that are not LPD-5; string programs so the parts stay apart when rendered.
PART_TRACKS: tuple[dict[str, Any], ...] = (
    {"name": "soprano", "program": 40},
    {"name": "alto", "program": 40},
    {"name": "tenor", "program": 41},
    {"name": "bass", "program": 42},
)


def pianoroll_config_for(data_dir: Path) -> dict[str, Any]:
    """The roll layout a MuseGAN trains on for a built dataset: LPD-5's five program tracks for an LPD-5 build,
    otherwise `PART_TRACKS` assigned by part order (the music21 corpus has no instrument programs)."""
    records = load_manifest(data_dir)
    if records and all(r.collection == "lpd5" for r in records):
        return {}
    return {"assign": "order", "tracks": [dict(t) for t in PART_TRACKS]}


@dataclass
class GANRun:
    """What `prepare_musegan` built: the trainer, the model config and the phrase counts."""

    trainer: GANTrainer
    model_config: dict[str, Any]
    train_phrases: int
    valid_phrases: int


def prepare_musegan(
    data_dir: Path,
    model_preset: dict[str, Any],
    train_config: TrainConfig,
    *,
    device: torch.device | str = "cpu",
    n_bars: int = 4,
    max_shift: int = 6,
    workers: int | None = None,
) -> GANRun:
    """Tokenize ``data_dir`` into piano rolls (layout from `pianoroll_config_for`) if needed, build phrase
    datasets and a genre-conditioned `MuseGAN` (genres: the styles of the training phrases), and its trainer.

    ``model_preset`` holds `MuseGANConfig` fields plus the `PHRASE_FILTERS` that choose the training phrases.
    """
    preset = dict(model_preset)
    filters = {k: preset.pop(k) for k in PHRASE_FILTERS if k in preset}
    options = TokenizeOptions(config=pianoroll_config_for(data_dir), progress=True)
    if workers is not None:
        options.workers = workers
    tokenize_dataset(Path(data_dir), "pianoroll", options)
    cache = TokenCache(data_dir, "pianoroll", "train")
    tokenizer = cache.tokenizer()
    assert isinstance(tokenizer, PianoRollTokenizer)
    roll = tokenizer.config
    min_tracks = min(filters.get("min_tracks", 1), roll.n_tracks)
    common = {
        "n_bars": n_bars,
        "min_notes_per_bar": filters.get("min_notes_per_bar", 0.0),
        "min_tracks": min_tracks,
    }
    everything = PhraseDataset(data_dir, "train", hop_bars=filters.get("hop_bars"), **common)
    genres = sorted({cache.pieces[p]["style"] for p in everything.pieces_used()})
    if not genres:
        raise ValueError(
            f"{data_dir} has no training phrases with >= {min_tracks} sounding tracks and "
            f">= {common['min_notes_per_bar']} notes per bar"
        )
    train = PhraseDataset(
        data_dir,
        "train",
        genres,
        hop_bars=filters.get("hop_bars"),
        max_shift=max_shift,
        balance_genres=bool(filters.get("balance_genres", False)),
        **common,
    )
    valid = PhraseDataset(data_dir, "valid", genres, **common)
    config = MuseGANConfig(
        n_tracks=roll.n_tracks,
        n_bars=n_bars,
        steps_per_bar=roll.steps_per_bar,
        n_pitches=roll.n_pitches,
        genres=tuple(genres),
        **preset,
    )
    seed_everything(train_config.seed)  # --seed fixes the initial weights too
    model = MuseGAN(config).to(device)
    drum = next((t.name for t in roll.tracks if t.is_drum), None)
    trainer = GANTrainer(
        model,
        train,
        train_config,
        track_names=[t.name for t in roll.tracks],
        drum_track=drum,
        lowest_pitch=roll.lowest_pitch,
        eval_data=valid if len(valid) else None,
        tokenizer=tokenizer.state_dict(),
    )
    return GANRun(trainer, config.to_dict(), len(train), len(valid))


def musegan_tables(
    model: MuseGAN,
    tokenizer: PianoRollTokenizer,
    data_dir: Path,
    filters: dict[str, Any],
    bars: int = 20_000,
    seed: int = 0,
    batch: int = 250,
) -> dict[str, Any]:
    """MuseGAN's Table 1 for a model: the metrics of ``bars`` generated bars (phrases with genres in the training
    data's proportions) beside those of as many training bars (the phrases the recipe's ``filters`` keep:
    ``min_notes_per_bar``, ``min_tracks``, ``hop_bars``), and their `table_gap`."""
    c, roll = model.config, tokenizer.config
    names = [t.name for t in roll.tracks]
    drum = next((t.name for t in roll.tracks if t.is_drum), None)
    data = PhraseDataset(
        data_dir,
        "train",
        c.genres,
        n_bars=c.n_bars,
        hop_bars=filters.get("hop_bars"),
        min_notes_per_bar=filters.get("min_notes_per_bar", 0.0),
        min_tracks=min(filters.get("min_tracks", 1), c.n_tracks),
    )
    if len(data) == 0:
        raise ValueError(f"{data_dir} holds no training phrases for this model")
    n = max(1, bars // c.n_bars)
    picks = np.linspace(0, len(data) - 1, min(n, len(data))).round().astype(int)
    training = average_metrics(
        [musegan_metrics(data[int(i)]["roll"].numpy(), names, drum, roll.lowest_pitch) for i in picks]
    )
    gen = torch.Generator().manual_seed(seed)
    genres = torch.as_tensor(data.genre_ids)[torch.randint(len(data), (n,), generator=gen)]  # [n]
    dev = next(model.parameters()).device
    was = model.training
    model.eval()
    per_phrase = []
    with torch.no_grad():
        for start in range(0, n, batch):
            g = genres[start : start + batch].to(dev)
            latents = model.sample_latents(len(g), gen if dev.type == "cpu" else None)
            phrases = binarize(model(latents, g if c.n_genres else None)).cpu().numpy()  # [b, K, N, S, P]
            per_phrase += [musegan_metrics(p, names, drum, roll.lowest_pitch) for p in phrases]
    model.train(was)
    generated = average_metrics(per_phrase)
    return {
        "tracks": names,
        "generated_bars": n * c.n_bars,
        "training_bars": len(picks) * c.n_bars,
        "qn_min_steps": qualified_note_steps(c.steps_per_bar),
        "training": training,
        "generated": generated,
        "gap": table_gap(generated, training),
    }
