"""The pages: generate, job progress, song, history, upload, sign up / log in. Server-rendered with Jinja; a
little vanilla JS (static/app.js) shows the right controls, draws the bar sliders and follows a job."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Literal

import symusic
from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from starlette.datastructures import FormData

from museforge.data.formats import InputError
from museforge.families.fields import PITCH_CLASSES
from museforge.models.zoo import CARD_FILE
from museforge.store import Song
from museforge.visual import pianoroll_svg
from museforge.web.actions import (
    check_tune,
    choose_learning,
    learn_styles,
    own_job,
    own_song,
    own_upload,
    readable_song,
    share_song,
    submit_job,
)
from museforge.web.cards import card_html
from museforge.web.deps import FormWriterDep, Services, ServicesDep, Visitor, VisitorDep, record
from museforge.web.requests import JobRequest
from museforge.web.routers import uploads as upload_api
from museforge.web.routers.auth import end_session, log_in, sign_up
from museforge.web.security import CSRF_FIELD
from museforge.web.taste import favourites
from museforge.web.uploads import read_upload, upload_limits

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent.parent / "templates")
templates.env.filters["datetime"] = lambda t: time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))
# Fields a form sends as one value per entry (a bar plan's bars, the ticked pitch classes); every other field is
# one value, handed as typed to `JobRequest`, which parses it ("16", "0.9", "5-8", "Violin, Cello").
LIST_FIELDS = frozenset({"rhythm", "polyphony", "pitch_classes"})
PANEL_ORDER = {
    "continue": 0,
    "infill": 1,
    "restyle": 2,
    "accompany": 3,
}  # the keep-going panel's operations in order


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A page with the visitor, the CSRF token and the models every template may use."""
    services: Services = request.app.state.services
    visitor: Visitor | None = getattr(request.state, "visitor", None)
    base = {
        "visitor": visitor,
        "csrf_field": CSRF_FIELD,
        "csrf_token": visitor.session.csrf if visitor else "",
        "catalog": services.catalog,
        "limits": services.limits,
    }
    # A visit counts once the browser keeps its cookie: a client that never does (a bot, a script) would
    # otherwise write an event row per request, as it once wrote a session row per request.
    returning = not hasattr(request.state, "set_session")
    if visitor is not None and status_code == 200 and returning:
        record(services, visitor.owner, "visit", detail={"page": name})
    return templates.TemplateResponse(request, name, {**base, **context}, status_code=status_code)


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    return render(request, "error.html", status, status=status, message=message)


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def form_request(form: FormData, services: Services) -> JobRequest:
    """A generation form as a `JobRequest`: the chosen model's fields are prefixed ``<model>.``."""
    model = str(form.get("model") or services.catalog.default_name or "")
    prefix = f"{model}."
    fields: dict[str, Any] = {"model": model or None, "operation": form.get("operation") or "generate"}
    for key in ("source_upload", "source_song", "source_tune"):
        if form.get(key):
            fields[key] = str(form.get(key))
    for key, value in form.multi_items():
        if not key.startswith(prefix) or isinstance(value, UploadFile):
            continue
        name = key[len(prefix) :]
        if name in JobRequest.model_fields and name not in LIST_FIELDS and value.strip():
            fields[name] = value.strip()
        elif name.startswith("track.") and value.strip():  # accompany: model track <- the piece's track
            try:
                fields.setdefault("tracks", {})[name[len("track.") :]] = int(value)
            except ValueError as exc:
                raise HTTPException(422, f"{name} must be a track number, got {value!r}") from exc
    for plan in ("rhythm", "polyphony"):
        values = form.getlist(prefix + plan)
        if values:
            fields[plan] = [None if str(v) in ("", "-1") else str(v) for v in values]
    pitch = [str(p) for p in form.getlist(prefix + "pitch_classes")]
    if pitch:
        fields["pitch_classes"] = pitch
    try:
        return JobRequest(**fields)
    except ValidationError as exc:
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise HTTPException(422, detail) from exc


