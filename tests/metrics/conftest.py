"""Scores for the metric tests: tiny hand-made pieces and real corpus pieces, each parsed once per session."""

from pathlib import Path

import pytest
import symusic
from music21 import corpus

from museforge.data.formats import list_units, load_score, read_unit

CHORALES = 10
FOLK_TUNES = 6
TPQ = 480


def make_score(*tracks: tuple[list[tuple[float, float, int]], bool], sigs=((0, 4, 4),), tpq: int = TPQ):
    """A score from tracks given as ([(start quarters, duration quarters, pitch), ...], is_drum)."""
    score = symusic.Score(tpq)
    for time, num, den in sigs:
        score.time_signatures.append(symusic.TimeSignature(round(time * tpq), num, den))
    for notes, is_drum in tracks:
        track = symusic.Track(program=0, is_drum=is_drum)
        for start, duration, pitch in notes:
            track.notes.append(symusic.Note(round(start * tpq), round(duration * tpq), pitch, 80))
        score.tracks.append(track)
    return score


@pytest.fixture(scope="session")
def make():
    """`make_score`, for tests that build their own small pieces."""
    return make_score


@pytest.fixture(scope="session")
def cdef() -> symusic.Score:
    """C4 D4 E4 F4 as quarter notes in one 4/4 bar."""
    return make_score(([(i, 1, p) for i, p in enumerate([60, 62, 64, 65])], False))


@pytest.fixture(scope="session")
def drum_loop() -> symusic.Score:
    """Two 4/4 bars of drums only: kick (36) on every beat, closed hat (42) on every 8th."""
    kicks = [(beat, 0.25, 36) for beat in range(8)]
    hats = [(i / 2, 0.25, 42) for i in range(16)]
    return make_score((kicks + hats, True))


def _work(name: str) -> Path:
    """A corpus file by name (getWork answers a list when several files share the name)."""
    work = corpus.getWork(name)
    return Path(work[0] if isinstance(work, list) else work)


@pytest.fixture(scope="session")
def chorales() -> dict[str, symusic.Score]:
    paths = list(corpus.chorales.Iterator(returnType="filename"))[:CHORALES]
    return {str(p): load_score(_work(p)) for p in paths}


@pytest.fixture(scope="session")
def folk_tunes() -> dict[str, symusic.Score]:
    path = _work("essenFolksong/altdeu10.abc")
    return {f"{path.name}#{unit.member}": read_unit(unit).score for unit in list_units(path)[:FOLK_TUNES]}


@pytest.fixture(scope="session")
def palestrina() -> symusic.Score:
    return load_score(_work("palestrina/Agnus_01.krn"))


@pytest.fixture(scope="session")
def corpus_scores(chorales, folk_tunes, palestrina) -> dict[str, symusic.Score]:
    return {**chorales, **folk_tunes, "palestrina/Agnus_01.krn": palestrina}
