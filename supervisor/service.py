"""User service files for this installation (a systemd user unit, a launchd LaunchAgent), and
`supervisor service print|install|uninstall`.

Rendering is pure (`render(kind, spec)`); the committed `systemd/` and `launchd/` files are the
rendering of `PLACEHOLDER`, and a test keeps them equal byte for byte.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import math
import os
import plistlib
import re
import sys
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import assert_never

from supervisor.errors import EXIT_OK, EXIT_USAGE, SupervisorError

UNIT_NAME = "sidecar-supervisor.service"
LAUNCHD_LABEL = "io.github.sidecar-supervisor"
LOG_DIR_NAME = "sidecar-supervisor"

# The service manager must wait for the daemon's own bounded shutdown, plus time to exit.
STOP_MARGIN_S = 15
RESTART_DELAY_S = 2
START_LIMIT_INTERVAL_S = 300
START_LIMIT_BURST = 5
THROTTLE_INTERVAL_S = 10
# 2: config/usage error, 75: another daemon holds the state dir; a restart cannot fix either.
RESTART_PREVENT_EXIT_CODES = (2, 75)

_MARKER_RE = re.compile(r"^.*generated-by: supervisor service \(sha256:([0-9a-f]{16})\).*\n", re.M)


class Kind(StrEnum):
    SYSTEMD = "systemd"
    LAUNCHD = "launchd"


class ServiceError(SupervisorError):
    """A service file cannot be rendered, written or removed as asked."""

    exit_code = EXIT_USAGE

    def __init__(self, path: Path, problem: str, remedy: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path} {problem}; {remedy}")


@dataclass(frozen=True)
class ServiceSpec:
    """The facts a service file is rendered from: all paths absolute."""

    python: Path
    config: Path
    home: Path
    shutdown_timeout_s: float = 30.0

    @property
    def stop_timeout_s(self) -> int:
        return math.ceil(self.shutdown_timeout_s) + STOP_MARGIN_S

    @property
    def log_dir(self) -> Path:
        return self.home / "Library" / "Logs" / LOG_DIR_NAME

    def argv(self) -> tuple[str, ...]:
        # `-P`: no current directory on sys.path, so a `supervisor/` folder where the service
        # starts (systemd: $HOME) cannot shadow this package (nor supervisord's of the same name).
        return (
            str(self.python),
            "-P",
            "-m",
            "supervisor",
            "run",
            "-c",
            str(self.config),
            "--log-format",
            "json",
        )


PLACEHOLDER = ServiceSpec(
    python=Path("/path/to/venv/bin/python"),
    config=Path("/path/to/supervisor.toml"),
    home=Path("/Users/you"),
)


def _marked(text: str, prefix: str, suffix: str, after_line: int) -> str:
    """`text` with a marker line inserted after line `after_line`: a checksum of the rest.

    `uninstall` removes a file only while the checksum matches: one we wrote and nobody edited.
    """
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    marker = f"{prefix}generated-by: supervisor service (sha256:{digest}){suffix}\n"
    lines = text.splitlines(keepends=True)
    return "".join([*lines[:after_line], marker, *lines[after_line:]])


def is_generated(text: str) -> bool:
    """Whether `text` is a service file we rendered, unedited since."""
    match = _MARKER_RE.search(text)
    if match is None:
        return False
    rest = text[: match.start()] + text[match.end() :]
    return hashlib.sha256(rest.encode()).hexdigest()[:16] == match.group(1)


def _systemd_word(arg: str) -> str:
    """`arg` as one word of a systemd command line, with specifiers and variables escaped."""
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if escaped and not re.search(r"[\s\"'\\;]", escaped):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


_SYSTEMD = """\
# sidecar-supervisor as a systemd user service.
# "supervisor service uninstall" removes this file only while the checksum above matches.
# Rendered by "supervisor service print" with the absolute paths of one installation; the copy
# in the repository has /path/to/... placeholders. "supervisor service install -c CONFIG" writes
# it, paths filled in, to ~/.config/systemd/user/{unit}; then:
#   systemctl --user daemon-reload && systemctl --user enable --now {unit}
# A user service runs only while you are logged in; to start it at boot and keep it running
# after you log out:
#   loginctl enable-linger "$USER"
# Logs: journalctl --user -u sidecar-supervisor
# Reload the config: systemctl --user reload sidecar-supervisor
# Services start with a minimal PATH: give sidecar commands as absolute paths, or add
# Environment=PATH=... with "systemctl --user edit sidecar-supervisor" (a drop-in: this file
# stays unedited).

