"""A per-client-address rate limit, next to the per-session one the store counts.

A visitor who drops their cookie gets a new anonymous session, and with it a fresh per-session budget; the
address limit holds across sessions. It is kept in memory: the app serves from one process, and a restart
forgetting recent requests only ever allows more, never fewer, jobs.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import deque


def address_key(host: str | None) -> str:
    """What one client is: its IPv4 address, or the /64 network of an IPv6 one (one subscriber is usually given a
    whole /64, so counting single IPv6 addresses would let them rotate through it)."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class SlidingWindowLimiter:
    """At most ``limit`` events per key in any ``window_s`` seconds; thread-safe, memory bounded by the keys
    active within one window."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit, self.window_s = limit, window_s
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._next_sweep = 0.0

    def take(self, key: str, now: float | None = None) -> float | None:
        """Count one event for ``key`` and return None, or, when its budget is spent, count nothing and return
        the seconds until it can try again."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._sweep(now)
            events = self._events.setdefault(key, deque())
            while events and events[0] <= now - self.window_s:
                events.popleft()
            if len(events) >= self.limit:
                return max(0.0, events[0] + self.window_s - now)
            events.append(now)
            return None

    def _sweep(self, now: float) -> None:
        """Forget keys with no event in the window (at most once a window, so a take stays cheap)."""
        if now < self._next_sweep:
            return
        self._events = {k: e for k, e in self._events.items() if e and e[-1] > now - self.window_s}
        self._next_sweep = now + self.window_s
