"""Sidecar commands that try to leave their supervisor behind (the cgroup tests' subjects).

    escapers.py delayed PORT PIDS   exits at once; a setsid'd grandchild waits until it has
                                    gone, retitles itself (a new argv, no SUPERVISOR_* tags)
                                    and only then binds PORT
    escapers.py inherit PIDS        serves the inherited socket (fd 3); a setsid'd grandchild
                                    keeps fd 3 open and ignores SIGTERM
    escapers.py crowd PORT PIDS N   serves PORT; N children call setsid and N setpgid, all
                                    ignoring SIGTERM
    escapers.py workers PORT PIDS   serves PORT with a setsid'd worker that ignores SIGTERM
    escapers.py check PIDS          a health check: double-forks a sleeper, then exits 0
    escapers.py aside PORT PIDS     stays up, while a double-forked grandchild (no descendant
                                    of it any more) serves PORT
    escapers.py serve PORT PIDS     (internal) the retitled server of `delayed`

Every process that should not outlive its sidecar appends its pid as one line to PIDS (with
O_APPEND: one write per line), so that a test can check that none of them is left.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time


def note(pids: str) -> None:
    fd = os.open(pids, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
    finally:
        os.close(fd)


def quiet() -> None:
    """Stdio on /dev/null (a stray must not hold the supervisor's pipes)."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def serve(sock: socket.socket) -> None:
    while True:
        conn, _ = sock.accept()
        with conn:
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")


def listen(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(16)
    return sock


def detach() -> bool:
    """Double fork: True in the grandchild (in a session of its own), the others exit 0."""
    if os.fork():
        return False
    os.setsid()
    if os.fork():
        os._exit(0)
    return True


def sleep_forever(*, ignore_term: bool) -> None:
    if ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        time.sleep(3600)


def delayed(port: int, pids: str) -> None:
    read_end, write_end = os.pipe()
    if not detach():
        return  # the command exits at once; the pipe's write end goes with it
    os.close(write_end)
    quiet()
    os.read(read_end, 1)  # EOF: the command has exited
    time.sleep(0.3)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SUPERVISOR_")}
    os.execve(sys.executable, ["innocent", __file__, "serve", str(port), pids], clean)


def inherit(pids: str) -> None:
    sock = socket.socket(fileno=3)
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            quiet()
            note(pids)
            sleep_forever(ignore_term=True)  # holds fd 3
        os._exit(0)
    note(pids)
    serve(sock)


def crowd(port: int, pids: str, count: int) -> None:
    for i in range(2 * count):
        if os.fork() == 0:
            quiet()
            if i % 2:
                os.setsid()
            else:
                os.setpgid(0, 0)
            note(pids)
            sleep_forever(ignore_term=True)
    note(pids)
    serve(listen(port))


def workers(port: int, pids: str) -> None:
    sock = listen(port)
    if os.fork() == 0:
        os.setsid()
        quiet()
        note(pids)
        sleep_forever(ignore_term=True)
    note(pids)
    serve(sock)


def check(pids: str) -> None:
    if detach():
        quiet()
        note(pids)
        sleep_forever(ignore_term=True)


def aside(port: int, pids: str) -> None:
    if detach():
        quiet()
        note(pids)
        serve(listen(port))
    note(pids)
    sleep_forever(ignore_term=False)


def main(argv: list[str]) -> None:
    match argv:
        case ["delayed", port, pids]:
            delayed(int(port), pids)
        case ["serve", port, pids]:
            note(pids)
            serve(listen(int(port)))
        case ["inherit", pids]:
            inherit(pids)
        case ["crowd", port, pids, count]:
            crowd(int(port), pids, int(count))
        case ["workers", port, pids]:
            workers(int(port), pids)
        case ["check", pids]:
            check(pids)
        case ["aside", port, pids]:
            aside(int(port), pids)
        case _:
            sys.exit(f"usage: see {__file__}")


if __name__ == "__main__":
    main(sys.argv[1:])
