"""The command line as a user meets it: help, usage errors, check-config, init, and the
messages that point from one command to the next."""

from __future__ import annotations

import argparse
import functools
import json
import shlex
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.cli import build_parser
from tests import support
from tests.support import ROOT, one_line

run_cli = functools.partial(support.run_cli, clean=True)



def test_help_lists_every_command() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for command in (
        "run",
        "check-config",
        "status",
        "stop",
        "reload",
        "restart",
        "port",
        "service",
        "init",
    ):
        assert command in result.stdout


def _parsers(
    parser: argparse.ArgumentParser,
) -> Iterator[tuple[argparse.ArgumentParser, argparse.Action]]:
    for action in parser._actions:
        yield parser, action
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                yield parser, choice
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_option_positional_and_command_has_help() -> None:
    missing = [
        f"{parser.prog}: {'/'.join(action.option_strings) or action.metavar or action.dest}"
        for parser, action in _parsers(build_parser())
        if not action.help or action.help == argparse.SUPPRESS
    ]
    assert missing == [], "options without help text: " + ", ".join(missing)


def test_the_help_walk_sees_subcommand_options() -> None:
    # The walk above must reach nested parsers, or it would pass by seeing nothing.
    seen = {(p.prog, tuple(a.option_strings)) for p, a in _parsers(build_parser())}
    assert ("supervisor run", ("--log-format",)) in seen
    assert ("supervisor port", ("--json",)) in seen
    assert any(prog == "supervisor port" and not opts for prog, opts in seen)  # PORT


