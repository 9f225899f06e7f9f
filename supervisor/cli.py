"""Command line: the only place that prints for users and chooses exit codes.

Heavy modules (anyio, psutil, structlog) are imported inside the command handlers so that quick
commands such as `status` start fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from supervisor.errors import EXIT_INTERNAL, EXIT_OK, EXIT_USAGE, ConfigError, SupervisorError

if TYPE_CHECKING:
    from supervisor import control

Handler = Callable[[argparse.Namespace], int]


def _fail(message: str) -> None:
    print(f"supervisor: {message}", file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one `supervisor: ...` line and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        _fail(f'{message}; see "{self.prog} --help"')
        raise SystemExit(EXIT_USAGE)


def _out(text: str) -> None:
    print(text)


def _cmd_check_config(args: argparse.Namespace) -> int:
    from supervisor import config, paths

    path = paths.config_path(args.config)
    try:
        cfg = config.load(path)
    except ConfigError as exc:
        for line in exc.lines():
            _fail(line)
        return exc.exit_code
    _out(f"{path}: valid; {cfg.summary()}")
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    if sys.platform == "win32":
        from supervisor.errors import UnsupportedPlatformError

        raise UnsupportedPlatformError(sys.platform)
    from supervisor import signals

    # Before the slow imports: until the daemon's handlers are installed, its signals stay
    # pending instead of killing it.
    signals.block()
    from supervisor import daemon

    return daemon.main(
        daemon.RunOptions(
            config=args.config,
            state_dir=args.state_dir,
            log_format=args.log_format,
            log_level=args.log_level,
            exit_with_parent=bool(args.exit_with_parent),
            interactive=not args.non_interactive,
        )
    )


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
        from supervisor.errors import NoAnswerError

        raise NoAnswerError(conn.daemon.state_dir, conn.daemon.pid, cmd, timeout_s or 0.0) from None


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

        from supervisor import status

        now = time.time()
        _out("\n\n".join(status.render_table(doc, now) for doc in docs if isinstance(doc, dict)))
    return EXIT_OK


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


def _cmd_start(args: argparse.Namespace) -> int:
    from supervisor import control

    return _act(args, control.Command.START, control.REPLY_TIMEOUT_S)


def _cmd_stop(args: argparse.Namespace) -> int:
    from supervisor import control

    if args.names:
        from supervisor.errors import NoAnswerError, StillStoppingError

        try:
            # A stop answers once the sidecars are gone: that may take their stop.timeout.
            return _act(args, control.Command.STOP, args.wait)
        except NoAnswerError:
            raise StillStoppingError(args.names, args.wait or 0.0) from None
    control.stop(_running(args), args.wait)
    return EXIT_OK


def _cmd_reload(args: argparse.Namespace) -> int:
    import signal

    from supervisor import control

    control.send(_running(args), signal.SIGHUP)
    return EXIT_OK


def _cmd_restart(args: argparse.Namespace) -> int:
    import signal

    from supervisor import control

    if args.names:
        return _act(args, control.Command.RESTART, None)
    control.send(_running(args), signal.SIGUSR1)
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
        _out(f"{record.get('name')}: ready{url}")
    return EXIT_OK


def _cmd_events(args: argparse.Namespace) -> int:
    import json

    from supervisor import control, status

    with control.Connection.open(_running(args)) as conn:
        _ask(conn, control.Command.SUBSCRIBE, (), control.REPLY_TIMEOUT_S)
        try:
            for event in conn.events():
                line = json.dumps(event) if args.json else status.render_event(event)
                print(line, flush=True)  # a pipe (| grep) sees each event as it happens
        except KeyboardInterrupt:
            pass  # the normal way to stop following
    return EXIT_OK


def _cmd_port(args: argparse.Namespace) -> int:
    from supervisor.errors import EXIT_PORT_HELD
    from supervisor.reconcile import diagnose

    marker: str | None = args.marker or None
    found = diagnose.diagnose(args.port, marker)
    if args.json:
        _out(diagnose.render_json(args.port, found))
    else:
        _out(diagnose.render_text(args.port, found, marker))
    return EXIT_PORT_HELD if found else EXIT_OK


def _cmd_service(args: argparse.Namespace) -> int:
    from supervisor import service

    kind = service.Kind(args.kind) if args.kind else service.default_kind()
    match args.action:
        case "print":
            sys.stdout.write(service.render(kind, service.spec_for(args.config)))
        case "install":
            lines = service.install(kind, service.spec_for(args.config), force=args.force)
            _out("\n".join(lines))
        case "uninstall":
            _out("\n".join(service.uninstall(kind, service.home(), force=args.force)))
    return EXIT_OK


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port 1..65535, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="supervisor",
        description="Supervise local helper servers (sidecars) with a safe port preflight.",
    )
    from supervisor import __version__

    parser.add_argument("--version", action="version", version=f"sidecar-supervisor {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    def config_opt(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "-c",
            "--config",
            metavar="PATH",
            help="config file (default: $SUPERVISOR_CONFIG, then the user config dir)",
        )

    def state_opt(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--state-dir",
            metavar="DIR",
            help="state dir (default: $SUPERVISOR_STATE_DIR, the config's, "
            "then the user state dir)",
        )

    run = command("run", _cmd_run, "run the daemon in the foreground")
    config_opt(run)
    state_opt(run)
    run.add_argument("--log-format", choices=["auto", "console", "json"])
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    run.add_argument(
        "--exit-with-parent",
        action="store_true",
        default=None,
        help="shut down when the launching process exits",
    )
    run.add_argument(
        "--non-interactive",
        action="store_true",
        help="never ask for consent to kill a live instance",
    )

    check = command("check-config", _cmd_check_config, "validate the config file")
    config_opt(check)

    def names_opt(p: argparse.ArgumentParser, what: str, *, required: bool = False) -> None:
        p.add_argument("names", nargs="+" if required else "*", metavar="NAME", help=what)

    def daemon_opts(p: argparse.ArgumentParser) -> None:
        config_opt(p)
        p.add_argument(
            "--state-dir",
            metavar="DIR",
            help="the daemon's state dir (default: $SUPERVISOR_STATE_DIR, the state dir of -c, "
            "the one running daemon, then the config's or the user state dir)",
        )

    status = command("status", _cmd_status, "show the daemon and its sidecars")
    names_opt(status, "only these sidecars")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    daemon_opts(status)

    start = command("start", _cmd_start, "start sidecars of the running daemon")
    names_opt(start, "the sidecars to start (an interactive launch)", required=True)
    daemon_opts(start)

    stop = command(
        "stop", _cmd_stop, "stop the running daemon (SIGTERM), or only the sidecars named"
    )
    names_opt(stop, "stop only these sidecars (they stay configured, in state stopped)")
    stop.add_argument(
        "--wait", type=_positive_float, metavar="S", help="wait up to S seconds until it is gone"
    )
    daemon_opts(stop)

    reload = command("reload", _cmd_reload, "reload the config of the running daemon (SIGHUP)")
    daemon_opts(reload)

    restart = command(
        "restart",
        _cmd_restart,
        "restart every sidecar of the running daemon (SIGUSR1), or only the sidecars named",
    )
    names_opt(restart, "restart only these sidecars (an interactive launch)")
    daemon_opts(restart)

    wait = command("wait", _cmd_wait, "wait until sidecars of the running daemon are ready")
    names_opt(wait, "the sidecars to wait for (default: all)")
    wait.add_argument(
        "--timeout", type=_positive_float, metavar="S", help="give up after S seconds (exit 4)"
    )
    daemon_opts(wait)

    events = command("events", _cmd_events, "follow the running daemon's state changes")
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    daemon_opts(events)

    port = command("port", _cmd_port, "diagnose who holds a TCP port (read-only)")
    port.add_argument("port", type=_port, metavar="PORT")
    port.add_argument("--marker", help="command-line substring that marks our program")
    port.add_argument("--json", action="store_true")

    service = command("service", _cmd_service, "print, install or uninstall a user service")
    service.add_argument("action", choices=["print", "install", "uninstall"])
    config_opt(service)
    service.add_argument(
        "--kind",
        choices=["systemd", "launchd"],
        help="default: launchd on macOS, systemd elsewhere",
    )
    service.add_argument(
        "--force", action="store_true", help="overwrite a different existing service file"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        code = handler(args)
        if args.command == "run":
            # Everything is flushed and removed by now; the interpreter's teardown would add
            # ~80 ms to every shutdown for nothing.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        return code
    except SupervisorError as exc:
        _fail(exc.message)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_INTERNAL


if __name__ == "__main__":
    raise SystemExit(main())
