"""Health checks on real, really hung servers: a SIGSTOPped child, a server that accepts and
never answers, a closed port, an exec check that hangs, and one that flaps.

Restart bounds are asserted from the daemon's own event timestamps (and, for the SIGSTOP, the
test's clock just before the signal: both are CLOCK_REALTIME). The implementation guarantees
`interval * failures + timeout` from the hang to `sidecar_unhealthy` (checks start on a fixed
cadence and each is cut at `timeout`); the SPEC's extra second covers the stop (SIGCONT, then the
stop signal), the backoff (`base_delay` 0.05 s here) and the preflight and spawn of the next
child, with room for a loaded 2-core machine. These are correctness bounds, not speed claims.
"""

from __future__ import annotations

import os
import signal
import textwrap
import time
from pathlib import Path

import pytest

from tests.support import (
    PYTHON,
    Daemon,
    demo_sidecar,
    free_port,
    pid_gone,
    render_config,
    stamp_ns,
    wait_until,
)

# interval * failures + timeout + 1 s
INTERVAL_S, FAILURES, TIMEOUT_S = 0.5, 3, 0.5
BOUND_NS = int((INTERVAL_S * FAILURES + TIMEOUT_S + 1.0) * 1e9)
HTTP_HEALTH = {
    "probe": "http",
    "path": "/health",
    "interval": INTERVAL_S,
    "timeout": TIMEOUT_S,
    "failures": FAILURES,
}


def start(tmp_path: Path, sidecars: list[dict[str, object]]) -> Daemon:
    config = tmp_path / "supervisor.toml"
    config.write_text(render_config(sidecars))
    return Daemon(config, tmp_path / "state")


def script_sidecar(
    tmp_path: Path, name: str, script: str, port: int, **tables: object
) -> dict[str, object]:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(script))
    entry: dict[str, object] = {
        "name": name,
        "command": [PYTHON, str(path), str(port)],
        "port": port,
        "restart": {"base_delay": 0.05, "max_delay": 0.2},
        "stop": {"timeout": 1.0},
    }
    entry.update(tables)
    return entry


def assert_restarted_through_the_normal_path(daemon: Daemon, old_pid: int) -> dict[str, object]:
    """unhealthy -> exited -> restart_scheduled (budget) -> preflight -> a non-interactive spawn."""
    unhealthy = daemon.wait_for("sidecar_unhealthy", pid=old_pid)
    exited = daemon.wait_for("sidecar_exited", pid=old_pid)
    scheduled = daemon.wait_for("restart_scheduled", attempt=1)
    spawned = daemon.wait_for("sidecar_spawned", count=2)
    preflight = daemon.find("reconcile_port_free")
    assert spawned["pid"] != old_pid
    assert spawned["interactive"] is False and spawned["attempt"] == 1
    order = [stamp_ns(e) for e in (unhealthy, exited, scheduled, spawned)]
    assert order == sorted(order)
    assert any(stamp_ns(scheduled) <= stamp_ns(e) <= stamp_ns(spawned) for e in preflight)
    failed = daemon.find("health_check_failed", sidecar=unhealthy["sidecar"])
    assert [e["failures"] for e in failed[:FAILURES]] == list(range(1, FAILURES + 1))
    assert pid_gone(old_pid)
    return spawned


def test_a_sigstopped_server_is_restarted_within_the_bound(tmp_path: Path) -> None:
    entry = demo_sidecar("web", free_port(), health=HTTP_HEALTH)
    with start(tmp_path, [entry]) as daemon:
        pid = daemon.wait_for("sidecar_ready")["pid"]
        stopped_ns = time.time_ns()
        os.kill(pid, signal.SIGSTOP)
        spawned = assert_restarted_through_the_normal_path(daemon, pid)
        assert stamp_ns(spawned) - stopped_ns <= BOUND_NS, (
            f"restarted {(stamp_ns(spawned) - stopped_ns) / 1e9:.2f}s after SIGSTOP"
        )
        failed = daemon.find("health_check_failed")
        assert all("no HTTP answer within 0.5s" in e["reason"] for e in failed)
        # SIGCONT before the stop signal: the stopped demo handled SIGTERM, no SIGKILL needed.
        exited = daemon.wait_for("sidecar_exited", pid=pid)
        assert exited["code"] == 0 and exited["signal"] is None
        daemon.wait_for("sidecar_ready", count=2)
        status = daemon.dump_status()["status"]
        (record,) = status["sidecars"]
        assert record["state"] == "ready" and record["restarts"] == 1
        assert record["last_exit"]["code"] == 0
        assert daemon.stop() == 0


