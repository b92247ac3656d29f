"""The embedded store: SQLite (stdlib) in WAL mode, one connection per thread.

Open-schema parts of a record (job parameters, song metadata, originality) are JSON columns; names, share
tokens and (song, owner) ratings have real UNIQUE constraints; every write runs in a ``BEGIN IMMEDIATE``
transaction, so concurrent workers serialize on the write lock instead of failing half-way.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from museforge.store.records import (
    DAY_S,
    Conflict,
    Event,
    Feedback,
    Job,
    ModelRecord,
    NotFound,
    Rating,
    Session,
    Song,
    Upload,
    User,
    check_rating,
    new_id,
    now,
)
from museforge.store.repository import (
    COUNT_KEY,
    DAY_KEY,
    TOTAL_KEY,
    Repository,
    check_group,
    interrupted_reason,
    learn_meta,
    lost_worker_reason,
    nearest_ranks,
    summarize,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT NOT NULL,
    created_at REAL NOT NULL,
    is_admin INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    user_id TEXT REFERENCES users(id) ON DELETE CASCADE,
    csrf TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_age ON sessions (created_at);
CREATE TABLE IF NOT EXISTS uploads (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    filename TEXT NOT NULL,
    kind TEXT NOT NULL,
    path TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    meta TEXT NOT NULL CHECK (json_valid(meta)),
    created_at REAL NOT NULL,
    learn INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS uploads_by_owner ON uploads (owner, created_at);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    model TEXT NOT NULL,
    operation TEXT NOT NULL,
    params TEXT NOT NULL CHECK (json_valid(params)),
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
    progress REAL NOT NULL DEFAULT 0,
    error TEXT,
    song_ids TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(song_ids)),
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    holder TEXT,
    heartbeat_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, created_at);
CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs (owner, created_at);
CREATE INDEX IF NOT EXISTS jobs_by_time ON jobs (created_at, status, model, started_at, finished_at);
CREATE TABLE IF NOT EXISTS songs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    job_id TEXT REFERENCES jobs(id),
    model TEXT NOT NULL,
    title TEXT NOT NULL,
    params TEXT NOT NULL CHECK (json_valid(params)),
    meta TEXT NOT NULL CHECK (json_valid(meta)),
    files TEXT NOT NULL CHECK (json_valid(files)),
    originality TEXT CHECK (originality IS NULL OR json_valid(originality)),
    share_token TEXT UNIQUE,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS songs_by_owner ON songs (owner, created_at);
CREATE TABLE IF NOT EXISTS ratings (
    song_id TEXT NOT NULL REFERENCES songs(id) ON DELETE CASCADE,
    owner TEXT NOT NULL,
    value INTEGER NOT NULL CHECK (value BETWEEN 1 AND 5),
    created_at REAL NOT NULL,
    PRIMARY KEY (song_id, owner)
);
CREATE TABLE IF NOT EXISTS models (
    name TEXT PRIMARY KEY,
    family TEXT NOT NULL,
    info TEXT NOT NULL CHECK (json_valid(info)),
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    day INTEGER NOT NULL,
    listener TEXT NOT NULL,
    kind TEXT NOT NULL,
    model TEXT NOT NULL DEFAULT '',
    style TEXT NOT NULL DEFAULT '',
    song_id TEXT,
    value INTEGER NOT NULL DEFAULT 0,
    detail TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS events_by_day ON events (day);
CREATE TABLE IF NOT EXISTS event_counts (
    day INTEGER NOT NULL,
    kind TEXT NOT NULL,
    model TEXT NOT NULL,
    style TEXT NOT NULL,
    listener TEXT NOT NULL,
    value INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (kind, day, model, style, listener, value)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS event_counts_by_listener ON event_counts (listener, day);
CREATE TABLE IF NOT EXISTS event_totals (
    day INTEGER NOT NULL,
    kind TEXT NOT NULL,
    model TEXT NOT NULL,
    style TEXT NOT NULL,
    value INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (day, kind, model, style, value)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS listener_days (
    day INTEGER NOT NULL,
    listener TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (day, listener)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS listener_days_by_listener ON listener_days (listener, day);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    listener TEXT NOT NULL,
    song_id TEXT NOT NULL REFERENCES songs(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    value INTEGER NOT NULL DEFAULT 0,
    model TEXT NOT NULL,
    version INTEGER,
    request TEXT NOT NULL CHECK (json_valid(request))
);
CREATE INDEX IF NOT EXISTS feedback_by_model ON feedback (model, version, at);
"""
MIGRATIONS = {
    ("users", "is_admin"): "ALTER TABLE users ADD COLUMN is_admin INTEGER NOT NULL DEFAULT 0",
    ("uploads", "learn"): "ALTER TABLE uploads ADD COLUMN learn INTEGER NOT NULL DEFAULT 0",
    ("jobs", "holder"): "ALTER TABLE jobs ADD COLUMN holder TEXT",
    ("jobs", "heartbeat_at"): "ALTER TABLE jobs ADD COLUMN heartbeat_at REAL",
}
# A job back in the queue: no progress, no start, no worker holding it.
REQUEUED = "status = 'queued', progress = 0, started_at = NULL, holder = NULL, heartbeat_at = NULL"
AFTER_MIGRATIONS = "CREATE INDEX IF NOT EXISTS uploads_learning ON uploads (learn, created_at)"
GROUP_SQL = {"week": "day - ((day + 3) % 7) AS week"}  # weeks start on Monday; day 0 was a Thursday


