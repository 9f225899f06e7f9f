"""Property tests: `config.parse` returns a Config or raises ConfigError, whatever it is given."""

from __future__ import annotations

import datetime as dt
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor import config
from supervisor.errors import ConfigError

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SCHEMA_KEYS = [
    "supervisor", "sidecar", "state_dir", "log_format", "log_level", "exit_with_parent",
    "shutdown_timeout", "name", "command", "cwd", "env", "port", "host", "marker", "ready",
    "probe", "path", "timeout", "interval", "restart", "policy", "max_attempts", "base_delay",
    "max_delay", "reset_after", "stop", "signal", "reclaim", "enabled", "orphan", "live",
    "foreign", "consent", "consent_command", "consent_timeout", "health", "failures", "output",
    "file", "max_bytes", "backups", "log_file", "log_max_bytes", "log_backups",
]  # fmt: skip
ENUM_WORDS = [
    "auto", "console", "json", "debug", "info", "warning", "error", "tcp", "http", "none",
    "always", "on-failure", "never", "kill", "leave", "ask", "wait", "fail", "tty", "command",
    "deny", "SIGTERM", "TERM", "sigint", "SIGFOO", "agent", "Agent", "-x", "/", "/health", "",
    "exec",
]  # fmt: skip

NAME_HEAD = "abcdefghijklmnopqrstuvwxyz0123456789"
NAME_TAIL = NAME_HEAD + "_.-"
texts = st.text(max_size=12) | st.sampled_from(["~", "~no-such-user-4711/x", "~/x"])


def valid_names(max_tail: int) -> st.SearchStrategy[str]:
    tails = st.text(alphabet=NAME_TAIL, max_size=max_tail)
    return st.builds(str.__add__, st.sampled_from(NAME_HEAD), tails)


keys = st.sampled_from(SCHEMA_KEYS) | st.text(max_size=8)
scalars = (
    texts
    | st.sampled_from(ENUM_WORDS)
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.sampled_from([0, 1, -1, 65535, 65536, 2**31, 2**31 + 1, 10**400, -(10**400)])
    | st.floats()
    | st.booleans()
    | st.datetimes(timezones=st.none() | st.just(dt.UTC))
    | st.dates()
    | st.times()
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=8,
)


def table(fields: Mapping[str, st.SearchStrategy[object]]) -> st.SearchStrategy[dict[str, object]]:
    """A table with any subset of the schema's fields, plus now and then a stray key."""
    stray: st.SearchStrategy[dict[str, object]] = st.just({}) | st.dictionaries(
        keys, scalars, min_size=1, max_size=1
    )
    known = st.fixed_dictionaries({}, optional=dict(fields))
    return st.builds(lambda extra, known: extra | known, stray, known)


