"""Generation: pure sampling functions over logits and the autoregressive loop token models share."""

from museforge.generation.decode import Generated, generate_transformer, make_generator
from museforge.generation.sampling import apply_mask, apply_temperature, sample, top_k_filter, top_p_filter

__all__ = [
    "Generated",
    "apply_mask",
    "apply_temperature",
    "generate_transformer",
    "make_generator",
    "sample",
    "top_k_filter",
    "top_p_filter",
]
