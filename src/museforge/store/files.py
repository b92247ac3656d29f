"""The local file layout under the var folder, as the lab lays it out.

``receive/`` holds uploads as received, ``result/`` generated MIDI, audio and piano rolls, ``resource/`` datasets
and models. Paths in the database are relative to the var folder; `FileStore.resolve` refuses any path that would
leave it, so nothing a request sends can make the server read or write elsewhere. Names are made here from ids,
never from what a client sent, and every write is atomic (temp file + rename).
"""

from __future__ import annotations

import re
from pathlib import Path

from museforge.io import atomic_write_bytes

AREAS = ("receive", "result", "resource")
_SAFE_PART = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$")


class UnsafePath(ValueError):
    """A stored or requested path that would leave the var folder."""


class FileStore:
    """Atomic reads and writes of the var folder's files."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        for area in AREAS:
            (self.root / area).mkdir(parents=True, exist_ok=True)

    def relative(self, area: str, *parts: str) -> str:
        """The stored (relative) path of a file in ``area``; each part must be a plain name."""
        if area not in AREAS:
            raise UnsafePath(f"unknown storage area {area!r}")
        for part in parts:
            if not _SAFE_PART.match(part) or part in (".", ".."):
                raise UnsafePath(f"unsafe file name {part!r}")
        return "/".join((area, *parts))

    def resolve(self, relative: str) -> Path:
        """The absolute path of a stored relative path, refusing anything outside the var folder."""
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise UnsafePath(f"{relative!r} is outside the storage folder")
        return path

    def write(self, relative: str, data: bytes) -> Path:
        path = self.resolve(relative)
        atomic_write_bytes(path, data)
        return path

    def read(self, relative: str) -> bytes:
        return self.resolve(relative).read_bytes()

    def exists(self, relative: str) -> bool:
        return self.resolve(relative).is_file()
