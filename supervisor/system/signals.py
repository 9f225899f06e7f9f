"""The signals the daemon handles (SPEC 7), shared by the CLI, which blocks them early."""

from __future__ import annotations

import signal

HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def block() -> None:
    """Hold these signals pending until the daemon's handlers are installed (see unblock)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)


def unblock() -> None:
    """Deliver what is pending to the handlers now installed; children inherit the mask."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
