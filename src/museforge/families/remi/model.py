"""Decoder-only Transformer language model over REMI tokens (style and bar-attribute controls are tokens too).

Pre-norm blocks, rotary positions, ``scaled_dot_product_attention``, input/output embedding tying and a KV
cache so sampling costs one new position per step instead of a full pass over the prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from museforge.models.config import ModelConfig
from museforge.models.modules import (
    NORM_KINDS,
    IncrementalDecoder,
    KVCache,
    RotaryEmbedding,
    TransformerBlock,
    attention_dtype,
    init_weights,
    make_norm,
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

    def incremental_decoder(self) -> IncrementalDecoder:
        """A one-token-per-row decoding step with this model's current weights (see `IncrementalDecoder`)."""
        return IncrementalDecoder(self.tok_emb, self.blocks, self.norm, self.lm_head, self.rope)

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
