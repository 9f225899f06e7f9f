"""Child output: lines per second from a chatty child into output.log, and what a flood from one
sidecar costs another sidecar's crash-to-respawn.

`python -m bench output [--samples N] [--lines N]`. The daemon logs JSON at info level (so every
line is also a `child_output` event) to a file, as under launchd, rather than to a pipe the
bench parses: the bench's own JSON parsing would compete for the same two cores.

- throughput: a child writes `--lines` lines of 80 bytes as fast as it can, then `done`; from the
  child's first line (its own clock) to `done` in output.log (polled every 1 ms). Also with the
  events filtered out (`--log-level warning`: output.log alone) and with `output.file = false`
  (events alone).
- respawn under a flood: the respawn bench's measure (SIGKILL the demo child -> the port accepts
  at a new pid) for one quiet sidecar, alone and next to a sidecar running `yes` (a flood of
  2-byte lines). Target: the flood costs at most 2x the quiet median.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

from bench.common import (
    PYTHON,
    ROOT,
    Check,
    Row,
    at_most,
    free_port,
    machine,
    render_config,
    report,
    respawning,
    row,
    scratch,
    stamp_ns,
)
from bench.respawn import breakdown, cycles
from tests.support import daemon_command

BENCH = "output"
FLOOD_RATIO = 2.0
LINE = b"x" * 79 + b"\n"

CHATTY = """
import os, sys, time
count = int(sys.argv[1])
line = b"x" * 79 + b"\\n"
os.write(1, b"start %d\\n" % time.time_ns())
block = line * 1000
for _ in range(count // 1000):
    os.write(1, block)
os.write(1, b"done\\n")
time.sleep(3600)
"""

FLOOD = """
import os
block = b"y\\n" * 32768
while True:
    os.write(1, block)
"""


class FileLoggedDaemon:
    """`supervisor run` with its JSON log (stderr) going to a file; always cleaned up."""

    def __init__(
        self,
        workdir: Path,
        sidecars: Sequence[Mapping[str, object]],
        *,
        log_level: str = "info",
    ) -> None:
        self.config = workdir / "supervisor.toml"
        self.config.write_text(render_config(sidecars))
        self.state = workdir / "state"
        self.log_path = workdir / "daemon.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                daemon_command(self.config, self.state, "--non-interactive", log_level=log_level),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                cwd=ROOT,
            )

    def close(self) -> None:
        if self.proc.poll() is not None:
            return
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            children = []
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            for child in children:
                with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
                    os.killpg(child.pid, signal.SIGKILL)
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> FileLoggedDaemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _chatty(work: Path, lines: int, **tables: Mapping[str, object]) -> dict[str, Any]:
    script = work / "chatty.py"
    script.write_text(CHATTY)
    command = [PYTHON, "-I", "-S", str(script), str(lines)]
    entry: dict[str, Any] = {"name": "chatty", "command": command, **tables}
    return entry


def _tail(path: Path, size: int = 256) -> bytes:
    try:
        with path.open("rb") as file:
            file.seek(0, os.SEEK_END)
            end = file.tell()
            file.seek(max(0, end - size))
            return file.read()
    except FileNotFoundError:
        return b""


def _wait(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout_s}s")
        time.sleep(0.001)


def _start_ns(folder: Path, first: str) -> int:
    """The child's own `start <ns>` line, in the oldest file that kept it."""
    for name in sorted(os.listdir(folder), reverse=True):  # output.log.N ... output.log
        if name.startswith(first):
            with (folder / name).open("rb") as file:
                for raw in file:
                    if b" start " in raw or raw.startswith(b"start "):
                        return int(raw.split()[-1])
    raise RuntimeError(f"no start line in {folder}")


def throughput(lines: int, variant: str) -> float:
    """Lines per second into output.log (or into the event log for `events only`)."""
    with scratch(BENCH) as work:
        tables: dict[str, Mapping[str, object]] = {}
        level = "info"
        if variant == "output.log only":
            level = "warning"
        elif variant == "events only":
            tables["output"] = {"file": False}
        with FileLoggedDaemon(work, [_chatty(work, lines, **tables)], log_level=level) as daemon:
            if variant == "events only":
                _wait(lambda: b'"line": "done"' in _tail(daemon.log_path, 512), 300, "done event")
                done_ns = time.time_ns()
                with daemon.log_path.open("rb") as log:
                    start_ns = next(
                        int(raw.split(b'"line": "start ')[1].split(b'"')[0])
                        for raw in log
                        if b'"line": "start ' in raw
                    )
            else:
                output_log = daemon.state / "chatty" / "output.log"
                _wait(lambda: _tail(output_log).endswith(b" stdout done\n"), 300, "done line")
                done_ns = time.time_ns()
                start_ns = _start_ns(daemon.state / "chatty", "output.log")
    return lines / ((done_ns - start_ns) / 1e9)


def _spawned_ns(log_path: Path, name: str) -> list[int]:
    """The daemon's `sidecar_spawned` timestamps for `name` (a scan of its JSON log)."""
    found = []
    with log_path.open("rb") as log:
        for raw in log:
            if b'"sidecar_spawned"' in raw and f'"sidecar": "{name}"'.encode() in raw:
                found.append(stamp_ns(json.loads(raw)))
    return found


def respawn(samples: int, *, flood: bool) -> tuple[list[float], list[float], list[float]]:
    """Crash to respawn of the quiet sidecar, and where it went: kill -> sidecar_spawned (the
    daemon's reaction), sidecar_spawned -> listening (the new child's own start)."""
    port = free_port()
    with scratch(BENCH) as work:
        listen_report = work / "report"
        entries = [respawning("quiet", port, listen_report)]
        if flood:
            yes = shutil.which("yes")
            script = work / "flood.py"
            script.write_text(FLOOD)
            command = [yes] if yes else [PYTHON, "-I", "-S", str(script)]
            entries.append({"name": "flood", "command": command})
        with FileLoggedDaemon(work, entries) as daemon:
            if flood:
                flood_log = daemon.state / "flood" / "output.log"
                _wait(flood_log.exists, 30, "the flood's output.log")
            done = cycles(port, listen_report, samples, lambda n: None)
            daemon.close()
            spawned = _spawned_ns(daemon.log_path, "quiet")[1:]
    reacted, started = breakdown(done, spawned)
    return [c.respawn_ms for c in done], reacted, started


def run(samples: int, lines: int) -> tuple[list[Row], list[Check], list[str]]:
    rows: list[Row] = []
    for variant in ("events + output.log", "output.log only", "events only"):
        rates = [throughput(lines, variant) / 1000 for _ in range(3)]
        rows.append(row(BENCH, f"chatty child, {variant}", "ours", "klines/s", rates))
    measured = {flood: respawn(samples, flood=flood) for flood in (False, True)}
    quiet, flooded = (
        row(BENCH, f"respawn, {label}", "ours", "ms", measured[flood][0])
        for flood, label in ((False, "quiet neighbour"), (True, "next to a `yes` flood"))
    )
    rows += [quiet, flooded]
    for flood, label in ((False, "quiet"), (True, "flood")):
        _, reacted, started = measured[flood]
        rows += [
            row(BENCH, f"  {label}: of which SIGKILL -> sidecar_spawned", "ours", "ms", reacted),
            row(BENCH, f"  {label}: of which spawned -> listening", "ours", "ms", started),
        ]
    checks = [
        at_most(
            BENCH,
            f"respawn next to a flood vs quiet ({quiet.median:.1f} ms) x {FLOOD_RATIO:g}",
            flooded.median,
            quiet.median * FLOOD_RATIO,
            "ms",
        )
    ]
    notes = [f"{lines} lines of 80 bytes per throughput sample; 3 samples per variant"]
    return rows, checks, notes


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench output", description=__doc__)
    parser.add_argument("--samples", type=int, default=20, help="crashes per respawn row")
    parser.add_argument("--lines", type=int, default=200_000, help="lines per throughput sample")
    args = parser.parse_args(argv)
    rows, checks, notes = run(max(args.samples, 5), max(args.lines // 1000, 1) * 1000)
    report(f"child output; {machine()}", rows, checks, notes)
    return 0