def _where(**conds: Any) -> tuple[str, list[Any]]:
    """AND of the given column conditions; a ``since_day``/``until_day`` bound the day, a tuple is IN."""
    sql, args = [], []
    for key, value in conds.items():
        if value is None:
            continue
        if key == "since_day":
            sql.append("day >= ?")
        elif key == "until_day":
            sql.append("day < ?")
        elif isinstance(value, tuple):
            sql.append(f"{key} IN ({', '.join('?' * len(value))})")
            args.extend(value)
            continue
        else:
            sql.append(f"{key} = ?")
        args.append(value)
    return (" WHERE " + " AND ".join(sql)) if sql else "", args


def _user(row: sqlite3.Row | None) -> User | None:
    if row is None:
        return None
    return User(row["id"], row["username"], row["password_hash"], row["created_at"], bool(row["is_admin"]))


def _session(row: sqlite3.Row | None) -> Session | None:
    return None if row is None else Session(row["id"], row["user_id"], row["csrf"], row["created_at"])


def _upload(row: sqlite3.Row | None) -> Upload | None:
    if row is None:
        return None
    return Upload(
        id=row["id"], owner=row["owner"], filename=row["filename"], kind=row["kind"], path=row["path"],
        size=row["size"], sha256=row["sha256"], meta=json.loads(row["meta"]), created_at=row["created_at"],
        learn=bool(row["learn"]),
    )  # fmt: skip


def _job(row: sqlite3.Row | None) -> Job | None:
    if row is None:
        return None
    return Job(
        id=row["id"], owner=row["owner"], model=row["model"], operation=row["operation"],
        params=json.loads(row["params"]), status=row["status"], progress=row["progress"], error=row["error"],
        song_ids=json.loads(row["song_ids"]), attempts=row["attempts"], created_at=row["created_at"],
        started_at=row["started_at"], finished_at=row["finished_at"], holder=row["holder"],
        heartbeat_at=row["heartbeat_at"],
    )  # fmt: skip


def _song(row: sqlite3.Row | None) -> Song | None:
    if row is None:
        return None
    return Song(
        id=row["id"], owner=row["owner"], job_id=row["job_id"], model=row["model"], title=row["title"],
        params=json.loads(row["params"]), meta=json.loads(row["meta"]), files=json.loads(row["files"]),
        originality=None if row["originality"] is None else json.loads(row["originality"]),
        share_token=row["share_token"], created_at=row["created_at"],
    )  # fmt: skip


