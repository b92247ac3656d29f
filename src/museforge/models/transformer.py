"""Decoder-only Transformer language model over REMI tokens (style and bar-attribute controls are tokens too).

Pre-norm blocks, rotary positions, ``scaled_dot_product_attention``, input/output embedding tying and a KV
cache so sampling costs one new position per step instead of a full pass over the prefix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

from museforge.models.config import ModelConfig
from museforge.models.modules import (
    NORM_KINDS,
    KVCache,
    RotaryEmbedding,
    TransformerBlock,
    attention_dtype,
    init_weights,
    make_norm,
    norm_function,
)

# Sizes per preset. tiny: unit tests. small: trains on a few CPU cores and samples fast there.
# base: for a GPU.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"d_model": 32, "n_layers": 2, "n_heads": 2, "d_ff": 64, "max_seq_len": 128},
    "small": {"d_model": 256, "n_layers": 4, "n_heads": 4, "d_ff": 1024, "max_seq_len": 1024},
    "base": {"d_model": 512, "n_layers": 8, "n_heads": 8, "d_ff": 2048, "max_seq_len": 2048},
}


@dataclass
class TransformerConfig(ModelConfig):
    """Sizes and options of `TransformerLM`; ``vocab_size`` comes from the tokenizer."""

    model_name: ClassVar[str] = "transformer"

    vocab_size: int
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 1024
    max_seq_len: int = 1024
    dropout: float = 0.1
    norm: str = "rms"
    bias: bool = False
    tie_weights: bool = True
    rope_base: float = 10_000.0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_seq_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(
                f"d_model ({self.d_model}) / n_heads ({self.n_heads}) must be an even integer head width"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.norm not in NORM_KINDS:
            raise ValueError(f"norm must be one of {NORM_KINDS}, got {self.norm!r}")

    @classmethod
    def preset(cls, name: str, vocab_size: int, **overrides: Any) -> TransformerConfig:
        """A named size (``tiny``, ``small``, ``base``) with any field overridden."""
        if name not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
        return cls(vocab_size=vocab_size, **{**PRESETS[name], **overrides})


class TransformerLM(nn.Module):
    """``forward(input_ids [B, T], past_kv) -> (logits [B, T, V], cache)``."""

    config_class = TransformerConfig

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.d_model)
        self.drop = nn.Dropout(c.dropout)
        self.rope = RotaryEmbedding(c.d_model // c.n_heads, c.max_seq_len, c.rope_base)
        self.blocks = nn.ModuleList(
            TransformerBlock(c.d_model, c.n_heads, c.d_ff, c.dropout, c.norm, c.bias)
            for _ in range(c.n_layers)
        )
        self.norm = make_norm(c.norm, c.d_model)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        init_weights(self, c.n_layers)
        if c.tie_weights:
            # One matrix maps tokens in and out: fewer parameters and better perplexity for small models.
            self.lm_head.weight = self.tok_emb.weight

    def new_cache(self) -> KVCache:
        """An empty cache sized for this model; buffers are allocated on first use (batch, dtype, device)."""
        return KVCache(
            n_layers=self.config.n_layers,
            max_len=self.config.max_seq_len,
            dtype=attention_dtype(self.tok_emb.weight),
        )

    def forward(
        self, input_ids: Tensor, past_kv: KVCache | None = None, use_cache: bool = False
    ) -> tuple[Tensor, KVCache | None]:
        """Logits for every position of ``input_ids``; with ``past_kv`` (or ``use_cache``) the steps are
        appended to that cache (a new one is made if needed) and attend to everything stored before them."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, time], got shape {tuple(input_ids.shape)}")
        cache = past_kv if past_kv is not None else (self.new_cache() if use_cache else None)
        x = self.drop(self.tok_emb(input_ids))  # [B, T, D]
        for i, block in enumerate(self.blocks):
            x = block(x, self.rope, cache, i)  # [B, T, D]
        if cache is not None:
            cache.advance(input_ids.shape[1])
        logits = self.lm_head(self.norm(x))  # [B, T, V]
        return logits, cache


class _Layer(NamedTuple):
    """One block's weights as `IncrementalDecoder` uses them."""

    norm1: Callable[[Tensor], Tensor]
    qkv: Tensor  # [3D, D]
    qkv_bias: Tensor | None
    proj: Tensor  # [D, D]
    proj_bias: Tensor | None
    norm2: Callable[[Tensor], Tensor]
    up: Tensor  # [F, D]
    up_bias: Tensor | None
    down: Tensor  # [D, F]
    down_bias: Tensor | None

    @classmethod
    def of(cls, block: TransformerBlock) -> _Layer:
        attn, ff = block.attn, block.ff
        return cls(
            norm_function(block.norm1), attn.qkv.weight, attn.qkv.bias, attn.proj.weight, attn.proj.bias,
            norm_function(block.norm2), ff.up.weight, ff.up.bias, ff.down.weight, ff.down.bias,
        )  # fmt: skip


class IncrementalDecoder:
    """``decoder(ids [B], cache) -> logits [B, V]``: `TransformerLM.forward` in eval mode for one new token per
    row appended to ``cache``, with exactly the same numbers.

    Sampling calls the model once per token, and at batch 1 most of that time is call overhead (submodule
    calls, parameter look-ups, dropout and reshapes that do nothing at T = 1) rather than arithmetic; this
    reads every weight once and then runs each token as a flat sequence of tensor ops (about a quarter less time
    per token than the modules' forward, on one CPU core). It holds references to the weights as they are when
    it is built: build one per generation.
    """

    def __init__(self, model: TransformerLM) -> None:
        if model.training:
            raise RuntimeError("the incremental decoder leaves out dropout: call model.eval() first")
        c = model.config
        self.n_heads, self.head_dim = c.n_heads, c.d_model // c.n_heads
        self.rope = model.rope
        self.embedding = model.tok_emb.weight  # [V, D]
        self.layers = [_Layer.of(block) for block in model.blocks]
        self.norm = norm_function(model.norm)
        self.head = model.lm_head.weight  # [V, D]

    def __call__(self, ids: Tensor, cache: KVCache) -> Tensor:
        x = F.embedding(ids, self.embedding)  # [B, D]
        b, d = x.shape
        cos, sin = self.rope.tables(cache.length, 1, x.dtype)  # [1, Dh] each
        for i, layer in enumerate(self.layers):
            qkv = F.linear(layer.norm1(x), layer.qkv, layer.qkv_bias)  # [B, 3D]
            qkv = qkv.view(b, 3, self.n_heads, 1, self.head_dim)  # [B, 3, H, 1, Dh]
            qk = RotaryEmbedding.rotate(qkv[:, :2], cos, sin)  # [B, 2, H, 1, Dh]
            k, v = cache.update(i, qk[:, 1], qkv[:, 2])  # [B, H, L+1, Dh], in the cache's dtype
            attn = F.scaled_dot_product_attention(qk[:, 0].to(k.dtype), k, v)  # [B, H, 1, Dh]
            x = x + F.linear(attn.view(b, d).to(x.dtype), layer.proj, layer.proj_bias)  # [B, D]
            h = F.gelu(F.linear(layer.norm2(x), layer.up, layer.up_bias))  # [B, F]
            x = x + F.linear(h, layer.down, layer.down_bias)  # [B, D]
        cache.advance(1)
        return F.linear(self.norm(x), self.head)  # [B, V]
