"""Daemons on their way: `supervisor run` processes that have not locked and registered yet.

A command that finds no daemon waits for one of these (bounded) rather than answer "not
running" (`supervisor run ... & supervisor wait web`). Linux only (a scan of /proc, made only
when no daemon was found); psutil-free, like every command's path.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence

from supervisor.evidence import tags
from supervisor.system import paths, proctime

START_GRACE_S = 10.0  # a `supervisor run` this young that is not registered yet is starting

# What decides where a daemon registers (paths.runtime_dir): a starting daemon with other values
# registers elsewhere, and is not waited for.
_REGISTRY_ENV = (paths.RUNTIME_DIR_ENV, "XDG_RUNTIME_DIR", "TMPDIR")


def starting_daemons() -> list[int]:
    """`supervisor run` processes of our uid and of this registry, younger than START_GRACE_S,
    that the registry does not list yet: daemons on their way to lock and register (Linux; a
    scan of /proc, made only when no daemon was found)."""
    if sys.platform != "linux":
        return []
    from supervisor.control import registry

    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    listed = {entry.pid for entry in registry.entries()}
    ours = {key: os.environ.get(key) for key in _REGISTRY_ENV}
    now = time.time()
    found = []
    for name in names:
        if not name.isdigit() or int(name) in listed or int(name) == os.getpid():
            continue
        pid = int(name)
        created = proctime.create_time(pid)
        if created is None or now - created > START_GRACE_S or not is_supervisor_run(pid):
            continue
        if _environ_of(pid, _REGISTRY_ENV) == ours:
            found.append(pid)
    return found


def _environ_of(pid: int, keys: Sequence[str]) -> dict[str, str | None] | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            data = environ.read(1 << 20)
    except OSError:
        return None
    values: dict[str, str | None] = dict.fromkeys(keys)
    for item in data.split(b"\0"):
        key, _, value = item.partition(b"=")
        text = key.decode(errors="replace")
        if text in values:
            values[text] = value.decode(errors="replace")
    return values


def is_supervisor_run(pid: int) -> bool:
    """`pid` runs `supervisor run` (tags.is_supervisor_daemon) as our uid."""
    if proctime.owner_uid(pid) != os.getuid():
        return False
    argv = proctime.cmdline(pid)
    return argv is not None and tags.is_supervisor_daemon(argv)
