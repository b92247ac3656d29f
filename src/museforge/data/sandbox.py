"""Run a parse that cannot be bounded in-process in a child process with memory and time limits.

music21 builds Python objects for every element of a score and can be driven to gigabytes or minutes by a
small file; no check before the parse bounds that. The child gets an address-space limit (so an allocation
beyond it fails there, not in the caller) and a wall-clock deadline after which it is killed. The caller's
memory does not grow with the parse: only the result comes back, pickled.

A process with one thread (a `data build` worker, the CLI) forks the child directly. A process with threads (the
web server: jobs, the event loop) must not fork, since the child could inherit a lock another thread holds; its
children come from a fork server started once, with music21 already imported. (A fork server cannot serve a
process forked from its owner, so the single-threaded pool workers could not use it anyway.)
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import threading
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
    if threading.active_count() == 1:
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


def _outcome(fn: Callable[..., Any], args: tuple, limit: int, slack: int) -> tuple[str, Any]:
    """``fn``'s result or failure as a message; returning drops the failed parse's frames and their memory.

    At the limit, C code does not always raise MemoryError (it may fail with another error), so any failure
    while the address space is within ``slack`` of the limit is reported as the memory limit."""
    try:
        return "ok", fn(*args)
    except MemoryError:
        return "memory", ""
    except Exception as exc:
        if _address_space() > limit - slack:
            return "memory", ""
        if isinstance(exc, InputError):
            return "input", str(exc)
        return "input", f"unexpected {type(exc).__name__}: {exc}"  # a reader bug, reported like bad input


def _child(conn: Connection, fn: Callable[..., Any], args: tuple, memory_bytes: int) -> None:
    """Parse under a soft address-space limit; lift it again to report, so even a failure at the limit is told."""
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _address_space() + memory_bytes
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    outcome = _outcome(fn, args, limit, min(64 * MiB, memory_bytes // 4))
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
