"""GET /api/v1/models: the served models, what each can do, and its controls; and each model's versions."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from museforge.web.catalog import UnknownModel
from museforge.web.deps import ServicesDep

router = APIRouter(prefix="/models", tags=["models"])


@router.get("")
def list_models(services: ServicesDep) -> dict:
    """Every model the app serves, with its operations and the controls a request may set."""
    catalog = services.catalog
    return {
        "default": catalog.default_name,
        "models": [m.describe(services.limits) for m in catalog.models.values()],
        "unavailable": catalog.skipped,
    }


@router.get("/{name}/versions")
def model_versions(name: str, services: ServicesDep) -> dict:
    """A model's versions, newest first: status, parent, the data each saw, its metrics and its gate report."""
    try:
        served = services.catalog.get(name)
    except UnknownModel as exc:
        raise HTTPException(404, str(exc)) from exc
    versions = services.catalog.registry.versions(name)
    return {
        "model": name,
        "serving": served.loaded.version,
        "versions": [v.to_dict() for v in reversed(versions)],
    }
