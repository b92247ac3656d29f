"""Generation speed: our Transformer's sampling loop vs Hugging Face GPT-2 `generate()`, and request-to-WAV time.

Prints one JSON line. Tokens/s are new tokens per second over the whole batch, at batch 1 and 8, with and
without the KV cache, unmasked (the raw loop), with the weights in float32 and in float16 (`get_model`'s
``precision``; attention stays float32). GPT-2 has the same width, depth, heads, context and vocabulary, runs in
the same two precisions and samples the same number of tokens (`min_new_tokens` = `max_new_tokens`, no EOS).
Request-to-WAV is `generate_song` (16 bars, REMI grammar, sampling) plus `render_to_file` on the CPU, model
already loaded, at the precision the app and CLI use by default (``auto``). Every speed is the best of
``--repeats`` runs, interleaved, because a shared CPU's speed drifts.
Uses the shipped `remi-transformer` when there is one, else the `small` preset with random weights.

    .venv/bin/python benchmarks/bench_generate.py [--threads 1] [--tokens 256] [--repeats 3]

Needs the `bench` extra (`pip install -e '.[bench]'`) for `transformers`.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import tempfile
import time
from pathlib import Path

import torch

from museforge.audio import render_to_file
from museforge.families import DEFAULT_MODEL
from museforge.families.loaded import LoadedModel
from museforge.families.remi.model import TransformerConfig, TransformerLM
from museforge.families.serving import generate_song, get_model
from museforge.generation import generate_transformer
from museforge.machine import cpu_model
from museforge.models.checkpoint import save_checkpoint
from museforge.models.zoo import resolve_model
from museforge.tokenizers import build_tokenizer


def load_model(tmp: Path, precision: str) -> tuple[LoadedModel, str]:
    try:
        path = resolve_model(DEFAULT_MODEL)
        source = f"shipped {DEFAULT_MODEL}"
    except ValueError:
        path = tmp / "small"
        source = "small preset, random weights"
        if not path.is_dir():
            tok = build_tokenizer("remi")
            torch.manual_seed(0)
            model = TransformerLM(TransformerConfig.preset("small", vocab_size=tok.vocab_size, dropout=0.0))
            save_checkpoint(path, model, tokenizer=tok.state_dict(), step=0, metrics={})
    return get_model(path, "cpu", precision), source


def ours(model: TransformerLM, prompt: list[int], batch: int, tokens: int, cache: bool) -> float:
    start = time.perf_counter()
    generate_transformer(model, prompt, tokens, num_samples=batch, seed=0, use_cache=cache)
    return batch * tokens / (time.perf_counter() - start)


def hf_gpt2(config: TransformerConfig) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        vocab_size=config.vocab_size,
        n_positions=config.max_seq_len,
        n_embd=config.d_model,
        n_layer=config.n_layers,
        n_head=config.n_heads,
        n_inner=config.d_ff,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    return GPT2LMHeadModel(cfg).eval()


def hf(model: torch.nn.Module, prompt: list[int], batch: int, tokens: int) -> float:
    ids = torch.tensor([prompt] * batch)
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            do_sample=True,
            top_k=0,
            top_p=1.0,
            use_cache=True,
        )
    assert out.shape == (batch, len(prompt) + tokens)
    return batch * tokens / (time.perf_counter() - start)


def best(runs: list[float]) -> float:
    return round(max(runs), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=256, help="new tokens per sequence in the speed runs")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each speed; the best one counts")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        loaded = {p: load_model(Path(tmp), p) for p in ("fp32", "fp16", "auto")}
        source = loaded["fp32"][1]
        models = {p: loaded[p][0].sampler(1)[0] for p in ("fp32", "fp16")}
        tokenizer = loaded["fp32"][0].tokenizer
        config = models["fp32"].config
        prompt = [tokenizer.style_token("folk")]
        gpt2 = {"fp32": hf_gpt2(config)}
        gpt2["fp16"] = copy.deepcopy(gpt2["fp32"]).half()
        for p in ("fp32", "fp16"):  # warm-up
            ours(models[p], prompt, 1, 16, True)
            hf(gpt2[p], prompt, 1, 16)
        runs: dict[str, list[float]] = {}
        for _ in range(args.repeats):
            for p in ("fp32", "fp16"):
                for batch in (1, 8):
                    runs.setdefault(f"ours_{p}_kv_b{batch}_tok_s", []).append(
                        ours(models[p], prompt, batch, args.tokens, True)
                    )
                    runs.setdefault(f"hf_gpt2_{p}_b{batch}_tok_s", []).append(
                        hf(gpt2[p], prompt, batch, args.tokens)
                    )
        for batch in (1, 8):  # without the cache each step re-reads the prefix: one run says enough
            runs[f"ours_fp32_nocache_b{batch}_tok_s"] = [
                ours(models["fp32"], prompt, batch, args.tokens, False)
            ]
        result: dict[str, object] = {
            "benchmark": "generate",
            "cpu": cpu_model(),  # speeds and their ratios differ between CPUs: say which one measured them
            "model": source,
            "parameters": sum(p.numel() for p in models["fp32"].parameters()),
            "config": {
                k: getattr(config, k) for k in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff")
            },
            "hf_gpt2_parameters": sum(p.numel() for p in gpt2["fp32"].parameters()),
            "torch_threads": torch.get_num_threads(),
            "new_tokens": args.tokens,
            "repeats": args.repeats,
            **{k: best(v) for k, v in sorted(runs.items())},
        }
        for p in ("fp32", "fp16"):
            for batch in (1, 8):
                ratio = result[f"ours_{p}_kv_b{batch}_tok_s"] / result[f"hf_gpt2_{p}_b{batch}_tok_s"]
                result[f"speedup_{p}_vs_hf_{p}_b{batch}"] = round(ratio, 2)
        result["speedup_fp16_vs_hf_fp32_b1"] = round(
            result["ours_fp16_kv_b1_tok_s"] / result["hf_gpt2_fp32_b1_tok_s"], 2
        )
        served = loaded["auto"][0]
        result["request_precision"] = served.sampler(1)[1]
        result["request_precision_decision"] = str(served.precision_decision)
        generate_song(served, style="folk", bars=2, seed=0)  # warm-up
        timings = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            song = generate_song(served, style="folk", bars=16, seed=0)[0]
            sampled = time.perf_counter() - start
            render_to_file(song.score, Path(tmp) / "song.wav")
            timings.append((time.perf_counter() - start, sampled))
        total, sampled = min(timings)
        result["request_to_wav_16_bars_s"] = round(total, 2)
        result["request_sampling_s"] = round(sampled, 2)
        result["request_new_tokens"] = song.new_tokens
        result["request_tok_s"] = round(song.new_tokens / sampled, 1)
        result["peak_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