NEVER_ANSWERS = """
import socket, sys, time
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.listen(16)
print("listening", flush=True)
held = []
while True:
    conn, _ = sock.accept()
    held.append(conn)  # accepted, read by nobody, never answered
"""


def test_a_server_that_accepts_but_never_answers_is_restarted_within_the_bound(
    tmp_path: Path,
) -> None:
    port = free_port()
    entry = script_sidecar(tmp_path, "web", NEVER_ANSWERS, port, health=HTTP_HEALTH)
    with start(tmp_path, [entry]) as daemon:
        ready = daemon.wait_for("sidecar_ready")  # a tcp readiness probe: it accepts
        spawned = assert_restarted_through_the_normal_path(daemon, ready["pid"])
        # Hung from its start: the bound runs from readiness.
        assert stamp_ns(spawned) - stamp_ns(ready) <= BOUND_NS
        # It never answered: SIGTERM (default action) ended it, no escalation.
        exited = daemon.wait_for("sidecar_exited", pid=ready["pid"])
        assert exited["signal"] == "SIGTERM"
        assert daemon.stop() == 0


CLOSES_ITS_PORT = """
import signal, socket, sys
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.listen(16)
signal.signal(signal.SIGUSR1, lambda *_: sock.close())
print("listening", flush=True)
while True:
    signal.pause()  # runs on, the port closed after SIGUSR1
"""


def test_a_tcp_check_restarts_a_server_whose_port_closed(tmp_path: Path) -> None:
    health = {"probe": "tcp", "interval": INTERVAL_S, "timeout": TIMEOUT_S, "failures": FAILURES}
    entry = script_sidecar(tmp_path, "web", CLOSES_ITS_PORT, free_port(), health=health)
    with start(tmp_path, [entry]) as daemon:
        pid = daemon.wait_for("sidecar_ready")["pid"]
        closed_ns = time.time_ns()
        os.kill(pid, signal.SIGUSR1)
        spawned = assert_restarted_through_the_normal_path(daemon, pid)
        assert stamp_ns(spawned) - closed_ns <= BOUND_NS
        assert "cannot connect" in daemon.find("health_check_failed")[0]["reason"]
        assert daemon.stop() == 0


# The checks are sh scripts: they start in a millisecond even on a loaded machine, so their
# timeouts can be short without a slow start ever looking like a failure.
# A check that hangs, with a grandchild in its process group (sh without job control).
HANGING_CHECK = 'sleep 3600 & echo "$$ $!" >> "$0"; echo checking...; wait'


def test_an_exec_check_that_hangs_is_killed_with_its_group(tmp_path: Path) -> None:
    pids = tmp_path / "check.pids"
    health = {
        "probe": "exec",
        "command": ["sh", "-c", HANGING_CHECK, str(pids)],
        "interval": 1.0,
        "timeout": 1.0,
        "failures": 3,
    }
    with start(tmp_path, [demo_sidecar("web", free_port(), health=health)]) as daemon:
        daemon.wait_for("sidecar_ready")
        failed = daemon.wait_for("health_check_failed", failures=1)
        assert "no result within 1s; killed it and its process group" in failed["reason"]
        assert failed["reason"].endswith(": checking...")  # its last words
        (line,) = pids.read_text().splitlines()
        check_pid, grandchild = (int(word) for word in line.split())
        # Gone by the time the failure is logged: killed and reaped (the grandchild reparented).
        assert pid_gone(check_pid)
        wait_until(lambda: pid_gone(grandchild), 5.0, "the check's grandchild to be reaped")
        assert not daemon.find("sidecar_unhealthy")
        assert daemon.stop() == 0


