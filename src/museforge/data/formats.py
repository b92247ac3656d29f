"""Reading symbolic music files into `symusic.Score` objects.

MIDI is read by symusic directly. MusicXML, ABC and Humdrum kern go through music21, are written to MIDI in
memory and read back by symusic, so every later stage sees one in-memory type. An ABC file may hold many tunes:
each tune is its own *unit* (and its own piece), so a build can cache and parallelize per tune.

music21 fails to write MIDI for ~5 % of its own corpus. Three failures are repairable and are repaired here:
  * ``TimeSignature ... is already found`` — the ABC parser reuses one TimeSignature object in several
    measures; each measure gets its own copy.
  * ``ExpanderException`` — badly formed repeats; the repeat barlines, brackets and jumps are dropped, so the
    piece is kept with its repeated sections played once.
  * ``cannot process repeats on Stream that does not contain measures`` — an ABC voice parsed without
    measures; the measures are made from its time signature.
"""

from __future__ import annotations

import copy
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import symusic

from museforge.data.limits import (
    ABC_TUNE_START,
    DEFAULT_LIMITS,
    InputError,
    ReaderLimits,
    check_abc_size,
    check_archive_size,
    check_midi_structure,
    check_musicxml_repeats,
    check_score_span,
    open_zip,
    read_mxl_score,
)
from museforge.data.lpd5 import read_lpd_npz
from museforge.data.sandbox import run_limited

MIDI_SUFFIXES = frozenset({".mid", ".midi"})
MUSIC21_SUFFIXES = frozenset({".xml", ".mxl", ".musicxml", ".krn"})
ABC_SUFFIXES = frozenset({".abc"})
PIANOROLL_SUFFIXES = frozenset({".npz"})  # LPD / pypianoroll files, read by `museforge.data.lpd5`
SUPPORTED_SUFFIXES = MIDI_SUFFIXES | MUSIC21_SUFFIXES | ABC_SUFFIXES | PIANOROLL_SUFFIXES


@dataclass(frozen=True)
class Unit:
    """The smallest thing a build converts: a whole file, or one tune of a multi-tune ABC file."""

    path: Path
    member: str | None = None  # ABC reference number ("X:" field) within the file
    text: str | None = None  # the tune's ABC text (file header included) for ABC members

    def fingerprint(self) -> str:
        """Hash of the unit's bytes: a changed file (or tune) gets a new fingerprint, a moved one does not."""
        data = self.text.encode() if self.text is not None else self.path.read_bytes()
        return hashlib.sha1(data).hexdigest()


@dataclass
class RawPiece:
    """A score read from a unit, with whatever metadata its notation carried."""

    score: symusic.Score
    title: str | None = None
    composer: str | None = None
    repairs: tuple[str, ...] = ()


def split_abc(text: str, limits: ReaderLimits = DEFAULT_LIMITS) -> list[tuple[str, str]]:
    """Split an ABC file into ``(reference number, tune text)``; the file header is prepended to each tune.

    Tunes without a number, or repeating a number, are numbered by their position so members stay unique.
    The tunes are counted, and the header copies sized, before anything is split: `InputError` above the limits.
    """
    first = ABC_TUNE_START.search(text)
    if first is None:
        return [("1", text)] if text.strip() else []
    header = text[: first.start()]
    header = "\n".join(line for line in header.splitlines() if not line.startswith("%") and line.strip())
    check_abc_size(text, header, limits)
    starts = list(ABC_TUNE_START.finditer(text))
    tunes: list[tuple[str, str]] = []
    seen: set[str] = set()
    for i, match in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        number = match.group(1) or str(i + 1)
        if number in seen:
            number = f"{number}.{i + 1}"
        seen.add(number)
        body = text[match.start() : end]
        tunes.append((number, f"{header}\n{body}" if header else body))
    return tunes


_ABC_TITLE = re.compile(r"^T:[ \t]*(.*?)[ \t]*$", re.MULTILINE)


def abc_title(tune: str) -> str | None:
    """The first title (``T:`` field) of one tune's text, without the music21 parse."""
    header_end = tune.find("\nK:")
    match = _ABC_TITLE.search(tune, 0, header_end if header_end >= 0 else len(tune))
    return (match.group(1) or None) if match else None


def list_units(path: Path, limits: ReaderLimits = DEFAULT_LIMITS) -> list[Unit]:
    """Units of one file: one per ABC tune, otherwise the file itself (unsupported files too, to be rejected).

    An ABC file beyond the limits stays one unit, which `read_unit` rejects with the reason.
    """
    if path.suffix.lower() in ABC_SUFFIXES:
        try:
            if path.stat().st_size > limits.max_file_bytes:
                return [Unit(path)]
            text = path.read_text(encoding="utf-8", errors="replace")
            return [Unit(path, number, tune) for number, tune in split_abc(text, limits)] or [Unit(path)]
        except (OSError, InputError):
            return [Unit(path)]
    return [Unit(path)]


