"""MuseMorphose: a Transformer-VAE over REMI bars (Wu & Yang 2021) with per-bar rhythm/polyphony control: new
music from its prior, continuations, and re-styles that keep a piece's melody and harmony."""

from museforge.families.musemorphose.family import MuseMorphoseFamily
from museforge.families.musemorphose.request import MuseMorphoseRequest

FAMILY = MuseMorphoseFamily()

__all__ = ["FAMILY", "MuseMorphoseFamily", "MuseMorphoseRequest"]
