"""The REMI Transformer: a decoder-only Transformer over REMI tokens (Huang & Yang 2020), led by a style token,
shaped bar by bar with rhythm/polyphony classes forced through the REMI grammar."""

from museforge.families.remi.family import RemiFamily
from museforge.families.remi.request import RemiRequest

FAMILY = RemiFamily()

__all__ = ["FAMILY", "RemiFamily", "RemiRequest"]
