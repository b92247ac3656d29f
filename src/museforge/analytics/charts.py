"""Small SVG charts drawn on the server: no JavaScript, no CDN, the same markup in the page and the report."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

import numpy as np

PALETTE = ("#3b6ea5", "#d1793b", "#4c9a6a", "#a14f8f", "#8c8c3b", "#5a5aa8", "#b04a4a", "#3b8c8c")
W, H, PAD_L, PAD_B, PAD_T = 640, 220, 44, 28, 24


def _frame(title: str, body: list[str], height: int = H) -> str:
    return (
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {height}" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>'
        f'<text x="4" y="15" class="chart-title" font-size="13" font-weight="bold">{escape(title)}</text>'
        + "".join(body)
        + "</svg>"
    )


def _empty(title: str) -> str:
    return _frame(title, [f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle" fill="#888">no data</text>'])


def _y_axis(top: float) -> list[str]:
    out = []
    for frac in (0, 0.5, 1):
        y = H - PAD_B - frac * (H - PAD_B - PAD_T)
        out.append(f'<line x1="{PAD_L}" x2="{W - 4}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{PAD_L - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end">'
                   f"{top * frac:.3g}</text>")  # fmt: skip
    return out


def bar_chart(
    title: str, labels: Sequence[str], values: Sequence[float | None], *, percent: bool = False
) -> str:
    """Horizontal bars, one per label (None draws no bar)."""
    if not labels:
        return _empty(title)
    row = 22
    height = PAD_T + row * len(labels) + 8
    top = max([v for v in values if v is not None] + [1e-12])
    body = []
    for i, (label, v) in enumerate(zip(labels, values, strict=True)):
        y = PAD_T + i * row
        width = 0 if v is None else (W - 260) * v / top
        text = "–" if v is None else (f"{v:.0%}" if percent else f"{v:.3g}")
        body.append(
            f'<text x="150" y="{y + 15}" font-size="11" text-anchor="end">{escape(label)}</text>'
            f'<rect class="bar" x="156" y="{y + 4}" width="{width:.1f}" height="{row - 8}" fill="{PALETTE[0]}"/>'
            f'<text x="{160 + width:.1f}" y="{y + 15}" font-size="11">{text}</text>'
        )
    return _frame(title, body, height)


def line_chart(title: str, labels: Sequence[str], series: dict[str, Sequence[float]]) -> str:
    """One polyline per series over the x labels (days or weeks), with a legend."""
    if not labels or not series:
        return _empty(title)
    top = max(max(s) for s in series.values()) or 1.0
    n = len(labels)
    step = (W - PAD_L - 10) / max(n - 1, 1)
    body = _y_axis(top)
    for i in sorted({0, n // 2, n - 1}):
        anchor = "start" if i == 0 else "end" if i == n - 1 else "middle"
        body.append(f'<text x="{PAD_L + i * step:.1f}" y="{H - 8}" font-size="10" text-anchor="{anchor}">'
                    f"{escape(labels[i])}</text>")  # fmt: skip
    for k, (name, values) in enumerate(series.items()):
        color = PALETTE[k % len(PALETTE)]
        pts = " ".join(
            f"{PAD_L + i * step:.1f},{H - PAD_B - v / top * (H - PAD_B - PAD_T):.1f}"
            for i, v in enumerate(values)
        )
        body.append(f'<polyline class="line" fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>')
        body.append(f'<text x="{W - 150}" y="{PAD_T + 12 * k}" font-size="10" fill="{color}">'
                    f"{escape(name)}</text>")  # fmt: skip
    return _frame(title, body)


def histogram(
    title: str, values: Sequence[float], *, bins: int = 10, lo: float = 0.0, hi: float = 1.0
) -> str:
    """How many listeners fall in each of ``bins`` equal intervals of [lo, hi]."""
    if len(values) == 0:
        return _empty(title)
    counts, edges = np.histogram(np.clip(values, lo, hi), bins=bins, range=(lo, hi))
    top = float(counts.max()) or 1.0
    width = (W - PAD_L - 10) / bins
    body = _y_axis(top)
    for i, c in enumerate(counts):
        h = c / top * (H - PAD_B - PAD_T)
        body.append(
            f'<rect class="bar" x="{PAD_L + i * width + 1:.1f}" y="{H - PAD_B - h:.1f}" width="{width - 2:.1f}" '
            f'height="{h:.1f}" fill="{PALETTE[1]}"><title>{edges[i]:.2f}–{edges[i + 1]:.2f}: {c}</title></rect>'
        )
    for x in (lo, (lo + hi) / 2, hi):
        px = PAD_L + (x - lo) / (hi - lo) * (W - PAD_L - 10)
        body.append(f'<text x="{px:.1f}" y="{H - 8}" font-size="10" text-anchor="middle">{x:g}</text>')
    return _frame(title, body)
