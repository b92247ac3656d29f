"""Hostile input: how fast each bomb is refused and how far this process's memory peaks while refusing it.

Prints one JSON line:
  cpu                        the CPU model
  bombs.<name>.seconds       wall time from the bytes to the refusal (`read_unit`, as `data build` reads)
  bombs.<name>.peak_mib      how far the resident memory peaked above where it started (clear_refs reset)
  bombs.<name>.reason        the refusal
  upload_<name>              the same through the upload reader (`museforge.web.uploads.parse`, upload limits)
  chorale_read_s             a real chorale (bwv66.6) read through the limited child, and parsed in-process

Usage: PYTHONPATH=src python benchmarks/bench_bombs.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from bombs import (
    abc_of_tunes,
    many_member_zip,
    midi_note_bomb,
    midi_span_bomb,
    midi_track_bomb,
    mxl_bomb,
    peak_rss_growth_mib,
)
from museforge.data.formats import Unit, _parse_music21, list_units, read_unit
from museforge.data.limits import DEFAULT_LIMITS, ReaderLimits
from museforge.machine import cpu_model


def _best_of(n: int, fn) -> float:
    """The fastest of ``n`` runs: the least disturbed by other work on a shared machine."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _measure(fn) -> dict:
    start = time.perf_counter()
    growth, result = peak_rss_growth_mib(fn)
    return {
        "seconds": round(time.perf_counter() - start, 4),
        "peak_mib": round(growth, 1),
        "reason": str(result),
    }


def main() -> None:
    import music21

    tune = Path(music21.corpus.getWork("essenFolksong/altdeu10")).read_text(encoding="utf-8").split("\n\n")[1]
    files = {
        "mxl_1GiB.mxl": mxl_bomb(1024),
        "mxl_forged_size.mxl": mxl_bomb(1024, declared=5000),
        "mxl_ratio.mxl": mxl_bomb(20),
        "zip_20000_members.mxl": many_member_zip(20_000),
        "midi_5M_notes.mid": midi_note_bomb(5_000_000),  # 30 MB: the most a 32 MiB file holds
        "midi_tick_span.mid": midi_span_bomb(),
        "midi_5000_tracks.mid": midi_track_bomb(5000),
        "abc_10001_tunes.abc": abc_of_tunes(tune, 10_001).encode(),
    }
    chorale = Path(music21.corpus.getWork("bach/bwv66.6"))
    read_unit(Unit(chorale))  # start the fork server before anything is timed
    out: dict = {"cpu": cpu_model(), "bombs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            path = Path(tmp) / name
            path.write_bytes(data)
            out["bombs"][name] = _measure(lambda p=path: read_unit(list_units(p)[0]))

    from museforge.web.uploads import parse

    upload = ReaderLimits(max_file_bytes=2 * 2**20, max_notes=50_000, max_abc_tunes=1000, seconds=60)
    mxl, abc = files["mxl_1GiB.mxl"], abc_of_tunes(tune, 1001).encode()
    out["upload_mxl_1GiB"] = _measure(lambda: parse(mxl, "mxl", upload))
    out["upload_abc_1001_tunes"] = _measure(lambda: parse(abc, "abc", upload))

    from museforge.data.limits import read_mxl_score

    xml = read_mxl_score(chorale.read_bytes(), DEFAULT_LIMITS)
    child = _best_of(3, lambda: read_unit(Unit(chorale)))
    inline = _best_of(3, lambda: _parse_music21(xml, "musicxml", DEFAULT_LIMITS))
    out["chorale_read_s"] = {"limited_child": round(child, 4), "in_process": round(inline, 4)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
