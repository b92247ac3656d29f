"""MuseGAN: a multi-track piano-roll WGAN-GP (Dong et al. 2018) with genre control, chained 4-bar phrases,
latent walks and track-conditional accompaniment."""

from museforge.families.musegan.family import MuseGANFamily
from museforge.families.musegan.request import MuseGANRequest

FAMILY = MuseGANFamily()

__all__ = ["FAMILY", "MuseGANFamily", "MuseGANRequest"]
