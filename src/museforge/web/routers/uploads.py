"""Uploads: send a MIDI/MusicXML/ABC/kern file to continue (or re-style, accompany) later."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, HTTPException, UploadFile

from museforge.data.formats import InputError
from museforge.store import Upload
from museforge.web.actions import own_upload
from museforge.web.deps import ApiWriterDep, Services, ServicesDep, Visitor, VisitorDep, record
from museforge.web.uploads import UnsupportedType, UploadTooLarge, accept_upload

router = APIRouter(prefix="/uploads", tags=["uploads"])


def upload_json(upload: Upload) -> dict:
    return {**upload.to_dict(), "url": f"/api/v1/uploads/{upload.id}", "page": f"/uploads/{upload.id}"}


def receive(services: Services, visitor: Visitor, file: UploadFile) -> Upload:
    """Read at most the size limit (+1 byte to notice more), then check and parse; map refusals to 4xx."""
    limit = int(services.settings.max_upload_mb * 2**20)
    data = file.file.read(limit + 1)
    try:
        upload, _ = accept_upload(
            repo=services.repo, files=services.files, owner=visitor.owner, filename=file.filename or "upload",
            data=data, max_bytes=limit, max_notes=services.settings.max_upload_notes,
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
) -> dict:
    return upload_json(receive(services, visitor, file))


@router.get("")
def my_uploads(services: ServicesDep, visitor: VisitorDep) -> dict:
    return {"uploads": [upload_json(u) for u in services.repo.list_uploads(owner=visitor.owner)]}


@router.get("/{upload_id}")
def get_upload(upload_id: str, services: ServicesDep, visitor: VisitorDep) -> dict:
    return upload_json(own_upload(services, visitor, upload_id))
