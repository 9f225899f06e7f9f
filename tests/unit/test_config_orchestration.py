"""The v3 orchestration keys (SPEC 11.2): depends_on, env_file, port = "auto", the log / exec /
notify probes, the notify watchdog, reclaim.foreign = "relocate", and the placeholders."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from supervisor import config
from supervisor.config import Condition, ForeignAction, HealthKind, ProbeKind
from supervisor.config.expand import for_launch
from supervisor.errors import ConfigError


def entry(name: str, extra: str = "") -> str:
    return f'[[sidecar]]\nname = "{name}"\ncommand = ["prog", "{name}"]\n{extra}'


def parse(text: str, path: Path | None = None) -> config.Config:
    return config.parse(tomllib.loads(text), path)


def problems(text: str) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    return caught.value.problems


def test_depends_on_is_read_in_order() -> None:
    cfg = parse(
        entry("db")
        + entry("migrate")
        + entry("api", 'depends_on = { db = "ready", migrate = "completed" }\n')
    )
    api = cfg.sidecars[2]
    assert list(api.depends_on.items()) == [
        ("db", Condition.READY),
        ("migrate", Condition.COMPLETED),
    ]


BAD = [
    (
        entry("a", 'depends_on = { b = "ready" }\n')
        + entry("b", 'depends_on = { a = "started" }\n'),
        'sidecar "a": depends_on: dependency cycle: a -> b -> a',
    ),
    (
        entry("a", 'depends_on = { b = "ready" }\n')
        + entry("b", 'depends_on = { c = "ready" }\n')
        + entry("c", 'depends_on = { b = "healthy" }\n'),
        'sidecar "b": depends_on: dependency cycle: b -> c -> b',
    ),
    (
        entry("a", 'depends_on = { nope = "ready" }\n'),
        'sidecar "a": depends_on.nope: unknown sidecar (known: "a")',
    ),
    (
        entry("a", 'depends_on = { a = "ready" }\n'),
        'sidecar "a": depends_on.a: a sidecar cannot depend',
    ),
    (
        entry("a") + entry("b", 'depends_on = { a = "up" }\n'),
        'sidecar "b": depends_on.a: must be one of "started" | "ready" | "healthy" | "completed", '
        'got "up"',
    ),
    (entry("a", 'depends_on = ["b"]\n'), 'sidecar "a": depends_on: must be a table'),
    (
        entry("a", '[sidecar.ready]\nprobe = "log"\n'),
        'sidecar "a": ready.pattern: is required when',
    ),
    (
        entry("a", '[sidecar.ready]\nprobe = "log"\npattern = "(unclosed"\n'),
        'sidecar "a": ready.pattern: is not a valid regular expression',
    ),
    (
        entry("a", '[sidecar.ready]\nprobe = "exec"\n'),
        'sidecar "a": ready.command: is required when',
    ),
    (
        entry("a", 'port = 47000\n[sidecar.ready]\nprobe = "tcp"\npattern = "x"\n'),
        'sidecar "a": ready.pattern: is only used with probe = "log"',
    ),
    (
        entry("a", '[sidecar.ready]\nprobe = "notify"\ncommand = ["x"]\n'),
        'sidecar "a": ready.command: is only used with probe = "exec"',
    ),
    (
        entry("a", '[sidecar.health]\nprobe = "notify"\n'),
        'sidecar "a": health.watchdog: is required',
    ),
    (
        entry("a", "[sidecar.health]\nwatchdog = 5\n"),
        'sidecar "a": health.watchdog: is only used with probe = "notify"',
    ),
    (entry("a", 'port = "any"\n'), 'sidecar "a": port: must be an integer 1..65535, got "any"'),
    (
        entry("a", '[sidecar.reclaim]\nforeign = "relocate"\n'),
        'sidecar "a": reclaim.foreign: "relocate" needs a port',
    ),
    (
        '[[sidecar]]\nname = "a"\ncommand = ["prog", "--port", "{port}"]\n',
        'sidecar "a": command: {port} is used, but no port is set',
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD, ids=[b[1][:50] for b in BAD])
def test_orchestration_config_errors(text: str, expected: str) -> None:
    found = problems(text)
    assert any(p.startswith(expected) for p in found), found


def test_portless_probes_need_no_port() -> None:
    cfg = parse(
        entry("a", '[sidecar.ready]\nprobe = "log"\npattern = "listening on \\\\d+"\n')
        + entry("b", '[sidecar.ready]\nprobe = "exec"\ncommand = ["true"]\n')
        + entry("c", '[sidecar.ready]\nprobe = "notify"\n[sidecar.health]\nprobe = "notify"\n'
                "watchdog = 2.5\n")
    )  # fmt: skip
    a, b, c = cfg.sidecars
    assert (a.ready.probe, a.ready.pattern, a.port) == (ProbeKind.LOG, r"listening on \d+", None)
    assert (b.ready.probe, b.ready.command) == (ProbeKind.EXEC, ("true",))
    assert (c.ready.probe, c.health.probe, c.health.watchdog_s) == (
        ProbeKind.NOTIFY,
        HealthKind.NOTIFY,
        2.5,
    )


def test_port_auto_defaults_to_a_tcp_probe_and_allows_inherit_and_placeholders() -> None:
    (a,) = parse(
        '[[sidecar]]\nname = "a"\ncommand = ["prog", "--port={port}"]\nport = "auto"\n'
        '[sidecar.socket]\ninherit = true\n[sidecar.health]\nprobe = "http"\n'
    ).sidecars
    assert a.auto_port and a.port is None and a.url is None
    assert a.ready.probe is ProbeKind.TCP and a.socket.inherit
    launch = for_launch(a, port=41234, state_dir="/s")
    assert launch.port == 41234 and launch.url == "tcp://127.0.0.1:41234"
    assert launch.command == ("prog", "--port=41234")
    assert launch.marker == "prog --port=41234"  # the default marker follows the command


def test_two_auto_ports_do_not_conflict() -> None:
    cfg = parse(entry("a", 'port = "auto"\n') + entry("b", 'port = "auto"\n'))
    assert all(s.auto_port for s in cfg.sidecars)


def test_relocate_is_a_foreign_action() -> None:
    (a,) = parse(entry("a", 'port = 47001\n[sidecar.reclaim]\nforeign = "relocate"\n')).sidecars
    assert a.reclaim.foreign is ForeignAction.RELOCATE


def test_placeholders_in_command_and_env_values_only() -> None:
    (a,) = parse(
        '[[sidecar]]\nname = "web"\ncommand = ["srv", "{port}", "{name}", "{state_dir}/x", '
        '"{other}", "{\\"json\\": 1}"]\nport = 47002\nmarker = "srv"\n'
        'env = { URL = "http://127.0.0.1:{port}/", "{port}" = "key untouched" }\n'
    ).sidecars
    launch = for_launch(a, port=47002, state_dir="/state")
    assert launch.command == ("srv", "47002", "web", "/state/x", "{other}", '{"json": 1}')
    assert dict(launch.env) == {"URL": "http://127.0.0.1:47002/", "{port}": "key untouched"}
    assert launch.marker == "srv"  # an explicit marker is the user's


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_env_file_is_read_relative_to_the_config_and_env_wins(tmp_path: Path) -> None:
    write(tmp_path / ".env", "# app\nexport A=from-file\nB='file b'\nC=\"c\\n\"\n")
    path = write(
        tmp_path / "supervisor.toml",
        entry("a", 'env_file = ".env"\nenv = { B = "from env" }\n'),
    )
    (a,) = config.load(path).sidecars
    assert a.env_file == tmp_path / ".env"
    assert dict(a.env) == {"A": "from-file", "B": "from env", "C": "c\n"}


def test_missing_env_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = write(tmp_path / "supervisor.toml", entry("a", 'env_file = "missing.env"\n'))
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    (problem,) = caught.value.problems
    assert problem == f"sidecar[0].env_file: {tmp_path / 'missing.env'}: file not found"


def test_bad_env_file_line_is_a_config_error_naming_file_and_line(tmp_path: Path) -> None:
    write(tmp_path / "bad.env", "A=1\nNOT A LINE\n")
    path = write(tmp_path / "supervisor.toml", entry("a", 'env_file = "bad.env"\n'))
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    where = f"sidecar[0].env_file: {tmp_path / 'bad.env'}"
    assert caught.value.problems == (f'{where}: line 2: expected KEY=VALUE, got "NOT A LINE"',)
