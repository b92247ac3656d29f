"""The figures of the Insights and My-taste pages, from counts the store computes inside the database.

Every function here asks the repository for grouped counts (a handful of rows per style, day or listener) and
turns them into figures with the pure measures of `museforge.analytics.measures`. Population figures name no
listener: per-listener measures are summarised as distributions, and a taste cluster's profile is shown only
when at least `MIN_GROUP` listeners share it.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from museforge.analytics.measures import (
    TasteClusters,
    bimodality_coefficient,
    esteban_ray,
    extreme_share,
    herfindahl,
    normalized_entropy,
    taste_clusters,
)
from museforge.store import Repository
from museforge.store.records import day_of

MIN_GROUP = 3  # listeners a cluster needs before its profile is shown
MIN_INTEREST = 3  # generations + plays a listener needs to be placed among the taste profiles
INTEREST_KINDS = ("generate", "play")
NONE_LABEL = "(none)"
EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()


def day_label(day: int) -> str:
    return dt.date.fromordinal(EPOCH_ORDINAL + day).isoformat()


def parse_day(text: str) -> int:
    """A YYYY-MM-DD date as a day number; ValueError naming the problem otherwise."""
    try:
        return dt.date.fromisoformat(text).toordinal() - EPOCH_ORDINAL
    except ValueError as exc:
        raise ValueError(f"a date is YYYY-MM-DD, got {text!r}") from exc


def parse_span(text: str) -> int:
    """'30d', '2w' or '30' as a number of days (1 to 3660)."""
    m = re.fullmatch(r"\s*(\d{1,4})\s*([dw]?)\s*", text)
    if not m:
        raise ValueError(f"a span is a number of days or weeks such as 30d or 4w, got {text!r}")
    days = int(m.group(1)) * (7 if m.group(2) == "w" else 1)
    if not 1 <= days <= 3660:
        raise ValueError(f"a span is 1 to 3660 days, got {days}")
    return days


@dataclass(frozen=True)
class Scope:
    """What a page shows: the days [since_day, until_day) and optional model and style filters."""

    since_day: int
    until_day: int
    model: str | None = None
    style: str | None = None

    @classmethod
    def last(cls, days: int, model: str | None = None, style: str | None = None) -> Scope:
        """The last ``days`` days, today included."""
        today = day_of(time.time())
        return cls(today + 1 - days, today + 1, model or None, style or None)

    def __post_init__(self) -> None:
        if self.until_day <= self.since_day:
            raise ValueError("the range's end must come after its start")
        if self.until_day - self.since_day > 3660:
            raise ValueError("a range is at most 3660 days")

    def events(self, *, with_style: bool = True) -> dict[str, Any]:
        """The store's event filter for this scope."""
        return {"since_day": self.since_day, "until_day": self.until_day, "model": self.model,
                "style": self.style if with_style else None}  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {"since": day_label(self.since_day), "until": day_label(self.until_day - 1),
                "model": self.model, "style": self.style}  # fmt: skip


def finite(x: float | None) -> float | None:
    """NaN (undefined) as None, for JSON and templates; -0.0 as 0.0."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x) + 0.0


def ratio(a: float, b: float) -> float | None:
    return None if b == 0 else a / b


# ---- activity ----
def _with_listeners(repo: Repository, by: tuple[str, ...], ev: dict[str, Any]) -> list[dict[str, Any]]:
    """Event counts per group with the group's distinct listeners alongside."""
    people = {r[by[0]]: r["listeners"] for r in repo.count_listeners(by=by, **ev)}
    return [{**r, "listeners": people.get(r[by[0]], 0)} for r in repo.count_events(by=by, **ev)]


