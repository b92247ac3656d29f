import pytest

from conftest import BAD_FIXTURES, FIXTURES, GOOD_FIXTURES, corpus_path
from museforge.data.formats import (
    InputError,
    ReaderLimits,
    Unit,
    list_units,
    load_score,
    music21_to_score,
    read_unit,
    split_abc,
)


@pytest.mark.parametrize("name", GOOD_FIXTURES)
def test_good_fixtures_read_with_notes(name):
    score = load_score(FIXTURES / name)
    assert score.tpq == 480
    assert sum(len(t.notes) for t in score.tracks) > 0


def test_multitrack_keeps_drums_and_programs():
    score = load_score(FIXTURES / "multitrack_drums.mid")
    assert [t.is_drum for t in score.tracks].count(True) == 1
    assert sorted(t.program for t in score.tracks if not t.is_drum) == [0, 33, 48]


@pytest.mark.parametrize(("name", "reason"), sorted(BAD_FIXTURES.items()))
def test_bad_fixtures_are_rejected_with_reason(name, reason):
    with pytest.raises(InputError, match=reason):
        read_unit(Unit(FIXTURES / name))


def test_unsupported_and_oversized_files(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not music")
    with pytest.raises(InputError, match=r"unsupported file type '\.txt'"):
        read_unit(Unit(text))
    with pytest.raises(InputError, match="file too large"):
        read_unit(Unit(FIXTURES / "multitrack_drums.mid"), ReaderLimits(max_file_bytes=100))
    with pytest.raises(InputError, match="too many notes"):
        read_unit(Unit(FIXTURES / "multitrack_drums.mid"), ReaderLimits(max_notes=10))


def test_split_abc_gives_each_tune_the_file_header():
    text = "% comment\nM:4/4\nL:1/8\n\nX:1\nT:One\nK:G\nGABc|d4|\n\nX:2\nT:Two\nK:D\nDEFG|A4|\n\nX:2\nT:Dup\nK:C\nC4|\n"
    tunes = split_abc(text)
    assert [n for n, _ in tunes] == ["1", "2", "2.3"]
    assert all(t.startswith("M:4/4\nL:1/8") for _, t in tunes)
    assert "T:Two" in tunes[1][1] and "T:One" not in tunes[1][1]


def test_multi_tune_abc_file_is_one_unit_per_tune():
    path = corpus_path("essenFolksong/altdeu10")
    units = list_units(path)
    assert len(units) == 313
    first, second = read_unit(units[0]), read_unit(units[1])
    assert first.title == "Das Hildebrandslied" and second.title == "Herzog Ernst"
    assert len(first.score.tracks) == 1 and len(first.score.tracks[0].notes) == 60


@pytest.mark.parametrize("work", ["bach/bwv66.6", "palestrina/Agnus_01"])
def test_music21_formats_read(work):
    raw = read_unit(Unit(corpus_path(work)))
    assert len(raw.score.tracks) >= 4  # SATB parts (Palestrina has five voices)
    assert raw.score.tpq == 10080


def test_shared_time_signature_is_repaired():
    """The ABC parser's fault, rebuilt by hand: one TimeSignature object placed in two measures."""
    from music21 import meter, note, stream

    part = stream.Part()
    shared = meter.TimeSignature("3/4")
    for pitch in ("C4", "E4"):
        measure = stream.Measure()
        measure.timeSignature = shared
        measure.append(note.Note(pitch, quarterLength=3))
        part.append(measure)
    score, repairs = music21_to_score(stream.Score([part]))
    assert repairs == ("shared-time-signature",)
    assert [n.pitch for n in score.tracks[0].notes] == [60, 64]


def test_broken_repeats_are_dropped_and_the_piece_kept():
    """bwv277.krn's repeats make music21 raise ExpanderException; without them the chorale is kept."""
    raw = read_unit(Unit(corpus_path("bach/bwv277.krn")))
    assert raw.repairs == ("broken-repeats",)
    assert len(raw.score.tracks) == 4 and all(len(t.notes) > 20 for t in raw.score.tracks)


def test_measureless_abc_voices_get_measures():
    """Tune 8 of American Fife's opus parses with two voices lacking measures; music21 then refuses repeats."""
    unit = next(u for u in list_units(corpus_path("miscFolk/americanfifeopus")) if u.member == "8")
    raw = read_unit(unit)
    assert "measureless-parts" in raw.repairs
    assert sum(len(t.notes) for t in raw.score.tracks) > 50
