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

MIDI_SUFFIXES = frozenset({".mid", ".midi"})
MUSIC21_SUFFIXES = frozenset({".xml", ".mxl", ".musicxml", ".krn"})
ABC_SUFFIXES = frozenset({".abc"})
PIANOROLL_SUFFIXES = frozenset({".npz"})  # LPD / pypianoroll files, read by `museforge.data.lpd5`
SUPPORTED_SUFFIXES = MIDI_SUFFIXES | MUSIC21_SUFFIXES | ABC_SUFFIXES | PIANOROLL_SUFFIXES

DEFAULT_MAX_FILE_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_NOTES = 1_000_000


class InputError(ValueError):
    """A file or tune that cannot become a piece; the message names the reason, for a rejects report."""


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


_ABC_TUNE_START = re.compile(r"^X:\s*(\S*)", re.MULTILINE)


def split_abc(text: str) -> list[tuple[str, str]]:
    """Split an ABC file into ``(reference number, tune text)``; the file header is prepended to each tune.

    Tunes without a number, or repeating a number, are numbered by their position so members stay unique.
    """
    starts = list(_ABC_TUNE_START.finditer(text))
    if not starts:
        return [("1", text)] if text.strip() else []
    header = text[: starts[0].start()]
    header = "\n".join(line for line in header.splitlines() if not line.startswith("%") and line.strip())
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


def list_units(path: Path) -> list[Unit]:
    """Units of one file: one per ABC tune, otherwise the file itself (unsupported files too, to be rejected)."""
    if path.suffix.lower() in ABC_SUFFIXES:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return [Unit(path)]
        return [Unit(path, number, tune) for number, tune in split_abc(text)] or [Unit(path)]
    return [Unit(path)]


def check_midi_bytes(data: bytes, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> None:
    """Reject MIDI data symusic would choke on or mis-read: empty, not MIDI, zero ticks per quarter, SMPTE time."""
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


def _clean_score(score: symusic.Score, max_notes: int) -> symusic.Score:
    """Drop empty tracks and check the score has notes within limits."""
    score.tracks = [t for t in score.tracks if len(t.notes) > 0]
    n_notes = sum(len(t.notes) for t in score.tracks)
    if n_notes == 0:
        raise InputError("no notes")
    if n_notes > max_notes:
        raise InputError(f"too many notes ({n_notes} > {max_notes})")
    if score.tpq <= 0:
        raise InputError("zero ticks per quarter note")
    return score


def read_midi_bytes(
    data: bytes, max_bytes: int = DEFAULT_MAX_FILE_BYTES, max_notes: int = DEFAULT_MAX_NOTES
) -> symusic.Score:
    """Parse MIDI bytes into a Score, raising `InputError` with a reason for anything unusable."""
    check_midi_bytes(data, max_bytes)
    try:
        score = symusic.Score.from_midi(data)
    except Exception as exc:  # symusic raises plain RuntimeError/ValueError for corrupt data
        raise InputError(f"corrupt MIDI: {exc}") from exc
    return _clean_score(score, max_notes)


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
    stream: object, max_notes: int = DEFAULT_MAX_NOTES
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
        except Exception as exc:
            raise InputError(f"music21 could not write MIDI: {type(exc).__name__}: {exc}") from exc
    else:
        raise InputError("music21 could not write MIDI after repairs: " + ", ".join(repairs))
    return _clean_score(symusic.Score.from_midi(data), max_notes), tuple(repairs)


def _music21_metadata(stream: object) -> tuple[str | None, str | None]:
    meta = getattr(stream, "metadata", None)
    if meta is None:
        return None, None
    title = meta.title or meta.movementName
    return (str(title).strip() or None) if title else None, (
        str(meta.composer).strip() or None
    ) if meta.composer else None


def read_unit(
    unit: Unit, max_bytes: int = DEFAULT_MAX_FILE_BYTES, max_notes: int = DEFAULT_MAX_NOTES
) -> RawPiece:
    """Read one unit into a `RawPiece`; every failure is an `InputError` naming its reason."""
    suffix = unit.path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise InputError(f"unsupported file type '{suffix or unit.path.name}'")
    try:
        size = unit.path.stat().st_size
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror}") from exc
    if size == 0:
        raise InputError("empty file")
    if size > max_bytes:
        raise InputError(f"file too large ({size / 2**20:.1f} MiB > {max_bytes / 2**20:.1f} MiB)")

    if suffix in MIDI_SUFFIXES:
        score = read_midi_bytes(unit.path.read_bytes(), max_bytes, max_notes)
        return RawPiece(score=score, title=_midi_track_title(score))
    if suffix in PIANOROLL_SUFFIXES:
        from museforge.data.lpd5 import read_lpd_npz

        return RawPiece(score=_clean_score(read_lpd_npz(unit.path), max_notes))

    from music21 import converter

    try:
        if unit.text is not None:
            stream = converter.parseData(unit.text, format="abc")
        else:
            stream = converter.parse(str(unit.path), forceSource=True)
    except Exception as exc:
        raise InputError(f"music21 could not parse: {type(exc).__name__}: {exc}") from exc
    if hasattr(stream, "scores"):  # an Opus holding several scores where we expected one tune
        scores = list(stream.scores)
        if not scores:
            raise InputError("no music in file")
        stream = scores[0]
    score, repairs = music21_to_score(stream, max_notes)
    title, composer = _music21_metadata(stream)
    return RawPiece(score=score, title=title, composer=composer, repairs=repairs)


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
