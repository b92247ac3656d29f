"""Hostile input to the readers: each bomb is refused with a reason naming it, and this process does not grow by
more than a few hundred MiB while refusing it (the bombs would take gigabytes)."""

import json

import music21
import pytest

from bombs import (
    abc_of_tunes,
    many_member_zip,
    midi_note_bomb,
    midi_span_bomb,
    midi_track_bomb,
    mxl_bomb,
    peak_rss_growth_mib,
)
from conftest import corpus_path
from museforge.data.build import BuildOptions, build_dataset
from museforge.data.corpora import folder_units
from museforge.data.formats import DEFAULT_LIMITS, InputError, ReaderLimits, Unit, list_units, read_unit
from museforge.data.sandbox import run_limited
from museforge.io import read_jsonl

BOUND_MIB = 300


def _refused(path, limits=DEFAULT_LIMITS) -> str:
    """The reason ``path`` is refused for, checking the memory it took."""
    growth, result = peak_rss_growth_mib(lambda: read_unit(list_units(path, limits)[0], limits))
    assert isinstance(result, InputError), result
    assert growth < BOUND_MIB, f"refusing {path.name} grew the process by {growth:.0f} MiB"
    return str(result)


def _first_tune() -> str:
    return corpus_path("essenFolksong/altdeu10").read_text(encoding="utf-8").split("\n\n")[1]


def test_mxl_bomb_is_refused_from_its_directory(tmp_path):
    bomb = tmp_path / "bomb.mxl"
    bomb.write_bytes(mxl_bomb(1024))
    assert bomb.stat().st_size < 2**21  # a megabyte on disk
    assert "score.xml would unpack to 1024.0 MiB, more than the 32.0 MiB limit" in _refused(bomb)


def test_mxl_with_a_forged_size_is_refused_while_unpacking(tmp_path):
    bomb = tmp_path / "forged.mxl"
    bomb.write_bytes(mxl_bomb(1024, declared=5000))
    assert "damaged ZIP archive: Bad CRC-32 for file 'score.xml'" in _refused(bomb)


def test_mxl_compression_ratio_and_member_count_are_bounded(tmp_path):
    dense = tmp_path / "dense.mxl"
    dense.write_bytes(mxl_bomb(20))  # 20 MiB: under the size limit, but compressed a thousand to one
    assert "compressed 1008 to 1, more than 200 to 1: a decompression bomb" in _refused(dense)
    crowded = tmp_path / "crowded.mxl"
    crowded.write_bytes(many_member_zip(20_000))
    assert "the ZIP archive has 20001 members, more than 64" in _refused(crowded)


def test_midi_bombs_are_refused_before_anything_allocates_by_them(tmp_path):
    cases = {
        "notes.mid": (midi_note_bomb(2_000_000), "too many notes (2000000 > 1000000)"),
        "span.mid": (midi_span_bomb(), "the piece spans 559241 quarter notes, more than 50000"),
        "tracks.mid": (midi_track_bomb(5000), "5000 MIDI tracks, more than 1024"),
    }
    for name, (data, reason) in cases.items():
        (tmp_path / name).write_bytes(data)
        assert reason in _refused(tmp_path / name)


def test_musicxml_repeat_bomb_is_refused_before_music21(tmp_path):
    score = music21.corpus.parse("bach/bwv66.6")
    path = tmp_path / "repeats.musicxml"
    score.write("musicxml", fp=path)
    text = path.read_text(encoding="utf-8").replace(
        "</measure>\n  </part>",
        '<barline location="right"><repeat direction="backward" times="20000"/></barline></measure>\n  </part>',
    )
    path.write_text(text, encoding="utf-8")
    assert "a repeat played 20000 times, more than 16" in _refused(path)


def test_abc_file_of_too_many_tunes_is_one_rejected_unit(tmp_path):
    path = tmp_path / "many.abc"
    path.write_text(abc_of_tunes(_first_tune(), 10_001), encoding="utf-8")
    units = list_units(path)
    assert len(units) == 1 and units[0].text is None  # not split into ten thousand units
    assert "the ABC file holds 10001 tunes, more than 10000" in _refused(path)


def test_abc_header_copied_into_every_tune_is_bounded(tmp_path):
    path = tmp_path / "header.abc"
    header = "".join(f"N:note {i:06d} of a long file header\n" for i in range(3000))  # ~100 KB, once per tune
    path.write_text(abc_of_tunes(_first_tune(), 500, header=header), encoding="utf-8")
    assert "the ABC file header repeated for each of its 500 tunes makes" in _refused(path)


def test_data_build_rejects_bombs_with_a_clear_reason(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "bomb.mxl").write_bytes(mxl_bomb(1024))
    (src / "span.mid").write_bytes(midi_span_bomb())
    (src / "many.abc").write_text(abc_of_tunes(_first_tune(), 10_001), encoding="utf-8")
    (src / "good.mxl").write_bytes(corpus_path("bach/bwv66.6").read_bytes())
    growth, report = peak_rss_growth_mib(
        lambda: build_dataset(folder_units(src), tmp_path / "ds", BuildOptions(workers=1, progress=False))
    )
    assert report.pieces == 1 and report.rejected == 3
    reasons = {
        row["source"].rsplit("/", 1)[-1]: row["reason"]
        for row in read_jsonl(tmp_path / "ds" / "rejects.jsonl")
    }
    assert "would unpack to 1024.0 MiB" in reasons["bomb.mxl"]
    assert "spans 559241 quarter notes" in reasons["span.mid"]
    assert "holds 10001 tunes" in reasons["many.abc"]
    assert growth < BOUND_MIB
    assert json.loads((tmp_path / "ds" / "build.json").read_text())["rejected"] == 3


def test_music21_parse_runs_within_a_time_limit():
    """What the cheap checks cannot bound: the child is stopped at its deadline, and says so."""
    fugue = Unit(corpus_path("beethoven/opus133"))  # minutes of music21 work on any machine
    with pytest.raises(InputError, match="reading took longer than the 1 s limit"):
        read_unit(fugue, ReaderLimits(seconds=1))
    assert read_unit(Unit(corpus_path("bach/bwv66.6"))).score.note_num() > 0  # within the defaults it reads


def test_the_child_is_refused_memory_beyond_its_limit():
    """One allocation four times the budget: it cannot come from heap the child inherited, so it fails there,
    and the caller is told which limit was hit."""
    with pytest.raises(InputError, match="reading needs more than the 64 MiB memory limit"):
        run_limited(bytearray, 256 * 2**20, limits=ReaderLimits(memory_bytes=64 * 2**20))
    assert len(run_limited(bytearray, 16 * 2**20, limits=ReaderLimits(memory_bytes=64 * 2**20))) == 16 * 2**20


def test_child_reports_its_reader_errors(tmp_path):
    rests = Unit(tmp_path / "rests.abc", "1", "X:1\nT:Rests\nM:4/4\nL:1/4\nK:C\nz4|z4|\n")
    rests.path.write_text(rests.text, encoding="utf-8")
    with pytest.raises(InputError, match=r"^no notes$"):
        read_unit(rests)
