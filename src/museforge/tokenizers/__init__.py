"""Representations of scores for the model families: REMI tokens, performance events and piano rolls.

``build_tokenizer("remi", {...})`` makes one from a name and a config dict; ``load_tokenizer(path)`` reads one
saved with ``save(path)`` (the JSON names the tokenizer, so callers need not know which it is).

The names below are imported from their modules on first use (`museforge._lazy`): a piano roll needs no
miditok, whose import (with Hugging Face's hub client) takes most of a second.
"""

from museforge._lazy import lazy_exports

_EXPORTS = {
    "LPD5_TRACKS": "pianoroll",
    "TOKENIZERS": "registry",
    "PerformanceConfig": "performance",
    "PerformanceTokenizer": "performance",
    "PianoRollConfig": "pianoroll",
    "PianoRollTokenizer": "pianoroll",
    "RemiConfig": "remi",
    "RemiEncoding": "remi",
    "RemiTokenizer": "remi",
    "TokenTokenizer": "base",
    "Tokenizer": "base",
    "TokenizerConfig": "base",
    "TrackSpec": "pianoroll",
    "build_tokenizer": "registry",
    "load_tokenizer": "registry",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "LPD5_TRACKS",
    "TOKENIZERS",
    "PerformanceConfig",
    "PerformanceTokenizer",
    "PianoRollConfig",
    "PianoRollTokenizer",
    "RemiConfig",
    "RemiEncoding",
    "RemiTokenizer",
    "TokenTokenizer",
    "Tokenizer",
    "TokenizerConfig",
    "TrackSpec",
    "build_tokenizer",
    "load_tokenizer",
]
