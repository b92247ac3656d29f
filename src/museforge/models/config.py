"""A base for model configs: plain dataclasses that round-trip through JSON with their model's name."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Self


@dataclasses.dataclass
class ModelConfig:
    """Every model config names its model, so ``build_model(config.to_dict())`` knows what to build."""

    model_name: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: the fields plus ``"model"``, the registry name."""
        return {"model": self.model_name, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Inverse of ``to_dict``; unknown keys are an error so a typo in a config file is not ignored."""
        data = dict(data)
        name = data.pop("model", cls.model_name)
        if name != cls.model_name:
            raise ValueError(f"config is for model {name!r}, not {cls.model_name!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {', '.join(unknown)}")
        return cls(**data)
