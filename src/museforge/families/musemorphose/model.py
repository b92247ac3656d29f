"""MuseMorphose (Wu & Yang 2021): a Transformer VAE over REMI bars with bar-level attribute control.

A bidirectional Transformer encoder reads each bar's tokens on its own and gives one latent vector per bar
(mean and log-variance, read at the bar's first token, its ``Bar``). A causal Transformer decoder writes the
whole segment; **in-attention** conditioning adds each bar's condition — ``concat(z_k, rhythm_emb_k,
polyphony_emb_k)`` projected to d_model by one bias-free linear layer — to the hidden states of every token of
bar ``k`` before *every* decoder layer, so the condition cannot fade with depth.

The loss (`musemorphose_step`) is reconstruction NLL + β·KL, KL with free bits per latent dimension and β on a
cyclical schedule (`beta_at`). Shape letters: B batch, N bars, Lb tokens per bar (encoder), T decoder steps,
D model width, Z latent width, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from museforge.models.config import ModelConfig
from museforge.models.modules import (
    NORM_KINDS,
    FeedForward,
    IncrementalDecoder,
    KVCache,
    RotaryEmbedding,
    TransformerBlock,
    attention_dtype,
    init_weights,
    make_norm,
)

IGNORE_INDEX = -100

# tiny: unit tests. small: trains on a few CPU cores, transfers 16 bars in seconds on 2 cores. base: the paper.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "d_model": 32, "n_enc_layers": 1, "n_dec_layers": 2, "n_heads": 2, "d_ff": 64, "d_latent": 16,
        "d_attr_emb": 8, "n_bars": 4, "max_dec_len": 512, "beta_warmup_steps": 0, "beta_cycle_steps": 20,
    },
    "small": {
        "d_model": 256, "n_enc_layers": 4, "n_dec_layers": 4, "n_heads": 4, "d_ff": 1024, "d_latent": 64,
        "d_attr_emb": 32, "beta_warmup_steps": 2000, "beta_cycle_steps": 2000,
    },
    "base": {},
}  # fmt: skip


@dataclass
class MuseMorphoseConfig(ModelConfig):
    """Sizes, loss and sampling defaults of `MuseMorphose`; the defaults are the paper's (79.4M parameters)."""

    model_name: ClassVar[str] = "musemorphose"

    vocab_size: int
    d_model: int = 512
    n_enc_layers: int = 12
    n_dec_layers: int = 12
    n_heads: int = 8
    d_ff: int = 2048
    d_latent: int = 128  # per bar
    d_attr_emb: int = 64  # each of the rhythm and polyphony embeddings
    n_attr_classes: int = 8
    n_bars: int = 16  # bars per training segment and per decoding window
    max_bar_tokens: int = 128  # encoder tokens per bar (longer bars are cut for the encoder only)
    max_dec_len: int = 1280  # longest training segment (decoder tokens)
    dropout: float = 0.1
    norm: str = "layer"
    rope_base: float = 10_000.0
    # loss
    free_bits: float = 0.25  # KL per dimension below this costs nothing (keeps every dimension in use)
    beta_max: float = 1.0
    beta_warmup_steps: int = 10_000  # β = 0 for these optimizer steps
    beta_cycle_steps: int = 5_000  # then cycles: β ramps 0 → β_max over the first half, holds the second
    # sampling
    temperature: float = 1.2
    top_p: float = 0.9
    # classes used where a generation plan leaves a bar open: the training data's most frequent ones
    default_rhythm: int = 4
    default_polyphony: int = 0

    def __post_init__(self) -> None:
        for name in (
            "vocab_size", "d_model", "n_enc_layers", "n_dec_layers", "n_heads", "d_ff", "d_latent",
            "d_attr_emb", "n_attr_classes", "n_bars", "max_bar_tokens", "max_dec_len", "beta_cycle_steps",
        ):  # fmt: skip
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
        if self.free_bits < 0 or self.beta_max < 0 or self.beta_warmup_steps < 0:
            raise ValueError("free_bits, beta_max and beta_warmup_steps must be >= 0")
        if not self.temperature > 0 or not 0.0 < self.top_p <= 1.0:
            raise ValueError(
                f"temperature must be > 0 and top_p in (0, 1], got {self.temperature}, {self.top_p}"
            )
        for name in ("default_rhythm", "default_polyphony"):
            if not 0 <= getattr(self, name) < self.n_attr_classes:
                raise ValueError(f"{name} must be in 0..{self.n_attr_classes - 1}, got {getattr(self, name)}")

    @property
    def max_seq_len(self) -> int:
        """Longest decoder sequence sampling can reach: a style token plus ``n_bars`` full bars and an EOS
        (sampling caps a bar at ``max_bar_tokens``; a forced original bar may hold up to twice that)."""
        return 2 + self.n_bars * (2 * self.max_bar_tokens + 8)

    @classmethod
    def preset(cls, name: str, vocab_size: int, **overrides: Any) -> MuseMorphoseConfig:
        """A named size (``tiny``, ``small``, ``base``) with any field overridden."""
        if name not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
        return cls(vocab_size=vocab_size, **{**PRESETS[name], **overrides})


