"""The TOML config: `parse(mapping)` validates purely into frozen objects; `load(path)` reads."""

from __future__ import annotations

import math
import os
import re
import signal
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

from supervisor.errors import ConfigError

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class LogFormat(StrEnum):
    AUTO = "auto"
    CONSOLE = "console"
    JSON = "json"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class ProbeKind(StrEnum):
    TCP = "tcp"
    HTTP = "http"
    NONE = "none"


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

    @property
    def reconciles(self) -> bool:
        return self.port is not None and self.reclaim.enabled


@dataclass(frozen=True)
class DaemonConfig:
    state_dir: Path | None = None
    log_format: LogFormat = LogFormat.AUTO
    log_level: LogLevel = LogLevel.INFO
    exit_with_parent: bool = False
    shutdown_timeout_s: float = 30.0


@dataclass(frozen=True)
class Config:
    supervisor: DaemonConfig
    sidecars: tuple[SidecarConfig, ...]
    path: Path | None = None

    def summary(self) -> str:
        names = ", ".join(
            f"{s.name}" + (f" (port {s.port})" if s.port is not None else "") for s in self.sidecars
        )
        count = len(self.sidecars)
        noun = "sidecar" if count == 1 else "sidecars"
        return f"{count} {noun}" + (f": {names}" if names else "")


class _Problems:
    """Collects every problem of a mapping so the user sees them all at once."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, key: str, message: str) -> None:
        # One problem, one line: control characters from the file are shown escaped.
        self.items.append(_printable(f"{key}: {message}"))


E = TypeVar("E", bound=StrEnum)
T = TypeVar("T")

_MISSING = object()


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _show(value: object) -> str:
    if isinstance(value, str):
        return '"' + value.replace('"', '\\"')[:80] + '"'
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)[:80]


class _Table:
    """A view of one TOML table that tracks which keys were read, to report unknown ones."""

    def __init__(self, raw: object, key: str, problems: _Problems) -> None:
        self.key = key
        self.problems = problems
        if isinstance(raw, Mapping):
            self.raw: Mapping[str, object] = raw
        else:
            problems.add(key, f"must be a table, got {_show(raw)}")
            self.raw = {}
        self.seen: set[str] = set()

    def path(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def get(self, name: str) -> object:
        self.seen.add(name)
        return self.raw.get(name, _MISSING)

    def sub(self, name: str) -> _Table:
        value = self.get(name)
        return _Table({} if value is _MISSING else value, self.path(name), self.problems)

    def finish(self) -> None:
        for name in self.raw:
            if name not in self.seen:
                self.problems.add(self.path(name), "unknown key")

    def typed(self, name: str, default: T, check: Callable[[object], T | None], want: str) -> T:
        value = self.get(name)
        if value is _MISSING:
            return default
        result = check(value)
        if result is None:
            self.problems.add(self.path(name), f"must be {want}, got {_show(value)}")
            return default
        return result

    def number(
        self, name: str, default: float, *, minimum: float = 0.0, strict: bool = False
    ) -> float:
        def check(value: object) -> float | None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                return None
            try:
                number = float(value)
            except OverflowError:  # an integer with hundreds of digits
                return None
            if not math.isfinite(number) or number < minimum or (strict and number == minimum):
                return None
            return number

        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        return self.typed(name, default, check, f"a number {bound}")

    def integer(self, name: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
        def check(value: object) -> int | None:
            if isinstance(value, bool) or not isinstance(value, int):
                return None
            in_range = value >= minimum and (maximum is None or value <= maximum)
            return value if in_range else None

        want = f"an integer >= {minimum}" if maximum is None else f"an integer {minimum}..{maximum}"
        return self.typed(name, default, check, want)

    def boolean(self, name: str, default: bool) -> bool:
        return self.typed(
            name, default, lambda v: v if isinstance(v, bool) else None, "true or false"
        )

    def string(self, name: str, default: str, *, nonempty: bool = False) -> str:
        def check(value: object) -> str | None:
            if not isinstance(value, str) or (nonempty and not value) or "\0" in value:
                return None
            return value

        return self.typed(name, default, check, "a non-empty string" if nonempty else "a string")

    def choice(self, name: str, default: E, enum: type[E]) -> E:
        options = " | ".join(f'"{m.value}"' for m in enum)

        def check(value: object) -> E | None:
            try:
                return enum(value) if isinstance(value, str) else None
            except ValueError:
                return None

        return self.typed(name, default, check, f"one of {options}")

    def argv(self, name: str, *, required: bool) -> tuple[str, ...]:
        value = self.get(name)
        if value is _MISSING:
            if required:
                self.problems.add(self.path(name), "is required (a non-empty list of strings)")
            return ()
        if (
            not isinstance(value, list)
            or (required and not value)
            or not all(isinstance(a, str) and a and "\0" not in a for a in value)
        ):
            want = "a non-empty list of non-empty strings" if required else "a list of strings"
            self.problems.add(self.path(name), f"must be {want}, got {_show(value)}")
            return ()
        return tuple(value)


def _signal(table: _Table, name: str) -> signal.Signals:
    def check(value: object) -> signal.Signals | None:
        if not isinstance(value, str):
            return None
        upper = value.upper()
        upper = upper if upper.startswith("SIG") else "SIG" + upper
        try:
            return signal.Signals[upper]
        except KeyError:
            return None

    return table.typed(name, signal.SIGTERM, check, 'a signal name such as "SIGTERM"')


def _path(table: _Table, name: str, base_dir: Path | None) -> Path | None:
    """An optional path key; `~` expands, relative paths resolve against the config's folder."""
    value = table.string(name, "", nonempty=True)
    if not value:
        return None
    try:
        path = Path(value).expanduser()
    except RuntimeError:  # ~user of an unknown user, or no home directory
        table.problems.add(table.path(name), f"cannot expand {_show(value)}: unknown user or home")
        return None
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return Path(os.path.normpath(path))


