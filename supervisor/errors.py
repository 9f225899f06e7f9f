"""Errors a user is meant to read: each carries its fields and an exit code."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_PORT_HELD = 10
EXIT_LOCKED = 75


class SupervisorError(Exception):
    """Base of every error whose message is meant for the user: `what happened; what to do`."""

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(SupervisorError):
    """The config file is missing, unreadable, not TOML, or has invalid values.

    `remedy` replaces the default advice (run check-config, which shows every problem).
    """

    exit_code = EXIT_USAGE

    def __init__(
        self, path: Path | None, problems: Sequence[str], remedy: str | None = None
    ) -> None:
        self.path = path
        self.problems = tuple(problems)
        self.remedy = remedy
        where = f"config {path}" if path is not None else "config"
        first = self.problems[0] if self.problems else "invalid"
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(f"{where}: {first}{more}; {remedy or self._check_hint()}")

    def _check_hint(self) -> str:
        if self.path is None:
            return "fix the file and retry"
        check = f'"supervisor check-config -c {shlex.quote(str(self.path))}"'
        if len(self.problems) > 1:
            return f"see every problem with {check}"
        return f"fix it, then check it with {check}"

    def lines(self) -> list[str]:
        """One line per problem, each naming the file (check-config prints them all)."""
        where = f"config {self.path}" if self.path is not None else "config"
        lines = [f"{where}: {problem}" for problem in self.problems]
        if lines and self.remedy:
            lines[-1] += f"; {self.remedy}"
        return lines


class StateDirError(SupervisorError):
    """The state dir cannot be created, is not a directory, or is not usable."""

    exit_code = EXIT_USAGE

    def __init__(
        self, path: Path, reason: str, remedy: str = "fix its permissions or pass --state-dir"
    ) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"state dir {path} is unusable: {reason}; {remedy}")


class AlreadyRunningError(SupervisorError):
    """Another daemon holds the state dir lock."""

    exit_code = EXIT_LOCKED

    def __init__(self, state_dir: Path, pid: int | None) -> None:
        self.state_dir = state_dir
        self.pid = pid
        who = f"pid {pid}" if pid is not None else "pid unknown"
        super().__init__(
            f"another supervisor ({who}) is running for {state_dir}; "
            'stop it with "supervisor stop" or use --state-dir'
        )


class NotRunningError(SupervisorError):
    """No daemon is running for the state dir."""

    exit_code = EXIT_NOT_RUNNING

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        super().__init__(
            f'no supervisor is running for {state_dir}; start one with "supervisor run"'
        )


class UnsupportedPlatformError(SupervisorError):
    exit_code = EXIT_USAGE

    def __init__(self, platform: str) -> None:
        self.platform = platform
        super().__init__(f"the supervisor daemon does not run on {platform}; use Linux or macOS")


class ForeignProcError(SupervisorError):
    """/proc belongs to another pid namespace: every pid read there names a stranger."""

    exit_code = EXIT_USAGE

    def __init__(self, pid: int, proc_self: str) -> None:
        self.pid = pid
        self.proc_self = proc_self
        super().__init__(
            f"/proc belongs to another pid namespace (this process is pid {pid}, /proc/self "
            f"says {proc_self}), so every pid read there would name a stranger; mount a /proc "
            "of this namespace (e.g. unshare --pid --fork --mount-proc)"
        )


class StillRunningError(SupervisorError):
    """`stop --wait S`: the daemon did not exit in time."""

    exit_code = EXIT_INTERNAL

    def __init__(self, pid: int, waited_s: float) -> None:
        self.pid = pid
        self.waited_s = waited_s
        super().__init__(
            f"the supervisor (pid {pid}) is still running after {waited_s:g}s; "
            "wait longer or check its log"
        )


class PathError(SupervisorError):
    """A path given on the command line or in the environment cannot be used."""

    exit_code = EXIT_USAGE

    def __init__(self, source: str, value: str, reason: str) -> None:
        self.source = source
        self.value = value
        self.reason = reason
        super().__init__(f"{source} {value!r} cannot be used: {reason}; give an absolute path")
