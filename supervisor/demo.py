"""The demo sidecar: a tiny HTTP server (GET /health -> 200) for the demo config, tests and benches.

Deliberately lean (no http.server, argparse or contextlib: ~70 ms of imports), so benchmarks
measure the supervisor rather than the child's start-up. `--report FILE` appends
`listening <pid> <epoch_ns>` once the socket listens, so benchmarks can time readiness from the
moment the port accepts.

Given a listening socket by systemd's protocol (LISTEN_FDS=1 and LISTEN_PID = our pid: the
supervisor's `socket.inherit`), it serves on fd 3 instead of binding `--port`.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import threading
import time

_OK = b'{"status": "ok"}\n'
_MAX_REQUEST = 8192


def _answer(conn: socket.socket) -> None:
    with conn:
        conn.settimeout(5.0)
        request = b""
        try:
            while b"\r\n\r\n" not in request and b"\n\n" not in request:
                chunk = conn.recv(4096)
                if not chunk or len(request) > _MAX_REQUEST:
                    break
                request += chunk
        except OSError:
            pass
        parts = request.split(b" ", 2)
        kind = b"application/json"
        if len(parts) >= 2 and parts[0] == b"GET" and parts[1] == b"/health":
            status, body = b"200 OK", _OK
        elif len(parts) >= 2 and parts[0] == b"GET" and parts[1] == b"/":
            status, body, kind = b"200 OK", _page(), b"text/html; charset=utf-8"
        else:
            status, body, kind = b"404 Not Found", b"not found\n", b"text/plain"
        head = (
            b"HTTP/1.0 " + status + b"\r\nContent-Type: " + kind + b"\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
        )
        try:
            conn.sendall(head + body)
        except OSError:  # the prober hung up; contextlib.suppress would cost an import
            return


def _serve(server: socket.socket) -> None:
    """Accept forever, a thread per connection; return (or raise KeyboardInterrupt) once a
    signal's handler has run.

    The main thread sleeps in select() on the socket and a wakeup pipe (signal.set_wakeup_fd),
    never in accept(): Python runs a handler only on the main thread, between bytecodes, so a
    signal caught by another thread, or one that lands just before a blocking accept(), was
    only flagged while accept() slept on. A demo SIGSTOPped, continued and SIGTERMed with a
    request in flight stayed up 8 times in 20 (4 in 150 with the ending signals blocked in
    its threads); the byte in the pipe wakes the select() whichever thread took the signal."""
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
    server.setblocking(False)
    listening = server.fileno()
    while True:
        readable, _, _ = select.select([listening, wake_read], [], [])
        if wake_read in readable:
            os.read(wake_read, 512)  # the handler runs before the next line
        if listening in readable:
            try:
                conn, _ = server.accept()
            except (BlockingIOError, InterruptedError):
                continue  # the client gave up meanwhile
            threading.Thread(target=_answer, args=(conn,), daemon=True).start()


def _page() -> bytes:
    """GET /: a small page saying what this is and what to try next."""
    return (
        "<!doctype html><meta charset=utf-8><title>supervisor demo</title>"
        "<h1>The demo sidecar is running</h1>"
        f"<p>pid {os.getpid()}, up {time.monotonic() - _STARTED:.0f} s. "
        "This tiny server is supervised by <code>supervisor run</code>.</p>"
        "<p>Its readiness and health probe: <a href=/health>/health</a>.</p>"
        "<p>Try, in another terminal: <code>supervisor status</code>, "
        "<code>supervisor logs -f</code>, <code>supervisor top</code>; "
        "<code>kill -9 " + str(os.getpid()) + "</code> and watch it come back.</p>\n"
    ).encode()


_STARTED = time.monotonic()

USAGE = """usage: python -m supervisor.demo --port N [--host H] [--crash-after S] [--exit-code C]
                                [--ignore-sigterm] [--fork-grandchild] [--report FILE]

  --port N           TCP port to serve on (required unless a socket is inherited:
                     LISTEN_FDS=1 and LISTEN_PID=<our pid> serve fd 3 instead)
  --host H           address to bind (default 127.0.0.1; "::1" or "::" for IPv6)
  --crash-after S    exit after S seconds (with --exit-code, default 1)
  --ignore-sigterm   ignore SIGTERM (a stop must escalate to SIGKILL)
  --fork-grandchild  leave a grandchild in our process group (a stop must kill it too)
  --report FILE      append "listening PID EPOCH_NS" once the socket listens