def _daemon(table: _Table, base_dir: Path | None) -> DaemonConfig:
    result = DaemonConfig(
        state_dir=_path(table, "state_dir", base_dir),
        log_format=table.choice("log_format", LogFormat.AUTO, LogFormat),
        log_level=table.choice("log_level", LogLevel.INFO, LogLevel),
        exit_with_parent=table.boolean("exit_with_parent", False),
        shutdown_timeout_s=table.number("shutdown_timeout", 30.0, strict=True),
    )
    table.finish()
    return result


def _env(table: _Table, name: str) -> Mapping[str, str]:
    value = table.get(name)
    if value is _MISSING:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        table.problems.add(table.path(name), f"must be a table of strings, got {_show(value)}")
        return MappingProxyType({})
    env: dict[str, str] = {}
    for key, item in value.items():
        if not key or "=" in key or "\0" in key:
            table.problems.add(f"{table.path(name)}.{key}", "is not a valid variable name")
        elif not isinstance(item, str) or "\0" in item:
            table.problems.add(f"{table.path(name)}.{key}", f"must be a string, got {_show(item)}")
        else:
            env[key] = item
    return MappingProxyType(env)


def _sidecar(table: _Table, base_dir: Path | None) -> SidecarConfig:
    problems = table.problems
    name = table.string("name", "", nonempty=True)
    if "name" not in table.raw:
        problems.add(table.path("name"), "is required")
    elif name and not NAME_RE.fullmatch(name):
        problems.add(
            table.path("name"),
            f"must match {NAME_RE.pattern} (lowercase letters, digits, _ . -), got {_show(name)}",
        )
    command = table.argv("command", required=True)
    cwd = _path(table, "cwd", base_dir)
    env = _env(table, "env")
    port_value = table.integer("port", 0, minimum=1, maximum=65535)
    port = port_value or None
    host = table.string("host", "127.0.0.1", nonempty=True)
    marker = table.string("marker", " ".join(command), nonempty=True)

    ready_t = table.sub("ready")
    default_probe = ProbeKind.TCP if port is not None else ProbeKind.NONE
    probe = ready_t.choice("probe", default_probe, ProbeKind)
    if probe is not ProbeKind.NONE and port is None and "port" not in table.raw:
        problems.add(ready_t.path("probe"), f'"{probe}" needs a port; set port or probe = "none"')
    path = ready_t.string("path", "/", nonempty=True)
    if not path.startswith("/"):
        problems.add(ready_t.path("path"), f'must start with "/", got {_show(path)}')
    ready = ReadyConfig(
        probe=probe,
        path=path,
        timeout_s=ready_t.number("timeout", 60.0, strict=True),
        interval_s=ready_t.number("interval", 0.5, strict=True),
    )
    ready_t.finish()

    restart_t = table.sub("restart")
    base_delay = restart_t.number("base_delay", 1.0)
    restart = RestartConfig(
        policy=restart_t.choice("policy", RestartPolicy.ALWAYS, RestartPolicy),
        max_attempts=restart_t.integer("max_attempts", 5, minimum=0),
        base_delay_s=base_delay,
        max_delay_s=restart_t.number("max_delay", max(30.0, base_delay)),
        reset_after_s=restart_t.number("reset_after", 10.0),
    )
    if restart.max_delay_s < restart.base_delay_s:
        problems.add(
            restart_t.path("max_delay"),
            f"must be >= base_delay ({restart.base_delay_s:g}), got {restart.max_delay_s:g}",
        )
    restart_t.finish()

    stop_t = table.sub("stop")
    stop = StopConfig(signal=_signal(stop_t, "signal"), timeout_s=stop_t.number("timeout", 2.0))
    stop_t.finish()

    reclaim_t = table.sub("reclaim")
    reclaim = ReclaimConfig(
        enabled=reclaim_t.boolean("enabled", True),
        orphan=reclaim_t.choice("orphan", OrphanAction.KILL, OrphanAction),
        live=reclaim_t.choice("live", LiveAction.ASK, LiveAction),
        foreign=reclaim_t.choice("foreign", ForeignAction.WAIT, ForeignAction),
        consent=reclaim_t.choice("consent", ConsentMode.AUTO, ConsentMode),
        consent_command=reclaim_t.argv("consent_command", required=False),
        consent_timeout_s=reclaim_t.number("consent_timeout", 60.0, strict=True),
    )
    if reclaim.consent is ConsentMode.COMMAND and not reclaim.consent_command:
        problems.add(reclaim_t.path("consent_command"), 'is required when consent = "command"')
    reclaim_t.finish()
    table.finish()
    return SidecarConfig(
        name=name,
        command=command,
        marker=marker,
        ready=ready,
        cwd=cwd,
        env=env,
        port=port,
        host=host,
        restart=restart,
        stop=stop,
        reclaim=reclaim,
    )


