"""Command line: the only place that prints for users and chooses exit codes.

Heavy modules (anyio, psutil, structlog) are imported inside the command handlers so that quick
commands such as `status` start fast.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from supervisor.errors import (
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_USAGE,
    ConfigError,
    NotRunningError,
    SupervisorError,
)

if TYPE_CHECKING:
    from pathlib import Path

    from supervisor import control, service
    from supervisor.config import SidecarConfig
    from supervisor.reconcile import diagnose

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


def _cmd_check_config(args: argparse.Namespace) -> int:
    from supervisor import config
    from supervisor.system import paths

    path = paths.config_path(args.config)
    try:
        cfg = config.load(path)
    except ConfigError as exc:
        for line in exc.lines():
            _fail(line)
        return exc.exit_code
    from supervisor import checks

    # Valid, but could each sidecar start here? Its program on its PATH, its cwd, its files.
    found = [problem for sidecar in cfg.sidecars for problem in checks.problems(sidecar)]
    for problem in found:
        _fail(f"config {path}: {problem}")
    _service_notes(cfg.sidecars)
    if found:
        return EXIT_USAGE
    _out(f"{path}: valid; {cfg.summary()}")
    return EXIT_OK


def _service_notes(sidecars: Sequence[SidecarConfig]) -> None:
    """With a user service installed: the programs its minimal PATH would not find (notes)."""
    from supervisor import service

    kind = service.default_kind()
    try:
        installed = (service.service_dir(kind, service.home()) / service.file_name(kind)).exists()
    except SupervisorError:
        return
    if installed:
        for line in service.path_notes(kind, sidecars):
            _fail(f"note: under the installed {kind} service: {line}")


def _cmd_run(args: argparse.Namespace) -> int:
    if sys.platform == "win32":
        from supervisor.errors import UnsupportedPlatformError

        raise UnsupportedPlatformError(sys.platform)
    from supervisor.system import signals

    # Before the slow imports: until the daemon's handlers are installed, its signals stay
    # pending instead of killing it.
    signals.block()
    from supervisor.daemon import main as daemon

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
    from supervisor import top

    daemon = _running(args)
    view = top.Top(daemon, _configured_sidecars(args.config), daemon.state_dir)
    if not view.run():
        _out(f"the daemon (pid {daemon.pid}) stopped")
    return EXIT_OK


def _configured_sidecars(config_arg: str | None) -> tuple[SidecarConfig, ...]:
    """The config's sidecars; none when the default config is missing or broken (an explicit
    -c that cannot be read is an error)."""
    from supervisor import config
    from supervisor.system import paths

    try:
        return config.load(paths.config_path(config_arg)).sidecars
    except ConfigError:
        if config_arg:
            raise
        return ()


def _cmd_logs(args: argparse.Namespace) -> int:
    import time

    from supervisor import control, tail
    from supervisor.control import client

    configured = _configured_sidecars(args.config)
    state_dir = control.resolve_state_dir(args.config, args.state_dir)
    if not client.explicit(args.config, args.state_dir):
        # Like status: the one running daemon's logs (its sidecars are known by its state dir).
        daemons = control.discover()
        if len(daemons) == 1:
            state_dir = daemons[0].state_dir
    if len(args.names) != 1:
        return _merged_logs(args, state_dir, configured)
    reader = tail.OutputReader.open(state_dir, args.names[0], configured)
    out = sys.stdout.buffer
    try:
        out.write(b"".join(reader.last(args.lines)))
        out.flush()
        while args.follow:  # until interrupted (Ctrl-C: exit 130, quietly)
            data = reader.follow()
            if data:
                out.write(data)
                out.flush()
            # A writer that is busy now may rotate soon: look again sooner.
            time.sleep(tail.BUSY_POLL_S if data else tail.POLL_S)
    finally:
        reader.close()
    return EXIT_OK


def _merged_logs(
    args: argparse.Namespace, state_dir: Path, configured: Sequence[SidecarConfig]
) -> int:
    """`logs` with no name (every sidecar) or several: one stream in time order, prefixed."""
    import time

    from supervisor import logmerge, tail
    from supervisor.core import console

    if args.names:
        names = logmerge.ordered(args.names)
    else:
        with_file = [s.name for s in configured if s.output.file]
        off = {s.name for s in configured if not s.output.file}
        known = tail.known_names(state_dir, with_file)
        names = logmerge.ordered([*with_file, *sorted(known - set(with_file) - off)])
        if not names:
            _fail(f"note: no sidecar is configured or known in {state_dir}; nothing to show")
            return EXIT_OK
    readers = {name: tail.OutputReader.open(state_dir, name, configured) for name in names}
    colours = console.colour_wanted(sys.stdout.isatty(), os.environ)
    out = sys.stdout.buffer
    try:
        last = logmerge.merge({n: r.last(args.lines) for n, r in readers.items()}, args.lines)
        out.write(logmerge.render(last, names, colours=colours))
        out.flush()
        follower = logmerge.Follower(names)
        while args.follow:  # until interrupted (Ctrl-C: exit 130, quietly)
            batch = follower.batch({n: r.follow() for n, r in readers.items()})
            if batch:
                out.write(logmerge.render(batch, names, colours=colours))
                out.flush()
            else:
                time.sleep(tail.POLL_S)
    finally:
        for reader in readers.values():
            reader.close()
    return EXIT_OK


def _cmd_port(args: argparse.Namespace) -> int:
    from supervisor.control import registry
    from supervisor.errors import EXIT_PORT_HELD
    from supervisor.reconcile import diagnose
    from supervisor.system import paths

    marker: str | None = args.marker or None
    # The same evidence as the daemon's: the default state dir's ledger, --state-dir's, and
    # with -c the config's state dir and the sidecar configured on this port.
    folders = [paths.state_dir(None, None)]
    if args.state_dir:
        folders.append(paths.state_dir(args.state_dir, None))
    sidecar = None
    if args.config:
        from supervisor import config

        cfg = config.load(paths.config_path(args.config))
        folders.append(paths.state_dir(None, cfg.supervisor.state_dir))
        sidecar = next((s for s in cfg.sidecars if s.port == args.port), None)
    known = registry.known_ledgers(folders)
    found, next_run = diagnose.diagnose(args.port, marker, known, sidecar)
    if args.json:
        _out(diagnose.render_json(args.port, found, next_run))
    else:
        _out(diagnose.render_text(args.port, found, marker, next_run))
    return EXIT_PORT_HELD if found else EXIT_OK


def _known_ledgers(state_dir_arg: str | None) -> list[diagnose.Known]:
    """The spawn ledgers the MCP tool `diagnose_port` reads: the default state dir's, --state-dir's
    and every registered daemon's (as `port` without -c)."""
    from supervisor.control import registry
    from supervisor.system import paths

    folders = [paths.state_dir(None, None)]
    if state_dir_arg:
        folders.append(paths.state_dir(state_dir_arg, None))
    return registry.known_ledgers(folders)


