"""sd_notify with the stdlib: readiness, status, reload, stop and watchdog messages to systemd.

Without `NOTIFY_SOCKET` every call is a no-op, so the daemon calls it unconditionally.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Mapping

# What systemd hands to the daemon; the daemon's children should not inherit these (with
# NotifyAccess=main systemd ignores them anyway, but a child must not believe it was asked).
ENV_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def _address(value: str) -> str | None:
    """The AF_UNIX address for a NOTIFY_SOCKET value, or None for a form we do not speak."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]  # Linux abstract namespace
    return None  # e.g. systemd's "vsock:CID:PORT": not for a user service


def _watchdog_usec(environ: Mapping[str, str]) -> int | None:
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = environ.get("WATCHDOG_PID")
    # WATCHDOG_PID names the process the watchdog is meant for; an inherited one is not ours.
    if pid is not None and pid.strip() != str(os.getpid()):
        return None
    return usec


class Notifier:
    """Sends sd_notify datagrams to systemd; never raises, never blocks."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self._address = address
        self._watchdog_usec = watchdog_usec if address is not None else None
        self._sock: socket.socket | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        """A notifier for `$NOTIFY_SOCKET`; a no-op one when it is unset or unusable."""
        address = _address(environ.get("NOTIFY_SOCKET", ""))
        return cls(address, _watchdog_usec(environ) if address is not None else None)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *fields: str) -> None:
        """Send `fields` as one datagram (newline-separated); drop it if systemd can't take it."""
        if self._address is None or not fields:
            return
        payload = "\n".join(fields).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = self._connect(self._address)
            self._sock.send(payload)
        except BlockingIOError:
            pass  # systemd's queue is full: this message is lost, the daemon goes on
        except OSError:
            # Nobody listens (yet, or any more): reconnect next time, in case systemd re-created
            # its socket.
            self.close()

    @staticmethod
    def _connect(address: str) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | getattr(socket, "SOCK_CLOEXEC", 0))
        try:
            sock.setblocking(False)
            sock.connect(address)
        except OSError:
            sock.close()
            raise
        return sock

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def ready(self) -> None:
        self.send("READY=1")

    def status(self, text: str) -> None:
        self.send("STATUS=" + " ".join(text.splitlines()))

    def reloading(self) -> None:
        # systemd (Type=notify-reload, and for ordering) wants the monotonic time of the reload.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def extend_timeout(self, usec: int) -> None:
        """Still starting (or reloading): ask for `usec` more from now (systemd >= 236)."""
        self.send(f"EXTEND_TIMEOUT_USEC={usec}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def watchdog_interval_s(self) -> float | None:
        """How often to send WATCHDOG=1: half of `WATCHDOG_USEC`, or None when not asked."""
        if self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2 / 1_000_000
