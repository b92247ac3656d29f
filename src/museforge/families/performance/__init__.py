"""The Performance RNN: an LSTM over performance events (Oore et al. 2018), Magenta's note-density and
pitch-class controls fed to every step, its length counted in seconds."""

from museforge.families.performance.family import PerformanceFamily
from museforge.families.performance.request import PerformanceRequest

FAMILY = PerformanceFamily()

__all__ = ["FAMILY", "PerformanceFamily", "PerformanceRequest"]
