"""Generation jobs: a small queue interface, the in-process worker pool behind it, and what a job does.

A job lives in the store (queued → running → done/failed, with progress), so the queue itself holds nothing:
`JobQueue` only wakes workers and stops them. `ThreadJobQueue` runs jobs in threads of the server process
(torch releases the GIL while it computes, so the event loop stays free); a distributed queue can replace it by
implementing the same methods and calling `JobExecutor.run` where its workers run (`museforge.web.queue`,
with MUSEFORGE_QUEUE_URL). On start-up jobs left
running by a stopped server are re-queued or, past ``max_attempts``, failed with a reason; on shutdown a running
job is stopped at its next progress step and put back in the queue.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Protocol

import symusic

from museforge.audio import encode_audio, render_score
from museforge.audio.render import DEFAULT_SAMPLE_RATE
from museforge.data.formats import InputError
from museforge.families import Family, RequestError, SongRequest, get_family
from museforge.families.loaded import GeneratedSong, LoadedModel
from museforge.store import FileStore, Job, NotFound, Repository, Song, new_id
from museforge.visual import pianoroll_svg
from museforge.web.catalog import ModelCatalog, UnknownModel
from museforge.web.fresh import Histories, fresh_songs
from museforge.web.uploads import NAME_KINDS, read_upload

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 0.3  # progress writes per job at most this often
GENERATION_SHARE = 0.85  # of the progress bar; rendering and storing take the rest
WATCHED_JOBS = 10_000  # jobs whose change counters a process keeps


class JobQueue(Protocol):
    """What the app needs from a job queue."""

    def start(self) -> None: ...

    def notify(self, job_id: str) -> None:
        """Job ``job_id`` was queued: hand it to a worker (`museforge.web.queue.BrokerUnavailable` when a
        distributed queue cannot take it now)."""

    def version(self, job_id: str) -> int:
        """A number that grows whenever a worker of this process changes the job (progress, done, failed, put
        back): a request waiting on a job watches it instead of reading the store. A queue whose workers run
        elsewhere may return 0 always; waiting requests then fall back to reading the store every second."""

    def stop(self, timeout: float = 30.0) -> None: ...


class JobWatch:
    """Per-job change counters, bumped by the workers and read by waiting requests (see `JobQueue.version`).

    Only the most recently changed `WATCHED_JOBS` are kept, so a long-running server's map stays small; a job
    dropped from it reads as 0, which at worst wakes its (by then long-gone) waiters early.
    """

    def __init__(self) -> None:
        self._versions: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def bump(self, job_id: str) -> None:
        with self._lock:
            self._versions[job_id] = self._versions.pop(job_id, 0) + 1
            if len(self._versions) > WATCHED_JOBS:
                self._versions.popitem(last=False)

    def version(self, job_id: str) -> int:
        return self._versions.get(job_id, 0)


class Stopping(Exception):
    """The server is stopping: the running job goes back to the queue."""


class AlreadyEnded(Exception):
    """Another run of the job finished it first (a distributed queue delivered it twice): the store keeps that
    run's songs, so the listener gets one set."""


def _bars(n: int) -> str:
    return f"{n} bar{'s' * (n != 1)}"


def song_title(params: dict, family: str, source: str | None = None) -> str:
    """A readable title from what the song was asked for: a new piece by its style and length, a piece made
    from another by that piece's name (``source``) and what the model added, e.g. "bwv66.6 + 8 bars (REMI
    Transformer)"."""
    what = (params.get("style") or "").capitalize() or ("Piano" if params.get("seconds") else "Song")
    bars = params.get("bars")
    length = _bars(bars) if bars else f"{params.get('seconds', 0):g} s"
    operation = params.get("operation")
    if operation not in ("continue", "restyle", "accompany", "infill"):
        key = f", {params['in_key']}" if params.get("in_key") else ""
        return f"{what}, {length}{key}, seed {params.get('seed')}"
    try:
        label = get_family(family).label
    except ValueError:  # a song of a family this app no longer serves
        label = family
    piece = source or "your piece"
    if operation == "continue":
        kept = params.get("primer_bars")
        start = f"the first {_bars(kept)} of {piece}" if kept else piece
        return f"{start} + {length} ({label})"
    if operation == "infill":  # the source with some bars written again
        return f"{piece}, bars {params.get('infill')} filled in ({label})"
    if operation == "restyle":  # the source's bars, re-played
        where = f", bars {params['restyle_bars']}" if params.get("restyle_bars") else ""
        return f"{piece}{where} re-styled ({label})"
    style = f"{params['style']} " if params.get("style") else ""  # accompany: the source's length, up to bars
    return f"{piece} + {style}accompaniment ({label})"


