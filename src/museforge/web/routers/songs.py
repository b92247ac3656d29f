"""Songs: metadata, MIDI, audio, piano roll, rating, share links, my history."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field

from museforge.web.actions import AUDIO_TYPES, own_song, readable_song, share_song, song_file, song_json
from museforge.web.deps import ApiWriterDep, ServicesDep, VisitorDep, record

router = APIRouter(prefix="/songs", tags=["songs"])
Share = Annotated[str | None, Query(description="The share token of a song shared by link.")]


class RatingIn(BaseModel):
    value: int = Field(ge=1, le=5, description="1 to 5 stars.")


class FeedbackIn(BaseModel):
    kind: Literal["like", "dislike", "replay", "skip", "regenerate"] = Field(
        description="like / dislike; replay: played again; skip: stopped early; regenerate: asked for another "
        "song right after hearing this one."
    )


@router.get("")
def my_songs(services: ServicesDep, visitor: VisitorDep, limit: int = 50) -> dict:
    """My history, newest first."""
    songs = services.repo.list_songs(owner=visitor.owner, limit=max(1, min(limit, 500)))
    return {"songs": [song_json(services, s, visitor) for s in songs]}


@router.get("/{song_id}")
def get_song(song_id: str, services: ServicesDep, visitor: VisitorDep, share: Share = None) -> dict:
    return song_json(services, readable_song(services, visitor, song_id, share), visitor, share)


@router.get("/{song_id}/midi", response_class=FileResponse)
def get_midi(song_id: str, services: ServicesDep, visitor: VisitorDep, share: Share = None) -> FileResponse:
    song = readable_song(services, visitor, song_id, share)
    record(services, visitor.owner, "download", song, detail={"format": "midi"})
    return FileResponse(song_file(services, song, "midi"), media_type="audio/midi", filename=f"{song.id}.mid")


@router.get("/{song_id}/audio.{fmt}", response_class=FileResponse)
def get_audio(
    song_id: str, fmt: Literal["ogg", "wav"], services: ServicesDep, visitor: VisitorDep, share: Share = None
) -> FileResponse:
    """Audio rendered with the General MIDI SoundFont: OGG at generation time, WAV on first request (cached)."""
    song = readable_song(services, visitor, song_id, share)
    if fmt == "wav":  # the player streams the OGG; a WAV is only ever downloaded
        record(services, visitor.owner, "download", song, detail={"format": "wav"})
    return FileResponse(
        song_file(services, song, fmt), media_type=AUDIO_TYPES[fmt], filename=f"{song.id}.{fmt}"
    )


@router.get("/{song_id}/pianoroll.svg", response_class=FileResponse)
def get_pianoroll(
    song_id: str, services: ServicesDep, visitor: VisitorDep, share: Share = None
) -> FileResponse:
    song = readable_song(services, visitor, song_id, share)
    return FileResponse(song_file(services, song, "svg"), media_type="image/svg+xml")


@router.post("/{song_id}/rating")
def rate(
    song_id: str, rating: RatingIn, services: ServicesDep, visitor: ApiWriterDep, share: Share = None
) -> dict:
    """Rate a song you own or can read by link; a second rating replaces your first."""
    song = readable_song(services, visitor, song_id, share)
    result = services.repo.rate_song(song_id=song.id, owner=visitor.owner, value=rating.value)
    record(services, visitor.owner, "rate", song, value=rating.value)
    return result.to_dict()


@router.post("/{song_id}/feedback", status_code=204, response_class=Response)
def feedback(
    song_id: str, body: FeedbackIn, services: ServicesDep, visitor: ApiWriterDep, share: Share = None
) -> Response:
    """Tell museforge what you thought of a song (or what you did with it): the lab learns from it."""
    song = readable_song(services, visitor, song_id, share)
    record(services, visitor.owner, body.kind, song)
    return Response(status_code=204)


@router.post("/{song_id}/share")
def share(song_id: str, services: ServicesDep, visitor: ApiWriterDep) -> dict:
    """Make a link anyone can open; only the owner can."""
    song = own_song(services, visitor, song_id)
    token = share_song(services, song)
    record(services, visitor.owner, "share", song)
    return {"share_token": token, "url": f"/s/{token}"}


@router.delete("/{song_id}/share")
def unshare(song_id: str, services: ServicesDep, visitor: ApiWriterDep) -> dict:
    song = own_song(services, visitor, song_id)
    services.repo.set_share_token(song_id=song.id, share_token=None)
    return {"shared": False}
