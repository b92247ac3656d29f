"""The production store: MongoDB through pymongo (songs and their varying metadata are documents).

Records are documents keyed by our own string ids; unique indexes enforce what SQLite's UNIQUE constraints do
(user names case-insensitively through a stored lower-case key, share tokens, one rating per song and owner).
Job claims are single ``find_one_and_update`` calls, so two workers never get one job; a finished job and its
songs are written in a transaction when the server supports one (a replica set) and songs-first otherwise, so a
reader never sees a done job without its songs.
"""

from __future__ import annotations

from dataclasses import asdict
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

SUMMARIES = {"event_counts": COUNT_KEY, "event_totals": TOTAL_KEY, "listener_days": DAY_KEY}
WEEK = {"$subtract": ["$day", {"$mod": [{"$add": ["$day", 3]}, 7]}]}  # Monday's day; day 0 was a Thursday


def _event_match(**conds: Any) -> dict[str, Any]:
    """A $match on day bounds and fields; a tuple becomes $in."""
    match: dict[str, Any] = {}
    day: dict[str, Any] = {}
    for key, value in conds.items():
        if value is None:
            continue
        if key == "since_day":
            day["$gte"] = value
        elif key == "until_day":
            day["$lt"] = value
        else:
            match[key] = {"$in": list(value)} if isinstance(value, tuple) else value
    if day:
        match["day"] = day
    return match


def _doc(record: Any) -> dict[str, Any]:
    doc = asdict(record)
    doc["_id"] = doc.pop("id")
    return doc


# A job back in the queue: no progress, no start, no worker holding it.
REQUEUED = {"status": "queued", "progress": 0.0, "started_at": None, "holder": None, "heartbeat_at": None}


def _as_read(job: dict[str, Any]) -> dict[str, Any]:
    """A filter matching the running job ``job`` (its attempts and heartbeat) only if it did not change since
    it was read: of several workers updating it at once, one wins."""
    return {"_id": job["_id"], "status": "running", "attempts": job["attempts"],
            "heartbeat_at": job.get("heartbeat_at")}  # fmt: skip