def activity(repo: Repository, scope: Scope) -> dict[str, Any]:
    """Active listeners per day and week, jobs per day by model and style, job success and latency, and
    day-1 / day-7 retention of the listeners first seen in the range."""
    ev = scope.events()
    daily = _with_listeners(repo, ("day",), ev)
    weekly = _with_listeners(repo, ("week",), ev)
    jobs = repo.count_events(by=("day", "model", "style"), kinds=("generate",), **ev)
    stats = repo.job_stats(since_day=scope.since_day, until_day=scope.until_day, model=scope.model,
                           style=scope.style)  # fmt: skip
    retention = {}
    for after in (1, 7):
        cohort, returned = repo.retention(
            since_day=scope.since_day, until_day=scope.until_day, after_days=after
        )
        retention[f"day_{after}"] = {"cohort": cohort, "returned": returned, "rate": ratio(returned, cohort)}
    return {
        "daily": [{"day": day_label(r["day"]), "active_listeners": r["listeners"], "events": r["n"]}
                  for r in daily],
        "weekly": [{"week": day_label(r["week"]), "active_listeners": r["listeners"], "events": r["n"]}
                   for r in weekly],
        "jobs": [{"day": day_label(r["day"]), "model": r["model"], "style": r["style"] or NONE_LABEL,
                  "jobs": r["n"]} for r in jobs],
        "jobs_total": stats["total"],
        "success_rate": ratio(stats["done"], stats["done"] + stats["failed"]),
        "failed": stats["failed"],
        "latency_s": {f"p{round(p * 100)}": v for p, v in stats["latency"].items()},
        "retention": retention,
    }  # fmt: skip


# ---- style interest ----
def interest(repo: Repository, scope: Scope, field: str = "style", listener: str | None = None) -> list[dict]:
    """Per style (or model): share of generations, plays, completion rate (plays to the end / plays), mean
    rating and like share (ratings of 4 or 5 / ratings)."""
    ev = {**scope.events(), "listener": listener}
    kinds = ("generate", "play", "play_end", "rate")
    counts = repo.count_events(by=(field, "kind"), kinds=kinds, **ev)
    values = repo.count_events(by=(field, "value"), kinds=("rate",), **ev)
    rows: dict[str, dict[str, float]] = {}
    for r in counts:
        rows.setdefault(r[field], {k: 0 for k in kinds} | {"value_sum": 0, "likes": 0})[r["kind"]] += r["n"]
        if r["kind"] == "rate":
            rows[r[field]]["value_sum"] += r["value_sum"]
    for r in values:
        if r["value"] >= 4:
            rows[r[field]]["likes"] += r["n"]
    generations = sum(c["generate"] for c in rows.values())
    return [
        {
            field: key or NONE_LABEL,
            "generations": c["generate"],
            "generation_share": ratio(c["generate"], generations),
            "plays": c["play"],
            "completion_rate": ratio(c["play_end"], c["play"]),
            "ratings": c["rate"],
            "mean_rating": ratio(c["value_sum"], c["rate"]),
            "like_share": ratio(c["likes"], c["rate"]),
        }
        for key, c in sorted(rows.items())
    ]


# ---- taste profiles and polarization ----
@dataclass
class Profiles:
    """Per-listener counts: interest [n, styles] (generations + plays) and ratings [n, 5] (stars 1..5)."""

    listeners: list[str]
    styles: list[str]
    interest: np.ndarray
    ratings: np.ndarray


def profiles(repo: Repository, scope: Scope) -> Profiles:
    """Two grouped queries: (listener, style) interest counts and (listener, stars) rating counts."""
    ev = scope.events(with_style=False)  # the styles are the vectors' axes
    rows = repo.count_events(by=("listener", "style"), kinds=INTEREST_KINDS, **ev)
    stars = repo.count_events(by=("listener", "value"), kinds=("rate",), **ev)
    listeners = sorted({r["listener"] for r in rows} | {r["listener"] for r in stars})
    styles = sorted({r["style"] for r in rows})
    li = {name: i for i, name in enumerate(listeners)}
    si = {name: i for i, name in enumerate(styles)}
    x = np.zeros((len(listeners), len(styles)))
    for r in rows:
        x[li[r["listener"]], si[r["style"]]] += r["n"]
    y = np.zeros((len(listeners), 5))
    for r in stars:
        if 1 <= r["value"] <= 5:
            y[li[r["listener"]], r["value"] - 1] += r["n"]
    return Profiles(listeners, styles, x, y)


