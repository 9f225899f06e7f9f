"""Linux cgroup v2: one cgroup per sidecar, which nothing its command starts can leave.

A process cannot move itself out of its cgroup without write access to another one: whatever
it renames, however it detaches (setsid, double fork), whichever uid it drops to, it stays a
member. So "ours" is a fact the kernel keeps, and "stopped" means the cgroup is empty.

Where the cgroups live (`find_subtree`):
- a delegated cgroup of our own (a systemd unit with Delegate=yes, a user manager's subtree):
  the daemon moves itself into the leaf `supervisor` of it and creates the sidecars' cgroups
  beside that leaf (no process may sit in a cgroup whose children enable controllers);
- as root, otherwise: the fixed parent `<cgroup2 mount>/sidecar-supervisor/`.
Below that, one folder per state dir, `s-<id>` (`state_id`: a hash of its real path, device and
inode), holding one cgroup per sidecar (its name) and one per sidecar's health checks
(`_check-<name>`; sidecar names start with a letter or digit). The names are reused across
restarts and daemons, so a later daemon finds a dead daemon's cgroups and reclaims them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import anyio

ROOT_PARENT = "sidecar-supervisor"  # as root: <mount>/sidecar-supervisor/
DAEMON_LEAF = "supervisor"  # delegated: the daemon's own leaf inside its cgroup
STATE_PREFIX = "s-"
CHECK_PREFIX = "_check-"
_STATE_RE = re.compile(r"s-([0-9a-f]{16})")
_NAME_RE = re.compile(r"(_check-)?([a-z0-9][a-z0-9_.-]{0,63})")


class CgroupUnavailable(Exception):
    """No cgroup v2 subtree can be used here; `reason` says why (one line)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Owner:
    """Whose a process is, by its cgroup: a state dir's sidecar (or its health checks)."""

    state_id: str
    sidecar: str
    health_check: bool = False


