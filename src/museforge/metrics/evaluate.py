"""Evaluate a folder of generated music against a reference set: metrics, MGEval comparison, MuseGAN table,
originality against the training data.

The reference is a built dataset folder (has ``manifest.jsonl``; optionally one split and one style) or any
folder of music files. Files are read one at a time and only per-piece numbers are kept, so a whole dataset
as reference costs memory in proportion to its piece count, not its notes. Unreadable files are listed in the
report, never fatal.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import symusic

from museforge.data.formats import SUPPORTED_SUFFIXES, load_score
from museforge.data.manifest import MANIFEST, load_manifest, parse_data_spec
from museforge.metrics.compare import FeatureDensities, compare_sets, summarize
from museforge.metrics.features import METRICS, piece_features, piece_metrics
from museforge.metrics.musegan import average_metrics, musegan_metrics
from museforge.metrics.originality import OriginalityIndex, OriginalityResult, check_originality, is_near_copy
from museforge.metrics.voice_leading import METRICS as VOICE_LEADING
from museforge.metrics.voice_leading import voice_leading_metrics
from museforge.tokenizers.pianoroll import PianoRollConfig, PianoRollTokenizer

Progress = Callable[[], None]


def music_files(folder: Path | str) -> list[Path]:
    """Every supported music file under ``folder`` (recursively), sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)


def reference_files(spec: str, style: str | None = None) -> list[Path]:
    """Files named by ``DIR[:split]``: a built dataset's MIDI files, or a plain folder's music files.

    ``style`` and a split need a built dataset; asking for them on a plain folder is an error.
    """
    folder, split = parse_data_spec(spec)
    if (folder / MANIFEST).exists():
        return [record.midi_path(folder) for record in load_manifest(folder, split, style)]
    if split is not None or style is not None:
        raise ValueError(
            f"{folder} is not a built dataset (no {MANIFEST}): a split or style cannot be chosen"
        )
    return music_files(folder)


@dataclass
class SetAnalysis:
    """What is kept of one set of files: per-piece numbers only, never the scores, so memory stays bounded.

    ``musegan`` holds each piece's MuseGAN metrics (from its piano roll, computed as the file is read);
    ``voice_leading`` the voice-leading metrics of each piece with two or more voices, by name;
    ``originality`` each checked piece's result against an index, and ``indexed`` the pieces that were not
    checked because the index holds them (a reference set is not compared with itself).
    """

    paths: list[str] = field(default_factory=list)
    metrics: list[dict[str, float]] = field(default_factory=list)
    features: list[dict[str, np.ndarray]] = field(default_factory=list)
    musegan: list[dict[str, dict[str, float]]] = field(default_factory=list)
    multitrack: bool = False
    voice_leading: dict[str, dict[str, float]] = field(default_factory=dict)
    originality: dict[str, OriginalityResult] = field(default_factory=dict)
    indexed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


@dataclass
class PieceAnalyzer:
    """Measures one score at a time into a `SetAnalysis`: metrics, features, MuseGAN roll metrics, originality.

    ``index``: check each piece against it; ``skip_indexed``: leave out pieces the index holds (for a reference
    set, whose own pieces would trivially be found). ``musegan=False`` skips the piano rolls; ``roll_config``
    is their track layout (default LPD-5's; a MuseGAN's own layout gives its per-track table).
    """

    musegan: bool = True
    index: OriginalityIndex | None = None
    skip_indexed: bool = False
    analysis: SetAnalysis = field(default_factory=SetAnalysis)
    roll_config: PianoRollConfig = field(default_factory=PianoRollConfig)

    def __post_init__(self) -> None:
        self._config = self.roll_config
        self._tokenizer = PianoRollTokenizer(self._config)
        self._names = [spec.name for spec in self._config.tracks]
        self._drum = next((spec.name for spec in self._config.tracks if spec.is_drum), None)

    def add(self, name: str, score: symusic.Score) -> None:
        """Measure ``score`` (all of it first, so a failure leaves the analysis unchanged)."""
        metrics, features = piece_metrics(score), piece_features(score)
        leading = voice_leading_metrics(score)
        rolled = (
            musegan_metrics(
                self._tokenizer.encode(score),
                self._names,
                drum_track=self._drum,
                lowest_pitch=self._config.lowest_pitch,
            )
            if self.musegan
            else None
        )
        originality = None
        held = self.index is not None and self.skip_indexed and self.index.holds(score)
        if self.index is not None and not held:
            originality = check_originality(score, self.index)
        a = self.analysis
        a.paths.append(name)
        a.metrics.append(metrics)
        a.features.append(features)
        if rolled is not None:
            a.musegan.append(rolled)
        a.multitrack |= sum(1 for t in score.tracks if len(t.notes)) > 1
        if leading["n_voices"] >= 2:
            a.voice_leading[name] = leading
        if held:
            a.indexed.append(name)
        elif originality is not None:
            a.originality[name] = originality