"""


class Options:
    """Parsed arguments (a plain class: dataclasses would import inspect, ~15 ms)."""

    def __init__(self) -> None:
        self.port = 0
        self.host = "127.0.0.1"
        self.crash_after: float | None = None
        self.exit_code = 1
        self.ignore_sigterm = False
        self.fork_grandchild = False
        self.report: str | None = None


def _parse(argv: list[str]) -> Options:
    """A hand-rolled parser: argparse (with re) would double the demo's start-up time."""
    options = Options()
    values: dict[str, tuple[str, type]] = {
        "--port": ("port", int),
        "--host": ("host", str),
        "--crash-after": ("crash_after", float),
        "--exit-code": ("exit_code", int),
        "--report": ("report", str),
    }
    flags = {"--ignore-sigterm": "ignore_sigterm", "--fork-grandchild": "fork_grandchild"}
    words = list(argv)
    while words:
        word = words.pop(0)
        name, _, inline = word.partition("=")
        if word in ("-h", "--help"):
            sys.stdout.write(USAGE)
            raise SystemExit(0)
        if word in flags:
            setattr(options, flags[word], True)
        elif name in values:
            attr, kind = values[name]
            text = inline if inline else (words.pop(0) if words else "")
            try:
                setattr(options, attr, kind(text))
            except ValueError:
                _usage_error(f"{name} needs a {kind.__name__}, got {text!r}")
        else:
            _usage_error(f"unknown argument {word!r}")
    if not options.port and _inherited_fds() == 0:
        _usage_error("--port is required")
    return options


LISTEN_FDS_START = 3


def _inherited_fds() -> int:
    """sd_listen_fds(): how many listening sockets we were given from fd 3 (0: none)."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return 0  # meant for another process (e.g. our parent), not for us
    try:
        return max(0, int(os.environ.get("LISTEN_FDS", "0")))
    except ValueError:
        return 0


def _listening_socket(args: Options) -> socket.socket:
    if _inherited_fds() >= 1:
        for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
            os.environ.pop(name, None)  # as sd_listen_fds(1): not for our own children
        server = socket.socket(fileno=LISTEN_FDS_START)
        os.set_inheritable(LISTEN_FDS_START, False)
        server.setblocking(True)  # the description may come non-blocking from a predecessor
        return server
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    server = socket.socket(family, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((args.host, args.port))
    server.listen(128)
    return server


def _usage_error(message: str) -> None:
    sys.stderr.write(f"{USAGE}\nerror: {message}\n")
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    if args.fork_grandchild:
        # A grandchild in our process group that does nothing: a stop must kill it too.
        grandchild = os.fork()
        if grandchild == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            while True:
                signal.pause()
        print(f"grandchild {grandchild}", flush=True)
    server = _listening_socket(args)
    listened_ns = time.time_ns()
    if args.report:
        with open(args.report, "a") as report:
            report.write(f"listening {os.getpid()} {listened_ns}\n")
    where = server.getsockname()
    try:  # noqa: SIM105 - contextlib would cost an import
        print(f"listening on {where[0]}:{where[1]}", flush=True)
    except BrokenPipeError:
        # Our supervisor was killed after it saw us listen, before it read this line: keep
        # serving, as the orphans that the reclaim tests and `bench relaunch` need do.
        pass
    if args.crash_after is not None:
        code = args.exit_code

        def crash() -> None:
            print(f"crashing with exit code {code}", flush=True)
            os._exit(code)

        timer = threading.Timer(args.crash_after, crash)
        timer.daemon = True
        timer.start()
    try:
        _serve(server)
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
