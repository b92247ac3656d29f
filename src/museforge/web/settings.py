"""Settings of the web app: ``MUSEFORGE_*`` environment variables, or a ``.env`` file in the working folder."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from museforge.machine import choose_threads


class Settings(BaseSettings):
    """Everything a deployment may change; the defaults run the app from a checkout with the shipped models."""

    model_config = SettingsConfigDict(env_prefix="MUSEFORGE_", env_file=".env", extra="ignore")

    var_dir: Path = Field(Path("var"), description="Database, uploads, results and the session secret.")
    models_dir: Path | None = Field(
        None, description="Folder of model checkpoints (default: the shipped ones)."
    )
    mongo_uri: str | None = Field(None, description="Use MongoDB at this URI instead of the embedded SQLite.")
    mongo_db: str = "museforge"
    device: str = "cpu"
    precision: Literal["fp32", "fp16", "auto"] = Field(
        "auto",
        description="REMI Transformer and MuseMorphose weights while sampling (auto: fp16 where it matches fp32).",
    )
    workers: int = Field(2, ge=1, le=64, description="Generation jobs run at once.")
    torch_threads: int = Field(
        0, ge=0, description="Torch threads per job (0: the idle CPUs this process may use / workers)."
    )
    max_attempts: int = Field(2, ge=1, description="Runs of a job before a restart gives it up.")
    queue_url: str | None = Field(
        None,
        description="Run jobs on Celery with this Redis broker (redis://host:6379/0) in `museforge worker` "
        "processes instead of threads of the web process (unset: the embedded queue).",
    )
    queue_visibility_s: float = Field(
        7200.0,
        gt=0,
        description="Seconds before Redis hands an unacknowledged message to another worker: the backstop for "
        "a job whose worker died while no other worker ran to notice (a live worker's job is never run twice).",
    )
    queue_heartbeat_s: float = Field(
        2.0,
        gt=0,
        le=600,
        description="How often a queue worker says in the store that its jobs are alive; a job silent for "
        "5 heartbeats lost its worker and another worker takes it over.",
    )
    max_upload_mb: float = Field(2.0, gt=0)
    max_upload_notes: int = Field(50_000, ge=1)
    max_upload_tunes: int = Field(1000, ge=1, description="Tunes an uploaded ABC file may hold.")
    upload_read_s: float = Field(60.0, gt=0, description="Longest an uploaded file may take to read.")
    max_bars: int = Field(64, ge=1)
    max_seconds: float = Field(120.0, gt=0)
    max_samples: int = Field(4, ge=1)
    rate_limit_jobs: int = Field(12, ge=1, description="Generation jobs one owner may start per window.")
    rate_limit_address_jobs: int = Field(
        36,
        ge=1,
        description="Generation jobs one client address (an IPv6 /64) may start per window, over all its sessions. "
        "Behind a reverse proxy, let uvicorn trust its X-Forwarded-For (FORWARDED_ALLOW_IPS), or every visitor "
        "shares the proxy's address.",
    )
    rate_limit_window_s: float = Field(60.0, gt=0)
    cookie_secure: bool = Field(False, description="Send the session cookie over HTTPS only.")
    session_max_age_s: int = 30 * 24 * 3600
    analytics_keep_days: int = Field(
        0,
        ge=0,
        description="Roll raw analytics events older than this many days into daily counts (0: never).",
    )

    lab_schedule: str | None = Field(
        None,
        description="Run the lab's update cycle on a timer: 'HH:MM' (daily, UTC) or 'every N[s|m|h|d]' (off if unset).",
    )
    lab_models: str | None = Field(
        None,
        description="Models the schedule updates, comma-separated (default: those shipping a held-out set).",
    )
    lab_corpus: Path | None = Field(
        None, description="The dataset the models learned from (default var/resource/datasets/music21)."
    )
    lab_max_steps: int = Field(
        200, ge=1, description="Fine-tuning steps of each scheduled cycle's candidate."
    )
    lab_prefer_after: int = Field(
        0,
        ge=0,
        description="After a scheduled update, run `lab prefer` once this many feedback signals arrived since "
        "its last run (0: never).",
    )

    @field_validator("queue_url")
    @classmethod
    def _queue(cls, value: str | None) -> str | None:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"queue_url {value!r}: give a Redis URL, redis://host:6379/0")
        return value or None

    @field_validator("lab_schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        if value:
            from museforge.lab.schedule import parse_schedule

            parse_schedule(value)  # refused at start-up, with the forms it takes
        return value or None

    def threads_per_worker(self) -> int:
        """Torch threads for one job: the idle CPUs this process may use, shared by the workers so they do not
        oversubscribe (`museforge.machine.choose_threads`, as every command decides)."""
        return choose_threads(self.torch_threads or None, share=self.workers).threads
