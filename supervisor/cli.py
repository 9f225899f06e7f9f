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
    from supervisor.config import SidecarConfig

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
            log_file=args.log_file,
        )
    )


def _running(args: argparse.Namespace) -> control.RunningDaemon:
    from supervisor import control

    return control.find_daemon(control.resolve_state_dir(args.config, args.state_dir))


def _cmd_status(args: argparse.Namespace) -> int:
    import json
    import time

    from supervisor import control, status

    doc = control.read_status(_running(args))
    _out(json.dumps(doc, indent=2) if args.json else status.render_table(doc, time.time()))
    return EXIT_OK


def _cmd_stop(args: argparse.Namespace) -> int:
    from supervisor import control

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

    control.send(_running(args), signal.SIGUSR1)
    return EXIT_OK


def _configured_sidecars(config_arg: str | None) -> tuple[SidecarConfig, ...]:
    """The config's sidecars; none when the default config is missing or broken (an explicit
    -c that cannot be read is an error)."""
    from supervisor import config, paths

    try:
        return config.load(paths.config_path(config_arg)).sidecars
    except ConfigError:
        if config_arg:
            raise
        return ()


def _cmd_logs(args: argparse.Namespace) -> int:
    import time

    from supervisor import control, tail

    configured = _configured_sidecars(args.config)
    state_dir = control.resolve_state_dir(args.config, args.state_dir)
    reader = tail.OutputReader.open(state_dir, args.name, configured)
    out = sys.stdout.buffer
    try:
        out.write(b"".join(reader.last(args.lines)))
        out.flush()
        while args.follow:  # until interrupted (Ctrl-C: exit 130, quietly)
            data = reader.follow()
            if data:
                out.write(data)
                out.flush()
            else:
                time.sleep(tail.POLL_S)
    finally:
        reader.close()
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
        "--log-file",
        metavar="PATH",
        help="write the log as JSON lines to PATH, rotated per log_max_bytes/log_backups, "
        'instead of stderr ("" = stderr; default: the config\'s log_file)',
    )
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

    status = command("status", _cmd_status, "show the daemon and its sidecars")
    status.add_argument("--json", action="store_true", help="print status.json")
    config_opt(status)
    state_opt(status)

    stop = command("stop", _cmd_stop, "stop the running daemon (SIGTERM)")
    stop.add_argument(
        "--wait", type=_positive_float, metavar="S", help="wait up to S seconds until it is gone"
    )
    config_opt(stop)
    state_opt(stop)

    for name, handler, text in (
        ("reload", _cmd_reload, "reload the config of the running daemon (SIGHUP)"),
        ("restart", _cmd_restart, "restart every sidecar of the running daemon (SIGUSR1)"),
    ):
        p = command(name, handler, text)
        config_opt(p)
        state_opt(p)

    logs_cmd = command("logs", _cmd_logs, "show a sidecar's output (its output.log)")
    logs_cmd.add_argument("name", metavar="NAME", help="the sidecar")
    logs_cmd.add_argument(
        "-n",
        "--lines",
        type=_line_count,
        default=50,
        metavar="N",
        help="show the last N lines (default 50), from rotated files too",
    )
    logs_cmd.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="then print new lines as they are written, across rotation, until interrupted",
    )
    config_opt(logs_cmd)
    state_opt(logs_cmd)

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
