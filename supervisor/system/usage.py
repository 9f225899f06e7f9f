"""Memory and CPU of a sidecar for `status`: from its cgroup where it has one, else from its
process tree (the child and its descendants).

Memory: the cgroup's memory.current where the memory controller is enabled there, else the sum
of the members' resident sets. CPU: percent of one core since the previous sample of the same
child (the cgroup's cpu.stat usage_usec, which also counts members that exited; else the
living processes' user + system time); None on the first sample and where unknown.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass

from supervisor.system import procs, proctime
from supervisor.system.cgroups import Cgroup

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
MIN_INTERVAL_S = 0.5  # samples closer than this repeat the previous percentage
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class Usage:
    isolation: str  # "cgroup" | "none"
    memory_bytes: int | None
    cpu_percent: float | None

    def fields(self) -> dict[str, object]:
        return {
            "isolation": self.isolation,
            "memory_bytes": self.memory_bytes,
            "cpu_percent": self.cpu_percent,
        }


def _proc_usage(pid: int) -> tuple[int, float] | None:
    """(resident bytes, cpu seconds) of one process, from /proc (psutil elsewhere)."""
    if sys.platform != "linux":
        return procs.rss_and_cpu(pid)
    try:
        fields = proctime.read_stat(pid)
        cpu = (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14, 15)
    except (OSError, IndexError, ValueError):
        return None
    rss = _rss(pid)
    return (rss, cpu) if rss is not None else None


def _rss(pid: int) -> int | None:
    """The resident set of one process (Linux: /proc/PID/statm), or None."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


def _tree_usage(pids: Iterable[int]) -> tuple[int | None, float | None]:
    rss_total, cpu_total, seen = 0, 0.0, False
    for pid in pids:
        found = _proc_usage(pid)
        if found is not None:
            seen = True
            rss_total += found[0]
            cpu_total += found[1]
    return (rss_total, cpu_total) if seen else (None, None)


def _tree_rss(pids: Iterable[int]) -> int | None:
    """The summed resident sets of `pids` (None if none could be read): statm alone."""
    if sys.platform != "linux":
        return _tree_usage(pids)[0]
    found = [rss for rss in map(_rss, pids) if rss is not None]
    return sum(found) if found else None


class Sampler:
    """Keeps the previous CPU reading per sidecar, to turn the next into a percentage."""

    def __init__(self) -> None:
        # name -> (pid, at, cpu seconds, the percent computed then)
        self._last: dict[str, tuple[int, float, float, float | None]] = {}

    def sample(self, name: str, pid: int | None, cgroup: Cgroup | None) -> Usage:
        isolation = "cgroup" if cgroup is not None else "none"
        if pid is None:
            self._last.pop(name, None)
            return Usage(isolation, None, None)
        now = time.monotonic()
        last = self._last.get(name)
        if cgroup is not None:
            memory = cgroup.memory_bytes()
            if memory is None:
                memory = _tree_rss(cgroup.members())
            # cpu.stat is read only when its figure is used: a status write in a crash storm
            # samples every sidecar, most of them within MIN_INTERVAL_S of their last sample.
            if last is not None and last[0] == pid and now - last[1] < MIN_INTERVAL_S:
                return Usage(isolation, memory, last[3])
            usec = cgroup.cpu_usage_usec()
            cpu = usec / 1e6 if usec is not None else None
        else:
            memory, cpu = _tree_usage([pid, *procs.descendant_pids(pid)])
        if cpu is None:
            return Usage(isolation, memory, None)
        if last is None or last[0] != pid:
            self._last[name] = (pid, now, cpu, None)
            return Usage(isolation, memory, None)
        if now - last[1] < MIN_INTERVAL_S:  # too short to measure: the previous figure
            return Usage(isolation, memory, last[3])
        percent = round(max(0.0, cpu - last[2]) / (now - last[1]) * 100, 1)
        self._last[name] = (pid, now, cpu, percent)
        return Usage(isolation, memory, percent)
