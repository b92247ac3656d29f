"""Receiving music for the lab: real chorales and folk tunes as the corpus, real files arriving."""

import shutil

import pytest
import symusic

from conftest import FIXTURES
from museforge.data.build import BuildOptions, build_dataset
from museforge.data.corpora import music21_units
from museforge.data.manifest import load_manifest
from museforge.io import read_jsonl
from museforge.lab.receive import (
    DECISIONS,
    PROVENANCE,
    Arrival,
    inbox_arrivals,
    ingest,
    upload_arrivals,
)
from museforge.lab.styles import StyleClassifier
from museforge.metrics.originality import OriginalityIndex
from museforge.store.records import Upload

pytestmark = pytest.mark.xdist_group("receive")
PER_COLLECTION = 10


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A dataset of the first chorales and folk tunes, its originality index, and units it does not hold."""
    units = music21_units(["bach", "essenFolksong"])
    taken = []
    for collection in ("bach", "essenFolksong"):
        taken += [u for u in units if u.collection == collection][:PER_COLLECTION]
    data = tmp_path_factory.mktemp("corpus")
    build_dataset(taken, data, BuildOptions(workers=2, progress=False, valid=0.2, test=0.2))
    records = load_manifest(data)
    index = OriginalityIndex.from_files([r.midi_path(data) for r in records])[0]
    unseen = {
        c: [u for u in units if u.collection == c][PER_COLLECTION + 5 : PER_COLLECTION + 8]
        for c in ("bach", "essenFolksong")
    }
    return data, index, unseen


def _write_unit(unit, path):
    """A corpus unit as a file of its own (an ABC tune as its text)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if unit.unit.text is not None:
        path.write_text(unit.unit.text, encoding="utf-8")
    else:
        shutil.copy(unit.unit.path, path)
    return path


def _classifier(data):
    return StyleClassifier.fit([(data, r) for r in load_manifest(data, "train")])


def test_the_classifier_labels_unseen_chorales_and_folk_tunes(corpus, tmp_path):
    data, _, unseen = corpus
    classifier = _classifier(data)
    assert classifier.styles == ["chorale", "folk"]
    inbox = tmp_path / "inbox"
    arrivals = [
        *(_write_unit(u, inbox / f"c{i}{u.unit.path.suffix}") for i, u in enumerate(unseen["bach"])),
        *(_write_unit(u, inbox / f"f{i}.abc") for i, u in enumerate(unseen["essenFolksong"])),
    ]
    received = tmp_path / "received"
    report = ingest(inbox_arrivals(inbox), received, [data], classifier=classifier)
    assert len(report.accepted) == len(arrivals) == 6 and report.rejected == 0
    rows = {row["origin"]: row for row in read_jsonl(received / PROVENANCE)}
    assert {origin: row["style"] for origin, row in rows.items()} == {
        f"inbox/{p.name}": ("chorale" if p.name.startswith("c") else "folk") for p in arrivals
    }
    assert {row["label_source"] for row in rows.values()} == {"classifier"}


def test_ingest_judges_each_arrival_once_and_keeps_its_provenance(corpus, tmp_path):
    data, index, unseen = corpus
    inbox = tmp_path / "var" / "receive" / "inbox"
    corpus_piece = load_manifest(data, "train")[0]
    inbox.mkdir(parents=True)
    shutil.copy(corpus_piece.midi_path(data), inbox / "same_notes.mid")  # a duplicate of the corpus
    copy = symusic.Score(str(corpus_piece.midi_path(data))).shift_pitch(3)  # a training piece, transposed
    copy.dump_midi(str(inbox / "transposed.mid"))
    shutil.copy(FIXTURES / "corrupt.mid", inbox / "broken.mid")
    new = _write_unit(unseen["bach"][0], inbox / "renaissance" / f"new{unseen['bach'][0].unit.path.suffix}")
    upload = Upload(
        "u1", "user:ann", "tune.abc", "abc", "receive/u1.abc", 1, "0" * 64, {"learn_style": "folk"}
    )
    _write_unit(unseen["essenFolksong"][0], tmp_path / "var" / upload.path)

    arrivals = inbox_arrivals(inbox) + upload_arrivals(tmp_path / "var", [upload])
    received = tmp_path / "var" / "resource" / "received"
    first = ingest(arrivals, received, [data], index=index)
    assert (first.offered, first.rejected, first.duplicates, first.copies) == (5, 1, 1, 1)
    assert len(first.accepted) == 2 and first.styles == {"renaissance": 1, "folk": 1}
    kept = load_manifest(received)
    assert {r.source for r in kept} == {f"inbox/renaissance/{new.name}", "upload/u1"}
    assert all(r.midi_path(received).exists() for r in kept)
    assert len(list((received / "midi").glob("*/*.mid"))) == 2  # dropped pieces leave no file behind
    rows = {row["origin"]: row for row in read_jsonl(received / PROVENANCE)}
    assert rows["upload/u1"]["owner"] == "user:ann" and rows["upload/u1"]["label_source"] == "sender"
    decisions = {row["origin"]: row["decision"] for row in read_jsonl(received / DECISIONS)}
    assert decisions == {
        "inbox/same_notes.mid": "duplicate",
        "inbox/transposed.mid": "copy",
        f"inbox/renaissance/{new.name}": "accepted",
        "upload/u1": "accepted",
    }
    assert "broken.mid" in (received / "rejects.jsonl").read_text()

    again = ingest(arrivals, received, [data], index=index)
    assert again.converted == 0 and again.accepted == [] and again.pieces == 2  # nothing is judged twice

    withdrawn = ingest(inbox_arrivals(inbox), received, [data], index=index)  # the owner withdrew consent
    assert len(withdrawn.withdrawn) == 1 and withdrawn.pieces == 1
    assert {r.source for r in load_manifest(received)} == {f"inbox/renaissance/{new.name}"}
    assert "upload/u1" not in {row["origin"] for row in read_jsonl(received / PROVENANCE)}


def test_an_arrival_with_a_changed_file_is_judged_again(corpus, tmp_path):
    data, _, unseen = corpus
    path = _write_unit(unseen["essenFolksong"][1], tmp_path / "inbox" / "tune.abc")
    received = tmp_path / "received"
    first = ingest([Arrival("inbox/tune.abc", path, style="folk")], received, [data])
    path.write_text(unseen["essenFolksong"][2].unit.text, encoding="utf-8")
    second = ingest([Arrival("inbox/tune.abc", path, style="folk")], received, [data])
    assert len(first.accepted) == len(second.accepted) == 1 and first.accepted != second.accepted
    assert second.pieces == 1 and second.withdrawn == []
