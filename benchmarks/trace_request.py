"""Which of museforge's modules one REMI web request runs through: a job posted to the JSON API of the real app
(SQLite store, the shipped models) is followed from the request to the stored song, and every module of the
package whose code runs on the way is listed (profiling hooks on every thread; imports are not counted).

Prints one JSON line. Point ``PYTHONPATH`` at another checkout's ``src`` to trace its code (before a change).

    .venv/bin/python benchmarks/trace_request.py [--bars 8]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import museforge
from museforge.machine import cpu_model

PACKAGE = Path(museforge.__file__).resolve().parent


def _module(filename: str) -> str | None:
    path = Path(filename)
    if PACKAGE not in path.parents:
        return None
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bars", type=int, default=8)
    args = parser.parse_args()

    from fastapi.testclient import TestClient

    from museforge.web import Settings, create_app
    from museforge.web.security import CSRF_HEADER

    seen: set[str] = set()
    tracing = threading.Event()

    def profile(frame, event, arg):  # sys.setprofile's hook
        if tracing.is_set() and event == "call":
            name = _module(frame.f_code.co_filename)
            if name is not None and frame.f_code.co_name != "<module>":
                seen.add(name)

    threading.setprofile(profile)  # before the app starts its threads; it records only while `tracing` is set
    sys.setprofile(profile)
    with tempfile.TemporaryDirectory() as var:
        app = create_app(Settings(var_dir=Path(var), workers=1, precision="fp32"))
        with TestClient(app) as client:
            headers = {CSRF_HEADER: client.get("/api/v1/auth/session").json()["csrf_token"]}
            body = {"model": "remi-transformer", "style": "folk", "bars": args.bars, "seed": 1}
            client.post("/api/v1/jobs", json=body, headers=headers)  # warm: the first job loads what it needs
            tracing.set()
            start = time.perf_counter()
            job = client.post("/api/v1/jobs", json=body, headers=headers).json()
            while job["status"] not in ("done", "failed"):
                job = client.get(f"/api/v1/jobs/{job['id']}?wait=10").json()
            wall = time.perf_counter() - start
            tracing.clear()
    sys.setprofile(None)
    modules = sorted(seen)
    print(
        json.dumps(
            {
                "request": "POST /api/v1/jobs remi-transformer, then polling to done",
                "status": job["status"],
                "modules": len(modules),
                "packages": sorted({m.split(".")[0] for m in modules}),
                "module_list": modules,
                "wall_s": round(wall, 2),
                "cpu": cpu_model(),
            }
        )
    )


if __name__ == "__main__":
    main()
