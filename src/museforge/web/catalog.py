"""The models the app serves: the shipped checkpoints whose family the app knows, loaded once and shared.

Each model is served in its production version (`museforge.models.versions`): a version the lab promotes, or
a rollback, is loaded at the next request that asks for the model, without a restart; a job already running
keeps the version it started with, and each song records the version that made it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from museforge.families import DEFAULT_MODEL, Family, Limits, get_family
from museforge.families.loaded import LoadedModel
from museforge.families.serving import get_model
from museforge.generation.batched import MAX_ROWS, BatchedDecoder
from museforge.models.checkpoint import CONFIG_FILE, WEIGHTS_FILE, CheckpointError
from museforge.models.versions import Registry
from museforge.models.zoo import ModelInfo, ModelNotFoundError, model_info, models_dir

log = logging.getLogger(__name__)


class UnknownModel(LookupError):
    """A request named a model the app does not serve; the message lists those it does."""


@dataclass
class ServedModel:
    info: ModelInfo
    family: Family
    loaded: LoadedModel

    def describe(self, limits: Limits) -> dict[str, Any]:
        """The model as the API lists it: what it is, what it can do (each operation with the names of the
        controls it takes, in the order a form shows them), and its controls."""
        controls = self.family.controls(self.info, limits)
        return {
            "name": self.info.name,
            "family": self.family.name,
            "family_label": self.family.label,
            "description": self.info.description,
            "parameters": self.info.parameters,
            "precision": self.loaded.precision,
            "styles": self.info.styles,
            "operations": [
                {
                    "name": o.name,
                    "label": o.label,
                    "needs_source": o.needs_source,
                    "description": o.description,
                    "controls": self.family.operation_controls(o.name, self.info),
                }
                for o in self.family.model_operations(self.loaded)
            ],
            "controls": [c.to_dict() for c in controls],
        }


class ModelCatalog:
    """Loads every servable checkpoint of a models folder at start-up; skipped ones are logged with a reason."""

    def __init__(
        self, root: Path | None, device: str, precision: str = "fp32", cache_dir: Path | None = None,
        batching: bool = False,
    ) -> None:  # fmt: skip
        self.skipped: dict[str, str] = {}
        self.models: dict[str, ServedModel] = {}
        self.device, self.precision, self.cache_dir = device, precision, cache_dir
        self.batching = batching  # decode concurrent jobs of a model together, for families that can
        self._switch = threading.Lock()
        try:
            folder = Path(root) if root is not None else models_dir()
        except ModelNotFoundError as exc:
            self.skipped["*"] = str(exc)
            log.warning("no models: %s", exc)
            return
        if not folder.is_dir():
            self.skipped["*"] = f"{folder} is not a folder"
            return
        self.registry = Registry((cache_dir or Path("var")) / "resource" / "registry", folder)
        for path in sorted(p for p in folder.iterdir() if p.is_dir()):
            if not (path / CONFIG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
                continue
            try:
                serving = self.registry.serving(path.name) or (path, 1)
                self.models[path.name] = self._load(path.name, *serving)
            except (CheckpointError, ValueError, OSError) as exc:
                self.skipped[path.name] = str(exc)
                log.warning("model %s not served: %s", path.name, exc)

    def _load(self, name: str, path: Path, version: int) -> ServedModel:
        info = model_info(path, name=name)
        family = get_family(info.family)
        # fp16 is an option of some families only: the others are served in fp32 whatever is set
        wanted = self.precision if family.half_precision else "fp32"
        loaded = replace(get_model(path, self.device, wanted, self.cache_dir), name=name, version=version)
        if self.batching and family.batched_decoding:  # the model of a full batch: many-row products
            loaded.batcher = BatchedDecoder(*loaded.sampler(MAX_ROWS))
        return ServedModel(info, family, loaded)

    def _current(self, name: str) -> ServedModel:
        """The served model in its production version, loading a newly promoted (or rolled back) one; if that
        cannot be loaded, the version serving now goes on serving and the reason is logged."""
        served = self.models[name]
        serving = self.registry.serving(name)
        if serving is None or serving[1] == served.loaded.version:
            return served
        with self._switch:
            served = self.models[name]
            if serving[1] != served.loaded.version:
                try:
                    served = self.models[name] = self._load(name, *serving)
                    log.info("model %s: now serving version %d", name, serving[1])
                except (CheckpointError, ValueError, OSError) as exc:
                    log.error("model %s: version %d cannot be served (%s)", name, serving[1], exc)
        return served

    @property
    def default_name(self) -> str | None:
        if DEFAULT_MODEL in self.models:
            return DEFAULT_MODEL
        return next(iter(self.models), None)

    def get(self, name: str | None) -> ServedModel:
        name = name or self.default_name
        if name is None or name not in self.models:
            known = ", ".join(self.models) or "none installed"
            raise UnknownModel(f"unknown model {name!r}; models: {known}")
        return self._current(name)
