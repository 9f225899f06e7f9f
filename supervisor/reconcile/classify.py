"""Pure verdict on a port holder (SPEC 5.2): foreign, orphan or live, from gathered evidence."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import assert_never


class Verdict(StrEnum):
    FOREIGN = "foreign"  # not ours: never signalled
    ORPHAN = "orphan"  # a leftover of ours: killed silently
    LIVE = "live"  # ours and in use: killed only with consent


class OwnerState(StrEnum):
    NONE = "none"  # no owner tag readable
    SELF = "self"  # the tag names this very daemon
    GONE = "gone"  # the named owner no longer exists (or its pid was recycled)
    ALIVE = "alive"  # the named owner runs


_PYTHON_OPTS_WITH_VALUE = frozenset({"-X", "-W", "-Q"})
_DAEMON_MODULES = frozenset({"supervisor", "supervisor.cli"})


def _basename(path: str) -> str:
    return path.rstrip("/").rpartition("/")[2]


def _is_python(path: str) -> bool:
    name = _basename(path)
    return name.startswith("python") or name in {"pypy", "pypy3"}


def is_supervisor_daemon(cmdline: Sequence[str]) -> bool:
    """`supervisor run ...`, `python [opts] -m supervisor run ...` or `python .../supervisor run`.

    The last form is how the kernel shows a console script started through its shebang.
    """
    if not cmdline:
        return False
    if _basename(cmdline[0]) == "supervisor":
        return len(cmdline) > 1 and cmdline[1] == "run"
    if not _is_python(cmdline[0]):
        return False
    rest = list(cmdline[1:])
    while rest:
        word = rest.pop(0)
        if word == "-c":
            return False
        if word == "-m":
            return bool(rest) and rest[0] in _DAEMON_MODULES and rest[1:2] == ["run"]
        if word.startswith("-m"):
            return word[2:] in _DAEMON_MODULES and rest[:1] == ["run"]
        if word in _PYTHON_OPTS_WITH_VALUE:
            if rest:
                rest.pop(0)
            continue
        if word.startswith("-") and word != "-":
            continue
        # The first non-option word is the script: a console script named `supervisor`.
        return _basename(word) == "supervisor" and rest[:1] == ["run"]
    return False


@dataclass(frozen=True)
class Evidence:
    pid: int | None
    uid: int | None
    command: str
    ppid: int | None
    sidecar_tag: str | None  # SUPERVISOR_SIDECAR from the holder's env; None if unreadable/absent
    owner_state: OwnerState  # resolved by the I/O shell from SUPERVISOR_OWNER
    supervisor_ancestor: bool  # a running supervisor daemon among the holder's ancestors
    pidfile_match: bool = False  # annotation only: never changes the verdict


@dataclass(frozen=True)
class Classification:
    verdict: Verdict
    reason: str


def classify(evidence: Evidence, *, name: str, marker: str, our_uid: int) -> Classification:
    """SPEC 5.2. An empty `marker` matches nothing (it would otherwise match every command)."""
    if evidence.uid is not None and evidence.uid != our_uid:
        return Classification(
            Verdict.FOREIGN, f"it belongs to another user (uid {evidence.uid}, we are {our_uid})"
        )
    if evidence.pid is None or evidence.uid is None:
        return Classification(Verdict.FOREIGN, "the process holding it could not be identified")
    marked = bool(marker) and marker in evidence.command
    tagged = bool(name) and evidence.sidecar_tag == name
    if not marked and not tagged:
        command_part = (
            f"its command lacks the marker {marker!r}" if marker else "no marker was given"
        )
        env_part = (
            f"its environment lacks SUPERVISOR_SIDECAR={name}"
            if name
            else "it carries no SUPERVISOR_SIDECAR tag"
        )
        return Classification(Verdict.FOREIGN, f"{command_part} and {env_part}")
    match evidence.owner_state:
        case OwnerState.SELF:
            return Classification(Verdict.ORPHAN, "it was started by this very daemon earlier")
        case OwnerState.GONE:
            return Classification(Verdict.ORPHAN, "the supervisor that started it is gone")
        case OwnerState.ALIVE:
            return Classification(Verdict.LIVE, "the supervisor that started it still runs")
        case OwnerState.NONE:
            pass
        case _:
            assert_never(evidence.owner_state)
    if evidence.supervisor_ancestor:
        return Classification(Verdict.LIVE, "a running supervisor daemon is among its ancestors")
    if evidence.ppid == 1:
        return Classification(Verdict.ORPHAN, "no owner tag, and its parent is gone (ppid 1)")
    return Classification(
        Verdict.LIVE, f"no owner tag, and it has a living parent (ppid {evidence.ppid})"
    )
