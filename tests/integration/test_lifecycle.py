"""Lifecycle of real sidecars under a real daemon: spawn, readiness, PID file, restart, stop."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import psutil
import pytest

from tests.support import (
    PYTHON,
    Daemon,
    Holder,
    demo_sidecar,
    free_port,
    pid_gone,
    read_json,
    render_config,
    wait_until,
)


def start(tmp_path: Path, sidecars: list[dict[str, object]], *args: str) -> Daemon:
    config = tmp_path / "supervisor.toml"
    config.write_text(render_config(sidecars))
    return Daemon(config, tmp_path / "state", *args)


def ts(event: dict[str, object]) -> float:
    stamp = event["timestamp"]
    assert isinstance(stamp, str)
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_demo_ready_pidfile_status_then_sigterm_cleans_everything(tmp_path: Path) -> None:
    port = free_port()
    with start(tmp_path, [demo_sidecar("web", port, "--fork-grandchild")]) as daemon:
        ready = daemon.wait_for("sidecar_ready", sidecar="web")
        pid = ready["pid"]
        grandchild_line = daemon.wait_for(
            "child_output", where=lambda e: str(e.get("line", "")).startswith("grandchild")
        )
        grandchild = int(str(grandchild_line["line"]).split()[1])
        create_time = psutil.Process(pid).create_time()

        record = read_json(tmp_path / "state" / "web" / "sidecar.pid")
        assert record["pid"] == pid
        assert record["create_time"] == create_time
        assert record["port"] == port
        assert record["supervisor_pid"] == daemon.pid
        assert set(record) >= {"supervisor_create_time", "started_at", "command"}
        daemon.wait_for("pidfile_written")

        daemon.dump_status()
        doc = read_json(tmp_path / "state" / "status.json")
        (entry,) = doc["sidecars"]
        assert entry["name"] == "web" and entry["state"] == "ready"
        assert entry["pid"] == pid and entry["create_time"] == create_time
        assert doc["supervisor"]["pid"] == daemon.pid

        assert daemon.stop() == 0
    assert pid_gone(pid) and pid_gone(grandchild)
    assert not (tmp_path / "state" / "web" / "sidecar.pid").exists()
    assert not (tmp_path / "state" / "supervisor.pid").exists()
    stopped = daemon.find("sidecar_stopped", sidecar="web")
    assert stopped and stopped[0]["escalated"] is False
    final = read_json(tmp_path / "state" / "status.json")
    assert final["sidecars"][0]["state"] == "stopped"


def test_always_failing_child_spawns_budget_plus_one_then_fails(tmp_path: Path) -> None:
    sidecar: dict[str, object] = {
        "name": "crashy",
        "command": [PYTHON, "-c", "raise SystemExit(1)"],
        "restart": {"max_attempts": 3, "base_delay": 0.05, "max_delay": 0.15},
    }
    with start(tmp_path, [sidecar]) as daemon:
        daemon.wait_for("restart_budget_exhausted", sidecar="crashy")
        # A handshake after giving up: had anything spawned since, it would be logged by now.
        dump = daemon.dump_status()
        assert len(daemon.find("sidecar_spawned", sidecar="crashy")) == 4
        delays = [e["delay_s"] for e in daemon.find("restart_scheduled", sidecar="crashy")]
        assert delays == [0.05, 0.1, 0.15]
        attempts = [e["attempt"] for e in daemon.find("restart_scheduled", sidecar="crashy")]
        assert attempts == [1, 2, 3]
        assert all(e["interactive"] is False for e in daemon.find("sidecar_spawned")[1:])
        (entry,) = dump["status"]["sidecars"]
        assert entry["state"] == "failed"
        assert entry["last_exit"]["code"] == 1
        assert daemon.stop() == 0


def test_term_ignoring_child_is_killed_at_stop_timeout(tmp_path: Path) -> None:
    port = free_port()
    sidecar = demo_sidecar(
        "stubborn", port, "--ignore-sigterm", "--fork-grandchild", stop={"timeout": 1.0}
    )
    with start(tmp_path, [sidecar]) as daemon:
        pid = daemon.wait_for("sidecar_ready")["pid"]
        line = daemon.wait_for(
            "child_output", where=lambda e: str(e.get("line", "")).startswith("grandchild")
        )
        grandchild = int(str(line["line"]).split()[1])
        assert daemon.stop() == 0
        stopping = daemon.wait_for("sidecar_stopping")
        stopped = daemon.wait_for("sidecar_stopped")
    assert stopped["escalated"] is True
    # Not before stop.timeout (how late is the benchmarks' business: bench shutdown).
    assert ts(stopped) - ts(stopping) >= 0.9
    assert pid_gone(pid) and pid_gone(grandchild)


def test_stranger_answering_on_the_port_never_makes_us_ready(tmp_path: Path) -> None:
    port = free_port()
    sidecar = {
        "name": "quiet",
        "command": [PYTHON, "-c", "import time; time.sleep(60)"],
        "port": port,
        "ready": {"timeout": 1.0},
        "restart": {"policy": "never"},
        "reclaim": {"enabled": False},
    }
    with Holder(port) as stranger, start(tmp_path, [sidecar]) as daemon:
        failed = daemon.wait_for("sidecar_start_failed", sidecar="quiet")
        assert "not ready" in str(failed["reason"])
        daemon.wait_for("probe_answered_by_stranger")
        daemon.wait_for("sidecar_exited")
        assert not daemon.find("sidecar_ready")
        assert stranger.untouched()
        assert daemon.stop() == 0


def test_readiness_held_for_reset_after_resets_the_attempt_count(tmp_path: Path) -> None:
    port = free_port()
    sidecar = demo_sidecar(
        "flappy",
        port,
        "--crash-after",
        "0.6",
        restart={"max_attempts": 1, "reset_after": 0.2, "base_delay": 0.01},
    )
    with start(tmp_path, [sidecar]) as daemon:
        daemon.wait_for("restart_scheduled", count=3, timeout=30)
        assert [e["attempt"] for e in daemon.find("restart_scheduled")][:3] == [1, 1, 1]
        assert not daemon.find("restart_budget_exhausted")
        assert daemon.stop() == 0


def test_on_failure_policy_with_clean_exit_goes_to_completed(tmp_path: Path) -> None:
    """Exit 0 where the policy says don't restart: the task is done, `completed` (SPEC 11.2;
    before v3 this state was `exited`, which now means a non-zero exit or a signal)."""
    port = free_port()
    sidecar = demo_sidecar(
        "done",
        port,
        "--crash-after",
        "0.2",
        "--exit-code",
        "0",
        restart={"policy": "on-failure"},
    )
    with start(tmp_path, [sidecar]) as daemon:
        daemon.wait_for("sidecar_exited", code=0)
        # The state follows the exit once its output is drained: status.json tells when.
        status_file = tmp_path / "state" / "status.json"
        wait_until(
            lambda: (
                status_file.exists()
                and read_json(status_file)["sidecars"][0]["state"] == "completed"
            ),
            10.0,
            "the sidecar to rest in completed",
        )
        assert daemon.find("sidecar_completed", code=0)
        assert not daemon.find("restart_scheduled")
        assert len(daemon.find("sidecar_spawned")) == 1
        assert daemon.stop() == 0


def test_three_sidecars_are_independent(tmp_path: Path) -> None:
    ports = [free_port() for _ in range(3)]
    sidecars = [
        demo_sidecar("one", ports[0]),
        demo_sidecar("two", ports[1], "--crash-after", "0.3", restart={"max_attempts": 0}),
        demo_sidecar("three", ports[2]),
    ]
    with start(tmp_path, sidecars) as daemon:
        pids = {n: daemon.wait_for("sidecar_ready", sidecar=n)["pid"] for n in ("one", "three")}
        daemon.wait_for("restart_budget_exhausted", sidecar="two")
        dump = daemon.dump_status()
        states = {s["name"]: (s["state"], s["pid"]) for s in dump["status"]["sidecars"]}
        assert states["one"] == ("ready", pids["one"])
        assert states["three"] == ("ready", pids["three"])
        assert states["two"][0] == "failed"
        assert len(daemon.find("sidecar_spawned", sidecar="one")) == 1
        assert daemon.stop() == 0
    for pid in pids.values():
        assert pid_gone(pid)


def test_child_output_is_forwarded_and_long_lines_are_capped(tmp_path: Path) -> None:
    script = (
        "import sys; print('hello out', flush=True);"
        "print('hello err', file=sys.stderr, flush=True);"
        "sys.stdout.write('x' * 20000 + '\\n');"
        "sys.stdout.write('no newline at end'); sys.stdout.flush()"
    )
    sidecar: dict[str, object] = {
        "name": "talky",
        "command": [PYTHON, "-c", script],
        "restart": {"policy": "never"},
    }
    with start(tmp_path, [sidecar]) as daemon:
        daemon.wait_for("child_output", stream="stdout", line="hello out")
        daemon.wait_for("child_output", stream="stderr", line="hello err")
        long = daemon.wait_for(
            "child_output", where=lambda e: str(e.get("line", "")).startswith("x")
        )
        assert len(str(long["line"])) == 8192 and long["truncated"] is True
        daemon.wait_for("child_output", line="no newline at end")
        assert daemon.stop() == 0


@pytest.mark.parametrize("program", ["/nonexistent/bin/ghost", "not-a-program-on-any-path", "."])
def test_a_program_that_cannot_run_fails_at_once_without_backoff(
    tmp_path: Path, program: str
) -> None:
    sidecar: dict[str, object] = {
        "name": "ghost",
        "command": [program],
        "restart": {"policy": "always", "max_attempts": 5, "base_delay": 0.05},
    }
    with start(tmp_path, [sidecar, demo_sidecar("web", free_port())]) as daemon:
        failed = daemon.wait_for("sidecar_start_failed", sidecar="ghost")
        assert program in str(failed["reason"])
        # The next thing after it (the other sidecar's ready line comes later): no retry.
        daemon.wait_for("sidecar_ready", sidecar="web")
        status = {s["name"]: s for s in daemon.dump_status()["status"]["sidecars"]}
        assert status["ghost"]["state"] == "failed"
        assert status["ghost"]["reason"] == failed["reason"]
        assert daemon.find("restart_scheduled", sidecar="ghost") == []
        assert len(daemon.find("sidecar_start_failed", sidecar="ghost")) == 1
        assert daemon.stop() == 0


@pytest.mark.parametrize("policy", ["never"])
def test_missing_command_is_a_failed_start_not_a_crash(tmp_path: Path, policy: str) -> None:
    sidecar: dict[str, object] = {
        "name": "ghost",
        "command": ["/nonexistent/bin/ghost"],
        "restart": {"policy": policy},
    }
    with start(tmp_path, [sidecar]) as daemon:
        failed = daemon.wait_for("sidecar_start_failed", sidecar="ghost")
        assert "command not found" in str(failed["reason"])
        assert daemon.stop() == 0
