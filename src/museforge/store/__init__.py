"""Storage: the repository (SQLite embedded by default, MongoDB in production) and the var folder's files."""

from __future__ import annotations

from pathlib import Path

from museforge.store.files import FileStore, UnsafePath
from museforge.store.records import (
    Conflict,
    Feedback,
    Job,
    ModelRecord,
    NotFound,
    Rating,
    Session,
    Song,
    StoreError,
    Upload,
    User,
    anon_owner,
    new_id,
    user_owner,
)
from museforge.store.repository import Repository

DB_FILE = "museforge.db"


def open_repository(
    var_dir: str | Path, mongo_uri: str | None = None, mongo_db: str = "museforge"
) -> Repository:
    """MongoDB when a URI is given, else the embedded SQLite database ``<var_dir>/museforge.db``."""
    if mongo_uri:
        from museforge.store.mongo import MongoRepository

        return MongoRepository(mongo_uri, mongo_db)
    from museforge.store.sqlite import SqliteRepository

    return SqliteRepository(Path(var_dir) / DB_FILE)


__all__ = [
    "DB_FILE",
    "Conflict",
    "Feedback",
    "FileStore",
    "Job",
    "ModelRecord",
    "NotFound",
    "Rating",
    "Repository",
    "Session",
    "Song",
    "StoreError",
    "UnsafePath",
    "Upload",
    "User",
    "anon_owner",
    "new_id",
    "open_repository",
    "user_owner",
]
