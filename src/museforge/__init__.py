"""museforge: deep-learning symbolic music generation — datasets, tokenizers, models, metrics and a web app."""

__version__ = "0.1.0"
