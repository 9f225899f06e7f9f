"""Rendering a user service file (pure): a systemd user unit or a launchd LaunchAgent.

The committed `systemd/` and `launchd/` files are the rendering of `PLACEHOLDER`, and a test
keeps them equal byte for byte.
"""

from __future__ import annotations

import hashlib
import math
import plistlib
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import assert_never

from supervisor.errors import EXIT_USAGE, SupervisorError

UNIT_NAME = "sidecar-supervisor.service"
LAUNCHD_LABEL = "io.github.sidecar-supervisor"
LOG_DIR_NAME = "sidecar-supervisor"
# Under launchd the daemon writes its JSON log itself (`--log-file`), rotated per the config's
# log_max_bytes / log_backups; launchd's own StandardOutPath/StandardErrorPath, which nothing
# rotates, only catch what comes before logging starts (a config error, a crash).
LAUNCHD_LOG_NAME = "supervisor.log"
LAUNCHD_OUTPUT_NAME = "supervisor.out.log"

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

    @property
    def log_file(self) -> Path:
        return self.log_dir / LAUNCHD_LOG_NAME

    def argv(self, *extra: str) -> tuple[str, ...]:
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
            *extra,
        )

    def reload_argv(self) -> tuple[str, ...]:
        """`supervisor reload --wait`: systemd's reload job ends once the daemon has applied
        (or rejected: the job fails) the new config, not when a signal was sent."""
        return (
            str(self.python),
            "-P",
            "-m",
            "supervisor",
            "reload",
            "--wait",
            "-c",
            str(self.config),
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
ExecReload={exec_reload}
# SIGTERM to the daemon only: it stops its sidecars itself, each its own way; whatever is left
# after TimeoutStopSec gets SIGKILL.
KillMode=mixed
# The daemon's cgroup is its own to manage: it puts each sidecar in a cgroup of its own below
# it (isolation = "auto"), so that whatever a sidecar forks, renames or detaches is stopped.
Delegate=yes
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
        exec_reload=" ".join(_systemd_word(arg) for arg in spec.reload_argv()),
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
  Logs (JSON lines): ~/Library/Logs/{log_dir}/{log}, written by the daemon itself and
  rotated per the config's log_max_bytes / log_backups. Start-up errors and crashes, before
  logging starts: ~/Library/Logs/{log_dir}/{out}
  ExitTimeOut is shutdown_timeout ({shutdown:g} s) + {margin} s.
  Agents start with a minimal PATH: give sidecar commands as absolute paths.
-->
"""


def render_launchd(spec: ServiceSpec) -> str:
    agent: dict[str, object] = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": list(spec.argv("--log-file", str(spec.log_file))),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": THROTTLE_INTERVAL_S,
        "ExitTimeOut": spec.stop_timeout_s,
        # Not "Background": that throttles the CPU and I/O of the sidecars users are waiting on.
        "ProcessType": "Standard",
        "StandardOutPath": str(spec.log_dir / LAUNCHD_OUTPUT_NAME),
        "StandardErrorPath": str(spec.log_dir / LAUNCHD_OUTPUT_NAME),
    }
    text = plistlib.dumps(agent, sort_keys=False).decode("utf-8")
    comment = _LAUNCHD_COMMENT.format(
        label=LAUNCHD_LABEL,
        log_dir=LOG_DIR_NAME,
        log=LAUNCHD_LOG_NAME,
        out=LAUNCHD_OUTPUT_NAME,
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
