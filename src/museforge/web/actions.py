"""What the API and the pages both do: submit jobs, find a visitor's records, serve song files.

Every lookup of a song, job or upload checks ownership here; another visitor gets the same 404 as for a record
that does not exist, so ids cannot be probed. A song shared by link is readable with its share token.
"""

from __future__ import annotations

import hmac
import math
import time
from pathlib import Path

import symusic
from fastapi import HTTPException
from pydantic import BaseModel

from museforge.data.formats import InputError
from museforge.families import RequestError
from museforge.store import Job, Song, Upload, new_id
from museforge.web.catalog import UnknownModel
from museforge.web.deps import Services, Visitor, record
from museforge.web.jobs import render_audio, source_score
from museforge.web.queue import BrokerUnavailable
from museforge.web.requests import family_options
from museforge.web.uploads import read_upload, upload_limits

AUDIO_TYPES = {"ogg": "audio/ogg", "wav": "audio/wav"}


def submit_job(services: Services, visitor: Visitor, req: BaseModel) -> Job:
    """Check a generation request completely, then queue it; nothing is stored for a refused request."""
    try:
        served = services.catalog.get(req.model)
        op = served.family.operation(req.operation)
        has_source = req.source_upload is not None or req.source_song is not None
        if req.source_upload is not None and req.source_song is not None:
            raise RequestError("give either source_upload or source_song, not both")
        if op.needs_source and not has_source:
            raise RequestError(f"{op.label.lower()} needs a source piece: source_upload or source_song")
        if has_source and not op.needs_source:
            raise RequestError(f"{op.name} starts from nothing: leave source_upload and source_song empty")
        request = served.family.parse({**family_options(req), "operation": op.name})
        request = served.family.resolve(request, served.info, services.limits)
    except (UnknownModel, RequestError) as exc:
        raise HTTPException(422, str(exc)) from exc
    if req.source_upload is not None:
        check_tune(own_upload(services, visitor, req.source_upload), req.source_tune)
    elif req.source_tune is not None:
        raise HTTPException(422, "source_tune picks a tune of source_upload: give source_upload too")
    if req.source_song is not None:
        own_song(services, visitor, req.source_song)
    params = request.model_dump(mode="json")
    params.update(
        operation=op.name,
        source_upload=req.source_upload,
        source_song=req.source_song,
        seed_drawn=req.seed is None,
    )  # a drawn seed: the song must be new to this listener
    if req.source_tune is not None:
        params["source_tune"] = req.source_tune
    if op.needs_source:
        try:
            source = source_score(services.repo, services.files, params)
            assert source is not None  # needs_source: one of the two was given and is owned
            served.family.check_source(request, source, served.loaded, services.limits)
        except (RequestError, InputError) as exc:
            raise HTTPException(422, str(exc)) from exc
    s = services.settings
    recent = services.repo.count_jobs_since(owner=visitor.owner, since=time.time() - s.rate_limit_window_s)
    if recent >= s.rate_limit_jobs:
        raise HTTPException(
            429,
            f"too many songs at once: at most {s.rate_limit_jobs} every {s.rate_limit_window_s:g} s; "
            "wait a little and try again",
            headers={"Retry-After": str(int(s.rate_limit_window_s))},
        )
    wait = services.address_limiter.take(visitor.address)
    if wait is not None:
        raise HTTPException(
            429,
            f"too many songs from your network address: at most {s.rate_limit_address_jobs} every "
            f"{s.rate_limit_window_s:g} s, over all sessions; wait a little and try again",
            headers={"Retry-After": str(math.ceil(wait))},
        )
    job = services.repo.create_job(
        owner=visitor.owner, model=served.info.name, operation=op.name, params=params
    )
    try:
        services.queue.notify(job.id)
    except BrokerUnavailable as exc:
        services.repo.fail_job(job_id=job.id, error="the job queue could not be reached; it was never run")
        raise HTTPException(
            503,
            "the job queue is unreachable right now, so the song was not started; try again in a minute",
            headers={"Retry-After": "30"},
        ) from exc
    controls = {
        k: v for k, v in params.items() if v is not None and k not in ("source_upload", "source_song")
    }
    record(services, visitor.owner, "generate", model=job.model, style=params.get("style") or "",
           detail={"version": served.info.step, "controls": controls})  # fmt: skip
    return job


def own_job(services: Services, visitor: Visitor, job_id: str) -> Job:
    job = services.repo.get_job(job_id=job_id)
    if job is None or job.owner != visitor.owner:
        raise HTTPException(404, "no such job")
    return job


def own_upload(services: Services, visitor: Visitor, upload_id: str) -> Upload:
    upload = services.repo.get_upload(upload_id=upload_id)
    if upload is None or upload.owner != visitor.owner:
        raise HTTPException(404, "no such upload")
    return upload


def learn_styles(services: Services) -> list[str]:
    """The styles an owner may label a piece with for the lab: those the served models know."""
    return sorted({s for m in services.catalog.models.values() for s in m.info.styles} - {"user"})


