"""Supervision has priority over clients: the share of the event loop the control server may use."""

from __future__ import annotations

import time

import anyio

CONTROL_SHARE = 0.2
BUDGET_WINDOW_S = 0.05


class Budget:
    """The event loop's time the control server may use: at most `share` of each window."""

    def __init__(self, share: float = CONTROL_SHARE, window_s: float = BUDGET_WINDOW_S) -> None:
        self._limit_s = share * window_s
        self._window_s = window_s
        self._began = time.perf_counter()
        self._used_s = 0.0

    def _roll(self, now: float) -> None:
        if now - self._began >= self._window_s:
            self._began = now
            self._used_s = 0.0

    def charge(self, since: float) -> None:
        """Work that began at `since` (time.perf_counter()) is done: count it."""
        now = time.perf_counter()
        self._roll(now)
        self._used_s += now - since

    async def turn(self) -> None:
        """Return at once while the window has time left; else wait for the next window."""
        now = time.perf_counter()
        self._roll(now)
        if self._used_s < self._limit_s:
            return
        await anyio.sleep(self._began + self._window_s - now)
