"""One bounded check command (a health or readiness `exec`): run it in a session of its own,
judge its exit, and leave nothing of its group behind."""

from __future__ import annotations

import signal
from collections.abc import Mapping, Sequence
from pathlib import Path

import anyio

from supervisor.core import show
from supervisor.sidecar import output
from supervisor.system import children
from supervisor.system.cgroups import Cgroup

KILL_WAIT_S = 2.0  # after SIGKILL to a check's group: how long its members may take to vanish
OUTPUT_DRAIN_S = 0.2  # a check's last words, after it exited
REASON_CAP = 200  # characters of a check's output quoted in a failure reason


async def run_exec(
    argv: Sequence[str],
    *,
    cwd: Path | None,
    env: Mapping[str, str],
    timeout_s: float,
    cgroup: Cgroup | None = None,
) -> str | None:
    """Run `argv` (no shell) in a session of its own: None on exit 0 within `timeout_s`.

    Whatever happens (timeout, cancellation), no process of its group survives this call; with
    `cgroup`, nothing of that cgroup (it is emptied before the check, and killed after).
    """
    try:
        if cgroup is not None:
            cgroup.ensure()
            if cgroup.kill():
                await cgroup.wait_empty(KILL_WAIT_S)
        child = children.spawn(argv, cwd=cwd, env=env, cgroup=cgroup)
    except OSError as exc:
        return f"cannot use the check's cgroup: {exc.strerror or exc}"
    except children.SpawnError as exc:
        return str(exc)
    said: list[str] = []

    def keep_last(_stream: str, line: str, _truncated: bool) -> None:
        if line.strip():
            said[:] = [line.strip()]

    pipes = [
        (stream.fileno(), name)
        for stream, name in ((child.popen.stdout, "stdout"), (child.popen.stderr, "stderr"))
        if stream is not None
    ]
    try:
        async with anyio.create_task_group() as tg:
            drained = output.forward_all(pipes, keep_last, tg)
            with anyio.move_on_after(timeout_s) as scope:
                await child.wait_exit()
            if scope.cancelled_caught:
                with anyio.CancelScope(shield=True):
                    await child.stop(signal.SIGKILL, KILL_WAIT_S)
                result: str | None = (
                    f"no result within {timeout_s:g}s; killed it and its process group"
                )
            else:
                status = child.finish()  # SIGKILL to what is left of its group, then reap
                if status.code == 0:
                    result = None
                elif status.signal is not None:
                    result = f"killed by {show.signal_name(status.signal)}"
                else:
                    result = f"exited with code {status.code}"
            with anyio.move_on_after(OUTPUT_DRAIN_S):
                await drained.wait()
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            if child.status is None:  # cancelled mid-check: the sidecar is being stopped
                await child.stop(signal.SIGKILL, KILL_WAIT_S)
            if cgroup is not None and cgroup.kill():  # the check's strays, whatever they did
                await cgroup.wait_empty(KILL_WAIT_S)
            child.close()
    if result is not None and said:
        result += f": {show.printable(said[0], REASON_CAP)}"
    return result
