"""Robustness of the control socket: rounds of 100 clients that connect, subscribe and vanish
(every way a client can go away) while two sidecars crash-loop. The daemon's fds and memory do
not grow, every connection is released, and supervision goes on (handshakes, not timings).
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import pytest

from tests.support import ControlClient, Daemon, demo_sidecar, free_port, render_config, wait_until

CLIENTS = 100
ROUNDS = 25
WARM_UP = 5  # rounds before the baseline: pools and caches reach their working size
FD_SLACK = 12  # children's pipes and pidfds, probe sockets: what a crash loop has at any instant
RSS_SLACK_KIB = 3 * 1024  # allocator noise; a leak of 2000 connections' state is far above it


def proc_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def proc_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def connect(state: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(15)
    fd = os.open(state, os.O_RDONLY | os.O_DIRECTORY)
    try:
        sock.connect(f"/proc/self/fd/{fd}/control.sock")
    finally:
        os.close(fd)
    return sock


SUBSCRIBE = b'{"id": 1, "cmd": "subscribe"}\n'


def churn(state: Path) -> int:
    """One round: CLIENTS connections, gone in five different ways; returns replies read."""
    socks = [connect(state) for _ in range(CLIENTS)]
    replies = 0
    for i, sock in enumerate(socks):
        if i % 5 != 0:  # every fifth only connects and leaves
            sock.sendall(SUBSCRIBE)
    for i, sock in enumerate(socks):
        match i % 5:
            case 1:  # reads its reply, then hangs up
                line = sock.makefile("rb").readline()
                assert json.loads(line)["ok"] is True
                replies += 1
            case 2:  # half-closes: the daemon still answers, then closes
                sock.shutdown(socket.SHUT_WR)
            case 3:  # never reads: it hangs up with its reply and events unread
                pass
            case 4:  # an abortive close (RST) once its reply is in
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    for sock in socks:
        sock.close()
    return replies


def released(state: Path) -> bool:
    """Handshake: only this very client is connected now."""
    with ControlClient(state) as client:
        return bool(client.request("status")["result"]["supervisor"]["clients"] == 1)


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_clients_connecting_subscribing_and_vanishing_cost_nothing_and_stall_nothing(
    tmp_path: Path,
) -> None:
    crash = {"base_delay": 0.0, "max_attempts": 1_000_000, "reset_after": 0.05}
    config = tmp_path / "supervisor.toml"
    config.write_text(
        render_config(
            [
                demo_sidecar("crash-a", free_port(), "--crash-after", "0.2", restart=crash),
                demo_sidecar("crash-b", free_port(), "--crash-after", "0.2", restart=crash),
                demo_sidecar("steady", free_port()),
            ]
        )
    )
    state = tmp_path / "state"
    with Daemon(config, state, log_level="info") as daemon:
        steady = daemon.wait_for("sidecar_ready", sidecar="steady")["pid"]
        daemon.wait_for("control_listening")
        baseline: tuple[int, int] | None = None
        replies = 0
        for round_number in range(ROUNDS):
            replies += churn(state)
            wait_until(lambda: released(state), 30, "every connection of the round released")
            # Supervision goes on: a fresh subscriber sees crash-a respawned after the round.
            with ControlClient(state) as watcher:
                watcher.request("subscribe", ["crash-a"])
                watcher.wait_event("spawned", sidecar="crash-a", timeout=30)
            if round_number == WARM_UP - 1:
                baseline = (proc_fds(daemon.pid), proc_rss_kib(daemon.pid))
        assert baseline is not None
        fds, rss = proc_fds(daemon.pid), proc_rss_kib(daemon.pid)
        assert replies == ROUNDS * CLIENTS // 5
        assert fds <= baseline[0] + FD_SLACK, (baseline, fds)
        assert rss <= baseline[1] + RSS_SLACK_KIB, (baseline, rss)
        with ControlClient(state) as client:
            (entry,) = client.request("status", ["steady"])["result"]["sidecars"]
            assert entry["pid"] == steady and entry["state"] == "ready"
        assert not daemon.find("control_request_failed")
        assert daemon.stop() == 0
