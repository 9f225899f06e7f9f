"""The control socket: request latency, and 100 clients connecting, subscribing and vanishing in
a loop while sidecars crash-loop (what it costs the daemon, and whether supervision slows down).

`python -m bench control [--samples N] [--rounds R]`. Rows: a `status` round trip on an open
connection; connect + `status` + close (what a command pays); `restart NAME` until its reply
and until the `ready` event; then the churn: connections per second, the daemon's CPU, fds and
RSS before and after, and the crash-looping sidecars' respawns per second during the churn
against a quiet window of the same length.
"""

from __future__ import annotations

import argparse
import socket
import time
from collections.abc import Sequence
from pathlib import Path

from bench.common import (
    Check,
    Daemon,
    Row,
    at_most,
    free_ports,
    machine,
    proc_stats,
    report,
    row,
    scratch,
    sidecar,
)
from tests.support import ControlClient

BENCH = "control"
CLIENTS = 100
ROUND_TARGET_MS = 1000.0  # 100 connect + subscribe + vanish: at most this per round
RESPAWN_RATIO_MIN = 0.8  # respawns/s during the churn vs quiet: supervision must not stall
RSS_SLACK_MIB = 1.0
SUBSCRIBE = b'{"id": 1, "cmd": "subscribe"}\n'


def _round(client_path: str) -> None:
    socks = []
    for i in range(CLIENTS):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)
        sock.connect(client_path)
        if i % 2 == 0:
            sock.sendall(SUBSCRIBE)
        socks.append(sock)
    for i, sock in enumerate(socks):
        if i % 4 == 0:
            sock.recv(65536)  # its reply: the daemon has served it
        sock.close()


def _released(state: Path) -> None:
    """Handshake: only the asking client is connected (every vanished one was released)."""
    deadline = time.monotonic() + 30
    while True:
        with ControlClient(state) as client:
            if client.request("status")["result"]["supervisor"]["clients"] == 1:
                return
        if time.monotonic() > deadline:
            raise TimeoutError("connections not released within 30 s")
        time.sleep(0.01)


def run(samples: int, rounds: int) -> tuple[list[Row], list[Check], list[str]]:
    crash = {"base_delay": 0.0, "max_attempts": 1_000_000, "reset_after": 0.05}
    ports = free_ports(3)
    sidecars = [
        sidecar("steady", ports[0], restart=crash),
        sidecar("crash-a", ports[1], "--crash-after", "0.2", restart=crash),
        sidecar("crash-b", ports[2], "--crash-after", "0.2", restart=crash),
    ]
    notes: list[str] = []
    with scratch(BENCH) as work, Daemon(work, sidecars) as daemon:
        daemon.wait_for("sidecar_ready", sidecar="steady")
        daemon.wait_for("control_listening")
        state = daemon.state_dir
        path = str(state / "control.sock")
        with ControlClient(state) as client:
            round_trip = []
            for _ in range(samples):
                started = time.perf_counter_ns()
                client.request("status")
                round_trip.append((time.perf_counter_ns() - started) / 1e3)
            fresh = []
            for _ in range(samples):
                started = time.perf_counter_ns()
                with ControlClient(state) as once:
                    once.request("status")
                fresh.append((time.perf_counter_ns() - started) / 1e6)
            to_reply, to_ready = [], []
            client.request("subscribe", ["steady"])
            for _ in range(max(5, samples // 20)):
                started = time.perf_counter_ns()
                client.request("restart", ["steady"])
                to_reply.append((time.perf_counter_ns() - started) / 1e6)
                client.wait_event("ready", sidecar="steady", timeout=30)
                to_ready.append((time.perf_counter_ns() - started) / 1e6)

        # Warm-up, then a quiet window, then the churn of the same length.
        _round(path)
        _released(state)
        before = proc_stats(daemon.pid)
        round_ms = []
        churn_start, spawned_start = proc_stats(daemon.pid), daemon.count("sidecar_spawned")
        churn_began = time.monotonic()
        for _ in range(rounds):
            started = time.perf_counter_ns()
            _round(path)
            round_ms.append((time.perf_counter_ns() - started) / 1e6)
        _released(state)
        churn_s = time.monotonic() - churn_began
        churn_end, spawned_end = proc_stats(daemon.pid), daemon.count("sidecar_spawned")
        quiet_spawned = daemon.count("sidecar_spawned")
        time.sleep(churn_s)
        quiet_rate = (daemon.count("sidecar_spawned") - quiet_spawned) / churn_s
        churn_rate = (spawned_end - spawned_start) / churn_s
        after = proc_stats(daemon.pid)
    cpu_share = (churn_end.cpu_s - churn_start.cpu_s) / churn_s
    rows = [
        row(BENCH, "status round trip, open connection", "ours", "us", round_trip),
        row(BENCH, "connect + status + close", "ours", "ms", fresh),
        row(BENCH, "restart NAME -> reply", "ours", "ms", to_reply),
        row(BENCH, "restart NAME -> ready event", "ours", "ms", to_ready),
        row(BENCH, f"churn: {CLIENTS} connect+subscribe+vanish", "ours", "ms", round_ms),
        row(
            BENCH,
            "churn: connections per second",
            "ours",
            "1/s",
            [CLIENTS * len(round_ms) / (sum(round_ms) / 1000)],
        ),
        row(BENCH, "churn: daemon CPU", "ours", "% core", [cpu_share * 100]),
        row(BENCH, "churn: crash-loop respawns per second", "ours", "1/s", [churn_rate]),
        row(BENCH, "quiet: crash-loop respawns per second", "ours", "1/s", [quiet_rate]),
        row(
            BENCH, "daemon fds, before / after the churn", "ours", "count", [before.fds, after.fds]
        ),
        row(BENCH, "daemon RSS, before the churn", "ours", "MiB", [before.rss_kib / 1024]),
        row(BENCH, "daemon RSS, after the churn", "ours", "MiB", [after.rss_kib / 1024]),
    ]
    ratio = churn_rate / quiet_rate if quiet_rate else 0.0
    checks = [
        at_most(BENCH, f"{CLIENTS} clients per round", max(round_ms), ROUND_TARGET_MS, "ms"),
        Check(
            BENCH,
            f"respawns during churn vs quiet: {ratio:.2f} (>= {RESPAWN_RATIO_MIN:g})",
            ratio >= RESPAWN_RATIO_MIN,
        ),
        at_most(BENCH, "fd growth", after.fds - before.fds, 4, ""),
        at_most(
            BENCH,
            "RSS growth",
            (after.rss_kib - before.rss_kib) / 1024,
            RSS_SLACK_MIB,
            "MiB",
        ),
    ]
    notes.append(
        f"{rounds} rounds of {CLIENTS} clients (half subscribe, a quarter read their reply, all "
        "close); 2 sidecars crash 0.2 s after each start (base_delay 0); fd growth allows for "
        "the crash loop's pipes and pidfds at any instant"
    )
    return rows, checks, notes


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench control", description=__doc__)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args(argv)
    rows, checks, notes = run(args.samples, args.rounds)
    report(f"control socket; {machine()}", rows, checks, notes)
    return 0
