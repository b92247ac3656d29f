"""GET /api/v1/models: the served models, what each can do, and its controls."""

from __future__ import annotations

from fastapi import APIRouter

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
