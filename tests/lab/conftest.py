"""A tiny REMI Transformer trained here on real chorales and folk tunes, shipped with its held-out set: the
model the lab's cycles and preference runs work on (built once per test process)."""

import shutil

import pytest

from museforge.data.build import BuildOptions, build_dataset, limit_per_collection
from museforge.data.corpora import music21_units
from museforge.data.manifest import load_manifest
from museforge.families.serving import clear_model_cache
from museforge.families.training import start_run
from museforge.lab.cycle import Lab
from museforge.lab.gate import GateSettings
from museforge.lab.heldout import HELDOUT, copy_pieces, pick_heldout
from museforge.metrics.originality import OriginalityIndex
from museforge.models.checkpoint_files import CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE
from museforge.models.zoo import MODELS_DIR_ENV, ORIGINALITY_FILE, registry

MODEL = "tiny-remi"
PERFORMANCE = "tiny-performance"
GATE = GateSettings(n_samples=2, bars=2, overlap_tolerance=1.0)  # two 2-bar samples: overlap is noise here


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """A corpus of chorales and folk tunes, and a tiny model trained on it, shipped with its held-out set."""
    root = tmp_path_factory.mktemp("lab")
    corpus = root / "corpus"
    units = limit_per_collection(music21_units(["bach", "essenFolksong"]), 16)
    build_dataset(units, corpus, BuildOptions(workers=2, progress=False, valid=0.2, test=0.2))
    run = root / "run"
    start_run("remi_transformer", corpus, "tiny", run, train_overrides={"max_steps": 60, "progress": False})
    _ship(corpus, run, root / "models" / MODEL)
    fiddle = [u for u in music21_units(["oneills1850"])][:24]
    return corpus, root / "models", fiddle


def _ship(corpus, run, shipped):
    """A trained run as a shipped model: its checkpoint, originality index, held-out set and card."""
    shipped.mkdir(parents=True)
    for name in (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE):
        shutil.copy(run / "best" / name, shipped / name)
    train = [r.midi_path(corpus) for r in load_manifest(corpus, "train")]
    OriginalityIndex.from_files(train)[0].save(shipped / ORIGINALITY_FILE)
    copy_pieces([(r, corpus) for r in pick_heldout(corpus, 4)], shipped / HELDOUT, split="test")
    (shipped / "MODEL_CARD.md").write_text("A tiny test model.\n", encoding="utf-8")


@pytest.fixture(scope="session")
def performance_world(world, tmp_path_factory):
    """A tiny Performance RNN trained on the same corpus, shipped beside the REMI model."""
    corpus, models, _ = world
    run = tmp_path_factory.mktemp("performance") / "run"
    start_run("performance_rnn", corpus, "tiny", run, train_overrides={"max_steps": 40, "progress": False})
    _ship(corpus, run, models / PERFORMANCE)
    return corpus, models


@pytest.fixture
def lab(world, tmp_path, monkeypatch):
    corpus, models, _ = world
    monkeypatch.setenv(MODELS_DIR_ENV, str(models))
    monkeypatch.setenv("MUSEFORGE_VAR_DIR", str(tmp_path))
    clear_model_cache()
    yield Lab(tmp_path, MODEL, registry(), corpus)
    clear_model_cache()