def source_label(repo: Repository, params: dict) -> dict | None:
    """What a song was made from, as its history and page show it: the upload (its file name without the music
    suffix) or the song (its title), with its id."""
    if params.get("source_upload"):
        upload = repo.get_upload(upload_id=params["source_upload"])
        if upload is None:
            return None
        name = Path(upload.filename)
        title = name.stem if name.suffix.lower() in NAME_KINDS else name.name
        return {"kind": "upload", "id": upload.id, "title": title}
    if params.get("source_song"):
        song = repo.get_song(song_id=params["source_song"])
        return None if song is None else {"kind": "song", "id": song.id, "title": song.title}
    return None


def render_audio(score: symusic.Score, suffix: str) -> bytes:
    """Audio bytes of a score: the SoundFont synthesizer, then the encoder for ``suffix``."""
    return encode_audio(render_score(score, DEFAULT_SAMPLE_RATE), DEFAULT_SAMPLE_RATE, suffix)


def _finite(values: dict) -> dict:
    """JSON has no NaN (an undefined share, e.g. no phrase long enough): store null instead."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in values.items()}


def source_score(repo: Repository, files: FileStore, params: dict) -> symusic.Score | None:
    """The piece a continue/re-style/accompany job starts from (ownership is checked at submission)."""
    if params.get("source_upload"):
        upload = repo.get_upload(upload_id=params["source_upload"])
        if upload is None:
            raise RequestError("the source upload no longer exists")
        return read_upload(files, upload, params.get("source_tune"))
    if params.get("source_song"):
        song = repo.get_song(song_id=params["source_song"])
        if song is None:
            raise RequestError("the source song no longer exists")
        return symusic.Score.from_file(str(files.resolve(song.files["midi"])))
    return None


class JobExecutor:
    """Runs one claimed job to done or failed: generation, files, songs."""

    def __init__(
        self, repo: Repository, files: FileStore, catalog: ModelCatalog, watch: JobWatch | None = None
    ) -> None:
        self.repo, self.files, self.catalog = repo, files, catalog
        self.histories = Histories(repo, files)
        self.stopping = threading.Event()
        self.watch = watch or JobWatch()

    def _fresh(self, job: Job, family: Family, loaded: LoadedModel, request: SongRequest,
               generated: list[GeneratedSong]) -> list[tuple[GeneratedSong, int]]:  # fmt: skip
        """The songs, re-sampled where one would repeat the listener's (only for music made from nothing with a
        drawn seed: an asked seed is reproducible, and a continuation contains its source on purpose)."""
        if not job.params.get("seed_drawn") or job.operation != "generate":
            return [(g, 1) for g in generated]
        one = request.model_copy(update={"num_samples": 1, "seed": None})  # each try draws its own seed

        def resample() -> GeneratedSong:
            return family.sample(loaded, one)[0]

        return fresh_songs(generated, self.histories.of(job.owner), resample)

    def _store(self, job: Job, song: GeneratedSong, family: str, source: dict | None, tries: int = 1) -> Song:
        """Write one song's files (MIDI, OGG, piano roll); the song becomes visible only with its job."""
        song_id = new_id()
        files = {
            "midi": self.files.relative("result", song_id, "song.mid"),
            "ogg": self.files.relative("result", song_id, "audio.ogg"),
            "svg": self.files.relative("result", song_id, "pianoroll.svg"),
        }
        # the job knows the operation
        title = song_title({**job.params, **song.params}, family, source and source["title"])
        self.files.write(files["midi"], song.score.dumps_midi())
        self.files.write(files["ogg"], render_audio(song.score, ".ogg"))
        self.files.write(files["svg"], pianoroll_svg(song.score, title=title).encode("utf-8"))
        kept = song.kept_tokens()
        if kept is not None:  # what it takes to score the song again under any version
            files["tokens"] = self.files.relative("result", song_id, "tokens.json")
            self.files.write(files["tokens"], json.dumps(kept).encode())
        seconds = song.score.to("second")
        meta = {
            "notes": int(song.score.note_num()),
            "tracks": len(song.score.tracks),
            "duration_s": round(float(seconds.end()), 2),
            "new_tokens": song.new_tokens,
            "generation_s": round(song.seconds, 3),
            "family": family,
            "source": source,
        }
        originality = None if song.originality is None else _finite(song.originality.to_dict())
        params = {
            **job.params,
            **{k: v for k, v in song.params.items() if k not in ("primer",)},
            "tries": tries,
        }
        return Song(song_id, job.owner, job.id, job.model, title, params, meta, files, originality)

    def run(self, job: Job) -> None:
        last = [0.0]
        shown = [job.progress]

        def show(value: float) -> None:
            """Store a new progress value (an unchanged one is not news: no write, no wake-up)."""
            if value != shown[0]:
                shown[0] = value
                self.repo.set_progress(job_id=job.id, progress=value)
                self.watch.bump(job.id)

        def progress(fraction: float) -> None:
            if self.stopping.is_set():
                raise Stopping
            now = time.monotonic()
            if now - last[0] >= PROGRESS_EVERY_S:
                last[0] = now
                show(fraction * GENERATION_SHARE)

        self.watch.bump(job.id)  # claimed: it is running now
        try:
            served = self.catalog.get(job.model)
            source = source_score(self.repo, self.files, job.params)
            family = served.family
            request = family.parse({k: v for k, v in job.params.items() if k in family.request.model_fields})
            generated = family.sample(served.loaded, request, source, progress)
            fresh = self._fresh(job, family, served.loaded, request, generated)
            show(GENERATION_SHARE)
            origin = source_label(self.repo, job.params)
            songs = [self._store(job, g, served.family.name, origin, tries) for g, tries in fresh]
            try:
                self.repo.finish_job(job_id=job.id, songs=songs)
            except NotFound as exc:
                raise AlreadyEnded from exc
        except AlreadyEnded:
            log.warning(
                "job %s ended elsewhere first (delivered twice): this run's songs are dropped", job.id
            )
        except Stopping:
            log.info("job %s put back in the queue: the server is stopping", job.id)
            self.repo.requeue_job(job_id=job.id)
        except (RequestError, InputError, UnknownModel, ValueError) as exc:
            self.repo.fail_job(job_id=job.id, error=str(exc))
        except Exception as exc:  # a bug must fail the job visibly, never leave it running forever
            log.exception("job %s failed", job.id)
            self.repo.fail_job(job_id=job.id, error=f"internal error: {type(exc).__name__}: {exc}")
        finally:
            self.watch.bump(job.id)


class ThreadJobQueue:
    """Worker threads that claim queued jobs from the store and run them."""

    def __init__(self, repo: Repository, executor: JobExecutor, workers: int) -> None:
        self.repo, self.executor, self.workers = repo, executor, workers
        self._wake = threading.Condition()
        self._pending = 0
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self.executor.stopping.clear()
        for i in range(self.workers):
            thread = threading.Thread(target=self._loop, name=f"museforge-job-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def notify(self, job_id: str) -> None:
        with self._wake:
            self._pending += 1
            self._wake.notify()

    def version(self, job_id: str) -> int:
        return self.executor.watch.version(job_id)

    def _loop(self) -> None:
        while not self.executor.stopping.is_set():
            job = self.repo.claim_job()
            if job is None:
                with self._wake:
                    if self._pending == 0:
                        self._wake.wait(timeout=1.0)  # also polls: another process may queue jobs
                    self._pending = max(0, self._pending - 1)
                continue
            self.executor.run(job)

    def stop(self, timeout: float = 30.0) -> None:
        self.executor.stopping.set()
        with self._wake:
            self._wake.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()
