"""Analytics: the operators' Insights (page, CSV tables, JSON under /api/v1/analytics) and each listener's own
My-taste page; plus the endpoint the player calls to note a play.

Population figures are for admins only (403 for everyone else); a listener's figures are computed for the
signed-in user alone, never for a listener named in the request.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel

from museforge.analytics.insights import (
    TABLES,
    Scope,
    activity,
    insights,
    interest,
    my_taste,
    parse_day,
    polarization,
    table,
)
from museforge.analytics.report import insights_html, taste_html, to_csv
from museforge.web.actions import readable_song
from museforge.web.deps import AdminDep, ApiWriterDep, MemberDep, ServicesDep, record
from museforge.web.routers.pages import render

api = APIRouter(prefix="/analytics", tags=["analytics"])
pages = APIRouter(include_in_schema=False)


def get_scope(
    days: Annotated[int, Query(ge=1, le=3660, description="The last N days (when since is not given).")] = 30,
    since: Annotated[str | None, Query(description="First day, YYYY-MM-DD.")] = None,
    until: Annotated[str | None, Query(description="Last day, YYYY-MM-DD (default today).")] = None,
    model: Annotated[str | None, Query(max_length=200, description="Only this model.")] = None,
    style: Annotated[str | None, Query(max_length=200, description="Only this style.")] = None,
) -> Scope:
    """The date range and filters of a request; a bad date or range is a 422 naming it."""
    try:
        if since is None and until is None:
            return Scope.last(days, model, style)
        end = parse_day(until) + 1 if until else Scope.last(1).until_day
        start = parse_day(since) if since else end - days
        return Scope(start, end, model or None, style or None)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc


ScopeDep = Annotated[Scope, Depends(get_scope)]


def _csv(rows: list[dict], name: str) -> Response:
    return Response(
        to_csv(rows), media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
    )  # fmt: skip


def _table(figures: dict, name: str) -> list[dict]:
    try:
        return table(figures, name)
    except KeyError as exc:
        raise HTTPException(404, f"no table {name!r}; tables: {', '.join(TABLES)}") from exc


# ---- JSON API (admins) ----
@api.get("/insights")
def api_insights(services: ServicesDep, admin: AdminDep, scope: ScopeDep) -> dict:
    """Every population figure of the Insights page."""
    return insights(services.repo, scope)


@api.get("/activity")
def api_activity(services: ServicesDep, admin: AdminDep, scope: ScopeDep) -> dict:
    """Active listeners per day/week, generations per day by model and style, success, latency, retention."""
    return {"scope": scope.to_dict(), **activity(services.repo, scope)}


@api.get("/interest")
def api_interest(
    services: ServicesDep, admin: AdminDep, scope: ScopeDep, by: Literal["style", "model"] = "style"
) -> dict:
    """Per style or model: share of generations, plays, completion rate, mean rating, like share."""
    return {"scope": scope.to_dict(), "rows": interest(services.repo, scope, by)}


@api.get("/polarization")
def api_polarization(services: ServicesDep, admin: AdminDep, scope: ScopeDep) -> dict:
    """Concentration and rating polarization across listeners, taste clusters, Esteban–Ray index."""
    return {"scope": scope.to_dict(), **polarization(services.repo, scope)}


@api.get("/tables/{name}.csv", response_class=Response)
def api_table(name: str, services: ServicesDep, admin: AdminDep, scope: ScopeDep) -> Response:
    return _csv(_table(insights(services.repo, scope), name), name)


@api.get("/me")
def api_me(services: ServicesDep, member: MemberDep, scope: ScopeDep) -> dict:
    """My own taste: style profile, concentration, rating pattern and the cluster I resemble."""
    return my_taste(services.repo, member.owner, scope)


class PlayIn(BaseModel):
    kind: Literal["play", "play_end"]
    song_id: str
    share: str | None = None


@api.post("/events", status_code=204, response_class=Response)
def note_play(body: PlayIn, services: ServicesDep, visitor: ApiWriterDep) -> Response:
    """The player notes a play (or a play to the end) of a song this visitor may hear."""
    song = readable_song(services, visitor, body.song_id, body.share)
    record(services, visitor.owner, body.kind, song)
    return Response(status_code=204)


# ---- pages ----
@pages.get("/insights", response_class=HTMLResponse)
def insights_page(request: Request, services: ServicesDep, admin: AdminDep, scope: ScopeDep) -> HTMLResponse:
    figures = insights(services.repo, scope)
    query = (
        "?" + urlencode({k: v for k, v in request.query_params.items() if v}) if request.query_params else ""
    )
    models = [m.name for m in services.repo.list_models()]
    styles = sorted({s for m in services.repo.list_models() for s in m.info.get("styles", [])})
    return render(
        request, "insights.html", body=insights_html(figures, csv_base="/insights/", query=query),
        scope=scope.to_dict(), days=scope.until_day - scope.since_day, models=models, styles=styles,
    )  # fmt: skip


@pages.get("/insights/{name}.csv", response_class=Response)
def insights_csv(name: str, services: ServicesDep, admin: AdminDep, scope: ScopeDep) -> Response:
    return _csv(_table(insights(services.repo, scope), name), name)


@pages.get("/taste", response_class=HTMLResponse)
def taste_page(request: Request, services: ServicesDep, member: MemberDep, scope: ScopeDep) -> HTMLResponse:
    return render(request, "taste.html", body=taste_html(my_taste(services.repo, member.owner, scope)))
