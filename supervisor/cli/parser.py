"""The command line: every command, its options and its handler."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass

from supervisor.cli.common import STOP_WAIT_S, Handler, _line_count, _Parser, _port, _positive_float
from supervisor.cli.control import (
    _cmd_events,
    _cmd_reload,
    _cmd_restart,
    _cmd_start,
    _cmd_status,
    _cmd_stop,
    _cmd_top,
    _cmd_wait,
)
from supervisor.cli.logs import _cmd_logs
from supervisor.cli.port import _cmd_mcp, _cmd_port
from supervisor.cli.run import _cmd_check_config, _cmd_init, _cmd_run, _cmd_service
from supervisor.errors import EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="supervisor",
        description="Supervise local helper servers (sidecars) with a safe port preflight.",
    )
    from supervisor import __version__

    parser.add_argument("--version", action="version", version=f"sidecar-supervisor {__version__}")
    sub = parser.add_subparsers(
        dest="command",
        metavar="COMMAND",
        parser_class=_Parser,
        help='one of these; "supervisor COMMAND --help" shows its options',
    )
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
    run.add_argument(
        "--log-format",
        choices=["auto", "console", "json"],
        help="stderr log lines: json (one object each), console (text), or auto: console on "
        "a TTY, else json (default: the config's log_format); fatal start-up errors too",
    )
    run.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="the least severe level logged (default: the config's log_level, then info)",
    )
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

    init = command(
        "init", _cmd_init, "write a commented starter config (never over an existing file)"
    )
    init.add_argument(
        "path",
        nargs="?",
        metavar="PATH",
        help="where to write it (default: $SUPERVISOR_CONFIG, then "
        "<user config dir>/supervisor.toml, where every command looks)",
    )
    init.add_argument(
        "--minimal",
        action="store_true",
        help="a short starter instead: two sidecars, only the keys most configs need",
    )

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
        "--wait",
        type=_positive_float,
        metavar="S",
        help=f"wait up to S seconds until it is gone (default {STOP_WAIT_S:g})",
    )
    stop.add_argument(
        "--no-wait", action="store_true", help="return as soon as the daemon was asked to stop"
    )
    daemon_opts(stop)

    reload = command("reload", _cmd_reload, "reload the config of the running daemon (SIGHUP)")
    reload.add_argument(
        "--wait",
        action="store_true",
        help="return only once the daemon has applied the new config (exit 0) or rejected it "
        "(exit 2, with the error)",
    )
    reload.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="S",
        help="with --wait (implied): give up waiting after S seconds (exit 4; the reload goes on)",
    )
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

    top_cmd = command(
        "top", _cmd_top, "a live full-screen view of the sidecars, with keys to act on them"
    )
    daemon_opts(top_cmd)

    events = command("events", _cmd_events, "follow the running daemon's state changes")
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    daemon_opts(events)

    logs_cmd = command(
        "logs", _cmd_logs, "show sidecars' output (their output.log), merged in time order"
    )
    logs_cmd.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="the sidecars (default: every one, each line prefixed with its name)",
    )
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
    port.add_argument("port", type=_port, metavar="PORT", help="the TCP port (1..65535)")
    port.add_argument("--marker", help="command-line substring that marks our program")
    config_opt(port)
    port.add_argument(
        "--state-dir",
        metavar="DIR",
        help="also read this state dir's spawn ledger (the default state dir's and those of "
        "the daemons in the registry are always read)",
    )
    port.add_argument(
        "--json", action="store_true", help="print the holders and verdicts as one JSON object"
    )

    mcp = command(
        "mcp",
        _cmd_mcp,
        "serve the Model Context Protocol on stdio, for coding agents (needs the [mcp] extra)",
    )
    daemon_opts(mcp)

    service = command("service", _cmd_service, "print, install or uninstall a user service")
    service.add_argument(
        "action",
        choices=["print", "install", "uninstall"],
        help="print: show the file; install: write it; uninstall: remove it (only if unedited)",
    )
    config_opt(service)
    service.add_argument(
        "--kind",
        choices=["systemd", "launchd"],
        help="default: launchd on macOS, systemd elsewhere",
    )
    service.add_argument(
        "--force", action="store_true", help="overwrite a different existing service file"
    )
    completion = command(
        "completion", _cmd_completion, "print a shell completion script (bash, zsh or fish)"
    )
    completion.add_argument(
        "shell",
        choices=["bash", "zsh", "fish"],
        help='e.g. bash: eval "$(supervisor completion bash)" in ~/.bashrc',
    )
    return parser


def _cmd_completion(args: argparse.Namespace) -> int:
    from supervisor.cli import completion

    sys.stdout.write(completion.render(args.shell, build_parser()))
    return EXIT_OK
