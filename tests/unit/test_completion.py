"""`supervisor completion` scripts come from the parser; a bare `supervisor` shows help."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from supervisor import cli
from supervisor.cli import completion
from tests.support import PYTHON, ROOT


def _names() -> list[str]:
    return [c.name for c in completion.commands(cli.build_parser())]


def test_every_subcommand_is_known_to_completion() -> None:
    names = _names()
    for name in ("run", "status", "logs", "stop", "check-config", "completion", "service"):
        assert name in names


@pytest.mark.parametrize("shell", completion.SHELLS)
def test_script_names_every_subcommand(shell: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["completion", shell]) == 0
    script = capsys.readouterr().out
    for name in _names():
        assert name in script, name
    assert "follow" in script and "state-dir" in script


def _bash_complete(script: str, *words: str) -> list[str]:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    line = " ".join(words)
    program = (
        f"{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _supervisor; "
        'printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run([bash, "-c", program], capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_bash_script_is_valid_and_completes(capsys: pytest.CaptureFixture[str]) -> None:
    cli.main(["completion", "bash"])
    script = capsys.readouterr().out
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    subprocess.run([bash, "-n"], input=script, text=True, check=True)
    assert _bash_complete(script, "supervisor", "st") == ["status", "start", "stop"]
    assert _bash_complete(script, "supervisor", "logs", "--fo") == ["--follow"]
    assert _bash_complete(script, "supervisor", "service", "un") == ["uninstall"]


def test_bare_supervisor_prints_help_and_exits_0() -> None:
    done = subprocess.run(
        [PYTHON, "-m", "supervisor"], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: supervisor")
    assert "check-config" in done.stdout and done.stderr == ""
