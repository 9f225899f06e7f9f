"""The one rule for signalling a process group, stated once and used everywhere.

A group is signalled only
  (a) through a pidfd of its leader with PIDFD_SIGNAL_PROCESS_GROUP (Linux >= 6.9): the pidfd
      pins the leader's struct pid, so it names that very group even after the leader was
      reaped and its number recycled; or
  (b) with killpg while the leader is known not to have been reaped: our own child before we
      reap it (an unreaped zombie keeps its pid, and so the group id, allocated).
Anything else (a holder that is not our child, on an older kernel or on macOS) must not be
signalled as a group: `GroupUnsafe` tells the caller to signal its members one by one.

A stop signal (anything but SIGKILL, SIGCONT, SIGSTOP and 0) is preceded by SIGCONT: a
SIGSTOPped member would otherwise hold its SIGTERM pending until the SIGKILL escalation.

The incident this prevents: a command's group SIGKILLed *after* the command was reaped, when a
stranger had taken the freed pid and called setsid() (`wait4(301) = 301`, then
`kill(-301, SIGKILL) = 0`).
"""

from __future__ import annotations

import errno
import functools
import os
import signal
import sys

PIDFD_SIGNAL_PROCESS_GROUP = 4  # linux/pidfd.h, since Linux 6.9


class GroupUnsafe(Exception):
    """The group cannot be signalled safely here; signal its members one by one."""


@functools.cache
def pidfd_groups_supported() -> bool:
    """Does this kernel take PIDFD_SIGNAL_PROCESS_GROUP? (EINVAL means it does not know it.)"""
    if sys.platform != "linux" or not hasattr(os, "pidfd_open"):
        return False
    try:
        fd = os.pidfd_open(os.getpid())
    except OSError:
        return False
    try:
        # Signal 0 checks without sending; our own pid leads no group, so ESRCH is the answer
        # of a kernel that understood the flag.
        signal.pidfd_send_signal(fd, 0, None, PIDFD_SIGNAL_PROCESS_GROUP)
    except OSError as exc:
        return exc.errno != errno.EINVAL
    finally:
        os.close(fd)
    return True


_NO_CONTINUE = frozenset({0, signal.SIGKILL, signal.SIGCONT, signal.SIGSTOP})


def sequence(sig: int) -> tuple[int, ...]:
    """The signals to send for `sig`, in order: SIGCONT first for a stop signal."""
    return (sig,) if sig in _NO_CONTINUE else (signal.SIGCONT, sig)


def signal_group(pgid: int, sig: int, *, pidfd: int | None, leader_unreaped: bool) -> bool:
    """`sig` to the group by the rule below, SIGCONT first for a stop signal (`sequence`)."""
    sent = False
    for each in sequence(sig):
        sent = _signal_group(pgid, each, pidfd=pidfd, leader_unreaped=leader_unreaped)
        if not sent:
            return False
    return sent


def _signal_group(pgid: int, sig: int, *, pidfd: int | None, leader_unreaped: bool) -> bool:
    """Send `sig` to the process group `pgid` by the rule above; False if the group is empty.

    `pidfd` is a pidfd of the leader (pid == pgid), or None; `leader_unreaped` is true only
    for our own child that we have not reaped yet. Raises GroupUnsafe when neither holds.
    """
    if pidfd is not None and pidfd_groups_supported():
        try:
            signal.pidfd_send_signal(pidfd, sig, None, PIDFD_SIGNAL_PROCESS_GROUP)
        except ProcessLookupError:
            return False
        except PermissionError:
            return False
        return True
    if not leader_unreaped:
        raise GroupUnsafe(f"group {pgid}: its leader may have been reaped")
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True
