"""Service files: the committed templates, the systemd unit and LaunchAgent as rendered, and
`supervisor service print|install|uninstall` into a temporary HOME."""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from supervisor import cli, service
from supervisor.service import PLACEHOLDER, Kind, ServiceError, ServiceSpec, templates
from tests.support import ROOT, render_config

COMMITTED = {
    Kind.SYSTEMD: ROOT / "systemd" / "sidecar-supervisor.service",
    Kind.LAUNCHD: ROOT / "launchd" / f"{service.LAUNCHD_LABEL}.plist",
}


def parse_unit(text: str) -> dict[str, dict[str, str]]:
    """A systemd unit as {section: {key: value}} (later assignments win, as systemd does)."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in text.splitlines():
        if not line.strip() or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, f"assignment outside a section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not an assignment: {line!r}"
        current[key.strip()] = value.strip()
    return sections


def write_config(path: Path, **supervisor: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sidecar = {"name": "agent-monitor", "command": ["/bin/true"]}
    path.write_text(render_config([sidecar], supervisor or None))
    return path


# --- rendering ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(Kind))
def test_committed_file_is_the_placeholder_rendering(kind: Kind) -> None:
    path = COMMITTED[kind]
    assert path.name == service.file_name(kind)
    assert path.read_bytes() == service.render(kind, PLACEHOLDER).encode("utf-8")


def test_systemd_unit_has_the_required_settings() -> None:
    unit = parse_unit(service.render(Kind.SYSTEMD, PLACEHOLDER))
    assert int(unit["Unit"]["StartLimitIntervalSec"]) > 0
    assert int(unit["Unit"]["StartLimitBurst"]) > 0
    svc = unit["Service"]
    assert svc["Type"] == "notify"
    assert svc["NotifyAccess"] == "main"
    assert svc["ExecStart"] == (
        "/path/to/venv/bin/python -P -m supervisor run -c /path/to/supervisor.toml"
        " --log-format json"
    )
    assert svc["ExecReload"] == (
        "/path/to/venv/bin/python -P -m supervisor reload --wait -c /path/to/supervisor.toml"
    )
    assert svc["KillMode"] == "mixed"
    assert svc["Delegate"] == "yes"  # the daemon puts each sidecar in a cgroup below its own
    assert int(svc["TimeoutStopSec"]) > PLACEHOLDER.shutdown_timeout_s
    assert svc["Restart"] == "on-failure"
    assert int(svc["RestartSec"]) > 0
    assert unit["Install"]["WantedBy"] == "default.target"


@pytest.mark.parametrize("shutdown_timeout_s", [0.5, 2.0, 30.0, 30.2, 100.0])
def test_stop_timeouts_exceed_shutdown_timeout(shutdown_timeout_s: float) -> None:
    spec = ServiceSpec(PLACEHOLDER.python, PLACEHOLDER.config, PLACEHOLDER.home, shutdown_timeout_s)
    unit = parse_unit(service.render(Kind.SYSTEMD, spec))
    agent = plistlib.loads(service.render(Kind.LAUNCHD, spec).encode())
    assert int(unit["Service"]["TimeoutStopSec"]) >= shutdown_timeout_s + 10
    assert agent["ExitTimeOut"] == int(unit["Service"]["TimeoutStopSec"])


@pytest.mark.parametrize(
    ("arg", "word"),
    [
        ("/opt/venv/bin/python", "/opt/venv/bin/python"),
        ("/home/me/my venv/bin/python", '"/home/me/my venv/bin/python"'),
        ("/srv/100%/x.toml", "/srv/100%%/x.toml"),
        ("/srv/$HOME/x.toml", "/srv/$$HOME/x.toml"),
        ('/srv/a"b/x.toml', '"/srv/a\\"b/x.toml"'),
        ("/srv/a\\b/x.toml", '"/srv/a\\\\b/x.toml"'),
        ("/srv/it's/x.toml", '"/srv/it\'s/x.toml"'),
        ("", '""'),
    ],
)
def test_systemd_words_are_quoted_and_escaped(arg: str, word: str) -> None:
    assert templates._systemd_word(arg) == word


@pytest.mark.parametrize(
    "spec",
    [
        ServiceSpec(Path("venv/bin/python"), PLACEHOLDER.config, PLACEHOLDER.home),
        ServiceSpec(PLACEHOLDER.python, Path("supervisor.toml"), PLACEHOLDER.home),
        ServiceSpec(PLACEHOLDER.python, Path("/a\nb.toml"), PLACEHOLDER.home),
        ServiceSpec(PLACEHOLDER.python, PLACEHOLDER.config, Path("~")),
    ],
)
@pytest.mark.parametrize("kind", list(Kind))
def test_render_refuses_relative_or_control_paths(kind: Kind, spec: ServiceSpec) -> None:
    with pytest.raises(ServiceError) as info:
        service.render(kind, spec)
    assert info.value.exit_code == 2
    assert "; " in info.value.message


@pytest.mark.parametrize("kind", list(Kind))
def test_generated_files_are_recognised_until_edited(kind: Kind) -> None:
    text = service.render(kind, PLACEHOLDER)
    assert service.is_generated(text)
    assert not service.is_generated(text.replace("/path/to/supervisor.toml", "/etc/other.toml"))
    assert not service.is_generated(text.replace("generated-by", "written-by"))
    assert not service.is_generated("")


def test_launchd_plist_round_trips_with_required_keys() -> None:
    home = Path("/Users/someone")
    spec = ServiceSpec(Path("/opt/venv/bin/python"), Path("/etc/sc/supervisor.toml"), home, 30.0)
    agent = plistlib.loads(service.render(Kind.LAUNCHD, spec).encode("utf-8"))
    assert agent["Label"] == service.LAUNCHD_LABEL == COMMITTED[Kind.LAUNCHD].stem
    args = agent["ProgramArguments"]
    assert isinstance(args, list)
    assert all(isinstance(a, str) for a in args)
    assert args == [
        "/opt/venv/bin/python",
        "-P",
        "-m",
        "supervisor",
        "run",
        "-c",
        "/etc/sc/supervisor.toml",
        "--log-format",
        "json",
        "--log-file",
        "/Users/someone/Library/Logs/sidecar-supervisor/supervisor.log",
    ]
    assert agent["RunAtLoad"] is True
    assert agent["KeepAlive"] == {"SuccessfulExit": False}
    assert isinstance(agent["ThrottleInterval"], int)
    assert agent["ThrottleInterval"] > 0
    assert isinstance(agent["ExitTimeOut"], int)
    assert agent["ExitTimeOut"] > 30
    assert agent["ProcessType"] in {"Standard", "Interactive", "Adaptive", "Background"}
    for key in ("StandardOutPath", "StandardErrorPath"):
        log = Path(agent[key])
        assert log.is_absolute()
        assert "~" not in str(log)
        assert log.parent == home / "Library" / "Logs" / "sidecar-supervisor"


def test_launchd_agent_logs_to_the_rotated_log_file_not_to_stderr() -> None:
    """The daemon's log goes to `--log-file` (rotated by the daemon); launchd's unrotated
    StandardErrorPath is another file, which only start-up errors and crashes reach."""
    home = Path("/Users/someone")
    spec = ServiceSpec(Path("/opt/venv/bin/python"), Path("/etc/sc/supervisor.toml"), home, 30.0)
    agent = plistlib.loads(service.render(Kind.LAUNCHD, spec).encode("utf-8"))
    args = agent["ProgramArguments"]
    log_file = Path(args[args.index("--log-file") + 1])
    assert log_file == home / "Library" / "Logs" / "sidecar-supervisor" / "supervisor.log"
    assert Path(agent["StandardErrorPath"]) != log_file
    assert Path(agent["StandardOutPath"]) != log_file
    # They are arguments `supervisor run` accepts: --log-file reaches the run options.
    assert args[1:4] == ["-P", "-m", "supervisor"]
    parsed = cli.build_parser().parse_args(args[4:])
    assert parsed.command == "run"
    assert parsed.log_file == str(log_file)
    assert parsed.log_format == "json"


# --- systemd-analyze ---------------------------------------------------------------------------


def _verify(unit: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    analyze = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "HOME": str(tmp_path)}
    return subprocess.run(
        [analyze, "--user", "verify", str(unit)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def _verify_problems(result: subprocess.CompletedProcess[str]) -> list[str]:
    # verify exits 0 on unknown keys and sections: it only warns, "..., ignoring".
    return [
        line
        for line in result.stderr.splitlines()
        if "Unknown" in line or "ignoring" in line or "rror" in line
    ]


needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None and not Path("/usr/bin/systemd-analyze").exists(),
    reason="systemd-analyze is not installed",
)


@needs_systemd_analyze
def test_rendered_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # Real, existing paths (verify checks ExecStart's binary), with a space and a '%' to exercise
    # quoting and specifier escaping; the interpreter is a venv-style symlink, kept as is.
    venv_bin = tmp_path / "my venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").symlink_to(sys.executable)
    config = write_config(tmp_path / "conf 100%" / "supervisor.toml")
    spec = ServiceSpec(venv_bin / "python", config, tmp_path, 30.0)
    unit = tmp_path / "unit" / service.UNIT_NAME
    unit.parent.mkdir()
    unit.write_text(service.render(Kind.SYSTEMD, spec))

    result = _verify(unit, tmp_path)
    assert result.returncode == 0, result.stderr
    assert _verify_problems(result) == [], result.stderr


@needs_systemd_analyze
def test_verify_check_catches_an_unknown_key(tmp_path: Path) -> None:
    spec = ServiceSpec(Path(sys.executable), write_config(tmp_path / "s.toml"), tmp_path)
    unit = tmp_path / "unit" / service.UNIT_NAME
    unit.parent.mkdir()
    unit.write_text(
        service.render(Kind.SYSTEMD, spec).replace("[Service]\n", "[Service]\nBogus=1\n")
    )
    assert _verify_problems(_verify(unit, tmp_path)) != []


# --- the command, into a temporary HOME --------------------------------------------------------


def run_service(
    home: Path, *args: str, env: Mapping[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPERVISOR_", "XDG_"))}
    full_env["HOME"] = str(home)
    full_env["XDG_CONFIG_HOME"] = str(home / ".config")
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "supervisor", "service", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=30,
        check=False,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("supervisor: ")
    assert result.stderr.count("\n") == 1
    assert "; " in result.stderr
    assert "Traceback" not in result.stderr


def test_systemd_install_reinstall_refuse_force_uninstall(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = write_config(tmp_path / "a" / "supervisor.toml", shutdown_timeout=100.0)
    other = write_config(tmp_path / "b" / "supervisor.toml")
    unit = home / ".config" / "systemd" / "user" / service.UNIT_NAME

    installed = run_service(home, "install", "-c", str(first), "--kind", "systemd")
    assert installed.returncode == 0, installed.stderr
    assert (
        "systemctl --user daemon-reload && systemctl --user enable --now "
        "sidecar-supervisor.service" in installed.stdout
    )
    assert "loginctl enable-linger" in installed.stdout
    text = unit.read_text()
    printed = run_service(home, "print", "-c", str(first), "--kind", "systemd")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == text
    svc = parse_unit(text)["Service"]
    assert svc["ExecStart"].split()[0] == sys.executable  # as is, not resolved out of the venv
    assert f"-c {first} " in svc["ExecStart"]
    assert svc["TimeoutStopSec"] == "115"

    again = run_service(home, "install", "-c", str(first), "--kind", "systemd")
    assert again.returncode == 0, again.stderr
    assert "already installed" in again.stdout

    refused = run_service(home, "install", "-c", str(other), "--kind", "systemd")
    assert_one_line_error(refused)
    assert "--force" in refused.stderr
    assert unit.read_text() == text

    forced = run_service(home, "install", "-c", str(other), "--kind", "systemd", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "systemctl --user restart" in forced.stdout
    assert f"-c {other} " in unit.read_text()

    removed = run_service(home, "uninstall", "--kind", "systemd")
    assert removed.returncode == 0, removed.stderr
    assert not unit.exists()
    assert "daemon-reload" in removed.stdout

    nothing = run_service(home, "uninstall", "--kind", "systemd")
    assert nothing.returncode == 0, nothing.stderr
    assert "not installed" in nothing.stdout


def test_interpreter_path_is_not_resolved(tmp_path: Path) -> None:
    if os.path.realpath(sys.executable) == sys.executable:
        pytest.skip("this interpreter is not a symlink")
    config = write_config(tmp_path / "supervisor.toml")
    result = run_service(tmp_path, "print", "-c", str(config), "--kind", "launchd")
    assert result.returncode == 0, result.stderr
    args = plistlib.loads(result.stdout.encode())["ProgramArguments"]
    assert args[0] == sys.executable
    assert os.path.realpath(sys.executable) not in result.stdout


def test_relative_config_is_rendered_absolute(tmp_path: Path) -> None:
    write_config(tmp_path / "conf" / "supervisor.toml")
    result = run_service(
        tmp_path, "print", "-c", "conf/supervisor.toml", "--kind", "systemd", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert f"-c {tmp_path / 'conf' / 'supervisor.toml'} " in result.stdout


def test_install_honours_default_xdg_config_home(tmp_path: Path) -> None:
    config = write_config(tmp_path / "supervisor.toml")
    elsewhere = tmp_path / "xdg"
    result = run_service(
        tmp_path,
        "install",
        "-c",
        str(config),
        "--kind",
        "systemd",
        env={"XDG_CONFIG_HOME": str(elsewhere)},
    )
    assert result.returncode == 0, result.stderr
    assert (elsewhere / "systemd" / "user" / service.UNIT_NAME).is_file()


def test_uninstall_refuses_a_file_it_did_not_write(tmp_path: Path) -> None:
    unit = tmp_path / ".config" / "systemd" / "user" / service.UNIT_NAME
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\nExecStart=/bin/true\n")
    assert_one_line_error(run_service(tmp_path, "uninstall", "--kind", "systemd"))
    assert unit.exists()
    forced = run_service(tmp_path, "uninstall", "--kind", "systemd", "--force")
    assert forced.returncode == 0, forced.stderr
    assert not unit.exists()


def test_uninstall_refuses_an_edited_file(tmp_path: Path) -> None:
    config = write_config(tmp_path / "supervisor.toml")
    assert run_service(tmp_path, "install", "-c", str(config), "--kind", "systemd").returncode == 0
    unit = tmp_path / ".config" / "systemd" / "user" / service.UNIT_NAME
    unit.write_text(unit.read_text().replace("RestartSec=2", "RestartSec=5"))
    assert_one_line_error(run_service(tmp_path, "uninstall", "--kind", "systemd"))
    assert unit.exists()


def test_uninstall_refuses_while_enabled(tmp_path: Path) -> None:
    config = write_config(tmp_path / "supervisor.toml")
    assert run_service(tmp_path, "install", "-c", str(config), "--kind", "systemd").returncode == 0
    unit = tmp_path / ".config" / "systemd" / "user" / service.UNIT_NAME
    wants = unit.parent / "default.target.wants"
    wants.mkdir()
    (wants / service.UNIT_NAME).symlink_to(unit)  # what "systemctl --user enable" creates
    refused = run_service(tmp_path, "uninstall", "--kind", "systemd")
    assert_one_line_error(refused)
    assert "systemctl --user disable --now" in refused.stderr
    assert unit.exists()


def test_launchd_install_and_uninstall(tmp_path: Path) -> None:
    home = tmp_path / "home"
    config = write_config(tmp_path / "supervisor.toml")
    plist = home / "Library" / "LaunchAgents" / f"{service.LAUNCHD_LABEL}.plist"

    installed = run_service(home, "install", "-c", str(config), "--kind", "launchd")
    assert installed.returncode == 0, installed.stderr
    assert f"launchctl bootstrap gui/$(id -u) {plist}" in installed.stdout
    agent = plistlib.loads(plist.read_bytes())
    assert agent["ProgramArguments"][0] == sys.executable
    assert str(config) in agent["ProgramArguments"]
    log_dir = home / "Library" / "Logs" / "sidecar-supervisor"
    assert Path(agent["StandardErrorPath"]).parent == log_dir
    assert log_dir.is_dir()  # launchd does not create it

    removed = run_service(home, "uninstall", "--kind", "launchd")
    assert removed.returncode == 0, removed.stderr
    assert not plist.exists()
    assert f"launchctl bootout gui/$(id -u)/{service.LAUNCHD_LABEL}" in removed.stdout


@pytest.mark.parametrize("action", ["print", "install"])
def test_unloadable_config_fails_with_the_config_error(tmp_path: Path, action: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[supervisor]\nshutdown_timeout = -1\n")
    for config in (bad, tmp_path / "missing.toml"):
        result = run_service(tmp_path, action, "-c", str(config), "--kind", "systemd")
        assert_one_line_error(result)
        assert str(config) in result.stderr
    assert not (tmp_path / ".config").exists()


# --- sidecar commands under the service's minimal PATH ------------------------------------------


def _program(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def _commands_config(tmp_path: Path, commands: Mapping[str, list[str]]) -> Path:
    path = tmp_path / "supervisor.toml"
    path.write_text(render_config([{"name": n, "command": c} for n, c in commands.items()]))
    return path


def test_service_print_notes_commands_the_minimal_path_would_not_find(tmp_path: Path) -> None:
    here = tmp_path / "venv-bin"
    mytool = _program(here, "mytool-for-supervisor-tests")
    own_sh = _program(here, "sh")
    config = _commands_config(
        tmp_path,
        {
            "missing": ["no-such-program-for-supervisor-tests", "--flag"],
            "mine": [mytool.name],
            "shadowed": ["sh", "-c", "exit 0"],
            "absolute": ["/bin/sh", "-c", "exit 0"],
            "own": ["{python}", "-m", "supervisor.demo"],
        },
    )
    env = {"PATH": f"{here}:/usr/bin:/bin"}
    plain = run_service(tmp_path, "print", "-c", str(config), "--kind", "systemd")
    result = run_service(tmp_path, "print", "-c", str(config), "--kind", "systemd", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == plain.stdout  # the notes change nothing in the file
    notes = result.stderr.splitlines()
    assert all(line.startswith("supervisor: note: sidecar ") for line in notes), notes
    by_name = {line.split('"')[1]: line for line in notes}
    assert sorted(by_name) == ["mine", "missing", "shadowed"], notes
    minimal = service.service_path(Kind.SYSTEMD)
    assert minimal == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert (
        'command program "no-such-program-for-supervisor-tests" is not found in the PATH of '
        f"a systemd user service ({minimal}); give its absolute path, or set PATH"
    ) in by_name["missing"]
    assert f"give its absolute path (here: {mytool})" in by_name["mine"]
    there = shutil.which("sh", path=minimal)
    assert there is not None
    assert f"is {os.path.realpath(os.path.dirname(there))}/sh in the PATH" in by_name["shadowed"]
    assert f"but {own_sh} here" in by_name["shadowed"]


def test_service_notes_suggest_python_placeholder_and_use_launchds_path(tmp_path: Path) -> None:
    config = _commands_config(tmp_path, {"app": ["python-for-supervisor-tests", "app.py"]})
    for action, kind in (("print", "launchd"), ("install", "launchd"), ("install", "systemd")):
        result = run_service(tmp_path / "home", action, "-c", str(config), "--kind", kind)
        assert result.returncode == 0, result.stderr
        (note,) = result.stderr.splitlines()
        assert '"{python}" for the daemon\'s own interpreter' in note
        expected = service.service_path(Kind(kind))
        assert f"({expected})" in note
    assert service.service_path(Kind.LAUNCHD) == "/usr/bin:/bin:/usr/sbin:/sbin"


def test_no_notes_for_absolute_commands(tmp_path: Path) -> None:
    config = write_config(tmp_path / "supervisor.toml")
    result = run_service(tmp_path, "print", "-c", str(config), "--kind", "systemd")
    assert result.returncode == 0
    assert result.stderr == ""