def parse(raw: Mapping[str, object], path: Path | None = None) -> Config:
    """Validate a parsed TOML document. Relative paths resolve against `path`'s folder."""
    problems = _Problems()
    base_dir = path.parent if path is not None else None
    top = _Table(raw, "", problems)
    daemon = _daemon(top.sub("supervisor"), base_dir)
    sidecars: list[SidecarConfig] = []
    entries = top.get("sidecar")
    if entries is not _MISSING:
        if not isinstance(entries, list):
            problems.add("sidecar", f"must be an array of tables, got {_show(entries)}")
            entries = []
        seen: dict[str, int] = {}
        for index, entry in enumerate(entries):
            sidecar = _sidecar(_Table(entry, f"sidecar[{index}]", problems), base_dir)
            if sidecar.name in seen:
                problems.add(
                    f"sidecar[{index}].name",
                    f'duplicate name "{sidecar.name}" (also sidecar[{seen[sidecar.name]}])',
                )
            elif sidecar.name:
                seen[sidecar.name] = index
            sidecars.append(sidecar)
    top.finish()
    if problems.items:
        raise ConfigError(path, problems.items)
    return Config(supervisor=daemon, sidecars=tuple(sidecars), path=path)


MAX_CONFIG_BYTES = 4 << 20


def _read(path: Path) -> bytes:
    """The file's bytes; a FIFO, a device or a huge file is refused rather than read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(path, ["file not found; create it or pass --config"]) from None
    except OSError as exc:
        raise ConfigError(path, [f"cannot be read: {exc.strerror or exc}"]) from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError(path, ["is a directory, not a file"])
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(path, ["is not a regular file"])
        if info.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(path, [f"is too large ({info.st_size} bytes) for a config file"])
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise ConfigError(path, [f"cannot be read: {exc.strerror or exc}"]) from None
    finally:
        os.close(fd)


def load(path: Path) -> Config:
    """Read and validate the config file at `path`."""
    data = _read(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(path, [f"is not UTF-8 text (byte {exc.start})"]) from None
    try:
        raw = tomllib.loads(text)
    except ValueError as exc:  # TOMLDecodeError, or an integer too long to convert
        raise ConfigError(path, [_printable(f"invalid TOML: {exc}")]) from None
    return parse(raw, path.absolute())