class SqliteRepository(Repository):
    """The repository on one SQLite file; safe to share between threads (each gets its own connection)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        conn = self._conn()
        conn.executescript(SCHEMA)
        for (table, column), alter in MIGRATIONS.items():
            if column not in {r["name"] for r in conn.execute(f"PRAGMA table_info({table})")}:
                conn.execute(alter)
        conn.execute(AFTER_MIGRATIONS)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA temp_store=MEMORY")  # GROUP BY's sorting trees
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the write lock up front (no deadlock upgrading a read lock)."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _one(self, sql: str, *args: Any) -> sqlite3.Row | None:
        return self._conn().execute(sql, args).fetchone()

    def _all_rows(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        return self._conn().execute(sql, args).fetchall()

    # ---- users and sessions ----
    def create_user(self, *, username: str, password_hash: str) -> User:
        user = User(new_id(), username, password_hash, now())
        try:
            with self._tx() as c:
                c.execute(
                    "INSERT INTO users (id, username, password_hash, created_at) VALUES (?, ?, ?, ?)",
                    (user.id, user.username, user.password_hash, user.created_at),
                )
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"the user name {username!r} is taken") from exc
        return user

    def get_user(self, *, user_id: str) -> User | None:
        return _user(self._one("SELECT * FROM users WHERE id = ?", user_id))

    def find_user(self, *, username: str) -> User | None:
        return _user(self._one("SELECT * FROM users WHERE username = ?", username))

    def set_admin(self, *, user_id: str, admin: bool) -> None:
        with self._tx() as c:
            if c.execute("UPDATE users SET is_admin = ? WHERE id = ?", (int(admin), user_id)).rowcount != 1:
                raise NotFound(f"no user {user_id}")

    def create_session(self, *, user_id: str | None = None) -> Session:
        session = Session(new_id(24), user_id, new_id(24), now())
        with self._tx() as c:
            c.execute(
                "INSERT INTO sessions (id, user_id, csrf, created_at) VALUES (?, ?, ?, ?)",
                (session.id, session.user_id, session.csrf, session.created_at),
            )
        return session

    def get_session(self, *, session_id: str) -> Session | None:
        return _session(self._one("SELECT * FROM sessions WHERE id = ?", session_id))

    def delete_session(self, *, session_id: str) -> None:
        with self._tx() as c:
            c.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

    def prune_sessions(self, *, created_before: float) -> int:
        with self._tx() as c:
            return c.execute("DELETE FROM sessions WHERE created_at < ?", (created_before,)).rowcount

    def transfer_owner(self, *, old: str, new: str) -> None:
        with self._tx() as c:
            for table in ("songs", "uploads", "jobs"):
                c.execute(f"UPDATE {table} SET owner = ? WHERE owner = ?", (new, old))
            c.execute("UPDATE events SET listener = ? WHERE listener = ?", (new, old))
            c.execute("UPDATE feedback SET listener = ? WHERE listener = ?", (new, old))
            for table, key in (
                ("event_counts", "day, kind, model, style, listener, value"),
                ("listener_days", "day, listener"),
            ):
                cols = key.replace("listener", "?")
                c.execute(
                    f"INSERT INTO {table} ({key}, n) SELECT {cols}, n FROM {table} WHERE listener = ?"
                    f" ON CONFLICT ({key}) DO UPDATE SET n = n + excluded.n",
                    (new, old),
                )
                c.execute(f"DELETE FROM {table} WHERE listener = ?", (old,))  # fmt: skip
            c.execute("UPDATE OR IGNORE ratings SET owner = ? WHERE owner = ?", (new, old))
            c.execute("DELETE FROM ratings WHERE owner = ?", (old,))

    # ---- uploads ----
    def create_upload(self, *, upload: Upload) -> Upload:
        try:
            with self._tx() as c:
                c.execute(
                    "INSERT INTO uploads (id, owner, filename, kind, path, size, sha256, meta, created_at, learn)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (upload.id, upload.owner, upload.filename, upload.kind, upload.path, upload.size,
                     upload.sha256, json.dumps(upload.meta), upload.created_at, int(upload.learn)),
                )  # fmt: skip
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"upload {upload.id} or its file {upload.path} exists already") from exc
        return upload

    def get_upload(self, *, upload_id: str) -> Upload | None:
        return _upload(self._one("SELECT * FROM uploads WHERE id = ?", upload_id))

    def list_uploads(self, *, owner: str, limit: int = 100) -> list[Upload]:
        rows = self._all_rows(
            "SELECT * FROM uploads WHERE owner = ? ORDER BY created_at DESC, id LIMIT ?", owner, limit
        )
        return [u for r in rows if (u := _upload(r)) is not None]

    def set_upload_learn(self, *, upload_id: str, learn: bool, style: str | None = None) -> Upload:
        with self._tx() as c:
            upload = _upload(c.execute("SELECT * FROM uploads WHERE id = ?", (upload_id,)).fetchone())
            if upload is None:
                raise NotFound(f"no upload {upload_id}")
            upload.meta, upload.learn = learn_meta(upload.meta, learn, style, now()), learn
            c.execute(
                "UPDATE uploads SET learn = ?, meta = ? WHERE id = ?",
                (int(learn), json.dumps(upload.meta), upload_id),
            )
        return upload

    def list_learning_uploads(self, *, limit: int = 10_000) -> list[Upload]:
        rows = self._all_rows("SELECT * FROM uploads WHERE learn = 1 ORDER BY created_at, id LIMIT ?", limit)
        return [u for r in rows if (u := _upload(r)) is not None]

    # ---- jobs ----
    def create_job(self, *, owner: str, model: str, operation: str, params: dict[str, Any]) -> Job:
        job = Job(new_id(), owner, model, operation, params)
        with self._tx() as c:
            c.execute(
                "INSERT INTO jobs (id, owner, model, operation, params, status, created_at)"
                " VALUES (?, ?, ?, ?, ?, 'queued', ?)",
                (job.id, owner, model, operation, json.dumps(params), job.created_at),
            )
        return job

    def get_job(self, *, job_id: str) -> Job | None:
        return _job(self._one("SELECT * FROM jobs WHERE id = ?", job_id))

    def list_jobs(self, *, owner: str, limit: int = 100) -> list[Job]:
        rows = self._all_rows(
            "SELECT * FROM jobs WHERE owner = ? ORDER BY created_at DESC, id LIMIT ?", owner, limit
        )
        return [j for r in rows if (j := _job(r)) is not None]

    def count_jobs_since(self, *, owner: str, since: float) -> int:
        row = self._one("SELECT COUNT(*) AS n FROM jobs WHERE owner = ? AND created_at >= ?", owner, since)
        return int(row["n"]) if row else 0

    def claim_job(self) -> Job | None:
        with self._tx() as c:
            row = c.execute(
                "SELECT id FROM jobs WHERE status = 'queued' ORDER BY created_at, id LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            c.execute(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = ?, progress = 0"
                " WHERE id = ?",
                (now(), row["id"]),
            )
            return _job(c.execute("SELECT * FROM jobs WHERE id = ?", (row["id"],)).fetchone())

    def claim_job_id(self, *, job_id: str, max_attempts: int, holder: str, stale_before: float) -> Job | None:
        with self._tx() as c:
            row = c.execute(
                "SELECT status, attempts, heartbeat_at FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
            if row is None or row["status"] not in ("queued", "running"):
                return None
            if row["status"] == "running":
                if (row["heartbeat_at"] or 0.0) >= stale_before:
                    return None  # its holder is alive
                if row["attempts"] >= max_attempts:
                    self._give_up(c, job_id, row["attempts"])
                    return None
            at = now()
            c.execute(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = ?, progress = 0,"
                " holder = ?, heartbeat_at = ? WHERE id = ?",
                (at, holder, at, job_id),
            )
            return _job(c.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

    def _give_up(self, c: sqlite3.Connection, job_id: str, attempts: int) -> None:
        """Fail a job whose workers died ``attempts`` times."""
        c.execute(
            "UPDATE jobs SET status = 'failed', finished_at = ?, error = ? WHERE id = ?",
            (now(), lost_worker_reason(attempts), job_id),
        )

    def beat_jobs(self, *, job_ids: list[str], holder: str) -> None:
        if not job_ids:
            return
        marks = ", ".join("?" * len(job_ids))
        with self._tx() as c:
            c.execute(
                f"UPDATE jobs SET heartbeat_at = ? WHERE status = 'running' AND holder = ? AND id IN ({marks})",
                (now(), holder, *job_ids),
            )

    def reap_jobs(self, *, stale_before: float, max_attempts: int) -> tuple[list[str], list[str]]:
        with self._tx() as c:
            rows = c.execute(
                "SELECT id, attempts FROM jobs WHERE status = 'running' AND holder IS NOT NULL"
                " AND COALESCE(heartbeat_at, 0) < ?",
                (stale_before,),
            ).fetchall()
            requeued = [r["id"] for r in rows if r["attempts"] < max_attempts]
            c.executemany(f"UPDATE jobs SET {REQUEUED} WHERE id = ?", [(job_id,) for job_id in requeued])
            failed = [r for r in rows if r["attempts"] >= max_attempts]
            for r in failed:
                self._give_up(c, r["id"], r["attempts"])
        return requeued, [r["id"] for r in failed]

    def set_progress(self, *, job_id: str, progress: float) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE jobs SET progress = ? WHERE id = ? AND status = 'running'",
                (min(1.0, max(0.0, float(progress))), job_id),
            )

    def _finished(self, c: sqlite3.Connection, job_id: str) -> Job:
        job = _job(c.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())
        if job is None:
            raise NotFound(f"no job {job_id}")
        return job

    def finish_job(self, *, job_id: str, songs: list[Song]) -> Job:
        with self._tx() as c:
            for s in songs:
                c.execute(
                    "INSERT INTO songs (id, owner, job_id, model, title, params, meta, files, originality,"
                    " share_token, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (s.id, s.owner, s.job_id, s.model, s.title, json.dumps(s.params), json.dumps(s.meta),
                     json.dumps(s.files), None if s.originality is None else json.dumps(s.originality),
                     s.share_token, s.created_at),
                )  # fmt: skip
            changed = c.execute(
                "UPDATE jobs SET status = 'done', progress = 1, song_ids = ?, finished_at = ?, error = NULL"
                " WHERE id = ? AND status = 'running'",
                (json.dumps([s.id for s in songs]), now(), job_id),
            ).rowcount
            if changed != 1:
                raise NotFound(f"job {job_id} is not running: its songs are not stored")
            return self._finished(c, job_id)

    def fail_job(self, *, job_id: str, error: str) -> Job:
        with self._tx() as c:
            c.execute(
                "UPDATE jobs SET status = 'failed', error = ?, finished_at = ? WHERE id = ? AND status != 'done'",
                (error, now(), job_id),
            )
            return self._finished(c, job_id)

    def requeue_job(self, *, job_id: str) -> None:
        with self._tx() as c:
            c.execute(f"UPDATE jobs SET {REQUEUED} WHERE id = ? AND status = 'running'", (job_id,))

    def recover_jobs(self, *, max_attempts: int) -> tuple[list[str], list[str]]:
        with self._tx() as c:
            rows = c.execute("SELECT id, attempts FROM jobs WHERE status = 'running'").fetchall()
            requeued = [r["id"] for r in rows if r["attempts"] < max_attempts]
            failed = [r["id"] for r in rows if r["attempts"] >= max_attempts]
            for job_id in requeued:
                c.execute(f"UPDATE jobs SET {REQUEUED} WHERE id = ?", (job_id,))
            for r in rows:
                if r["id"] in failed:
                    c.execute(
                        "UPDATE jobs SET status = 'failed', finished_at = ?, error = ? WHERE id = ?",
                        (now(), interrupted_reason(r["attempts"]), r["id"]),
                    )
        return requeued, failed

    # ---- songs and ratings ----
    def get_song(self, *, song_id: str) -> Song | None:
        return _song(self._one("SELECT * FROM songs WHERE id = ?", song_id))

    def get_shared_song(self, *, share_token: str) -> Song | None:
        return _song(self._one("SELECT * FROM songs WHERE share_token = ?", share_token))

    def list_songs(self, *, owner: str, limit: int = 100) -> list[Song]:
        rows = self._all_rows(
            "SELECT * FROM songs WHERE owner = ? ORDER BY created_at DESC, id LIMIT ?", owner, limit
        )
        return [s for r in rows if (s := _song(r)) is not None]

    def set_share_token(self, *, song_id: str, share_token: str | None) -> None:
        try:
            with self._tx() as c:
                if (
                    c.execute(
                        "UPDATE songs SET share_token = ? WHERE id = ?", (share_token, song_id)
                    ).rowcount
                    != 1
                ):
                    raise NotFound(f"no song {song_id}")
        except sqlite3.IntegrityError as exc:
            raise Conflict("that share token is in use") from exc

    def add_song_file(self, *, song_id: str, kind: str, path: str) -> None:
        with self._tx() as c:
            changed = c.execute(
                "UPDATE songs SET files = json_set(files, '$.' || ?, ?) WHERE id = ?", (kind, path, song_id)
            ).rowcount
            if changed != 1:
                raise NotFound(f"no song {song_id}")

    def rate_song(self, *, song_id: str, owner: str, value: int) -> Rating:
        check_rating(value)
        with self._tx() as c:
            if c.execute("SELECT 1 FROM songs WHERE id = ?", (song_id,)).fetchone() is None:
                raise NotFound(f"no song {song_id}")
            c.execute(
                "INSERT INTO ratings (song_id, owner, value, created_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (song_id, owner) DO UPDATE SET value = excluded.value, created_at = excluded.created_at",
                (song_id, owner, int(value), now()),
            )
        return self.get_rating(song_id=song_id, owner=owner)

    def get_rating(self, *, song_id: str, owner: str | None) -> Rating:
        row = self._one("SELECT AVG(value) AS mean, COUNT(*) AS n FROM ratings WHERE song_id = ?", song_id)
        mine = None
        if owner is not None:
            r = self._one("SELECT value FROM ratings WHERE song_id = ? AND owner = ?", song_id, owner)
            mine = None if r is None else int(r["value"])
        return Rating(None if row is None or row["mean"] is None else float(row["mean"]), int(row["n"]), mine)

    # ---- models ----
    def upsert_model(self, *, model: ModelRecord) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT INTO models (name, family, info, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT (name)"
                " DO UPDATE SET family = excluded.family, info = excluded.info, updated_at = excluded.updated_at",
                (model.name, model.family, json.dumps(model.info), model.updated_at),
            )

    def list_models(self) -> list[ModelRecord]:
        rows = self._all_rows("SELECT * FROM models ORDER BY name")
        return [ModelRecord(r["name"], r["family"], json.loads(r["info"]), r["updated_at"]) for r in rows]

    # ---- activity events (analytics) ----
    def record_events(self, *, events: list[Event]) -> None:
        counts, totals, days = summarize(events)
        with self._tx() as c:
            c.executemany(
                "INSERT INTO events (at, day, listener, kind, model, style, song_id, value, detail)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(e.at, e.day, e.listener, e.kind, e.model, e.style, e.song_id, int(e.value),
                  json.dumps(e.detail)) for e in events],
            )  # fmt: skip
            for table, key, rows in (
                ("event_counts", COUNT_KEY, counts), ("event_totals", TOTAL_KEY, totals),
                ("listener_days", DAY_KEY, days),
            ):  # fmt: skip
                cols = ", ".join(key)
                c.executemany(
                    f"INSERT INTO {table} ({cols}, n) VALUES ({', '.join('?' * (len(key) + 1))})"
                    f" ON CONFLICT ({cols}) DO UPDATE SET n = n + excluded.n",
                    [(*k, n) for k, n in rows.items()],
                )

    def count_events(
        self, *, by: tuple[str, ...], since_day: int | None = None, until_day: int | None = None,
        kinds: tuple[str, ...] | None = None, model: str | None = None, style: str | None = None,
        listener: str | None = None,
    ) -> list[dict[str, Any]]:  # fmt: skip
        check_group(by)
        table = "event_counts" if "listener" in by or listener is not None else "event_totals"
        where, args = _where(
            since_day=since_day, until_day=until_day, kind=tuple(kinds) if kinds else None, model=model,
            style=style, listener=listener,
        )  # fmt: skip
        return self._grouped(f"SUM(n) AS n, SUM(n * value) AS value_sum FROM {table}{where}", by, args)

    def count_listeners(
        self, *, by: tuple[str, ...], since_day: int | None = None, until_day: int | None = None,
        kinds: tuple[str, ...] | None = None, model: str | None = None, style: str | None = None,
    ) -> list[dict[str, Any]]:  # fmt: skip
        check_group(by, listeners=True)
        plain = set(by) <= {"day", "week"} and not kinds and model is None and style is None
        table = "listener_days" if plain else "event_counts"
        where, args = _where(
            since_day=since_day, until_day=until_day, kind=tuple(kinds) if kinds else None, model=model,
            style=style,
        )  # fmt: skip
        return self._grouped(f"COUNT(DISTINCT listener) AS listeners FROM {table}{where}", by, args)

    def _grouped(self, aggregate: str, by: tuple[str, ...], args: list[Any]) -> list[dict[str, Any]]:
        cols = ", ".join(GROUP_SQL.get(f, f) for f in by)
        group = f" GROUP BY {', '.join(by)} ORDER BY {', '.join(by)}" if by else ""
        rows = self._all_rows(f"SELECT {cols + ', ' if cols else ''}{aggregate}{group}", *args)
        return [dict(r) for r in rows if by or (r[0] is not None and r[0] != 0)]

    def retention(self, *, since_day: int, until_day: int, after_days: int) -> tuple[int, int]:
        row = self._one(
            "SELECT COUNT(*) AS cohort, COALESCE(SUM(last >= first + ?), 0) AS returned FROM ("
            " SELECT MIN(day) AS first, MAX(day) AS last FROM listener_days WHERE day < ? GROUP BY listener"
            ") WHERE first >= ? AND first + ? < ?",
            after_days, until_day, since_day, after_days, until_day,
        )  # fmt: skip
        return (int(row["cohort"]), int(row["returned"])) if row else (0, 0)

    def job_stats(
        self, *, since_day: int | None = None, until_day: int | None = None, model: str | None = None,
        style: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        conds, args = [], []
        for sql, value in (("created_at >= ?", since_day), ("created_at < ?", until_day)):
            if value is not None:
                conds.append(sql)
                args.append(value * DAY_S)
        for sql, value in (("model = ?", model), ("json_extract(params, '$.style') = ?", style)):
            if value is not None:
                conds.append(sql)
                args.append(value)
        where = (" WHERE " + " AND ".join(conds)) if conds else ""
        row = self._one(
            "SELECT COUNT(*) AS total, COALESCE(SUM(status = 'done'), 0) AS done,"
            f" COALESCE(SUM(status = 'failed'), 0) AS failed FROM jobs{where}",
            *args,
        )
        stats: dict[str, Any] = {k: int(row[k]) for k in ("total", "done", "failed")} if row else {}
        # +status: read the (created_at, ...) covering index, not the status one; latencies to the millisecond,
        # so the sort runs over distinct milliseconds rather than every job
        done_where = where + (" AND " if where else " WHERE ") + "+status = 'done' AND started_at IS NOT NULL"
        ranks = nearest_ranks(stats.get("done", 0))
        row = self._one(
            "WITH b AS (SELECT CAST(ROUND((finished_at - started_at) * 1000) AS INTEGER) AS ms, COUNT(*) AS n"
            f" FROM jobs{done_where} GROUP BY ms), c AS (SELECT ms, SUM(n) OVER (ORDER BY ms) AS cum FROM b)"
            f" SELECT {', '.join('(SELECT MIN(ms) FROM c WHERE cum >= ?)' for _ in ranks)}",
            *args, *ranks.values(),
        )  # fmt: skip
        stats["latency"] = {
            p: None if row is None or row[i] is None or not stats.get("done") else row[i] / 1000
            for i, p in enumerate(ranks)
        }
        return stats

    def rollup_events(self, *, before_day: int) -> int:
        with self._tx() as c:  # the counts were kept as the events came: only the raw rows go
            return c.execute("DELETE FROM events WHERE day < ?", (before_day,)).rowcount

    # ---- feedback ----
    def record_feedback(self, *, feedback: Feedback) -> None:
        f = feedback
        with self._tx() as c:
            if c.execute("SELECT 1 FROM songs WHERE id = ?", (f.song_id,)).fetchone() is None:
                raise NotFound(f"no song {f.song_id}")
            c.execute(
                "INSERT INTO feedback (at, listener, song_id, kind, value, model, version, request)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    f.at,
                    f.listener,
                    f.song_id,
                    f.kind,
                    int(f.value),
                    f.model,
                    f.version,
                    json.dumps(f.request),
                ),
            )

    def list_feedback(
        self, *, model: str, version: int | None = None, listener: str | None = None, limit: int = 100_000
    ) -> list[Feedback]:
        where, args = ["model = ?"], [model]
        for column, value in (("version", version), ("listener", listener)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        rows = self._all_rows(
            f"SELECT * FROM (SELECT * FROM feedback WHERE {' AND '.join(where)} ORDER BY at DESC, id DESC"
            " LIMIT ?) ORDER BY at, id",
            *args,
            int(limit),
        )
        return [
            Feedback(r["kind"], r["listener"], r["song_id"], r["model"], r["version"], json.loads(r["request"]),
                     int(r["value"]), r["at"])
            for r in rows
        ]  # fmt: skip

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()