# Every other check fails.
FLAPPING_CHECK = 'if [ -e "$0" ]; then rm "$0"; echo "down this time"; exit 1; fi; : > "$0"'


def test_a_flapping_check_under_the_threshold_restarts_nothing(tmp_path: Path) -> None:
    health = {
        "probe": "exec",
        "command": ["sh", "-c", FLAPPING_CHECK, str(tmp_path / "flag")],
        "interval": 0.5,
        "timeout": 0.5,
        "failures": 2,
    }
    with start(tmp_path, [demo_sidecar("web", free_port(), health=health)]) as daemon:
        pid = daemon.wait_for("sidecar_ready")["pid"]
        daemon.wait_for("health_check_failed", count=4)
        daemon.wait_for("health_check_recovered", count=4)
        status = daemon.dump_status()["status"]
        failed = daemon.find("health_check_failed")
        assert {e["failures"] for e in failed} == {1}
        assert all(e["reason"] == "exited with code 1: down this time" for e in failed)
        assert not daemon.find("sidecar_unhealthy")
        assert len(daemon.find("sidecar_spawned")) == 1
        (record,) = status["sidecars"]
        assert record["state"] == "ready" and record["pid"] == pid and record["restarts"] == 0
        assert daemon.stop() == 0


def test_an_unhealthy_sidecar_under_policy_never_is_left_exited(tmp_path: Path) -> None:
    entry = demo_sidecar(
        "web", free_port(), health=HTTP_HEALTH, restart={"policy": "never", "base_delay": 0.05}
    )
    with start(tmp_path, [entry]) as daemon:
        pid = daemon.wait_for("sidecar_ready")["pid"]
        os.kill(pid, signal.SIGSTOP)
        daemon.wait_for("sidecar_unhealthy", pid=pid)
        daemon.wait_for("sidecar_exited", pid=pid)
        status = daemon.dump_status()["status"]
        (record,) = status["sidecars"]
        assert record["state"] == "exited"
        assert record["reason"].startswith("unhealthy: 3 health checks failed in a row")
        assert len(daemon.find("sidecar_spawned")) == 1
        assert not daemon.find("restart_scheduled")
        assert pid_gone(pid)
        assert daemon.stop() == 0


SLOW_CHECK = 'echo "$$" >> "$0"; exec sleep 3600'


@pytest.mark.parametrize("how", ["shutdown", "restart"])
def test_a_stop_or_restart_cancels_a_running_check_first(tmp_path: Path, how: str) -> None:
    pids = tmp_path / "check.pids"
    health = {
        "probe": "exec",
        "command": ["sh", "-c", SLOW_CHECK, str(pids)],
        "interval": 2.0,
        "timeout": 2.0,  # the stop comes long before it
    }
    with start(tmp_path, [demo_sidecar("web", free_port(), health=health)]) as daemon:
        pid = daemon.wait_for("sidecar_ready")["pid"]
        wait_until(lambda: pids.exists() and pids.read_text().strip() != "", 10.0, "a check")
        check_pid = int(pids.read_text().split()[0])
        if how == "shutdown":
            assert daemon.stop() == 0
        else:
            daemon.signal(signal.SIGUSR1)  # restart every sidecar
            daemon.wait_for("sidecar_ready", count=2)
        # The check was killed, not counted as a failure; the sidecar stopped its usual way.
        assert pid_gone(check_pid)
        assert not daemon.find("health_check_failed")
        stopped = daemon.wait_for("sidecar_stopped", pid=pid)
        assert stopped["escalated"] is False
        if how == "restart":
            assert daemon.stop() == 0
