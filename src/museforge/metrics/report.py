"""Write an evaluation as ``report.json`` and a self-contained ``report.html`` (PNG plots embedded and beside it).

Plots are drawn with matplotlib's object API and the Agg renderer: no display is needed.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from museforge.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from museforge.metrics.compare import FeatureDensities

GENERATED_COLOR, REFERENCE_COLOR, INTER_COLOR = "#d95f02", "#1b9e77", "#7570b3"


def json_safe(value: Any) -> Any:
    """NaN and infinities become null so the file is strict JSON; numpy scalars become Python numbers."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not hasattr(value, "__len__"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _png(fig: Figure) -> bytes:
    """PNG bytes of a figure; figures are made without pyplot, so no GUI backend or global state is involved."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return buffer.getvalue()


def _grid(n: int) -> tuple[Figure, list[Axes]]:
    cols = 4
    rows = max(1, math.ceil(n / cols))
    fig = Figure(figsize=(3.4 * cols, 2.5 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.axis("off")
    return fig, flat[:n]


def metric_histograms(
    generated: Sequence[Mapping[str, float]], reference: Sequence[Mapping[str, float]], names: Sequence[str]
) -> bytes:
    """One panel per metric: its distribution over generated and over reference pieces."""
    fig, axes = _grid(len(names))
    for ax, name in zip(axes, names, strict=True):
        gen = [m[name] for m in generated if not math.isnan(m[name])]
        ref = [m[name] for m in reference if not math.isnan(m[name])]
        values = gen + ref
        bins = 20 if values and min(values) < max(values) else 1
        if ref:
            ax.hist(
                ref,
                bins=bins,
                range=(min(values), max(values) + 1e-9),
                density=True,
                alpha=0.5,
                color=REFERENCE_COLOR,
                label="reference",
            )
        if gen:
            ax.hist(
                gen,
                bins=bins,
                range=(min(values), max(values) + 1e-9),
                density=True,
                alpha=0.5,
                color=GENERATED_COLOR,
                label="generated",
            )
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    if axes:
        axes[0].legend(fontsize=7)
    return _png(fig)


def density_plots(densities: Mapping[str, FeatureDensities]) -> bytes:
    """One panel per feature: KDEs of the intra-set and inter-set distances on their shared grid."""
    names = sorted(densities)
    fig, axes = _grid(len(names))
    for ax, name in zip(axes, names, strict=True):
        d = densities[name]
        ax.plot(d.grid, d.intra_reference, color=REFERENCE_COLOR, label="intra reference")
        ax.plot(d.grid, d.intra_generated, color=GENERATED_COLOR, label="intra generated")
        ax.plot(d.grid, d.inter, color=INTER_COLOR, linestyle="--", label="inter")
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    if axes:
        axes[0].legend(fontsize=7)
    return _png(fig)


def overlap_bars(features: Mapping[str, Mapping[str, float]]) -> bytes:
    """Overlap area per feature (reference intra-set vs inter-set), 1 = indistinguishable."""
    names = sorted(features)
    values = [
        0.0
        if features[n]["overlap"] is None or math.isnan(features[n]["overlap"])
        else features[n]["overlap"]
        for n in names
    ]
    fig = Figure(figsize=(7, 0.25 * len(names) + 1))
    ax = fig.subplots()
    ax.barh(names, values, color=INTER_COLOR)
    ax.set_xlim(0, 1)
    ax.set_xlabel("overlap area")
    ax.tick_params(labelsize=7)
    ax.invert_yaxis()
    return _png(fig)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _multitrack_html(section: Mapping[str, Any]) -> str:
    """Laid out like MuseGAN's Table 1: one row per set, one column per (metric, track)."""
    columns = [
        (metric, key)
        for metric in ("EB", "UPC", "QN", "DP", "TD")
        for key in sorted(set(section["reference"][metric]) | set(section["generated"][metric]))
    ]
    header = ["set"] + [f"{metric} {key}" for metric, key in columns]
    rows = [
        [label] + [section[label][metric].get(key, math.nan) for metric, key in columns]
        for label in ("reference", "generated")
    ]
    return (
        "<h2>Multi-track metrics (MuseGAN paper)</h2><p>EB empty bars %, UPC used pitch classes per bar, "
        "QN qualified notes % (no shorter than a 32nd note), DP drum pattern %, TD tonal distance.</p>"
        + _table(header, rows)
    )


