"""Bounds on what a reader may expand or allocate, checked cheaply before the expensive parse.

A hostile file is small on disk and huge once read: a compressed MusicXML whose score unpacks to gigabytes, a
MIDI spanning days of ticks, an ABC file of thousands of tunes, a MusicXML repeat played ten thousand times.
Each check here looks only at headers, directories or a text scan, so such a file is refused before music21 or
symusic builds anything. What cannot be bounded this way (music21's own parsing) runs in a limited child
process, see `museforge.data.sandbox`.
"""

from __future__ import annotations

import io
import re
import struct
import zipfile
from dataclasses import dataclass

import symusic

MiB = 2**20


class InputError(ValueError):
    """A file or tune that cannot become a piece; the message names the reason, for a rejects report."""


@dataclass(frozen=True)
class ReaderLimits:
    """Everything a reader may take from one file; the defaults suit `data build`, uploads tighten some."""

    max_file_bytes: int = 32 * MiB
    max_notes: int = 1_000_000
    max_unpacked_bytes: int = 32 * MiB  # a compressed score once unpacked; ABC tunes with their header copies
    max_compression_ratio: float = 200.0  # real .mxl files compress 10-40 times; bombs a thousand or more
    max_zip_members: int = 64
    max_zip_directory_bytes: int = 64 * 1024
    max_tracks: int = 1024
    max_quarters: int = 50_000  # about seven hours at 120 bpm: longer is a tick-span bomb, not a piece
    max_tempos: int = 100_000
    max_repeat_times: int = 16  # a MusicXML repeat played more often than this is refused
    max_abc_tunes: int = 10_000
    memory_bytes: int = 1536 * MiB  # the music21 child's extra address space
    seconds: float = 600.0  # the music21 child's wall-clock time


DEFAULT_LIMITS = ReaderLimits()


def _mib(n: float) -> str:
    return f"{n / MiB:.1f} MiB"


# --- compressed MusicXML -------------------------------------------------------------------------------------

_EOCD = struct.Struct("<4sHHHHIIH")  # end of central directory record
_EOCD_SIGNATURE = b"PK\x05\x06"


def check_zip_directory(data: bytes, limits: ReaderLimits) -> None:
    """Refuse an archive whose directory is oversized before `zipfile` reads it into objects."""
    tail_start = max(0, len(data) - _EOCD.size - 0xFFFF)
    at = data.rfind(_EOCD_SIGNATURE, tail_start)
    if at < 0 or at + _EOCD.size > len(data):
        raise InputError("a damaged ZIP archive (no end of central directory)")
    _, _, _, _, members, dir_size, dir_offset, _ = _EOCD.unpack_from(data, at)
    if members == 0xFFFF or dir_size == 0xFFFFFFFF or dir_offset == 0xFFFFFFFF:
        raise InputError("a ZIP64 archive: a compressed MusicXML file is never that large")
    if members > limits.max_zip_members:
        raise InputError(f"the ZIP archive has {members} members, more than {limits.max_zip_members}")
    if dir_size > limits.max_zip_directory_bytes:
        raise InputError(f"the ZIP directory is {dir_size} bytes, more than {limits.max_zip_directory_bytes}")


def open_zip(data: bytes, limits: ReaderLimits) -> zipfile.ZipFile:
    """The archive, its directory checked first; `InputError` for a damaged or oversized one."""
    check_zip_directory(data, limits)
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError) as exc:
        raise InputError(f"a damaged ZIP archive: {exc}") from exc
    if len(zf.infolist()) > limits.max_zip_members:
        raise InputError(f"the ZIP archive has more than {limits.max_zip_members} members")
    return zf


def score_member(zf: zipfile.ZipFile) -> zipfile.ZipInfo:
    """The score inside a .mxl: the first MusicXML member outside META-INF, as music21 chooses it."""
    for info in zf.infolist():
        name = info.filename
        if "META-INF" in name:
            continue
        if name.lower().endswith((".musicxml", ".xml", ".mxl")):
            return info
    raise InputError("no MusicXML score inside the compressed file")


