"""Packaging as a newcomer meets it: `python -m build` without warnings, and the wheel, installed
into a fresh venv that is never activated, runs the README's demo to `ready` from a folder
outside the repository, whatever `python` on PATH is."""

from __future__ import annotations

import importlib.metadata
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import urllib.request
import zipfile
from pathlib import Path

import psutil
import pytest

from tests.support import ROOT, free_port

# Not the test venv's bin (nor any venv's): the demo must not depend on what PATH holds.
MINIMAL_PATH = "/usr/local/bin:/usr/bin:/bin"


def _needs_build_tools() -> None:
    try:
        setuptools = importlib.metadata.version("setuptools")
        importlib.metadata.version("build")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("needs the test extras (build, setuptools>=77): pip install -e '.[test]'")
    if int(setuptools.split(".")[0]) < 77:
        pytest.skip(f"needs setuptools>=77 (the test extras), found {setuptools}")


def _clean_env(**extra: str) -> dict[str, str]:
    dropped = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONDONTWRITEBYTECODE")
    env = {
        k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("SUPERVISOR_")
    }
    env.update(extra)
    return env


# What a checkout has that is not source: never copied into the build's source tree.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "__pycache__", "*.egg-info", "build", "dist", ".*_cache", ".hypothesis",
    ".demo-state", "results",
)  # fmt: skip


def _build(dist: Path) -> tuple[Path, Path]:
    # A copy of the checkout: the build writes egg-info and build/ into its source tree, which
    # must not be the repository (nor need to be writable).
    source = dist.parent / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    # --no-isolation: the test venv's setuptools (the test extras), no download of a build env.
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=dist.parent,
        env=_clean_env(),
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    warnings = [line for line in output.splitlines() if "warn" in line.lower()]
    assert warnings == [], "python -m build warned:\n" + "\n".join(warnings)
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    return wheel, sdist


def _check_contents(wheel: Path, sdist: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        headers = archive.read(metadata).decode()
    assert "supervisor/config/example.toml" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), sorted(names)
    assert "License-Expression: MIT" in headers.splitlines()
    assert "License-File: LICENSE" in headers.splitlines()
    assert "Provides-Extra: mcp" in headers.splitlines()  # `supervisor mcp`'s SDK: optional
    assert any(n.startswith("supervisor/client/") for n in names), sorted(names)
    with tarfile.open(sdist) as archive:
        members = {name.partition("/")[2] for name in archive.getnames()}
    assert {"LICENSE", "README.md", "supervisor/config/example.toml"} <= members


def _read_until(stream: int, needle: bytes, deadline: float, seen: bytearray) -> None:
    while needle not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {needle!r} in time; output:\n{seen.decode()[-3000:]}"
        ready, _, _ = select.select([stream], [], [], remaining)
        if ready:
            chunk = os.read(stream, 65536)
            assert chunk, f"the daemon exited before {needle!r}:\n{seen.decode()[-3000:]}"
            seen += chunk


def _events(output: bytes, name: str) -> list[dict[str, object]]:
    events = []
    for line in output.decode().splitlines():
        event = json.loads(line)  # every line the daemon writes is JSON (auto, off a TTY)
        if event.get("event") == name:
            events.append(event)
    return events


def test_the_wheel_in_a_fresh_venv_runs_the_demo_from_anywhere(tmp_path: Path) -> None:
    _needs_build_tools()
    wheel, sdist = _build(tmp_path / "dist")
    _check_contents(wheel, sdist)

    venv = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
        env=_clean_env(),
        check=False,
    )
    assert install.returncode == 0, install.stderr[-3000:]

    # The README's demo, from a folder outside the repository: config/demo.toml, on a free port.
    port = free_port()
    work = tmp_path / "elsewhere"
    (work / "config").mkdir(parents=True)
    demo = (ROOT / "config" / "demo.toml").read_text(encoding="utf-8")
    assert demo.count("4820") >= 2
    (work / "config" / "demo.toml").write_text(demo.replace("4820", str(port)))
    env = _clean_env(PATH=MINIMAL_PATH, HOME=str(tmp_path / "home"))
    supervisor = str(venv / "bin" / "supervisor")

    starter = subprocess.run(
        [supervisor, "init", "starter.toml"], cwd=work, env=env, capture_output=True, check=False
    )
    assert starter.returncode == 0, starter.stderr
    assert (work / "starter.toml").read_bytes() == (ROOT / "config" / "example.toml").read_bytes()

    # Without the [mcp] extra, `supervisor mcp` says what to install, in one line.
    mcp = subprocess.run(
        [supervisor, "mcp"], cwd=work, env=env, capture_output=True, text=True, check=False
    )
    assert mcp.returncode == 2, mcp.stderr
    assert mcp.stderr.count("\n") == 1 and "sidecar-supervisor[mcp]" in mcp.stderr, mcp.stderr

    read_end, write_end = os.pipe()
    proc = subprocess.Popen(
        [supervisor, "run", "-c", "config/demo.toml"],
        cwd=work,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=write_end,
    )
    os.close(write_end)
    output = bytearray()
    try:
        _read_until(read_end, b'"sidecar_ready"', time.monotonic() + 60, output)
        (ready,) = _events(bytes(output), "sidecar_ready")
        sidecar = psutil.Process(int(str(ready["pid"])))
        assert sidecar.cmdline()[:3] == [str(python), "-m", "supervisor.demo"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as answer:
            assert answer.status == 200
        status = subprocess.run(
            [supervisor, "status", "-c", "config/demo.toml"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert status.returncode == 0, status.stderr
        assert "demo" in status.stdout and "ready" in status.stdout
        proc.send_signal(signal.SIGTERM)
        _read_until(read_end, b'"daemon_stopped"', time.monotonic() + 60, output)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        os.close(read_end)
    # The demo's state_dir is relative to the config's folder, as in the repository.
    assert (work / ".demo-state" / "status.json").is_file()
