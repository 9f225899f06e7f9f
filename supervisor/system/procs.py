"""Process facts and safe signalling: the only importer of psutil.

psutil's `NoSuchProcess`/`AccessDenied`/`ZombieProcess` are translated here, at the boundary:
callers get `None`, `False` or an empty answer instead.

A scan that cannot be made (no fd left to list /proc: EMFILE) never reads as an empty group or
session: it answers with the leader's number, "it may still be there", so that a stop keeps
waiting and then escalates, and evidence is kept rather than forgotten (issue 25). That is
logged at most once a minute (`process_scan_failed`, with a count); the next scan tries again.

psutil is imported inside each function that uses it, on first use: the path to a daemon's first
spawn and most commands need none of it on Linux (proctime reads /proc, and so does `facts`, which
a launch over an orphan needs), and it costs ~6-14 ms.
(A module-level lazy proxy such as importlib's LazyLoader is not safe when two threads touch it
first at once, as the preflight's and the sweep's worker threads do; `import` is.)
"""

from __future__ import annotations

import contextlib
import os
import pwd
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

from supervisor.system import proctime

T = TypeVar("T")


@dataclass(frozen=True)
class ProcessFacts:
    """What we could learn about one process. `environ` is None when it cannot be read."""

    pid: int
    ppid: int | None
    uid: int | None
    user: str | None
    create_time: float
    cmdline: tuple[str, ...]
    environ: Mapping[str, str] | None

    @property
    def command(self) -> str:
        return " ".join(self.cmdline)


def facts(pid: int, *, with_environ: bool = True) -> ProcessFacts | None:
    """Facts of `pid`, or None if it does not exist (or is a zombie).

    On Linux they are read from /proc as psutil reads them, without importing psutil: over an
    orphan the first call is on the launch's path, and the import took 10-14 ms of the 25 ms
    between `daemon_started` and the kill (bench relaunch, isolation none).
    """
    if sys.platform == "linux":
        return _facts_from_proc(pid, with_environ)
    return _facts_from_psutil(pid, with_environ)


def _facts_from_psutil(pid: int, with_environ: bool) -> ProcessFacts | None:
    import psutil

    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            create_time = proc.create_time()
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            ppid = _quiet(proc.ppid)
            uids = _quiet(proc.uids)
            user = _quiet(proc.username)
            cmdline = _quiet(proc.cmdline) or []
            environ = _quiet(proc.environ) if with_environ else None
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        return None
    return ProcessFacts(
        pid=pid,
        ppid=ppid,
        uid=uids.real if uids is not None else None,
        user=user,
        create_time=create_time,
        cmdline=tuple(cmdline),
        environ=environ,
    )


def _facts_from_proc(pid: int, with_environ: bool) -> ProcessFacts | None:
    """psutil's Linux reads, alike: a vanished process is None, and so is one whose stat we
    may not read; another field we may not read is None (an unreadable command line is empty);
    any other error (EMFILE) is raised, never read as "gone"."""
    try:
        fields = proctime.read_stat(pid)
        created = proctime.create_time_in(fields)
        if created is None or fields[0] == b"Z":
            return None
        uid = _real_uid(pid)
        cmdline = _unless_denied(lambda: _proc_cmdline(pid)) or ()
        environ = _unless_denied(lambda: _proc_environ(pid)) if with_environ else None
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return ProcessFacts(
        pid=pid,
        ppid=int(fields[1]),
        uid=uid,
        user=_user_name(uid) if uid is not None else None,
        create_time=created,
        cmdline=cmdline,
        environ=environ,
    )


def _unless_denied(read: Callable[[], T]) -> T | None:
    try:
        return read()
    except PermissionError:
        return None


def _proc_text(pid: int, name: str) -> str:
    """/proc/PID/NAME decoded as psutil decodes it (the file system encoding, surrogateescape)."""
    with open(f"/proc/{pid}/{name}", "rb") as file:
        data = file.read()
    return data.decode(sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())


def _real_uid(pid: int) -> int | None:
    text = _unless_denied(lambda: _proc_text(pid, "status"))
    for line in (text or "").splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    return None


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # no such user in the password database: psutil says the number
        return str(uid)


def _proc_cmdline(pid: int) -> tuple[str, ...]:
    """psutil's parse: NUL-separated; a title rewritten with spaces (setproctitle) is split on
    them, as is a single argument holding spaces."""
    data = _proc_text(pid, "cmdline")
    if not data:
        return ()
    sep = "\0" if data.endswith("\0") else " "
    if data.endswith(sep):
        data = data[:-1]
    parts = data.split(sep)
    if sep == "\0" and len(parts) == 1 and " " in data:
        parts = data.split(" ")
    return tuple(parts)


