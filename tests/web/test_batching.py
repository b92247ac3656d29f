"""A worker's batched decoding on the tiny REMI Transformer: songs sampled by several jobs at once, each with
its own seed, style, length and controls, are the songs each job makes alone, and each job hears its own
progress. Families without batched decoding sample as before.

The model runs in float64 here, so that float rounding, which may differ between a row decoded in a batch and
alone (`museforge.generation.batched`), cannot decide a draw on whatever machine runs the test."""

import threading

import torch

from museforge.generation.batched import BatchedDecoder
from museforge.web.catalog import ModelCatalog

JOBS = [
    {"seed": 1, "bars": 2},
    {"seed": 2, "bars": 4, "style": "chorale", "temperature": 0.8},
    {"seed": 3, "bars": 3, "style": "folk", "top_k": 8, "rhythm": "1,2,3"},
    {"seed": 4, "bars": 1, "top_p": 0.5, "polyphony": "2"},
    {"seed": 5, "bars": 5},
]


def test_jobs_decoded_together_get_the_songs_they_get_alone(models_folder, tmp_path):
    batched = ModelCatalog(models_folder, "cpu", cache_dir=tmp_path, batching=True)
    alone = ModelCatalog(models_folder, "cpu", cache_dir=tmp_path)
    served = batched.get("remi-transformer")
    assert served.loaded.batcher is not None and alone.get("remi-transformer").loaded.batcher is None
    assert batched.get("performance-rnn").loaded.batcher is None  # a family that does not batch
    assert served.loaded.sampler(1) == (served.loaded.batcher.model, "fp32")  # what a song records
    model = served.loaded.checkpoint.model.double()  # (the alone catalog's too: one loaded model)
    served.loaded.batcher = BatchedDecoder(model)
    songs, progress = {}, {i: [] for i in range(len(JOBS))}
    start = threading.Barrier(len(JOBS))

    def job(i: int) -> None:
        start.wait()
        request = served.family.parse(JOBS[i])
        songs[i] = served.family.sample(served.loaded, request, None, progress[i].append)[0]

    threads = [threading.Thread(target=job, args=(i,)) for i in range(len(JOBS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert served.loaded.batcher.largest_batch > 1
    one = alone.get("remi-transformer")
    assert next(one.loaded.sampler(1)[0].parameters()).dtype == torch.float64
    for i, asked in enumerate(JOBS):
        song = one.family.sample(one.loaded, one.family.parse(asked))[0]
        assert songs[i].tokens == song.tokens, f"job {i}"
        assert songs[i].params == song.params
        assert progress[i][-1] == 1.0 and progress[i] == sorted(progress[i])  # its own bar count