def read_mxl_score(data: bytes, limits: ReaderLimits) -> bytes:
    """The score XML of a compressed MusicXML file, unpacked under the size and ratio limits.

    The sizes the directory declares are checked first, and the unpacked bytes are counted as they stream,
    because a forged directory can declare a small size for a member that unpacks to gigabytes.
    """
    with open_zip(data, limits) as zf:
        info = score_member(zf)
        cap = limits.max_unpacked_bytes
        if info.file_size > cap:
            raise InputError(
                f"{info.filename} would unpack to {_mib(info.file_size)}, more than the {_mib(cap)} limit"
            )
        ratio = info.file_size / max(info.compress_size, 1)
        if ratio > limits.max_compression_ratio:
            raise InputError(
                f"{info.filename} is compressed {ratio:.0f} to 1, more than {limits.max_compression_ratio:g} "
                "to 1: a decompression bomb"
            )
        out = bytearray()
        try:
            with zf.open(info) as fh:
                while chunk := fh.read(min(MiB, cap + 1 - len(out))):
                    out += chunk
                    if len(out) > cap:
                        raise InputError(f"{info.filename} unpacks to more than the {_mib(cap)} limit")
        except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError) as exc:
            raise InputError(f"a damaged ZIP archive: {exc}") from exc
        return bytes(out)


_REPEAT_TIMES = re.compile(rb"<repeat\b[^>]*\btimes\s*=\s*[\"']\s*(\d+)")


def check_musicxml_repeats(xml: bytes, limits: ReaderLimits) -> None:
    """Refuse repeats played absurdly often: music21 writes every pass out, so ``times="20000"`` in a 50 KB
    file keeps it busy for minutes."""
    most = max((int(m.group(1)) for m in _REPEAT_TIMES.finditer(xml)), default=0)
    if most > limits.max_repeat_times:
        raise InputError(f"a repeat played {most} times, more than {limits.max_repeat_times}")


# --- MIDI ----------------------------------------------------------------------------------------------------


def count_midi_tracks(data: bytes) -> int:
    """MTrk chunks in a MIDI file, walking the chunk headers only (a damaged chunk length ends the walk)."""
    at, tracks = 14, 0
    while at + 8 <= len(data):
        length = int.from_bytes(data[at + 4 : at + 8], "big")
        tracks += data[at : at + 4] == b"MTrk"
        at += 8 + length
    return tracks


def check_midi_structure(data: bytes, limits: ReaderLimits) -> None:
    """Refuse a MIDI file with more tracks than the limit before symusic reads it."""
    tracks = count_midi_tracks(data)
    if tracks > limits.max_tracks:
        raise InputError(f"{tracks} MIDI tracks, more than {limits.max_tracks}")


def check_score_span(score: symusic.Score, limits: ReaderLimits) -> None:
    """Refuse a score whose length or tempo map would make later stages (piano rolls, tokens) allocate without
    bound; symusic's counts make this cheap once the score exists."""
    quarters = score.end() / max(score.tpq, 1)
    if quarters > limits.max_quarters:
        raise InputError(f"the piece spans {quarters:.0f} quarter notes, more than {limits.max_quarters}")
    if len(score.tempos) > limits.max_tempos:
        raise InputError(f"{len(score.tempos)} tempo changes, more than {limits.max_tempos}")
    if len(score.tracks) > limits.max_tracks:
        raise InputError(f"{len(score.tracks)} tracks, more than {limits.max_tracks}")


# --- ABC -----------------------------------------------------------------------------------------------------

ABC_TUNE_START = re.compile(r"^X:\s*(\S*)", re.MULTILINE)


def check_abc_size(text: str, header: str, limits: ReaderLimits) -> int:
    """The number of tunes in an ABC file, refused above the limit before anything is split or parsed.

    Each tune gets its own copy of the file header, so the header times the tune count is bounded too.
    """
    tunes = sum(1 for _ in ABC_TUNE_START.finditer(text))
    if tunes > limits.max_abc_tunes:
        raise InputError(f"the ABC file holds {tunes} tunes, more than {limits.max_abc_tunes}")
    total = len(text) + len(header) * tunes
    if total > limits.max_unpacked_bytes:
        raise InputError(
            f"the ABC file header repeated for each of its {tunes} tunes makes {_mib(total)}, "
            f"more than the {_mib(limits.max_unpacked_bytes)} limit"
        )
    return tunes


def check_archive_size(zf: zipfile.ZipFile, limits: ReaderLimits) -> None:
    """Refuse an archive (a piano-roll .npz) whose members together declare more than the unpacked limit;
    zipfile stops each member at its declared size, so the declared total bounds what a reader unpacks."""
    total = sum(info.file_size for info in zf.infolist())
    if total > limits.max_unpacked_bytes:
        raise InputError(
            f"the archive would unpack to {_mib(total)}, more than the {_mib(limits.max_unpacked_bytes)} limit"
        )
