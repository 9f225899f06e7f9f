"""The daemon as a child subreaper (Linux): the descendants its sidecars orphan become its own.

A command that daemonizes (nginx without `daemon off;`, `redis-server --daemonize yes`) forks,
calls setsid and lets its parent exit: the server it leaves is in no session of ours and its
command line and environment may be clobbered. As a subreaper the daemon becomes its parent,
which is proof that it descends from one of our children (`adopted`), so the attempt can name
it (`sidecar_daemonized`) and stop it.

Adopted processes that exit must be reaped by us. Only processes we did not fork ourselves are
reaped here: every fork of the daemon (children.spawn, run_tool) registers its pid under a lock,
so that the reaper can never take the exit status a Popen is waiting for.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from supervisor.system import procs

PR_SET_CHILD_SUBREAPER = 36

T = TypeVar("T")

_lock = threading.Lock()
_forked: set[int] = set()  # pids we forked and reap ourselves (Popen's)


def become_subreaper() -> bool:
    """Make this process the reaper of its descendants' orphans; False where unsupported."""
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def fork_registered(start: Callable[[], T], pid_of: Callable[[T], int]) -> T:
    """Run `start` (a Popen) with the reaper held off until its pid is registered as ours."""
    with _lock:
        started = start()
        _forked.add(pid_of(started))
    return started


def forget(pid: int) -> None:
    """We reaped `pid` ourselves: it is no longer a fork of ours to protect."""
    with _lock:
        _forked.discard(pid)


def run_tool(argv: Sequence[str], *, timeout_s: float) -> subprocess.CompletedProcess[bytes]:
    """`subprocess.run` (output captured), registered so the reaper leaves it alone."""
    proc = fork_registered(
        lambda: subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE),
        lambda p: p.pid,
    )
    try:
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)
    finally:
        forget(proc.pid)


def _children(parent: int | None) -> list[int]:
    """Our direct children an adopted orphan can be among (or those of `parent`).

    The kernel hands an orphan to the subreaper's first living thread (find_new_reaper ->
    find_alive_thread: the thread list starts with the group leader), and our leader runs the
    event loop as long as the daemon lives: its own children list has every orphan we adopted.
    Reading every thread's list instead costs ~1 ms per SIGCHLD with 50 sidecars (a thread per
    output.log writer, up to 8 workers). Our own forks from worker threads are in `_forked`.
    """
    me = os.getpid()
    if parent is not None and parent != me:
        return procs.child_pids(parent)
    try:
        if sys.platform == "linux":
            # Without CONFIG_PROC_CHILDREN (no such file): the slow way below.
            with contextlib.suppress(FileNotFoundError):
                return _leader_children()
        return procs.child_pids(me)
    except OSError:
        # Out of fds (EMFILE) or /proc unreadable: none seen this time. An exited orphan is
        # reaped at the next SIGCHLD; at shutdown, what was adopted stays for the next daemon.
        return []


def _leader_children() -> list[int]:
    """Our leader thread's children, from the kernel's list (OSError where it has none)."""
    me = os.getpid()
    with open(f"/proc/{me}/task/{me}/children", "rb") as listing:
        return [int(word) for word in listing.read().split()]


def any_adopted() -> bool:
    """Whether a child of ours, living or exited, is not one we forked: whether `reap_adopted`
    has anything to do. One read of /proc, cheap enough for the event loop; where that list
    cannot be read (no CONFIG_PROC_CHILDREN, not Linux, out of fds), True: the scan that
    `reap_adopted` then makes stays in its worker thread.

    Without the lock: a membership test is atomic under the GIL, and a pid forked but not yet
    registered can only make this True (a wasted reap), never hide an adopted orphan."""
    try:
        children = _leader_children()
    except OSError:
        return True
    return any(pid not in _forked for pid in children)


def adopted(parent: int | None = None) -> list[int]:
    """Living children of ours that we did not fork: orphans adopted as a subreaper."""
    with _lock:
        ours = set(_forked)
    return [pid for pid in _children(parent) if pid not in ours and not procs.is_zombie(pid)]


def reap_adopted() -> int:
    """Reap every adopted child that has exited; how many were reaped."""
    reaped = 0
    with _lock:
        for pid in _children(None):
            if pid in _forked or not procs.is_zombie(pid):
                continue
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    reaped += 1
    return reaped


def snapshot_tree(pid: int) -> list[tuple[int, float]]:
    """Every living descendant of `pid`, each with its create time (blocking: /proc reads).

    Taken while `pid` (our child) still lives, the chain of living parents proves each ours;
    the exact identities keep that proof once they are orphaned (adopted by us as subreaper,
    or by init) by the child's stop: a setsid'd server, a setpgid member, a grandchild
    holding an inherited socket.
    """
    found = []
    for descendant in procs.descendant_pids(pid):
        created = procs.create_time(descendant)
        if created is not None:
            found.append((descendant, created))
    return found


def adopted_identities() -> list[tuple[int, float]]:
    """`adopted()`, each with its create time (blocking: /proc reads)."""
    found = []
    for pid in adopted():
        created = procs.create_time(pid)
        if created is not None:
            found.append((pid, created))
    return found
