"""Uploads: send a MIDI/MusicXML/ABC/kern file to continue (or re-style, accompany) later."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, UploadFile
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from museforge.data.formats import InputError
from museforge.store import Upload
from museforge.web.actions import check_learn_style, choose_learning, own_upload, upload_audio
from museforge.web.deps import ApiWriterDep, Services, ServicesDep, Visitor, VisitorDep, record
from museforge.web.uploads import UnsupportedType, UploadTooLarge, accept_upload, upload_limits

router = APIRouter(prefix="/uploads", tags=["uploads"])


def upload_json(upload: Upload) -> dict:
    url = f"/api/v1/uploads/{upload.id}"
    return {**upload.to_dict(), "url": url, "page": f"/uploads/{upload.id}", "audio": f"{url}/audio.ogg"}


class LearnChoice(BaseModel):
    """Whether the lab may learn from an upload, and the owner's style label for it."""

    learn: bool = Field(
        description="Let museforge learn from this piece (false withdraws it from future datasets)."
    )
    style: str | None = Field(
        None, max_length=40, description="Its style, or null to let the lab's classifier say."
    )


def receive(
    services: Services,
    visitor: Visitor,
    file: UploadFile,
    tune: str | None = None,
    learn: LearnChoice | None = None,
) -> Upload:
    """Read at most the size limit (+1 byte to notice more), then check and parse; map refusals to 4xx. A choice
    to let the lab learn is checked before anything is stored."""
    if learn is not None:
        check_learn_style(services, learn.style)
    limits = upload_limits(services.settings)
    data = file.file.read(limits.max_file_bytes + 1)
    try:
        upload, _ = accept_upload(
            repo=services.repo, files=services.files, owner=visitor.owner, filename=file.filename or "upload",
            data=data, limits=limits, tune=tune,
        )  # fmt: skip
    except UploadTooLarge as exc:
        raise HTTPException(413, str(exc)) from exc
    except UnsupportedType as exc:
        raise HTTPException(415, str(exc)) from exc
    except InputError as exc:
        raise HTTPException(422, f"cannot read this file as music: {exc}") from exc
    record(services, visitor.owner, "upload", detail={"kind": upload.kind})
    if learn is not None and learn.learn:
        upload = choose_learning(services, upload, True, learn.style)
    return upload


@router.post("", status_code=201)
def create_upload(
    file: Annotated[UploadFile, File(description="MIDI, MusicXML, ABC or kern")],
    services: ServicesDep,
    visitor: ApiWriterDep,
    tune: Annotated[
        str | None, Form(description="ABC: the X: number of the tune to use (default: the first).")
    ] = None,
    learn: Annotated[bool, Form(description="Let museforge learn from this piece (off unless set).")] = False,
    style: Annotated[
        str | None, Form(max_length=40, description="Its style for the lab (default: guessed).")
    ] = None,
) -> dict:
    choice = LearnChoice(learn=learn, style=style or None)
    return upload_json(receive(services, visitor, file, tune or None, choice))


@router.patch("/{upload_id}")
def change_learning(
    upload_id: str, choice: LearnChoice, services: ServicesDep, visitor: ApiWriterDep
) -> dict:
    """Let museforge learn from an upload, or withdraw that: a withdrawn piece leaves every later dataset."""
    upload = own_upload(services, visitor, upload_id)
    return upload_json(choose_learning(services, upload, choice.learn, choice.style))


@router.get("")
def my_uploads(services: ServicesDep, visitor: VisitorDep) -> dict:
    return {"uploads": [upload_json(u) for u in services.repo.list_uploads(owner=visitor.owner)]}


@router.get("/{upload_id}")
def get_upload(upload_id: str, services: ServicesDep, visitor: VisitorDep) -> dict:
    return upload_json(own_upload(services, visitor, upload_id))


@router.get("/{upload_id}/audio.ogg", response_class=FileResponse)
def get_upload_audio(
    upload_id: str, services: ServicesDep, visitor: VisitorDep, tune: str | None = None
) -> FileResponse:
    """The upload (one of its tunes, for an ABC file of several) as audio (General MIDI SoundFont), rendered on
    first request."""
    upload = own_upload(services, visitor, upload_id)
    path = upload_audio(services, upload, tune)
    return FileResponse(path, media_type="audio/ogg", filename=f"{upload.id}.ogg")