def _rating_list(counts: np.ndarray) -> list[int]:
    return [star for star, n in zip(range(1, 6), counts.astype(int), strict=True) for _ in range(n)]


def listener_measures(interest_counts: np.ndarray, rating_counts: np.ndarray, n_styles: int) -> dict:
    """One listener's concentration (normalized entropy, HHI of style shares) and rating polarization
    (extreme share, bimodality coefficient)."""
    ratings = _rating_list(rating_counts)
    return {
        "entropy": finite(
            normalized_entropy(interest_counts, n_categories=max(n_styles, len(interest_counts)))
        ),
        "hhi": finite(herfindahl(interest_counts)),
        "extreme_share": finite(extreme_share(ratings)),
        "bimodality": finite(bimodality_coefficient(ratings)),
        "ratings": len(ratings),
    }


def population_measures(interest: np.ndarray, ratings: np.ndarray, n_styles: int) -> dict[str, np.ndarray]:
    """`listener_measures` for every listener (row) at once: the same formulas as matrix operations, NaN where
    undefined (no interest; no ratings; under 4 or constant ratings for the bimodality coefficient)."""
    k = max(n_styles, interest.shape[1])
    total = interest.sum(1)
    n = ratings.sum(1)
    stars = np.arange(1, 6, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = interest / total[:, None]
        plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(1)
        entropy = np.where((total > 0) & (k >= 2), -plogp / math.log(max(k, 2)), np.nan)
        hhi = np.where(total > 0, (p * p).sum(1), np.nan)
        extreme = np.where(n > 0, (ratings[:, 0] + ratings[:, 4]) / n, np.nan)
        d = stars[None, :] - ((ratings * stars).sum(1) / n)[:, None]
        m2, m3, m4 = ((ratings * d**j).sum(1) / n for j in (2, 3, 4))
        skew = np.sqrt(n * (n - 1)) / (n - 2) * m3 / m2**1.5
        excess = (n - 1) / ((n - 2) * (n - 3)) * ((n + 1) * (m4 / m2**2 - 3) + 6)
        bc = (skew**2 + 1) / (excess + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3)))
    return {"entropy": entropy + 0.0, "hhi": hhi, "extreme_share": extreme,
            "bimodality": np.where((n >= 4) & (m2 > 0), bc, np.nan)}  # fmt: skip


def _summary(values: np.ndarray) -> dict[str, Any]:
    """Distribution of one measure over listeners; the values sorted, so in no listener's order."""
    v = np.sort(values[~np.isnan(values)])
    if len(v) == 0:
        return {"listeners": 0, "mean": None, "p10": None, "median": None, "p90": None, "values": []}
    q = np.quantile(v, [0.1, 0.5, 0.9])
    return {"listeners": len(v), "mean": float(v.mean()), "p10": float(q[0]), "median": float(q[1]),
            "p90": float(q[2]), "values": v.tolist()}  # fmt: skip


def _clusters(p: Profiles) -> TasteClusters | None:
    """k-means taste clusters over the share vectors of listeners with at least MIN_INTEREST events (None for
    fewer than 3 such listeners)."""
    keep = p.interest.sum(1) >= MIN_INTEREST
    shares = p.interest[keep] / np.maximum(p.interest[keep].sum(1, keepdims=True), 1)
    if len(shares) < 3 or not p.styles:
        return None
    return taste_clusters(shares)