def beta_at(step: int, config: MuseMorphoseConfig) -> float:
    """Cyclical KL weight (the paper's schedule): 0 during the warm-up, then per cycle a linear ramp to
    ``beta_max`` over its first half and ``beta_max`` over its second half."""
    if step < config.beta_warmup_steps:
        return 0.0
    progress = ((step - config.beta_warmup_steps) % config.beta_cycle_steps) / config.beta_cycle_steps
    return config.beta_max * min(1.0, 2.0 * progress)


def kl_per_dim(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, σ²) ‖ N(0, 1)) of every latent dimension, same shape as ``mu`` (each entry ≥ 0)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def free_bits_kl(kl: Tensor, free_bits: float, valid: Tensor | None = None) -> Tensor:
    """Mean KL per dimension where each dimension's KL (averaged over the bars of the batch) below
    ``free_bits`` is raised to it: no gradient pushes a dimension under the threshold, so none collapses.

    ``kl`` [B, N, Z]; ``valid`` [B, N] marks real bars.
    """
    if valid is None:
        per_dim = kl.flatten(0, -2).mean(0)  # [Z]
    else:
        w = valid.to(kl.dtype).unsqueeze(-1)  # [B, N, 1]
        per_dim = (kl * w).flatten(0, -2).sum(0) / w.sum().clamp(min=1.0)  # [Z]
    return per_dim.clamp(min=free_bits).mean()


