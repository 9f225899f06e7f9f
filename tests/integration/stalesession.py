"""The stale-session stranger: run as pid 1 of a fresh pid namespace with a tiny pid_max.

`python -m tests.integration.stalesession ROUNDS STATE_DIR ISOLATION` under `unshare --pid
--fork --mount-proc` (Linux >= 6.14 for pid_max in a namespace; see pidreuse.py). ISOLATION is
`none` or `cgroup`: with `cgroup` this process sets up the state dir's cgroups as a daemon does
(the stranger is in none of them, so the evidence beside the cgroup's decides).

Each round: a sidecar of ours is spawned (its own session) and recorded in the spawn ledger as
a daemon that is gone would have left it; then it dies. A stranger takes its pid, calls
setsid() (so its session has our sidecar's number), forks a child and exits: the child is a
same-uid double-forked daemon whose session id is the number our dead sidecar once had, with
no process at that pid. It listens on the sidecar's port. Then the code under test runs: the
start-up sweep, then the preflight of that sidecar. Neither may kill the stranger's child (before
issue 24 both did: `session_member` accepted it).

Prints one JSON line: rounds, reused (rounds where the stranger's session had our number),
killed (strangers killed), errors; exits 77 if it cannot set up.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tests.integration.pidreuse import _pass_the_cursor, _set_pid_max, _skip

if TYPE_CHECKING:
    from supervisor.evidence.ledger import Ledger, Spawn

SPIN_TIMEOUT_S = 10.0


def _stranger_taking(wanted: int, port: int) -> tuple[int, int] | None:
    """Fork until a child gets pid `wanted`; it calls setsid(), forks the daemon (which listens
    on `port`) and exits. Returns (the daemon's pid, a fd to release it), or None."""
    deadline = time.monotonic() + SPIN_TIMEOUT_S
    while time.monotonic() < deadline:
        ready_r, ready_w = os.pipe()
        release_r, release_w = os.pipe()
        try:
            pid = os.fork()
        except BlockingIOError:
            for fd in (ready_r, ready_w, release_r, release_w):
                os.close(fd)
            continue
        if pid == 0:
            os.close(ready_r)
            os.close(release_w)
            if os.getpid() != wanted:
                os._exit(0)
            os.setsid()
            while True:
                try:
                    daemon = os.fork()
                    break
                except BlockingIOError:
                    time.sleep(0.001)
            if daemon == 0:
                listener = socket.socket()
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind(("127.0.0.1", port))
                listener.listen()
                os.write(ready_w, f"{os.getpid()}\n".encode())
                os.read(release_r, 1)  # until released (EOF when the harness closes it)
                os._exit(0)
            os._exit(0)  # the session leader exits: nothing has pid `wanted` but the number
        os.close(ready_w)
        os.close(release_r)
        os.waitpid(pid, 0)
        data = os.read(ready_r, 64)
        os.close(ready_r)
        if data:
            return int(data.split()[0]), release_w
        os.close(release_w)
    return None


def _dead_process() -> tuple[int, float]:
    """(pid, create time) of a process that existed and was reaped: a daemon that is gone."""
    from supervisor.system import procs

    gone = subprocess.Popen(["true"])
    created = procs.create_time(gone.pid) or 0.0
    gone.wait()
    return gone.pid, created


def _our_dead_sidecar(book: Ledger, daemon: tuple[int, float]) -> Spawn | None:
    """A sidecar of ours (its own session), recorded as that daemon did, then dead and reaped."""
    from supervisor.evidence import ledger
    from supervisor.system import procs

    ours = subprocess.Popen(["sleep", "60"], start_new_session=True)
    created = procs.create_time(ours.pid)
    entry = None
    if created is not None:
        entry = ledger.Spawn(
            pid=ours.pid,
            create_time=created,
            boot_id=book.boot_id,
            sid=ours.pid,
            pgid=ours.pid,
            command=("sleep", "60"),
            sidecar="web",
            daemon_pid=daemon[0],
            daemon_create_time=daemon[1],
            spawned_at="",
        )
        book.record(entry)
    ours.kill()
    ours.wait()
    return entry


def _release(daemon: int, release: int) -> int:
    """Let the stranger's daemon go (it is our child now: we are pid 1); its wait status."""
    os.close(release)
    return os.waitpid(daemon, 0)[1]


def main() -> None:
    rounds, state_path, isolation = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    if os.getpid() != 1:
        _skip("not pid 1 of a fresh pid namespace")
    _set_pid_max()

    import anyio

    from supervisor.system import cgroups

    cgroup = None
    if isolation == "cgroup":
        Path(state_path).mkdir(mode=0o700, exist_ok=True)  # its id is the folder's
        try:
            cgroup = cgroups.Isolation.setup(Path(state_path))
        except cgroups.CgroupUnavailable as exc:
            _skip(f"cgroups: {exc}")
    report = anyio.run(_rounds, rounds, state_path)
    report["isolation"] = "cgroup" if cgroups.active() is not None else "none"
    if cgroup is not None:
        cgroup.remove_empty()
    print(json.dumps(report), flush=True)


async def _rounds(rounds: int, state_path: str) -> dict[str, object]:
    import anyio
    import structlog

    from supervisor import config
    from supervisor.evidence import ledger
    from supervisor.evidence.tags import OwnerTag
    from supervisor.reconcile import preflight, sweep
    from supervisor.reconcile.decide import LaunchKind
    from supervisor.system import procs
    from supervisor.system.statedir import StateDir

    await anyio.to_thread.run_sync(lambda: None)  # a worker thread while pids are plenty
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    log = structlog.get_logger()
    port, elsewhere = _free_port(), _free_port()
    raw = {"sidecar": [{"name": "web", "command": ["sleep", "60"], "port": port}]}
    web = config.parse(raw).sidecars[0]
    state = StateDir.open(Path(state_path), create=True)
    book = ledger.Ledger(state)
    me = OwnerTag(1, procs.create_time(1) or 0.0)
    gone = _dead_process()
    _pass_the_cursor()

    reused = 0
    killed: list[dict[str, object]] = []
    errors: list[str] = []
    for number in range(rounds):
        entry = _our_dead_sidecar(book, gone)
        if entry is None:
            errors.append(f"round {number}: our sidecar vanished")
            continue
        # Even rounds: the stranger's daemon holds the sidecar's port (the preflight's case);
        # odd rounds: another port (the sweep's: it leaves holders of the port to the preflight).
        on_port = number % 2 == 0
        taken = _stranger_taking(entry.pid, port if on_port else elsewhere)
        if taken is None:
            errors.append(f"round {number}: no stranger took pid {entry.pid}")
            book.forget(entry)
            continue
        daemon, release = taken
        if os.getsid(daemon) == entry.pid:
            reused += 1
        await sweep.sweep(book, None, {"web": web}, me, log)
        ctx = preflight.Context(
            our_pid=1,
            our_create_time=me.create_time,
            recorded_pid=lambda: None,
            stdin_is_tty=False,
            consent_lock=anyio.Lock(),
            should_run=lambda: True,
            ledger=book,
        )
        launch = LaunchKind.REQUEST
        outcome = await preflight.preflight(web, launch=launch, ctx=ctx, log=log)
        expected = preflight.Action.WAIT if on_port else preflight.Action.LAUNCH
        if outcome.action is not expected:
            errors.append(f"round {number}: the preflight did not {expected}: {outcome}")
        status = _release(daemon, release)
        if os.WIFSIGNALED(status):
            killed.append({"round": number, "pid": daemon, "signal": os.WTERMSIG(status)})
        book.forget(entry)
    state.close()
    return {"rounds": rounds, "reused": reused, "killed": killed, "errors": errors}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    main()