@router.get("/", response_class=HTMLResponse)
def home(
    request: Request, visitor: VisitorDep, services: ServicesDep, model: str | None = None
) -> HTMLResponse:
    """The generate form, with ``?model=`` chosen (a model page's link) when the app serves it, else on the model
    and styles this listener liked most."""
    models = [m.describe(services.limits) for m in services.catalog.models.values()]
    recent = services.repo.list_songs(owner=visitor.owner, limit=5)
    liked = favourites(services.repo, visitor.owner, list(services.catalog.models))
    liked.apply(models)
    default = model if model in services.catalog.models else liked.model or services.catalog.default_name
    return render(
        request, "index.html", models=models, default=default, pitch_classes=PITCH_CLASSES, recent=recent,
    )  # fmt: skip


@router.get("/models/{name}", response_class=HTMLResponse)
def model_page(name: str, request: Request, visitor: VisitorDep, services: ServicesDep) -> HTMLResponse:
    """What a model makes (its description), what it can do, its card (how it was trained and measured) and its
    versions with their gate reports and the data they saw."""
    if name not in services.catalog.models:
        known = ", ".join(services.catalog.models) or "none installed"
        raise HTTPException(404, f"no model named {name!r}; models: {known}")
    served = services.catalog.get(name)  # its production version
    path = served.info.path / CARD_FILE
    card = card_html(path.read_text(encoding="utf-8"), served.info.name) if path.is_file() else None
    versions = [v.to_dict() for v in reversed(services.catalog.registry.versions(name))]
    return render(request, "model.html", model=served.describe(services.limits), card=card, versions=versions)


@router.post("/generate")
async def generate(request: Request, visitor: FormWriterDep, services: ServicesDep) -> Response:
    job_request = form_request(await request.form(), services)
    job = submit_job(services, visitor, job_request)
    return see_other(f"/jobs/{job.id}")


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(job_id: str, request: Request, visitor: VisitorDep, services: ServicesDep) -> Response:
    job = own_job(services, visitor, job_id)
    if job.status == "done" and len(job.song_ids) == 1:
        return see_other(f"/songs/{job.song_ids[0]}")
    songs = [s for sid in job.song_ids if (s := services.repo.get_song(song_id=sid)) is not None]
    return render(request, "job.html", job=job, songs=songs)


def track_choices(score: symusic.Score) -> list[tuple[int, str]]:
    """A piece's tracks as an accompany form offers them: (index, "1: Soprano · 42 notes")."""
    return [
        (i, f"{i + 1}: {t.name.strip() or 'Track'} · {len(t.notes)} notes")
        for i, t in enumerate(score.tracks)
    ]


def keep_going(services: Services) -> dict[str, Any] | None:
    """The "keep going" panel of a song or upload page: the operations that start from a piece (continue first,
    then re-style, accompany), the models that do any of them, and the pair chosen at first (the default model
    where it does the first operation); None when no served model starts from a piece."""
    models = [m.describe(services.limits) for m in services.catalog.models.values()]
    models = [m for m in models if any(o["needs_source"] for o in m["operations"])]
    operations: dict[str, dict[str, Any]] = {}
    for m in models:
        for o in m["operations"]:
            if o["needs_source"]:
                operations.setdefault(o["name"], o)
    if not operations:
        return None
    order = sorted(operations.values(), key=lambda o: PANEL_ORDER.get(o["name"], len(PANEL_ORDER)))
    first = order[0]["name"]
    able = [m["name"] for m in models if any(o["name"] == first for o in m["operations"])]
    model = services.catalog.default_name if services.catalog.default_name in able else able[0]
    label = f"{order[0]['label']} with {model}"
    return {"operations": order, "models": models, "operation": first, "model": model, "label": label}


