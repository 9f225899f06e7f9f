"""Preflight lookup speed: our netlink + /proc path vs `lsof`+`ps` vs psutil, side by side.

`python -m bench preflight [--samples N] [--extra N]`. Scenarios: a free port and a held port,
each with no extra processes and with N idle extra processes of our uid. A held port costs a scan
of every fd table we may read (every co-holder of a shared socket must be found). Beside it, the
floor of that scan on this machine: the same reads in C (`bench/fdscan.c`, built with `cc` into
the bench cache dir; skipped with a note without one), timed inside its own process as ours is.
(It reads every fd table, as ours does as root; as another user ours reads its uid's only.)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.common import cache_dir
from supervisor.reconcile import holders
from supervisor.system import net, procs
from tests.support import Holder, free_port

FREE_TARGET_MS = 0.1
HELD_TARGET_MS = 3.0
HELD_MIN_RATIO = 15.0
C_FLOOR = "the scan alone, in C"


@dataclass(frozen=True)
class Result:
    scenario: str
    method: str
    samples_ms: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples_ms)


def measure(fn: Callable[[], object], samples: int) -> tuple[float, ...]:
    fn()  # warm caches (imports, dentries) so the first sample is not an outlier
    times = []
    for _ in range(samples):
        start = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - start) / 1e6)
    return tuple(times)


def ours(port: int) -> object:
    """The preflight's lookup: one netlink look, and holders only when the port is held."""
    if not net.find_listeners(port):
        return ()
    return holders.find_holders(port)


def lsof_ps(port: int) -> object:
    listing = subprocess.run(
        ["lsof", "-nP", f"-iTCP:{port}", "-sTCP:LISTEN", "-t"],
        capture_output=True,
        text=True,
        check=False,
    )
    rows = []
    for pid in dict.fromkeys(listing.stdout.split()):
        ps = subprocess.run(
            ["ps", "-o", "pid=,ppid=,uid=,command=", "-p", pid],
            capture_output=True,
            text=True,
            check=False,
        )
        rows.append(ps.stdout)
    return rows


def c_scanner(notes: list[str]) -> Path | None:
    """bench/fdscan.c built into the bench cache dir; None (and a note) without a C compiler."""
    cc = shutil.which("cc")
    if cc is None:
        notes.append("the C floor is skipped: no `cc` on PATH")
        return None
    binary = cache_dir() / "fdscan"
    binary.parent.mkdir(parents=True, exist_ok=True)
    source = Path(__file__).with_name("fdscan.c")
    subprocess.run([cc, "-O2", "-o", str(binary), str(source)], check=True, timeout=120)
    return binary


