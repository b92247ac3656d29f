"""Insights and My-taste as HTML: the fragments the web pages embed, and the standalone command-line report."""

from __future__ import annotations

import csv
import io
from html import escape
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from museforge.analytics import charts

_env = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape(["html"])
)

REPORT_CSS = """body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}
.muted{color:#777}.chart{max-width:100%;height:auto;display:block;margin:1em 0}"""


def insights_charts(f: dict[str, Any]) -> dict[str, str]:
    """The Insights page's SVG charts."""
    a, p = f["activity"], f["polarization"]
    per_model: dict[str, dict[str, int]] = {}
    for r in a["jobs"]:
        per_model.setdefault(r["model"], {}).setdefault(r["day"], 0)
        per_model[r["model"]][r["day"]] += r["jobs"]
    days = sorted({r["day"] for r in a["jobs"]})
    clusters = [c for c in p["clusters"] if c["share"] is not None]
    return {
        "daily": charts.line_chart(
            "Active listeners per day", [r["day"] for r in a["daily"]],
            {"active listeners": [r["active_listeners"] for r in a["daily"]]},
        ),
        "jobs": charts.line_chart(
            "Generations per day by model", days, {m: [c.get(d, 0) for d in days] for m, c in per_model.items()}
        ),
        "styles": charts.bar_chart(
            "Share of generations by style", [r["style"] for r in f["styles"]],
            [r["generation_share"] for r in f["styles"]], percent=True,
        ),
        "models": charts.bar_chart(
            "Share of generations by model", [r["model"] for r in f["models"]],
            [r["generation_share"] for r in f["models"]], percent=True,
        ),
        "entropy": charts.histogram(
            "Listeners by concentration (normalized entropy of their style shares)",
            p["concentration"]["entropy"]["values"],
        ),
        "extreme": charts.histogram(
            "Listeners by share of extreme ratings (1 or 5 stars)", p["ratings"]["extreme_share"]["values"]
        ),
        "clusters": charts.bar_chart(
            "Taste clusters: share of listeners", [f"{c['cluster']}: {c['top_styles']}" for c in clusters],
            [c["share"] for c in clusters], percent=True,
        ),
    }  # fmt: skip


def taste_charts(t: dict[str, Any]) -> dict[str, str]:
    """The My-taste page's SVG charts."""
    total = sum(t["profile"].values()) or 1
    return {
        "profile": charts.bar_chart(
            "Your interest by style (generations and plays)", list(t["profile"]),
            [n / total for n in t["profile"].values()], percent=True,
        ),
        "ratings": charts.bar_chart(
            "Your ratings", [f"{s} ★" for s in t["rating_counts"]], list(t["rating_counts"].values())
        ),
    }  # fmt: skip


def insights_html(f: dict[str, Any], *, csv_base: str | None = None, query: str = "") -> str:
    """The Insights fragment; ``csv_base`` (e.g. "/insights/") adds a CSV link to each table."""
    return _env.get_template("insights.html").render(
        f=f, charts=insights_charts(f), csv_base=csv_base, query=query
    )


def taste_html(t: dict[str, Any]) -> str:
    return _env.get_template("taste.html").render(t=t, charts=taste_charts(t))


def standalone(title: str, body: str) -> str:
    """A self-contained HTML document (no external files) around a fragment."""
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{REPORT_CSS}</style></head><body><h1>{escape(title)}</h1>{body}</body></html>"
    )


def to_csv(rows: list[dict[str, Any]]) -> str:
    """Rows as CSV with a header (no header for no rows)."""
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return out.getvalue()
