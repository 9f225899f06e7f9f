"""The daemon under real signals: reload, restart-all, status dump, single instance, control CLI."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from tests.support import (
    PYTHON,
    ROOT,
    Daemon,
    daemon_command,
    demo_sidecar,
    free_port,
    pid_gone,
    read_json,
    render_config,
    run_cli,
    wait_logged,
)


def hinted_commands(message: str) -> list[list[str]]:
    """The `"supervisor ..."` commands a message suggests, split as a shell would."""
    return [shlex.split(quoted) for quoted in re.findall(r'"(supervisor [^"]*)"', message)]


def write(config: Path, sidecars: list[dict[str, object]]) -> None:
    config.write_text(render_config(sidecars))


def test_sighup_adds_changes_and_keeps_unchanged_and_ignores_broken_config(tmp_path: Path) -> None:
    config = tmp_path / "supervisor.toml"
    p1, p2, p3 = free_port(), free_port(), free_port()
    write(config, [demo_sidecar("keep", p1), demo_sidecar("change", p2)])
    with Daemon(config, tmp_path / "state") as daemon:
        keep = daemon.wait_for("sidecar_ready", sidecar="keep")["pid"]
        old = daemon.wait_for("sidecar_ready", sidecar="change")["pid"]

        write(
            config,
            [
                demo_sidecar("keep", p1),
                demo_sidecar("change", p2, env={"NEW": "1"}),
                demo_sidecar("added", p3),
            ],
        )
        daemon.signal(signal.SIGHUP)
        reloaded = daemon.wait_for("config_reloaded")
        assert reloaded["added"] == ["added"]
        assert reloaded["changed"] == ["change"]
        assert reloaded["unchanged"] == ["keep"]
        assert reloaded["removed"] == []
        new = daemon.wait_for("sidecar_ready", sidecar="change", count=2)["pid"]
        daemon.wait_for("sidecar_ready", sidecar="added")
        assert new != old and pid_gone(old)
        assert len(daemon.find("sidecar_spawned", sidecar="keep")) == 1
        assert psutil.Process(keep).is_running()

        config.write_text("[[sidecar]]\nname = 'BROKEN'\n")
        daemon.signal(signal.SIGHUP)
        invalid = daemon.wait_for("config_invalid")
        assert "sidecar[0].name" in str(invalid["error"])
        dump = daemon.dump_status()
        states = {s["name"]: (s["state"], s["pid"]) for s in dump["status"]["sidecars"]}
        assert states == {
            "keep": ("ready", keep),
            "change": ("ready", new),
            "added": states["added"],
        }
        assert states["added"][0] == "ready"

        write(config, [demo_sidecar("keep", p1)])
        daemon.signal(signal.SIGHUP)
        removed = daemon.wait_for("config_reloaded", count=2)
        assert sorted(removed["removed"]) == ["added", "change"]
        assert pid_gone(new)
        assert daemon.stop() == 0


def test_sigusr1_restarts_a_failed_sidecar_with_fresh_attempts(tmp_path: Path) -> None:
    config = tmp_path / "supervisor.toml"
    marker = tmp_path / "fixed"
    # Fails until the marker file exists, then serves.
    port = free_port()
    script = textwrap.dedent(
        f"""
        import os, runpy, sys
        if not os.path.exists({str(marker)!r}):
            raise SystemExit(3)
        sys.argv = ["demo", "--port", "{port}"]
        runpy.run_module("supervisor.demo", run_name="__main__")
        """
    )
    write(
        config,
        [
            {
                "name": "svc",
                "command": [PYTHON, "-c", script],
                "port": port,
                "restart": {"max_attempts": 1, "base_delay": 0.01},
            }
        ],
    )
    with Daemon(config, tmp_path / "state") as daemon:
        daemon.wait_for("restart_budget_exhausted")
        marker.touch()
        daemon.signal(signal.SIGUSR1)
        spawned = daemon.wait_for("sidecar_spawned", count=3)
        assert spawned["attempt"] == 0 and spawned["interactive"] is True
        daemon.wait_for("sidecar_ready")
        daemon.dump_status()
        status = read_json(tmp_path / "state" / "status.json")
        assert status["sidecars"][0]["state"] == "ready"
        assert status["sidecars"][0]["attempts"] == 0
        assert daemon.stop() == 0


def test_sigusr2_dumps_status_matching_reality(tmp_path: Path) -> None:
    config = tmp_path / "supervisor.toml"
    port = free_port()
    write(config, [demo_sidecar("web", port)])
    with Daemon(config, tmp_path / "state") as daemon:
        pid = daemon.wait_for("sidecar_ready")["pid"]
        dump = daemon.dump_status()
        on_disk = read_json(tmp_path / "state" / "status.json")
        assert dump["status"] == on_disk
        (entry,) = on_disk["sidecars"]
        assert entry["pid"] == pid and entry["state"] == "ready" and entry["port"] == port
        assert entry["create_time"] == psutil.Process(pid).create_time()
        assert on_disk["supervisor"]["pid"] == daemon.pid
        assert daemon.stop() == 0


def test_second_daemon_on_same_state_dir_exits_75(tmp_path: Path) -> None:
    config = tmp_path / "supervisor.toml"
    write(config, [demo_sidecar("web", free_port())])
    state = tmp_path / "state"
    with Daemon(config, state) as daemon:
        pid = daemon.wait_for("sidecar_ready")["pid"]
        second = run_cli(
            "run", "-c", str(config), "--state-dir", str(state), "--log-format", "console"
        )
        assert second.returncode == 75
        assert second.stderr.startswith(
            f"supervisor: another supervisor (pid {daemon.pid}) is running for {state}; "
        )
        assert second.stderr.count("\n") == 1
        assert daemon.proc.poll() is None and psutil.Process(pid).is_running()
        assert read_json(state / "supervisor.pid")["pid"] == daemon.pid
        # Every hint works as printed (from another folder, with no state dir in the env).
        see, stop = hinted_commands(second.stderr)
        assert see[:2] == ["supervisor", "status"] and stop[:2] == ["supervisor", "stop"]
        shown = run_cli(*see[1:], cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        assert str(daemon.pid) in shown.stdout and "web" in shown.stdout
        assert run_cli(*stop[1:], cwd=tmp_path).returncode == 0
        assert daemon.proc.wait(15) == 0


def test_control_commands_against_a_running_daemon(tmp_path: Path) -> None:
    config = tmp_path / "supervisor.toml"
    write(config, [demo_sidecar("web", free_port())])
    state = tmp_path / "state"
    with Daemon(config, state) as daemon:
        pid = daemon.wait_for("sidecar_ready")["pid"]
        status = run_cli("status", "--json", "--state-dir", str(state))
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["sidecars"][0]["pid"] == pid
        table = run_cli("status", "--state-dir", str(state))
        assert table.returncode == 0 and "web" in table.stdout and "ready" in table.stdout

        assert run_cli("reload", "--state-dir", str(state)).returncode == 0
        daemon.wait_for("config_reloaded")
        assert run_cli("restart", "--state-dir", str(state)).returncode == 0
        daemon.wait_for("sidecar_ready", count=2)

        stop = run_cli("stop", "--wait", "5", "--state-dir", str(state))
        assert stop.returncode == 0, stop.stderr
        assert daemon.proc.wait(5) == 0
    for command in (["status"], ["status", "--json"], ["stop"], ["reload"], ["restart"]):
        result = run_cli(*command, "--state-dir", str(state))
        assert result.returncode == 3, command
        assert result.stderr.startswith("supervisor: no supervisor is running")


def test_stale_pidfile_naming_a_recycled_pid_means_not_running(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    me = psutil.Process()
    # Our own (live) pid with another create time: exactly what a recycled pid looks like.
    (state / "supervisor.pid").write_text(
        json.dumps({"pid": me.pid, "create_time": me.create_time() - 1000.0})
    )
    for command in (["status"], ["stop"], ["reload"], ["restart"]):
        result = run_cli(*command, "--state-dir", str(state))
        assert result.returncode == 3, (command, result.stderr)
    (state / "supervisor.pid").write_text("garbage{")
    assert run_cli("status", "--state-dir", str(state)).returncode == 3


LAUNCHER = textwrap.dedent(
    """
    import subprocess, sys
    log = open(sys.argv[1], "wb")
    proc = subprocess.Popen(sys.argv[2:], stderr=log, stdin=subprocess.DEVNULL)
    print(proc.pid, flush=True)
    proc.wait()
    """
)


def test_exit_with_parent_stops_when_the_launcher_is_killed(tmp_path: Path) -> None:
    config = tmp_path / "supervisor.toml"
    write(config, [demo_sidecar("web", free_port())])
    log = tmp_path / "daemon.log"
    launcher = subprocess.Popen(
        [
            PYTHON,
            "-c",
            LAUNCHER,
            str(log),
            *daemon_command(config, tmp_path / "state", "--exit-with-parent"),
        ],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    assert launcher.stdout is not None
    daemon_pid = int(launcher.stdout.readline())
    daemon = psutil.Process(daemon_pid)
    child = wait_logged(log, "sidecar_ready")["pid"]
    launcher.kill()
    launcher.wait()
    launcher.stdout.close()
    # The daemon was reparented to us (pytest is a subreaper), not to pid 1: ppid == 1 could
    # not have told it that its launcher is gone.
    code = daemon.wait(timeout=15)
    assert code == 0
    wait_logged(log, "parent_exited", timeout=0)
    wait_logged(log, "daemon_stopped", timeout=0)
    assert pid_gone(child)


def test_second_sigint_during_slow_shutdown_kills_at_once(tmp_path: Path) -> None:
    config = tmp_path / "supervisor.toml"
    write(
        config, [demo_sidecar("stubborn", free_port(), "--ignore-sigterm", stop={"timeout": 30.0})]
    )
    with Daemon(config, tmp_path / "state") as daemon:
        pid = daemon.wait_for("sidecar_ready")["pid"]
        daemon.signal(signal.SIGINT)
        daemon.wait_for("sidecar_stopping")
        daemon.signal(signal.SIGINT)
        # stop.timeout is 30 s: an exit well before it can only be the second signal's SIGKILL.
        assert daemon.proc.wait(15) == 0
        stopped = daemon.wait_for("sidecar_stopped")
        assert stopped["escalated"] is True
    assert pid_gone(pid)


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_daemon_lock_fd_is_not_inherited_by_sidecars(tmp_path: Path) -> None:
    config = tmp_path / "supervisor.toml"
    write(config, [demo_sidecar("web", free_port())])
    state = tmp_path / "state"
    with Daemon(config, state) as daemon:
        pid = daemon.wait_for("sidecar_ready")["pid"]
        targets = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        assert str(state / "supervisor.lock") not in targets
        assert daemon.stop() == 0


def _blocked_signals(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("SigBlk:"):
                return int(line.split()[1], 16)
    return 0


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/PID/status")
def test_sigterm_during_startup_is_a_graceful_shutdown(tmp_path: Path) -> None:
    config = tmp_path / "supervisor.toml"
    write(config, [demo_sidecar("web", free_port())])
    daemon = Daemon(config, tmp_path / "state")
    term_bit = 1 << (signal.SIGTERM - 1)
    deadline = time.monotonic() + 10
    # Handshake: the daemon holds its signals blocked (before its slow imports) ...
    while not _blocked_signals(daemon.pid) & term_bit:
        assert time.monotonic() < deadline and daemon.proc.poll() is None
        time.sleep(0.001)
    # ... so a SIGTERM now, before any handler exists, must not kill it but stop it cleanly.
    daemon.signal(signal.SIGTERM)
    assert daemon.proc.wait(15) == 0
    daemon.wait_for("daemon_stopping", timeout=0)
    daemon.wait_for("daemon_stopped", timeout=0)
    for spawned in daemon.find("sidecar_spawned"):
        assert pid_gone(spawned["pid"])


def test_sighup_during_shutdown_is_ignored(tmp_path: Path) -> None:
    config = tmp_path / "supervisor.toml"
    write(config, [demo_sidecar("slow", free_port(), "--ignore-sigterm", stop={"timeout": 1.0})])
    with Daemon(config, tmp_path / "state") as daemon:
        daemon.wait_for("sidecar_ready")
        daemon.signal(signal.SIGTERM)
        daemon.wait_for("sidecar_stopping")
        daemon.signal(signal.SIGHUP)
        daemon.dump_status()  # answered during shutdown: the HUP before it was received too
        assert daemon.proc.wait(10) == 0
        assert not daemon.find("config_reloaded")
        assert len(daemon.find("sidecar_spawned")) == 1
