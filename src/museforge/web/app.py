"""The FastAPI application factory.

``create_app(settings)`` builds the app; nothing is opened at import. The lifespan opens the store, loads the
session secret and the models, recovers jobs a stopped server left running, and starts the job workers; it
stops them (re-queueing a running job) on shutdown. With ``MUSEFORGE_QUEUE_URL`` the jobs go to Celery workers
(`museforge.web.queue`) instead, and the web process runs none itself.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import torch
from fastapi import FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from museforge.analytics.sink import EventSink
from museforge.store import FileStore, ModelRecord, open_repository
from museforge.web.catalog import ModelCatalog
from museforge.web.deps import Services
from museforge.web.jobs import JobExecutor, JobQueue, ThreadJobQueue
from museforge.web.lab_schedule import LabScheduler, lab_models
from museforge.web.queue import CeleryJobQueue
from museforge.web.routers import analytics, auth, jobs, models, pages, songs, uploads
from museforge.web.security import COOKIE_NAME, CookieSigner, load_or_create_secret
from museforge.web.settings import Settings

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
API_PREFIX = "/api/v1"
DOCS_ASSETS = "/docs/assets"  # Swagger UI and ReDoc, from the fastapi-offline package
FORM_BODY_LIMIT = 256 * 1024  # bytes of a request body other than an upload


def open_services(settings: Settings) -> Services:
    """Store, files, cookie signer, models and the job queue (not started)."""
    var = settings.var_dir.resolve()
    var.mkdir(parents=True, exist_ok=True)
    repo = open_repository(var, settings.mongo_uri, settings.mongo_db)
    files = FileStore(var)
    signer = CookieSigner(load_or_create_secret(var), settings.session_max_age_s)
    catalog = ModelCatalog(settings.models_dir, settings.device, settings.precision, var)
    queue: JobQueue
    if settings.queue_url:
        queue = CeleryJobQueue(settings)
    else:
        queue = ThreadJobQueue(repo, JobExecutor(repo, files, catalog), settings.workers)
    services = Services(settings, repo, files, signer, catalog, queue)
    services.events = EventSink(repo, keep_days=settings.analytics_keep_days)
    for served in catalog.models.values():
        info = served.describe(services.limits)
        repo.upsert_model(model=ModelRecord(served.info.name, served.family.name, info))
    repo.prune_sessions(created_before=time.time() - settings.session_max_age_s)
    if (
        settings.queue_url
    ):  # running jobs may be running on workers now; workers' heartbeats hand on lost ones
        return services
    requeued, failed = repo.recover_jobs(max_attempts=settings.max_attempts)
    if requeued or failed:
        log.warning(
            "after a restart: %d job(s) re-queued, %d failed (no attempts left)", len(requeued), len(failed)
        )
    return services


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    threads_before = torch.get_num_threads()
    torch.set_num_threads(settings.threads_per_worker())
    services = await anyio.to_thread.run_sync(open_services, settings)
    app.state.services = services
    services.queue.start()
    services.events.start()
    lab = None
    if settings.lab_schedule and not settings.queue_url:  # with a queue, its beat scheduler runs the lab
        lab = LabScheduler(settings, lab_models(settings, services.catalog), services.repo)
        lab.start()
    try:
        yield
    finally:
        if lab is not None:
            await anyio.to_thread.run_sync(lab.stop)
        await anyio.to_thread.run_sync(services.queue.stop)
        await anyio.to_thread.run_sync(services.events.close)
        services.repo.close()
        torch.set_num_threads(threads_before)


def _body_limit(request: Request, settings: Settings) -> int:
    if request.url.path in ("/upload", f"{API_PREFIX}/uploads"):
        return int(settings.max_upload_mb * 2**20) + 64 * 1024  # the file plus the multipart framing
    return FORM_BODY_LIMIT


def json_safe(value: Any) -> Any:
    """JSON has no NaN or infinity, so a non-finite number a client sent is echoed back as text ("nan",
    "inf") instead of making the error response itself fail."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def create_app(settings: Settings | None = None) -> FastAPI:
    """The museforge web app: JSON API under /api/v1 (OpenAPI at /docs and /redoc) and the pages."""
    settings = settings or Settings()
    app = FastAPIOffline(  # the docs pages load Swagger UI and ReDoc from the app, not from a CDN
        title="museforge",
        summary="Generate, hear and keep symbolic music.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url="/redoc",
        static_url=DOCS_ASSETS,
        openapi_url=f"{API_PREFIX}/openapi.json",
        swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from validator.swagger.io
    )
    app.state.settings = settings

    @app.get("/openapi.json", include_in_schema=False)
    def openapi_at_the_root() -> JSONResponse:
        """The API document at the address tools try first, as well as at /api/v1/openapi.json."""
        return JSONResponse(app.openapi())

    @app.middleware("http")
    async def session_and_limits(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """Refuse oversized bodies before reading them; set the session cookie a request created; add the
        security headers every response carries."""
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > _body_limit(request, settings):
            limit_mb = _body_limit(request, settings) / 2**20
            return JSONResponse({"detail": f"the request is larger than the {limit_mb:.2f} MiB limit"}, 413)
        response = await call_next(request)
        session_id = getattr(request.state, "set_session", None)
        if session_id is not None:
            services: Services = request.app.state.services
            response.set_cookie(
                COOKIE_NAME, services.signer.dumps(session_id), max_age=settings.session_max_age_s,
                httponly=True, samesite="lax", secure=settings.cookie_secure, path="/",
            )  # fmt: skip
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if request.url.path.startswith(API_PREFIX):
            return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)
        return pages.error_page(request, exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        """422 with one readable line per problem (and the details for programs)."""
        problems = []
        for err in exc.errors():
            loc = [str(p) for p in err.get("loc", ())]
            where = ".".join([p for p in loc if p not in ("body", "query", "path")] or loc[:1])
            problems.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        message = "; ".join(problems)
        if request.url.path.startswith(API_PREFIX):
            errors = json_safe(jsonable_encoder(exc.errors()))
            return JSONResponse({"detail": message, "errors": errors}, 422)
        return pages.error_page(request, 422, message)

    for router in (auth.router, models.router, jobs.router, songs.router, uploads.router, analytics.api):
        app.include_router(router, prefix=API_PREFIX)
    app.include_router(pages.router)
    app.include_router(analytics.pages)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    return app