def mount_point(mountinfo: str | None = None) -> Path | None:
    """Where the cgroup2 hierarchy is mounted (/sys/fs/cgroup, or .../unified when hybrid)."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return None
    for line in mountinfo.splitlines():
        head, sep, tail = line.partition(" - ")
        fields = head.split()
        if sep and len(fields) >= 5 and tail.split()[:1] == ["cgroup2"]:
            return Path(fields[4].replace("\\040", " "))
    return None


@functools.cache
def _mount() -> Path | None:
    return mount_point()


def cgroup_of(pid: int | str = "self") -> str | None:
    """The cgroup v2 path of `pid` relative to the mount ("/a/b"), or None (gone, no v2)."""
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("0::"):
            return line[3:].removesuffix(" (deleted)")
    return None


def state_id(path: Path) -> str:
    """The identity of a state dir: its real path, device and inode, hashed (16 hex)."""
    real = os.path.realpath(path)
    st = os.stat(real)
    return hashlib.sha256(f"{real}\0{st.st_dev}\0{st.st_ino}".encode()).hexdigest()[:16]


def owner_of(pid: int) -> Owner | None:
    """The state dir and sidecar whose cgroup `pid` is in, or None (not in one of ours)."""
    path = cgroup_of(pid)
    return owner_of_path(path) if path is not None else None


def owner_of_path(path: str) -> Owner | None:
    parts = [p for p in path.split("/") if p]
    if len(parts) < 2:
        return None
    state = _STATE_RE.fullmatch(parts[-2])
    name = _NAME_RE.fullmatch(parts[-1])
    if state is None or name is None:
        return None
    return Owner(state.group(1), name.group(2), health_check=name.group(1) is not None)


@dataclass(frozen=True)
class Subtree:
    """Where this daemon may create cgroups: `base`, found `how` ("root" | "delegated")."""

    mount: Path
    base: Path
    how: str


def find_subtree() -> Subtree:
    """The subtree this process can use, or CgroupUnavailable with the reason."""
    if sys.platform != "linux":
        raise CgroupUnavailable("cgroups exist only on Linux")
    mount = _mount()
    if mount is None:
        raise CgroupUnavailable("no cgroup2 hierarchy is mounted")
    own = cgroup_of("self")
    if own is None:
        raise CgroupUnavailable("this process is in no cgroup v2 (/proc/self/cgroup)")
    here = mount / own.lstrip("/")
    root = os.geteuid() == 0
    if own != "/" and _delegated(here, root=root):
        return Subtree(mount, here, "delegated")
    if root:
        if not os.access(mount, os.W_OK):
            raise CgroupUnavailable(f"the cgroup2 mount {mount} is read-only")
        return Subtree(mount, mount / ROOT_PARENT, "root")
    raise CgroupUnavailable(
        f"our cgroup {own} is not delegated to us (run as root, or in a systemd unit "
        "with Delegate=yes)"
    )


def _delegated(here: Path, *, root: bool) -> bool:
    if root:  # root may write anywhere: only systemd's mark says the cgroup is ours to manage
        for attr in ("trusted.delegate", "user.delegate"):
            with contextlib.suppress(OSError):
                if os.getxattr(here, attr) == b"1":
                    return True
        return False
    return all(
        os.access(p, os.W_OK)
        for p in (here, here / "cgroup.procs", here / "cgroup.subtree_control")
    )


class Cgroup:
    """One cgroup directory: its members, signals to all of them, kill, emptiness."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Read several times per spawn and per status write: plain strings, read with os.read
        # (a Path join and a text file object cost more than the read itself).
        self._procs = os.path.join(path, "cgroup.procs")
        self._events = os.path.join(path, "cgroup.events")

    def __repr__(self) -> str:
        return f"Cgroup({str(self.path)!r})"

    @property
    def procs_file(self) -> Path:
        return self.path / "cgroup.procs"

    def ensure(self) -> bool:
        """Create it (and its parents) if missing; True if this call created it."""
        for _ in range(3):  # a parent may be removed by another daemon meanwhile: retry
            try:
                self.path.mkdir()
                return True
            except FileExistsError:
                return False
            except FileNotFoundError:
                self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.mkdir(exist_ok=True)
        return True

    def members(self) -> list[int]:
        """The pids in it (living processes; an exited one leaves its cgroup at once); none
        if it is gone or cannot be listed (a threaded cgroup: EOPNOTSUPP): never raises."""
        try:
            data = _read(self._procs)
        except OSError:
            return []
        return [int(line) for line in data.split()]

    def populated(self) -> bool:
        """Does it (or a cgroup below it) hold a process? (cgroup.events `populated`)"""
        try:
            data = _read(self._events)
        except FileNotFoundError:
            return False
        except OSError:
            return bool(self.members())
        return b"populated 1" in data

    def signal_all(self, sig: int) -> int:
        """Send `sig` to every member; how many got it. Each pid is pinned by a pidfd and
        checked to be a member still, so a pid recycled meanwhile is never signalled."""
        sent = 0
        for pid in self.members():
            if _signal_member(pid, sig, self.path):
                sent += 1
        return sent

    def kill(self) -> int:
        """SIGKILL every member at once (cgroup.kill; else frozen, then one by one). Returns
        how many members there were."""
        count = len(self.members())
        if not count:
            return 0
        if _write_quietly(self.path / "cgroup.kill", "1"):
            return count
        # Before Linux 5.14 (no cgroup.kill), or it failed: one by one.
        frozen = _write_quietly(self.path / "cgroup.freeze", "1")  # no new forks meanwhile
        try:
            for _ in range(100):
                if not self.signal_all(signal.SIGKILL):
                    break
        finally:
            if frozen:
                _write_quietly(self.path / "cgroup.freeze", "0")
        return count

    async def wait_empty(self, timeout_s: float) -> bool:
        """Until nothing is left in it, at most `timeout_s`; True if it is empty."""
        delay = 0.002
        with anyio.move_on_after(timeout_s):
            while self.populated():
                await anyio.sleep(delay)
                delay = min(delay * 2, 0.05)
        return not self.populated()

    async def stop(self, sig: int, timeout_s: float, *, kill_wait_s: float = 2.0) -> int:
        """`sig` (and SIGCONT) to every member; after `timeout_s`, cgroup.kill. Returns how
        many members were SIGKILLed (0 if the stop signal sufficed)."""
        self.signal_all(sig)
        self.signal_all(signal.SIGCONT)
        if await self.wait_empty(timeout_s):
            return 0
        killed = self.kill()
        await self.wait_empty(kill_wait_s)
        return killed

    def remove(self) -> bool:
        """rmdir it, if it is empty; True if it is gone."""
        try:
            self.path.rmdir()
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return True

    def cpu_usage_usec(self) -> int | None:
        try:
            data = _read(os.path.join(self.path, "cpu.stat"))
        except OSError:
            return None
        for line in data.splitlines():
            key, _, value = line.partition(b" ")
            if key == b"usage_usec":
                return int(value)
        return None

    def memory_bytes(self) -> int | None:
        """memory.current where the memory controller is enabled here, else None."""
        try:
            return int(_read(os.path.join(self.path, "memory.current")))
        except (OSError, ValueError):
            return None


