"""How facts are shown to people (pure): escaped text, signal names, local start times."""

from __future__ import annotations

import signal
import time


def printable(text: str, limit: int | None = None) -> str:
    """`text` with control characters escaped (it may come from a file or another process's
    command line: terminal escapes must never reach a terminal), cut at `limit` characters."""
    safe = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    if limit is None or len(safe) <= limit:
        return safe
    return safe[: limit - 3] + "..."


def signal_name(sig: int | None) -> str | None:
    """SIGTERM for 15; the number as text when it names no signal; None for None."""
    if sig is None:
        return None
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)


def local_time(epoch_s: float | None) -> str:
    """A process start time as people read it: 2026-01-01 12:00:00 CET; "unknown" for None."""
    if epoch_s is None:
        return "unknown"
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(epoch_s))