[Unit]
Description=sidecar-supervisor: supervises local helper servers (sidecars)
# Give up after {burst} failed starts within {interval} s instead of restarting forever.
StartLimitIntervalSec={interval}
StartLimitBurst={burst}

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec_start}
ExecReload=/bin/kill -HUP $MAINPID
# SIGTERM to the daemon only: it stops its sidecars itself, each its own way; whatever is left
# after TimeoutStopSec gets SIGKILL.
KillMode=mixed
# shutdown_timeout ({shutdown_timeout:g} s) + {margin} s
TimeoutStopSec={stop_timeout}
Restart=on-failure
RestartSec={restart_delay}
# 2: config error, 75: another daemon holds the state dir; restarting would not help.
RestartPreventExitStatus={prevent}

[Install]
WantedBy=default.target
"""


def render_systemd(spec: ServiceSpec) -> str:
    text = _SYSTEMD.format(
        unit=UNIT_NAME,
        interval=START_LIMIT_INTERVAL_S,
        burst=START_LIMIT_BURST,
        exec_start=" ".join(_systemd_word(arg) for arg in spec.argv()),
        shutdown_timeout=spec.shutdown_timeout_s,
        margin=STOP_MARGIN_S,
        stop_timeout=spec.stop_timeout_s,
        restart_delay=RESTART_DELAY_S,
        prevent=" ".join(str(code) for code in RESTART_PREVENT_EXIT_CODES),
    )
    return _marked(text, "# ", "", after_line=1)


_LAUNCHD_COMMENT = """\
<!--
  sidecar-supervisor as a launchd LaunchAgent (a macOS user service).
  "supervisor service uninstall" removes this file only while the checksum above matches.
  Rendered by "supervisor service print" with the absolute paths of one installation; the copy
  in the repository has /path/to/... placeholders. "supervisor service install -c CONFIG"
  writes it, paths filled in, to ~/Library/LaunchAgents/{label}.plist; then:
    launchctl bootstrap gui/$(id -u) ~/Library/LaunchAgents/{label}.plist
  Stop and unload: launchctl bootout gui/$(id -u)/{label}
  Reload the config: launchctl kill HUP gui/$(id -u)/{label}
  Logs (JSON lines): ~/Library/Logs/{log_dir}/
  ExitTimeOut is shutdown_timeout ({shutdown:g} s) + {margin} s.
  Agents start with a minimal PATH: give sidecar commands as absolute paths.