def _strip(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    if doc is None:
        return None
    doc = dict(doc)
    doc["id"] = doc.pop("_id")
    doc.pop("username_key", None)
    return doc


class MongoRepository(Repository):
    """The repository on one MongoDB database."""

    def __init__(self, uri: str, database: str = "museforge") -> None:
        import pymongo

        self._pymongo = pymongo
        self.client: Any = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000, tz_aware=False)
        self.db = self.client[database]
        d = self.db
        d.users.create_index("username_key", unique=True)
        d.sessions.create_index("created_at")
        d.uploads.create_index([("owner", 1), ("created_at", -1)])
        d.uploads.create_index([("learn", 1), ("created_at", 1)])
        d.jobs.create_index([("status", 1), ("created_at", 1)])
        d.jobs.create_index([("owner", 1), ("created_at", -1)])
        d.songs.create_index([("owner", 1), ("created_at", -1)])
        d.songs.create_index(
            "share_token", unique=True, partialFilterExpression={"share_token": {"$type": "string"}}
        )
        d.ratings.create_index([("song_id", 1), ("owner", 1)], unique=True)
        d.events.create_index("day")
        d.feedback.create_index([("model", 1), ("version", 1), ("at", 1)])
        d.events.create_index("listener")
        for name, key in SUMMARIES.items():
            d[name].create_index([(k, 1) for k in key], unique=True)
        d.event_counts.create_index([("listener", 1), ("day", 1)])
        d.listener_days.create_index([("listener", 1), ("day", 1)])

    # ---- users and sessions ----
    def create_user(self, *, username: str, password_hash: str) -> User:
        user = User(new_id(), username, password_hash, now())
        try:
            self.db.users.insert_one({**_doc(user), "username_key": username.casefold()})
        except self._pymongo.errors.DuplicateKeyError as exc:
            raise Conflict(f"the user name {username!r} is taken") from exc
        return user

    def get_user(self, *, user_id: str) -> User | None:
        doc = _strip(self.db.users.find_one({"_id": user_id}))
        return None if doc is None else User(**doc)

    def find_user(self, *, username: str) -> User | None:
        doc = _strip(self.db.users.find_one({"username_key": username.casefold()}))
        return None if doc is None else User(**doc)

    def set_admin(self, *, user_id: str, admin: bool) -> None:
        if self.db.users.update_one({"_id": user_id}, {"$set": {"is_admin": bool(admin)}}).matched_count != 1:
            raise NotFound(f"no user {user_id}")

    def create_session(self, *, user_id: str | None = None) -> Session:
        session = Session(new_id(24), user_id, new_id(24), now())
        self.db.sessions.insert_one(_doc(session))
        return session

    def get_session(self, *, session_id: str) -> Session | None:
        doc = _strip(self.db.sessions.find_one({"_id": session_id}))
        return None if doc is None else Session(**doc)

    def delete_session(self, *, session_id: str) -> None:
        self.db.sessions.delete_one({"_id": session_id})

    def prune_sessions(self, *, created_before: float) -> int:
        return self.db.sessions.delete_many({"created_at": {"$lt": created_before}}).deleted_count

    def transfer_owner(self, *, old: str, new: str) -> None:
        for name in ("songs", "uploads", "jobs"):
            self.db[name].update_many({"owner": old}, {"$set": {"owner": new}})
        self.db.events.update_many({"listener": old}, {"$set": {"listener": new}})
        self.db.feedback.update_many({"listener": old}, {"$set": {"listener": new}})
        for name, key in (("event_counts", COUNT_KEY), ("listener_days", DAY_KEY)):
            docs = list(self.db[name].find({"listener": old}))
            ops = [self._pymongo.UpdateOne({**{k: d[k] for k in key}, "listener": new}, {"$inc": {"n": d["n"]}},
                                           upsert=True) for d in docs]  # fmt: skip
            if ops:
                self.db[name].bulk_write(ops, ordered=False)
            self.db[name].delete_many({"listener": old})
        for rating in self.db.ratings.find({"owner": old}):
            try:
                self.db.ratings.update_one({"_id": rating["_id"]}, {"$set": {"owner": new}})
            except self._pymongo.errors.DuplicateKeyError:
                self.db.ratings.delete_one({"_id": rating["_id"]})  # the account's own rating wins

    # ---- uploads ----
    def create_upload(self, *, upload: Upload) -> Upload:
        try:
            self.db.uploads.insert_one(_doc(upload))
        except self._pymongo.errors.DuplicateKeyError as exc:
            raise Conflict(f"upload {upload.id} exists already") from exc
        return upload

    def get_upload(self, *, upload_id: str) -> Upload | None:
        doc = _strip(self.db.uploads.find_one({"_id": upload_id}))
        return None if doc is None else Upload(**doc)

    def list_uploads(self, *, owner: str, limit: int = 100) -> list[Upload]:
        cursor = self.db.uploads.find({"owner": owner}).sort([("created_at", -1), ("_id", 1)]).limit(limit)
        return [Upload(**_strip(d)) for d in cursor]  # type: ignore[arg-type]

    def set_upload_learn(self, *, upload_id: str, learn: bool, style: str | None = None) -> Upload:
        doc = self.db.uploads.find_one({"_id": upload_id})
        if doc is None:
            raise NotFound(f"no upload {upload_id}")
        meta = learn_meta(doc.get("meta", {}), learn, style, now())
        updated = self.db.uploads.find_one_and_update(
            {"_id": upload_id},
            {"$set": {"learn": learn, "meta": meta}},
            return_document=self._pymongo.ReturnDocument.AFTER,
        )
        return Upload(**_strip(updated))  # type: ignore[arg-type]

    def list_learning_uploads(self, *, limit: int = 10_000) -> list[Upload]:
        cursor = self.db.uploads.find({"learn": True}).sort([("created_at", 1), ("_id", 1)]).limit(limit)
        return [Upload(**_strip(d)) for d in cursor]  # type: ignore[arg-type]

    # ---- jobs ----
    def create_job(self, *, owner: str, model: str, operation: str, params: dict[str, Any]) -> Job:
        job = Job(new_id(), owner, model, operation, params)
        self.db.jobs.insert_one(_doc(job))
        return job

    def get_job(self, *, job_id: str) -> Job | None:
        doc = _strip(self.db.jobs.find_one({"_id": job_id}))
        return None if doc is None else Job(**doc)

    def list_jobs(self, *, owner: str, limit: int = 100) -> list[Job]:
        cursor = self.db.jobs.find({"owner": owner}).sort([("created_at", -1), ("_id", 1)]).limit(limit)
        return [Job(**_strip(d)) for d in cursor]  # type: ignore[arg-type]

    def count_jobs_since(self, *, owner: str, since: float) -> int:
        return int(self.db.jobs.count_documents({"owner": owner, "created_at": {"$gte": since}}))

    def claim_job(self) -> Job | None:
        doc = self.db.jobs.find_one_and_update(
            {"status": "queued"},
            {"$set": {"status": "running", "started_at": now(), "progress": 0.0}, "$inc": {"attempts": 1}},
            sort=[("created_at", 1), ("_id", 1)],
            return_document=self._pymongo.ReturnDocument.AFTER,
        )
        return None if doc is None else Job(**_strip(doc))  # type: ignore[arg-type]

    def claim_job_id(self, *, job_id: str, max_attempts: int, holder: str, stale_before: float) -> Job | None:
        at = now()
        claim = {
            "$set": {
                "status": "running",
                "started_at": at,
                "progress": 0.0,
                "holder": holder,
                "heartbeat_at": at,
            },
            "$inc": {"attempts": 1},
        }
        stale = {
            "status": "running",
            "$or": [{"heartbeat_at": None}, {"heartbeat_at": {"$lt": stale_before}}],
        }
        doc = self.db.jobs.find_one_and_update(
            {"_id": job_id, "$or": [{"status": "queued"}, {**stale, "attempts": {"$lt": max_attempts}}]},
            claim,
            return_document=self._pymongo.ReturnDocument.AFTER,
        )
        if doc is not None:
            return Job(**_strip(doc))  # type: ignore[arg-type]
        spent = self.db.jobs.find_one({"_id": job_id, **stale}, {"attempts": 1, "heartbeat_at": 1})
        if spent is not None:  # its worker died with no attempts left
            self._give_up(spent)
        return None

    def _give_up(self, doc: dict[str, Any]) -> bool:
        """Fail a job whose workers died ``doc["attempts"]`` times, unless it changed since ``doc`` was read."""
        changed = self.db.jobs.update_one(
            _as_read(doc),
            {
                "$set": {
                    "status": "failed",
                    "finished_at": now(),
                    "error": lost_worker_reason(doc["attempts"]),
                }
            },
        )
        return changed.modified_count == 1

    def beat_jobs(self, *, job_ids: list[str], holder: str) -> None:
        if job_ids:
            self.db.jobs.update_many(
                {"_id": {"$in": job_ids}, "status": "running", "holder": holder},
                {"$set": {"heartbeat_at": now()}},
            )

    def reap_jobs(self, *, stale_before: float, max_attempts: int) -> tuple[list[str], list[str]]:
        requeued, failed = [], []
        stale = {
            "status": "running",
            "holder": {"$ne": None},
            "$or": [{"heartbeat_at": None}, {"heartbeat_at": {"$lt": stale_before}}],
        }
        for doc in self.db.jobs.find(stale, {"attempts": 1, "heartbeat_at": 1}):
            if doc["attempts"] >= max_attempts:
                if self._give_up(doc):
                    failed.append(doc["_id"])
                continue
            changed = self.db.jobs.update_one(_as_read(doc), {"$set": REQUEUED})
            if changed.modified_count == 1:  # of several reapers, the one that re-queued it
                requeued.append(doc["_id"])
        return requeued, failed

    def set_progress(self, *, job_id: str, progress: float) -> None:
        self.db.jobs.update_one(
            {"_id": job_id, "status": "running"}, {"$set": {"progress": min(1.0, max(0.0, float(progress)))}}
        )

    def finish_job(self, *, job_id: str, songs: list[Song]) -> Job:
        def write(session: Any = None) -> dict[str, Any] | None:
            if songs:
                self.db.songs.insert_many([_doc(s) for s in songs], session=session)
            return self.db.jobs.find_one_and_update(
                {"_id": job_id, "status": "running"},
                {"$set": {"status": "done", "progress": 1.0, "song_ids": [s.id for s in songs],
                          "finished_at": now(), "error": None}},
                return_document=self._pymongo.ReturnDocument.AFTER,
                session=session,
            )  # fmt: skip

        if self._supports_transactions():
            with self.client.start_session() as session, session.start_transaction():
                doc = write(session)
                if doc is None:
                    session.abort_transaction()
        else:
            doc = write()
            if doc is None:
                self.db.songs.delete_many({"_id": {"$in": [s.id for s in songs]}})
        if doc is None:
            raise NotFound(f"job {job_id} is not running: its songs are not stored")
        return Job(**_strip(doc))  # type: ignore[arg-type]

    def _supports_transactions(self) -> bool:
        hello = self.client.admin.command("hello")
        return bool(hello.get("setName") or hello.get("msg") == "isdbgrid")

    def fail_job(self, *, job_id: str, error: str) -> Job:
        doc = self.db.jobs.find_one_and_update(
            {"_id": job_id, "status": {"$ne": "done"}},
            {"$set": {"status": "failed", "error": error, "finished_at": now()}},
            return_document=self._pymongo.ReturnDocument.AFTER,
        ) or self.db.jobs.find_one({"_id": job_id})
        if doc is None:
            raise NotFound(f"no job {job_id}")
        return Job(**_strip(doc))  # type: ignore[arg-type]

    def requeue_job(self, *, job_id: str) -> None:
        self.db.jobs.update_one({"_id": job_id, "status": "running"}, {"$set": REQUEUED})

    def recover_jobs(self, *, max_attempts: int) -> tuple[list[str], list[str]]:
        requeued, failed = [], []
        for doc in self.db.jobs.find({"status": "running"}, {"attempts": 1}):
            if doc["attempts"] < max_attempts:
                self.db.jobs.update_one({"_id": doc["_id"], "status": "running"}, {"$set": REQUEUED})
                requeued.append(doc["_id"])
            else:
                self.db.jobs.update_one(
                    {"_id": doc["_id"], "status": "running"},
                    {"$set": {"status": "failed", "finished_at": now(),
                              "error": interrupted_reason(doc["attempts"])}},
                )  # fmt: skip
                failed.append(doc["_id"])
        return requeued, failed

    # ---- songs and ratings ----
    def get_song(self, *, song_id: str) -> Song | None:
        doc = _strip(self.db.songs.find_one({"_id": song_id}))
        return None if doc is None else Song(**doc)

    def get_shared_song(self, *, share_token: str) -> Song | None:
        doc = _strip(self.db.songs.find_one({"share_token": share_token}))
        return None if doc is None else Song(**doc)

    def list_songs(self, *, owner: str, limit: int = 100) -> list[Song]:
        cursor = self.db.songs.find({"owner": owner}).sort([("created_at", -1), ("_id", 1)]).limit(limit)
        return [Song(**_strip(d)) for d in cursor]  # type: ignore[arg-type]

    def set_share_token(self, *, song_id: str, share_token: str | None) -> None:
        try:
            result = self.db.songs.update_one({"_id": song_id}, {"$set": {"share_token": share_token}})
        except self._pymongo.errors.DuplicateKeyError as exc:
            raise Conflict("that share token is in use") from exc
        if result.matched_count != 1:
            raise NotFound(f"no song {song_id}")

    def add_song_file(self, *, song_id: str, kind: str, path: str) -> None:
        result = self.db.songs.update_one({"_id": song_id}, {"$set": {f"files.{kind}": path}})
        if result.matched_count != 1:
            raise NotFound(f"no song {song_id}")

    def rate_song(self, *, song_id: str, owner: str, value: int) -> Rating:
        check_rating(value)
        if self.db.songs.count_documents({"_id": song_id}, limit=1) == 0:
            raise NotFound(f"no song {song_id}")
        self.db.ratings.update_one(
            {"song_id": song_id, "owner": owner},
            {"$set": {"value": int(value), "created_at": now()}},
            upsert=True,
        )
        return self.get_rating(song_id=song_id, owner=owner)

    def get_rating(self, *, song_id: str, owner: str | None) -> Rating:
        values = [int(d["value"]) for d in self.db.ratings.find({"song_id": song_id}, {"value": 1})]
        mine = None
        if owner is not None:
            doc = self.db.ratings.find_one({"song_id": song_id, "owner": owner})
            mine = None if doc is None else int(doc["value"])
        return Rating(sum(values) / len(values) if values else None, len(values), mine)

    # ---- models ----
    def upsert_model(self, *, model: ModelRecord) -> None:
        self.db.models.replace_one({"_id": model.name}, {"_id": model.name, **asdict(model)}, upsert=True)

    def list_models(self) -> list[ModelRecord]:
        docs = self.db.models.find({}).sort("_id", 1)
        return [ModelRecord(d["name"], d["family"], d["info"], d["updated_at"]) for d in docs]

    # ---- activity events (analytics) ----
    def record_events(self, *, events: list[Event]) -> None:
        if not events:
            return
        summaries = dict(zip(SUMMARIES, summarize(events), strict=True))

        def write(session: Any = None) -> None:
            docs = [{**asdict(e), "day": e.day} for e in events]
            self.db.events.insert_many(docs, ordered=False, session=session)
            for name, key in SUMMARIES.items():
                ops = [self._pymongo.UpdateOne(dict(zip(key, k, strict=True)), {"$inc": {"n": n}}, upsert=True)
                       for k, n in summaries[name].items()]  # fmt: skip
                self.db[name].bulk_write(ops, ordered=False, session=session)

        if self._supports_transactions():
            with self.client.start_session() as session, session.start_transaction():
                write(session)
        else:
            write()

    def _grouped(
        self, collection: str, match: dict, by: tuple[str, ...], stages: list, out: dict
    ) -> list[dict]:
        """$match, the given $group stages, then one row per group with the ``by`` fields and ``out``."""
        pipeline = [{"$match": match}, *stages,
                    {"$project": {"_id": 0, **{f: f"$_id.{f}" for f in by}, **out}}]  # fmt: skip
        if by:
            pipeline.append({"$sort": {f: 1 for f in by}})
        return list(self.db[collection].aggregate(pipeline, allowDiskUse=True))

    def count_events(
        self, *, by: tuple[str, ...], since_day: int | None = None, until_day: int | None = None,
        kinds: tuple[str, ...] | None = None, model: str | None = None, style: str | None = None,
        listener: str | None = None,
    ) -> list[dict[str, Any]]:  # fmt: skip
        check_group(by)
        collection = "event_counts" if "listener" in by or listener is not None else "event_totals"
        match = _event_match(
            since_day=since_day, until_day=until_day, kind=tuple(kinds) if kinds else None, model=model,
            style=style, listener=listener,
        )  # fmt: skip
        key = {f: WEEK if f == "week" else f"${f}" for f in by} or None
        group = {"$group": {"_id": key, "n": {"$sum": "$n"},
                            "value_sum": {"$sum": {"$multiply": ["$n", "$value"]}}}}  # fmt: skip
        return self._grouped(collection, match, by, [group], {"n": 1, "value_sum": 1})

    def count_listeners(
        self, *, by: tuple[str, ...], since_day: int | None = None, until_day: int | None = None,
        kinds: tuple[str, ...] | None = None, model: str | None = None, style: str | None = None,
    ) -> list[dict[str, Any]]:  # fmt: skip
        check_group(by, listeners=True)
        plain = set(by) <= {"day", "week"} and not kinds and model is None and style is None
        match = _event_match(
            since_day=since_day, until_day=until_day, kind=tuple(kinds) if kinds else None, model=model,
            style=style,
        )  # fmt: skip
        key = {f: WEEK if f == "week" else f"${f}" for f in by}
        stages = [
            {"$group": {"_id": {**key, "listener": "$listener"}}},
            {"$group": {"_id": {f: f"$_id.{f}" for f in by} or None, "listeners": {"$sum": 1}}},
        ]  # fmt: skip
        return self._grouped(
            "listener_days" if plain else "event_counts", match, by, stages, {"listeners": 1}
        )

    def retention(self, *, since_day: int, until_day: int, after_days: int) -> tuple[int, int]:
        later = {"$add": ["$first", after_days]}
        pipeline = [
            {"$match": {"day": {"$lt": until_day}}},
            {"$group": {"_id": "$listener", "first": {"$min": "$day"}, "last": {"$max": "$day"}}},
            {"$match": {"first": {"$gte": since_day}, "$expr": {"$lt": [later, until_day]}}},
            {"$group": {"_id": None, "cohort": {"$sum": 1},
                        "returned": {"$sum": {"$cond": [{"$gte": ["$last", later]}, 1, 0]}}}},
        ]  # fmt: skip
        rows = list(self.db.listener_days.aggregate(pipeline, allowDiskUse=True))
        return (int(rows[0]["cohort"]), int(rows[0]["returned"])) if rows else (0, 0)

    def job_stats(
        self, *, since_day: int | None = None, until_day: int | None = None, model: str | None = None,
        style: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        match: dict[str, Any] = {}
        created: dict[str, Any] = {}
        if since_day is not None:
            created["$gte"] = since_day * DAY_S
        if until_day is not None:
            created["$lt"] = until_day * DAY_S
        if created:
            match["created_at"] = created
        if model is not None:
            match["model"] = model
        if style is not None:
            match["params.style"] = style
        counts = list(self.db.jobs.aggregate([
            {"$match": match},
            {"$group": {"_id": None, "total": {"$sum": 1},
                        "done": {"$sum": {"$cond": [{"$eq": ["$status", "done"]}, 1, 0]}},
                        "failed": {"$sum": {"$cond": [{"$eq": ["$status", "failed"]}, 1, 0]}}}},
        ]))  # fmt: skip
        stats = {k: int(counts[0][k]) if counts else 0 for k in ("total", "done", "failed")}
        ranks = nearest_ranks(stats["done"])
        rows = self.db.jobs.aggregate([
            {"$match": {**match, "status": "done", "started_at": {"$ne": None}}},
            {"$project": {"latency": {"$divide": [  # to the millisecond, as on SQLite
                {"$round": [{"$multiply": [{"$subtract": ["$finished_at", "$started_at"]}, 1000]}, 0]}, 1000]}}},
            {"$setWindowFields": {"sortBy": {"latency": 1}, "output": {"rank": {"$documentNumber": {}}}}},
            {"$match": {"rank": {"$in": list(ranks.values())}}},
        ])  # fmt: skip
        by_rank = {int(r["rank"]): float(r["latency"]) for r in rows}
        stats["latency"] = {p: by_rank.get(k) for p, k in ranks.items()}
        return stats

    def rollup_events(self, *, before_day: int) -> int:
        return int(self.db.events.delete_many({"day": {"$lt": before_day}}).deleted_count)

    # ---- feedback ----
    def record_feedback(self, *, feedback: Feedback) -> None:
        if self.db.songs.count_documents({"_id": feedback.song_id}, limit=1) == 0:
            raise NotFound(f"no song {feedback.song_id}")
        self.db.feedback.insert_one({**asdict(feedback), "value": int(feedback.value)})

    def list_feedback(
        self, *, model: str, version: int | None = None, listener: str | None = None, limit: int = 100_000
    ) -> list[Feedback]:
        query: dict[str, Any] = {"model": model}
        if version is not None:
            query["version"] = version
        if listener is not None:
            query["listener"] = listener
        newest = self.db.feedback.find(query, {"_id": 0}).sort([("at", -1), ("_id", -1)]).limit(int(limit))
        return [Feedback(**doc) for doc in reversed(list(newest))]

    def close(self) -> None:
        self.client.close()
