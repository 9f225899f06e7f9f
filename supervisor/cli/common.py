"""What every command shares: one-line errors, the parser that reports them, the daemon a
command addresses."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from supervisor.errors import (
    EXIT_OK,
    EXIT_USAGE,
)

if TYPE_CHECKING:
    from supervisor import control


Handler = Callable[[argparse.Namespace], int]

# How long `stop` waits for the daemon to be gone by default: past the daemon's own bound
# (shutdown_timeout, 30 s by default, then it kills what is left).
STOP_WAIT_S = 120.0


def _fail(message: str) -> None:
    from supervisor.core import show

    # Never raises: stderr may be closed or a broken pipe (the launcher went away). Escaped: a
    # message may quote a config value, a path or another process's command line.
    with contextlib.suppress(OSError, ValueError, AttributeError):
        print(f"supervisor: {show.printable(message)}", file=sys.stderr, flush=True)


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one `supervisor: ...` line and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        _fail(f'{message}; see "{self.prog} --help"')
        raise SystemExit(EXIT_USAGE)


def _out(text: str) -> None:
    print(text)


def _running(args: argparse.Namespace) -> control.RunningDaemon:
    """The one daemon this command addresses (exit 2 when the registry lists several)."""
    from supervisor import control

    return control.the_daemon(args.config, args.state_dir)


def _ask(
    conn: control.Connection,
    cmd: control.Command,
    names: Sequence[str],
    timeout_s: float | None,
) -> object:
    try:
        return conn.request(cmd, names, timeout_s=timeout_s)
    except TimeoutError:
        from supervisor.control.client import BusyError

        # Alive and connected, but no answer: busy (exit 75), never "not running".
        daemon = conn.daemon
        what = f"no answer to {cmd} within {timeout_s or 0.0:g}s"
        raise BusyError(daemon.state_dir, daemon.pid, what, no_answer=True) from None


def _act(args: argparse.Namespace, cmd: control.Command, timeout_s: float | None) -> int:
    """start / stop / restart NAME...: one line per sidecar."""
    from supervisor import control

    with control.Connection.open(_running(args)) as conn:
        results = _ask(conn, cmd, args.names, timeout_s)
    for result in results if isinstance(results, list) else []:
        if isinstance(result, dict):
            pid = f", pid {result['pid']}" if isinstance(result.get("pid"), int) else ""
            _out(
                f"{result.get('name')}: {result.get('action')} "
                f"(was {result.get('was')}, now {result.get('state')}{pid})"
            )
    return EXIT_OK


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def _line_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of lines, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of lines >= 0, got {value}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port 1..65535, got {value}")
    return value
