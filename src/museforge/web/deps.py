"""Shared request dependencies: the services made in the lifespan, the visitor's session, CSRF checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from museforge.analytics.sink import EventSink
from museforge.store import FileStore, Repository, Session, Song, User
from museforge.store.records import Event
from museforge.web.catalog import ModelCatalog
from museforge.web.families import Limits
from museforge.web.jobs import JobQueue
from museforge.web.security import COOKIE_NAME, CSRF_FIELD, CSRF_HEADER, CookieSigner, csrf_ok
from museforge.web.settings import Settings


@dataclass
class Services:
    """Everything the lifespan creates; routes reach it through `ServicesDep`."""

    settings: Settings
    repo: Repository
    files: FileStore
    signer: CookieSigner
    catalog: ModelCatalog
    queue: JobQueue
    events: EventSink | None = None  # made with the services, started and closed by the lifespan

    @property
    def limits(self) -> Limits:
        s = self.settings
        return Limits(s.max_bars, s.max_seconds, s.max_samples)


def record(services: Services, listener: str, kind: str, song: Song | None = None, **fields: object) -> None:
    """Note an analytics event (a memory append: the sink writes it later); a song gives its model and style."""
    if services.events is None:
        return
    if song is not None:
        fields = {"model": song.model, "style": song.params.get("style") or "", "song_id": song.id, **fields}
    services.events.record(Event(kind, listener, **fields))  # type: ignore[arg-type]


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


@dataclass
class Visitor:
    """Who is asking: their session (anonymous or signed in) and user."""

    session: Session
    user: User | None

    @property
    def owner(self) -> str:
        return self.session.owner


def get_visitor(request: Request, services: ServicesDep) -> Visitor:
    """The session of the request's signed cookie; a visitor without one gets a new anonymous session (the
    cookie is set on the response by the app's middleware)."""
    cached = getattr(request.state, "visitor", None)
    if cached is not None:
        return cached
    repo = services.repo
    session = None
    raw = request.cookies.get(COOKIE_NAME)
    if raw:
        session_id = services.signer.loads(raw)
        session = repo.get_session(session_id=session_id) if session_id else None
    if session is None:
        session = repo.create_session()
        request.state.set_session = session.id
    user = repo.get_user(user_id=session.user_id) if session.user_id else None
    visitor = Visitor(session, user)
    request.state.visitor = visitor
    return visitor


VisitorDep = Annotated[Visitor, Depends(get_visitor)]


def require_api_csrf(request: Request, visitor: VisitorDep) -> Visitor:
    """JSON API writes carry the session's CSRF token in the ``X-CSRF-Token`` header
    (from ``GET /api/v1/auth/session`` or the page's ``<meta name="csrf-token">``)."""
    if not csrf_ok(visitor.session.csrf, request.headers.get(CSRF_HEADER)):
        raise HTTPException(
            403, f"missing or wrong {CSRF_HEADER} header: get the token from GET /api/v1/auth/session"
        )
    return visitor


ApiWriterDep = Annotated[Visitor, Depends(require_api_csrf)]


async def require_form_csrf(request: Request, visitor: VisitorDep) -> Visitor:
    """Form posts carry the session's CSRF token in a hidden field."""
    form = await request.form()
    if not csrf_ok(visitor.session.csrf, form.get(CSRF_FIELD)):  # type: ignore[arg-type]
        raise HTTPException(
            403, "this form has expired or was not sent from this site: reload the page and retry"
        )
    return visitor


FormWriterDep = Annotated[Visitor, Depends(require_form_csrf)]


def require_member(visitor: VisitorDep) -> Visitor:
    """A signed-in user (their own analytics); anonymous visitors see none."""
    if visitor.user is None:
        raise HTTPException(403, "log in to see your taste: anonymous visits keep no profile")
    return visitor


MemberDep = Annotated[Visitor, Depends(require_member)]


def require_admin(visitor: VisitorDep) -> Visitor:
    """An operator (`museforge users promote NAME`): the only visitors who see population figures."""
    if visitor.user is None or not visitor.user.is_admin:
        raise HTTPException(403, "only operators (admin users) may see the insights")
    return visitor


AdminDep = Annotated[Visitor, Depends(require_admin)]
