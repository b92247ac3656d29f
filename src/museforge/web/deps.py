"""Shared request dependencies: the services made in the lifespan, the visitor's session, CSRF checks."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from museforge.analytics.sink import EventSink
from museforge.families import Limits
from museforge.store import FileStore, Repository, Session, Song, User, new_id
from museforge.store.records import FEEDBACK_KINDS, Event, Feedback
from museforge.web.catalog import ModelCatalog
from museforge.web.jobs import JobQueue
from museforge.web.ratelimit import SlidingWindowLimiter, address_key
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
    address_limiter: SlidingWindowLimiter = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.address_limiter = SlidingWindowLimiter(s.rate_limit_address_jobs, s.rate_limit_window_s)

    @property
    def limits(self) -> Limits:
        s = self.settings
        return Limits(s.max_bars, s.max_seconds, s.max_samples)


def record(services: Services, listener: str, kind: str, song: Song | None = None, **fields: object) -> None:
    """Note an analytics event (a memory append: the sink writes it later); a song gives its model and style.
    What a listener says or does about a song is also kept as feedback to learn from, with the version and
    request that made the song."""
    if song is not None and kind in FEEDBACK_KINDS:
        value = int(fields.get("value", 0))  # type: ignore[call-overload]
        made = Feedback(kind, listener, song.id, song.model, song.params.get("version"), song.params, value)
        services.repo.record_feedback(feedback=made)
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
    """Who is asking: their session (anonymous or signed in), user, and client address (the rate limit's key)."""

    session: Session
    user: User | None
    address: str = "unknown"

    @property
    def owner(self) -> str:
        return self.session.owner


def anonymous_session(
    services: Services, session_id: str | None = None, created_at: float | None = None
) -> Session:
    """An anonymous session: the signed cookie alone, nothing stored (its CSRF token derives from its id)."""
    session_id = session_id or new_id(24)
    return Session(session_id, None, services.signer.csrf_for(session_id), created_at or time.time())


def new_anonymous_session(services: Services, request: Request) -> Session:
    """A fresh anonymous session whose cookie the app's middleware sets on the response."""
    session = anonymous_session(services)
    request.state.set_session = session.id
    return session


def get_visitor(request: Request, services: ServicesDep) -> Visitor:
    """The session of the request's signed cookie: a stored one (signed in) or an anonymous one; a visitor
    without a valid cookie gets a new anonymous session. No request writes a session to the store here."""
    cached = getattr(request.state, "visitor", None)
    if cached is not None:
        return cached
    repo = services.repo
    raw = request.cookies.get(COOKIE_NAME)
    signed = services.signer.loads(raw) if raw else None
    if signed is None:
        session = new_anonymous_session(services, request)
    else:
        session = repo.get_session(session_id=signed[0]) or anonymous_session(services, *signed)
    user = repo.get_user(user_id=session.user_id) if session.user_id else None
    visitor = Visitor(session, user, address_key(request.client.host if request.client else None))
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
