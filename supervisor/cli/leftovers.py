"""What a daemon that did not exit cleanly left running, for `supervisor status` to report.

When no daemon runs for a state dir, a `<name>/sidecar.pid` that is still there names a sidecar
its daemon never stopped (the daemon was SIGKILLed, or crashed). A PID file alone proves
nothing: each one counts only while its pid runs with the recorded create time, and while the
daemon it records is gone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from supervisor.core import show
from supervisor.errors import EXIT_NOT_RUNNING, StateDirError, SupervisorError
from supervisor.system import proctime
from supervisor.system.statedir import (
    PID_NAME,
    SIDECAR_PID_NAME,
    StateDir,
    float_field,
    int_field,
)


@dataclass(frozen=True)
class Leftover:
    """A sidecar that still runs although the daemon that started it is gone."""

    name: str
    pid: int
    port: int | None
    holds_port: bool  # the pid (or one of its descendants) listens on `port`
    reclaimable: bool  # the next `supervisor run` on this state dir stops it by default


def find(state_dir: Path) -> list[Leftover]:
    """The leftovers in `state_dir` (none if it does not exist or cannot be read)."""
    try:
        with StateDir.open(state_dir, create=False) as state:
            return _find(state)
    except (OSError, StateDirError):
        return []


def _find(state: StateDir) -> list[Leftover]:
    daemon = state.read(PID_NAME)
    previous_pid = int_field(daemon, "pid")
    previous_created = float_field(daemon, "create_time")
    found = []
    for name in state.subdir_names():
        record = None
        with contextlib.suppress(OSError), state.subdir(name, create=False) as folder:
            record = folder.read(SIDECAR_PID_NAME)
        pid = int_field(record, "pid")
        created = float_field(record, "create_time")
        if pid is None or created is None or not proctime.is_alive(pid, created):
            continue
        owner_pid = int_field(record, "supervisor_pid")
        owner_created = float_field(record, "supervisor_create_time")
        if (
            owner_pid is not None
            and owner_created is not None
            and proctime.is_alive(owner_pid, owner_created)
        ):
            continue  # its daemon still runs: not a leftover
        port = int_field(record, "port")
        holds = port is not None and _holds(pid, port)
        # The preflight reclaims an orphan on its port; the sweep after an unclean exit stops
        # the rest, but only those of the daemon the stale supervisor.pid names.
        named = (
            owner_pid is not None
            and owner_pid == previous_pid
            and owner_created is not None
            and previous_created is not None
            and proctime.same_create_time(owner_created, previous_created)
        )
        found.append(Leftover(name, pid, port, holds, reclaimable=holds or named))
    return found


def _holds(pid: int, port: int) -> bool:
    from supervisor.system import (
        net,  # only on this path: `status` of a running daemon is fast
        procs,
    )

    return bool(net.pids_listening(port, [pid, *procs.descendant_pids(pid)]))


class LeftoversError(SupervisorError):
    """No daemon runs for the state dir, but sidecars it started still do."""

    exit_code = EXIT_NOT_RUNNING

    def __init__(self, state_dir: Path, leftovers: Sequence[Leftover]) -> None:
        self.state_dir = state_dir
        self.leftovers = tuple(leftovers)
        super().__init__(describe(state_dir, leftovers))


def _what(item: Leftover) -> str:
    name = show.printable(item.name)  # a folder name: whatever someone put in the state dir
    if item.holds_port:
        return f'"{name}" (pid {item.pid}) still holds port {item.port}'
    return f'"{name}" (pid {item.pid}) still runs'


def describe(state_dir: Path, leftovers: Sequence[Leftover]) -> str:
    """One line: what is left, and what `supervisor run` will do about it."""
    head = f"no supervisor is running for {state_dir} (the last one did not exit cleanly)"
    if len(leftovers) == 1:
        (item,) = leftovers
        what = f"its sidecar {_what(item)}"
        it = "it"
    else:
        what = f"{len(leftovers)} of its sidecars still run: " + ", ".join(
            _what(item) for item in leftovers
        )
        it = "them"
    if all(item.reclaimable for item in leftovers):
        remedy = f'"supervisor run" for this state dir will reclaim {it}'
    else:
        manual = " ".join(str(item.pid) for item in leftovers if not item.reclaimable)
        remedy = (
            '"supervisor run" for this state dir reclaims the port holders, '
            f"but stop the others yourself (kill {manual})"
        )
    return f"{head}, but {what}; {remedy}"
