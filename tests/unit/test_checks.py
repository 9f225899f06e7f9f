"""check-config looks past the schema: each program resolved as the daemon would, cwd present."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor import cli
from tests.support import PYTHON, ROOT


def _check(tmp_path: Path, body: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    path = tmp_path / "supervisor.toml"
    path.write_text(body)
    code = cli.main(["check-config", "-c", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_misspelled_program_is_caught(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = '[[sidecar]]\nname = "api"\ncommand = ["pyhton3-no-such", "app.py"]\n'
    code, out, err = _check(tmp_path, body, capsys)
    assert code == 2 and out == ""
    (line,) = err.splitlines()
    assert line.startswith(f"supervisor: config {tmp_path / 'supervisor.toml'}: ")
    assert 'sidecar "api": command[0]: "pyhton3-no-such" is not found on PATH (' in line


def test_the_sidecars_own_path_is_the_one_searched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "my-tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    found = f'[[sidecar]]\nname = "a"\ncommand = ["my-tool"]\nenv = {{PATH = "{bin_dir}"}}\n'
    code, out, _ = _check(tmp_path, found, capsys)
    assert code == 0 and "valid; 1 sidecar" in out
    hidden = '[[sidecar]]\nname = "a"\ncommand = ["python3"]\nenv = {PATH = "/nonexistent"}\n'
    code, _, err = _check(tmp_path, hidden, capsys)
    assert code == 2 and '"python3" is not found on PATH (/nonexistent)' in err


def test_relative_program_is_resolved_against_cwd(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "run.sh").write_text("#!/bin/sh\n")
    body = f'[[sidecar]]\nname = "a"\ncommand = ["./run.sh"]\ncwd = "{tmp_path}"\n'
    code, _, err = _check(tmp_path, body, capsys)
    assert code == 2 and f'"{tmp_path}/./run.sh" is not executable' in err
    (tmp_path / "run.sh").chmod(0o755)
    code, out, _ = _check(tmp_path, body, capsys)
    assert code == 0, out


def test_missing_cwd_and_the_other_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = (
        f'[[sidecar]]\nname = "a"\ncommand = ["{sys.executable}"]\ncwd = "{tmp_path}/gone"\n'
        "port = 47999\n"
        '[sidecar.health]\nprobe = "exec"\ncommand = ["no-such-health-check"]\n'
        '[sidecar.reclaim]\nconsent_command = ["no-such-dialog"]\n'
    )
    code, _, err = _check(tmp_path, body, capsys)
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 3, err
    assert f'sidecar "a": cwd: "{tmp_path}/gone" does not exist' in lines[0]
    assert 'health.command[0]: "no-such-health-check" is not found' in lines[1]
    assert 'reclaim.consent_command[0]: "no-such-dialog" is not found' in lines[2]


@pytest.mark.skipif(sys.platform != "linux", reason="installs a systemd user unit (Linux)")
def test_an_installed_service_adds_notes_for_what_its_path_would_miss(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "my-tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    config = tmp_path / "supervisor.toml"
    config.write_text('[[sidecar]]\nname = "a"\ncommand = ["my-tool"]\n')
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SUPERVISOR_", "XDG_"))},
        "HOME": str(tmp_path),
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
    }

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PYTHON, "-m", "supervisor", "check-config", "-c", str(config)],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=60, check=False,
        )  # fmt: skip

    before = check()
    assert before.returncode == 0 and before.stderr == "", before.stderr
    installed = subprocess.run(
        [PYTHON, "-m", "supervisor", "service", "install", "-c", str(config), "--kind", "systemd"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60, check=False,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    after = check()
    assert after.returncode == 0, after.stderr
    assert after.stderr.startswith("supervisor: note: under the installed systemd service: ")
    assert "my-tool" in after.stderr
