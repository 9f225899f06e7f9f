"""Forced pid reuse: run as pid 1 of a fresh pid namespace with a tiny pid_max (Linux >= 6.14).

`python -m tests.integration.pidreuse MODE ROUNDS FIFO` under `unshare --pid --fork --mount-proc`.
Once the pid cursor has passed 300 only pids 300..PID_MAX-1 are handed out, so a freed pid is
taken again at once: a "stranger pool" (a process of its own) is told which pid to want, forks
strangers that call setsid() until one of them has it, and reports how each stranger died. A
stranger SIGKILLed (or whose own child was) is a wrong kill by the code under test.

Modes (the code under test, each round against a stranger that took the pid it just freed):
  consent        reconcile.consent.ask with consent = "command": a command that exits at once
  child-finish   children.spawn, wait_exit, finish (the group SIGKILLed, then the leader reaped)
  child-stop     children.spawn of a long-running command, then Child.stop
  target-pidfd   reconcile.kill's _Target, pinned on a holder that is not our child; the holder
                 exits and is reaped by its parent, a stranger takes its pid (and forks a child
                 into its new group); then the group signal kill_process would send
  target-members the same where the kernel lacks PIDFD_SIGNAL_PROCESS_GROUP (EINVAL injected,
                 as a kernel < 6.9 answers): the member-by-member path

Prints one JSON line: rounds, reused (rounds where a stranger held the pid the code under test had
just used), killed (strangers or their children SIGKILLed), errors; exits 77 if it cannot set up.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import signal
import sys
import time
import traceback
from typing import Any

PID_MAX = 304  # pids 300..303 once the cursor has passed RESERVED_PIDS (300)
SPIN_TIMEOUT_S = 10.0
CHILD_KILLED = 99  # a stranger's exit code when its own child died of SIGKILL


# -- the stranger pool (a forked process; plain os calls, no imports of the code under test) --


class Pool:
    def __init__(self, commands: int, results: int, fifo: int) -> None:
        self.commands = os.fdopen(commands, "r")
        self.results = results
        self.fifo = fifo
        self.strangers: dict[int, int] = {}  # pid -> write end of its release pipe
        self.ready_r, self.ready_w = os.pipe()
        self.target: tuple[int, int] | None = None
        self.ready: set[int] = set()  # strangers that have called setsid()
        self.pending = b""

    def reply(self, **fields: object) -> None:
        os.write(self.results, (json.dumps(fields) + "\n").encode())

    def fork_stranger(self) -> int:
        """A stranger: it calls setsid() at once, then waits to be let go."""
        release_r, release_w = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            os.close(release_r)
            os.close(release_w)
            raise
        if pid == 0:
            os.setsid()
            _stranger(release_r, self.ready_w)
        os.close(release_r)
        self.strangers[pid] = release_w
        return pid

    def take(self, wanted: int, *, with_child: bool) -> int | None:
        """Fork strangers until one has `wanted` (spinning while no pid is free); the others are
        let go at once, which frees pids for the child the stranger then forks (with_child)."""
        deadline = time.monotonic() + SPIN_TIMEOUT_S
        others: list[int] = []
        got: int | None = None
        while got is None and time.monotonic() < deadline:
            try:
                pid = self.fork_stranger()
            except BlockingIOError:
                continue  # no pid free yet: the code under test still holds it
            if pid == wanted:
                got = pid
            else:
                others.append(pid)
        for pid in others:
            self.release(pid)
        if got is not None:
            self.wait_ready(got)
            if with_child:
                os.write(self.strangers[got], b"c")
                self.wait_ready(-got)
        return got

    def release(self, pid: int) -> int:
        """Let a stranger go; its wait status."""
        release_w = self.strangers.pop(pid)
        with contextlib.suppress(BrokenPipeError):  # it was killed: its status tells
            os.write(release_w, b"xx")  # one byte for it, one for its child (if any)
        os.close(release_w)
        _, status = os.waitpid(pid, 0)
        return status

    def serve(self) -> None:
        for line in self.commands:
            command = line.split()
            match command:
                case ["arm"]:
                    self.reply(armed=True)
                    wanted = self.read_announced()
                    self.reply(seen=wanted)
                    got = self.take(wanted, with_child=False) if wanted else None
                    self.reply(took=got, wanted=wanted)
                case ["target"]:
                    pid = self.fork_stranger()
                    self.wait_ready(pid)
                    self.target = (pid, self.strangers.pop(pid))
                    self.reply(target=pid)
                case ["swap"]:
                    self.reply(**self.swap())
                case ["end"]:
                    self.reply(ended=self.end())
                case _:
                    self.reply(error=f"unknown command {line!r}")
        os._exit(0)

    def read_announced(self) -> int | None:
        ready, _, _ = select.select([self.fifo], [], [], SPIN_TIMEOUT_S)
        if not ready:
            return None
        data = b""
        while not data.endswith(b"\n"):
            data += os.read(self.fifo, 64)
        return int(data.split()[0])

    def wait_ready(self, pid: int) -> None:
        """Until stranger `pid` has called setsid() (and forked its child, if it has one)."""
        deadline = time.monotonic() + SPIN_TIMEOUT_S
        while pid not in self.ready and time.monotonic() < deadline:
            readable, _, _ = select.select([self.ready_r], [], [], 1.0)
            if readable:
                self.pending += os.read(self.ready_r, 4096)
                *lines, self.pending = self.pending.split(b"\n")
                self.ready.update(int(line) for line in lines if line)

    def swap(self) -> dict[str, object]:
        """The target exits and is reaped by us (its parent); a stranger with a child takes
        its pid."""
        if self.target is None:
            return {"error": "no target"}
        pid, release_w = self.target
        self.target = None
        os.write(release_w, b"xx")
        os.close(release_w)
        _, status = os.waitpid(pid, 0)
        got = self.take(pid, with_child=True)
        return {"took": got, "wanted": pid, "target_status": status}

    def end(self) -> dict[str, int]:
        statuses = {}
        for pid in list(self.strangers):
            statuses[str(pid)] = self.release(pid)
        return statuses


def _stranger(release_r: int, ready_w: int) -> None:
    """Report "setsid done"; on b"c" fork a child into our new group (it waits too); exit on
    b"x" with CHILD_KILLED if that child died of SIGKILL."""
    low, high = sorted((release_r, ready_w))
    os.closerange(3, low)  # the pool's pipes: its EOF must not wait for strangers
    os.closerange(low + 1, high)
    os.closerange(high + 1, 1024)
    me = os.getpid()
    os.write(ready_w, f"{me}\n".encode())
    child = 0
    while os.read(release_r, 1) == b"c":
        deadline = time.monotonic() + SPIN_TIMEOUT_S
        while not child and time.monotonic() < deadline:
            try:
                child = os.fork()
            except BlockingIOError:
                time.sleep(0.001)
                continue
            if child == 0:
                os.read(release_r, 1)
                os._exit(0)
        os.write(ready_w, f"-{me}\n".encode())
    code = 0
    if child:
        _, status = os.waitpid(child, 0)
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            code = CHILD_KILLED
    os._exit(code)


def _start_pool(fifo_path: str) -> tuple[int, Any, int]:
    commands_r, commands_w = os.pipe()
    results_r, results_w = os.pipe()
    fifo = os.open(fifo_path, os.O_RDWR | os.O_NONBLOCK)  # never EOF, never blocks on open
    pid = os.fork()
    if pid == 0:
        os.close(commands_w)
        os.close(results_r)
        try:
            Pool(commands_r, results_w, fifo).serve()
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(1)
    os.close(commands_r)
    os.close(results_w)
    os.close(fifo)
    return pid, os.fdopen(results_r, "r"), commands_w


# -- the harness (pid 1 of the namespace) -----------------------------------------------------


def _skip(reason: str) -> None:
    print(json.dumps({"skip": reason}), flush=True)
    sys.exit(77)


def _set_pid_max() -> None:
    try:
        with open("/proc/sys/kernel/pid_max", "w") as file:
            file.write(str(PID_MAX))
    except OSError as exc:
        _skip(f"cannot set pid_max in a pid namespace (Linux >= 6.14 needed): {exc.strerror}")


def _pass_the_cursor() -> None:
    """Fork and reap until a child gets pid >= 300: from then on only 300..PID_MAX-1 exist."""
    for _ in range(400):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        if pid >= 300:
            return
    _skip("the pid cursor never passed 300")


def main() -> None:
    mode, rounds, fifo_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if os.getpid() != 1:
        _skip("not pid 1 of a fresh pid namespace")
    _set_pid_max()
    # The pool is forked before the code under test is imported: a small process forks fast.
    pool_pid, results, commands = _start_pool(fifo_path)

    import anyio

    report = anyio.run(_rounds, mode, rounds, fifo_path, (results, commands, pool_pid))
    os.close(commands)
    os.waitpid(pool_pid, 0)
    print(json.dumps(report), flush=True)


async def _rounds(
    mode: str, rounds: int, fifo_path: str, pool: tuple[Any, int, int]
) -> dict[str, object]:
    results, commands, pool_pid = pool
    import anyio

    from supervisor import config
    from supervisor.reconcile import consent, kill
    from supervisor.system import children, groups

    def send(command: str) -> None:
        os.write(commands, f"{command}\n".encode())

    def receive() -> dict[str, Any]:
        line = results.readline()
        if not line:
            _, status = os.waitpid(pool_pid, 0)
            raise RuntimeError(f"the stranger pool died: {_describe(status)}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    if mode == "target-members":
        # What a kernel < 6.9 answers to PIDFD_SIGNAL_PROCESS_GROUP: EINVAL (the one injected
        # errno; nothing on this kernel provokes it).
        real = signal.pidfd_send_signal

        def older_kernel(fd: int, sig: int, siginfo: None = None, flags: int = 0) -> None:
            if flags & groups.PIDFD_SIGNAL_PROCESS_GROUP:
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
            real(fd, sig, siginfo, flags)

        signal.pidfd_send_signal = older_kernel
        groups.pidfd_groups_supported.cache_clear()
        if groups.pidfd_groups_supported():
            raise RuntimeError("the injected EINVAL was not seen")

    # A worker thread now, while pids are plenty (Child.stop scans the group in one); idle
    # workers are reused.
    await anyio.to_thread.run_sync(lambda: None)
    raw = {
        "sidecar": [
            {
                "name": "web",
                "command": ["true"],
                "port": 1,
                "reclaim": {
                    "consent": "command",
                    "consent_command": ["/bin/sh", "-c", f"echo $$ > {fifo_path}"],
                    "consent_timeout": 20.0,
                },
            }
        ]
    }
    reclaim = config.parse(raw).sidecars[0].reclaim
    request = consent.ConsentRequest("web", 1, 12345, "root", "demo", None)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    _pass_the_cursor()

    reused = 0
    killed: list[dict[str, object]] = []
    errors: list[str] = []
    for number in range(rounds):
        if mode in ("consent", "child-finish", "child-stop"):
            send("arm")
            receive()  # armed: the pool reads the fifo from now on
            if mode == "consent":
                result = await consent.ask(reclaim, request, stdin_is_tty=False)
                if not result.granted:
                    errors.append(f"round {number}: consent {result.detail}")
                seen = receive()
            else:
                script = f"echo $$ > {fifo_path}"
                if mode == "child-stop":
                    script += "; exec sleep 60"
                child = children.spawn(
                    ["/bin/sh", "-c", script], cwd=None, env=env, capture_output=False
                )
                seen = receive()  # the command runs (its pid is announced)
                with anyio.CancelScope(shield=True):
                    if mode == "child-stop":
                        await child.stop(signal.SIGTERM, 5.0)
                    else:
                        await child.wait_exit()
                        child.finish()
                child.close()
            took = receive()
            if seen.get("seen") != took.get("wanted"):
                errors.append(f"round {number}: announced {seen}, wanted {took}")
        else:
            send("target")
            target_pid = receive()["target"]
            created = _create_time(target_pid)
            target = kill._Target(target_pid, created)
            send("swap")
            took = receive()
            try:
                # What kill_process sends when the stop timeout expires: SIGKILL to the group.
                target.send(signal.SIGKILL, group=True)
            finally:
                target.close()
        if took.get("took") is not None and took.get("took") == took.get("wanted"):
            reused += 1
        else:
            errors.append(f"round {number}: no stranger took the pid: {took}")
        send("end")
        for pid, status in receive()["ended"].items():
            if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
                killed.append({"round": number, "pid": int(pid), "what": "stranger"})
            elif os.WIFEXITED(status) and os.WEXITSTATUS(status) == CHILD_KILLED:
                killed.append({"round": number, "pid": int(pid), "what": "stranger's child"})
    return {"mode": mode, "rounds": rounds, "reused": reused, "killed": killed, "errors": errors}


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def _create_time(pid: int) -> float:
    from supervisor.system import procs

    created = procs.create_time(pid)
    if created is None:
        raise RuntimeError(f"target {pid} vanished")
    return created


if __name__ == "__main__":
    main()
