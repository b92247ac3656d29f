"""The promotion gate: a candidate serves only if it is measurably no worse than production, and better on the
new music, on the same fixed held-out set (the one production ships with, see `museforge.lab.heldout`).

Rules (tolerances are `GateSettings`; the README says why these defaults):

- held-out NLL of every style production already knew may not rise by more than ``nll_tolerance`` nats/token;
- NLL on the held-out part of the new music must fall by more than ``min_new_gain``;
- every sample must decode to music with notes;
- the share of near-copies among the samples may not rise above production's by more than chance (a one-sided
  two-proportion test at 95 %, `rose_beyond_chance`: on 8 samples, one near-copy where production had none is
  chance);
- MGEval overlap of the samples with the held-out music may not fall below production's minus
  ``overlap_tolerance``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import symusic

from museforge.data.dataset import TokenizeOptions, tokenize_dataset
from museforge.data.manifest import load_manifest
from museforge.families import family_of
from museforge.families.likelihood import heldout_likelihood
from museforge.families.serving import generate_song, get_model
from museforge.metrics.compare import compare_sets, summarize
from museforge.metrics.diversity import distinct_ngram_share, mean_pitch_class_entropy
from museforge.metrics.evaluate import analyze_scores
from museforge.metrics.originality import OriginalityIndex
from museforge.models.zoo import ModelNotFoundError

NEAR_COPY_Z = 1.645  # one-sided 95 %: a near-copy rate must rise by more than chance to reject a candidate


@dataclass(frozen=True)
class GateSettings:
    nll_tolerance: float = 0.02  # nats/token a known style may lose
    min_new_gain: float = 0.0  # nats/token the new music's held-out NLL must drop by, at least
    overlap_tolerance: float = 0.05  # MGEval overlap the samples may lose
    n_samples: int = 8
    bars: int = 8
    seconds: float = 10.0  # a family that counts time samples this long instead
    max_pieces: int = 200  # per held-out set
    # Tokens scored per piece (its first): the shipped REMI held-out set is 179k tokens, 71k of them one
    # classical piece; at 8192 it is 88k and both versions score in about a minute on 2 cores.
    max_piece_tokens: int = 8192

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tokenized_for(data_dir: Path, tokenizer: dict[str, Any]) -> Path:
    """Tokenize a dataset with a checkpoint's own tokenizer (same vocabulary), once; returns the folder."""
    tokenize_dataset(data_dir, tokenizer["name"], TokenizeOptions(config=tokenizer["config"], progress=False))
    return data_dir


def measure(
    checkpoint: Path,
    heldout: Path,
    new: Path | None,
    index: OriginalityIndex | None,
    settings: GateSettings,
) -> dict[str, Any]:
    """The gate's numbers for one checkpoint: held-out NLL per style, new-music NLL, and its samples'."""

    def nll(data: Path) -> dict[str, Any]:
        return heldout_likelihood(
            checkpoint, data, settings.max_pieces, split="test", max_tokens=settings.max_piece_tokens
        )

    known = nll(heldout)
    fresh = nll(new) if new is not None else None
    return {
        "nll_by_style": {style: row["nll"] for style, row in known["by_style"].items()},
        "nll": known["nll"],
        "new_nll": None if fresh is None else fresh["nll"],
        **_samples(checkpoint, heldout, index, settings),
    }