def check_learn_style(services: Services, style: str | None) -> str | None:
    """A style label for the lab: one the app offers, or None; anything else is a 422 naming the styles."""
    if style and style not in learn_styles(services):
        raise HTTPException(422, f"unknown style {style!r}; styles: {', '.join(learn_styles(services))}")
    return style or None


def choose_learning(services: Services, upload: Upload, learn: bool, style: str | None) -> Upload:
    """Record an owner's choice to let the lab learn from an upload (with an optional style), or to withdraw
    it (which takes it out of every later dataset)."""
    style = check_learn_style(services, style)
    return services.repo.set_upload_learn(upload_id=upload.id, learn=learn, style=style if learn else None)


def check_tune(upload: Upload, tune: str | None) -> None:
    """A tune asked for must be one of the upload's (an ABC file of several tunes lists them at upload)."""
    if tune is None:
        return
    numbers = [t["number"] for t in upload.meta.get("tunes", [])]
    if tune not in numbers:
        more = ", ..." if len(numbers) > 10 else ""
        held = f"its tunes are {', '.join(numbers[:10])}{more}" if numbers else "it is one piece"
        raise HTTPException(422, f"upload {upload.id} has no tune X:{tune}; {held}")


def own_song(services: Services, visitor: Visitor, song_id: str) -> Song:
    song = services.repo.get_song(song_id=song_id)
    if song is None or song.owner != visitor.owner:
        raise HTTPException(404, "no such song")
    return song


def readable_song(services: Services, visitor: Visitor, song_id: str, share: str | None) -> Song:
    """The song if the visitor owns it or holds its share token."""
    song = services.repo.get_song(song_id=song_id)
    if song is None:
        raise HTTPException(404, "no such song")
    if song.owner == visitor.owner:
        return song
    if share and song.share_token and hmac.compare_digest(share.encode(), song.share_token.encode()):
        return song
    raise HTTPException(404, "no such song")


def share_song(services: Services, song: Song) -> str:
    """The song's share token, made on first use."""
    if song.share_token:
        return song.share_token
    token = new_id(16)
    services.repo.set_share_token(song_id=song.id, share_token=token)
    song.share_token = token
    return token


def song_file(services: Services, song: Song, kind: str) -> Path:
    """The path of one of a song's files; WAV is rendered on first request and kept."""
    if kind in song.files and services.files.exists(song.files[kind]):
        return services.files.resolve(song.files[kind])
    if kind != "wav":
        raise HTTPException(404, f"this song has no {kind} file")
    midi = services.files.resolve(song.files["midi"])
    rel = services.files.relative("result", song.id, "audio.wav")
    services.files.write(rel, render_audio(symusic.Score.from_file(str(midi)), ".wav"))
    services.repo.add_song_file(song_id=song.id, kind="wav", path=rel)
    song.files["wav"] = rel
    return services.files.resolve(rel)


def upload_audio(services: Services, upload: Upload, tune: str | None = None) -> Path:
    """The OGG of an upload (of one of its tunes, for an ABC file of several), rendered on first request (as a
    song's is at generation) and kept beside the results; the upload page plays it."""
    check_tune(upload, tune)
    tune = tune or upload.meta.get("tune")
    name = f"audio-{tune}.ogg" if tune is not None and upload.meta.get("tunes") else "audio.ogg"
    rel = services.files.relative("result", "uploads", upload.id, name)
    if not services.files.exists(rel):
        try:
            score = read_upload(services.files, upload, tune, upload_limits(services.settings))
        except InputError as exc:
            raise HTTPException(422, f"cannot read this upload: {exc}") from exc
        try:
            audio = render_audio(score, ".ogg")
        except ValueError as exc:  # e.g. longer than the renderer's hour
            raise HTTPException(422, f"cannot play this upload: {exc}") from exc
        services.files.write(rel, audio)
    return services.files.resolve(rel)


def song_json(services: Services, song: Song, visitor: Visitor, share: str | None = None) -> dict:
    """A song as the API returns it, with the URLs of its files."""
    base = f"/api/v1/songs/{song.id}"
    q = f"?share={share}" if share else ""
    rating = services.repo.get_rating(song_id=song.id, owner=visitor.owner)
    owned = song.owner == visitor.owner
    return {
        "id": song.id,
        "title": song.title,
        "model": song.model,
        "job_id": song.job_id,
        "created_at": song.created_at,
        "params": song.params,
        "meta": song.meta,
        "originality": song.originality,
        "rating": rating.to_dict(),
        "shared": song.share_token is not None,
        "share_url": f"/s/{song.share_token}" if owned and song.share_token else None,
        "owned": owned,
        "urls": {
            "page": f"/songs/{song.id}" if owned else f"/s/{share}",
            "midi": f"{base}/midi{q}",
            "ogg": f"{base}/audio.ogg{q}",
            "wav": f"{base}/audio.wav{q}",
            "pianoroll": f"{base}/pianoroll.svg{q}",
        },
    }
