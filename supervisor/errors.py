"""Errors a user is meant to read: each carries its fields and an exit code."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_TIMEOUT = 4
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


def command(*args: str | Path) -> str:
    """A command line the user can paste as printed (every argument shell-quoted)."""
    import shlex  # errors are rare: quick commands need not import it

    return shlex.join(["supervisor", *(str(a) for a in args)])


class AlreadyRunningError(SupervisorError):
    """Another daemon holds the state dir lock."""

    exit_code = EXIT_LOCKED

    def __init__(self, state_dir: Path, pid: int | None) -> None:
        self.state_dir = state_dir
        self.pid = pid
        who = f"pid {pid}" if pid is not None else "pid unknown"
        super().__init__(
            f"another supervisor ({who}) is running for {state_dir}; "
            f'see it with "{command("status", "--state-dir", state_dir)}", '
            f'stop it with "{command("stop", "--state-dir", state_dir)}", '
            "or run this one with another --state-dir"
        )


class NotRunningError(SupervisorError):
    """No daemon is running for the state dir."""

    exit_code = EXIT_NOT_RUNNING

    def __init__(
        self, state_dir: Path, config: Path | None = None, *, config_exists: bool = True
    ) -> None:
        self.state_dir = state_dir
        self.config = config
        with_config: list[str | Path] = ["-c", config] if config is not None else []
        run = command("run", *with_config, "--state-dir", state_dir)
        if config is not None and not config_exists:
            fix = (
                f"there is no config at {config} either: write one (config/example.toml "
                f'documents every key), then start it with "{run}"'
            )
        else:
            fix = f'start one with "{run}"'
        super().__init__(f"no supervisor is running for {state_dir}; {fix}")


class SeveralRunningError(SupervisorError):
    """No state dir was given and more than one daemon runs."""

    exit_code = EXIT_USAGE

    def __init__(self, state_dirs: Sequence[Path]) -> None:
        self.state_dirs = tuple(state_dirs)
        listed = ", ".join(str(d) for d in self.state_dirs)
        super().__init__(
            f"{len(self.state_dirs)} supervisors are running ({listed}); "
            f'choose one with --state-dir, e.g. "{command("status", "--state-dir", state_dirs[0])}"'
        )


class UnknownSidecarError(SupervisorError):
    """A name that the running daemon's config does not have."""

    exit_code = EXIT_USAGE

    def __init__(self, names: Sequence[str], known: Sequence[str], state_dir: Path) -> None:
        self.names = tuple(names)
        self.known = tuple(known)
        listed = ", ".join(repr(n) for n in self.names)
        configured = ", ".join(self.known) if self.known else "none"
        super().__init__(
            f"no sidecar named {listed} in the supervisor of {state_dir} (configured: "
            f"{configured}); nothing was done"
        )


class ControlError(SupervisorError):
    """The control socket failed us: no answer, a lost connection, an error reply."""

    exit_code = EXIT_INTERNAL

    def __init__(self, state_dir: Path, what: str, remedy: str = "") -> None:
        self.state_dir = state_dir
        self.what = what
        fix = remedy or (
            "check the daemon's log, or retry; "
            f'"{command("status", "--state-dir", state_dir)}" shows its state'
        )
        super().__init__(f"{what}; {fix}")


class NoAnswerError(ControlError):
    """The daemon did not answer a request in time."""

    def __init__(self, state_dir: Path, pid: int, cmd: str, timeout_s: float) -> None:
        self.pid = pid
        self.timeout_s = timeout_s
        super().__init__(
            state_dir, f"the supervisor (pid {pid}) did not answer {cmd} within {timeout_s:g}s"
        )


class RequestRefusedError(ControlError):
    """The daemon answered a control request with an error (`code`: its error code)."""

    def __init__(self, state_dir: Path, code: str, detail: str) -> None:
        self.code = code
        self.detail = detail
        super().__init__(state_dir, f"the supervisor refused the request ({code}): {detail}")


class LaunchFailedError(SupervisorError):
    """A client's `supervisor run` exited before it served (other than 75: it attaches then)."""

    exit_code = EXIT_INTERNAL

    def __init__(self, state_dir: Path, returncode: int, log_file: Path, last_line: str) -> None:
        self.state_dir = state_dir
        self.returncode = returncode
        self.log_file = log_file
        self.last_line = last_line
        said = f": {last_line}" if last_line else ""
        super().__init__(
            f"supervisor run for {state_dir} exited with {returncode}{said}; see its log {log_file}"
        )


class StillStoppingError(SupervisorError):
    """`stop NAME --wait S`: the sidecars were not stopped in time (they are still stopping)."""

    exit_code = EXIT_INTERNAL

    def __init__(self, names: Sequence[str], waited_s: float) -> None:
        self.names = tuple(names)
        self.waited_s = waited_s
        super().__init__(
            f"{', '.join(self.names)} still stopping after {waited_s:g}s (the daemon goes on: "
            "stop.timeout, then SIGKILL); wait longer or check its log"
        )


class WaitTimeoutError(SupervisorError):
    """`supervisor wait --timeout S`: not everything was ready in time."""

    exit_code = EXIT_TIMEOUT

    def __init__(self, waited_s: float, pending: Mapping[str, str], state_dir: Path) -> None:
        self.waited_s = waited_s
        self.pending = dict(pending)
        listed = ", ".join(f"{name} ({state})" for name, state in self.pending.items())
        what = (
            f"not ready after {waited_s:g}s: {listed}"
            if listed
            else (f"no answer from the supervisor within {waited_s:g}s")
        )
        super().__init__(
            f"{what}; wait longer, or see why with "
            f'"{command("status", "--state-dir", state_dir, *self.pending)}"'
        )


class SidecarDownError(SupervisorError):
    """`supervisor wait`: a sidecar ended up `failed` or `exited`; it will not become ready."""

    exit_code = EXIT_INTERNAL

    def __init__(self, name: str, state: str, reason: str | None, state_dir: Path) -> None:
        self.name = name
        self.state = state
        self.reason = reason
        why = f": {reason}" if reason else ""
        super().__init__(
            f"sidecar {name!r} is {state}{why}; fix it, then "
            f'"{command("restart", "--state-dir", state_dir, name)}"'
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


class NoTerminalError(SupervisorError):
    """A command that draws on the terminal (`top`) run without one."""

    exit_code = EXIT_USAGE

    def __init__(self, command: str, instead: str) -> None:
        self.command = command
        self.instead = instead
        super().__init__(f"{command} needs a terminal; {instead}")


class IsolationError(SupervisorError):
    """`isolation = "cgroup"`, and no cgroup v2 subtree can be used here."""

    exit_code = EXIT_USAGE

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f'isolation = "cgroup": no cgroup can be used here: {reason}')