def _voice_leading_html(section: Mapping[str, Any]) -> str:
    """One row per measure: each set's mean ± std over its multi-voice pieces, and the generated mean's distance
    from the reference's."""
    rows = [
        [
            name,
            f"{_fmt(m['generated']['mean'])} ± {_fmt(m['generated']['std'])}",
            f"{_fmt(m['reference']['mean'])} ± {_fmt(m['reference']['std'])}",
            m["difference"],
            m["relative_difference"],
        ]
        for name, m in section["measures"].items()
    ]
    pieces = section["pieces"]
    return (
        f"<h2>Voice leading</h2><p>Over the pieces with two or more voices ({pieces['generated']} generated, "
        f"{pieces['reference']} reference); a voice is a non-drum track read by its top note at each onset. "
        "Relative difference: (generated − reference) / reference.</p>"
        + _table(["measure", "generated", "reference", "difference", "relative difference"], rows)
    )


def _controls_html(section: Mapping[str, Any]) -> str:
    """Spearman ρ between the controls asked of the model and those its music has (1 = exact control)."""
    first, last = section["seed"], section["seed"] + section["pieces"] - 1
    intro = (
        f"<h2>Control fidelity</h2><p>{section['pieces']} pieces generated by {_fmt(section['model'])} "
        f"(seeds {first}–{last}) with controls drawn at random; Spearman ρ between the requested and the "
        "measured values, 1 for exact control. "
    )
    if section["unit"] == "bar":
        rows = [
            [a, section["rho"][a], section["leak"][a], section["leak_inherent"][a], section["leak_excess"][a]]
            for a in section["rho"]
        ]
        return (
            intro + f"Per bar over {section['bars']} bars a piece, rhythm and polyphony classes drawn "
            "independently. Leak: ρ between one attribute's requested class and the other's measured class; "
            "inherent leak: that of the requested classes themselves; excess: what the model adds.</p>"
            + _table(["attribute", "ρ", "leak", "inherent leak", "excess leak"], rows)
        )
    return (
        intro
        + f"Per piece of {_fmt(section['seconds'], 1)} s: a note-density class, and a scale whose pitch "
        "classes the 12-bin histogram should follow (mean ρ over pieces).</p>"
        + _table(["control", "ρ"], [[name, value] for name, value in section["rho"].items()])
    )


def _originality_html(section: Mapping[str, Any]) -> str:
    """Set summaries (generated vs the reference baseline) and one row per generated piece, copies first."""
    index = section["index"]
    keys = (
        "n",
        "longest_run_mean",
        "longest_run_max",
        "phrase_share_mean",
        "copied_share_mean",
        "near_copy_share",
    )
    summary_rows = [
        [label] + [section[label]["summary"][k] for k in keys] for label in ("generated", "reference")
    ]
    pieces = sorted(
        section["generated"]["per_piece"].items(),
        key=lambda item: (not item[1]["near_copy"], -(item[1]["copied_share"] or 0.0)),
    )
    piece_rows = [
        [path, r["longest_run"], r["phrase_share"], r["copied_share"], "near-copy" if r["near_copy"] else ""]
        for path, r in pieces
    ]
    thresholds = ", ".join(f"{k} {v}" for k, v in section["thresholds"].items())
    note = section["reference"].get("note", "")
    return (
        f"<h2>Originality</h2><p>Against an index of {index['n_pieces']} pieces ({_fmt(index['source'])}): longest "
        "run of consecutive notes found in the index (transposition-invariant), share of 4-bar phrases found whole, "
        f"share of notes inside copied runs. Near-copy when over {html.escape(thresholds)}. The reference row "
        f"checks reference pieces the index does not hold: what normal overlap looks like. {html.escape(note)}</p>"
        + _table(
            [
                "set",
                "pieces",
                "mean longest run",
                "max longest run",
                "phrase share",
                "copied share",
                "near-copies",
            ],
            summary_rows,
        )
        + _table(["generated piece", "longest run", "phrase share", "copied share", "verdict"], piece_rows)
    )


