"""The documents the store keeps. Both backends return these, so callers never see rows or BSON."""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

JobStatus = Literal["queued", "running", "done", "failed"]
JOB_STATUSES: tuple[str, ...] = ("queued", "running", "done", "failed")


class StoreError(Exception):
    """Base class of the store's own errors."""


class Conflict(StoreError):
    """A unique constraint refused the write (a taken user name, a second rating row...)."""


class NotFound(StoreError):
    """The record a write names does not exist."""


def new_id(nbytes: int = 12) -> str:
    """An unguessable URL-safe id: ids appear in URLs, and guessing one must not reveal another user's song."""
    return secrets.token_urlsafe(nbytes)


def now() -> float:
    return time.time()


def user_owner(user_id: str) -> str:
    """The owner key of a signed-in user's records."""
    return f"user:{user_id}"


def anon_owner(session_id: str) -> str:
    """The owner key of an anonymous visitor's records (moved to the user on sign-in)."""
    return f"anon:{session_id}"


@dataclass
class User:
    id: str
    username: str
    password_hash: str
    created_at: float
    is_admin: bool = False  # operators: may see population analytics


@dataclass
class Session:
    id: str
    user_id: str | None
    csrf: str
    created_at: float

    @property
    def owner(self) -> str:
        return user_owner(self.user_id) if self.user_id else anon_owner(self.id)


@dataclass
class Upload:
    id: str
    owner: str
    filename: str  # as the client named it: shown, never used as a path
    kind: str  # midi | musicxml | mxl | abc | kern, from the bytes
    path: str  # relative to the var folder
    size: int
    sha256: str
    meta: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=now)
    learn: bool = False  # the owner lets the lab learn from it (off unless ticked; can be withdrawn)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Job:
    id: str
    owner: str
    model: str
    operation: str
    params: dict[str, Any]
    status: str = "queued"
    progress: float = 0.0
    error: str | None = None
    song_ids: list[str] = field(default_factory=list)
    attempts: int = 0
    created_at: float = field(default_factory=now)
    started_at: float | None = None
    finished_at: float | None = None
    holder: str | None = None  # the queue worker running it (`claim_job_id`); None in the embedded queue
    heartbeat_at: float | None = None  # when its holder last said it is alive

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Song:
    id: str
    owner: str
    job_id: str | None
    model: str
    title: str
    params: dict[str, Any]
    meta: dict[str, Any]  # duration, notes, tracks, bars: whatever the family's music has
    files: dict[str, str]  # kind (midi, ogg, wav, svg) -> path relative to the var folder
    originality: dict[str, Any] | None = None
    share_token: str | None = None
    created_at: float = field(default_factory=now)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Rating:
    mean: float | None
    count: int
    mine: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ModelRecord:
    name: str
    family: str
    info: dict[str, Any]
    updated_at: float = field(default_factory=now)


EVENT_KINDS: tuple[str, ...] = (
    "visit", "generate", "play", "play_end", "download", "share", "upload", "rate", "signup",
    "like", "dislike", "replay", "skip", "regenerate",
)  # fmt: skip
DAY_S = 86400


def day_of(at: float) -> int:
    """The UTC day number (days since 1970-01-01) of a time: the grain of every activity figure."""
    return int(at // DAY_S)


@dataclass
class Event:
    """One thing a listener did. ``model``/``style`` say what music it concerned ('' when none), ``value`` is a
    rating's stars, ``detail`` keeps the rest (a model's version and the controls of a generation) in raw
    events only: rollups keep the counted fields."""

    kind: str
    listener: str  # an owner key: user:<id> or anon:<session>
    at: float = field(default_factory=now)
    model: str = ""
    style: str = ""
    song_id: str | None = None
    value: int = 0  # a rating's 1..5 stars; 0 for other kinds
    detail: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {self.kind!r}; kinds: {', '.join(EVENT_KINDS)}")

    @property
    def day(self) -> int:
        return day_of(self.at)


# What a listener can tell about a song, explicitly (stars, like, dislike) or by what they did with it.
FEEDBACK_KINDS: tuple[str, ...] = (
    "rate", "like", "dislike", "play_end", "replay", "download", "share", "skip", "regenerate",
)  # fmt: skip


@dataclass
class Feedback:
    """One listener's signal about one song, kept for learning from (analytics events are rolled up; these are
    not). The model, version and request that made the song ride along, so the song can be scored later under
    any version without asking which made it."""

    kind: str
    listener: str  # an owner key: user:<id> or anon:<session>
    song_id: str
    model: str
    version: int | None
    request: dict[str, Any]
    value: int = 0  # a rating's 1..5 stars; 0 for other kinds
    at: float = field(default_factory=now)

    def __post_init__(self) -> None:
        if self.kind not in FEEDBACK_KINDS:
            raise ValueError(f"unknown feedback kind {self.kind!r}; kinds: {', '.join(FEEDBACK_KINDS)}")
        if self.kind == "rate":
            check_rating(self.value)


def check_rating(value: int) -> None:
    """Ratings are 1 to 5 stars in every backend."""
    if not 1 <= int(value) <= 5:
        raise ValueError(f"a rating is 1 to 5, got {value}")
