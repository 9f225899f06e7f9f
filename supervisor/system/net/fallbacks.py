"""Listener lookups where netlink is unavailable: psutil system-wide, psutil per process, lsof."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator

from supervisor.system import procs, reaper
from supervisor.system.net.listener import Listener, format_address

LSOF_TIMEOUT_S = 10.0


def listeners_psutil(port: int) -> tuple[Listener, ...]:
    """psutil.net_connections, system-wide (Linux; needs root on macOS)."""
    return tuple(
        Listener(format_address(e.ip, port), e.uid, None, e.pid)
        for e in procs.tcp_listeners_system(port)
    )


def listeners_per_process(port: int, pids: Iterable[int] | None = None) -> tuple[Listener, ...]:
    """Ask each process of ours (default: every process of our uid) for its sockets."""
    if pids is None:
        pids = procs.pids_of_uid(os.getuid())
    return tuple(
        Listener(format_address(e.ip, port), e.uid, None, e.pid)
        for e in procs.tcp_listeners_of(port, pids)
    )


def listeners_lsof(port: int) -> tuple[Listener, ...]:
    """`lsof -nP -iTCP:PORT -sTCP:LISTEN`; raises OSError when lsof is missing or fails.

    `-iTCP@127.0.0.1:PORT` would miss wildcard binds, so only the port is given. lsof exits 1
    both when nothing matches and on some errors: only "1 and silent" means "nothing found".
    """
    lsof = shutil.which("lsof") or next(
        (p for p in ("/usr/sbin/lsof", "/usr/bin/lsof") if os.access(p, os.X_OK)), None
    )
    if lsof is None:
        raise FileNotFoundError(errno.ENOENT, "lsof is not installed (not on PATH)")
    try:
        # Registered: the daemon is a subreaper, and its reaper must not take lsof's status.
        result = reaper.run_tool(
            [lsof, "-nP", f"-iTCP:{port}", "-sTCP:LISTEN", "-Fpuftn"], timeout_s=LSOF_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        raise TimeoutError(errno.ETIMEDOUT, f"lsof took over {LSOF_TIMEOUT_S:g}s") from None
    output = result.stdout.decode("utf-8", "replace")
    nothing_found = result.returncode == 1 and not result.stderr.strip()
    if result.returncode != 0 and not nothing_found and not output:
        lines = result.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = lines[-1] if lines else "no output"
        raise OSError(errno.EIO, f"lsof exited {result.returncode}: {detail}")
    return tuple(parse_lsof(output, port))


def parse_lsof(output: str, port: int) -> Iterator[Listener]:
    """Parse `lsof -F puftn` output: p/u start a process set, f/t/n describe each file."""
    pid: int | None = None
    uid: int | None = None
    kind = ""
    seen: set[tuple[int | None, str]] = set()
    for line in output.splitlines():
        tag, value = line[:1], line[1:]
        if tag == "p":
            pid, uid = int(value), None
        elif tag == "u":
            uid = int(value) if value.isdigit() else None
        elif tag == "f":
            kind = ""
        elif tag == "t":
            kind = value
        elif tag == "n":
            host, _, port_text = value.rpartition(":")
            if port_text != str(port):
                continue
            if host == "*":
                host = "::" if kind == "IPv6" else "0.0.0.0"
            address = format_address(host.strip("[]"), port)
            if (pid, address) not in seen:  # one line per fd; a dup'ed socket is one listener
                seen.add((pid, address))
                yield Listener(address, uid, None, pid)