def cluster_rows(clusters: TasteClusters, styles: list[str]) -> list[dict[str, Any]]:
    """Each cluster's size and mean profile; a cluster of fewer than MIN_GROUP listeners shows no profile."""
    counts = np.bincount(clusters.labels, minlength=len(clusters.centers))
    rows = []
    for j, center in enumerate(clusters.centers):
        shown = counts[j] >= MIN_GROUP
        top = sorted(zip(styles, center, strict=True), key=lambda t: -t[1])[:3] if shown else []
        rows.append({
            "cluster": j + 1, "listeners": int(counts[j]) if shown else None,
            "share": float(counts[j] / counts.sum()) if shown else None,
            "profile": {s or NONE_LABEL: float(c) for s, c in zip(styles, center, strict=True)} if shown else None,
            "top_styles": ", ".join(f"{s or NONE_LABEL} {c:.0%}" for s, c in top if c > 0) if shown
            else f"fewer than {MIN_GROUP} listeners",
        })  # fmt: skip
    return rows


def polarization(repo: Repository, scope: Scope) -> dict[str, Any]:
    """Population view: distributions of the per-listener measures, the taste clusters (k by silhouette) and
    the Esteban–Ray polarization index over them."""
    p = profiles(repo, scope)
    per = population_measures(p.interest, p.ratings, len(p.styles))
    clusters = _clusters(p)
    return {
        "styles": [s or NONE_LABEL for s in p.styles],
        "listeners": len(p.listeners),
        "concentration": {"entropy": _summary(per["entropy"]), "hhi": _summary(per["hhi"])},
        "ratings": {"extreme_share": _summary(per["extreme_share"]), "bimodality": _summary(per["bimodality"])},
        "clusters": [] if clusters is None else cluster_rows(clusters, p.styles),
        "silhouette": None if clusters is None else finite(clusters.silhouette),
        "esteban_ray": None if clusters is None else finite(esteban_ray(clusters.shares, clusters.centers)),
        "clustered_listeners": 0 if clusters is None else len(clusters.labels),
    }  # fmt: skip


def insights(repo: Repository, scope: Scope) -> dict[str, Any]:
    """Everything the Insights page shows."""
    return {
        "scope": scope.to_dict(),
        "activity": activity(repo, scope),
        "styles": interest(repo, scope, "style"),
        "models": interest(repo, scope, "model"),
        "polarization": polarization(repo, scope),
    }


def my_taste(repo: Repository, listener: str, scope: Scope) -> dict[str, Any]:
    """One listener's own figures, and which (large enough) cluster of listeners they resemble."""
    p = profiles(repo, scope)
    styles = interest(repo, scope, "style", listener=listener)
    if listener in p.listeners:
        i = p.listeners.index(listener)
        own, stars = p.interest[i], p.ratings[i]
    else:
        own, stars = np.zeros(len(p.styles)), np.zeros(5)
    resembles = None
    clusters = _clusters(p)
    if clusters is not None and own.sum() >= MIN_INTEREST:
        j = int(((clusters.centers - own / own.sum()) ** 2).sum(1).argmin())
        row = cluster_rows(clusters, p.styles)[j]
        resembles = row if row["listeners"] is not None else None
    return {
        "scope": scope.to_dict(),
        "styles": styles,
        "profile": {s or NONE_LABEL: float(n) for s, n in zip(p.styles, own, strict=True) if n > 0},
        "measures": listener_measures(own, stars, len(p.styles)),
        "rating_counts": {str(star): int(n) for star, n in zip(range(1, 6), stars, strict=True)},
        "resembles": resembles,
    }


TABLES = {
    "daily": ("activity", "daily"),
    "weekly": ("activity", "weekly"),
    "jobs": ("activity", "jobs"),
    "styles": ("styles",),
    "models": ("models",),
    "clusters": ("polarization", "clusters"),
}


def table(figures: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """One of the Insights tables (`TABLES`) as rows of flat values, for CSV."""
    if name not in TABLES:
        raise KeyError(f"no table {name!r}; tables: {', '.join(TABLES)}")
    rows: Any = figures
    for key in TABLES[name]:
        rows = rows[key]
    return [{k: v for k, v in r.items() if not isinstance(v, dict)} for r in rows]
