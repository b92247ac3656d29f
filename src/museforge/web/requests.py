"""The JSON API's and the forms' generation request, derived from the families' request types.

`JobRequest` holds every family's options once (with their descriptions) plus what the web adds: the model, the
operation and the source piece. Which options a model takes, their defaults and their bounds are its family's:
`family_options` hands the given ones to it, and the family refuses the ones it does not take by name.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from museforge.families import FAMILIES

WEB_FIELDS = ("model", "source_upload", "source_tune", "source_song")


def _family_fields() -> dict[str, Any]:
    """Every family's request fields once. One name must mean one type: the JSON API parses a field before it
    knows the model, so two families giving a name different types is refused here, at import."""
    fields: dict[str, Any] = {}
    owners: dict[str, tuple[str, Any]] = {}
    for family in FAMILIES:
        for name, info in family.request.model_fields.items():
            first, annotation = owners.setdefault(name, (family.name, info.annotation | None))
            if annotation != info.annotation | None:
                raise TypeError(
                    f"request field {name!r} is {annotation} for {first} but {info.annotation} for "
                    f"{family.name}: one name, one type (rename one of them)"
                )
            if name not in fields:
                default = "generate" if name == "operation" else None
                parsers = [
                    m for m in info.metadata if isinstance(m, BeforeValidator)
                ]  # "5-8" as well as [5, 6]
                kind = Annotated[info.annotation | None, *parsers] if parsers else info.annotation | None
                fields[name] = (kind, Field(default, description=info.description))
    return fields


JobRequest: type[BaseModel] = create_model(
    "JobRequest",
    __config__=ConfigDict(extra="forbid", allow_inf_nan=False),
    __doc__="A generation request, as the JSON API and the forms send it. Which fields apply depends on the "
    "model's family; a field the family does not take is refused with a message naming the ones it does.",
    model=(str | None, Field(None, description="Model name (default: the default model).")),
    source_upload=(
        str | None,
        Field(None, description="An upload of yours to continue, re-style or accompany."),
    ),
    source_tune=(
        str | None,
        Field(
            None,
            description="The X: number of the tune to use when source_upload is an ABC file of several tunes.",
        ),
    ),
    source_song=(str | None, Field(None, description="A song of yours to continue, re-style or accompany.")),
    **_family_fields(),
)


def family_options(req: BaseModel) -> dict[str, Any]:
    """The family's options a request gave (an explicit null counts as not given)."""
    return {
        k: getattr(req, k)
        for k in req.model_fields_set
        if k not in WEB_FIELDS and getattr(req, k) is not None
    }
