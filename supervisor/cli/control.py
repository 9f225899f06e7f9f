"""Commands for a running daemon: status, start, stop, reload, restart, wait, events, top."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from supervisor.errors import (
    EXIT_OK,
    EXIT_USAGE,
)

if TYPE_CHECKING:
    pass

from supervisor.cli.common import STOP_WAIT_S, _act, _ask, _fail, _out, _running
from supervisor.cli.logs import _configured_sidecars


def _cmd_status(args: argparse.Namespace) -> int:
    import json

    from supervisor import control
    from supervisor.errors import SeveralRunningError

    daemons = control.running(args.config, args.state_dir)
    if len(daemons) > 1 and args.names:
        raise SeveralRunningError([d.state_dir for d in daemons])
    docs = []
    for daemon in daemons:
        with control.Connection.open(daemon) as conn:
            docs.append(_ask(conn, control.Command.STATUS, args.names, control.REPLY_TIMEOUT_S))
    if args.json:
        _out(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2))
    else:
        import time

        from supervisor.core import status

        for doc in docs:
            _with_usage(doc)
        now = time.time()
        _out("\n\n".join(status.render_table(doc, now) for doc in docs if isinstance(doc, dict)))
    return EXIT_OK


USAGE_SAMPLE_S = 0.1  # CPU is a rate: two readings this far apart (only without the daemon's)


def _with_usage(doc: object) -> None:
    """CPU and memory of each sidecar's process tree, when the daemon's status lacks them."""
    import time

    from supervisor.system import procs

    entries = doc.get("sidecars") if isinstance(doc, dict) else None
    lacking = [
        e
        for e in (entries if isinstance(entries, list) else [])
        if isinstance(e, dict) and isinstance(e.get("pid"), int) and "cpu_percent" not in e
    ]
    if not lacking:
        return
    sampler = procs.UsageSampler()
    sampler.sample(e["pid"] for e in lacking)
    time.sleep(USAGE_SAMPLE_S)
    usage = sampler.sample(e["pid"] for e in lacking)
    for entry in lacking:
        if (found := usage.get(entry["pid"])) is not None:
            entry["cpu_percent"] = found.cpu_percent
            entry["memory_bytes"] = found.memory_bytes


def _cmd_start(args: argparse.Namespace) -> int:
    from supervisor import control

    return _act(args, control.Command.START, control.REPLY_TIMEOUT_S)


def _cmd_stop(args: argparse.Namespace) -> int:
    from supervisor import control

    if args.names:
        from supervisor.control.client import BusyError
        from supervisor.errors import StillStoppingError

        try:
            # A stop answers once the sidecars are gone: that may take their stop.timeout.
            return _act(args, control.Command.STOP, args.wait)
        except BusyError as exc:
            if not exc.no_answer:
                raise  # refused before asking: nothing is stopping
            raise StillStoppingError(args.names, args.wait or 0.0) from None
    daemon = _running(args)
    if args.no_wait:
        control.stop(daemon, None)
        _out(f"asked the daemon (pid {daemon.pid}) to stop; it stops its sidecars, then exits")
        return EXIT_OK
    # Until it is gone: a `status` (or a new `run`) right after sees no daemon, not `stopping`.
    control.stop(daemon, args.wait if args.wait is not None else STOP_WAIT_S)
    _out(f"stopped: the daemon (pid {daemon.pid}) and its sidecars are gone")
    return EXIT_OK


def _cmd_reload(args: argparse.Namespace) -> int:
    from supervisor import control

    daemon = _running(args)
    result = control.reload(
        daemon, wait=args.wait or args.timeout is not None, timeout_s=args.timeout
    )
    if not result.applied:
        _fail(f"the new config was rejected: {result.error}; the daemon keeps the old one")
        return EXIT_USAGE
    if args.wait:
        _out(f"reloaded: the daemon (pid {daemon.pid}) applied the new config")
    else:
        _out(f"asked the daemon (pid {daemon.pid}) to reload its config (--wait waits for it)")
    return EXIT_OK


def _cmd_restart(args: argparse.Namespace) -> int:
    import signal

    from supervisor import control

    if args.names:
        return _act(args, control.Command.RESTART, None)
    daemon = _running(args)
    control.send(daemon, signal.SIGUSR1)
    _out(f"asked the daemon (pid {daemon.pid}) to restart every sidecar")
    return EXIT_OK


def _cmd_wait(args: argparse.Namespace) -> int:
    from supervisor import control
    from supervisor.errors import command

    daemon = _running(args)

    def stopped(names: list[str]) -> None:
        verb = "is" if len(names) == 1 else "are"
        start = command("start", "--state-dir", daemon.state_dir, *names)
        _fail(f'note: {", ".join(names)} {verb} stopped; waiting until started ("{start}")')

    with control.Connection.open(daemon) as conn:
        ready = control.wait_ready(conn, args.names, args.timeout, on_stopped=stopped)
    for record in ready:
        url = f" {record['url']}" if record.get("url") else ""
        _out(f"{record.get('name')}: {record.get('state') or 'ready'}{url}")  # or completed
    return EXIT_OK


def _cmd_events(args: argparse.Namespace) -> int:
    import json

    from supervisor import control
    from supervisor.core import status

    with control.Connection.open(_running(args)) as conn:
        _ask(conn, control.Command.SUBSCRIBE, (), control.REPLY_TIMEOUT_S)
        try:
            for event in conn.events():
                line = json.dumps(event) if args.json else status.render_event(event)
                print(line, flush=True)  # a pipe (| grep) sees each event as it happens
        except KeyboardInterrupt:
            pass  # the normal way to stop following
    return EXIT_OK


def _cmd_top(args: argparse.Namespace) -> int:
    from supervisor.errors import NoTerminalError

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise NoTerminalError("top", '"supervisor status" prints the same table once')
    from supervisor.cli import top

    daemon = _running(args)
    view = top.Top(daemon, _configured_sidecars(args.config), daemon.state_dir)
    if not view.run():
        _out(f"the daemon (pid {daemon.pid}) stopped")
    return EXIT_OK