class EncoderBlock(nn.Module):
    """Pre-norm bidirectional self-attention block with a key padding mask (a bar's tokens see each other)."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, norm: str) -> None:
        super().__init__()
        self.n_heads, self.head_dim, self.dropout = n_heads, d_model // n_heads, dropout
        self.norm1 = make_norm(norm, d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)
        self.norm2 = make_norm(norm, d_model)
        self.ff = FeedForward(d_model, d_ff, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor, rope: RotaryEmbedding) -> Tensor:
        b, t, d = x.shape  # x: [B', T, D]; mask: [B', T] True = real token
        qkv = self.qkv(self.norm1(x)).view(b, t, 3, self.n_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [B', H, T, Dh]
        q, k = rope(q), rope(k)
        attn = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask[:, None, None, :], dropout_p=self.dropout if self.training else 0.0
        )  # [B', H, T, Dh]
        x = x + self.drop(self.proj(attn.transpose(1, 2).reshape(b, t, d)))
        return x + self.ff(self.norm2(x))  # [B', T, D]


class MuseMorphose(nn.Module):
    """``forward(batch) -> (logits [B, T, V], mu [B, N, Z], logvar [B, N, Z])`` with the batch of
    `museforge.data.musemorphose.collate_segments`; `encode`, `conditions` and `decode` serve generation."""

    config_class = MuseMorphoseConfig

    def __init__(self, config: MuseMorphoseConfig) -> None:
        super().__init__()
        self.config = c = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.d_model)
        self.drop = nn.Dropout(c.dropout)
        head_dim = c.d_model // c.n_heads
        self.enc_rope = RotaryEmbedding(head_dim, c.max_bar_tokens)
        self.dec_rope = RotaryEmbedding(head_dim, max(c.max_seq_len, c.max_dec_len), c.rope_base)
        self.encoder = nn.ModuleList(
            EncoderBlock(c.d_model, c.n_heads, c.d_ff, c.dropout, c.norm) for _ in range(c.n_enc_layers)
        )
        self.enc_norm = make_norm(c.norm, c.d_model)
        self.to_latent = nn.Linear(c.d_model, 2 * c.d_latent)  # -> mu, logvar
        self.rhythm_emb = nn.Embedding(c.n_attr_classes, c.d_attr_emb)
        self.polyphony_emb = nn.Embedding(c.n_attr_classes, c.d_attr_emb)
        self.cond_proj = nn.Linear(c.d_latent + 2 * c.d_attr_emb, c.d_model, bias=False)
        self.decoder = nn.ModuleList(
            TransformerBlock(c.d_model, c.n_heads, c.d_ff, c.dropout, c.norm) for _ in range(c.n_dec_layers)
        )
        self.dec_norm = make_norm(c.norm, c.d_model)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        init_weights(self, c.n_enc_layers + c.n_dec_layers)
        self.lm_head.weight = self.tok_emb.weight

    def embed(self, ids: Tensor) -> Tensor:
        """Token embeddings scaled by sqrt(d_model) (as the paper's code does), so the per-bar conditions added
        to them do not drown the tokens at initialisation."""
        return self.tok_emb(ids) * self.config.d_model**0.5

    def new_cache(self) -> KVCache:
        """An empty decoder cache; float32 for half-precision weights on a CPU (see `attention_dtype`)."""
        return KVCache(
            n_layers=self.config.n_dec_layers,
            max_len=self.dec_rope.max_seq_len,
            dtype=attention_dtype(self.tok_emb.weight),
        )

    def incremental_decoder(self) -> IncrementalDecoder:
        """`decode` of one token per row with its condition [B, D], as a flat step (see `IncrementalDecoder`)."""
        return IncrementalDecoder(
            self.tok_emb, self.decoder, self.dec_norm, self.lm_head, self.dec_rope, self.config.d_model**0.5
        )

    def encode(self, bar_ids: Tensor, bar_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior ``(mu, logvar)`` [B, N, Z] of bars ``bar_ids`` [B, N, Lb] (``bar_mask`` True = token).

        Each bar is encoded alone, so a bar's latent depends on that bar's tokens only.
        """
        b, n, lb = bar_ids.shape
        if lb > self.config.max_bar_tokens:
            raise ValueError(f"bars hold {lb} tokens; the encoder reads at most {self.config.max_bar_tokens}")
        x = self.drop(self.embed(bar_ids.reshape(b * n, lb)))  # [B*N, Lb, D]
        mask = bar_mask.reshape(b * n, lb).clone()
        mask[:, 0] = True  # an empty (padding) bar still attends to its first slot: no all-masked rows
        for block in self.encoder:
            x = block(x, mask, self.enc_rope)
        h = self.enc_norm(x[:, 0])  # [B*N, D]: the bar's first token (its Bar) summarises it
        mu, logvar = self.to_latent(h).view(b, n, 2, -1).unbind(2)  # each [B, N, Z]
        return mu, logvar

    def conditions(self, z: Tensor, rhythm: Tensor, polyphony: Tensor) -> Tensor:
        """In-attention condition of each bar [B, N, D] from latents [B, N, Z] and classes [B, N]."""
        z = z.to(self.cond_proj.weight.dtype)  # float32 latents (noise, interpolations) meet a float16 model
        cond = torch.cat([z, self.rhythm_emb(rhythm), self.polyphony_emb(polyphony)], dim=-1)
        return self.cond_proj(cond)  # [B, N, D]

    @staticmethod
    def token_conditions(cond: Tensor, dec_bar: Tensor) -> Tensor:
        """The condition of each decoder token [B, T, D]: that of its bar ``dec_bar`` [B, T]."""
        index = dec_bar.clamp(0, cond.shape[1] - 1).unsqueeze(-1).expand(-1, -1, cond.shape[-1])
        return cond.gather(1, index)  # [B, T, D]

    def decode(
        self, dec_ids: Tensor, token_cond: Tensor, past_kv: KVCache | None = None
    ) -> tuple[Tensor, KVCache | None]:
        """Logits [B, T, V] of decoder steps ``dec_ids`` [B, T] with their conditions [B, T, D]; with a cache
        the steps are appended to it (one step at a time when sampling)."""
        x = self.drop(self.embed(dec_ids))  # [B, T, D]
        token_cond = token_cond.to(x.dtype)
        for i, block in enumerate(self.decoder):
            x = block(x + token_cond, self.dec_rope, past_kv, i)  # in-attention: before every layer
        if past_kv is not None:
            past_kv.advance(dec_ids.shape[1])
        return self.lm_head(self.dec_norm(x)), past_kv  # [B, T, V]

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Teacher-forced pass: encode the bars, sample z (the mean when not training), decode."""
        mu, logvar = self.encode(batch["bar_ids"], batch["bar_mask"])
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu  # [B, N, Z]
        cond = self.conditions(z, batch["rhythm"], batch["polyphony"])
        logits, _ = self.decode(batch["dec_ids"], self.token_conditions(cond, batch["dec_bar"]))
        return logits, mu, logvar