def render_html(report: Mapping[str, Any], images: Mapping[str, bytes]) -> str:
    """A readable one-file page: summary, metrics, feature comparison, MuseGAN, voice-leading and originality
    tables, plots, failures."""
    metrics = report["metrics"]
    metric_rows = [
        [
            name,
            f"{_fmt(v['generated']['mean'])} ± {_fmt(v['generated']['std'])}",
            f"{_fmt(v['reference']['mean'])} ± {_fmt(v['reference']['std'])}",
        ]
        for name, v in metrics.items()
    ]
    feature_rows = [
        [name, f["overlap"], f["kl"], f["overlap_generated"], f["kl_generated"]]
        for name, f in sorted(report["features"].items())
    ]
    overall = report["overall"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>museforge evaluation</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px}"
        "th{background:#f3f3f3}img{max-width:100%}</style></head><body>",
        "<h1>museforge evaluation</h1>",
        f"<p>{report['n_generated']} generated pieces"
        + (f" (model {html.escape(str(report['model']))})" if report.get("model") else "")
        + f" against {report['n_reference']} reference pieces "
        f"({html.escape(str(report.get('reference', '')))}). Overall overlap area {_fmt(overall['overlap'])}, "
        f"KL divergence {_fmt(overall['kl'])} (1 and 0 when the sets are alike).</p>",
        "<h2>Metrics (mean ± std)</h2>",
        _table(["metric", "generated", "reference"], metric_rows),
        "<h2>Distribution comparison (MGEval)</h2>",
        "<p>Overlap area and KL divergence between the reference intra-set distances and the generated-vs-reference "
        "inter-set distances, and the same for the generated intra-set distances, on one shared grid.</p>",
        _table(
            ["feature", "overlap", "KL", "overlap (generated intra)", "KL (generated intra)"], feature_rows
        ),
    ]
    if "controls" in report:
        parts.append(_controls_html(report["controls"]))
    if "multitrack" in report:
        parts.append(_multitrack_html(report["multitrack"]))
    if "voice_leading" in report:
        parts.append(_voice_leading_html(report["voice_leading"]))
    if "originality" in report:
        parts.append(_originality_html(report["originality"]))
    for title, name in (
        ("Overlap per feature", "overlap.png"),
        ("Metric distributions", "metrics.png"),
        ("Distance densities", "densities.png"),
    ):
        if name in images:
            encoded = base64.b64encode(images[name]).decode()
            parts.append(f"<h2>{title}</h2><img alt='{name}' src='data:image/png;base64,{encoded}'>")
    failed = [
        (kind, path, reason) for kind, files in report["failed"].items() for path, reason in files.items()
    ]
    if failed:
        parts += ["<h2>Unreadable files</h2>", _table(["set", "file", "reason"], failed)]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(
    report: Mapping[str, Any],
    out_dir: Path | str,
    densities: Mapping[str, FeatureDensities],
    generated_metrics: Sequence[Mapping[str, float]],
    reference_metrics: Sequence[Mapping[str, float]],
) -> dict[str, Path]:
    """Write report.json, the PNG plots and report.html into ``out_dir``; return the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    safe = json_safe(report)
    images = {
        "overlap.png": overlap_bars(safe["features"]),
        "metrics.png": metric_histograms(generated_metrics, reference_metrics, list(report["metrics"])),
    }
    if densities:
        images["densities.png"] = density_plots(densities)
    paths = {"json": out / "report.json", "html": out / "report.html"}
    atomic_write_json(paths["json"], safe)
    for name, data in images.items():
        atomic_write_bytes(out / name, data)
        paths[name] = out / name
    atomic_write_text(paths["html"], render_html(safe, images))
    return paths
