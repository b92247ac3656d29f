"""Real music for the tokenizer tests, parsed once per session: corpus pieces from music21 and the MIDI fixtures.

A test taking an argument ``piece`` runs once per test piece (``ALL_NAMES``), one taking ``fixture_piece`` once
per MIDI fixture; both are names to look up in the ``scores`` fixture.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import symusic
from music21 import corpus

from museforge.data.formats import list_units, load_score, read_unit

FIXTURE_DIR = Path(__file__).parents[1] / "data"
FIXTURE_NAMES = ("single_track", "multitrack_drums", "odd_meter", "tempo_changes")
FOLK_MEMBERS = ("1", "2", "4")  # tunes 1, 2 and 4 of altdeu10 are in 4/2, 4/4 and 4/1
CORPUS_NAMES = ("chorale", *(f"folk{m}" for m in FOLK_MEMBERS), "palestrina", "quartet")
ALL_NAMES = FIXTURE_NAMES + CORPUS_NAMES


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "piece" in metafunc.fixturenames:
        metafunc.parametrize("piece", ALL_NAMES)
    if "fixture_piece" in metafunc.fixturenames:
        metafunc.parametrize("fixture_piece", FIXTURE_NAMES)


@pytest.fixture(scope="session")
def fixture_scores() -> dict[str, symusic.Score]:
    return {name: load_score(FIXTURE_DIR / f"{name}.mid") for name in FIXTURE_NAMES}


@pytest.fixture(scope="session")
def folk_scores() -> dict[str, symusic.Score]:
    units = {u.member: u for u in list_units(Path(corpus.getWork("essenFolksong/altdeu10")))}
    return {f"folk{m}": read_unit(units[m]).score for m in FOLK_MEMBERS}


@pytest.fixture(scope="session")
def corpus_scores(folk_scores: dict[str, symusic.Score]) -> dict[str, symusic.Score]:
    palestrina = next(p for p in corpus.getComposer("palestrina") if p.name == "Agnus_00.krn")
    return {
        "chorale": load_score(corpus.getWork("bach/bwv66.6")),
        **folk_scores,
        "palestrina": load_score(palestrina),
        "quartet": load_score(corpus.getWork("haydn/opus74no1/movement3")),
    }


@pytest.fixture(scope="session")
def scores(fixture_scores: dict[str, symusic.Score], corpus_scores: dict[str, symusic.Score]):
    """Every test piece by name; tests copy a score before changing it."""
    return {**fixture_scores, **corpus_scores}
