"""Speed of museforge.audio and museforge.visual on real corpus pieces; prints one JSON line.

Real-time factor (seconds of music per second of rendering, median of 5 runs) for a dense four-part Bach chorale,
a one-voice Essen folk tune and the first 16 bars of a Mozart string quartet movement; for that 16-bar piece the
seconds from score to a WAV, an OGG and an MP3 file (rendering included), and to its piano-roll SVG. Parsing the
corpus is not timed. Peak MB is the process's maximum resident set size at the end (music21 included).
"""

import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import symusic
from music21 import corpus

from museforge.audio import render_score, render_to_file
from museforge.data.formats import load_score
from museforge.score import bar_starts
from museforge.visual import pianoroll_svg

RUNS = 5


def median_seconds(fn, runs: int = RUNS) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def first_bars(score: symusic.Score, bars: int) -> symusic.Score:
    starts = bar_starts(score)
    return score.clip(0, int(starts[bars]), clip_end=True) if len(starts) > bars else score


def main() -> None:
    pieces = {
        "chorale": load_score(corpus.getWork("bach/bwv66.6")),
        "folk": load_score(corpus.getWork("essenFolksong/altdeu10.abc")),
        "quartet16": first_bars(load_score(corpus.getWork("mozart/k80/movement1")), 16),
    }
    result: dict = {"runs": RUNS}
    for name, score in pieces.items():
        seconds = score.to("second").end()
        render_s = median_seconds(lambda score=score: render_score(score))
        result[name] = {
            "notes": score.note_num(),
            "music_s": round(seconds, 2),
            "render_s": round(render_s, 4),
            "realtime_factor": round(seconds / render_s, 1),
        }

    song = pieces["quartet16"]
    with tempfile.TemporaryDirectory() as tmp:
        for suffix in ("wav", "ogg", "mp3"):
            path = Path(tmp) / f"song.{suffix}"
            result["quartet16"][f"to_{suffix}_s"] = round(
                median_seconds(lambda p=path: render_to_file(song, p)), 4
            )
            result["quartet16"][f"{suffix}_kb"] = round(path.stat().st_size / 1024, 1)
    result["quartet16"]["svg_s"] = round(median_seconds(lambda: pianoroll_svg(song)), 4)
    result["peak_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