def check_midi_bytes(data: bytes, limits: ReaderLimits = DEFAULT_LIMITS) -> None:
    """Reject MIDI data symusic would choke on or mis-read: empty, not MIDI, zero ticks per quarter, SMPTE time,
    more tracks than the limit."""
    max_bytes = limits.max_file_bytes
    if not data:
        raise InputError("empty file")
    if len(data) > max_bytes:
        raise InputError(f"file too large ({len(data) / 2**20:.1f} MiB > {max_bytes / 2**20:.1f} MiB)")
    if data[:4] != b"MThd" or len(data) < 14:
        raise InputError("not a MIDI file (no MThd header)")
    division = int.from_bytes(data[12:14], "big")
    if division & 0x8000:
        raise InputError("SMPTE time division is not supported")
    if division == 0:
        raise InputError("zero ticks per quarter note in the MIDI header")
    check_midi_structure(data, limits)


def _clean_score(score: symusic.Score, limits: ReaderLimits) -> symusic.Score:
    """Drop empty tracks and check the score has notes, length and tempo map within limits."""
    max_notes = limits.max_notes
    score.tracks = [t for t in score.tracks if len(t.notes) > 0]
    n_notes = sum(len(t.notes) for t in score.tracks)
    if n_notes == 0:
        raise InputError("no notes")
    if n_notes > max_notes:
        raise InputError(f"too many notes ({n_notes} > {max_notes})")
    if score.tpq <= 0:
        raise InputError("zero ticks per quarter note")
    check_score_span(score, limits)
    return score


def read_midi_bytes(data: bytes, limits: ReaderLimits = DEFAULT_LIMITS) -> symusic.Score:
    """Parse MIDI bytes into a Score, raising `InputError` with a reason for anything unusable.

    symusic reads in C++ with memory proportional to the file, so this runs in-process; the score's span is
    checked before anything downstream allocates by it."""
    check_midi_bytes(data, limits)
    try:
        score = symusic.Score.from_midi(data)
    except Exception as exc:  # symusic raises plain RuntimeError/ValueError for corrupt data
        raise InputError(f"corrupt MIDI: {exc}") from exc
    return _clean_score(score, limits)


def _repair_shared_time_signatures(stream: object) -> bool:
    """Give every measure its own TimeSignature object; return whether anything was shared."""
    from music21 import stream as m21stream

    seen: set[int] = set()
    changed = False
    for measure in stream.recurse().getElementsByClass(m21stream.Measure):  # type: ignore[attr-defined]
        ts = measure.timeSignature
        if ts is None:
            continue
        if id(ts) in seen:
            measure.timeSignature = copy.deepcopy(ts)
            changed = True
        seen.add(id(measure.timeSignature))
    return changed


def _strip_repeats(stream: object) -> None:
    """Remove repeat barlines, repeat brackets and jump marks so music21 can write the piece straight through."""
    from music21 import bar, repeat, spanner
    from music21 import stream as m21stream

    for measure in stream.recurse().getElementsByClass(m21stream.Measure):  # type: ignore[attr-defined]
        if isinstance(measure.leftBarline, bar.Repeat):
            measure.leftBarline = bar.Barline("regular")
        if isinstance(measure.rightBarline, bar.Repeat):
            measure.rightBarline = bar.Barline("regular")
    for element in list(
        stream.recurse().getElementsByClass(  # type: ignore[attr-defined]
            (repeat.RepeatExpression, spanner.RepeatBracket)
        )
    ):
        element.activeSite.remove(element)


def _add_measures(stream: object) -> None:
    """Give measures to parts that have none: music21 expands repeats per part and refuses a part without them
    (the ABC parser leaves some voices of a tune as bare note lists)."""
    from music21 import stream as m21stream

    for part in stream.getElementsByClass(m21stream.Part):  # type: ignore[attr-defined]
        if not part.getElementsByClass(m21stream.Measure):
            part.makeMeasures(inPlace=True)


def music21_to_score(
    stream: object, limits: ReaderLimits = DEFAULT_LIMITS
) -> tuple[symusic.Score, tuple[str, ...]]:
    """Write a music21 stream to MIDI in memory and read it with symusic, repairing known music21 faults."""
    from music21 import midi as m21midi
    from music21.repeat import ExpanderException
    from music21.stream.base import StreamException

    repairs: list[str] = []
    for _attempt in range(4):
        try:
            data = m21midi.translate.streamToMidiFile(stream).writestr()
            break
        except StreamException as exc:
            shared_ts = "already found" in str(exc) and "shared-time-signature" not in repairs
            if shared_ts and _repair_shared_time_signatures(stream):
                repairs.append("shared-time-signature")
                continue
            if "does not contain measures" in str(exc) and "measureless-parts" not in repairs:
                _add_measures(stream)
                repairs.append("measureless-parts")
                continue
            raise InputError(f"music21 could not write MIDI: {exc}") from exc
        except ExpanderException as exc:
            if "broken-repeats" not in repairs:
                _strip_repeats(stream)
                repairs.append("broken-repeats")
                continue
            raise InputError(f"music21 could not expand repeats: {exc}") from exc
        except MemoryError:
            raise
        except Exception as exc:
            raise InputError(f"music21 could not write MIDI: {type(exc).__name__}: {exc}") from exc
    else:
        raise InputError("music21 could not write MIDI after repairs: " + ", ".join(repairs))
    return _clean_score(symusic.Score.from_midi(data), limits), tuple(repairs)


