"""Accepting a user's music file: size limit, type from the bytes (not the name), parsed before it is kept.

The file is stored under ``receive/`` with a name made from its id and sniffed type; the client's file name is
kept only as a label. A file that cannot be read as music is refused with the reader's reason and leaves nothing
behind.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from pathlib import Path
from typing import Any

import symusic

from museforge.data.formats import InputError, read_midi_bytes, read_unit, split_abc
from museforge.data.formats import Unit as FileUnit
from museforge.store import FileStore, Repository, Upload, new_id

KIND_SUFFIX = {"midi": ".mid", "musicxml": ".musicxml", "mxl": ".mxl", "abc": ".abc", "kern": ".krn"}
NAME_KINDS = {
    ".mid": "midi", ".midi": "midi", ".xml": "musicxml", ".musicxml": "musicxml", ".mxl": "mxl", ".abc": "abc",
    ".krn": "kern",
}  # fmt: skip
ACCEPT = ", ".join(sorted(NAME_KINDS))
_ABC_X = re.compile(r"^X:\s*\d*\s*$", re.MULTILINE)
_ABC_K = re.compile(r"^K:", re.MULTILINE)


class UploadTooLarge(InputError):
    """Over the size limit (HTTP 413)."""


class UnsupportedType(InputError):
    """Not a music file type the app reads (HTTP 415)."""


def sniff(data: bytes) -> str:
    """The music format of ``data`` from its content."""
    if data.startswith(b"MThd"):
        return "midi"
    if data.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                if "META-INF/container.xml" in zf.namelist():
                    return "mxl"
        except zipfile.BadZipFile as exc:
            raise UnsupportedType("a damaged ZIP archive, not a compressed MusicXML file") from exc
        raise UnsupportedType("a ZIP archive without META-INF/container.xml, not a compressed MusicXML file")
    head = data[:65536].decode("utf-8", errors="replace").lstrip("\ufeff")
    if "<score-partwise" in head or "<score-timewise" in head:
        return "musicxml"
    if "**kern" in head:
        return "kern"
    if _ABC_X.search(head) and _ABC_K.search(head):
        return "abc"
    raise UnsupportedType(f"not a music file the app reads: send MIDI, MusicXML, ABC or kern ({ACCEPT})")


def describe(score: symusic.Score) -> dict[str, Any]:
    """What the upload page shows about a parsed piece."""
    bars = 0
    if score.time_signatures and score.end() > 0:
        ts = score.time_signatures[0]
        bar_ticks = score.tpq * 4 * ts.numerator / ts.denominator
        bars = int(-(-score.end() // bar_ticks))
    return {
        "notes": int(score.note_num()),
        "tracks": len(score.tracks),
        "duration_s": round(float(score.to("second").end()), 2),
        "bars": bars,
    }


def parse(data: bytes, kind: str, scratch: Path, max_bytes: int, max_notes: int) -> symusic.Score:
    """Read the bytes as music of ``kind``; music21 formats go through a scratch file it can open."""
    if kind == "midi":
        return read_midi_bytes(data, max_bytes, max_notes)
    path = scratch.with_suffix(KIND_SUFFIX[kind])
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.write_bytes(data)
        unit = FileUnit(path)
        if kind == "abc":
            tunes = split_abc(data.decode("utf-8", errors="replace"))
            if not tunes:
                raise InputError("no ABC tune in the file")
            unit = FileUnit(path, tunes[0][0], tunes[0][1])
        return read_unit(unit, max_bytes, max_notes).score
    finally:
        path.unlink(missing_ok=True)


def accept_upload(
    *,
    repo: Repository,
    files: FileStore,
    owner: str,
    filename: str,
    data: bytes,
    max_bytes: int,
    max_notes: int,
) -> tuple[Upload, symusic.Score]:
    """Check, parse and keep an uploaded file; `InputError` (with a reason) if it is refused."""
    if len(data) > max_bytes:
        raise UploadTooLarge(f"the file is larger than the {max_bytes / 2**20:g} MiB limit")
    if not data:
        raise InputError("the file is empty")
    kind = sniff(data)
    named = NAME_KINDS.get(Path(filename).suffix.lower())
    if named is not None and named != kind and {named, kind} != {"musicxml", "mxl"}:
        raise UnsupportedType(f"{filename!r} is named as {named} but its content is {kind}")
    upload_id = new_id()
    scratch = files.resolve(files.relative("receive", "incoming", upload_id))
    score = parse(data, kind, scratch, max_bytes, max_notes)
    rel = files.relative("receive", upload_id + KIND_SUFFIX[kind])
    files.write(rel, data)
    label = Path(filename.replace("\\", "/")).name[:200] or "upload"
    upload = Upload(
        id=upload_id, owner=owner, filename=label, kind=kind, path=rel, size=len(data),
        sha256=hashlib.sha256(data).hexdigest(), meta=describe(score),
    )  # fmt: skip
    try:
        repo.create_upload(upload=upload)
    except Exception:
        files.resolve(rel).unlink(missing_ok=True)
        raise
    return upload, score
