"""`parse(mapping) -> Config` (pure): every key validated, every problem reported at once."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from supervisor.config.expand import uses_port
from supervisor.config.fields import MISSING, Problems, Table, describe
from supervisor.config.schema import (
    DEFAULT_BACKUPS,
    DEFAULT_MAX_BYTES,
    NAME_RE,
    RESERVED_NAMES,
    Condition,
    Config,
    ConsentMode,
    DaemonConfig,
    ForeignAction,
    HealthConfig,
    HealthKind,
    IsolationMode,
    LiveAction,
    LogFormat,
    LogLevel,
    OrphanAction,
    OutputConfig,
    ProbeKind,
    ReadyConfig,
    ReclaimConfig,
    RestartConfig,
    RestartPolicy,
    SidecarConfig,
    SocketConfig,
    StopConfig,
)
from supervisor.core import graph as depgraph
from supervisor.errors import ConfigError

# Rotation limits: a file smaller than this is not a log; more backups than this is a typo.
MIN_ROTATE_BYTES = 1024
MAX_BACKUPS = 100


def _signal(table: Table, name: str) -> signal.Signals:
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


def _path(
    table: Table, name: str, base_dir: Path | None, *, empty_is_unset: bool = False
) -> Path | None:
    """An optional path key; `~` expands, relative paths resolve against the config's folder.

    With `empty_is_unset`, "" means "not set" (the documented default of `log_file`)."""
    value = table.string(name, "", nonempty=not empty_is_unset)
    if not value:
        return None
    try:
        path = Path(value).expanduser()
    except RuntimeError:  # ~user of an unknown user, or no home directory
        problem = f"cannot expand {describe(value)}: unknown user or home"
        table.problems.add(table.path(name), problem)
        return None
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return Path(os.path.normpath(path))


def _daemon(table: Table, base_dir: Path | None) -> DaemonConfig:
    result = DaemonConfig(
        state_dir=_path(table, "state_dir", base_dir),
        log_format=table.choice("log_format", LogFormat.AUTO, LogFormat),
        log_level=table.choice("log_level", LogLevel.INFO, LogLevel),
        exit_with_parent=table.boolean("exit_with_parent", False),
        shutdown_timeout_s=table.number("shutdown_timeout", 30.0, strict=True),
        log_file=_path(table, "log_file", base_dir, empty_is_unset=True),
        log_max_bytes=_rotate_bytes(table, "log_max_bytes"),
        log_backups=_backups(table, "log_backups"),
        isolation=table.choice("isolation", IsolationMode.AUTO, IsolationMode),
    )
    table.finish()
    return result


def _rotate_bytes(table: Table, name: str) -> int:
    return table.integer(name, DEFAULT_MAX_BYTES, minimum=MIN_ROTATE_BYTES)


def _backups(table: Table, name: str) -> int:
    return table.integer(name, DEFAULT_BACKUPS, minimum=0, maximum=MAX_BACKUPS)


def _health(table: Table, port: int | None) -> HealthConfig:
    problems = table.problems
    probe = table.choice("probe", HealthKind.NONE, HealthKind)
    watchdog: float | None = table.number("watchdog", 0.0, strict=True) or None
    if probe is HealthKind.NOTIFY and watchdog is None:
        problems.add(table.path("watchdog"), 'is required when probe = "notify" (seconds)')
    elif watchdog is not None and probe is not HealthKind.NOTIFY:
        problems.add(table.path("watchdog"), 'is only used with probe = "notify"')
    if probe in (HealthKind.TCP, HealthKind.HTTP) and port is None:
        problems.add(table.path("probe"), f'"{probe}" needs a port; set port or probe = "none"')
    path = table.string("path", "/", nonempty=True)
    if not path.startswith("/"):
        problems.add(table.path("path"), f'must start with "/", got {describe(path)}')
    command = table.argv("command", required=False)
    if probe is HealthKind.EXEC and not command:
        problems.add(table.path("command"), 'is required when probe = "exec"')
    health = HealthConfig(
        probe=probe,
        path=path,
        command=command,
        interval_s=table.number("interval", 10.0, strict=True),
        timeout_s=table.number("timeout", 2.0, strict=True),
        failures=table.integer("failures", 3, minimum=1),
        watchdog_s=watchdog,
    )
    # Checks never overlap, and the restart bound is interval * failures + timeout: a check
    # must end before the next one is due.
    if health.timeout_s > health.interval_s:
        problems.add(
            table.path("timeout"),
            f"must be <= interval ({health.interval_s:g}), got {health.timeout_s:g}",
        )
    table.finish()
    return health


def _output(table: Table) -> OutputConfig:
    output = OutputConfig(
        file=table.boolean("file", True),
        max_bytes=_rotate_bytes(table, "max_bytes"),
        backups=_backups(table, "backups"),
    )
    table.finish()
    return output


def _env(table: Table, name: str) -> Mapping[str, str]:
    value = table.get(name)
    if value is MISSING:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        table.problems.add(table.path(name), f"must be a table of strings, got {describe(value)}")
        return MappingProxyType({})
    env: dict[str, str] = {}
    for key, item in value.items():
        if not key or "=" in key or "\0" in key:
            table.problems.add(f"{table.path(name)}.{key}", "is not a valid variable name")
        elif not isinstance(item, str) or "\0" in item:
            problem = f"must be a string, got {describe(item)}"
            table.problems.add(f"{table.path(name)}.{key}", problem)
        else:
            env[key] = item
    return MappingProxyType(env)


def _sidecar(table: Table, base_dir: Path | None) -> SidecarConfig:
    problems = table.problems
    name = table.string("name", "", nonempty=True)
    if "name" not in table.raw:
        problems.add(table.path("name"), "is required")
    elif name and not NAME_RE.fullmatch(name):
        problems.add(
            table.path("name"),
            f"must match {NAME_RE.pattern} (lowercase letters, digits, _ . -), "
            f"got {describe(name)}",
        )
    elif name in RESERVED_NAMES:
        problems.add(
            table.path("name"),
            f'"{name}" is a file of the state dir itself; choose another name',
        )
    command = table.argv("command", required=True)
    cwd = _path(table, "cwd", base_dir)
    env = _env(table, "env")
    auto_port = table.raw.get("port") == "auto"
    port_value = 0 if auto_port else table.integer("port", 0, minimum=1, maximum=65535)
    if auto_port:
        table.get("port")
    port = port_value or None
    env_file = _path(table, "env_file", base_dir)
    depends_on = _depends_on(table)
    host = table.string("host", "127.0.0.1", nonempty=True)
    marker = table.string("marker", " ".join(command), nonempty=True)

    ready_t = table.sub("ready")
    default_probe = ProbeKind.TCP if port is not None or auto_port else ProbeKind.NONE
    probe = ready_t.choice("probe", default_probe, ProbeKind)
    if probe not in PORTLESS_PROBES and port is None and "port" not in table.raw:
        problems.add(ready_t.path("probe"), f'"{probe}" needs a port; set port or probe = "none"')
    path = ready_t.string("path", "/", nonempty=True)
    if not path.startswith("/"):
        problems.add(ready_t.path("path"), f'must start with "/", got {describe(path)}')
    pattern, ready_command = _ready_signal(ready_t, probe)
    ready = ReadyConfig(
        probe=probe,
        path=path,
        timeout_s=ready_t.number("timeout", 60.0, strict=True),
        interval_s=ready_t.number("interval", 0.5, strict=True),
        pattern=pattern,
        command=ready_command,
    )
    ready_t.finish()
    if port is None and not auto_port and uses_port([*command, *env.values()]):
        problems.add(table.path("command"), "{port} is used, but no port is set; set port")

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
    if reclaim.foreign is ForeignAction.RELOCATE and port is None and "port" not in table.raw:
        problems.add(reclaim_t.path("foreign"), '"relocate" needs a port; set port')
    if reclaim.consent is ConsentMode.COMMAND and not reclaim.consent_command:
        problems.add(reclaim_t.path("consent_command"), 'is required when consent = "command"')
    reclaim_t.finish()

    socket_t = table.sub("socket")
    socket = SocketConfig(inherit=socket_t.boolean("inherit", False))
    if socket.inherit and port is None and "port" not in table.raw:
        problems.add(socket_t.path("inherit"), "needs a port; set port or inherit = false")
    socket_t.finish()
    health = _health(table.sub("health"), port or (1 if auto_port else None))
    output = _output(table.sub("output"))
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
        socket=socket,
        health=health,
        output=output,
        depends_on=MappingProxyType(depends_on),
        env_file=env_file,
        auto_port=auto_port,
    )


# The probes that need no port: they read the child's output, run a command, or listen.
PORTLESS_PROBES = frozenset({ProbeKind.NONE, ProbeKind.LOG, ProbeKind.EXEC, ProbeKind.NOTIFY})


def _ready_signal(table: Table, probe: ProbeKind) -> tuple[str | None, tuple[str, ...]]:
    """`pattern` (log) and `command` (exec): required by their probe, refused by the others."""
    problems = table.problems
    pattern: str | None = table.string("pattern", "", nonempty=True) or None
    if probe is ProbeKind.LOG and pattern is None and "pattern" not in table.raw:
        problems.add(table.path("pattern"), 'is required when probe = "log"')
    elif pattern is not None and probe is not ProbeKind.LOG:
        problems.add(table.path("pattern"), 'is only used with probe = "log"')
    elif pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            problems.add(table.path("pattern"), f"is not a valid regular expression: {exc}")
    command = table.argv("command", required=False)
    if probe is ProbeKind.EXEC and not command:
        problems.add(table.path("command"), 'is required when probe = "exec"')
    elif command and probe is not ProbeKind.EXEC:
        problems.add(table.path("command"), 'is only used with probe = "exec"')
    return pattern, command


def _depends_on(table: Table) -> dict[str, Condition]:
    value = table.get("depends_on")
    if value is MISSING:
        return {}
    key = table.path("depends_on")
    if not isinstance(value, Mapping):
        want = '{ NAME = "started" | "ready" | "healthy" | "completed" }'
        table.problems.add(key, f"must be a table {want}, got {describe(value)}")
        return {}
    result: dict[str, Condition] = {}
    options = " | ".join(f'"{c.value}"' for c in Condition)
    for name, condition in value.items():
        try:
            result[name] = Condition(condition)
        except ValueError:
            problem = f"must be one of {options}, got {describe(condition)}"
            table.problems.add(f"{key}.{name}", problem)
    return result


def _check_dependencies(sidecars: list[SidecarConfig], keys: list[str], problems: Problems) -> None:
    """Every dependency names a sidecar of this file, not itself, and they form no cycle."""
    index = {s.name: i for i, s in enumerate(sidecars)}

    def where(i: int) -> str:
        return keys[i] + _sep(keys[i])

    for i, sidecar in enumerate(sidecars):
        for name in sidecar.depends_on:
            if name == sidecar.name:
                problems.add(f"{where(i)}depends_on.{name}", "a sidecar cannot depend on itself")
            elif name not in index:
                known = ", ".join(f'"{n}"' for n in index) or "none"
                problems.add(f"{where(i)}depends_on.{name}", f"unknown sidecar (known: {known})")
    graph = {s.name: [d for d in s.depends_on if d != s.name] for s in sidecars}
    cycle = depgraph.find_cycle(graph)
    if cycle is not None:
        first = index[cycle[0]]
        problems.add(f"{where(first)}depends_on", "dependency cycle: " + " -> ".join(cycle))


def _entry_keys(entries: list[object]) -> list[str]:
    """How problems name each [[sidecar]]: `sidecar "api"` by its name, as a person calls it;
    `sidecar[1]` (its place in the file) when it has no usable or no unique name."""
    names = [
        e.get("name") if isinstance(e, Mapping) and isinstance(e.get("name"), str) else None
        for e in entries
    ]
    return [
        f'sidecar "{name}"'
        if name and NAME_RE.fullmatch(name) and names.count(name) == 1
        else f"sidecar[{index}]"
        for index, name in enumerate(names)
    ]


def _sep(key: str) -> str:
    return ": " if key.endswith('"') else "."


def parse(
    raw: Mapping[str, object], path: Path | None = None, *, interpreter: str | None = None
) -> Config:
    """Validate a parsed TOML document. Relative paths resolve against `path`'s folder.

    `interpreter` is what "{python}" as a command's argv[0] stands for (None: not allowed).
    """
    problems = Problems()
    base_dir = path.parent if path is not None else None
    top = Table(raw, "", problems, interpreter=interpreter)
    daemon = _daemon(top.sub("supervisor"), base_dir)
    sidecars: list[SidecarConfig] = []
    entries = top.get("sidecar")
    if entries is not MISSING:
        if not isinstance(entries, list):
            problems.add("sidecar", f"must be an array of tables, got {describe(entries)}")
            entries = []
        seen: dict[str, int] = {}
        ports: dict[int, str] = {}
        keys = _entry_keys(entries)
        for index, entry in enumerate(entries):
            key = keys[index]
            table = Table(entry, key, problems, interpreter=interpreter, sep=_sep(key))
            sidecar = _sidecar(table, base_dir)
            if sidecar.name in seen:
                problems.add(
                    f"sidecar[{index}].name",
                    f'duplicate name "{sidecar.name}" (also sidecar[{seen[sidecar.name]}])',
                )
            elif sidecar.name:
                seen[sidecar.name] = index
            # Two sidecars on one port would each find the other's child holding it.
            if sidecar.port is not None and sidecar.port in ports:
                problems.add(
                    table.path("port"),
                    f'{sidecar.port} is already used by sidecar "{ports[sidecar.port]}"',
                )
            elif sidecar.port is not None:
                ports[sidecar.port] = sidecar.name
            sidecars.append(sidecar)
        _check_dependencies(sidecars, keys, problems)
    top.finish()
    if problems.items:
        raise ConfigError(path, problems.items)
    return Config(supervisor=daemon, sidecars=tuple(sidecars), path=path)
