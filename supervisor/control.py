"""Commands that address the running daemon: status, stop, reload, restart.

The daemon is found through `<state_dir>/supervisor.pid`, verified by pid *and* create time: a
stale file or a recycled pid means "not running" (exit 3).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from pathlib import Path
from typing import NamedTuple

from supervisor import paths, pidfile, proctime
from supervisor.errors import EXIT_OK, ConfigError, NotRunningError, StillRunningError

STOP_POLL_MAX_S = 0.05


class RunningDaemon(NamedTuple):
    pid: int
    create_time: float
    state_dir: Path


def resolve_state_dir(args: argparse.Namespace) -> Path:
    """--state-dir, $SUPERVISOR_STATE_DIR, the config's state_dir, then the platform default."""
    configured: Path | None = None
    if not args.state_dir and not os.environ.get(paths.STATE_DIR_ENV):
        from supervisor import config

        path = paths.config_path(args.config)
        try:
            configured = config.load(path).supervisor.state_dir
        except ConfigError:
            if args.config:  # an explicit -c that cannot be read is the user's mistake
                raise
    return paths.state_dir(args.state_dir, configured)


def find_daemon(state_dir: Path) -> RunningDaemon:
    record = pidfile.read(state_dir / "supervisor.pid")
    pid = pidfile.int_field(record, "pid")
    created = pidfile.float_field(record, "create_time")
    if pid is None or created is None or not proctime.is_alive(pid, created):
        raise NotRunningError(state_dir)
    return RunningDaemon(pid=pid, create_time=created, state_dir=state_dir)


def status(args: argparse.Namespace) -> int:
    from supervisor import status as status_doc

    state_dir = resolve_state_dir(args)
    daemon = find_daemon(state_dir)
    doc = pidfile.read(state_dir / "status.json")
    if doc is None or not isinstance(doc.get("supervisor"), dict):
        doc = {"supervisor": {"pid": daemon.pid, "create_time": daemon.create_time}, "sidecars": []}
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(status_doc.render_table(doc, time.time()))
    return EXIT_OK


def stop(args: argparse.Namespace) -> int:
    daemon = find_daemon(resolve_state_dir(args))
    _send(daemon, signal.SIGTERM)
    if args.wait is None:
        return EXIT_OK
    deadline = time.monotonic() + args.wait
    delay = 0.005
    while proctime.is_alive(daemon.pid, daemon.create_time):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise StillRunningError(daemon.pid, args.wait)
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, STOP_POLL_MAX_S)
    return EXIT_OK


def signal_daemon(args: argparse.Namespace, name: str) -> int:
    daemon = find_daemon(resolve_state_dir(args))
    _send(daemon, signal.Signals[name])
    return EXIT_OK


def _send(daemon: RunningDaemon, sig: signal.Signals) -> None:
    # Re-verified just before the signal: the daemon may have exited since we read its PID file.
    if not proctime.is_alive(daemon.pid, daemon.create_time):
        raise NotRunningError(daemon.state_dir)
    try:
        os.kill(daemon.pid, sig)
    except ProcessLookupError:
        raise NotRunningError(daemon.state_dir) from None
