"""The repository: every read and write of users, sessions, uploads, jobs, songs, ratings and models.

It is the only code that talks to a database. `SqliteRepository` (the embedded default) and `MongoRepository`
(production, when ``MUSEFORGE_MONGO_URI`` is set) implement the same keyword-only methods and pass the same
contract tests (``tests/store``). Multi-record changes that must be seen whole (a finished job and its songs, an
anonymous visitor's records moving to their account) are single methods, so each backend can make them atomic.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import Counter
from typing import Any

from museforge.store.records import (
    Event,
    Feedback,
    Job,
    ModelRecord,
    Rating,
    Session,
    Song,
    Upload,
    User,
)

GROUP_FIELDS = ("day", "week", "listener", "kind", "model", "style", "value")
COUNT_KEY = ("kind", "day", "model", "style", "listener", "value")  # per-listener daily counts
TOTAL_KEY = ("day", "kind", "model", "style", "value")  # daily counts over all listeners
DAY_KEY = ("day", "listener")  # who was active on which day
PERCENTILES = (0.5, 0.9, 0.99)


class Repository(ABC):
    """What the application may ask of its database."""

    # ---- users and sessions ----
    @abstractmethod
    def create_user(self, *, username: str, password_hash: str) -> User:
        """A new user; `Conflict` if the name is taken (names compare case-insensitively)."""

    @abstractmethod
    def get_user(self, *, user_id: str) -> User | None: ...

    @abstractmethod
    def find_user(self, *, username: str) -> User | None: ...

    @abstractmethod
    def set_admin(self, *, user_id: str, admin: bool) -> None:
        """Grant or take back the operator role; `NotFound` for no such user."""

    @abstractmethod
    def create_session(self, *, user_id: str | None = None) -> Session: ...

    @abstractmethod
    def get_session(self, *, session_id: str) -> Session | None: ...

    @abstractmethod
    def delete_session(self, *, session_id: str) -> None: ...

    @abstractmethod
    def prune_sessions(self, *, created_before: float) -> int:
        """Delete the sessions created before ``created_before`` (expired: their cookies are refused anyway);
        returns how many were deleted."""

    @abstractmethod
    def transfer_owner(self, *, old: str, new: str) -> None:
        """Give every song, upload, job and rating of ``old`` to ``new`` (an anonymous visitor signing in);
        a rating ``new`` already gave to the same song wins."""

    # ---- uploads ----
    @abstractmethod
    def create_upload(self, *, upload: Upload) -> Upload: ...

    @abstractmethod
    def get_upload(self, *, upload_id: str) -> Upload | None: ...

    @abstractmethod
    def list_uploads(self, *, owner: str, limit: int = 100) -> list[Upload]:
        """Newest first."""

    @abstractmethod
    def set_upload_learn(self, *, upload_id: str, learn: bool, style: str | None = None) -> Upload:
        """Let the lab learn from an upload, or withdraw that; ``style`` is the owner's label for it (kept in
        ``meta["learn_style"]``, dropped on withdrawal), and ``meta["learn_changed_at"]`` says when. `NotFound`
        for no such upload."""

    @abstractmethod
    def list_learning_uploads(self, *, limit: int = 10_000) -> list[Upload]:
        """The uploads their owners let the lab learn from, oldest first."""

    # ---- jobs ----
    @abstractmethod
    def create_job(self, *, owner: str, model: str, operation: str, params: dict[str, Any]) -> Job: ...

    @abstractmethod
    def get_job(self, *, job_id: str) -> Job | None: ...

    @abstractmethod
    def list_jobs(self, *, owner: str, limit: int = 100) -> list[Job]:
        """Newest first."""

    @abstractmethod
    def count_jobs_since(self, *, owner: str, since: float) -> int:
        """Jobs ``owner`` created at or after ``since`` (the rate limit)."""

    @abstractmethod
    def claim_job(self) -> Job | None:
        """Atomically move the oldest queued job to running (attempts + 1) and return it; two workers never
        get the same job."""

    @abstractmethod
    def claim_job_id(self, *, job_id: str, max_attempts: int, holder: str, stale_before: float) -> Job | None:
        """Atomically move job ``job_id`` to running (attempts + 1) under ``holder`` and return it, for a queue
        that delivers job ids (`museforge.web.worker`). A running job whose heartbeat is older than
        ``stale_before`` lost its worker: it is taken over while it has attempts left, else failed with
        `lost_worker_reason`. None for a job whose holder is alive (a message delivered twice must not run the
        job twice at once), and for a job that is done, failed or gone (nothing to do)."""

    @abstractmethod
    def beat_jobs(self, *, job_ids: list[str], holder: str) -> None:
        """``holder`` is alive: set the heartbeat of those of ``job_ids`` it still runs."""

    @abstractmethod
    def reap_jobs(self, *, stale_before: float, max_attempts: int) -> tuple[list[str], list[str]]:
        """Jobs a queue worker claimed whose heartbeat is older than ``stale_before`` (the worker died): each is
        re-queued while it has attempts left, else failed with `lost_worker_reason`, atomically, so of several
        workers reaping at once one re-queues it. Jobs of the embedded queue (no holder) are left alone.
        Returns (re-queued ids, failed ids)."""

    @abstractmethod
    def set_progress(self, *, job_id: str, progress: float) -> None: ...

    @abstractmethod
    def finish_job(self, *, job_id: str, songs: list[Song]) -> Job:
        """Store ``songs`` and mark the job done in one transaction: a reader sees both or neither."""

    @abstractmethod
    def fail_job(self, *, job_id: str, error: str) -> Job:
        """Mark the job failed with ``error``; a job already done stays done (a second run of a job delivered
        twice must not undo the first run's songs). `NotFound` for no such job."""

    @abstractmethod
    def requeue_job(self, *, job_id: str) -> None:
        """Put a running job back in the queue (a worker stopping mid-job)."""

    @abstractmethod
    def recover_jobs(self, *, max_attempts: int) -> tuple[list[str], list[str]]:
        """After a restart: jobs left running are re-queued while they have attempts left, else failed with
        a reason. Returns (re-queued ids, failed ids)."""

    # ---- songs and ratings ----
    @abstractmethod
    def get_song(self, *, song_id: str) -> Song | None: ...

    @abstractmethod
    def get_shared_song(self, *, share_token: str) -> Song | None: ...

    @abstractmethod
    def list_songs(self, *, owner: str, limit: int = 100) -> list[Song]:
        """Newest first."""

    @abstractmethod
    def set_share_token(self, *, song_id: str, share_token: str | None) -> None: ...

    @abstractmethod
    def add_song_file(self, *, song_id: str, kind: str, path: str) -> None:
        """Record a file rendered later (a cached WAV)."""

    @abstractmethod
    def rate_song(self, *, song_id: str, owner: str, value: int) -> Rating:
        """Set ``owner``'s rating (1..5) of a song, replacing an earlier one; `NotFound` for no such song."""

    @abstractmethod
    def get_rating(self, *, song_id: str, owner: str | None) -> Rating: ...

    # ---- models ----
    @abstractmethod
    def upsert_model(self, *, model: ModelRecord) -> None: ...

    @abstractmethod
    def list_models(self) -> list[ModelRecord]: ...

    # ---- activity events (analytics) ----
    @abstractmethod
    def record_events(self, *, events: list[Event]) -> None:
        """Append a batch of raw events and add them to the daily counts, in one transaction."""

    @abstractmethod
    def count_events(
        self, *, by: tuple[str, ...], since_day: int | None = None, until_day: int | None = None,
        kinds: tuple[str, ...] | None = None, model: str | None = None, style: str | None = None,
        listener: str | None = None,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """Events on days [since_day, until_day), counted inside the database, grouped by the `GROUP_FIELDS`
        in ``by`` ("week" is its Monday's day number) and ordered by them. Each row holds those fields, ``n``
        (events) and ``value_sum`` (Σ value: a mean rating is value_sum / n); no row for no events."""

    @abstractmethod
    def count_listeners(
        self, *, by: tuple[str, ...], since_day: int | None = None, until_day: int | None = None,
        kinds: tuple[str, ...] | None = None, model: str | None = None, style: str | None = None,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """Distinct listeners with such events, grouped like `count_events` (not by listener): rows of the
        fields and ``listeners``."""

    @abstractmethod
    def retention(self, *, since_day: int, until_day: int, after_days: int) -> tuple[int, int]:
        """(cohort, returned): listeners first active on a day d in [since_day, until_day − after_days), and
        how many of them were active again on some day in [d + after_days, until_day)."""

    @abstractmethod
    def job_stats(
        self, *, since_day: int | None = None, until_day: int | None = None, model: str | None = None,
        style: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Jobs created on those days: ``total``, ``done``, ``failed`` and ``latency`` {p: seconds from start
        to finish, to the millisecond} at the nearest-rank `PERCENTILES` of done jobs (None without any)."""

    @abstractmethod
    def rollup_events(self, *, before_day: int) -> int:
        """Drop the raw events (with their details) of days before ``before_day``; returns how many. Figures
        are unchanged: `record_events` keeps per-day counts (`COUNT_KEY`, `TOTAL_KEY`, `DAY_KEY`) in the same
        write as the raw events, and every measure reads those."""

    # ---- feedback (what listeners say and do about songs, kept for learning) ----
    @abstractmethod
    def record_feedback(self, *, feedback: Feedback) -> None:
        """Append one signal; its song must exist (`NotFound` otherwise)."""

    @abstractmethod
    def list_feedback(
        self, *, model: str, version: int | None = None, listener: str | None = None, limit: int = 100_000
    ) -> list[Feedback]:
        """Signals about songs of ``model`` (made by ``version`` when given; heard by ``listener`` when given),
        oldest first, at most ``limit`` of the newest."""

    @abstractmethod
    def close(self) -> None: ...


def learn_meta(meta: dict[str, Any], learn: bool, style: str | None, at: float) -> dict[str, Any]:
    """An upload's meta after its owner's choice (the one rule both backends apply)."""
    changed = {k: v for k, v in meta.items() if k != "learn_style"}
    if learn and style:
        changed["learn_style"] = style
    changed["learn_changed_at"] = at
    return changed


def interrupted_reason(attempts: int) -> str:
    """Why a job found running at start-up was given up: the same words in every backend."""
    return (
        f"the server stopped while this job was running (attempt {attempts}); "
        "it was not retried again - please submit it anew"
    )


def lost_worker_reason(attempts: int) -> str:
    """Why a job delivered again after its workers died was given up: the same words in every backend."""
    return (
        f"the worker running this job stopped without finishing it {attempts} times (killed, or out of "
        "memory?); it was not retried again - please submit it anew"
    )


def check_group(by: tuple[str, ...], *, listeners: bool = False) -> None:
    """Group fields come from a fixed list: they become column names (and distinct listeners are not
    grouped by listener)."""
    unknown = [f for f in by if f not in GROUP_FIELDS or (listeners and f == "listener")]
    if unknown:
        raise ValueError(f"cannot group events by {', '.join(unknown)}; fields: {', '.join(GROUP_FIELDS)}")


def nearest_ranks(n: int) -> dict[float, int]:
    """The 1-based rank of each percentile p among n sorted values: ⌈p·n⌉ (the nearest-rank method)."""
    return {p: max(1, math.ceil(p * n - 1e-9)) for p in PERCENTILES}


def summarize(events: list[Event]) -> tuple[Counter, Counter, Counter]:
    """A batch's additions to the three daily count tables, keyed by `COUNT_KEY`, `TOTAL_KEY`, `DAY_KEY`."""
    counts: Counter = Counter()
    totals: Counter = Counter()
    days: Counter = Counter()
    for e in events:
        day = e.day
        counts[(e.kind, day, e.model, e.style, e.listener, int(e.value))] += 1
        totals[(day, e.kind, e.model, e.style, int(e.value))] += 1
        days[(day, e.listener)] += 1
    return counts, totals, days