def _samples(
    checkpoint: Path, heldout: Path, index: OriginalityIndex | None, settings: GateSettings
) -> dict[str, float]:
    """Sample ``n_samples`` pieces (seeds 0..n-1, the held-out styles in turn) and measure them."""
    loaded = get_model(checkpoint)
    family = family_of(loaded)
    styles = sorted({r.style for r in load_manifest(heldout)} & set(loaded.styles)) or [None]
    scores, sampled, decoded, copies = [], [], 0, 0
    for seed in range(settings.n_samples):
        options = family.length(settings.bars, settings.seconds)
        if "style" in family.takes() and styles[0] is not None:
            options["style"] = styles[seed % len(styles)]
        try:
            song = generate_song(loaded, seed=seed, originality_index=index, **options)[0]
        except (ValueError, ModelNotFoundError):
            continue
        if song.score.note_num() > 0:
            decoded += 1
            scores.append(song.score)
            sampled.append(song.tokens[len(song.tokens) - song.new_tokens :])
            copies += bool(song.originality is not None and song.originality.near_copy)
    reference = [r.midi_path(heldout) for r in load_manifest(heldout)]
    overlap = _overlap(scores, reference)
    return {
        "decoded": decoded / settings.n_samples,
        "near_copy_rate": copies / decoded if decoded else math.nan,
        "overlap": overlap,
        "distinct_4grams": distinct_ngram_share(sampled, 4),
        "pitch_class_entropy": mean_pitch_class_entropy(scores),
    }


def _new_music(before: float | None, after: float | None, settings: GateSettings) -> list[str]:
    if before is None or after is None:
        return ["no held-out new music to measure an improvement on (every new piece is in training)"]
    if not after < before - settings.min_new_gain:
        return [f"NLL on the held-out new music did not improve ({before:.4f} -> {after:.4f} nats/token)"]
    return []


def _overlap(scores: list[symusic.Score], reference: list[Path]) -> float:
    """Mean MGEval overlap of the samples' features with the held-out pieces' (NaN without samples)."""

    if not scores:
        return math.nan
    generated = analyze_scores(scores, musegan=False)
    held = analyze_scores([symusic.Score(str(p)) for p in reference], musegan=False)
    return summarize(compare_sets(generated.features, held.features)[0])["overlap"]


def rose_beyond_chance(
    before: float, n_before: int, after: float, n_after: int, z: float = NEAR_COPY_Z
) -> bool:
    """Whether a rate measured on ``n_after`` samples rose above one measured on ``n_before`` by more than
    chance: the one-sided two-proportion z-test, ``(after - before) / sqrt(p (1 - p) (1/n_before + 1/n_after))
    > z`` with ``p`` the pooled rate. A model that writes a near-copy one time in eight shows none in 8 samples
    a third of the time, so "any rise" rejected sound candidates on one unlucky sample."""
    if not (n_before and n_after) or math.isnan(before) or math.isnan(after):
        return False
    pooled = (before * n_before + after * n_after) / (n_before + n_after)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / n_before + 1 / n_after))
    return after > before if spread == 0 else (after - before) / spread > z


def decide(
    production: dict[str, Any], candidate: dict[str, Any], settings: GateSettings, new_music: bool = True
) -> list[str]:
    """The reasons to reject the candidate (an empty list promotes it), each naming the rule and the numbers.
    ``new_music=False`` drops the rule that the held-out new music must improve (a candidate tuned on feedback,
    not on new music)."""
    reasons = []
    for style, before in sorted(production["nll_by_style"].items()):
        after = candidate["nll_by_style"].get(style, math.nan)
        if not after <= before + settings.nll_tolerance:
            reasons.append(
                f"held-out NLL of {style} rose from {before:.4f} to {after:.4f} nats/token "
                f"(tolerance {settings.nll_tolerance})"
            )
    if new_music:
        reasons += _new_music(production["new_nll"], candidate["new_nll"], settings)
    if candidate["decoded"] < 1.0:
        reasons.append(f"only {candidate['decoded']:.0%} of the samples decoded to music")
    before, after = (round(m["decoded"] * settings.n_samples) for m in (production, candidate))
    if rose_beyond_chance(production["near_copy_rate"], before, candidate["near_copy_rate"], after):
        reasons.append(
            f"near-copy rate rose from {production['near_copy_rate']:.0%} to {candidate['near_copy_rate']:.0%}"
            f" (more than chance over {before} and {after} samples)"
        )
    if not candidate["overlap"] >= production["overlap"] - settings.overlap_tolerance:
        reasons.append(
            f"MGEval overlap with held-out music fell from {production['overlap']:.3f} to "
            f"{candidate['overlap']:.3f} (tolerance {settings.overlap_tolerance})"
        )
    return reasons
