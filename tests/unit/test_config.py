"""Config validation as a user meets it: `check-config` on malformed files, and every default."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from supervisor import cli, config
from supervisor.config import (
    Config,
    ConsentMode,
    ForeignAction,
    HealthKind,
    LiveAction,
    LogFormat,
    LogLevel,
    OrphanAction,
    ProbeKind,
    RestartPolicy,
)
from supervisor.errors import ConfigError
from tests.support import ROOT

SIDECAR = '[[sidecar]]\nname = "agent"\ncommand = ["node", "server.js"]\n'
PORTED = SIDECAR + "port = 47820\n"


@dataclass(frozen=True)
class Bad:
    id: str
    text: str | bytes
    expected: tuple[str, ...]


def bad(case_id: str, text: str | bytes, *expected: str) -> Bad:
    return Bad(case_id, text, expected)


BAD_CONFIGS = [
    # top level and [supervisor]
    bad("top-unknown-key", "verbose = true\n" + SIDECAR, "verbose: unknown key"),
    bad("supervisor-not-table", "supervisor = 5\n" + SIDECAR, "supervisor: must be a table, got 5"),
    bad(
        "supervisor-unknown-key",
        '[supervisor]\nlogformat = "json"\n' + SIDECAR,
        "supervisor.logformat: unknown key",
    ),
    bad(
        "log-format-enum",
        '[supervisor]\nlog_format = "xml"\n',
        'supervisor.log_format: must be one of "auto" | "console" | "json", got "xml"',
    ),
    bad("log-level-enum", '[supervisor]\nlog_level = "loud"\n', "supervisor.log_level: must be"),
    bad(
        "exit-with-parent-string",
        '[supervisor]\nexit_with_parent = "yes"\n',
        'supervisor.exit_with_parent: must be true or false, got "yes"',
    ),
    bad(
        "shutdown-timeout-zero",
        "[supervisor]\nshutdown_timeout = 0\n",
        "supervisor.shutdown_timeout: must be a number > 0, got 0",
    ),
    bad(
        "shutdown-timeout-negative",
        "[supervisor]\nshutdown_timeout = -1.5\n",
        "supervisor.shutdown_timeout: must be a number > 0",
    ),
    bad("state-dir-int", "[supervisor]\nstate_dir = 5\n", "supervisor.state_dir: must be"),
    bad("state-dir-empty", '[supervisor]\nstate_dir = ""\n', "supervisor.state_dir: must be"),
    bad("sidecar-not-array", 'sidecar = "agent"\n', "sidecar: must be an array of tables"),
    bad("sidecar-entry-not-table", "sidecar = [1]\n", "sidecar[0]: must be a table, got 1"),
    # [[sidecar]] keys
    bad(
        "sidecar-unknown-key",
        SIDECAR + 'nmae = "x"\n',
        'sidecar "agent": nmae: unknown key; did you mean "name"?',
    ),
    bad("name-missing", '[[sidecar]]\ncommand = ["x"]\n', "sidecar[0].name: is required"),
    bad("name-empty", '[[sidecar]]\nname = ""\ncommand = ["x"]\n', "sidecar[0].name: must be"),
    bad("name-int", '[[sidecar]]\nname = 5\ncommand = ["x"]\n', "sidecar[0].name: must be"),
    bad(
        "name-uppercase",
        '[[sidecar]]\nname = "Agent"\ncommand = ["x"]\n',
        "sidecar[0].name: must match ^[a-z0-9][a-z0-9_.-]{0,63}$ "
        '(lowercase letters, digits, _ . -), got "Agent"',
    ),
    bad(
        "name-leading-dash",
        '[[sidecar]]\nname = "-agent"\ncommand = ["x"]\n',
        "sidecar[0].name: must match",
    ),
    bad(
        "name-65-chars",
        f'[[sidecar]]\nname = "{"a" * 65}"\ncommand = ["x"]\n',
        "sidecar[0].name: must match",
    ),
    bad(
        "name-with-space",
        '[[sidecar]]\nname = "my agent"\ncommand = ["x"]\n',
        "sidecar[0].name: must match",
    ),
    bad(
        "name-duplicate",
        SIDECAR + SIDECAR,
        'sidecar[1].name: duplicate name "agent" (also sidecar[0])',
    ),
    bad(
        "port-duplicate",
        PORTED + '[[sidecar]]\nname = "other"\ncommand = ["x"]\nport = 47820\n',
        'sidecar "other": port: 47820 is already used by sidecar "agent"',
    ),
    bad(
        "port-duplicate-third-names-the-first",
        PORTED
        + '[[sidecar]]\nname = "b"\ncommand = ["x"]\nport = 47821\n'
        + '[[sidecar]]\nname = "c"\ncommand = ["x"]\nport = 47820\n',
        'sidecar "c": port: 47820 is already used by sidecar "agent"',
    ),
    bad("command-missing", '[[sidecar]]\nname = "a"\n', 'sidecar "a": command: is required'),
    bad(
        "command-empty",
        '[[sidecar]]\nname = "a"\ncommand = []\n',
        'sidecar "a": command: must be a non-empty list of strings, got an empty list',
    ),
    bad(
        "command-string",
        '[[sidecar]]\nname = "a"\ncommand = "node server.js"\n',
        'sidecar "a": command: must be a non-empty list of strings, got "node server.js"',
    ),
    bad(
        "command-non-string",
        '[[sidecar]]\nname = "a"\ncommand = ["node", 1]\n',
        'sidecar "a": command: must be a non-empty list of strings, got a list',
    ),
    bad(
        "command-empty-program",
        '[[sidecar]]\nname = "a"\ncommand = ["", "--save"]\n',
        'sidecar "a": command[0]: the program must not be empty, got ""',
    ),
    bad(
        "command-nul-arg",
        '[[sidecar]]\nname = "a"\ncommand = ["node", "a\\u0000b"]\n',
        'sidecar "a": command[1]: must not contain a NUL character',
    ),
    bad(
        "consent-command-empty-program",
        PORTED + '[sidecar.reclaim]\nconsent_command = [""]\n',
        'sidecar "agent": reclaim.consent_command[0]: the program must not be empty, got ""',
    ),
    bad(
        "port-zero",
        SIDECAR + "port = 0\n",
        'sidecar "agent": port: must be an integer 1..65535, got 0',
    ),
    bad(
        "port-65536",
        SIDECAR + "port = 65536\n",
        'sidecar "agent": port: must be an integer 1..65535',
    ),
    bad(
        "port-negative",
        SIDECAR + "port = -80\n",
        'sidecar "agent": port: must be an integer 1..65535',
    ),
    bad(
        "port-string",
        SIDECAR + 'port = "80"\n',
        'sidecar "agent": port: must be an integer 1..65535, got "80"',
    ),
    bad("port-float", SIDECAR + "port = 80.0\n", 'sidecar "agent": port: must be an integer'),
    bad("port-bool", SIDECAR + "port = true\n", 'sidecar "agent": port: must be an integer'),
    bad("host-empty", PORTED + 'host = ""\n', 'sidecar "agent": host: must be a non-empty string'),
    bad("marker-int", SIDECAR + "marker = 5\n", 'sidecar "agent": marker: must be'),
    bad("cwd-list", SIDECAR + 'cwd = ["/opt"]\n', 'sidecar "agent": cwd: must be'),
    bad(
        "env-string", SIDECAR + 'env = "A=1"\n', 'sidecar "agent": env: must be a table of strings'
    ),
    bad(
        "env-int-value",
        SIDECAR + "env = { DASHBOARD_PORT = 4820 }\n",
        'sidecar "agent": env.DASHBOARD_PORT: must be a string, got 4820',
    ),
    bad(
        "env-bool-value",
        SIDECAR + "env = { DEBUG = true }\n",
        'sidecar "agent": env.DEBUG: must be a string, got True',
    ),
    bad(
        "env-bad-name",
        SIDECAR + 'env = { "A=B" = "1" }\n',
        'sidecar "agent": env.A=B: is not a valid variable name',
    ),
    # [sidecar.ready]
    bad(
        "ready-not-table",
        SIDECAR + 'ready = "tcp"\n',
        'sidecar "agent": ready: must be a table, got "tcp"',
    ),
    bad(
        "ready-unknown-key",
        PORTED + "[sidecar.ready]\ntimout = 5\n",
        'sidecar "agent": ready.timout: unknown key',
    ),
    bad(
        "ready-probe-enum",
        PORTED + '[sidecar.ready]\nprobe = "udp"\n',
        'sidecar "agent": ready.probe: must be one of "tcp" | "http" | "none" | "log" | "exec" | '
        '"notify", got "udp"',
    ),
    bad(
        "ready-http-without-port",
        SIDECAR + '[sidecar.ready]\nprobe = "http"\n',
        'sidecar "agent": ready.probe: "http" needs a port',
    ),
    bad(
        "ready-tcp-without-port",
        SIDECAR + '[sidecar.ready]\nprobe = "tcp"\n',
        'sidecar "agent": ready.probe: "tcp" needs a port',
    ),
    bad(
        "ready-path-relative",
        PORTED + '[sidecar.ready]\nprobe = "http"\npath = "health"\n',
        'sidecar "agent": ready.path: must start with "/", got "health"',
    ),
    bad(
        "ready-timeout-zero",
        PORTED + "[sidecar.ready]\ntimeout = 0\n",
        'sidecar "agent": ready.timeout: must be a number > 0, got 0',
    ),
    bad(
        "ready-interval-negative",
        PORTED + "[sidecar.ready]\ninterval = -0.5\n",
        'sidecar "agent": ready.interval: must be a number > 0, got -0.5',
    ),
    # [sidecar.restart]
    bad(
        "restart-unknown-key",
        SIDECAR + "[sidecar.restart]\nretries = 3\n",
        'sidecar "agent": restart.retries: unknown key',
    ),
    bad(
        "restart-policy-enum",
        SIDECAR + '[sidecar.restart]\npolicy = "sometimes"\n',
        'sidecar "agent": restart.policy: must be one of "always" | "on-failure" | "never"',
    ),
    bad(
        "restart-max-attempts-negative",
        SIDECAR + "[sidecar.restart]\nmax_attempts = -1\n",
        'sidecar "agent": restart.max_attempts: must be an integer >= 0, got -1',
    ),
    bad(
        "restart-max-attempts-float",
        SIDECAR + "[sidecar.restart]\nmax_attempts = 1.5\n",
        'sidecar "agent": restart.max_attempts: must be an integer >= 0, got 1.5',
    ),
    bad(
        "restart-base-delay-string-second-sidecar",
        '[[sidecar]]\nname = "one"\ncommand = ["x"]\n'
        + '[[sidecar]]\nname = "two"\ncommand = ["y"]\n[sidecar.restart]\nbase_delay = "fast"\n',
        'sidecar "two": restart.base_delay: must be a number >= 0, got "fast"',
    ),
    bad(
        "restart-base-delay-negative",
        SIDECAR + "[sidecar.restart]\nbase_delay = -1\n",
        'sidecar "agent": restart.base_delay: must be a number >= 0, got -1',
    ),
    bad(
        "restart-base-delay-nan",
        SIDECAR + "[sidecar.restart]\nbase_delay = nan\n",
        'sidecar "agent": restart.base_delay: must be a number >= 0, got nan',
    ),
    bad(
        "restart-max-delay-inf",
        SIDECAR + "[sidecar.restart]\nmax_delay = inf\n",
        'sidecar "agent": restart.max_delay: must be a number >= 0, got inf',
    ),
    bad(
        "restart-max-delay-below-base-delay",
        SIDECAR + "[sidecar.restart]\nbase_delay = 10\nmax_delay = 5\n",
        'sidecar "agent": restart.max_delay: must be >= base_delay (10), got 5',
    ),
    bad(
        "restart-reset-after-negative",
        SIDECAR + "[sidecar.restart]\nreset_after = -10\n",
        'sidecar "agent": restart.reset_after: must be a number >= 0',
    ),
    # [sidecar.stop]
    bad(
        "stop-unknown-key",
        SIDECAR + "[sidecar.stop]\nsignl = 15\n",
        'sidecar "agent": stop.signl: unknown key',
    ),
    bad(
        "stop-signal-unknown-name",
        SIDECAR + '[sidecar.stop]\nsignal = "SIGFOO"\n',
        'sidecar "agent": stop.signal: must be a signal name such as "SIGTERM", got "SIGFOO"',
    ),
    bad(
        "stop-signal-number",
        SIDECAR + "[sidecar.stop]\nsignal = 15\n",
        'sidecar "agent": stop.signal: must be a signal name',
    ),
    bad(
        "stop-timeout-negative",
        SIDECAR + "[sidecar.stop]\ntimeout = -2\n",
        'sidecar "agent": stop.timeout: must be a number >= 0, got -2',
    ),
    # [sidecar.reclaim]
    bad(
        "reclaim-unknown-key",
        PORTED + "[sidecar.reclaim]\nconsent_timout = 5\n",
        'sidecar "agent": reclaim.consent_timout: unknown key',
    ),
    bad(
        "reclaim-enabled-string",
        PORTED + '[sidecar.reclaim]\nenabled = "true"\n',
        'sidecar "agent": reclaim.enabled: must be true or false, got "true"',
    ),
    bad(
        "reclaim-orphan-enum",
        PORTED + '[sidecar.reclaim]\norphan = "ignore"\n',
        'sidecar "agent": reclaim.orphan: must be one of "kill" | "leave", got "ignore"',
    ),
    bad(
        "reclaim-live-enum",
        PORTED + '[sidecar.reclaim]\nlive = "kill"\n',
        'sidecar "agent": reclaim.live: must be one of "ask" | "leave", got "kill"',
    ),
    bad(
        "reclaim-foreign-enum",
        PORTED + '[sidecar.reclaim]\nforeign = "kill"\n',
        'sidecar "agent": reclaim.foreign: must be one of "wait" | "fail" | "relocate", got "kill"',
    ),
    bad(
        "reclaim-consent-enum",
        PORTED + '[sidecar.reclaim]\nconsent = "yes"\n',
        'sidecar "agent": reclaim.consent: must be one of "auto" | "tty" | "command" | "deny"',
    ),
    bad(
        "reclaim-consent-command-missing",
        PORTED + '[sidecar.reclaim]\nconsent = "command"\n',
        'sidecar "agent": reclaim.consent_command: is required when consent = "command"',
    ),
    bad(
        "reclaim-consent-command-non-strings",
        PORTED + '[sidecar.reclaim]\nconsent_command = ["zenity", 1]\n',
        'sidecar "agent": reclaim.consent_command: must be a list of strings',
    ),
    bad(
        "reclaim-consent-timeout-zero",
        PORTED + "[sidecar.reclaim]\nconsent_timeout = 0\n",
        'sidecar "agent": reclaim.consent_timeout: must be a number > 0, got 0',
    ),
    # [sidecar.health]
    bad(
        "health-unknown-key",
        PORTED + "[sidecar.health]\nintervall = 5\n",
        'sidecar "agent": health.intervall: unknown key',
    ),
    bad(
        "health-probe-enum",
        PORTED + '[sidecar.health]\nprobe = "grpc"\n',
        'sidecar "agent": health.probe: must be one of "none" | "tcp" | "http" | "exec" | '
        '"notify", got "grpc"',
    ),
    bad(
        "health-http-without-port",
        SIDECAR + '[sidecar.health]\nprobe = "http"\n',
        'sidecar "agent": health.probe: "http" needs a port; set port or probe = "none"',
    ),
    bad(
        "health-tcp-without-port",
        SIDECAR + '[sidecar.health]\nprobe = "tcp"\n',
        'sidecar "agent": health.probe: "tcp" needs a port',
    ),
    bad(
        "health-exec-without-command",
        SIDECAR + '[sidecar.health]\nprobe = "exec"\n',
        'sidecar "agent": health.command: is required when probe = "exec"',
    ),
    bad(
        "health-command-string",
        SIDECAR + '[sidecar.health]\nprobe = "exec"\ncommand = "curl -f x"\n',
        'sidecar "agent": health.command: must be a list of strings, got "curl -f x"',
    ),
    bad(
        "health-path-relative",
        PORTED + '[sidecar.health]\nprobe = "http"\npath = "health"\n',
        'sidecar "agent": health.path: must start with "/", got "health"',
    ),
    bad(
        "health-interval-zero",
        PORTED + "[sidecar.health]\ninterval = 0\n",
        'sidecar "agent": health.interval: must be a number > 0, got 0',
    ),
    bad(
        "health-timeout-zero",
        PORTED + "[sidecar.health]\ntimeout = 0\n",
        'sidecar "agent": health.timeout: must be a number > 0, got 0',
    ),
    bad(
        "health-timeout-above-interval",
        PORTED + "[sidecar.health]\ninterval = 1\ntimeout = 1.5\n",
        'sidecar "agent": health.timeout: must be <= interval (1), got 1.5',
    ),
    bad(
        "health-failures-zero",
        PORTED + "[sidecar.health]\nfailures = 0\n",
        'sidecar "agent": health.failures: must be an integer >= 1, got 0',
    ),
    bad(
        "health-failures-float",
        PORTED + "[sidecar.health]\nfailures = 2.5\n",
        'sidecar "agent": health.failures: must be an integer >= 1, got 2.5',
    ),
    # [sidecar.output]
    bad(
        "output-unknown-key",
        SIDECAR + "[sidecar.output]\nmax_size = 5\n",
        'sidecar "agent": output.max_size: unknown key',
    ),
    bad(
        "output-file-string",
        SIDECAR + '[sidecar.output]\nfile = "yes"\n',
        'sidecar "agent": output.file: must be true or false, got "yes"',
    ),
    bad(
        "output-max-bytes-tiny",
        SIDECAR + "[sidecar.output]\nmax_bytes = 100\n",
        'sidecar "agent": output.max_bytes: must be an integer >= 1024, got 100',
    ),
    bad(
        "output-max-bytes-string",
        SIDECAR + '[sidecar.output]\nmax_bytes = "10M"\n',
        'sidecar "agent": output.max_bytes: must be an integer >= 1024, got "10M"',
    ),
    bad(
        "output-backups-negative",
        SIDECAR + "[sidecar.output]\nbackups = -1\n",
        'sidecar "agent": output.backups: must be an integer 0..100, got -1',
    ),
    bad(
        "output-backups-huge",
        SIDECAR + "[sidecar.output]\nbackups = 1000000\n",
        'sidecar "agent": output.backups: must be an integer 0..100, got 1000000',
    ),
    # [supervisor] log_file
    bad(
        "log-file-int",
        "[supervisor]\nlog_file = 5\n",
        "supervisor.log_file: must be a string, got 5",
    ),
    bad(
        "log-max-bytes-tiny",
        "[supervisor]\nlog_max_bytes = 10\n",
        "supervisor.log_max_bytes: must be an integer >= 1024, got 10",
    ),
    bad(
        "log-backups-float",
        "[supervisor]\nlog_backups = 1.5\n",
        "supervisor.log_backups: must be an integer 0..100, got 1.5",
    ),
    # not TOML at all
    bad(
        "invalid-toml-line-3",
        '[[sidecar]]\nname = "a"\nport = 80x\ncommand = ["x"]\n',
        "invalid TOML",
        "line 3",
    ),
    bad(
        "invalid-toml-duplicate-key-line-4",
        '[[sidecar]]\nname = "a"\ncommand = ["x"]\nname = "b"\n',
        "invalid TOML",
        "line 4",
    ),
    bad(
        "invalid-toml-names-line-column-and-quotes-the-line",
        '[supervisor]\nlog_level = "info"\n[[sidecar]]\nname = "api"\nprot 8080\n',
        "line 5, column 6: invalid TOML: expected '=' after a key in a key/value pair: prot 8080",
    ),
    bad(
        "invalid-toml-at-the-end",
        "[supervisor]\nstate_dir = [1,\n",
        "at the end of the file: invalid TOML: ",
    ),
    bad("not-utf8", b'[[sidecar]]\nname = "\xff"\n', "is not UTF-8 text"),
    # near misses: "did you mean"
    bad(
        "did-you-mean-sidecar-table",
        '[[sidecars]]\nname = "a"\n',
        'sidecars: unknown key; did you mean "sidecar"?',
    ),
    bad(
        "did-you-mean-port-and-ready",
        SIDECAR + 'prot = 8080\nreadyy = {probe = "tcp"}\n',
        'sidecar "agent": prot: unknown key; did you mean "port"?',
        'sidecar "agent": readyy: unknown key; did you mean "ready"?',
    ),
    bad(
        "did-you-mean-nested",
        SIDECAR + "[sidecar.ready]\ntimout = 3\n",
        'sidecar "agent": ready.timout: unknown key; did you mean "timeout"?',
    ),
    bad(
        "no-did-you-mean-for-a-stranger",
        SIDECAR + "xyzzy = 1\n",
        'sidecar "agent": xyzzy: unknown key\n',
    ),
    bad(
        "duplicate-names-fall-back-to-the-place",
        SIDECAR + SIDECAR + "port = 0\n",
        "sidecar[1].port: must be an integer",
    ),
    # [sidecar.socket]
    bad(
        "socket-inherit-without-port",
        SIDECAR + "[sidecar.socket]\ninherit = true\n",
        'sidecar "agent": socket.inherit: needs a port; set port or inherit = false',
    ),
    bad(
        "socket-inherit-string",
        PORTED + '[sidecar.socket]\ninherit = "yes"\n',
        'sidecar "agent": socket.inherit: must be true or false, got "yes"',
    ),
    bad(
        "socket-unknown-key",
        PORTED + "[sidecar.socket]\nbacklog = 10\n",
        'sidecar "agent": socket.backlog: unknown key',
    ),
    bad("socket-not-table", PORTED + "socket = true\n", 'sidecar "agent": socket: must be a table'),
]


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "supervisor.toml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def assert_user_error(stdout: str, stderr: str, expected: tuple[str, ...], path: Path) -> None:
    assert "Traceback" not in stdout + stderr
    assert stdout == ""
    lines = stderr.splitlines()
    assert lines, "no error printed"
    for line in lines:
        assert line.startswith("supervisor: "), f"stray stderr line: {line!r}"
    assert str(path) in stderr
    for fragment in expected:
        assert fragment in stderr, f"{fragment!r} not in {stderr!r}"


@pytest.mark.parametrize("case", BAD_CONFIGS, ids=[c.id for c in BAD_CONFIGS])
def test_check_config_rejects(
    case: Bad, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, case.text)
    code = cli.main(["check-config", "-c", str(path)])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert_user_error(out, err, case.expected, path)


def test_bad_config_table_is_large_and_ids_are_unique() -> None:
    ids = [c.id for c in BAD_CONFIGS]
    assert len(ids) >= 30
    assert len(set(ids)) == len(ids)


SUBPROCESS_IDS = [
    "restart-base-delay-string-second-sidecar",
    "invalid-toml-line-3",
    "port-string",
    "reclaim-consent-command-missing",
    "port-duplicate",
]


@pytest.mark.parametrize("case_id", SUBPROCESS_IDS)
def test_check_config_rejects_as_a_process(case_id: str, tmp_path: Path) -> None:
    case = next(c for c in BAD_CONFIGS if c.id == case_id)
    path = write(tmp_path, case.text)
    result = subprocess.run(
        [sys.executable, "-m", "supervisor", "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert_user_error(result.stdout, result.stderr, case.expected, path)


def test_every_problem_is_reported_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (
        "typo = 1\n"
        '[[sidecar]]\nname = "Bad"\ncommand = []\nport = 0\n'
        "[sidecar.restart]\nmax_attempts = -1\n"
    )
    path = write(tmp_path, text)
    assert cli.main(["check-config", "-c", str(path)]) == 2
    _, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 5
    for key in (
        "sidecar[0].name:",
        "sidecar[0].command:",
        "sidecar[0].port:",
        "sidecar[0].restart.max_attempts:",
        "typo: unknown key",
    ):
        assert sum(key in line for line in lines) == 1, key


def test_config_error_carries_problems() -> None:
    with pytest.raises(ConfigError) as info:
        config.parse({"sidecar": [{"name": "a", "command": ["x"], "port": 0}]}, Path("/etc/s.toml"))
    assert info.value.problems == ('sidecar "a": port: must be an integer 1..65535, got 0',)
    assert info.value.lines() == [
        'config /etc/s.toml: sidecar "a": port: must be an integer 1..65535, got 0'
    ]
    assert info.value.exit_code == 2


# --- regressions: hostile values must still give one clean line each ------------------------


def huge_integer(digits: int) -> str:
    return "1" + "0" * (digits - 1)


def test_huge_integer_delay_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, SIDECAR + f"[sidecar.restart]\nbase_delay = {huge_integer(400)}\n")
    assert cli.main(["check-config", "-c", str(path)]) == 2
    out, err = capsys.readouterr()
    assert_user_error(out, err, ('sidecar "agent": restart.base_delay: must be a number',), path)


def test_integer_beyond_int_str_limit_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, SIDECAR + f"port = {huge_integer(5000)}\n")
    assert cli.main(["check-config", "-c", str(path)]) == 2
    out, err = capsys.readouterr()
    assert_user_error(out, err, ("invalid TOML",), path)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (SIDECAR + 'cwd = "~no-such-user-4711/app"\n', 'sidecar "agent": cwd'),
        ('[supervisor]\nstate_dir = "~no-such-user-4711"\n', "supervisor.state_dir"),
    ],
    ids=["cwd", "state-dir"],
)
def test_tilde_of_unknown_user_is_a_config_error(
    text: str, key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, text)
    assert cli.main(["check-config", "-c", str(path)]) == 2
    out, err = capsys.readouterr()
    assert_user_error(out, err, (key,), path)


def test_name_with_trailing_newline_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"sidecar\[0\]\.name"):
        config.parse({"sidecar": [{"name": "agent\n", "command": ["x"]}]})


@pytest.mark.parametrize(
    "text",
    [
        '[[sidecar]]\nname = "a\\nb"\ncommand = ["x"]\n',
        '"bad\\nkey" = 1\n',
    ],
    ids=["value", "key"],
)
def test_problem_with_newline_stays_on_one_line(
    text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, text)
    assert cli.main(["check-config", "-c", str(path)]) == 2
    out, err = capsys.readouterr()
    assert_user_error(out, err, (), path)


def test_large_max_attempts_is_accepted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, SIDECAR + f"[sidecar.restart]\nmax_attempts = {2**31 + 1}\n")
    assert cli.main(["check-config", "-c", str(path)]) == 0


# --- valid configs ------------------------------------------------------------------------


def parse_text(text: str, path: Path | None = None) -> Config:
    return config.parse(tomllib.loads(text), path)


def test_every_default_of_the_spec_is_applied_with_a_port() -> None:
    cfg = parse_text(PORTED)
    daemon = cfg.supervisor
    assert daemon.state_dir is None
    assert daemon.log_format is LogFormat.AUTO
    assert daemon.log_level is LogLevel.INFO
    assert daemon.exit_with_parent is False
    assert daemon.shutdown_timeout_s == 30.0
    assert daemon.log_file is None
    assert daemon.log_max_bytes == 10485760
    assert daemon.log_backups == 3

    (sidecar,) = cfg.sidecars
    assert sidecar.name == "agent"
    assert sidecar.command == ("node", "server.js")
    assert sidecar.cwd is None
    assert dict(sidecar.env) == {}
    assert sidecar.port == 47820
    assert sidecar.host == "127.0.0.1"
    assert sidecar.marker == "node server.js"
    assert sidecar.reconciles

    assert sidecar.ready.probe is ProbeKind.TCP
    assert sidecar.ready.path == "/"
    assert sidecar.ready.timeout_s == 60.0
    assert sidecar.ready.interval_s == 0.5

    assert sidecar.restart.policy is RestartPolicy.ALWAYS
    assert sidecar.restart.max_attempts == 5
    assert sidecar.restart.base_delay_s == 1.0
    assert sidecar.restart.max_delay_s == 30.0
    assert sidecar.restart.reset_after_s == 10.0

    assert sidecar.stop.signal is signal.SIGTERM
    assert sidecar.stop.timeout_s == 2.0

    reclaim = sidecar.reclaim
    assert reclaim.enabled is True
    assert reclaim.orphan is OrphanAction.KILL
    assert reclaim.live is LiveAction.ASK
    assert reclaim.foreign is ForeignAction.WAIT
    assert reclaim.consent is ConsentMode.AUTO
    assert reclaim.consent_command == ()
    assert reclaim.consent_timeout_s == 60.0

    assert sidecar.socket.inherit is False
    health = sidecar.health
    assert health.probe is HealthKind.NONE
    assert health.path == "/"
    assert health.command == ()
    assert health.interval_s == 10.0
    assert health.timeout_s == 2.0
    assert health.failures == 3

    output = sidecar.output
    assert output.file is True
    assert output.max_bytes == 10485760
    assert output.backups == 3


def test_without_port_probe_defaults_to_none_and_nothing_reconciles() -> None:
    (sidecar,) = parse_text(SIDECAR).sidecars
    assert sidecar.port is None
    assert sidecar.ready.probe is ProbeKind.NONE
    assert not sidecar.reconciles


def test_no_sidecars_is_valid() -> None:
    cfg = parse_text("")
    assert cfg.sidecars == ()
    assert cfg.summary() == "0 sidecars"


def test_example_config_documents_the_shipped_defaults() -> None:
    example = config.load(ROOT / "config" / "example.toml")
    defaults = parse_text(PORTED)
    assert example.supervisor == defaults.supervisor
    (documented,) = example.sidecars
    (default,) = defaults.sidecars
    assert documented.ready == default.ready
    assert documented.restart == default.restart
    assert documented.stop == default.stop
    assert documented.reclaim == default.reclaim
    assert documented.socket == default.socket
    assert documented.host == default.host
    assert documented.health == default.health
    assert documented.output == default.output


def test_health_and_output_values_are_read(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "supervisor.toml"
    path.parent.mkdir()
    text = (
        '[supervisor]\nlog_file = "logs/daemon.log"\nlog_max_bytes = 4096\nlog_backups = 0\n'
        + PORTED
        + '[sidecar.health]\nprobe = "exec"\ncommand = ["check", "--fast"]\n'
        + "interval = 1.5\ntimeout = 1.5\nfailures = 1\n"
        + "[sidecar.output]\nfile = false\nmax_bytes = 1024\nbackups = 100\n"
    )
    path.write_text(text, encoding="utf-8")
    cfg = config.load(path)
    assert cfg.supervisor.log_file == path.parent / "logs" / "daemon.log"
    assert (cfg.supervisor.log_max_bytes, cfg.supervisor.log_backups) == (4096, 0)
    (sidecar,) = cfg.sidecars
    assert sidecar.health.probe is HealthKind.EXEC
    assert sidecar.health.command == ("check", "--fast")
    assert (sidecar.health.interval_s, sidecar.health.timeout_s) == (1.5, 1.5)
    assert sidecar.health.failures == 1
    assert (sidecar.output.file, sidecar.output.max_bytes, sidecar.output.backups) == (
        False,
        1024,
        100,
    )


def test_empty_log_file_means_stderr() -> None:
    assert parse_text('[supervisor]\nlog_file = ""\n').supervisor.log_file is None


@pytest.mark.parametrize(
    "extra",
    [
        "",
        "[sidecar.reclaim]\nenabled = false\n",
        '[sidecar.ready]\nprobe = "none"\n',
        '[sidecar.ready]\nprobe = "http"\npath = "/health"\n',
    ],
    ids=["tcp-probe", "reclaim-disabled", "probe-none", "probe-http"],
)
def test_socket_inherit_with_a_port_is_valid(extra: str) -> None:
    (sidecar,) = parse_text(
        PORTED + 'host = "::"\n' + extra + "[sidecar.socket]\ninherit = true\n"
    ).sidecars
    assert sidecar.socket.inherit is True
    assert (sidecar.host, sidecar.port) == ("::", 47820)


def test_base_delay_zero_is_valid() -> None:
    (sidecar,) = parse_text(SIDECAR + "[sidecar.restart]\nbase_delay = 0\n").sidecars
    assert sidecar.restart.base_delay_s == 0.0
    assert sidecar.restart.max_delay_s == 30.0


def test_max_delay_equal_to_base_delay_is_valid() -> None:
    text = SIDECAR + "[sidecar.restart]\nbase_delay = 5\nmax_delay = 5\n"
    (sidecar,) = parse_text(text).sidecars
    assert sidecar.restart.max_delay_s == 5.0


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    path = folder / "supervisor.toml"
    path.write_text(
        '[supervisor]\nstate_dir = "state"\n' + SIDECAR + 'cwd = "../app"\n', encoding="utf-8"
    )
    cfg = config.load(path)
    assert cfg.supervisor.state_dir == folder / "state"
    assert cfg.sidecars[0].cwd == folder.parent / "app"  # normalised, not resolved
    assert cfg.path == path


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    text = f'[supervisor]\nstate_dir = "{tmp_path}/s"\n' + SIDECAR + 'cwd = "/opt/app"\n'
    cfg = parse_text(text, tmp_path / "conf" / "supervisor.toml")
    assert cfg.supervisor.state_dir == tmp_path / "s"
    assert cfg.sidecars[0].cwd == Path("/opt/app")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("SIGTERM", signal.SIGTERM),
        ("TERM", signal.SIGTERM),
        ("SIGINT", signal.SIGINT),
        ("int", signal.SIGINT),
        ("SIGHUP", signal.SIGHUP),
        ("sigkill", signal.SIGKILL),
    ],
)
def test_stop_signal_names_are_accepted(name: str, expected: signal.Signals) -> None:
    (sidecar,) = parse_text(SIDECAR + f'[sidecar.stop]\nsignal = "{name}"\n').sidecars
    assert sidecar.stop.signal is expected


@pytest.mark.parametrize(
    "name", ["a", "0", "agent-monitor", "a.b_c-d", "a" * 64], ids=lambda n: n[:16]
)
def test_valid_names_are_accepted(name: str) -> None:
    (sidecar,) = config.parse({"sidecar": [{"name": name, "command": ["x"]}]}).sidecars
    assert sidecar.name == name


def test_explicit_values_override_defaults() -> None:
    text = (
        '[supervisor]\nlog_format = "json"\nlog_level = "debug"\nexit_with_parent = true\n'
        "shutdown_timeout = 5\n"
        + PORTED
        + 'host = "::1"\nmarker = "server.js"\nenv = { A = "1" }\n'
        + '[sidecar.ready]\nprobe = "http"\npath = "/health"\ntimeout = 3\ninterval = 0.1\n'
        + '[sidecar.restart]\npolicy = "on-failure"\nmax_attempts = 0\n'
        + '[sidecar.reclaim]\nconsent = "command"\nconsent_command = ["true"]\n'
        + "consent_timeout = 0.5\n"
    )
    cfg = parse_text(text)
    assert cfg.supervisor.log_format is LogFormat.JSON
    assert cfg.supervisor.log_level is LogLevel.DEBUG
    assert cfg.supervisor.exit_with_parent is True
    assert cfg.supervisor.shutdown_timeout_s == 5.0
    (sidecar,) = cfg.sidecars
    assert (sidecar.host, sidecar.marker, dict(sidecar.env)) == ("::1", "server.js", {"A": "1"})
    assert sidecar.ready.probe is ProbeKind.HTTP
    assert (sidecar.ready.path, sidecar.ready.timeout_s, sidecar.ready.interval_s) == (
        "/health",
        3.0,
        0.1,
    )
    assert sidecar.restart.policy is RestartPolicy.ON_FAILURE
    assert sidecar.restart.max_attempts == 0
    assert sidecar.reclaim.consent is ConsentMode.COMMAND
    assert sidecar.reclaim.consent_command == ("true",)
    assert sidecar.reclaim.consent_timeout_s == 0.5


def test_check_config_valid_prints_one_line_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, PORTED)
    assert cli.main(["check-config", "-c", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out == f"{path}: valid; 1 sidecar: agent (port 47820)\n"


# -- commands: empty arguments, "{python}" --------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["redis-server", "--save", ""],
        ["node", "", "server.js"],
        ["x", ""],
    ],
)
def test_empty_arguments_after_the_program_are_kept(command: list[str]) -> None:
    text = f'[[sidecar]]\nname = "a"\ncommand = {json.dumps(command)}\n'
    (sidecar,) = parse_text(text).sidecars
    assert sidecar.command == tuple(command)


def test_empty_consent_command_argument_is_kept() -> None:
    text = PORTED + '[sidecar.reclaim]\nconsent_command = ["ask", ""]\n'
    (sidecar,) = parse_text(text).sidecars
    assert sidecar.reclaim.consent_command == ("ask", "")


def test_python_placeholder_is_the_given_interpreter_and_the_default_marker_uses_it() -> None:
    text = '[[sidecar]]\nname = "a"\ncommand = ["{python}", "-m", "app", "{python}"]\n'
    cfg = config.parse(tomllib.loads(text), interpreter="/venv/bin/python")
    (sidecar,) = cfg.sidecars
    # Only the whole argv[0] is replaced; the same text elsewhere is an ordinary argument.
    assert sidecar.command == ("/venv/bin/python", "-m", "app", "{python}")
    assert sidecar.marker == "/venv/bin/python -m app {python}"


def test_python_placeholder_in_consent_command() -> None:
    text = PORTED + '[sidecar.reclaim]\nconsent_command = ["{python}", "ask.py"]\n'
    cfg = config.parse(tomllib.loads(text), interpreter="/venv/bin/python")
    assert cfg.sidecars[0].reclaim.consent_command == ("/venv/bin/python", "ask.py")


@pytest.mark.parametrize("argv0", ["{python}x", "{ python }", "{PYTHON}", " {python}"])
def test_near_placeholders_are_ordinary_programs(argv0: str) -> None:
    text = f'[[sidecar]]\nname = "a"\ncommand = {json.dumps([argv0])}\n'
    cfg = config.parse(tomllib.loads(text), interpreter="/venv/bin/python")
    assert cfg.sidecars[0].command == (argv0,)


def test_python_placeholder_without_a_known_interpreter_is_a_key_path_error() -> None:
    text = '[[sidecar]]\nname = "a"\ncommand = ["{python}", "-m", "app"]\n'
    with pytest.raises(ConfigError) as caught:
        config.parse(tomllib.loads(text))
    (problem,) = caught.value.problems
    assert problem.startswith('sidecar "a": command[0]: {python} stands for the daemon\'s Python')


def test_load_replaces_python_placeholder_with_this_interpreter_unresolved(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, '[[sidecar]]\nname = "a"\ncommand = ["{python}", "-V"]\n')
    (sidecar,) = config.load(path).sidecars
    assert sidecar.command == (sys.executable, "-V")


def test_demo_config_runs_the_demo_on_the_daemons_interpreter() -> None:
    (sidecar,) = config.load(ROOT / "config" / "demo.toml").sidecars
    assert sidecar.command[:3] == (sys.executable, "-m", "supervisor.demo")


# -- the example config is the package's starter ---------------------------------------------


def test_example_config_is_the_starter_that_init_writes() -> None:
    from supervisor.cli import starter

    shipped = ROOT / "supervisor" / "config" / "example.toml"
    repo = ROOT / "config" / "example.toml"
    assert repo.read_text(encoding="utf-8") == shipped.read_text(encoding="utf-8"), (
        "config/example.toml and supervisor/config/example.toml differ: edit one and copy it "
        "over the other (the package's copy is what `supervisor init` writes)"
    )
    assert starter.example_text() == shipped.read_text(encoding="utf-8")


def test_the_reserved_names_are_every_file_the_state_dir_holds() -> None:
    from supervisor.config.schema import RESERVED_NAMES
    from supervisor.control import unixsock
    from supervisor.system import statedir

    files = {statedir.LOCK_NAME, statedir.PID_NAME, statedir.STATUS_NAME, unixsock.SOCKET_NAME}
    assert files == RESERVED_NAMES
    assert all(config.NAME_RE.fullmatch(name) for name in files)  # so the check is needed


@pytest.mark.parametrize(
    "name", ["control.sock", "status.json", "supervisor.pid", "supervisor.lock"]
)
def test_a_sidecar_named_after_a_state_dir_file_is_a_config_error(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, f'[[sidecar]]\nname = "{name}"\ncommand = ["x"]\n')
    code = cli.main(["check-config", "-c", str(path)])
    out, err = capsys.readouterr()
    assert code == 2, err
    expected = f'sidecar "{name}": name: "{name}" is a file of the state dir'
    assert_user_error(out, err, (expected,), path)