def c_scan(binary: Path, port: int, holder: int, samples: int) -> tuple[float, ...]:
    """The C scan's own timings (one unmeasured warm-up first, as `measure` does); each sample
    must find the holder."""
    inode = next(lst.inode for lst in net.find_listeners(port) if lst.inode is not None)
    done = subprocess.run(
        [str(binary), str(inode), str(samples + 1)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    times = []
    for line in done.stdout.splitlines()[1:]:
        ns, *pids = line.split()
        if str(holder) not in pids:
            raise RuntimeError(f"the C scan missed the holder {holder}: {line}")
        times.append(int(ns) / 1e6)
    return tuple(times)


def psutil_way(port: int) -> object:
    conns = [
        c
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
    ]
    return [procs.facts(pid) for pid in {c.pid for c in conns if c.pid is not None}]


@contextlib.contextmanager
def idle_processes(count: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`count` idle `sleep` processes of our uid, all killed and reaped on exit."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            started.append(
                subprocess.Popen(
                    ["sleep", "3600"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        yield started
    finally:
        for proc in started:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        for proc in started:
            proc.wait(10)


def run(samples: int, extra: int, notes: list[str]) -> list[Result]:
    scanner = c_scanner(notes)
    have_lsof = shutil.which("lsof") is not None and shutil.which("ps") is not None
    results: list[Result] = []
    free = free_port(ipv6=True)
    held = free_port(ipv6=True)
    with Holder(held) as holder:
        for extra_count in (0, extra):
            with idle_processes(extra_count):
                label = f"{extra_count} extra"
                methods: list[tuple[str, str, Callable[[], object]]] = [
                    (f"free port, {label}", "ours", lambda: ours(free)),
                    (f"held port, {label}", "ours", lambda: ours(held)),
                ]
                if have_lsof:
                    methods += [
                        (f"free port, {label}", "lsof+ps", lambda: lsof_ps(free)),
                        (f"held port, {label}", "lsof+ps", lambda: lsof_ps(held)),
                    ]
                methods += [
                    (f"free port, {label}", "psutil", lambda: psutil_way(free)),
                    (f"held port, {label}", "psutil", lambda: psutil_way(held)),
                ]
                check = holders.find_holders(held)
                if [h.pid for h in check] != [holder.pid]:
                    raise RuntimeError(f"holder lookup is wrong: {check}")
                for scenario, method, fn in methods:
                    results.append(Result(scenario, method, measure(fn, samples)))
                if scanner is not None:
                    floor = c_scan(scanner, held, holder.pid, samples)
                    results.append(Result(f"held port, {label}", C_FLOOR, floor))
    return results


def render(results: Sequence[Result]) -> str:
    lines = [
        f"{'scenario':<22} {'method':<22} {'median':>9} {'min':>9} {'max':>9}  {'x ours':>7}",
    ]
    scenarios = list(dict.fromkeys(r.scenario for r in results))
    for scenario in scenarios:
        rows = [r for r in results if r.scenario == scenario]
        base = next(r.median for r in rows if r.method == "ours")
        for r in sorted(rows, key=lambda r: r.median):
            lines.append(
                f"{scenario:<22} {r.method:<22} {r.median:>9.3f} {min(r.samples_ms):>9.3f} "
                f"{max(r.samples_ms):>9.3f}  {r.median / base:>7.1f}"
            )
        lines.append("")
    lines.append(
        "times in ms; x ours = median / median of 'ours' (find_listeners, then find_holders "
        "when held: a full scan of the fd tables we may read, since every co-holder of a "
        "shared socket must be found)."
    )
    return "\n".join(lines)


def verdicts(results: Sequence[Result], extra: int) -> list[str]:
    def median(scenario: str, method: str) -> float | None:
        found = [r.median for r in results if r.scenario == scenario and r.method == method]
        return found[0] if found else None

    out = []
    for count in sorted({0, extra}):
        free = median(f"free port, {count} extra", "ours")
        if free is not None:
            ok = free <= FREE_TARGET_MS
            out.append(
                f"{'ok  ' if ok else 'MISS'} free port, {count} extra: "
                f"{free:.3f} ms <= {FREE_TARGET_MS} ms"
            )
    for method in ("ours",):
        held = median(f"held port, {extra} extra", method)
        lsof = median(f"held port, {extra} extra", "lsof+ps")
        if held is None:
            continue
        ok = held <= HELD_TARGET_MS
        out.append(
            f"{'ok  ' if ok else 'MISS'} held port, {extra} extra, {method}: "
            f"{held:.3f} ms <= {HELD_TARGET_MS} ms"
        )
        floor = median(f"held port, {extra} extra", C_FLOOR)
        if floor is not None:
            asked = ""
            if lsof is not None:
                asked = (
                    f"; >= {HELD_MIN_RATIO:.0f}x lsof+ps asks for {lsof / HELD_MIN_RATIO:.3f} ms"
                )
            out.append(
                f"note held port, {extra} extra, {method}: {held / floor:.2f}x the floor, the "
                f"full scan in C ({floor:.3f} ms){asked}"
            )
        if lsof is not None:
            ratio = lsof / held
            ok = ratio >= HELD_MIN_RATIO
            out.append(
                f"{'ok  ' if ok else 'MISS'} held port, {extra} extra, {method}: "
                f"{ratio:.0f}x faster than lsof+ps (>= {HELD_MIN_RATIO:.0f}x)"
            )
    return out


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench preflight", description=__doc__)
    parser.add_argument("--samples", type=int, default=30, help="samples per measurement (>= 20)")
    parser.add_argument("--extra", type=int, default=300, help="idle extra processes")
    args = parser.parse_args(argv)
    samples = max(args.samples, 20)
    print(
        f"preflight lookup, {samples} samples each; {sys.platform}, {os.cpu_count()} cpus, "
        f"uid {os.getuid()}, {len(psutil.pids())} processes before extras"
    )
    notes: list[str] = []
    results = run(samples, args.extra, notes)
    print(render(results))
    for note in notes:
        print(f"note: {note}")
    print()
    for line in verdicts(results, args.extra):
        print(line)
    return 0
