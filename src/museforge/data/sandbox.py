"""Run a parse that cannot be bounded in-process in a child process with memory and time limits.

music21 builds Python objects for every element of a score and can be driven to gigabytes or minutes by a
small file; no check before the parse bounds that. The child gets an address-space limit (so an allocation
beyond it fails there, not in the caller) and a wall-clock deadline after which it is killed. The caller's
memory does not grow with the parse: only the result comes back, pickled.

A server process has threads (jobs, the event loop), and forking a threaded process can deadlock the child;
so children come from a fork server started once, with music21 already imported. A process that is itself a
multiprocessing child (a `data build` worker) runs one task at a time on one thread and forks directly: a fork
server cannot be shared with such a process.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from museforge.data.limits import InputError, MiB, ReaderLimits

T = TypeVar("T")
_PRELOAD = [
    "__main__",
    "music21",
    "symusic",
    "museforge.data.formats",
]  # __main__: imported once, not per child


def _context() -> mp.context.BaseContext:
    if mp.parent_process() is not None:
        return mp.get_context("fork")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    return ctx


def _address_space() -> int:
    """This process's virtual memory size in bytes (the base the child's limit is added to)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _outcome(fn: Callable[..., Any], args: tuple) -> tuple[str, Any]:
    """``fn``'s result or failure as a message; returning drops the failed parse's frames and their memory."""
    try:
        return "ok", fn(*args)
    except InputError as exc:
        return "input", str(exc)
    except MemoryError:
        return "memory", ""
    except Exception as exc:  # a reader bug: reported like bad input, with its type
        return "input", f"unexpected {type(exc).__name__}: {exc}"


def _child(conn: Connection, fn: Callable[..., Any], args: tuple, memory_bytes: int) -> None:
    """Parse under a soft address-space limit; lift it again to report, so even a failure at the limit is told."""
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (_address_space() + memory_bytes, hard))
    outcome = _outcome(fn, args)
    resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
    try:
        conn.send(outcome)
    finally:
        conn.close()


def run_limited(fn: Callable[..., T], *args: Any, limits: ReaderLimits) -> T:
    """``fn(*args)`` in a child within ``limits.memory_bytes`` more memory and ``limits.seconds``;
    `InputError` naming the limit when it is exceeded, or with ``fn``'s own `InputError` message."""
    ctx = _context()
    receiver, sender = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(sender, fn, args, limits.memory_bytes), daemon=True)
    child.start()
    sender.close()
    try:
        if not receiver.poll(limits.seconds):
            raise InputError(f"reading took longer than the {limits.seconds:g} s limit")
        try:
            status, value = receiver.recv()
        except EOFError:
            child.join(1)
            raise InputError(f"the reader died (exit code {child.exitcode}) without a result") from None
    finally:
        receiver.close()
        if child.is_alive():
            child.kill()
        child.join()
    if status == "memory":
        raise InputError(f"reading needs more than the {limits.memory_bytes / MiB:g} MiB memory limit")
    if status == "input":
        raise InputError(value)
    return value
