"""`main`: parse, run the handler, turn a SupervisorError into one line and an exit code."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from supervisor.errors import (
    EXIT_INTERNAL,
    EXIT_OK,
    NotRunningError,
    SupervisorError,
)

if TYPE_CHECKING:
    from pathlib import Path


from supervisor.cli.common import Handler, _fail
from supervisor.cli.parser import build_parser


def _report(args: argparse.Namespace, exc: SupervisorError) -> None:
    """The one line for an error: `supervisor: ...`, or for `run` in JSON format, an event."""
    if args.command == "status" and isinstance(exc, NotRunningError):
        exc = _with_leftovers(exc)
    if args.command == "run" and _daemon_logs_json(args):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            print(_start_failed_event(exc), file=sys.stderr, flush=True)
    else:
        _fail(exc.message)


def _with_leftovers(exc: NotRunningError) -> SupervisorError:
    """After an unclean exit: which sidecars still run (and hold their port)."""
    from supervisor.cli import leftovers

    state_dir: Path | None = exc.state_dir
    if state_dir is None:
        return exc
    found = leftovers.find(state_dir)
    return leftovers.LeftoversError(state_dir, found) if found else exc


def _daemon_logs_json(args: argparse.Namespace) -> bool:
    """Whether `run` logs JSON: --log-format, else the config's log_format, else auto.

    A config that cannot be loaded has no log_format: auto (JSON unless stderr is a TTY).
    """
    log_format: str | None = args.log_format
    if log_format is None:
        from supervisor import config
        from supervisor.system import paths

        try:
            log_format = config.load(paths.config_path(args.config)).supervisor.log_format
        except SupervisorError:
            log_format = "auto"
    if log_format == "auto":
        try:
            return not sys.stderr.isatty()
        except (AttributeError, ValueError):
            return True
    return log_format == "json"


def _json_safe(value: object) -> object:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return str(value)


def _start_failed_event(exc: SupervisorError) -> str:
    """`daemon_start_failed` as one JSON line, shaped like the daemon's own log events."""
    import datetime as dt
    import json

    event: dict[str, object] = {
        "event": "daemon_start_failed",
        "error": exc.message,
        "exit_code": exc.exit_code,
    }
    for key, value in vars(exc).items():
        if key != "message" and not key.startswith("_") and key not in event:
            event[key] = _json_safe(value)
    event["level"] = "error"
    event["timestamp"] = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
    return json.dumps(event)


def main(argv: Sequence[str] | None = None) -> int:
    from supervisor.system import signals

    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):
        parser.print_help()  # a bare `supervisor`: what it can do, not a usage error
        return EXIT_OK
    args = parser.parse_args(argv)
    daemon = args.command == "run"
    if not daemon:
        signals.unblock()  # blocked by the entry point for the daemon's sake only
    handler: Handler = args.handler
    try:
        code = handler(args)
    except SupervisorError as exc:
        _finish_logs(daemon)
        _report(args, exc)
        code = exc.exit_code
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        code = EXIT_INTERNAL
    if daemon:
        # Everything is removed by now; the interpreter's teardown would add ~80 ms to every
        # shutdown for nothing. The log writer gets a bounded moment for its last lines.
        _finish_logs(daemon)
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
        os._exit(code)
    return code


def _finish_logs(daemon: bool) -> None:
    if daemon and "supervisor.system.logs" in sys.modules:
        from supervisor.system import logs

        logs.finish()
