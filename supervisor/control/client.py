"""Addressing the running daemon from a command: find it, read its status, signal it.

The daemon is found through `<state_dir>/supervisor.pid`, verified by pid *and* create time: a
stale file or a recycled pid means "not running" (exit 3).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import NamedTuple

from supervisor import paths, proctime, tags
from supervisor.errors import ConfigError, NotRunningError, StillRunningError
from supervisor.statedir import PID_NAME, STATUS_NAME, StateDir, float_field, int_field

STOP_POLL_MAX_S = 0.05


class RunningDaemon(NamedTuple):
    pid: int
    create_time: float
    state_dir: Path


def resolve_state_dir(config_arg: str | None, state_dir_arg: str | None) -> Path:
    """--state-dir, $SUPERVISOR_STATE_DIR, the config's state_dir, then the platform default."""
    configured: Path | None = None
    if not state_dir_arg and not os.environ.get(paths.STATE_DIR_ENV):
        from supervisor import config

        path = paths.config_path(config_arg)
        try:
            configured = config.load(path).supervisor.state_dir
        except ConfigError:
            if config_arg:  # an explicit -c that cannot be read is the user's mistake
                raise
    return paths.state_dir(state_dir_arg, configured)


def _read(state_dir: Path, name: str) -> dict[str, object] | None:
    try:
        with StateDir.open(state_dir, create=False) as state:
            return state.read(name)
    except (FileNotFoundError, NotADirectoryError):
        return None


def find_daemon(state_dir: Path) -> RunningDaemon:
    record = _read(state_dir, PID_NAME)
    pid = int_field(record, "pid")
    created = float_field(record, "create_time")
    if pid is None or created is None or not is_our_daemon(pid, created):
        raise NotRunningError(state_dir)
    return RunningDaemon(pid=pid, create_time=created, state_dir=state_dir)


def is_our_daemon(pid: int, created: float) -> bool:
    """`pid` runs, with the recorded create time, as `supervisor run`, and as our uid.

    A forged or stale supervisor.pid must never get a stranger signalled: a recycled pid fails
    the create time, another program fails the command line, another user's process the uid.
    """
    if not proctime.is_alive(pid, created):
        return False
    if proctime.owner_uid(pid) != os.getuid():
        return False
    argv = proctime.cmdline(pid)
    return argv is not None and tags.is_supervisor_daemon(argv)


def read_status(daemon: RunningDaemon) -> dict[str, object]:
    """status.json of the running daemon (a minimal document if it is not written yet)."""
    doc = _read(daemon.state_dir, STATUS_NAME)
    if doc is None or not isinstance(doc.get("supervisor"), dict):
        doc = {"supervisor": {"pid": daemon.pid, "create_time": daemon.create_time}, "sidecars": []}
    return doc


def stop(daemon: RunningDaemon, wait_s: float | None) -> None:
    """SIGTERM; with `wait_s`, return only once the daemon is gone (StillRunningError after)."""
    send(daemon, signal.SIGTERM)
    if wait_s is None:
        return
    deadline = time.monotonic() + wait_s
    delay = 0.005
    while proctime.is_alive(daemon.pid, daemon.create_time):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise StillRunningError(daemon.pid, wait_s)
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, STOP_POLL_MAX_S)


def send(daemon: RunningDaemon, sig: signal.Signals) -> None:
    # Re-verified just before the signal: the daemon may have exited since we read its PID file.
    if not is_our_daemon(daemon.pid, daemon.create_time):
        raise NotRunningError(daemon.state_dir)
    try:
        os.kill(daemon.pid, sig)
    except ProcessLookupError:
        raise NotRunningError(daemon.state_dir) from None


class ReloadResult(NamedTuple):
    applied: bool
    error: str | None


def reload(daemon: RunningDaemon, *, wait: bool) -> ReloadResult:
    """SIGHUP; with `wait`, return once the daemon has applied or rejected a reload that began
    after it received this signal (it counts SIGHUPs in status.json: see Daemon._reload)."""
    before = _reload_record(daemon).get("received")
    received = before if isinstance(before, int) else 0
    send(daemon, signal.SIGHUP)
    if not wait:
        return ReloadResult(True, None)
    delay = 0.005
    while True:
        record = _reload_record(daemon)
        done = record.get("done")
        if isinstance(done, int) and done > received:
            error = record.get("error")
            return ReloadResult(record.get("result") == "applied", str(error) if error else None)
        if not is_our_daemon(daemon.pid, daemon.create_time):
            raise NotRunningError(daemon.state_dir)
        time.sleep(delay)
        delay = min(delay * 2, STOP_POLL_MAX_S)


def _reload_record(daemon: RunningDaemon) -> dict[str, object]:
    supervisor = read_status(daemon).get("supervisor")
    record = supervisor.get("reload") if isinstance(supervisor, dict) else None
    return record if isinstance(record, dict) else {}