def _music21_metadata(stream: object) -> tuple[str | None, str | None]:
    meta = getattr(stream, "metadata", None)
    if meta is None:
        return None, None
    title = meta.title or meta.movementName
    return (str(title).strip() or None) if title else None, (
        str(meta.composer).strip() or None
    ) if meta.composer else None


def read_unit(unit: Unit, limits: ReaderLimits = DEFAULT_LIMITS) -> RawPiece:
    """Read one unit into a `RawPiece`; every failure is an `InputError` naming its reason.

    MIDI and piano rolls are read here; the music21 formats are first checked cheaply (unpacked size, repeats,
    tune count) and then parsed in a child process within ``limits.memory_bytes`` and ``limits.seconds``.
    """
    suffix = unit.path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise InputError(f"unsupported file type '{suffix or unit.path.name}'")
    try:
        size = unit.path.stat().st_size
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror}") from exc
    if size == 0:
        raise InputError("empty file")
    max_bytes = limits.max_file_bytes
    if size > max_bytes:
        raise InputError(f"file too large ({size / 2**20:.1f} MiB > {max_bytes / 2**20:.1f} MiB)")

    if suffix in MIDI_SUFFIXES:
        score = read_midi_bytes(unit.path.read_bytes(), limits)
        return RawPiece(score=score, title=_midi_track_title(score))
    if suffix in PIANOROLL_SUFFIXES:
        with open_zip(unit.path.read_bytes(), limits) as zf:
            check_archive_size(zf, limits)
        return RawPiece(score=_clean_score(read_lpd_npz(unit.path), limits))
    if suffix in ABC_SUFFIXES:
        text = unit.text
        if text is None:  # the whole file: its first tune, the file's size and tune count checked first
            tunes = split_abc(unit.path.read_text(encoding="utf-8", errors="replace"), limits)
            if not tunes:
                raise InputError("no ABC tune in the file")
            text = tunes[0][1]
        return read_music21(text.encode("utf-8"), "abc", limits)
    data = unit.path.read_bytes()
    if suffix == ".mxl":
        data = read_mxl_score(data, limits)
    return read_music21(data, "humdrum" if suffix == ".krn" else "musicxml", limits)


def read_music21(data: bytes, fmt: str, limits: ReaderLimits = DEFAULT_LIMITS) -> RawPiece:
    """Parse ``data`` (ABC, MusicXML or Humdrum text) in a limited child process; see `museforge.data.sandbox`."""
    if fmt == "musicxml":
        check_musicxml_repeats(data, limits)
    return run_limited(_parse_music21, data, fmt, limits, limits=limits)


def _parse_music21(data: bytes, fmt: str, limits: ReaderLimits) -> RawPiece:
    """The child's work: music21 parse, MIDI conversion with repairs, metadata."""
    stream = _music21_stream(data, fmt)
    if hasattr(stream, "scores"):  # an Opus holding several scores where we expected one tune
        scores = list(stream.scores)
        if not scores:
            raise InputError("no music in file")
        stream = scores[0]
    score, repairs = music21_to_score(stream, limits)
    title, composer = _music21_metadata(stream)
    return RawPiece(score=score, title=title, composer=composer, repairs=repairs)


def _music21_stream(data: bytes, fmt: str) -> object:
    """music21's stream of the text; MusicXML bytes go to the XML parser as bytes, so their declared encoding
    holds."""
    import xml.etree.ElementTree as ET

    from music21 import converter
    from music21.musicxml.xmlToM21 import MusicXMLImporter

    try:
        if fmt != "musicxml":
            return converter.parseData(data.decode("utf-8", errors="replace"), format=fmt)
        root = ET.fromstring(data)
        if root.tag != "score-partwise":
            raise InputError(f"MusicXML root <{root.tag}> is not <score-partwise>")
        importer = MusicXMLImporter()
        importer.xmlRootToScore(root, importer.stream)
        return importer.stream
    except (InputError, MemoryError):  # a memory error is the limit's to report
        raise
    except Exception as exc:
        raise InputError(f"music21 could not parse: {type(exc).__name__}: {exc}") from exc


def _midi_track_title(score: symusic.Score) -> str | None:
    """MIDI has no title field; a sequence name on the first track is the common convention."""
    for track in score.tracks[:1]:
        if track.name.strip():
            return track.name.strip()
    return None


def load_score(path: str | Path) -> symusic.Score:
    """Read any supported file as one Score (the first tune of a multi-tune ABC file)."""
    units = list_units(Path(path))
    return read_unit(units[0]).score
