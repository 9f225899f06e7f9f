"""Never dies, never lies (issue 25): exhaustion, abuse and races at the daemon's edges.

Each test provokes the real condition (a cgroup's pids.max, a low RLIMIT_NOFILE, a stopped
child, a daemon that is starting) against a real `supervisor run`, and synchronises on its
log events or status.json, each wait bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.support import (
    PYTHON,
    ROOT,
    Daemon,
    demo_sidecar,
    free_port,
    pid_gone,
    render_config,
    wait_until,
)

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")


def write_config(tmp_path: Path, sidecars: list[dict[str, Any]], **supervisor: object) -> Path:
    config = tmp_path / "supervisor.toml"
    config.write_text(render_config(sidecars, supervisor or None))
    return config


def read_status(state: Path) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = json.loads((state / "status.json").read_text())
    except (OSError, ValueError):
        return {}
    return doc


# -- SIGCONT before every stop signal -----------------------------------------------------------


def test_a_stopped_child_is_continued_and_stops_at_once_at_shutdown(tmp_path: Path) -> None:
    # Without SIGCONT its SIGTERM stays pending until the SIGKILL escalation, 60 s later.
    sidecar = demo_sidecar("paused", free_port(), stop={"timeout": 60.0})
    config = write_config(tmp_path, [sidecar], shutdown_timeout=120.0)
    with Daemon(config, tmp_path / "state") as daemon:
        pid = daemon.wait_for("sidecar_ready")["pid"]
        os.kill(pid, signal.SIGSTOP)
        daemon.signal(signal.SIGTERM)
        assert daemon.proc.wait(30) == 0
    stopped = daemon.wait_for("sidecar_stopped", timeout=0, pid=pid)
    assert stopped["escalated"] is False  # it obeyed SIGTERM: nothing needed SIGKILL
    assert not daemon.find("shutdown_timeout_exceeded")
    assert pid_gone(pid)


# -- findable from the first instant -------------------------------------------------------------


def cli_process(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PYTHON, "-m", "supervisor", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def _sleeping(pid: int) -> bool:
    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid).status() == psutil.STATUS_SLEEPING
    return False


@contextlib.contextmanager
def starting_daemon(tmp_path: Path, round_: int, *, hold: bool) -> Iterator[tuple[Daemon, Path]]:
    """A daemon that has only just been exec'd; with `hold`, SIGSTOPped before it can take its
    lock (continued by the caller once a command is looking for it)."""
    port = free_port()
    config = tmp_path / f"r{round_}.toml"
    config.write_text(render_config([demo_sidecar("web", port)]))
    state = tmp_path / f"state{round_}"
    daemon = Daemon(config, state)
    try:
        if hold:
            daemon.signal(signal.SIGSTOP)
        yield daemon, state
    finally:
        daemon.signal(signal.SIGCONT)
        if daemon.proc.poll() is None:
            daemon.stop()


def _continue_when_looked_for(daemon: Daemon, command: subprocess.Popen[str]) -> None:
    # The command is importing, then looking: once it sleeps in its wait for a starting daemon
    # (or has already answered), let the daemon go on. Whatever the timing, the answer must be
    # the same: the daemon could not have registered while it was stopped.
    wait_until(lambda: command.poll() is not None or _sleeping(command.pid), 30.0, "cli waits")
    daemon.signal(signal.SIGCONT)


@linux_only
@pytest.mark.parametrize("hold", [True, False], ids=["held-before-lock", "racing"])
def test_run_then_wait_at_once_waits_for_the_starting_daemon(tmp_path: Path, hold: bool) -> None:
    for round_ in range(4):
        with starting_daemon(tmp_path, round_, hold=hold) as (daemon, state):
            waiter = cli_process("wait", "web", "--timeout", "60", "--state-dir", str(state))
            if hold:
                _continue_when_looked_for(daemon, waiter)
            out, err = waiter.communicate(timeout=90)
            assert waiter.returncode == 0, err
            assert out.startswith("web: ready"), out
            assert daemon.proc.poll() is None


@linux_only
@pytest.mark.parametrize("hold", [True, False], ids=["held-before-lock", "racing"])
def test_stop_right_after_run_stops_the_daemon_and_its_sidecars(tmp_path: Path, hold: bool) -> None:
    for round_ in range(4):
        with starting_daemon(tmp_path, round_, hold=hold) as (daemon, state):
            stopper = cli_process("stop", "--wait", "60", "--state-dir", str(state))
            if hold:
                _continue_when_looked_for(daemon, stopper)
            _, err = stopper.communicate(timeout=90)
            assert stopper.returncode == 0, err
            assert daemon.proc.wait(30) == 0  # stop --wait returned: it is gone
        spawned = [e["pid"] for e in daemon.find("sidecar_spawned")]
        assert all(pid_gone(pid) for pid in spawned), spawned
        assert not (state / "supervisor.pid").exists()
        assert not list(state.glob("*/sidecar.pid"))


@linux_only
def test_status_of_a_starting_daemon_answers_not_not_running(tmp_path: Path) -> None:
    for round_ in range(3):
        with starting_daemon(tmp_path, round_, hold=True) as (daemon, state):
            asker = cli_process("status", "--json", "--state-dir", str(state))
            _continue_when_looked_for(daemon, asker)
            out, err = asker.communicate(timeout=90)
            assert asker.returncode == 0, err
            assert json.loads(out)["supervisor"]["pid"] == daemon.pid


# -- the registry must be ours --------------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="making a folder of another user needs root")
@pytest.mark.skipif(sys.platform != "linux", reason="the fallback is Linux's (XDG)")
def test_a_registry_folder_squatted_by_another_user_is_reported_not_not_running(
    tmp_path: Path,
) -> None:
    # Without XDG_RUNTIME_DIR the registry is <tmp>/runtime-<uid>/...: another user made it
    # first. Commands must say so, never "no supervisor is running".
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")}
    env.update(
        SUPERVISOR_RUNTIME_DIR="",
        XDG_RUNTIME_DIR="",
        TMPDIR=str(tmp_path),
        XDG_CONFIG_HOME=str(tmp_path / "config-home"),
    )
    if Path(f"/run/user/{os.getuid()}").is_dir():
        pytest.skip("this machine has a /run/user/<uid>: platformdirs uses it")
    squatted = tmp_path / f"runtime-{os.getuid()}"
    squatted.mkdir(mode=0o755)
    os.chown(squatted, 65534, 65534)
    config = write_config(tmp_path, [demo_sidecar("web", free_port())])
    state = tmp_path / "state"
    with Daemon(config, state, env=env) as daemon:
        daemon.wait_for("sidecar_ready")
        warned = daemon.wait_for("registry_unavailable", timeout=0)
        assert "belongs to uid 65534" in warned["error"]
        assert list(squatted.iterdir()) == []  # nothing written into the squatter's folder
        for args in (["status"], ["stop"], ["wait", "web"]):
            asked = subprocess.run(
                [PYTHON, "-m", "supervisor", *args],
                capture_output=True, text=True, env=env, cwd=ROOT, timeout=60, check=False,
            )  # fmt: skip
            assert asked.returncode == 2, asked.stderr
            assert asked.stderr.count("\n") == 1 and "Traceback" not in asked.stderr
            assert "registry of running daemons" in asked.stderr
            assert "belongs to uid 65534" in asked.stderr
            assert "no supervisor is running" not in asked.stderr
        assert daemon.proc.poll() is None  # the stop above was refused, not sent


# -- litter of dead daemons ------------------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([PYTHON, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temp_files_of_a_dead_daemon_are_swept_at_start(tmp_path: Path) -> None:
    # A daemon SIGKILLed mid-write leaves `.status.json.<pid>.<hex>.tmp`: the next one removes
    # those of writers that are gone, here and in the sidecars' folders, and nothing else.
    state = tmp_path / "state"
    (state / "web").mkdir(parents=True, mode=0o700)
    state.chmod(0o700)
    dead = _dead_pid()
    litter = [
        state / f".status.json.{dead}.0a1b2c3d.tmp",
        state / f".supervisor.pid.{dead}.deadbeef.tmp",
        state / "web" / f".sidecar.pid.{dead}.01234567.tmp",
    ]
    kept = [
        state / f".status.json.{os.getpid()}.0a1b2c3d.tmp",  # a live writer's (this test)
        state / "notes.tmp",
        state / "web" / ".hidden",
    ]
    for path in litter + kept:
        path.write_text("{}")
    config = write_config(tmp_path, [demo_sidecar("web", free_port())])
    with Daemon(config, state) as daemon:
        daemon.wait_for("sidecar_ready")
        assert [p for p in litter if p.exists()] == []
        assert all(p.exists() for p in kept)
        assert daemon.stop() == 0