def analyze_scores(
    scores: Sequence[symusic.Score],
    names: Sequence[str] | None = None,
    musegan: bool = True,
    index: OriginalityIndex | None = None,
    skip_indexed: bool = False,
) -> SetAnalysis:
    """Metrics and features of already loaded scores (see `PieceAnalyzer` for the options)."""
    analyzer = PieceAnalyzer(musegan=musegan, index=index, skip_indexed=skip_indexed)
    for position, score in enumerate(scores):
        analyzer.add(names[position] if names else str(position), score)
    return analyzer.analysis


def analyze_files(
    paths: Iterable[Path],
    progress: Progress | None = None,
    musegan: bool = True,
    index: OriginalityIndex | None = None,
    skip_indexed: bool = False,
    roll_config: PianoRollConfig | None = None,
) -> SetAnalysis:
    """Load and analyze files one by one, keeping no score; a file that cannot be read or measured goes to
    ``failed``."""
    analyzer = PieceAnalyzer(
        musegan=musegan, index=index, skip_indexed=skip_indexed, roll_config=roll_config or PianoRollConfig()
    )
    for path in paths:
        try:
            analyzer.add(str(path), load_score(path))
        except Exception as exc:  # a user's folder may hold anything: report it, keep going
            analyzer.analysis.failed[str(path)] = f"{type(exc).__name__}: {exc}"
        if progress is not None:
            progress()
    return analyzer.analysis


def training_files(spec: str) -> list[Path] | None:
    """The train split's files of the dataset named by ``DIR[:split]``, or None for a plain folder.

    The default originality index: generated music is checked against what a model trained on.
    """
    folder, _ = parse_data_spec(spec)
    if not (folder / MANIFEST).exists():
        return None
    return [record.midi_path(folder) for record in load_manifest(folder, "train")]


