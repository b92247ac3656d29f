"""Accepting a user's music file: size limit, type from the bytes (not the name), parsed before it is kept.

The file is stored under ``receive/`` with a name made from its id and sniffed type; the client's file name is
kept only as a label. A file that cannot be read as music is refused with the reader's reason and leaves nothing
behind. Reading is bounded by `museforge.data.limits` (unpacked size, notes, span, tunes) and music21 parses in
a limited child process, so a decompression bomb is refused without the server growing. An ABC file of several
tunes keeps its tune list (``meta.tunes``) and the tune chosen (``meta.tune``); another can be picked later.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import symusic

from museforge.data.formats import (
    DEFAULT_LIMITS,
    InputError,
    ReaderLimits,
    abc_title,
    read_midi_bytes,
    read_music21,
    split_abc,
)
from museforge.data.limits import open_zip, read_mxl_score
from museforge.store import FileStore, Repository, Upload, new_id
from museforge.web.settings import Settings

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


def upload_limits(settings: Settings) -> ReaderLimits:
    """The reader limits for users' files: the upload size, notes, tunes and reading time of the settings."""
    return replace(
        DEFAULT_LIMITS,
        max_file_bytes=int(settings.max_upload_mb * 2**20),
        max_notes=settings.max_upload_notes,
        max_abc_tunes=settings.max_upload_tunes,
        seconds=settings.upload_read_s,
    )


def sniff(data: bytes) -> str:
    """The music format of ``data`` from its content."""
    if data.startswith(b"MThd"):
        return "midi"
    if data.startswith(b"PK\x03\x04"):
        with open_zip(data, DEFAULT_LIMITS) as zf:  # its directory is bounded before it is read
            if "META-INF/container.xml" in zf.namelist():
                return "mxl"
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


def pick_tune(tunes: list[tuple[str, str]], tune: str | None) -> tuple[str, str]:
    """The tune asked for by its ``X:`` number, else the file's first."""
    if not tunes:
        raise InputError("no ABC tune in the file")
    if tune is None:
        return tunes[0]
    for number, text in tunes:
        if number == tune:
            return number, text
    shown = ", ".join(number for number, _ in tunes[:10]) + (", ..." if len(tunes) > 10 else "")
    raise InputError(f"the file has no tune X:{tune}; its tunes are {shown}")


def parse(
    data: bytes, kind: str, limits: ReaderLimits, tune: str | None = None
) -> tuple[symusic.Score, dict]:
    """Read the bytes as music of ``kind`` within ``limits``; with the tune list for a multi-tune ABC file."""
    if kind == "midi":
        return read_midi_bytes(data, limits), {}
    if kind == "abc":
        tunes = split_abc(data.decode("utf-8", errors="replace"), limits)
        number, text = pick_tune(tunes, tune)
        score = read_music21(text.encode("utf-8"), "abc", limits).score
        if len(tunes) == 1:
            return score, {}
        listing = [{"number": n, "title": abc_title(t)} for n, t in tunes]
        return score, {"tunes": listing, "tune": number}
    if kind == "mxl":
        data = read_mxl_score(data, limits)
    return read_music21(data, "humdrum" if kind == "kern" else "musicxml", limits).score, {}


def read_upload(
    files: FileStore, upload: Upload, tune: str | None = None, limits: ReaderLimits = DEFAULT_LIMITS
) -> symusic.Score:
    """A stored upload read again (its page, a job's source): the tune asked for, else the one chosen at upload."""
    data = files.resolve(upload.path).read_bytes()
    return parse(data, upload.kind, limits, tune or upload.meta.get("tune"))[0]


def accept_upload(
    *,
    repo: Repository,
    files: FileStore,
    owner: str,
    filename: str,
    data: bytes,
    limits: ReaderLimits,
    tune: str | None = None,
) -> tuple[Upload, symusic.Score]:
    """Check, parse and keep an uploaded file; `InputError` (with a reason) if it is refused."""
    max_bytes = limits.max_file_bytes
    if len(data) > max_bytes:
        raise UploadTooLarge(f"the file is larger than the {max_bytes / 2**20:g} MiB limit")
    if not data:
        raise InputError("the file is empty")
    kind = sniff(data)
    named = NAME_KINDS.get(Path(filename).suffix.lower())
    if named is not None and named != kind and {named, kind} != {"musicxml", "mxl"}:
        raise UnsupportedType(f"{filename!r} is named as {named} but its content is {kind}")
    score, tunes = parse(data, kind, limits, tune)
    upload_id = new_id()
    rel = files.relative("receive", upload_id + KIND_SUFFIX[kind])
    files.write(rel, data)
    label = Path(filename.replace("\\", "/")).name[:200] or "upload"
    upload = Upload(
        id=upload_id, owner=owner, filename=label, kind=kind, path=rel, size=len(data),
        sha256=hashlib.sha256(data).hexdigest(), meta={**describe(score), **tunes},
    )  # fmt: skip
    try:
        repo.create_upload(upload=upload)
    except Exception:
        files.resolve(rel).unlink(missing_ok=True)
        raise
    return upload, score
