"""A test sidecar that hides who it is, the way redis and nginx do (Linux only).

It listens on a TCP port (GET /health -> 200, like supervisor.demo), then overwrites its own
argv *and* environ memory (arg_start..env_end, /proc/PID/stat fields 48-51) with a new title and
NULs, checks that /proc/self/cmdline and /proc/self/environ no longer show its command line or
any SUPERVISOR_* tag, and only then prints the handshake `ready <pid> [<worker pid>...]`.

    retitle.py PORT [--host H] [--title T] [--workers N] [--daemonize] [--pid-file F]

--workers N  forks N workers sharing the listening socket, each retitled "retitled: worker
             process" (nginx's shape: the master and its workers all hold the socket; the
             workers outlive a SIGKILLed master).
--daemonize  forks at once, the parent exits 0 and the child calls setsid() (redis's
             `--daemonize yes`: the server ends up in a session of its own, not the spawned
             process's). Stdout stays open so the handshake still reaches the caller.
--pid-file F writes the server's pid to F (atomically) once it is ready.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import signal
import socket
import sys
import threading
from pathlib import Path

EX_UNAVAILABLE = 69
# man 5 proc, /proc/PID/stat (1-based): 48 arg_start, 49 arg_end, 50 env_start, 51 env_end.
ARG_START_FIELD = 48
WORKER_TITLE = "retitled: worker process"
TAG_PREFIX = b"SUPERVISOR_"
_OK = b'{"status": "ok"}\n'


class RetitleError(RuntimeError):
    pass


def memory_layout() -> tuple[int, int, int, int]:
    """(arg_start, arg_end, env_start, env_end) of this process."""
    stat = Path("/proc/self/stat").read_bytes()
    # comm (field 2) may hold spaces and parentheses: the fixed fields start after the last ")".
    fields = stat[stat.rindex(b")") + 2 :].split()
    first = ARG_START_FIELD - 3  # fields[0] is field 3
    arg_start, arg_end, env_start, env_end = (int(f) for f in fields[first : first + 4])
    if not (0 < arg_start < arg_end <= env_start <= env_end):
        raise RetitleError(
            f"unusable /proc/self/stat layout {arg_start=} {arg_end=} {env_start=} {env_end=}"
        )
    return arg_start, arg_end, env_start, env_end


def _move_libc_environ_to_heap() -> None:
    # libc's `environ` points into the region we are about to overwrite; a later getenv() (tzset,
    # locale) would read the title as variables. Rebuild it on the heap from Python's copy first.
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.clearenv() != 0:
        raise RetitleError(f"clearenv failed: errno {ctypes.get_errno()}")
    for key, value in os.environ.items():
        os.putenv(key, value)  # setenv(): copies


def clobber(title: str) -> None:
    """Replace argv and environ memory with `title` + NULs (setproctitle-style, no privileges:
    prctl(PR_SET_MM_*) would need CAP_SYS_RESOURCE)."""
    arg_start, arg_end, env_start, env_end = memory_layout()
    _move_libc_environ_to_heap()
    raw = title.encode()
    # Contiguous (the normal exec layout): the title may run on into the environ area, and the
    # kernel then reads cmdline on past arg_end up to the first NUL.
    end = env_end if env_start == arg_end else arg_end
    size = end - arg_start
    data = raw[: size - 1].ljust(size, b"\0")
    ctypes.memmove(arg_start, data, size)
    if end != env_end:
        ctypes.memset(env_start, 0, env_end - env_start)


def verify_hidden(title: str) -> None:
    """/proc shows only the title (so nothing of the command line) and an environ of NULs only
    (so no tag); raises RetitleError otherwise."""
    cmdline = Path("/proc/self/cmdline").read_bytes()
    environ = Path("/proc/self/environ").read_bytes()
    shown = cmdline.rstrip(b"\0")
    if not title.encode().startswith(shown) or not shown:
        raise RetitleError(f"/proc/self/cmdline shows {cmdline[:200]!r}, not {title!r}")
    if environ.strip(b"\0") or TAG_PREFIX in environ:
        raise RetitleError(f"/proc/self/environ still shows {environ[:200]!r}")


def _answer(conn: socket.socket) -> None:
    with conn:
        conn.settimeout(5.0)
        request = b""
        try:
            while b"\r\n\r\n" not in request and b"\n\n" not in request and len(request) < 8192:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                request += chunk
            parts = request.split(b" ", 2)
            if len(parts) >= 2 and parts[0] == b"GET" and parts[1] == b"/health":
                status, body = "200 OK", _OK
            else:
                status, body = "404 Not Found", b"not found\n"
            head = (
                f"HTTP/1.0 {status}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            conn.sendall(head.encode() + body)
        except OSError:
            return


def serve(server: socket.socket) -> None:
    while True:
        conn, _ = server.accept()
        threading.Thread(target=_answer, args=(conn,), daemon=True).start()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = socket.socket(family, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, port))
    server.listen(128)
    return server


def _start_workers(server: socket.socket, count: int) -> list[int]:
    """Fork `count` retitled workers sharing `server`; return once each has hidden itself."""
    ready_r, ready_w = os.pipe()
    workers: list[int] = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:  # a worker: no threads exist yet in the master, so fork is safe
            os.close(ready_r)
            signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
            try:
                clobber(WORKER_TITLE)
                verify_hidden(WORKER_TITLE)
            except (RetitleError, OSError) as exc:
                os.write(2, f"retitle worker: {exc}\n".encode())
                os._exit(1)
            os.write(ready_w, b"w")
            os.close(ready_w)
            try:
                serve(server)
            finally:
                os._exit(0)
        workers.append(pid)
    os.close(ready_w)
    got = b""
    while len(got) < count:
        chunk = os.read(ready_r, count)
        if not chunk:  # a worker died before it was ready
            raise RetitleError(f"only {len(got)} of {count} workers became ready")
        got += chunk
    os.close(ready_r)
    return workers


def _write_pid_file(path: str, pid: int) -> None:
    temp = f"{path}.{pid}.tmp"
    with open(temp, "w") as handle:
        handle.write(f"{pid}\n")
    os.replace(temp, path)


def _stop_master(workers: list[int]) -> None:
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for pid in workers:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    os._exit(0)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="retitle.py", description="a test sidecar that hides its argv and environ"
    )
    parser.add_argument("port", type=int)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--title", help="the new process title (default: 'retitled HOST:PORT')")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--daemonize", action="store_true")
    parser.add_argument("--pid-file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    if sys.platform != "linux":
        sys.stderr.write(
            f"retitle.py: needs Linux (/proc/PID/stat arg_start..env_end); this is {sys.platform}\n"
        )
        return EX_UNAVAILABLE
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.daemonize:
        if os.fork() != 0:
            os._exit(0)  # like redis: the parent exits before the server listens
        os.setsid()
    title = args.title or f"retitled {args.host}:{args.port}"
    server = _listen(args.host, args.port)
    try:
        clobber(title)
        verify_hidden(title)
        workers = _start_workers(server, args.workers) if args.workers else []
    except RetitleError as exc:
        sys.stderr.write(f"retitle.py: {exc}\n")
        return 1
    if workers:
        signal.signal(signal.SIGTERM, lambda *_: _stop_master(workers))
    else:
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    if args.pid_file:
        _write_pid_file(args.pid_file, os.getpid())
    print("ready", os.getpid(), *workers, flush=True)
    if workers:  # nginx's master: holds the socket, accepts nothing
        while True:
            signal.pause()
    serve(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
