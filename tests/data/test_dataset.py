import json
import shutil

import numpy as np
import pytest
import symusic
import torch
from typer.testing import CliRunner

from conftest import FIXTURES, GOOD_FIXTURES
from museforge.cli import app
from museforge.data.build import BuildOptions, build_dataset
from museforge.data.corpora import folder_units, music21_units
from museforge.data.dataset import (
    IGNORE_INDEX,
    BarSegmentDataset,
    PianoRollDataset,
    RandomTransposition,
    TokenCache,
    TokenizeOptions,
    TokenWindowDataset,
    style_parts,
    tokenize_dataset,
)
from museforge.data.manifest import PieceRecord, load_manifest

pytestmark = pytest.mark.xdist_group("dataset")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A small real dataset: a few chorales and folk tunes plus the MIDI fixtures; valid 0.3 so every split has data."""
    out = tmp_path_factory.mktemp("ds")
    src = tmp_path_factory.mktemp("src")
    for name in GOOD_FIXTURES:
        shutil.copy(FIXTURES / name, src / name)
    units = music21_units(["bach", "essenFolksong"]) + folder_units(src)
    build_dataset(units, out, BuildOptions(limit=6, workers=2, progress=False, valid=0.3, test=0.2))
    for name in ("remi", "performance", "pianoroll"):
        tokenize_dataset(out, name, TokenizeOptions(workers=2, progress=False, transpositions=(-1, 2)))
    return out


def test_cache_holds_exactly_what_the_tokenizer_gives(dataset):
    records = {r.id: r for r in load_manifest(dataset)}
    for name in ("remi", "performance"):
        cache = TokenCache(dataset, name, "train")
        tokenizer = cache.tokenizer()
        for i, piece in enumerate(cache.pieces):
            if piece["shift"] != 0:
                continue
            score = symusic.Score(str(records[piece["id"]].midi_path(dataset)))
            direct = (
                tokenizer.encode(score, style=piece["style"]).ids
                if name == "remi"
                else tokenizer.encode(score)
            )
            np.testing.assert_array_equal(cache.piece(i), direct)


def test_transposed_copies_only_in_train(dataset):
    train, valid = TokenCache(dataset, "remi", "train"), TokenCache(dataset, "remi", "valid")
    assert {p["shift"] for p in train.pieces} == {-1, 0, 2}
    assert {p["shift"] for p in valid.pieces} == {0}
    n_train = sum(r.split == "train" for r in load_manifest(dataset))
    assert sum(p["shift"] == 0 for p in train.pieces) == n_train


def test_windows_cover_pieces_without_crossing_them(dataset):
    ds = TokenWindowDataset(dataset, "performance", "train", seq_len=64, stride=48)
    cache = ds.cache
    seen = np.zeros(int(cache.offsets[-1]), dtype=bool)
    for i in range(len(ds)):
        item = ds[i]
        start, end = ds.windows[i]
        ids, labels = item["input_ids"].numpy(), item["labels"].numpy()
        assert ids.shape == labels.shape == (64,)
        n = min(end - start, 64)
        np.testing.assert_array_equal(ids[:n], cache.data[start : start + n])
        np.testing.assert_array_equal(labels[:n], ids[:n])
        assert np.all(labels[n:] == IGNORE_INDEX)
        piece = np.searchsorted(cache.offsets, start, side="right") - 1
        assert end == cache.offsets[piece + 1]  # a window belongs to one piece
        seen[start : start + n] = True
    assert seen.all()


def test_random_transposition_moves_whole_windows_within_range(dataset):
    cache = TokenCache(dataset, "remi", "valid")
    tokenizer = cache.tokenizer()
    plain = TokenWindowDataset(dataset, "remi", "valid", seq_len=256)
    augmented = TokenWindowDataset(
        dataset, "remi", "valid", seq_len=256, augment=RandomTransposition(tokenizer, 6)
    )
    torch.manual_seed(0)
    shifts = set()
    for i in range(len(plain)):
        a, b = plain[i]["input_ids"].numpy(), augmented[i]["input_ids"].numpy()
        diff = (b - a)[np.isin(a, tokenizer.pitch_ids)]
        assert len(set(diff.tolist())) <= 1  # one shift for the whole window
        shifts |= set(diff.tolist())
        np.testing.assert_array_equal(
            a[~np.isin(a, tokenizer.pitch_ids)], b[~np.isin(a, tokenizer.pitch_ids)]
        )
    assert len(shifts) >= 3 and all(abs(s) <= 6 for s in shifts)


def test_bar_segments_start_at_bar_tokens(dataset):
    ds = BarSegmentDataset(dataset, "train", n_bars=4)
    bar_id = ds.cache.tokenizer().bar_id
    assert len(ds) > 10
    for i in range(len(ds)):
        item = ds[i]
        ids, bars = item["input_ids"].numpy(), item["bar_starts"].numpy()
        assert len(bars) == 4 and bars[0] == 0
        assert np.all(ids[bars] == bar_id)
        assert np.count_nonzero(ids == bar_id) == 4  # exactly four whole bars
    capped = BarSegmentDataset(dataset, "train", n_bars=4, max_tokens=120)
    assert 0 < len(capped) < len(ds)
    assert all(len(capped[i]["input_ids"]) <= 120 for i in range(len(capped)))


def test_piano_roll_segments(dataset):
    ds = PianoRollDataset(dataset, "train", n_bars=4)
    roll = ds[0]["roll"]
    assert roll.dtype.is_floating_point is False and tuple(roll.shape) == (5, 4, 48, 84)
    dense = PianoRollDataset(dataset, "train", n_bars=4, min_notes_per_bar=12)
    assert 0 < len(dense) < len(ds)


def test_cache_is_reused_until_something_changes(dataset):
    again = tokenize_dataset(
        dataset, "performance", TokenizeOptions(workers=1, progress=False, transpositions=(-1, 2))
    )
    assert again.up_to_date
    changed = tokenize_dataset(dataset, "performance", TokenizeOptions(workers=1, progress=False))
    assert not changed.up_to_date
    assert {p["shift"] for p in TokenCache(dataset, "performance", "train").pieces} == {0}


def test_cli_tokenize_and_stats(dataset):
    runner = CliRunner()
    result = runner.invoke(app, ["data", "tokenize", "--data", str(dataset), "--tokenizer", "performance"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["data", "stats", str(dataset), "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert stats["pieces"] == len(load_manifest(dataset))
    assert set(stats["styles"]) == {"chorale", "folk", "user"}
    assert stats["tokens"]["performance"]["train"] > 0
    bad = runner.invoke(app, ["data", "tokenize", "--data", str(dataset), "--tokenizer", "nope"])
    assert bad.exit_code == 2 and "unknown tokenizer 'nope'" in bad.output


def test_each_styles_usual_number_of_parts_is_counted_from_its_training_pieces():
    def piece(style: str, tracks: int, split: str = "train") -> PieceRecord:
        return PieceRecord(
            id=f"{style}{tracks}{split}", source="x", style=style, programs=[0] * tracks, split=split
        )

    records = [
        *(piece("Chorale", 4) for _ in range(3)), piece("chorale", 5), piece("chorale", 2, "test"),
        piece("chorale", 2, "test"), piece("folk", 1), piece("folk", 2),  # a tie: the fewer parts
        piece("medieval", 3, "valid"),  # no training piece: the other splits count
    ]  # fmt: skip
    assert style_parts(records) == [("chorale", 4), ("folk", 1), ("medieval", 3)]
