"""CLI latency: wall time of `supervisor status --json` against a running daemon, as a subprocess.

`python -m bench cli [--samples N] [--importtime]`. Side by side: a bare `python -c pass` (the
interpreter's floor) and supervisord's `supervisorctl status`. On a miss (or with
`--importtime`) the heaviest imports of one run, from `python -X importtime`, are listed.
"ours, .pyc": the same command with bytecode caching on (see `cached_bytecode_env`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from collections.abc import Mapping, Sequence

from bench.common import (
    PYTHON,
    ROOT,
    Check,
    Daemon,
    Program,
    Row,
    Supervisord,
    at_most,
    cache_dir,
    console_script,
    demo,
    free_port,
    machine,
    ns_to_ms,
    report,
    row,
    scratch,
    sidecar,
    supervisord_bin,
    wait_connect,
)

BENCH = "cli"
TARGET_MS = 150.0
MEASURE = "status --json, wall time"


def cached_bytecode_env() -> dict[str, str]:
    """Our environment, but with .pyc files written and read (under the bench cache dir).

    An editable install under PYTHONDONTWRITEBYTECODE=1 recompiles `supervisor/` on every run.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(cache_dir() / "pycache")
    return env


def wall_ms(argv: Sequence[str], samples: int, env: Mapping[str, str] | None = None) -> list[float]:
    # One unmeasured run warms the page cache (and writes .pyc files where allowed).
    subprocess.run(argv, capture_output=True, check=False, cwd=ROOT, env=env)
    out = []
    for _ in range(samples):
        started = time.perf_counter_ns()
        done = subprocess.run(argv, capture_output=True, check=False, cwd=ROOT, env=env)
        out.append(ns_to_ms(time.perf_counter_ns() - started))
        if done.returncode != 0:
            raise RuntimeError(f"{argv} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return out


def heaviest_imports(
    argv: Sequence[str], env: Mapping[str, str] | None = None, top: int = 12
) -> list[str]:
    """The `top` imports by cumulative time (us) in one `python -X importtime` run of `argv`."""
    done = subprocess.run(
        [PYTHON, "-X", "importtime", *argv],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env=env,
    )
    rows = []
    for line in done.stderr.splitlines():
        # "import time: <self us> | <cumulative us> | <indented module name>"
        fields = line.removeprefix("import time:").split("|")
        if len(fields) != 3 or not fields[0].strip().isdigit():
            continue
        rows.append((int(fields[1]), int(fields[0]), fields[2].strip()))
    rows.sort(reverse=True)
    return [
        f"{cum / 1000:8.1f} ms cumulative {own / 1000:6.1f} ms self  {name}"
        for cum, own, name in rows[:top]
    ]


def run(samples: int, importtime: bool) -> tuple[list[Row], list[Check], list[str]]:
    notes: list[str] = []
    binary = supervisord_bin(notes)
    rows: list[Row] = []
    with scratch(BENCH) as work, Daemon(work, [sidecar("demo", free_port())]) as daemon:
        daemon.wait_for("sidecar_ready")
        status = [*console_script(), "status", "--json", "--state-dir", str(daemon.state_dir)]
        mine = row(BENCH, MEASURE, "ours", "ms", wall_ms(status, samples))
        cached = wall_ms(status, samples, cached_bytecode_env())
        rows += [mine, row(BENCH, MEASURE, "ours, .pyc", "ms", cached)]
        rows.append(
            row(BENCH, MEASURE, "python -c pass", "ms", wall_ms([PYTHON, "-c", "pass"], samples))
        )
        if importtime or mine.median > TARGET_MS:
            args = ["-m", "supervisor", *status[len(console_script()) :]]
            for label, env in (("as is", None), (".pyc cached", cached_bytecode_env())):
                notes.append(f"heaviest imports of `-m supervisor status --json` ({label}):")
                notes += heaviest_imports(args, env)
    if binary is not None:
        port = free_port()
        program = Program("demo", demo(port))
        with scratch(BENCH) as work, Supervisord(binary, work, [program], control=True) as sd:
            wait_connect(port, 20.0)
            theirs = wall_ms([*sd.ctl(), "status"], samples)
        rows.append(row(BENCH, MEASURE, "supervisorctl", "ms", theirs))
    checks = [at_most(BENCH, "status --json, median", mine.median, TARGET_MS, "ms")]
    notes.append(f"ours runs {' '.join(console_script())}; supervisorctl runs `status`")
    return rows, checks, notes


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench cli", description=__doc__)
    parser.add_argument("--samples", type=int, default=20, help="runs per command (>= 20)")
    parser.add_argument("--importtime", action="store_true", help="list the heaviest imports")
    args = parser.parse_args(argv)
    rows, checks, notes = run(max(args.samples, 20), args.importtime)
    report(f"CLI latency; {machine()}", rows, checks, notes)
    return 0