def _stats(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    return {
        "mean": float(arr.mean()) if len(arr) else math.nan,
        "std": float(arr.std()) if len(arr) else math.nan,
        "n": len(arr),
    }


def originality_summary(results: Mapping[str, OriginalityResult]) -> dict[str, Any]:
    """Set-level view: how long the copied runs are, how much is copied, how many pieces are near-copies."""
    runs = [r.longest_run for r in results.values()]
    return {
        "n": len(results),
        "longest_run_mean": float(np.mean(runs)) if runs else math.nan,
        "longest_run_max": max(runs) if runs else math.nan,
        "phrase_share_mean": _stats([r.phrase_share for r in results.values()])["mean"],
        "copied_share_mean": _stats([r.copied_share for r in results.values()])["mean"],
        "near_copy_share": float(np.mean([is_near_copy(r) for r in results.values()]))
        if results
        else math.nan,
    }


def originality_section(
    generated: SetAnalysis, reference: SetAnalysis, index: OriginalityIndex
) -> dict[str, Any]:
    """Per generated piece and per set, how much occurs in the index; the reference set's own overlap (its
    pieces outside the index) is the baseline that says what normal overlap looks like."""

    def per_piece(results: Mapping[str, OriginalityResult]) -> dict[str, dict[str, Any]]:
        return {path: r.to_dict() | {"near_copy": is_near_copy(r)} for path, r in results.items()}

    section: dict[str, Any] = {
        "index": {"source": index.source, "n_pieces": index.n_pieces, "n": index.n},
        "thresholds": {
            name: parameter.default
            for name, parameter in inspect.signature(is_near_copy).parameters.items()
            if parameter.default is not inspect.Parameter.empty
        },
        "generated": {
            "summary": originality_summary(generated.originality),
            "per_piece": per_piece(generated.originality),
        },
        "reference": {
            "summary": originality_summary(reference.originality),
            "per_piece": per_piece(reference.originality),
            "in_index": len(reference.indexed),
        },
    }
    if not reference.originality:
        section["reference"]["note"] = (
            f"all {len(reference.indexed)} reference pieces are in the index: no baseline "
            "(use a split the index does not hold, e.g. --reference DIR:test)"
        )
    return section


def relative_difference(generated: float, reference: float) -> float:
    """(generated − reference) / |reference|: how far a generated mean is from the data's, as a share of it.

    0 when the two are equal (both 0 included); NaN when the reference is 0 and the generated value is not, or
    either is NaN.
    """
    if generated == reference:
        return 0.0
    return (generated - reference) / abs(reference) if reference else math.nan


def voice_leading_section(generated: SetAnalysis, reference: SetAnalysis) -> dict[str, Any]:
    """Voice-leading statistics over each set's pieces with two or more voices, generated against the data:
    the difference of the means and the relative difference (near-zero data rates make the latter jumpy)."""
    measures = {}
    for name in VOICE_LEADING:
        gen = _stats([m[name] for m in generated.voice_leading.values()])
        ref = _stats([m[name] for m in reference.voice_leading.values()])
        measures[name] = {
            "generated": gen,
            "reference": ref,
            "difference": gen["mean"] - ref["mean"],
            "relative_difference": relative_difference(gen["mean"], ref["mean"]),
        }
    return {
        "pieces": {"generated": len(generated.voice_leading), "reference": len(reference.voice_leading)},
        "measures": measures,
        "per_piece": {"generated": dict(generated.voice_leading)},
    }


def compare_analyses(
    generated: SetAnalysis,
    reference: SetAnalysis,
    musegan: bool | None = None,
    index: OriginalityIndex | None = None,
    roll_config: PianoRollConfig | None = None,
) -> tuple[dict[str, Any], dict[str, FeatureDensities]]:
    """The report's numbers: metric statistics side by side, per-feature MGEval comparison, MuseGAN table,
    voice leading when either set has pieces of two or more voices and, with the ``index`` the analyses were
    checked against, the originality section.

    ``musegan=None`` adds the MuseGAN table when either set is multi-track (it needs analyses made with rolls).
    """
    metric_features = [{name: np.array([value]) for name, value in m.items()} for m in generated.metrics]
    reference_metric_features = [
        {name: np.array([value]) for name, value in m.items()} for m in reference.metrics
    ]
    generated_features = [f | m for f, m in zip(generated.features, metric_features, strict=True)]
    reference_features = [f | m for f, m in zip(reference.features, reference_metric_features, strict=True)]
    comparisons, densities = compare_sets(generated_features, reference_features)
    report: dict[str, Any] = {
        "n_generated": len(generated.paths),
        "n_reference": len(reference.paths),
        "failed": {"generated": generated.failed, "reference": reference.failed},
        "metrics": {
            name: {
                "generated": _stats([m[name] for m in generated.metrics]),
                "reference": _stats([m[name] for m in reference.metrics]),
            }
            for name in METRICS
        },
        "features": {name: c.to_dict() for name, c in comparisons.items()},
        "overall": summarize(comparisons),
        "per_piece": {"generated": dict(zip(generated.paths, generated.metrics, strict=True))},
    }
    if musegan is None:
        musegan = generated.multitrack or reference.multitrack
    if musegan and generated.musegan and reference.musegan:
        report["multitrack"] = {
            "tracks": [spec.name for spec in (roll_config or PianoRollConfig()).tracks],
            "generated": average_metrics(generated.musegan),
            "reference": average_metrics(reference.musegan),
        }
    if generated.voice_leading or reference.voice_leading:
        report["voice_leading"] = voice_leading_section(generated, reference)
    if index is not None:
        report["originality"] = originality_section(generated, reference, index)
    return report, densities


@dataclass
class Evaluation:
    """A finished `evaluate_folder` run: the report dict, where it was written, and the piece counts."""

    report: dict[str, Any]
    paths: dict[str, Path]
    generated: SetAnalysis
    reference: SetAnalysis


def evaluate_folder(
    generated: Path,
    reference: str,
    out: Path,
    *,
    style: str | None = None,
    index: OriginalityIndex | Path | None = None,
    progress: Callable[[str, int], Progress] | None = None,
    roll_config: PianoRollConfig | None = None,
    model: str | None = None,
    controls: Mapping[str, Any] | None = None,
) -> Evaluation:
    """Everything `museforge evaluate` does: read both sets, index the training data for originality (unless
    an index is given), compare, and write report.json / report.html / plots into ``out``.

    ``progress(description, total)`` returns a per-item callback (the CLI passes a rich progress bar).
    ``model`` names the model that generated the music (its track layout is ``roll_config``); ``controls`` is
    its control fidelity, measured by the caller (`museforge.lab.control_eval`), reported as given.
    Raises ValueError/FileNotFoundError naming what is missing or unreadable.
    """
    generated_paths = music_files(generated)
    reference_paths = reference_files(reference, style)
    if not generated_paths:
        raise ValueError(f"no music files in {generated}")
    if not reference_paths:
        raise ValueError(f"no reference pieces in {reference}" + (f" with style {style!r}" if style else ""))
    loaded = OriginalityIndex.load(index) if isinstance(index, Path) else index
    train_paths = training_files(reference) if loaded is None else None
    if loaded is None and train_paths:
        tick = progress("indexing the train split", len(train_paths)) if progress else None
        loaded, _ = OriginalityIndex.from_files(
            train_paths, source=f"{parse_data_spec(reference)[0]}:train", progress=tick
        )
    tick = progress("reading files", len(generated_paths) + len(reference_paths)) if progress else None
    gen = analyze_files(generated_paths, progress=tick, index=loaded, roll_config=roll_config)
    ref = analyze_files(
        reference_paths, progress=tick, index=loaded, skip_indexed=True, roll_config=roll_config
    )
    if not gen.paths or not ref.paths:
        raise ValueError(
            "no readable pieces in " + ("the generated folder" if not gen.paths else "the reference set")
        )
    report, densities = compare_analyses(gen, ref, index=loaded, roll_config=roll_config)
    report["generated"] = str(generated)
    report["reference"] = reference + (f" (style {style})" if style else "")
    if model is not None:
        report["model"] = model
    if controls is not None:
        report["controls"] = dict(controls)
    from museforge.metrics.report import write_report

    paths = write_report(report, out, densities, gen.metrics, ref.metrics)
    return Evaluation(report, paths, gen, ref)
