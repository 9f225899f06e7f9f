"""A file descriptor that becomes readable when a process exits: pidfd (Linux), kqueue (macOS)."""

from __future__ import annotations

import os
import select
import sys

import anyio


class ExitHandle:
    """Readable once process `pid` has exited (it may still be an unreaped zombie)."""

    def __init__(self, pid: int, fd: int, kqueue: object | None = None) -> None:
        self.pid = pid
        self.fd: int | None = fd
        self._kqueue = kqueue

    async def wait(self) -> None:
        if self.fd is None:
            raise RuntimeError("the exit handle is closed")
        await anyio.wait_readable(self.fd)

    @property
    def pidfd(self) -> int | None:
        """The pidfd (Linux), through which signals reach this very process; None elsewhere."""
        return self.fd if self._kqueue is None else None

    def ready(self) -> bool:
        if self.fd is None:
            return True
        readable, _, _ = select.select([self.fd], [], [], 0)
        return bool(readable)

    def close(self) -> None:
        if self.fd is None:
            return
        if self._kqueue is not None:
            self._kqueue.close()  # type: ignore[attr-defined]
        else:
            os.close(self.fd)
        self.fd = None


def open_exit_handle(pid: int) -> ExitHandle | None:
    """An exit handle for `pid`, or None where the OS offers none (callers then poll).

    Raises ProcessLookupError if `pid` does not exist.
    """
    if sys.platform == "linux" and hasattr(os, "pidfd_open"):
        try:
            return ExitHandle(pid, os.pidfd_open(pid))
        except ProcessLookupError:
            raise
        except OSError:
            return None
    if sys.platform == "darwin":
        kq = select.kqueue()
        event = select.kevent(
            pid,
            filter=select.KQ_FILTER_PROC,
            flags=select.KQ_EV_ADD | select.KQ_EV_ONESHOT,
            fflags=select.KQ_NOTE_EXIT,
        )
        try:
            kq.control([event], 0, 0)
        except ProcessLookupError:
            kq.close()
            raise
        except OSError:
            kq.close()
            return None
        return ExitHandle(pid, kq.fileno(), kq)
    return None
