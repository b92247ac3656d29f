"""Personal defaults: the generate form opens on the model and, per model, the style a listener liked most (their
verdicts on their songs summed, `museforge.lab.feedback.utilities`; only what they liked on balance counts)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from museforge.lab.feedback import utilities
from museforge.store import Repository


@dataclass
class Favourites:
    model: str | None = None
    styles: dict[str, str] = field(default_factory=dict)  # model -> style

    def apply(self, described: list[dict[str, Any]]) -> None:
        """Set each described model's style control to the listener's favourite style (when it offers it)."""
        for model in described:
            style = self.styles.get(model["name"])
            for control in model["controls"]:
                if control["name"] == "style" and style in [
                    value for value, _ in control.get("choices") or []
                ]:
                    control["default"] = style


def favourites(repo: Repository, listener: str, models: list[str]) -> Favourites:
    by_model: dict[str, float] = defaultdict(float)
    by_style: dict[tuple[str, str], float] = defaultdict(float)
    for model in models:
        signals = repo.list_feedback(model=model, listener=listener, limit=2000)
        styles = {s.song_id: s.request.get("style") for s in signals}
        for (_, song_id), verdict in utilities(signals).items():
            by_model[model] += verdict
            if styles.get(song_id):
                by_style[(model, styles[song_id])] += verdict
    liked = {m: v for m, v in by_model.items() if v > 0}
    best_styles: dict[str, tuple[float, str]] = {}
    for (model, style), v in by_style.items():
        if v > 0 and v > best_styles.get(model, (0.0, ""))[0]:
            best_styles[model] = (v, style)
    return Favourites(max(liked, key=lambda m: liked[m]) if liked else None,
                      {m: s for m, (_, s) in best_styles.items()})  # fmt: skip
