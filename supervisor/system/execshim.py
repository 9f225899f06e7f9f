"""The exec shim that hands an inherited socket to a child: fd 3, and LISTEN_PID = its own pid.

LISTEN_PID cannot be known before the fork, and subprocess builds the environment before it.
So the child starts as `/bin/sh -c SHIM sh ARGV...` with the socket as its stdin: the shell
moves it to fd 3 (`3<&0`), puts /dev/null back on stdin, exports `LISTEN_PID=$$` and execs
ARGV - same process, same pid. Only fds 0 and 3 are named, because dash (Debian's /bin/sh)
cannot name fds above 9. It costs one exec of sh (~0.6 ms here; see docs/benchmarks.md).

With a cgroup (cgroups.py), the same shim first moves itself into the sidecar's cgroup
(`echo 0 > CGROUP/cgroup.procs`) and only then execs ARGV: the command is a member before its
first instruction, so nothing it forks can start outside. If that write fails, the shim prints
JOIN_FAILED (with the path) on stderr and exits JOIN_FAILED_CODE without running ARGV.

Two things a direct spawn does differently are made up for here: the shell would report a
missing command only as exit 127, so the command is looked up first, as subprocess would; and
dash drops environment variables whose names are not shell identifiers, so those are passed
through `env NAME=VALUE` in front of the command.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

SH = "/bin/sh"
ENV = "/usr/bin/env"
SHIM = 'exec 3<&0 0</dev/null; LISTEN_PID=$$; export LISTEN_PID; exec "$@"'
JOIN_FAILED = "supervisor: cannot enter its cgroup:"
JOIN_FAILED_CODE = 125
JOIN = f'echo 0 >"$1" || {{ echo "{JOIN_FAILED} $1" >&2; exit {JOIN_FAILED_CODE}; }}; shift; '
EXEC = 'exec "$@"'
_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def wrap(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    listen: bool = True,
    cgroup_procs: str | None = None,
) -> list[str]:
    """The shim's argv around `argv` (which the shell then runs exactly, never parsed):
    `listen` moves stdin to fd 3 (the inherited socket); `cgroup_procs` joins that cgroup."""
    passed = [f"{k}={v}" for k, v in env.items() if not _SHELL_NAME.fullmatch(k)]
    head = [ENV, "--", *passed] if passed else []  # "--": a name may start with "-"
    script = SHIM if listen else EXEC
    joined = [] if cgroup_procs is None else [cgroup_procs]
    if cgroup_procs is not None:
        script = JOIN + script
    return [SH, "-c", script, "sh", *joined, *head, *argv]


def lookup_error(argv0: str, cwd: Path | None, env: Mapping[str, str]) -> OSError | None:
    """The error subprocess would raise for executing `argv0`, or None if it can be executed.

    Looked up before the shim runs, so that a bad command is a spawn error with subprocess's
    own message rather than a child exiting 127. A bad `cwd` is left to subprocess (it reports
    that first, before the command).
    """
    if cwd is not None and not os.path.isdir(cwd):
        return None
    if os.path.dirname(argv0):
        candidates = [argv0 if cwd is None else os.path.join(cwd, argv0)]
    else:
        candidates = [os.path.join(d, argv0) for d in os.get_exec_path(dict(env))]
    denied = False
    for path in candidates:
        if os.path.exists(path):
            if os.path.isfile(path) and os.access(path, os.X_OK):
                return None
            denied = True  # execve: EACCES for a directory or a file without x
    if denied:
        return PermissionError(errno.EACCES, os.strerror(errno.EACCES), argv0)
    return FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), argv0)
