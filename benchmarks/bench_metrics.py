"""Speed of museforge.metrics on real corpus pieces; prints one JSON line.

Parses 200 music21 corpus pieces (Bach chorales, then Essen folk tunes) with `load_score` first; parsing is not
timed. Times: the full per-piece metric set (metrics + MGEval features), the MGEval comparison of two 100-piece
halves from their features, building the originality index over one half, and checking each piece of the other.
"""

import json
import time
from pathlib import Path

import numpy as np
from music21 import corpus

from museforge.data.formats import list_units, load_score, read_unit
from museforge.metrics.compare import compare_sets
from museforge.metrics.features import piece_features, piece_metrics
from museforge.metrics.originality import OriginalityIndex, check_originality

N_PIECES = 200


def corpus_scores(n: int) -> list:
    scores = []
    for name in corpus.chorales.Iterator(returnType="filename"):
        work = corpus.getWork(name)
        scores.append(load_score(work[0] if isinstance(work, list) else work))
        if len(scores) >= n // 2:
            break
    for path in sorted(Path(corpus.getWork("essenFolksong/altdeu10.abc")).parent.glob("*.abc")):
        for unit in list_units(path):
            try:
                scores.append(read_unit(unit).score)
            except ValueError:
                continue
            if len(scores) >= n:
                return scores
    return scores


def main() -> None:
    t0 = time.perf_counter()
    scores = corpus_scores(N_PIECES)
    parse_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    features = [piece_features(s) | {k: np.array([v]) for k, v in piece_metrics(s).items()} for s in scores]
    metrics_s = time.perf_counter() - t0

    half = len(scores) // 2
    t0 = time.perf_counter()
    compare_sets(features[:half], features[half:])
    compare_s = time.perf_counter() - t0

    train = scores[::2]
    t0 = time.perf_counter()
    index = OriginalityIndex.build(train)
    build_s = time.perf_counter() - t0
    checks = []
    for score in scores[1::2]:
        t0 = time.perf_counter()
        check_originality(score, index)
        checks.append(time.perf_counter() - t0)

    print(
        json.dumps(
            {
                "pieces": len(scores),
                "parse_s_untimed": round(parse_s, 2),
                "metrics_pieces_per_s": round(len(scores) / metrics_s, 1),
                "mgeval_compare_s": round(compare_s, 3),
                "mgeval_pieces_per_s": round(len(scores) / compare_s, 1),
                "originality_index_build_s": round(build_s, 3),
                "originality_index_hashes": len(index.hashes),
                "originality_check_ms_median": round(1000 * float(np.median(checks)), 3),
                "originality_check_ms_max": round(1000 * float(np.max(checks)), 3),
            }
        )
    )


if __name__ == "__main__":
    main()