def _proc_environ(pid: int) -> dict[str, str]:
    """psutil's parse_environ_block: NAME=VALUE entries up to the first empty one; an entry
    without a name is skipped."""
    data = _proc_text(pid, "environ")
    environ: dict[str, str] = {}
    pos = 0
    while (end := data.find("\0", pos)) > pos:
        equal = data.find("=", pos, end)
        if equal > pos:
            environ[data[pos:equal]] = data[equal + 1 : end]
        pos = end + 1
    return environ


def _quiet(getter: Callable[[], T]) -> T | None:
    import psutil

    try:
        return getter()
    except psutil.AccessDenied:
        return None


def create_time(pid: int) -> float | None:
    return proctime.create_time(pid)


def rss_and_cpu(pid: int) -> tuple[int, float] | None:
    """(resident bytes, user + system cpu seconds) of `pid`, or None (gone, not allowed)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            times = proc.cpu_times()
            return proc.memory_info().rss, times.user + times.system
    except psutil.Error:
        return None


def ancestors(pid: int) -> list[int]:
    """Pids of the ancestors of `pid`, nearest first (as psutil's `parents()`: a parent created
    after its child is another process on a reused pid, and ends the line). On Linux read from
    /proc, like `facts`: the evidence of a holder over an orphan needs both."""
    if sys.platform == "linux":
        return _ancestors_from_proc(pid)
    return _ancestors_from_psutil(pid)


def _ancestors_from_psutil(pid: int) -> list[int]:
    import psutil

    try:
        return [parent.pid for parent in psutil.Process(pid).parents()]
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return []


def _ancestors_from_proc(pid: int) -> list[int]:
    found: list[int] = []
    try:
        fields = proctime.read_stat(pid)
        while (ppid := int(fields[1])) > 0 and ppid != pid and ppid not in found:
            created = proctime.create_time_in(fields)
            try:
                parent = proctime.read_stat(ppid)
            except (FileNotFoundError, ProcessLookupError):
                break
            parent_created = proctime.create_time_in(parent)
            if created is None or parent_created is None or parent_created > created:
                break
            found.append(ppid)
            fields = parent
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return found


def pids_of_uid(uid: int) -> Iterator[int]:
    """Pids of processes whose real uid is `uid`, newest first (a fresh holder is likelier)."""
    for pid in sorted(all_pids(), reverse=True):
        if proctime.owner_uid(pid) == uid:
            yield pid


def session_id(pid: int) -> int | None:
    """The session `pid` belongs to (None if it is gone)."""
    try:
        return os.getsid(pid)
    except OSError:
        return None


def process_group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def group_members(pgid: int) -> list[int]:
    """Living pids of process group `pgid` (a scan; used only at stop)."""
    if sys.platform == "linux":
        return _group_members_proc(pgid)
    import psutil

    members = []
    for proc in psutil.process_iter():
        with contextlib.suppress(OSError, psutil.Error):
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
    return members


def _group_members_proc(pgid: int) -> list[int]:
    listed = _scan()
    if listed is None:
        return [pgid]
    members = []
    for pid in listed:
        fields = proctime.stat_fields(pid)
        if fields is not None and len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
            members.append(pid)
    return members


SCAN_LOG_EVERY_S = 60.0


class _ScanFailures:
    count = 0
    logged_count = 0
    logged_at: float | None = None


_scan_failures = _ScanFailures()


def _scan() -> list[int] | None:
    """all_pids(), or None when the process table cannot be listed (logged, rate-limited)."""
    try:
        return all_pids()
    except OSError as exc:
        failures = _scan_failures
        failures.count += 1
        now = time.monotonic()
        if failures.logged_at is None or now - failures.logged_at >= SCAN_LOG_EVERY_S:
            from supervisor.system import logs

            logs.get().error(
                "process_scan_failed",
                error=exc.strerror or str(exc),
                count=failures.count - failures.logged_count,
            )
            failures.logged_at = now
            failures.logged_count = failures.count
        return None


def all_pids() -> list[int]:
    """Every pid (a listing of /proc on Linux, without importing psutil)."""
    if sys.platform == "linux":
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    import psutil

    return psutil.pids()


def session_members(sid: int) -> list[int]:
    """Living pids of session `sid` (a scan of every process; `[sid]` if none can be made)."""
    listed = _scan()
    if listed is None:
        return [sid]
    members = []
    for pid in listed:
        with contextlib.suppress(OSError):
            if os.getsid(pid) == sid and not is_zombie(pid):
                members.append(pid)
    return members


def is_zombie(pid: int) -> bool:
    """True if `pid` is a zombie or gone."""
    if sys.platform == "linux":
        fields = proctime.stat_fields(pid)
        return fields is None or fields[0] == b"Z"
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to process group `pgid`; False if the group is empty."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


@dataclass(frozen=True)
class ListenEntry:
    """One TCP LISTEN socket as psutil reports it. `pid` is None when psutil may not tell."""

    ip: str
    port: int
    pid: int | None
    uid: int | None


def _uid_of(pid: int | None) -> int | None:
    if pid is None:
        return None
    if sys.platform == "linux":
        return proctime.owner_uid(pid)
    import psutil

    try:
        return psutil.Process(pid).uids().real
    except (OSError, psutil.Error):
        return None


def tcp_listeners_system(port: int) -> list[ListenEntry]:
    """Every TCP LISTEN socket on `port`, system-wide (needs root on macOS: raises there)."""
    import psutil

    found = []
    try:
        conns = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied as exc:
        raise PermissionError("psutil.net_connections needs more privileges here") from exc
    for conn in conns:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            found.append(ListenEntry(conn.laddr.ip, port, conn.pid, _uid_of(conn.pid)))
    return found


def tcp_listeners_of(port: int, pids: Iterable[int]) -> list[ListenEntry]:
    """TCP LISTEN sockets on `port` owned by `pids`, asking each process (macOS without root).

    A socket shared by several processes (forked workers) is reported once per process.
    """
    import psutil

    found = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            getter = getattr(proc, "net_connections", None) or proc.connections  # psutil < 6
            conns = getter(kind="tcp")
            uid = proc.uids().real
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
        for conn in conns:
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                found.append(ListenEntry(conn.laddr.ip, port, pid, uid))
    return found


def tcp_connection_pids(port: int, peer_port: int, pids: Iterable[int]) -> set[int]:
    """Which of `pids` hold the TCP connection from `peer_port` to their local `port`."""
    import psutil

    found = set()
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            getter = getattr(proc, "net_connections", None) or proc.connections  # psutil < 6
            conns = getter(kind="tcp")
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
        for conn in conns:
            if not (conn.laddr and conn.raddr):
                continue
            if (conn.laddr.port, conn.raddr.port) == (port, peer_port):
                found.add(pid)
    return found


def parent_pid(pid: int) -> int | None:
    """The ppid of `pid` (None if it is gone), reading /proc directly on Linux."""
    if sys.platform == "linux":
        fields = proctime.stat_fields(pid)
        return int(fields[1]) if fields is not None and len(fields) > 1 else None
    import psutil

    try:
        return psutil.Process(pid).ppid()
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return None


def child_pids(pid: int) -> list[int]:
    """Direct children of `pid`. On Linux reads /proc/PID/task/*/children (no process scan)."""
    if sys.platform == "linux":
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return []
        children: list[int] = []
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/children", "rb") as listing:
                    children.extend(int(word) for word in listing.read().split())
            except FileNotFoundError:
                if tid == str(pid) and os.path.exists(f"/proc/{pid}"):
                    # Kernel built without CONFIG_PROC_CHILDREN: psutil scans instead.
                    return _psutil_children(pid)
            except OSError:
                continue
        return children
    return _psutil_children(pid)


def _psutil_children(pid: int) -> list[int]:
    import psutil

    try:
        return [child.pid for child in psutil.Process(pid).children()]
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return []


def descendant_pids(pid: int) -> list[int]:
    """Every living descendant of `pid`, breadth first (cheap on Linux: no process scan)."""
    found: list[int] = []
    queue = [pid]
    seen = {pid}
    while queue:
        for child in child_pids(queue.pop(0)):
            if child not in seen:
                seen.add(child)
                found.append(child)
                queue.append(child)
    return found


def boot_time() -> float:
    """When the system booted (epoch seconds), where no kernel boot id exists (not Linux)."""
    import psutil

    return float(psutil.boot_time())


@dataclass(frozen=True)
class Usage:
    """CPU and memory of a process with its descendants (a sidecar's whole tree)."""

    cpu_percent: float  # over the sampling interval; 100 = one core
    memory_bytes: int  # resident set sizes, summed


class UsageSampler:
    """CPU needs two readings: `sample()` returns each tree's usage since the previous call."""

    def __init__(self) -> None:
        import psutil

        self._procs: dict[int, psutil.Process] = {}

    def sample(self, pids: Iterable[int]) -> dict[int, Usage]:
        import psutil

        found: dict[int, Usage] = {}
        seen: dict[int, psutil.Process] = {}
        for pid in pids:
            cpu, memory, alive = 0.0, 0, False
            try:
                root = self._procs.get(pid) or psutil.Process(pid)
                tree = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            for found_proc in tree:
                proc = self._procs.get(found_proc.pid, found_proc)
                try:
                    with proc.oneshot():
                        cpu += proc.cpu_percent(None)  # 0.0 at a process's first reading
                        memory += proc.memory_info().rss
                    alive = True
                    seen[proc.pid] = proc
                except psutil.Error:
                    continue
            if alive:
                found[pid] = Usage(cpu, memory)
        self._procs = seen
        return found
