"""status.json, kept current: rewritten on every state change, coalesced, fsynced off the loop."""

from __future__ import annotations

import threading
from collections.abc import Callable

import anyio
from structlog.typing import FilteringBoundLogger

from supervisor.system import workers
from supervisor.system.statedir import STATUS_NAME, StateDir

# At most this often: a crash storm of 50 sidecars must not turn into hundreds of fsyncs a
# second.
MIN_GAP_S = 0.05
# ... and a few ms after the change that triggered it: a burst (exit, restart, spawn) becomes
# one write, made after the respawn rather than in its way.
SETTLE_S = 0.005

Document = dict[str, object]


class StatusWriter:
    """Writes snapshots of `document()`; an older snapshot never replaces a newer one."""

    def __init__(
        self, state: StateDir, document: Callable[[], Document], log: FilteringBoundLogger
    ) -> None:
        self._state = state
        self._document = document
        self._log = log
        self._dirty = anyio.Event()
        self._lock = threading.Lock()
        self._seq = 0
        self._written = 0
        self._failing = False

    def changed(self) -> None:
        """A state changed: `run` writes a snapshot soon."""
        self._dirty.set()

    async def write_now(self) -> Document:
        """Write a snapshot taken now (the fsync in a worker thread); returns it."""
        doc, seq = self._snapshot()
        await workers.run_sync(self._store, doc, seq)
        return doc

    def write_blocking(self) -> Document:
        """The same, on the calling thread: for the last write, when the loop is ending."""
        doc, seq = self._snapshot()
        self._store(doc, seq)
        return doc

    async def run(self) -> None:
        while True:
            await self._dirty.wait()
            await anyio.sleep(SETTLE_S)
            self._dirty = anyio.Event()
            await self.write_now()
            await anyio.sleep(MIN_GAP_S)

    def _snapshot(self) -> tuple[Document, int]:
        # Taken on the loop, so the document is consistent; only the write leaves it.
        self._seq += 1
        return self._document(), self._seq

    def _store(self, doc: Document, seq: int) -> None:
        with self._lock:
            if seq < self._written:
                return
            try:
                self._state.write(STATUS_NAME, doc)
                self._failing = False
            except OSError as exc:
                if not self._failing:  # once per failure streak, not per state change
                    self._log.error("status_write_failed", error=str(exc))
                self._failing = True
            self._written = seq
