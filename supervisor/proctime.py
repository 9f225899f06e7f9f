"""Process identity (pid + create time, what it runs) without importing psutil on Linux.

`supervisor status` must start fast, and psutil alone costs ~30 ms to import. The formula is
psutil's own (boot time + start ticks / CLK_TCK), so both give the very same float.
"""

from __future__ import annotations

import os
import sys

# psutil rounds create times to 10 ms on Linux (jiffies); two reads of one process agree exactly,
# but a time recorded elsewhere (a JSON file) may carry float noise.
CREATE_TIME_TOLERANCE_S = 0.011


def same_create_time(a: float, b: float) -> bool:
    return abs(a - b) <= CREATE_TIME_TOLERANCE_S


def _boot_time() -> float | None:
    try:
        with open("/proc/stat", "rb") as stat:
            for line in stat:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def stat_fields(pid: int) -> list[bytes] | None:
    """Fields of /proc/PID/stat after the command name: state, ppid, pgrp, ... (None if gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            data = stat.read()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: fields start after the last ')'.
    return data[data.rfind(b")") + 2 :].split()


def is_alive(pid: int, created: float) -> bool:
    """True if `pid` runs (not a zombie) and was created at `created`."""
    if sys.platform != "linux":
        from supervisor import procs

        return procs.alive_by_psutil(pid, created)
    fields = stat_fields(pid)
    boot = _boot_time()
    if fields is None or boot is None or len(fields) < 20 or fields[0] == b"Z":
        return False
    started = int(fields[19]) / os.sysconf("SC_CLK_TCK") + boot
    return same_create_time(started, created)


def _is_supervisor_run(argv: list[str]) -> bool:
    """`.../supervisor run ...` or `python [opts] -m supervisor run ...` (never supervisord)."""
    for i, arg in enumerate(argv[:-1]):
        if os.path.basename(arg) == "supervisor" or arg == "-msupervisor":
            return argv[i + 1] == "run"
    return False


def is_supervisor_run(pid: int) -> bool:
    """True if `pid` is a `supervisor run` of our (effective) uid."""
    if sys.platform != "linux":
        from supervisor import procs

        facts = procs.facts(pid, with_environ=False)
        return (
            facts is not None
            and facts.uid == os.getuid()
            and _is_supervisor_run(list(facts.cmdline))
        )
    try:
        if os.stat(f"/proc/{pid}").st_uid != os.geteuid():
            return False
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            raw = cmdline.read()
    except OSError:
        return False
    argv = [os.fsdecode(part) for part in raw.split(b"\0") if part]
    return _is_supervisor_run(argv)
