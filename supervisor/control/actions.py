"""What the control socket's requests do to the daemon's sidecars: status, start, stop, restart.

Actions run one at a time, under the lock the daemon's own reload and restart-all take, so a
sidecar is never launched twice or launched after a reload removed it. Names are checked under
that lock before anything is done: one unknown name and nothing changes. Once the daemon shuts
down, nothing is launched any more.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import anyio

from supervisor.control import protocol
from supervisor.control.events import status_of
from supervisor.control.protocol import Command, ErrorCode, ProtocolError
from supervisor.core.lifecycle import State

if TYPE_CHECKING:
    from supervisor.sidecar.loop import Sidecar

RUNNING = frozenset({State.STARTING, State.READY})


class SidecarActions:
    def __init__(
        self,
        *,
        sidecars: Callable[[], Mapping[str, Sidecar]],
        document: Callable[[], dict[str, object]],
        launch: Callable[[Sidecar], Awaitable[None]],
        lock: anyio.Lock,
        stopping: Callable[[], bool],
        needs: Callable[[str], Sequence[str]] = lambda _name: (),
    ) -> None:
        self._sidecars = sidecars
        self._document = document
        self._launch = launch  # an interactive launch in the daemon's task group
        self._lock = lock
        self._stopping = stopping
        self._needs = needs  # what a sidecar depends on, directly or not, in start order

    def status(self, names: Sequence[str]) -> dict[str, object]:
        self._check(names)
        doc = status_of(self._document(), frozenset(names) if names else None)
        daemon = doc.get("supervisor")
        if isinstance(daemon, dict):
            doc["supervisor"] = {**daemon, "shutting_down": self._stopping()}
        return doc

    async def act(self, cmd: Command, names: Sequence[str]) -> list[dict[str, object]]:
        async with self._lock:
            self._check(names)
            if cmd is not Command.STOP:
                self._refuse_if_stopping()
            targets = [self._sidecars()[name] for name in names]
            before = {s.name: s.state for s in targets}
            match cmd:
                case Command.STOP:
                    running = [s for s in targets if _stoppable(s)]
                    await _in_parallel(running)
                    return [
                        _result(s, before[s.name], "stopped" if s in running else "unchanged")
                        for s in targets
                    ]
                case Command.RESTART:
                    await _in_parallel([s for s in targets if _stoppable(s)])
                    for sidecar in targets:
                        await self._launch_again(sidecar)
                    return [_result(s, before[s.name], "restarted") for s in targets]
                case Command.START:
                    # `start api` also starts what api needs and is not running (a completed
                    # task is done: it is not run again). `restart` never touches dependencies
                    # nor dependents.
                    needed = self._needed(targets)
                    before.update({s.name: s.state for s in needed})
                    idle = [s for s in targets if not (s.active and s.state in RUNNING)]
                    for sidecar in needed:
                        await self._launch_again(sidecar)
                    # In backoff or waiting: the user asks for a launch now, an interactive one.
                    await _in_parallel([s for s in idle if s.active])
                    for sidecar in idle:
                        await self._launch_again(sidecar)
                    return [
                        _result(s, before[s.name], "started" if s in idle else "unchanged")
                        for s in targets
                    ] + [_result(s, before[s.name], "started as a dependency") for s in needed]
                case Command.STATUS | Command.SUBSCRIBE:
                    raise ValueError(f"{cmd} is not an action")

    def _needed(self, targets: Sequence[Sidecar]) -> list[Sidecar]:
        """The dependencies of `targets` that nothing supervises now, in start order."""
        sidecars = self._sidecars()
        wanted = {s.name for s in targets}
        needed: list[Sidecar] = []
        for target in targets:
            for name in self._needs(target.name):
                dep = sidecars.get(name)
                if dep is None or name in wanted or dep in needed:
                    continue
                if not dep.active and dep.state is not State.COMPLETED:
                    needed.append(dep)
        return needed

    def _check(self, names: Sequence[str]) -> None:
        error = protocol.unknown_names(names, list(self._sidecars()))
        if error is not None:
            raise error

    def _refuse_if_stopping(self) -> None:
        if self._stopping():
            raise ProtocolError(
                ErrorCode.SHUTTING_DOWN, "the daemon is shutting down; nothing is launched any more"
            )

    async def _launch_again(self, sidecar: Sidecar) -> None:
        # A SIGTERM may have arrived while we waited for a stop: shutdown wins.
        self._refuse_if_stopping()
        if sidecar.active:  # not ours to launch: something else did it meanwhile
            return
        sidecar.reset_attempts()
        await self._launch(sidecar)


def _stoppable(sidecar: Sidecar) -> bool:
    return sidecar.active or sidecar.state is not State.STOPPED


async def _in_parallel(sidecars: Sequence[Sidecar]) -> None:
    async with anyio.create_task_group() as tg:
        for sidecar in sidecars:
            tg.start_soon(sidecar.stop)


def _result(sidecar: Sidecar, was: State, action: str) -> dict[str, object]:
    record = sidecar.record()
    return {
        "name": sidecar.name,
        "action": action,
        "was": was.value,
        "state": record.state.value,
        "pid": record.pid,
    }
