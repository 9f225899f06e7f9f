"""Consent to kill a live instance of a sidecar (SPEC 5.4): ask the terminal, a command, or deny.

An unproven holder (it matches the marker only; classify.py) is asked about too, with that
reason shown; under `consent = "auto"` only a terminal is asked about it, never the consent
command: a command written to approve killing live instances of our own sidecars must not
silently kill a copy the user started by hand. `consent = "command"` says the command judges
every holder: it gets SUPERVISOR_HOLDER_VERDICT (live or unproven) to tell them apart.

`ask` never raises (cancellation aside): a provider that is missing, crashes, errs or exceeds
`consent_timeout` is a No, with the reason in `ConsentResult.detail`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import termios
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import assert_never

import anyio

from supervisor.config import ConsentMode, ReclaimConfig
from supervisor.core import show
from supervisor.system import children, logs

_ANSWER_LIMIT = 256
_COMMAND_LIMIT = 512


@dataclass(frozen=True)
class ConsentRequest:
    """Who holds the port: what the person (or the consent command) is asked about."""

    sidecar: str
    port: int
    pid: int
    user: str | None
    command: str
    started_at: float | None  # the holder's create time, epoch seconds
    unproven: bool = False  # it matches the marker only: maybe a copy started by hand


class Provider(StrEnum):
    TTY = "tty"
    COMMAND = "command"
    DENY = "deny"


@dataclass(frozen=True)
class ConsentResult:
    granted: bool
    provider: Provider
    detail: str


def choose_provider(
    reclaim: ReclaimConfig, *, stdin_is_tty: bool, unproven: bool = False
) -> Provider:
    """The provider `reclaim.consent` selects; "auto": tty, else the command (never for an
    unproven holder), else deny."""
    match reclaim.consent:
        case ConsentMode.TTY:
            return Provider.TTY
        case ConsentMode.COMMAND:
            return Provider.COMMAND
        case ConsentMode.DENY:
            return Provider.DENY
        case ConsentMode.AUTO:
            if stdin_is_tty:
                return Provider.TTY
            if unproven:
                return Provider.DENY
            return Provider.COMMAND if reclaim.consent_command else Provider.DENY
        case _:
            assert_never(reclaim.consent)


async def ask(
    reclaim: ReclaimConfig,
    request: ConsentRequest,
    *,
    stdin_is_tty: bool | None = None,
    provider: Provider | None = None,
) -> ConsentResult:
    """Ask whether the live holder in `request` may be killed; bounded by consent_timeout.
    `provider`: the one the caller chose (and logged) with `choose_provider`."""
    if stdin_is_tty is None:
        stdin_is_tty = _isatty(0)
    if provider is None:
        provider = choose_provider(reclaim, stdin_is_tty=stdin_is_tty, unproven=request.unproven)
    match provider:
        case Provider.DENY:
            if reclaim.consent is ConsentMode.DENY:
                return ConsentResult(False, provider, 'consent = "deny"')
            if request.unproven:
                return ConsentResult(
                    False,
                    provider,
                    "no terminal to ask about a holder that matches the marker only",
                )
            return ConsentResult(False, provider, "no terminal and no consent_command")
        case Provider.TTY:
            if not stdin_is_tty:
                return ConsentResult(False, provider, "stdin is not a terminal; cannot ask")
        case Provider.COMMAND:
            if not reclaim.consent_command:
                return ConsentResult(False, provider, "no consent_command configured")
        case _:
            assert_never(provider)

    timeout_s = reclaim.consent_timeout_s
    detail = f"timed out after {timeout_s:g}s"
    granted = False
    with anyio.move_on_after(timeout_s):
        # A consent provider must never break the launch path: whatever goes wrong is a No.
        try:
            if provider is Provider.TTY:
                # Log lines wait until the question is answered: nothing is written after the
                # prompt on its line, nothing scrolls it away.
                with logs.hold_console():
                    granted, detail = await _ask_tty(request)
            else:
                granted, detail = await _ask_command(reclaim.consent_command, request)
        except Exception as exc:
            granted, detail = False, f"{provider} provider failed: {_describe_error(exc)}"
    return ConsentResult(granted, provider, detail)


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"


# --- command ---------------------------------------------------------------------------------


def _command_env(request: ConsentRequest) -> dict[str, str]:
    return {
        **os.environ,
        "SUPERVISOR_SIDECAR": request.sidecar,
        "SUPERVISOR_PORT": str(request.port),
        "SUPERVISOR_HOLDER_PID": str(request.pid),
        "SUPERVISOR_HOLDER_COMMAND": request.command,
        "SUPERVISOR_HOLDER_USER": request.user or "",
        "SUPERVISOR_HOLDER_VERDICT": "unproven" if request.unproven else "live",
    }


async def _ask_command(argv: Sequence[str], request: ConsentRequest) -> tuple[bool, str]:
    try:
        # Our own child (not anyio's): we decide when it is reaped, so that its group can be
        # killed while its leader is still ours (groups.py's rule).
        child = children.spawn(argv, cwd=None, env=_command_env(request), capture_output=False)
    except children.SpawnError as exc:
        return False, _spawn_failure(argv[0], exc)
    try:
        await child.wait_exit()
    finally:
        # On timeout or cancellation as on a normal exit: nothing the command started may
        # outlive it (a dialog helper it forked, a `sleep &`). SIGKILL its group, then reap.
        with anyio.CancelScope(shield=True):
            if child.exited:
                child.finish()
            else:
                await child.stop(signal.SIGKILL, 0.0)
            child.close()
    status = child.status
    code = status.code if status is not None else None
    if code == 0:
        return True, "command exited 0"
    if status is not None and status.signal is not None:
        return False, f"command killed by {show.signal_name(status.signal)}"
    return False, f"command exited {code}"


def _spawn_failure(argv0: str, exc: children.SpawnError) -> str:
    if exc.reason.startswith("command not found"):
        return f"command not found: {argv0}"
    if exc.reason.startswith("permission denied"):
        return f"command not executable: {argv0}"
    return f"command could not start: {argv0}: {exc.reason}"


# --- tty -------------------------------------------------------------------------------------


def _prompt(request: ConsentRequest) -> bytes:
    user = show.printable(request.user or "unknown", 64)
    started = show.local_time(request.started_at)
    sidecar = show.printable(request.sidecar, 64)
    held_by = (
        "a process that matches the marker only (not proven ours; maybe started by hand)"
        if request.unproven
        else "another running instance"
    )
    text = (
        f"\nsupervisor: port {request.port} (sidecar {sidecar}) is held by {held_by}:\n"
        f"  pid {request.pid}, user {user}, started {started}\n"
        f"  command: {show.printable(request.command, _COMMAND_LIMIT)}\n"
        # The question itself repeats whom it is about: it is the line left in view.
        f"Kill pid {request.pid} and start a new {sidecar}? [y/N] "
    )
    return text.encode("utf-8", "replace")


def _open_terminal() -> tuple[int, bool]:
    """A read-write fd on the terminal: stdin itself when it allows writing, else /dev/tty."""
    if _isatty(0) and fcntl.fcntl(0, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDWR:
        return 0, False
    return os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY), True


def _in_background(fd: int) -> bool:
    try:
        foreground = os.tcgetpgrp(fd)
    except OSError:  # not our controlling terminal: no job control applies
        return False
    return foreground != os.getpgrp()


async def _ask_tty(request: ConsentRequest) -> tuple[bool, str]:
    try:
        fd, owned = _open_terminal()
    except OSError as exc:
        return False, f"no terminal to ask on: {_describe_error(exc)}"
    if _in_background(fd):
        # Reading would stop the whole daemon with SIGTTIN (`supervisor run &` in a shell).
        if owned:
            os.close(fd)
        return False, "the terminal belongs to another foreground job; cannot ask"
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    answered = False
    try:
        # Non-blocking so that neither the prompt nor the answer can stall the event loop.
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        # Keys pressed before the question was shown are not an answer to it.
        termios.tcflush(fd, termios.TCIFLUSH)
        await _write_all(fd, _prompt(request))
        line = await _read_line(fd)
        answered = True
    finally:
        if not answered:  # end the unanswered prompt's line; best effort, never blocks
            with contextlib.suppress(OSError):
                os.write(fd, b"\n")
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, fcntl.F_SETFL, flags)
        if owned:
            os.close(fd)
    if line is None:
        return False, "no answer (end of input)"
    answer = line.strip().lower()
    if answer in ("y", "yes"):
        return True, "answered yes"
    if not answer:
        return False, "answered no (default)"
    if answer in ("n", "no"):
        return False, "answered no"
    return False, f"answered no ({show.printable(answer, 32)} is not yes)"


async def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            await anyio.wait_writable(fd)
            continue
        view = view[written:]


async def _read_line(fd: int) -> str | None:
    """One line from the terminal (None at end of input); longer input is cut at a bound."""
    buffer = b""
    while b"\n" not in buffer and len(buffer) < _ANSWER_LIMIT:
        await anyio.wait_readable(fd)
        try:
            chunk = os.read(fd, _ANSWER_LIMIT)
        except BlockingIOError:
            continue  # someone else sharing the terminal took the input first
        if not chunk:
            return buffer.decode("utf-8", "replace") if buffer else None
        buffer += chunk
    return buffer.split(b"\n", 1)[0].decode("utf-8", "replace")
