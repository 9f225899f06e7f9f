"""Ready latency: from the child's socket listening to the daemon's `sidecar_ready`.

`python -m bench ready [--samples N] [--kinds tcp,http,log,exec,notify]`. One daemon per probe
kind: tcp, http, and (v3) log (the demo's "listening on" line), exec (a bash /dev/tcp connect,
run until it succeeds) and notify (a small child that sends READY=1 right after listen()). Each
sample is one
launch of the demo child, which appends `listening PID NS` to a report file right after listen():
the first launch at daemon start, then restarts after the bench SIGKILLs the child (base_delay 0).
The daemon's instant is the `timestamp` of its `sidecar_ready` line (microseconds, taken inside the
daemon before the line is written: the precise figure, used for the target); the instant the line
reaches the bench's reader thread is shown as well (it adds pipe and thread wake-up latency).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

from bench.common import (
    SETTLE_S,
    Check,
    Daemon,
    Row,
    arrival_ns,
    at_most,
    free_port,
    kill_and_wait,
    machine,
    ns_to_ms,
    report,
    respawning,
    row,
    scratch,
    stamp_ns,
    wait_report,
)

TARGET_MS = 15.0
BENCH = "ready"
KINDS = ("tcp", "http", "log", "exec", "notify")
TARGETED = ("tcp", "http")  # the SPEC's target; the v3 signals are measured beside them

# The notify child: listen, report the instant like the demo does, then READY=1 at once.
NOTIFY_CHILD = textwrap.dedent(
    """
    import os, socket, sys, time
    server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
    listened_ns = time.time_ns()
    with open(sys.argv[2], "a") as report:
        report.write(f"listening {os.getpid()} {listened_ns}\\n")
    address = os.environ["NOTIFY_SOCKET"]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"READY=1", "\\0" + address[1:] if address.startswith("@") else address)
    while True:
        server.accept()[0].close()
    """
)


def _entry(kind: str, port: int, listen_report: Path) -> dict[str, object]:
    match kind:
        case "http":
            ready: dict[str, object] = {"probe": kind, "path": "/health"}
        case "log":
            ready = {"probe": "log", "pattern": "^listening on"}
        case "exec":
            ready = {
                "probe": "exec",
                "command": ["bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port}"],
            }
        case "notify":
            entry = respawning("demo", port, listen_report, ready={"probe": "notify"})
            entry["command"] = [sys.executable, "-c", NOTIFY_CHILD, str(port), str(listen_report)]
            return entry
        case _:
            ready = {"probe": kind}
    return respawning("demo", port, listen_report, ready=ready)


def measure(kind: str, samples: int) -> list[Row]:
    stamped: list[float] = []
    arrived: list[float] = []
    starting: list[float] = []
    port = free_port()
    with scratch(BENCH) as work:
        listen_report = work / "report"
        entry = _entry(kind, port, listen_report)
        with Daemon(work, [entry]) as daemon:
            for n in range(1, samples + 1):
                ready = daemon.wait_for("sidecar_ready", count=n)
                spawned = daemon.wait_for("sidecar_spawned", count=n)
                pid, listened_ns = wait_report(listen_report, n, 5.0)
                if ready["pid"] != pid:
                    raise RuntimeError(f"sidecar_ready names pid {ready['pid']}, not {pid}")
                stamped.append(ns_to_ms(stamp_ns(ready) - listened_ns))
                arrived.append(ns_to_ms(arrival_ns(ready) - listened_ns))
                starting.append(ns_to_ms(listened_ns - stamp_ns(spawned)))
                time.sleep(SETTLE_S)
                if n < samples:
                    kill_and_wait(pid)
    child = "notify child" if kind == "notify" else "demo child"
    return [
        row(BENCH, f"listening -> sidecar_ready, {kind} (timestamp)", "ours", "ms", stamped),
        row(BENCH, f"listening -> sidecar_ready, {kind} (arrival)", "ours", "ms", arrived),
        row(BENCH, f"sidecar_spawned -> listening, {kind}", child, "ms", starting),
    ]


def run(samples: int, kinds: Sequence[str] = KINDS) -> tuple[list[Row], list[Check]]:
    rows: list[Row] = []
    checks: list[Check] = []
    for kind in kinds:
        measured = measure(kind, samples)
        rows += measured
        if kind in TARGETED:
            median = measured[0].median
            checks.append(at_most(BENCH, f"{kind} probe, median", median, TARGET_MS, "ms"))
    return rows, checks


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench ready", description=__doc__)
    parser.add_argument("--samples", type=int, default=20, help="launches per probe kind (>= 20)")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated probe kinds")
    args = parser.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        parser.error(f"unknown probe kinds: {', '.join(unknown)} (known: {', '.join(KINDS)})")
    rows, checks = run(max(args.samples, 20), kinds)
    report(f"ready latency; {machine()}", rows, checks, [])
    return 0
