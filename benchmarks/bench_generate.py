"""Generation speed: our Transformer's sampling loop vs Hugging Face GPT-2 `generate()`, and request-to-WAV time.

Prints one JSON line. Tokens/s are new tokens per second over the whole batch, at batch 1 and 8, with and
without the KV cache, unmasked (the raw loop); GPT-2 has the same width, depth, heads, context and vocabulary
and samples the same number of tokens (`min_new_tokens` = `max_new_tokens`, no EOS). Request-to-WAV is
`generate_song` (16 bars, REMI grammar, sampling) plus `render_to_file` on the CPU, model already loaded.
Uses the shipped `remi-transformer` when there is one, else the `small` preset with random weights.

    .venv/bin/python benchmarks/bench_generate.py [--threads 1] [--tokens 256]

Needs the `bench` extra (`pip install -e '.[bench]'`) for `transformers`.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch

from museforge.audio import render_to_file
from museforge.generation import generate_transformer
from museforge.generation.api import LoadedModel, generate_song, get_model
from museforge.models import TransformerConfig, TransformerLM
from museforge.models.checkpoint import save_checkpoint
from museforge.models.zoo import DEFAULT_MODEL, resolve_model
from museforge.tokenizers import build_tokenizer


def load_model(tmp: Path) -> tuple[LoadedModel, str]:
    try:
        path = resolve_model(DEFAULT_MODEL)
        source = f"shipped {DEFAULT_MODEL}"
    except ValueError:
        tok = build_tokenizer("remi")
        torch.manual_seed(0)
        model = TransformerLM(TransformerConfig.preset("small", vocab_size=tok.vocab_size, dropout=0.0))
        path = save_checkpoint(tmp / "small", model, tokenizer=tok.state_dict(), step=0, metrics={})
        source = "small preset, random weights"
    return get_model(path, "cpu"), source


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=256, help="new tokens per sequence in the speed runs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        loaded, source = load_model(Path(tmp))
        model = loaded.checkpoint.model
        config = model.config
        prompt = [loaded.tokenizer.style_token("folk")]
        ours(model, prompt, 1, 16, True)  # warm-up
        result: dict[str, object] = {
            "benchmark": "generate",
            "model": source,
            "parameters": sum(p.numel() for p in model.parameters()),
            "config": {
                k: getattr(config, k) for k in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff")
            },
            "torch_threads": torch.get_num_threads(),
            "new_tokens": args.tokens,
        }
        for batch in (1, 8):
            result[f"ours_kv_b{batch}_tok_s"] = round(ours(model, prompt, batch, args.tokens, True), 1)
            result[f"ours_nocache_b{batch}_tok_s"] = round(ours(model, prompt, batch, args.tokens, False), 1)
        gpt2 = hf_gpt2(config)
        result["hf_gpt2_parameters"] = sum(p.numel() for p in gpt2.parameters())
        hf(gpt2, prompt, 1, 16)  # warm-up
        for batch in (1, 8):
            result[f"hf_gpt2_b{batch}_tok_s"] = round(hf(gpt2, prompt, batch, args.tokens), 1)
        result["speedup_vs_hf_b1"] = round(result["ours_kv_b1_tok_s"] / result["hf_gpt2_b1_tok_s"], 2)
        result["speedup_vs_hf_b8"] = round(result["ours_kv_b8_tok_s"] / result["hf_gpt2_b8_tok_s"], 2)
        start = time.perf_counter()
        song = generate_song(loaded, style="folk", bars=16, seed=0)[0]
        sampled = time.perf_counter() - start
        render_to_file(song.score, Path(tmp) / "song.wav")
        result["request_to_wav_16_bars_s"] = round(time.perf_counter() - start, 2)
        result["request_sampling_s"] = round(sampled, 2)
        result["request_new_tokens"] = song.new_tokens
        result["request_tok_s"] = round(song.new_tokens / sampled, 1)
        result["peak_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