def maybe(valid: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    """Mostly a plausible value, sometimes anything at all."""
    return st.one_of(valid, valid, valid, scalars, values)


numbers = maybe(st.floats(min_value=-5, max_value=100) | st.integers(-5, 100))
names = maybe(valid_names(8) | st.sampled_from(ENUM_WORDS))
argvs = maybe(st.lists(st.sampled_from(["node", "x", "", "-c"]) | texts, max_size=3))
words = maybe(st.sampled_from(ENUM_WORDS))

sidecar_tables = table(
    {
        "name": names,
        "command": argvs,
        "cwd": maybe(texts),
        "env": maybe(st.dictionaries(texts, texts | st.integers(0, 9), max_size=3)),
        "port": maybe(st.integers(-1, 65536)),
        "host": maybe(texts),
        "marker": maybe(texts),
        "ready": maybe(
            table({"probe": words, "path": words, "timeout": numbers, "interval": numbers})
        ),
        "restart": maybe(
            table(
                {
                    "policy": words,
                    "max_attempts": numbers,
                    "base_delay": numbers,
                    "max_delay": numbers,
                    "reset_after": numbers,
                }
            )
        ),
        "stop": maybe(table({"signal": words, "timeout": numbers})),
        "reclaim": maybe(
            table(
                {
                    "enabled": maybe(st.booleans()),
                    "orphan": words,
                    "live": words,
                    "foreign": words,
                    "consent": words,
                    "consent_command": argvs,
                    "consent_timeout": numbers,
                }
            )
        ),
        "health": maybe(
            table(
                {
                    "probe": words,
                    "path": words,
                    "command": argvs,
                    "interval": numbers,
                    "timeout": numbers,
                    "failures": numbers,
                }
            )
        ),
        "output": maybe(
            table(
                {
                    "file": maybe(st.booleans()),
                    "max_bytes": maybe(st.integers(0, 1 << 24)),
                    "backups": numbers,
                }
            )
        ),
    }
)
daemon_tables = table(
    {
        "state_dir": maybe(texts),
        "log_format": words,
        "log_level": words,
        "exit_with_parent": maybe(st.booleans()),
        "shutdown_timeout": numbers,
        "log_file": maybe(texts),
        "log_max_bytes": maybe(st.integers(0, 1 << 24)),
        "log_backups": numbers,
    }
)
documents = table(
    {"supervisor": maybe(daemon_tables), "sidecar": maybe(st.lists(sidecar_tables, max_size=3))}
) | st.dictionaries(keys, values, max_size=4)


@SETTINGS
@given(raw=documents, with_path=st.booleans())
def test_parse_returns_config_or_raises_config_error(
    raw: dict[str, object], with_path: bool
) -> None:
    path = Path("/srv/conf/supervisor.toml") if with_path else None
    try:
        cfg = config.parse(raw, path)
    except ConfigError as exc:
        assert exc.problems
        assert exc.exit_code == 2
        assert all(line.startswith("config") for line in exc.lines())
        hint = "check-config -c" if path is not None else "fix the file and retry"
        assert hint in exc.message.rsplit(";", 1)[-1]
        return
    names_seen = [s.name for s in cfg.sidecars]
    assert len(set(names_seen)) == len(names_seen)
    for sidecar in cfg.sidecars:
        assert config.NAME_RE.match(sidecar.name)
        assert sidecar.command
        assert sidecar.port is None or 1 <= sidecar.port <= 65535
        assert 0 <= sidecar.restart.base_delay_s <= sidecar.restart.max_delay_s
        assert math.isfinite(sidecar.restart.max_delay_s)
        assert sidecar.cwd is None or path is None or sidecar.cwd.is_absolute()
        health = sidecar.health
        assert 0 < health.timeout_s <= health.interval_s and math.isfinite(health.interval_s)
        assert health.failures >= 1
        assert health.probe != "exec" or health.command
        assert health.probe not in ("tcp", "http") or sidecar.port is not None
        assert sidecar.output.max_bytes >= 1024 and 0 <= sidecar.output.backups <= 100


valid_sidecars = st.fixed_dictionaries(
    {
        "name": valid_names(63),
        # No "{": a placeholder ({port}) needs the key it names (see test_config_orchestration)
        "command": st.lists(
            st.text(min_size=1, max_size=10).filter(lambda s: "\0" not in s and "{" not in s),
            min_size=1,
            max_size=4,
        ),
    },
    optional={
        "port": st.integers(1, 65535),
        "env": st.dictionaries(
            st.text(min_size=1, max_size=6).filter(lambda s: "=" not in s and "\0" not in s),
            st.text(max_size=6).filter(lambda s: "\0" not in s and "{" not in s),
            max_size=3,
        ),
        "restart": st.fixed_dictionaries(
            {},
            optional={
                "policy": st.sampled_from(["always", "on-failure", "never"]),
                "max_attempts": st.integers(0, 100),
                "base_delay": st.floats(0, 20),
                "reset_after": st.floats(0, 100),
            },
        ),
        "stop": st.fixed_dictionaries(
            {}, optional={"signal": st.sampled_from(["SIGTERM", "INT", "sighup"])}
        ),
    },
)


def toml_string(text: str) -> str:
    # tests.support.toml_value uses json.dumps, whose surrogate-pair escapes of astral
    # characters are not valid TOML; escape only what TOML requires.
    out = []
    for char in text:
        if char in '"\\' or ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return (
            "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
        )
    raise TypeError(value)


def render(sidecars: list[dict[str, object]]) -> str:
    lines: list[str] = []
    for sidecar in sidecars:
        lines.append("[[sidecar]]")
        subtables = {k: v for k, v in sidecar.items() if k in ("restart", "stop")}
        lines += [f"{k} = {toml_value(v)}" for k, v in sidecar.items() if k not in subtables]
        for name, sub in subtables.items():
            assert isinstance(sub, Mapping)
            lines.append(f"[sidecar.{name}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in sub.items()]
    return "\n".join(lines) + "\n"


@settings(SETTINGS, max_examples=150)
@given(
    sidecars=st.lists(
        valid_sidecars,
        min_size=1,
        max_size=3,
        # Names and ports are both unique in a valid config (two sidecars may not share a port).
        unique_by=(lambda s: s["name"], lambda s: s.get("port", id(s))),
    )
)
def test_valid_sidecar_tables_always_parse(sidecars: list[dict[str, object]]) -> None:
    text = render(sidecars)
    cfg = config.parse(tomllib.loads(text), Path("/srv/conf/supervisor.toml"))
    assert [s.name for s in cfg.sidecars] == [s["name"] for s in sidecars]
    for parsed, source in zip(cfg.sidecars, sidecars, strict=True):
        command = source["command"]
        assert isinstance(command, list)
        assert parsed.command == tuple(command)
        assert parsed.port == source.get("port")
        assert dict(parsed.env) == source.get("env", {})
        assert parsed.marker == " ".join(parsed.command)