def _song_page(
    request: Request, services: Services, visitor: Visitor, song: Song, share: str | None
) -> HTMLResponse:
    owned = song.owner == visitor.owner
    q = f"?share={share}" if share and not owned else ""
    panel = keep_going(services) if owned else None
    tracks = []
    if panel and any(o["name"] == "accompany" for o in panel["operations"]):
        tracks = track_choices(symusic.Score.from_file(str(services.files.resolve(song.files["midi"]))))
    return render(
        request, "song.html", song=song, owned=owned, share=share if not owned else None, q=q,
        rating=services.repo.get_rating(song_id=song.id, owner=visitor.owner),
        svg=services.files.read(song.files["svg"]).decode("utf-8"), panel=panel, source_tracks=tracks,
    )  # fmt: skip


@router.get("/songs/{song_id}", response_class=HTMLResponse)
def song_page(song_id: str, request: Request, visitor: VisitorDep, services: ServicesDep) -> HTMLResponse:
    return _song_page(request, services, visitor, own_song(services, visitor, song_id), None)


@router.get("/s/{token}", response_class=HTMLResponse)
def shared_song_page(
    token: str, request: Request, visitor: VisitorDep, services: ServicesDep
) -> HTMLResponse:
    song = services.repo.get_shared_song(share_token=token)
    if song is None:
        raise HTTPException(404, "this link is not (or no longer) shared")
    return _song_page(request, services, visitor, song, token)


@router.post("/songs/{song_id}/rate")
def rate_song(
    song_id: str, value: Annotated[int, Form(ge=1, le=5)], visitor: FormWriterDep, services: ServicesDep,
    share: Annotated[str | None, Form()] = None,
) -> Response:  # fmt: skip
    song = readable_song(services, visitor, song_id, share)
    services.repo.rate_song(song_id=song.id, owner=visitor.owner, value=value)
    record(services, visitor.owner, "rate", song, value=value)
    return see_other(f"/s/{share}#rating" if song.owner != visitor.owner else f"/songs/{song.id}#rating")


@router.post("/songs/{song_id}/feedback")
def song_feedback(
    song_id: str, kind: Annotated[Literal["like", "dislike"], Form()], visitor: FormWriterDep,
    services: ServicesDep, share: Annotated[str | None, Form()] = None,
) -> Response:  # fmt: skip
    song = readable_song(services, visitor, song_id, share)
    record(services, visitor.owner, kind, song)
    return see_other(f"/s/{share}#rating" if song.owner != visitor.owner else f"/songs/{song.id}#rating")


@router.post("/songs/{song_id}/again")
def song_again(
    song_id: str, visitor: FormWriterDep, services: ServicesDep, liked: Annotated[bool, Form()] = False
) -> Response:
    """Another song for the same request (a new seed). "More like this" (``liked``) tells the lab the listener
    liked this one; "Try another" that it was not what they wanted."""
    song = own_song(services, visitor, song_id)
    job = services.repo.get_job(job_id=song.job_id) if song.job_id else None
    if job is None:
        raise HTTPException(404, "the request that made this song is gone")
    given = {k: v for k, v in job.params.items() if k in JobRequest.model_fields and v is not None}
    again = submit_job(services, visitor, JobRequest(**{**given, "model": song.model, "seed": None}))
    record(services, visitor.owner, "like" if liked else "regenerate", song)
    return see_other(f"/jobs/{again.id}")


@router.post("/songs/{song_id}/share")
def share(
    song_id: str, visitor: FormWriterDep, services: ServicesDep, action: Annotated[str, Form()] = "share"
) -> Response:
    song = own_song(services, visitor, song_id)
    if action == "unshare":
        services.repo.set_share_token(song_id=song.id, share_token=None)
    else:
        share_song(services, song)
        record(services, visitor.owner, "share", song)
    return see_other(f"/songs/{song.id}#share")


@router.get("/history", response_class=HTMLResponse)
def history(request: Request, visitor: VisitorDep, services: ServicesDep) -> HTMLResponse:
    songs = services.repo.list_songs(owner=visitor.owner, limit=200)
    ratings = {s.id: services.repo.get_rating(song_id=s.id, owner=visitor.owner) for s in songs}
    jobs = [j for j in services.repo.list_jobs(owner=visitor.owner, limit=50) if j.status != "done"]
    return render(request, "history.html", songs=songs, ratings=ratings, jobs=jobs)


