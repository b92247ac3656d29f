"""Shared test helpers: the committed MIDI fixtures and real pieces of the music21 corpus."""

import os
from pathlib import Path

import pytest

from museforge.machine import VAR_DIR_ENV

FIXTURES = Path(__file__).parent / "data"
GOOD_FIXTURES = ("single_track.mid", "multitrack_drums.mid", "odd_meter.mid", "tempo_changes.mid")
BAD_FIXTURES = {
    "empty.mid": "no notes",
    "corrupt.mid": "corrupt MIDI",
    "zero_tpq.mid": "zero ticks per quarter",
}


def pytest_configure(config: pytest.Config) -> None:
    """One torch thread per test process: `make test` runs two xdist workers on two cores, and tiny models run
    fastest single-threaded (two threads each oversubscribe the machine many times over)."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def var_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Per-machine state (the precision probe's cache) goes to a temporary folder, never the checkout's var/."""
    path = tmp_path_factory.mktemp("var")
    os.environ[VAR_DIR_ENV] = str(path)
    return path


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


def corpus_path(name: str) -> Path:
    """A file of the corpus bundled with music21, e.g. ``corpus_path('bach/bwv66.6')``."""
    import music21

    return Path(music21.corpus.getWork(name))
