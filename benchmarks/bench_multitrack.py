"""Multi-track REMI, measured on held-out pieces of a built dataset: NLL per note (comparable across
tokenizations: the sequence's total NLL over its notes) per style, against a single-stream model on the same
pieces; the track fill-in seam (NLL of a chorale's part given its own other parts vs another chorale's); the
time to write a 16-bar four-part chorale and render it to audio.

    python benchmarks/bench_multitrack.py --model RUN/last --data DATASET [--baseline remi-transformer]
        [--samples DIR]   # then: museforge evaluate DIR --reference DATASET:test --style chorale --out REPORT
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from museforge.audio import render_to_file
from museforge.data.formats import load_score
from museforge.data.manifest import load_manifest
from museforge.families import RequestError
from museforge.families.remi.infill import track_prompt
from museforge.families.serving import generate_song, get_model
from museforge.machine import cpu_model
from museforge.models.scoring import WindowScorer
from museforge.tokenizers.infill import arrange_track


def nll_per_note(loaded, scores: list) -> float:
    """Total NLL (nats) of the pieces' token sequences over their notes."""
    scorer = WindowScorer(loaded.checkpoint.model)
    total, notes = 0.0, 0
    for score, style in scores:
        ids = loaded.tokenizer.encode(score, style=style).ids
        total -= float(scorer.log_probs(ids.tolist()).sum())
        notes += score.note_num()
    return total / max(notes, 1)


@torch.no_grad()
def part_nll(loaded, enc, voice: int, bars: int, context) -> float:
    """NLL per token of ``enc``'s voice over its first ``bars`` bars, after the fill-in prompt built from
    ``context`` (the same encoding: the real other parts; another piece's: a control)."""
    tok, model = loaded.tokenizer, loaded.checkpoint.model
    window = model.config.max_seq_len
    prompt, _ = track_prompt(tok, context, voice, 0, bars - 1, window)
    starts = [*enc.bar_starts.tolist(), len(enc.ids)]
    _, middle = arrange_track(enc.ids[starts[0] : starts[bars]].tolist(), voice, tok)
    ids = torch.tensor([(prompt + middle)[:window]])
    logits = model(ids)[0][0, len(prompt) - 1 : -1].float()
    return float(torch.nn.functional.cross_entropy(logits, ids[0, len(prompt) :]).item())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--baseline", default=None)
    parser.add_argument("--pieces", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--samples", type=Path, default=None, help="Also write 8-bar chorales here (for evaluate)."
    )
    parser.add_argument("--num-samples", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(1)
    records = [r for r in load_manifest(args.data) if r.split == "test"]
    rng = random.Random(0)
    by_style: dict[str, list] = {}
    for r in records:
        by_style.setdefault(r.style, []).append(r)
    loaded = get_model(args.model)
    result: dict[str, object] = {"model": args.model, "cpu": cpu_model()}
    held: dict[str, list] = {}
    for style in ("chorale", "renaissance", "folk"):
        chosen = rng.sample(by_style.get(style, []), min(args.pieces, len(by_style.get(style, []))))
        held[style] = [(load_score(r.midi_path(args.data)), style) for r in chosen]
        result[f"nll_per_note/{style}"] = nll_per_note(loaded, held[style])
        if args.baseline:
            result[f"baseline_nll_per_note/{style}"] = nll_per_note(get_model(args.baseline), held[style])
    tok = loaded.tokenizer
    own, other = [], []
    chorales = [tok.encode(s, style="chorale") for s, _ in held["chorale"]]
    chorales = [e for e in chorales if len(e.bar_starts) >= 3 and len(e.programs) == 4]
    for i, enc in enumerate(chorales):
        voice = list(enc.programs)[i % 4]
        try:
            own.append(part_nll(loaded, enc, voice, 2, enc))
            other.append(part_nll(loaded, enc, voice, 2, chorales[(i + 1) % len(chorales)]))
        except RequestError as exc:  # two bars past the context: skipped, counted
            result.setdefault("seam_skipped", []).append(str(exc)[:80])
    result["seam/own_context_nll"] = float(np.mean(own))
    result["seam/other_context_nll"] = float(np.mean(other))
    result["seam/own_lower_share"] = float(np.mean(np.array(own) < np.array(other)))
    result["seam/pieces"] = len(own)
    start = time.perf_counter()
    (song,) = generate_song(loaded, style="chorale", bars=16, seed=0)
    render_to_file(song.score, Path("/tmp/mt_chorale.wav"))
    result["chorale16_to_audio_s"] = time.perf_counter() - start
    result["chorale16_tracks"] = [(t.program, len(t.notes)) for t in song.score.tracks]
    if args.samples:
        args.samples.mkdir(parents=True, exist_ok=True)
        for seed in range(args.num_samples):
            (song,) = generate_song(loaded, style="chorale", bars=8, seed=seed)
            song.score.dump_midi(str(args.samples / f"chorale-{seed}.mid"))
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
