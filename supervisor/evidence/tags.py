"""The evidence of what is ours (pure): the tags planted in every child's environment (SPEC
5.2) and how a supervisor daemon is recognised by its command line.

`SUPERVISOR_SIDECAR=<name>` says which sidecar a process is; `SUPERVISOR_OWNER=<pid>:<create
time>` names the daemon that spawned it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

SIDECAR_ENV = "SUPERVISOR_SIDECAR"
OWNER_ENV = "SUPERVISOR_OWNER"


@dataclass(frozen=True)
class OwnerTag:
    pid: int
    create_time: float


def format_owner_tag(pid: int, create_time: float) -> str:
    return f"{pid}:{create_time!r}"


def parse_owner_tag(text: str | None) -> OwnerTag | None:
    """`"PID:CREATE_TIME"` -> OwnerTag; anything else (absent, garbage) -> None."""
    if not text:
        return None
    pid_text, sep, time_text = text.strip().partition(":")
    if not sep or not pid_text.isdigit() or not pid_text.isascii():
        return None
    try:
        created = float(time_text)
    except ValueError:
        return None
    pid = int(pid_text)
    if pid <= 0 or not math.isfinite(created) or created < 0:
        return None
    return OwnerTag(pid, created)


def child_env(
    base: Mapping[str, str], extra: Mapping[str, str], *, sidecar: str, owner: str
) -> dict[str, str]:
    """A child's environment: the daemon's, the sidecar's `env` over it, then both tags."""
    return {**base, **extra, SIDECAR_ENV: sidecar, OWNER_ENV: owner}


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