@router.get("/upload", response_class=HTMLResponse)
def upload_page(request: Request, visitor: VisitorDep, services: ServicesDep) -> HTMLResponse:
    uploads = services.repo.list_uploads(owner=visitor.owner)
    return render(request, "upload.html", uploads=uploads, styles=learn_styles(services))


@router.post("/upload")
def upload(
    request: Request, file: Annotated[UploadFile, File()], visitor: FormWriterDep, services: ServicesDep,
    learn: Annotated[bool, Form()] = False, style: Annotated[str | None, Form(max_length=40)] = None,
) -> Response:  # fmt: skip
    try:
        choice = upload_api.LearnChoice(learn=learn, style=style or None)
        received = upload_api.receive(services, visitor, file, learn=choice)
    except HTTPException as exc:
        uploads = services.repo.list_uploads(owner=visitor.owner)
        return render(request, "upload.html", exc.status_code, uploads=uploads, error=str(exc.detail),
                      styles=learn_styles(services))  # fmt: skip
    return see_other(f"/uploads/{received.id}")


@router.post("/uploads/{upload_id}/learn")
def upload_learning(
    upload_id: str, visitor: FormWriterDep, services: ServicesDep,
    learn: Annotated[bool, Form()] = False, style: Annotated[str | None, Form(max_length=40)] = None,
) -> Response:  # fmt: skip
    """The upload page's "let museforge learn from this" form: ticked lets the lab learn, unticked withdraws."""
    choose_learning(services, own_upload(services, visitor, upload_id), learn, style)
    return see_other(f"/uploads/{upload_id}")


@router.get("/uploads/{upload_id}", response_class=HTMLResponse)
def upload_detail(
    upload_id: str, request: Request, visitor: VisitorDep, services: ServicesDep, tune: str | None = None
) -> HTMLResponse:
    up = own_upload(services, visitor, upload_id)
    try:
        check_tune(up, tune)
        score = read_upload(services.files, up, tune, upload_limits(services.settings))
    except InputError as exc:
        return error_page(request, 422, f"cannot read this upload: {exc}")
    except HTTPException as exc:
        return error_page(request, exc.status_code, str(exc.detail))
    return render(request, "upload_detail.html", upload=up, svg=pianoroll_svg(score, title=up.filename),
                  source_tune=tune or up.meta.get("tune"), panel=keep_going(services),
                  source_tracks=track_choices(score), styles=learn_styles(services))  # fmt: skip


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, visitor: VisitorDep) -> HTMLResponse:
    return render(request, "login.html", mode="login")


@router.get("/signup", response_class=HTMLResponse)
def signup_page(request: Request, visitor: VisitorDep) -> HTMLResponse:
    return render(request, "login.html", mode="signup")


@router.post("/login")
def login(
    request: Request, username: Annotated[str, Form()], password: Annotated[str, Form()],
    visitor: FormWriterDep, services: ServicesDep,
) -> Response:  # fmt: skip
    try:
        log_in(services, request, visitor, username, password)
    except HTTPException as exc:
        return render(
            request, "login.html", exc.status_code, mode="login", error=exc.detail, username=username
        )
    return see_other("/history")


@router.post("/signup")
def signup(
    request: Request, username: Annotated[str, Form()], password: Annotated[str, Form()],
    visitor: FormWriterDep, services: ServicesDep,
) -> Response:  # fmt: skip
    try:
        sign_up(services, request, visitor, username, password)
    except HTTPException as exc:
        return render(
            request, "login.html", exc.status_code, mode="signup", error=exc.detail, username=username
        )
    return see_other("/history")


@router.post("/logout")
def logout(request: Request, visitor: FormWriterDep, services: ServicesDep) -> Response:
    end_session(services, request, visitor)
    return see_other("/")
