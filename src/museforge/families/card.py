"""What a model card measures that depends on the family, and the options of a card's measurements.

`museforge.lab.model_card` writes every card; a family whose model is judged by more than (or other than) its
held-out token likelihood says so in `museforge.families.base.Family.card_measures`, and gives its own sections.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from museforge.defaults import DEFAULT_GUIDANCE

Log = Callable[[str], None]


@dataclass
class ShipOptions:
    name: str
    description: str  # the card's first line, for a musician: what `museforge models list` and the app show
    hardware: str  # where the run trained, e.g. "1× NVIDIA H100 (lent machine)"
    command: str = ""  # how the run was started; default: rebuilt from the run's run.json
    n_samples: int = 40  # generated pieces evaluated against the test split
    bars: int = 16  # length of each REMI or MuseGAN sample
    gan_bars: int = 20_000  # generated bars in a MuseGAN's metric table (as in the paper)
    seconds: float = 30.0  # length of each performance sample
    max_test_pieces: int = 300  # held-out pieces scored for NLL (MuseMorphose: segments)
    transfer_pieces: int = 100  # MuseMorphose: test pieces transferred per shift for control ρ / fidelity
    candidates: int = 8  # MuseMorphose: tries per bar of the card's last control measurement (1: none)
    guidance: float = DEFAULT_GUIDANCE  # MuseMorphose: guidance of the card's assisted measurements (0: none)
    seed: int = 0


@dataclass
class CardMeasures:
    """A family's own measurements for its card: the likelihood the card reports (None: it has none), its
    sections as Markdown lines, JSON files for ``evaluation/`` (name -> content), and the unit of its validation
    loss."""

    likelihood: dict[str, Any] | None
    lines: list[str]
    files: dict[str, Any] = field(default_factory=dict)
    loss_unit: str = "nats/token"


def fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        return "n/a" if value != value else f"{value:.{digits}f}"
    return "n/a" if value is None else str(value)
