"""Where pieces come from: the corpus inside the music21 package, any folder of files, or LPD-5.

Each source yields `SourceUnit`s (a unit plus its collection and style label) for the build to convert.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from museforge.data.formats import SUPPORTED_SUFFIXES, Unit, list_units
from museforge.data.lpd5 import lpd5_files

# music21 collection -> style label. The style is what a user picks in the app and what models condition on.
MUSIC21_STYLES: dict[str, str] = {
    "bach": "chorale",
    "essenFolksong": "folk",
    "miscFolk": "folk",
    "oneills1850": "fiddle",
    "ryansMammoth": "fiddle",
    "airdsAirs": "fiddle",
    "nottingham-dataset": "fiddle",
    "palestrina": "renaissance",
    "josquin": "renaissance",
    "monteverdi": "renaissance",
    "lusitano": "renaissance",
    "trecento": "medieval",
    "ciconia": "medieval",
    "luca": "medieval",
    "beethoven": "classical",
    "mozart": "classical",
    "haydn": "classical",
    "schubert": "classical",
    "schumann_robert": "classical",
    "schumann_clara": "classical",
    "chopin": "classical",
    "handel": "classical",
    "corelli": "classical",
    "cpebach": "classical",
    "verdi": "classical",
    "weber": "classical",
    "webern": "classical",
    "schoenberg": "classical",
    "joplin": "classical",
    "beach": "classical",
    "johnson_j_r": "classical",
    "liliuokalani": "classical",
}
# Collections of one composer: the fallback when a file's own metadata names nobody.
MUSIC21_COMPOSERS: dict[str, str] = {
    "bach": "J.S. Bach",
    "palestrina": "Palestrina, Giovanni Perluigi da",
    "josquin": "Josquin des Prez",
    "monteverdi": "Claudio Monteverdi",
    "lusitano": "Vicente Lusitano",
    "ciconia": "Johannes Ciconia",
    "beethoven": "Ludwig van Beethoven",
    "mozart": "Wolfgang Amadeus Mozart",
    "haydn": "Joseph Haydn",
    "schubert": "Franz Schubert",
    "schumann_robert": "Robert Schumann",
    "schumann_clara": "Clara Schumann",
    "chopin": "Frédéric Chopin",
    "handel": "George Frideric Handel",
    "corelli": "Arcangelo Corelli",
    "cpebach": "C.P.E. Bach",
    "verdi": "Giuseppe Verdi",
    "weber": "Carl Maria von Weber",
    "webern": "Anton Webern",
    "schoenberg": "Arnold Schoenberg",
    "joplin": "Scott Joplin",
    "beach": "Amy Beach",
    "johnson_j_r": "J. Rosamond Johnson",
    "liliuokalani": "Liliʻuokalani",
}
STYLES = ("chorale", "folk", "fiddle", "renaissance", "medieval", "classical", "user")


@dataclass(frozen=True)
class SourceUnit:
    """A unit with where it came from: ``name`` is its portable source name (``music21/bach/bwv66.6.mxl`` for
    the bundled corpus, the absolute path otherwise) and, with the ABC member, its key in the build cache."""

    unit: Unit
    collection: str
    style: str
    name: str
    genres: tuple[str, ...] = ()
    composer: str | None = None  # used when the file names no composer

    @property
    def key(self) -> str:
        return f"{self.name}#X:{self.unit.member}" if self.unit.member is not None else self.name


def music21_corpus_dir() -> Path:
    """The corpus folder shipped inside the installed music21 package (no network needed)."""
    import music21.corpus

    return Path(music21.corpus.__file__).parent


def music21_units(collections: Iterable[str] | None = None) -> list[SourceUnit]:
    """Units of the chosen music21 collections (all known ones by default), in a stable order.

    Only music files are taken: the corpus also holds roman-numeral analyses and images, which are not pieces.
    """
    root = music21_corpus_dir()
    names = list(collections) if collections is not None else list(MUSIC21_STYLES)
    unknown = [n for n in names if n not in MUSIC21_STYLES]
    if unknown:
        raise ValueError(
            f"unknown music21 collection(s): {', '.join(unknown)}; known: {', '.join(sorted(MUSIC21_STYLES))}"
        )
    out: list[SourceUnit] = []
    for name in names:
        folder = root / name
        for path in sorted(
            p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES
        ):
            source = f"music21/{path.relative_to(root).as_posix()}"
            out.extend(
                SourceUnit(u, name, MUSIC21_STYLES[name], source, composer=MUSIC21_COMPOSERS.get(name))
                for u in list_units(path)
            )
    return out


def folder_units(folder: Path, style: str = "user") -> list[SourceUnit]:
    """Every file under ``folder`` (hidden ones excepted); unsupported files are kept so the build reports them."""
    if not folder.is_dir():
        raise ValueError(f"source folder {folder} does not exist")
    out: list[SourceUnit] = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        collection = path.parent.name if path.parent != folder else folder.name
        out.extend(SourceUnit(u, collection, style, str(path.resolve())) for u in list_units(path))
    return out


def lpd5_units(root: Path) -> list[SourceUnit]:
    """One unit per npz under ``root``, labelled with its last.fm genres; style is the first genre, or "lpd"."""
    return [
        SourceUnit(Unit(path), "lpd5", tags[0] if tags else "lpd", str(path.resolve()), tags)
        for path, tags in lpd5_files(root)
    ]
