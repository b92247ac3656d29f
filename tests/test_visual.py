"""Piano-roll SVG of real scores: well-formed, one mark per note, bar lines per bar, legend, layout."""

import time
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import symusic

from conftest import FIXTURES, corpus_path
from museforge.data.formats import load_score
from museforge.score import bar_starts, note_array
from museforge.visual import pianoroll_svg


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def marks(root: ET.Element, cls: str) -> list[ET.Element]:
    return [e for e in root.iter() if e.get("class") == cls]


def load(name: str) -> symusic.Score:
    return load_score(corpus_path(name)) if "/" in name else symusic.Score(FIXTURES / name)


@pytest.mark.parametrize(
    "name", ["single_track.mid", "multitrack_drums.mid", "odd_meter.mid", "bach/bwv66.6"]
)
def test_one_rect_per_note_and_one_line_per_bar(name):
    score = load(name)
    root = parse(pianoroll_svg(score, width=800, height=300))
    assert root.tag == "{http://www.w3.org/2000/svg}svg" and root.get("viewBox") == "0 0 800 300"
    notes = note_array(score)
    assert len(marks(root, "note")) == int((~notes["is_drum"]).sum())
    assert len(marks(root, "drum")) == int(notes["is_drum"].sum())
    assert all(e.tag == "{http://www.w3.org/2000/svg}rect" for e in marks(root, "note") + marks(root, "drum"))
    assert len(marks(root, "bar")) == len(bar_starts(score))
    legend = next(e for e in root.iter() if e.get("class") == "legend")
    names = [t.text for t in legend.iter("{http://www.w3.org/2000/svg}text")]
    assert names == [(score.tracks[i].name.strip() or "Drums") for i in sorted(set(notes["track"].tolist()))]


def test_layout_follows_time_and_pitch():
    score = symusic.Score(FIXTURES / "single_track.mid")
    root = parse(pianoroll_svg(score, width=600, height=240))
    frame = marks(root, "frame")[0]
    x0, y0 = float(frame.get("x")), float(frame.get("y"))
    x1, y1 = x0 + float(frame.get("width")), y0 + float(frame.get("height"))
    rects = marks(root, "note")
    xs = np.array([float(r.get("x")) for r in rects])
    ys = np.array([float(r.get("y")) for r in rects])
    ends = xs + np.array([float(r.get("width")) for r in rects])
    assert (xs >= x0).all() and (ends <= x1 + 1e-6).all()
    assert (ys >= y0).all() and (ys <= y1).all()
    notes = note_array(score)  # sorted by (time, pitch), the order the SVG draws one track in
    assert np.all(np.diff(xs) * np.diff(notes["time"]) >= 0)  # later notes further right
    order = np.argsort(notes["pitch"], kind="stable")
    assert np.all(np.diff(ys[order]) <= 1e-9)  # higher pitch higher up (smaller y)
    # The used range plus a 2-semitone margin fills the height: the lowest note sits 2 rows above the bottom.
    row = (y1 - y0) / (int(notes["pitch"].max()) - int(notes["pitch"].min()) + 5)
    assert ys.max() == pytest.approx(y1 - 3 * row, abs=row / 2)
    # 4/4 at 480 ticks per quarter: a bar line every 1920 ticks, evenly spaced across the last note end.
    bars = np.array([float(b.get("x1")) for b in marks(root, "bar")])
    end = int((notes["time"] + notes["duration"]).max())
    assert bars == pytest.approx(x0 + np.arange(len(bars)) * 1920 * (x1 - x0) / end, abs=0.01)


def test_drums_sit_below_the_pitched_notes():
    root = parse(pianoroll_svg(symusic.Score(FIXTURES / "multitrack_drums.mid")))
    lowest_note = max(float(r.get("y")) for r in marks(root, "note"))
    assert min(float(r.get("y")) for r in marks(root, "drum")) > lowest_note


def test_track_names_are_escaped_and_empty_scores_draw():
    score = symusic.Score(FIXTURES / "single_track.mid")
    score.tracks[0].name = 'Bass <&> "low"'
    root = parse(pianoroll_svg(score, title="a < b"))
    assert 'Bass <&> "low"' in [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    empty = parse(pianoroll_svg(symusic.Score(FIXTURES / "empty.mid")))
    assert marks(empty, "note") == [] and "no notes" in [
        t.text for t in empty.iter("{http://www.w3.org/2000/svg}text")
    ]
    with pytest.raises(ValueError, match="at least"):
        pianoroll_svg(score, width=50)


def test_thousands_of_notes_are_fast():
    rng = np.random.default_rng(0)
    score = symusic.Score(480)
    for program in (0, 33, 48):
        track = symusic.Track(name=f"p{program}", program=program)
        for start, pitch in zip(rng.integers(0, 480 * 400, 2000), rng.integers(40, 90, 2000), strict=True):
            track.notes.append(symusic.Note(int(start), 240, int(pitch), 80))
        score.tracks.append(track)
    t0 = time.perf_counter()
    svg = pianoroll_svg(score)
    elapsed = time.perf_counter() - t0
    assert len(marks(parse(svg), "note")) == 6000
    assert elapsed < 0.5
