"""Process identity (pid + create time, what it runs) without importing psutil on Linux.

`supervisor status` must start fast, and psutil alone costs ~30 ms to import. The formula is
psutil's own (boot time + start ticks / CLK_TCK), so both give the very same float. The platform
is chosen once, here (psutil's `_psplatform` pattern): /proc on Linux, psutil elsewhere
(`_proc_psutil`, imported only there); callers never test the platform.
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


def proc_is_ours() -> tuple[bool, str]:
    """Does /proc belong to our pid namespace? (What /proc/self names, for the message.)

    In a pid namespace that still sees the host's /proc (`unshare -fp` without --mount-proc),
    /proc/self names our pid *on the host*, and every pid we would read there is a stranger.
    """
    if sys.platform != "linux":
        return True, ""
    try:
        names = os.readlink("/proc/self")
    except OSError as exc:
        return False, f"unreadable ({exc.strerror})"
    return names == str(os.getpid()), names


if sys.platform == "linux":

    def cmdline(pid: int) -> tuple[str, ...] | None:
        """The command line of `pid` (None if gone or unreadable), read from /proc."""
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as file:
                data = file.read()
        except OSError:
            return None
        return tuple(part.decode("utf-8", "replace") for part in data.split(b"\0")[:-1])

    def owner_uid(pid: int) -> int | None:
        """The real uid `pid` runs as (None if gone)."""
        try:
            return os.stat(f"/proc/{pid}").st_uid
        except OSError:
            return None

    def stat_fields(pid: int) -> list[bytes] | None:
        """Fields of /proc/PID/stat after the command name: state, ppid, pgrp, ... (None: gone)."""
        try:
            return read_stat(pid)
        except OSError:
            return None

    def read_stat(pid: int) -> list[bytes]:
        """`stat_fields`, raising the OSError of the read (ENOENT or ESRCH: gone)."""
        with open(f"/proc/{pid}/stat", "rb") as stat:
            data = stat.read()
        # The command name may contain spaces and parentheses: fields start after the last ')'.
        return data[data.rfind(b")") + 2 :].split()

    def create_time(pid: int) -> float | None:
        """When `pid` was created (psutil's float), or None if it is gone."""
        return create_time_in(stat_fields(pid))

    def create_time_in(fields: list[bytes] | None) -> float | None:
        """The create time in `stat_fields`' answer (None: none, or no boot time)."""
        boot = _boot_time()
        if fields is None or boot is None or len(fields) < 20:
            return None
        return int(fields[19]) / os.sysconf("SC_CLK_TCK") + boot

    def is_alive(pid: int, created: float) -> bool:
        """True if `pid` runs (not a zombie) and was created at `created`."""
        fields = stat_fields(pid)
        started = create_time_in(fields)
        if fields is None or started is None or fields[0] == b"Z":
            return False
        return same_create_time(started, created)

else:

    def stat_fields(pid: int) -> list[bytes] | None:
        """No /proc here: nothing to read."""
        return None
