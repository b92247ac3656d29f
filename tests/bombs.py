"""Hostile files built on the fly, cheaply: the tests and benchmarks/bench_bombs.py feed them to the readers.

The .mxl bomb is written by hand: one megabyte of spaces deflated once with a full flush is a byte-aligned block
that does not refer back, so repeating it makes a gigabyte-long member without compressing a gigabyte.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

MiB = 2**20
CONTAINER = (
    b'<?xml version="1.0"?><container><rootfiles><rootfile full-path="score.xml"/></rootfiles></container>'
)


def _zip(members: list[tuple[str, bytes, int, int, int]]) -> bytes:
    """A ZIP archive of ``(name, stored bytes, crc, declared size, method)`` members (8: deflate, 0: stored)."""
    local, central = bytearray(), bytearray()
    for name, data, crc, size, method in members:
        raw = name.encode()
        offset = len(local)
        local += struct.pack(
            "<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, method, 0, 0, crc, len(data), size, len(raw), 0
        )
        local += raw + data
        central += struct.pack(
            "<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, method, 0, 0, crc, len(data), size, len(raw),
            0, 0, 0, 0, 0, offset,
        )  # fmt: skip
        central += raw
    end = struct.pack(
        "<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central), len(local), 0
    )
    return bytes(local + central + end)


def mxl_bomb(unpacked_mib: int = 1024, declared: int | None = None) -> bytes:
    """A compressed MusicXML file whose score.xml unpacks to ``unpacked_mib`` MiB of spaces after an XML head;
    ``declared`` forges the size its directory states."""
    head = b"<?xml version='1.0'?><score-partwise>"
    spaces = b" " * MiB
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = deflate.compress(head) + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(spaces) + deflate.flush(zlib.Z_FULL_FLUSH)
    body = first + block * unpacked_mib + deflate.flush(zlib.Z_FINISH)
    crc = zlib.crc32(head)
    for _ in range(unpacked_mib):
        crc = zlib.crc32(spaces, crc)
    size = len(head) + unpacked_mib * MiB
    container = ("META-INF/container.xml", CONTAINER, zlib.crc32(CONTAINER), len(CONTAINER), 0)
    return _zip([container, ("score.xml", body, crc, size if declared is None else declared, 8)])


def many_member_zip(members: int) -> bytes:
    """A .mxl-looking archive of ``members`` empty files: a directory that costs memory to read."""
    empty = [(f"m{i}.txt", b"", 0, 0, 0) for i in range(members)]
    return _zip([("META-INF/container.xml", CONTAINER, zlib.crc32(CONTAINER), len(CONTAINER), 0), *empty])


def _midi(tracks: list[bytes], tpq: int = 480) -> bytes:
    chunks = b"".join(b"MTrk" + struct.pack(">I", len(t)) + t for t in tracks)
    return b"MThd" + struct.pack(">IHHH", 6, 1, min(len(tracks), 0xFFFF), tpq) + chunks


_END = b"\x00\xff\x2f\x00"


def midi_note_bomb(notes: int) -> bytes:
    """One track of ``notes`` notes in six bytes each (running status, a note-on then a zero-velocity off)."""
    return _midi([b"\x00\x90\x3c\x40\x01\x3c\x00" + b"\x00\x3c\x40\x01\x3c\x00" * (notes - 1) + _END])


def midi_span_bomb(ticks: int = 0x0FFFFFFF) -> bytes:
    """Two notes ``ticks`` apart: a few bytes that claim days of music."""
    delta = bytes(
        [0x80 | (ticks >> 21 & 0x7F), 0x80 | (ticks >> 14 & 0x7F), 0x80 | (ticks >> 7 & 0x7F), ticks & 0x7F]
    )
    note = b"\x90\x3c\x40\x01\x80\x3c\x00"
    return _midi([b"\x00" + note + delta + note + _END])


def midi_track_bomb(tracks: int) -> bytes:
    """``tracks`` tracks of one note each."""
    return _midi([b"\x00\x90\x3c\x40\x01\x80\x3c\x00" + _END] * tracks)


def abc_of_tunes(tune: str, count: int, header: str = "") -> str:
    """An ABC file of one real tune repeated ``count`` times under fresh X: numbers."""
    body = tune[tune.index("\n", tune.index("X:")) + 1 :]
    return header + "".join(f"X:{i + 1}\n{body.rstrip()}\n\n" for i in range(count))


def peak_rss_growth_mib(fn) -> tuple[float, object]:
    """Run ``fn``; how far this process's resident memory peaked above where it started (MiB), and its result.

    The kernel's peak counter is reset first (``clear_refs`` 5), so an earlier peak does not hide this one."""
    status = Path("/proc/self/status")

    def field(name: str) -> float:
        line = next(x for x in status.read_text().splitlines() if x.startswith(name))
        return int(line.split()[1]) / 1024

    start = field("VmRSS:")
    Path("/proc/self/clear_refs").write_text("5")
    try:
        result = fn()
    except Exception as exc:  # the refusal is the result under test
        result = exc
    return field("VmHWM:") - start, result
