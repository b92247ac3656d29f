"""A continuation or re-style keeps the source's own parts: a four-part Bach chorale whose parts play four
instruments, "continued" by real REMI / performance tokens of another chorale (what a model's decoded output
looks like), comes back with its four tracks, programs and exact notes for the bars it keeps and the new music
on a track of its own after them."""

import music21
import numpy as np
import pytest
import symusic

from museforge.data.formats import load_score
from museforge.generation.splice import keep_source_bars, keep_source_seconds
from museforge.tokenizers import build_tokenizer
from museforge.tokenizers.attributes import bar_bounds

REMI = build_tokenizer("remi")
PERF = build_tokenizer("performance")
PROGRAMS = (52, 40, 41, 32)  # choir aahs, violin, viola, contrabass


def chorale(name: str = "bach/bwv66.6") -> symusic.Score:
    score = load_score(music21.corpus.getWork(name))
    for track, program in zip(score.tracks, PROGRAMS, strict=True):
        track.program = program
    return score


def notes(track: symusic.Track) -> list[tuple[int, int, int]]:
    return sorted((n.time, n.duration, n.pitch) for n in track.notes)


def remi_continuation(source: symusic.Score, kept: int, other: symusic.Score, bars: range) -> symusic.Score:
    """The decoded tokens of ``source``'s first ``kept`` bars followed by ``other``'s ``bars``."""
    head, tail = REMI.encode(source), REMI.encode(other)
    ids = head.ids[: head.bar_starts[kept]].tolist()
    ids += tail.ids[tail.bar_starts[bars.start] : tail.bar_starts[bars.stop]].tolist()
    return REMI.decode(ids)


def test_a_continuation_keeps_the_chorale_parts_for_its_kept_bars():
    source, other = chorale(), load_score(music21.corpus.getWork("bach/bwv7.7"))
    made = remi_continuation(source, 4, other, range(4, 8))
    out = keep_source_bars(source, made, range(4), "model continuation")
    # the file a browser downloads says the same
    out = symusic.Score.from_midi(out.dumps_midi())
    lines = bar_bounds(source)
    cut = int(lines[4])
    names = [t.name for t in out.tracks]
    assert names == ["Soprano", "Alto", "Tenor", "Bass", "model continuation"]
    assert [t.program for t in out.tracks[:4]] == list(PROGRAMS)
    assert out.tpq == source.tpq and out.tempos[0].qpm == pytest.approx(source.tempos[0].qpm)
    for kept, part in zip(out.tracks[:4], source.tracks, strict=True):
        assert notes(kept) == [n for n in notes(part) if n[0] < cut]  # note for note, not quantized or merged
    new = out.tracks[4]
    assert min(n.time for n in new.notes) >= cut
    made_lines = bar_bounds(made)
    ratio = source.tpq / made.tpq
    expected = sorted(
        (cut + round((n.time - int(made_lines[4])) * ratio), n.pitch)
        for n in made.tracks[0].notes
        if n.time >= made_lines[4]
    )
    assert sorted((n.time, n.pitch) for n in new.notes) == expected


def test_a_continuation_of_fewer_bars_drops_the_rest_of_the_source():
    source, other = chorale(), load_score(music21.corpus.getWork("bach/bwv7.7"))
    made = remi_continuation(source, 2, other, range(0, 2))
    out = keep_source_bars(source, made, range(2), "new")
    cut = int(bar_bounds(source)[2])
    assert all(n.time < cut for t in out.tracks[:4] for n in t.notes)
    assert len(out.tracks[4].notes) > 0 and min(n.time for n in out.tracks[4].notes) >= cut


def test_a_restyle_replaces_only_its_bars():
    """Bars 2 and 3 come from the model; the others stay the source's own four parts."""
    source = chorale()
    n_bars = len(bar_bounds(source)) - 1
    made = remi_continuation(source, 0, load_score(music21.corpus.getWork("bach/bwv7.7")), range(0, n_bars))
    out = keep_source_bars(source, made, set(range(n_bars)) - {2, 3}, "re-styled")
    lines = bar_bounds(source)
    inside = [int(lines[2]), int(lines[4])]
    for kept, part in zip(out.tracks[:4], source.tracks, strict=True):
        assert kept.program == part.program
        assert notes(kept) == [n for n in notes(part) if not inside[0] <= n[0] < inside[1]]
    starts = np.array([n.time for n in out.tracks[4].notes])
    assert len(starts) and ((starts >= inside[0]) & (starts < inside[1])).all()


def test_a_performance_continuation_keeps_the_parts_up_to_the_cut():
    source = chorale()
    prompt = PERF.encode(source).tolist()
    made = PERF.decode(prompt + PERF.encode(load_score(music21.corpus.getWork("bach/bwv7.7"))).tolist())
    seconds = source.to("second").end()
    out = keep_source_seconds(source, made, seconds, "performance continuation")
    assert [t.name for t in out.tracks] == ["Soprano", "Alto", "Tenor", "Bass", "performance continuation"]
    assert [t.program for t in out.tracks[:4]] == list(PROGRAMS)
    timed = out.to("second")
    for kept, part in zip(timed.tracks[:4], source.to("second").tracks, strict=True):
        got = sorted((round(n.time, 2), n.pitch) for n in kept.notes)
        assert got == sorted((round(n.time, 2), n.pitch) for n in part.notes)
    assert min(n.time for n in timed.tracks[4].notes) >= seconds - 1e-6
