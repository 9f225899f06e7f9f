"""Blocking work off the event loop, even when no thread can be started: the one guard.

`anyio.to_thread.run_sync` starts a worker thread when none is idle. Under pid exhaustion (a
cgroup's `pids.max`, `RLIMIT_NPROC`, the system's pid_max) that raises `RuntimeError: can't
start new thread`, which escaped from the status writer and the adopted-orphan reaper and ended
the daemon (issue 25). Every blocking call of the daemon goes through `run_sync` here instead:
when no thread can be had, the call runs on the event loop's own thread (the loop stalls for the
length of one /proc scan or fsync, nothing fails), `thread_unavailable` is logged once per
streak, and the next call tries a thread again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, TypeVarTuple

import anyio
import anyio.to_thread
from structlog.typing import FilteringBoundLogger

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


LOG_EVERY_S = 60.0  # a shortage lasts: one line per minute at most, with the count
# The daemon's worker threads (anyio's default is 40). Each call is short (a /proc scan, a small
# file, an fsync), and a pool that grows to 40 in a crash storm and shrinks again when they idle
# out left the daemon's RSS 0.4-1.0 MiB higher after every storm of `bench scale` (8 threads:
# 0.3-0.4 MiB). A wait that may last and that many callers make at once (every sidecar's
# output.log flush at a reload, on a stuck disk) passes `own_thread=True`; the status writer's
# fsync, one at a time, holds at most one of the 8.
DAEMON_THREADS = 8


class _Shortage:
    """How many calls ran inline, and when that was last logged."""

    inline_calls = 0
    logged_calls = 0
    logged_at: float | None = None


shortage = _Shortage()


def limit_threads(count: int = DAEMON_THREADS) -> None:
    """At most `count` worker threads for this event loop's `run_sync` calls (the daemon's)."""
    anyio.to_thread.current_default_thread_limiter().total_tokens = count


async def run_sync(func: Callable[[*Ts], T], *args: *Ts, own_thread: bool = False) -> T:
    """`func(*args)` in a worker thread; on the loop's thread when none can be started.

    `own_thread`: outside the pool's limit (an idle worker may still be reused, or a thread is
    started), for a call that may wait long (bounded) and must not hold up the others while it
    does: a flush to a disk that may be stuck."""
    started = False

    def call() -> T:
        nonlocal started
        started = True
        return func(*args)

    limiter = anyio.CapacityLimiter(1) if own_thread else None
    try:
        return await anyio.to_thread.run_sync(call, limiter=limiter)
    except RuntimeError:
        if started:  # raised by `func` itself: not ours to swallow
            raise
    shortage.inline_calls += 1
    now = anyio.current_time()
    if shortage.logged_at is None or now - shortage.logged_at >= LOG_EVERY_S:
        _log().warning(
            "thread_unavailable",
            calls=shortage.inline_calls - shortage.logged_calls,
            detail="no thread can be started (a pid or thread limit): blocking work runs on "
            "the event loop meanwhile",
        )
        shortage.logged_at = now
        shortage.logged_calls = shortage.inline_calls
    return func(*args)


def _log() -> FilteringBoundLogger:
    from supervisor.system import logs

    return logs.get()
