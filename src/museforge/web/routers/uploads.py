"""Uploads: send a MIDI/MusicXML/ABC/kern file to continue (or re-style, accompany) later."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, UploadFile
from fastapi.responses import FileResponse

from museforge.data.formats import InputError
from museforge.store import Upload
from museforge.web.actions import own_upload, upload_audio
from museforge.web.deps import ApiWriterDep, Services, ServicesDep, Visitor, VisitorDep, record
from museforge.web.uploads import UnsupportedType, UploadTooLarge, accept_upload, upload_limits

router = APIRouter(prefix="/uploads", tags=["uploads"])


def upload_json(upload: Upload) -> dict:
    url = f"/api/v1/uploads/{upload.id}"
    return {**upload.to_dict(), "url": url, "page": f"/uploads/{upload.id}", "audio": f"{url}/audio.ogg"}


def receive(services: Services, visitor: Visitor, file: UploadFile, tune: str | None = None) -> Upload:
    """Read at most the size limit (+1 byte to notice more), then check and parse; map refusals to 4xx."""
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
    return upload


@router.post("", status_code=201)
def create_upload(
    file: Annotated[UploadFile, File(description="MIDI, MusicXML, ABC or kern")],
    services: ServicesDep,
    visitor: ApiWriterDep,
    tune: Annotated[
        str | None, Form(description="ABC: the X: number of the tune to use (default: the first).")
    ] = None,
) -> dict:
    return upload_json(receive(services, visitor, file, tune or None))


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
