"""The config's shape (pure): enums for every choice and frozen dataclasses with SPEC defaults."""

from __future__ import annotations

import re
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
# A sidecar's folder is `<state dir>/<name>`: these names are the state dir's own files
# (statedir.py, control/unixsock.py; tests/unit/test_config.py keeps the lists equal).
RESERVED_NAMES = frozenset({"control.sock", "status.json", "supervisor.lock", "supervisor.pid"})


class LogFormat(StrEnum):
    AUTO = "auto"
    CONSOLE = "console"
    JSON = "json"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class IsolationMode(StrEnum):
    AUTO = "auto"  # a cgroup per sidecar where a cgroup v2 subtree can be used, else none
    CGROUP = "cgroup"  # required: the daemon refuses to start without it
    NONE = "none"


class ProbeKind(StrEnum):
    TCP = "tcp"
    HTTP = "http"
    NONE = "none"
    LOG = "log"  # a line of the child's output matches `pattern`
    EXEC = "exec"  # `command` exits 0
    NOTIFY = "notify"  # the child sends READY=1 to its NOTIFY_SOCKET (sd_notify)


class HealthKind(StrEnum):
    NONE = "none"
    TCP = "tcp"
    HTTP = "http"
    EXEC = "exec"
    NOTIFY = "notify"  # WATCHDOG=1 at least every `watchdog` seconds


class Condition(StrEnum):
    """What a dependency must have reached before its dependent starts (`depends_on`)."""

    STARTED = "started"  # its child is running
    READY = "ready"  # its readiness probe passed
    HEALTHY = "healthy"  # ready, and a health check (or watchdog ping) passed since
    COMPLETED = "completed"  # it ran to the end and exited 0 (a one-shot task)


class RestartPolicy(StrEnum):
    ALWAYS = "always"
    ON_FAILURE = "on-failure"
    NEVER = "never"


class OrphanAction(StrEnum):
    KILL = "kill"
    LEAVE = "leave"


class LiveAction(StrEnum):
    ASK = "ask"
    LEAVE = "leave"


class ForeignAction(StrEnum):
    WAIT = "wait"
    FAIL = "fail"
    RELOCATE = "relocate"  # start on a free port instead (the stranger is never touched)


class ConsentMode(StrEnum):
    AUTO = "auto"
    TTY = "tty"
    COMMAND = "command"
    DENY = "deny"


@dataclass(frozen=True)
class ReadyConfig:
    probe: ProbeKind
    path: str = "/"
    timeout_s: float = 60.0
    interval_s: float = 0.5
    pattern: str | None = None  # log: a regular expression searched in each output line
    command: tuple[str, ...] = ()  # exec: argv; ready once it exits 0


@dataclass(frozen=True)
class RestartConfig:
    policy: RestartPolicy = RestartPolicy.ALWAYS
    max_attempts: int = 5
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0
    reset_after_s: float = 10.0


@dataclass(frozen=True)
class StopConfig:
    signal: signal.Signals = signal.SIGTERM
    timeout_s: float = 2.0


@dataclass(frozen=True)
class ReclaimConfig:
    enabled: bool = True
    orphan: OrphanAction = OrphanAction.KILL
    live: LiveAction = LiveAction.ASK
    foreign: ForeignAction = ForeignAction.WAIT
    consent: ConsentMode = ConsentMode.AUTO
    consent_command: tuple[str, ...] = ()
    consent_timeout_s: float = 60.0


@dataclass(frozen=True)
class SocketConfig:
    inherit: bool = False  # the daemon binds host:port and hands it to every spawn as fd 3


@dataclass(frozen=True)
class HealthConfig:
    """Liveness, checked only while ready; `failures` consecutive failures restart it."""

    probe: HealthKind = HealthKind.NONE
    path: str = "/"
    command: tuple[str, ...] = ()
    interval_s: float = 10.0
    timeout_s: float = 2.0
    failures: int = 3
    watchdog_s: float | None = None  # notify: the longest silence between two WATCHDOG=1


DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUPS = 3


@dataclass(frozen=True)
class OutputConfig:
    file: bool = True  # <state_dir>/<name>/output.log
    max_bytes: int = DEFAULT_MAX_BYTES
    backups: int = DEFAULT_BACKUPS


@dataclass(frozen=True)
class SidecarConfig:
    name: str
    command: tuple[str, ...]
    marker: str
    ready: ReadyConfig
    cwd: Path | None = None
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    port: int | None = None
    host: str = "127.0.0.1"
    restart: RestartConfig = RestartConfig()
    stop: StopConfig = StopConfig()
    reclaim: ReclaimConfig = ReclaimConfig()
    socket: SocketConfig = SocketConfig()
    health: HealthConfig = HealthConfig()
    output: OutputConfig = OutputConfig()
    # Name -> condition, in the order written; checked (names, cycles) by parse.
    depends_on: Mapping[str, Condition] = field(default_factory=lambda: MappingProxyType({}))
    env_file: Path | None = None  # read by load(); its values are already in `env`
    auto_port: bool = False  # port = "auto": chosen at the first launch (`port` is None here)

    @property
    def reconciles(self) -> bool:
        return self.port is not None and self.reclaim.enabled

    @property
    def url(self) -> str | None:
        """Where it serves: `http://host:port/path` for an http probe, else `tcp://host:port`."""
        if self.port is None:
            return None
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        if self.ready.probe is ProbeKind.HTTP:
            return f"http://{host}:{self.port}{self.ready.path}"
        return f"tcp://{host}:{self.port}"


@dataclass(frozen=True)
class DaemonConfig:
    state_dir: Path | None = None
    log_format: LogFormat = LogFormat.AUTO
    log_level: LogLevel = LogLevel.INFO
    exit_with_parent: bool = False
    shutdown_timeout_s: float = 30.0
    log_file: Path | None = None  # the daemon's own log (JSON lines, rotated) instead of stderr
    log_max_bytes: int = DEFAULT_MAX_BYTES
    log_backups: int = DEFAULT_BACKUPS
    isolation: IsolationMode = IsolationMode.AUTO


@dataclass(frozen=True)
class Config:
    supervisor: DaemonConfig
    sidecars: tuple[SidecarConfig, ...]
    path: Path | None = None

    def summary(self) -> str:
        def port(s: SidecarConfig) -> str:
            if s.auto_port:
                return " (port auto)"
            return f" (port {s.port})" if s.port is not None else ""

        names = ", ".join(f"{s.name}{port(s)}" for s in self.sidecars)
        count = len(self.sidecars)
        noun = "sidecar" if count == 1 else "sidecars"
        return f"{count} {noun}" + (f": {names}" if names else "")
