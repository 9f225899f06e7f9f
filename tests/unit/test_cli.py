"""The command line as a user meets it: help, usage errors, check-config."""

from __future__ import annotations

import subprocess
import sys

from tests.support import ROOT


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=False,
    )


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
    ):
        assert command in result.stdout


def test_check_config_example_is_valid_with_one_line_summary() -> None:
    result = run_cli("check-config", "-c", "config/example.toml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1
    assert "agent-monitor" in result.stdout


def test_check_config_demo_is_valid() -> None:
    result = run_cli("check-config", "-c", "config/demo.toml")
    assert result.returncode == 0, result.stderr


def test_usage_error_is_one_line_exit_2() -> None:
    result = run_cli("port", "notaport")
    assert result.returncode == 2
    assert result.stderr.startswith("supervisor: ")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_missing_config_is_one_line_exit_2(tmp_path: object) -> None:
    result = run_cli("check-config", "-c", "/nonexistent/supervisor.toml")
    assert result.returncode == 2
    assert "/nonexistent/supervisor.toml" in result.stderr
    assert "Traceback" not in result.stderr
