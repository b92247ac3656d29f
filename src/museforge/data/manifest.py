"""The piece manifest: one JSON line per piece of a built dataset, the record every other part reads.

A dataset folder made by `museforge data build` holds::

    manifest.jsonl    one `PieceRecord` per line, unique by id
    midi/ab/<id>.mid  each piece as normalized MIDI (what tokenizers and metrics read)
    rejects.jsonl     inputs that could not become pieces, with the reason
    sources.jsonl     build cache: unit key -> fingerprint and the ids it produced
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from museforge.io import atomic_write_jsonl, read_jsonl

MANIFEST = "manifest.jsonl"
REJECTS = "rejects.jsonl"
SOURCES = "sources.jsonl"
SPLITS = ("train", "valid", "test")


@dataclass
class PieceRecord:
    """What museforge knows about one piece."""

    id: str  # content hash of the notes (see `museforge.data.metadata.content_id`)
    source: str  # the file it came from (first one, when several files hold the same music)
    family: str = ""  # transposition-invariant hash (`family_id`); the split is drawn from it
    member: str | None = None  # tune number within a multi-tune ABC file
    title: str | None = None
    composer: str | None = None
    collection: str | None = None
    style: str = "user"
    genres: list[str] = field(default_factory=list)  # extra labels (LPD-5 last.fm tags)
    key: str | None = None  # e.g. "G major", "e minor"
    time_signatures: list[str] = field(default_factory=list)
    tempo: float | None = None  # first tempo, quarter notes per minute
    bars: int = 0
    instruments: list[str] = field(default_factory=list)
    programs: list[int] = field(default_factory=list)  # GM program per track; -1 marks a drum track
    n_notes: int = 0
    duration_s: float = 0.0
    split: str = "train"
    repairs: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PieceRecord:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @property
    def midi_relpath(self) -> str:
        return f"midi/{self.id[:2]}/{self.id}.mid"

    def midi_path(self, data_dir: Path | str) -> Path:
        return Path(data_dir) / self.midi_relpath


def load_manifest(
    data_dir: Path | str, split: str | None = None, style: str | None = None
) -> list[PieceRecord]:
    """Pieces of a built dataset, optionally one split and/or one style, in a stable (id) order."""
    path = Path(data_dir) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{data_dir} holds no {MANIFEST}: build it with `museforge data build`")
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    records = [PieceRecord.from_dict(row) for row in read_jsonl(path)]
    records = [
        r for r in records if (split is None or r.split == split) and (style is None or r.style == style)
    ]
    return sorted(records, key=lambda r: r.id)


def write_manifest(data_dir: Path | str, records: Iterable[PieceRecord]) -> None:
    atomic_write_jsonl(Path(data_dir) / MANIFEST, (r.to_dict() for r in sorted(records, key=lambda r: r.id)))


def parse_data_spec(spec: str) -> tuple[Path, str | None]:
    """Split a ``DIR[:split]`` argument, as used by `museforge evaluate --reference`."""
    head, sep, tail = spec.rpartition(":")
    if sep and tail in SPLITS:
        return Path(head), tail
    return Path(spec), None


def iter_midi_paths(
    data_dir: Path | str, split: str | None = None, style: str | None = None
) -> Iterator[Path]:
    for record in load_manifest(data_dir, split, style):
        yield record.midi_path(data_dir)