def _cmd_mcp(args: argparse.Namespace) -> int:
    from supervisor import mcp  # the optional MCP SDK: only here

    return mcp.serve(args.config, args.state_dir, _known_ledgers)


def _cmd_service(args: argparse.Namespace) -> int:
    from supervisor import service

    kind = service.Kind(args.kind) if args.kind else service.default_kind()
    match args.action:
        case "print":
            spec = service.spec_for(args.config)
            sys.stdout.write(service.render(kind, spec))
            _path_notes(kind, spec.config)
        case "install":
            spec = service.spec_for(args.config)
            lines = service.install(kind, spec, force=args.force)
            _out("\n".join(lines))
            _path_notes(kind, spec.config)
        case "uninstall":
            _out("\n".join(service.uninstall(kind, service.home(), force=args.force)))
    return EXIT_OK


def _path_notes(kind: service.Kind, config_path: Path) -> None:
    """A note on stderr for each sidecar command the service's minimal PATH would not find."""
    from supervisor import config, service

    for line in service.path_notes(kind, config.load(config_path).sidecars):
        _fail(f"note: {line}")


def _cmd_init(args: argparse.Namespace) -> int:
    from pathlib import Path

    from supervisor import starter
    from supervisor.errors import PathError
    from supervisor.system import paths

    try:
        path = Path(args.path).expanduser().absolute() if args.path else paths.config_path(None)
    except RuntimeError:  # ~user of an unknown user, or no home directory
        raise PathError("PATH", args.path, "its ~ cannot be expanded") from None
    starter.write(path, minimal=args.minimal)
    quoted = shlex.quote(str(path))
    if args.minimal:
        _out(f"wrote {path}: two sidecars (the bundled demo), only the keys most configs need")
        _out("replace their name, command and port with your programs'")
    else:
        _out(f"wrote {path}: a commented starter config (every key, with its default)")
        _out("it supervises the bundled demo sidecar; replace that [[sidecar]] with your programs")
    _out(f"check it:  supervisor check-config -c {quoted}")
    _out(f"run it:    supervisor run -c {quoted}")
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
    from supervisor import completion

    sys.stdout.write(completion.render(args.shell, build_parser()))
    return EXIT_OK


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
    from supervisor import leftovers

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


if __name__ == "__main__":
    raise SystemExit(main())