-->
"""


def render_launchd(spec: ServiceSpec) -> str:
    agent: dict[str, object] = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": list(spec.argv()),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": THROTTLE_INTERVAL_S,
        "ExitTimeOut": spec.stop_timeout_s,
        # Not "Background": that throttles the CPU and I/O of the sidecars users are waiting on.
        "ProcessType": "Standard",
        "StandardOutPath": str(spec.log_dir / "supervisor.out.log"),
        "StandardErrorPath": str(spec.log_dir / "supervisor.log"),
    }
    text = plistlib.dumps(agent, sort_keys=False).decode("utf-8")
    comment = _LAUNCHD_COMMENT.format(
        label=LAUNCHD_LABEL,
        log_dir=LOG_DIR_NAME,
        shutdown=spec.shutdown_timeout_s,
        margin=STOP_MARGIN_S,
    )
    head, sep, body = text.partition('<plist version="1.0">\n')
    return _marked(head + comment + sep + body, "<!-- ", " -->", after_line=2)


def render(kind: Kind, spec: ServiceSpec) -> str:
    for path in (spec.python, spec.config, spec.home):
        if not path.is_absolute() or re.search(r"[\x00-\x1f\x7f]", str(path)):
            raise ServiceError(
                path, "cannot go into a service file", "use an absolute path without control codes"
            )
    match kind:
        case Kind.SYSTEMD:
            return render_systemd(spec)
        case Kind.LAUNCHD:
            return render_launchd(spec)
        case _:
            assert_never(kind)


def file_name(kind: Kind) -> str:
    match kind:
        case Kind.SYSTEMD:
            return UNIT_NAME
        case Kind.LAUNCHD:
            return f"{LAUNCHD_LABEL}.plist"
        case _:
            assert_never(kind)


# --- the I/O shell -------------------------------------------------------------------------


def default_kind() -> Kind:
    return Kind.LAUNCHD if sys.platform == "darwin" else Kind.SYSTEMD


def _home() -> Path:
    try:
        home = Path.home()
    except RuntimeError:
        home = Path("~")
    if not home.is_absolute():
        raise ServiceError(home, "is not a usable home directory", "set HOME to an absolute path")
    return home


def service_dir(kind: Kind, home: Path) -> Path:
    match kind:
        case Kind.SYSTEMD:
            xdg = os.environ.get("XDG_CONFIG_HOME", "")
            # The XDG spec says to ignore a relative value, and systemd does.
            base = Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".config"
            return base / "systemd" / "user"
        case Kind.LAUNCHD:
            return home / "Library" / "LaunchAgents"
        case _:
            assert_never(kind)


def _python() -> Path:
    # As is, never resolved: a venv's python is a symlink to the base interpreter, and only the
    # venv's path runs with the venv's packages.
    if not sys.executable:
        raise ServiceError(
            Path("python"), "(the interpreter) cannot be located", "run supervisor from its venv"
        )
    return Path(sys.executable).absolute()


def spec_for(config_arg: str | None) -> ServiceSpec:
    """The spec for this installation; raises ConfigError when the config does not load."""
    from supervisor import config, paths

    path = paths.config_path(config_arg)
    cfg = config.load(path)
    return ServiceSpec(
        python=_python(),
        config=path,
        home=_home(),
        shutdown_timeout_s=cfg.supervisor.shutdown_timeout_s,
    )


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ServiceError(path, f"cannot be read ({reason})", "check it and retry") from None


def _write(path: Path, text: str) -> None:
    """Write atomically (temp file + fsync + rename), replacing a symlink rather than its target."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(text)
                file.flush()
                os.fsync(file.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise ServiceError(
            path, f"cannot be written ({exc.strerror or exc})", "check the folder's permissions"
        ) from None


def _enable_commands(kind: Kind, path: Path, replaced: bool) -> list[str]:
    match kind:
        case Kind.SYSTEMD:
            if replaced:
                return [
                    f"systemctl --user daemon-reload && systemctl --user enable {UNIT_NAME}"
                    f" && systemctl --user restart {UNIT_NAME}"
                ]
            return [f"systemctl --user daemon-reload && systemctl --user enable --now {UNIT_NAME}"]
        case Kind.LAUNCHD:
            bootstrap = f"launchctl bootstrap gui/$(id -u) {path}"
            if replaced:
                return [f"launchctl bootout gui/$(id -u)/{LAUNCHD_LABEL}; {bootstrap}"]
            return [bootstrap]
        case _:
            assert_never(kind)


def install(kind: Kind, spec: ServiceSpec, *, force: bool) -> int:
    text = render(kind, spec)
    path = service_dir(kind, spec.home) / file_name(kind)
    existing = _read(path)
    if existing is not None and existing != text and not force:
        whose = (
            "written for another config or installation"
            if is_generated(existing)
            else 'not written by "supervisor service install"'
        )
        raise ServiceError(
            path,
            f"already exists with different content ({whose})",
            'compare it with "supervisor service print" and pass --force to replace it',
        )
    if kind is Kind.LAUNCHD:
        # launchd opens the log files but does not create their folder.
        try:
            spec.log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ServiceError(
                spec.log_dir, f"cannot be created ({exc.strerror or exc})", "check its permissions"
            ) from None
    replaced = existing is not None and existing != text
    if existing == text:
        print(f"{path} is already installed and up to date")
    else:
        _write(path, text)
        print(f"{'replaced' if replaced else 'wrote'} {path}")
    print("enable and start it with:")
    for command in _enable_commands(kind, path, replaced=replaced):
        print(f"  {command}")
    if kind is Kind.SYSTEMD:
        print("to start it at boot and keep it running after you log out:")
        print('  loginctl enable-linger "$USER"')
    return EXIT_OK


def uninstall(kind: Kind, home: Path, *, force: bool) -> int:
    path = service_dir(kind, home) / file_name(kind)
    existing = _read(path)
    if existing is None and not path.is_symlink():
        print(f"{path} is not installed; nothing to remove")
        return EXIT_OK
    if not force and (existing is None or not is_generated(existing)):
        raise ServiceError(
            path,
            'was not written by "supervisor service install" or was edited since',
            "remove it yourself or pass --force",
        )
    if kind is Kind.SYSTEMD and not force:
        wanted = path.parent / "default.target.wants" / UNIT_NAME
        if os.path.lexists(wanted):
            raise ServiceError(
                path,
                "is still enabled",
                f"run: systemctl --user disable --now {UNIT_NAME}, then retry",
            )
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ServiceError(
            path, f"cannot be removed ({exc.strerror or exc})", "check the folder's permissions"
        ) from None
    print(f"removed {path}")
    match kind:
        case Kind.SYSTEMD:
            print("stop it if it is still running, and make systemd forget it:")
            print(f"  systemctl --user stop {UNIT_NAME}; systemctl --user daemon-reload")
        case Kind.LAUNCHD:
            print("stop and unload it if it is still loaded:")
            print(f"  launchctl bootout gui/$(id -u)/{LAUNCHD_LABEL}")
        case _:
            assert_never(kind)
    return EXIT_OK


def main(args: argparse.Namespace) -> int:
    kind = Kind(args.kind) if args.kind else default_kind()
    match args.action:
        case "print":
            sys.stdout.write(render(kind, spec_for(args.config)))
            return EXIT_OK
        case "install":
            return install(kind, spec_for(args.config), force=args.force)
        case "uninstall":
            return uninstall(kind, _home(), force=args.force)
        case _:
            raise ValueError(f"unknown service action {args.action!r}")