def test_check_config_example_is_valid_with_one_line_summary() -> None:
    result = run_cli("check-config", "-c", "config/example.toml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1
    assert "1 sidecar: demo (port 4820)" in result.stdout


def test_check_config_demo_is_valid() -> None:
    result = run_cli("check-config", "-c", "config/demo.toml")
    assert result.returncode == 0, result.stderr


def test_usage_error_is_one_line_exit_2() -> None:
    result = run_cli("port", "notaport")
    assert result.returncode == 2
    one_line(result.stderr)


def test_missing_config_is_one_line_exit_2(tmp_path: object) -> None:
    result = run_cli("check-config", "-c", "/nonexistent/supervisor.toml")
    assert result.returncode == 2
    assert "/nonexistent/supervisor.toml" in result.stderr
    assert "Traceback" not in result.stderr


# -- init ------------------------------------------------------------------------------------


def test_init_writes_the_commented_starter_that_runs_as_is(tmp_path: Path) -> None:
    path = tmp_path / "new folder" / "supervisor.toml"
    result = run_cli("init", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert path.read_text(encoding="utf-8") == (ROOT / "config" / "example.toml").read_text(
        encoding="utf-8"
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # The next steps it prints are commands that work as printed.
    (check_line,) = [line for line in result.stdout.splitlines() if "check-config" in line]
    check = shlex.split(check_line.partition("supervisor ")[2])
    checked = run_cli(*check)
    assert checked.returncode == 0, checked.stderr
    assert "1 sidecar: demo (port 4820)" in checked.stdout


def test_init_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "supervisor.toml"
    path.write_text("# mine\n")
    result = run_cli("init", str(path))
    assert result.returncode == 2
    message = one_line(result.stderr)
    assert message.startswith(f"{path} already exists (init never overwrites a config); ")
    assert path.read_text() == "# mine\n"


def test_init_does_not_write_through_a_dangling_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.toml"
    link = tmp_path / "supervisor.toml"
    link.symlink_to(target)
    result = run_cli("init", str(link))
    assert result.returncode == 2
    assert "already exists" in one_line(result.stderr)
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["supervisor.toml"]  # no temp left


def test_init_into_an_unusable_folder_is_one_line_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run_cli("init", str(blocker / "supervisor.toml"))
    assert result.returncode == 2
    assert "cannot be written" in one_line(result.stderr)


def _home_env(tmp_path: Path) -> dict[str, str]:
    return {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "home" / "cfg")}


def test_init_without_path_writes_where_every_command_looks(tmp_path: Path) -> None:
    env = _home_env(tmp_path)
    default = tmp_path / "home" / "cfg" / "sidecar-supervisor" / "supervisor.toml"
    result = run_cli("init", env=env)
    assert result.returncode == 0, result.stderr
    assert default.is_file()
    found = run_cli("check-config", env=env)
    assert found.returncode == 0, found.stderr
    assert found.stdout.startswith(f"{default}: valid")
    # $SUPERVISOR_CONFIG is where every command looks first; init honours it too.
    chosen = tmp_path / "chosen.toml"
    assert run_cli("init", env={**env, "SUPERVISOR_CONFIG": str(chosen)}).returncode == 0
    assert chosen.is_file()


def test_a_missing_config_points_to_init_and_that_command_works(tmp_path: Path) -> None:
    env = _home_env(tmp_path)
    for command in (["run", "--log-format", "console"], ["check-config"]):
        result = run_cli(*command, env=env)
        assert result.returncode == 2
        message = one_line(result.stderr)
        assert "file not found; create a commented starter config with" in message, message
        suggested = message.split('"')[1]
        assert suggested.startswith("supervisor init ")
    init = run_cli(*shlex.split(suggested)[1:], env=env)
    assert init.returncode == 0, init.stderr
    assert run_cli("check-config", env=env).returncode == 0


def test_run_config_errors_point_to_a_working_check_config(tmp_path: Path) -> None:
    path = tmp_path / "my config.toml"
    path.write_text('typo = 1\n[[sidecar]]\nname = "Bad"\ncommand = ["x"]\n')
    result = run_cli("run", "-c", str(path), "--log-format", "console")
    assert result.returncode == 2
    message = one_line(result.stderr)
    assert "(and 1 more); see every problem with " in message, message
    suggested = shlex.split(message.rpartition("see every problem with ")[2].strip('"'))
    assert suggested[:3] == ["supervisor", "check-config", "-c"]
    checked = run_cli(*suggested[1:])
    assert checked.returncode == 2
    assert len(checked.stderr.splitlines()) == 2  # every problem, one line each

    path.write_text('[[sidecar]]\nname = "Bad"\ncommand = ["x"]\n')
    single = one_line(run_cli("run", "-c", str(path), "--log-format", "console").stderr)
    assert single.endswith(
        f'; fix it, then check it with "supervisor check-config -c {shlex.quote(str(path))}"'
    )


# -- run: fatal start-up errors in the log's format -------------------------------------------


def _events(stderr: str) -> list[dict[str, object]]:
    lines = stderr.splitlines()
    assert lines, "nothing on stderr"
    events = [json.loads(line) for line in lines]  # every line is JSON
    assert all(isinstance(e, dict) for e in events)
    return events


def test_json_start_failure_is_a_daemon_start_failed_event(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    plain = run_cli("run", "-c", str(missing), "--log-format", "console")
    result = run_cli("run", "-c", str(missing), "--log-format", "json")
    assert result.returncode == plain.returncode == 2
    (event,) = _events(result.stderr)
    assert event["event"] == "daemon_start_failed"
    assert event["level"] == "error"
    assert event["error"] == one_line(plain.stderr)  # the same one-line message
    assert event["exit_code"] == 2
    assert event["path"] == str(missing)
    assert event["problems"] == ["file not found"]
    assert str(event["timestamp"]).endswith("Z")


def test_off_a_tty_auto_start_failure_is_json_like_the_log(tmp_path: Path) -> None:
    result = run_cli("run", "-c", str(tmp_path / "missing.toml"))
    assert result.returncode == 2
    (event,) = _events(result.stderr)
    assert event["event"] == "daemon_start_failed"


@pytest.mark.parametrize(("log_format", "as_json"), [("json", True), ("console", False)])
def test_after_the_config_loaded_its_log_format_decides(
    tmp_path: Path, log_format: str, as_json: bool
) -> None:
    blocker = tmp_path / "state-is-a-file"
    blocker.write_text("")
    config = tmp_path / "supervisor.toml"
    config.write_text(f'[supervisor]\nlog_format = "{log_format}"\nstate_dir = "{blocker}"\n')
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 2
    if as_json:
        (event,) = _events(result.stderr)
        assert event["event"] == "daemon_start_failed"
        assert event["path"] == str(blocker)
        assert "state dir" in str(event["error"])
    else:
        assert "state dir" in one_line(result.stderr)