def _read(path: str) -> bytes:
    """The whole of a small kernel file (cgroupfs, /proc): one open, reads until EOF."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def _write_quietly(path: Path, text: str) -> bool:
    try:
        path.write_text(text)
    except OSError:
        return False
    return True


def _signal_member(pid: int, sig: int, cgroup: Path) -> bool:
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return False  # gone already
    try:
        rel, mount = cgroup_of(pid), _mount()
        if rel is None or mount is None or mount / rel.lstrip("/") != cgroup:
            return False  # the pid names another process now, or it moved (not ours to touch)
        signal.pidfd_send_signal(fd, sig)
    except OSError:  # ESRCH: it exited meanwhile; EPERM: not ours to signal after all
        return False
    finally:
        os.close(fd)
    return True


_ACTIVE: list[Isolation] = []  # the running daemon's, for the classifier (reconcile/evidence)


def active() -> Isolation | None:
    """This daemon's isolation, once `Isolation.setup` succeeded in this process."""
    return _ACTIVE[-1] if _ACTIVE else None


class Isolation:
    """The cgroups of one state dir in a subtree: one per sidecar, one per sidecar's checks."""

    def __init__(self, subtree: Subtree, state_id: str) -> None:
        self.subtree = subtree
        self.state_id = state_id
        self.folder = subtree.base / f"{STATE_PREFIX}{state_id}"

    @classmethod
    def setup(cls, state_path: Path) -> Isolation:
        """Find the subtree and move the daemon into its leaf (delegated). Our folder and the
        sidecars' cgroups are created when first used (a daemon that fails before it spawns
        anything leaves nothing)."""
        subtree = find_subtree()
        isolation = cls(subtree, state_id(state_path))
        try:
            if subtree.how == "delegated":
                leaf = Cgroup(subtree.base / DAEMON_LEAF)
                leaf.ensure()
                leaf.procs_file.write_text("0")
        except OSError as exc:
            raise CgroupUnavailable(f"cannot use {subtree.base}: {exc.strerror or exc}") from None
        _ACTIVE[:] = [isolation]
        return isolation

    def sidecar(self, name: str) -> Cgroup:
        return Cgroup(self.folder / name)

    def check(self, name: str) -> Cgroup:
        return Cgroup(self.folder / f"{CHECK_PREFIX}{name}")

    def existing(self) -> list[tuple[str, Cgroup]]:
        """Every cgroup in our folder, by the sidecar it belongs to (a dead daemon's too)."""
        try:
            names = sorted(os.listdir(self.folder))
        except OSError:
            return []
        found = []
        for entry in names:
            match = _NAME_RE.fullmatch(entry)
            if match is not None and (self.folder / entry).is_dir():
                found.append((match.group(2), Cgroup(self.folder / entry)))
        return found

    def owns(self, pid: int) -> Owner | None:
        """`pid`'s owner if it is in one of this state dir's cgroups."""
        owner = owner_of(pid)
        return owner if owner is not None and owner.state_id == self.state_id else None

    def remove_empty(self) -> None:
        """At a clean stop: rmdir every empty cgroup of ours, our folder, the root parent."""
        for _, cgroup in self.existing():
            cgroup.remove()
        Cgroup(self.folder).remove()
        if self.subtree.how == "root":
            Cgroup(self.subtree.base).remove()  # busy while another daemon uses it: kept
