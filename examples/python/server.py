"""A sidecar that serves on the listening socket the supervisor hands it (socket.inherit = true).

fd 3, announced by LISTEN_FDS / LISTEN_PID (systemd's sd_listen_fds protocol). Started on its own
it binds 127.0.0.1:$PORT instead. Standard library only.

    [[sidecar]]
    name = "py-web"
    command = ["python3", "examples/python/server.py"]
    port = 4820
    [sidecar.ready]
    probe = "http"
    path = "/health"
    [sidecar.socket]
    inherit = true
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LISTEN_FDS_START = 3


def inherited_socket() -> socket.socket | None:
    """sd_listen_fds(): the fds are ours only when LISTEN_PID names this very process."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return None
    if count < 1:
        return None
    for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)  # not for our own children
    sock = socket.socket(fileno=LISTEN_FDS_START)
    sock.set_inheritable(False)
    sock.setblocking(True)
    return sock


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/health":
            body = json.dumps({"status": "ok", "pid": os.getpid()}).encode() + b"\n"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
        else:
            body = b"not found\n"
            self.send_response(404)
            self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


class InheritedServer(ThreadingHTTPServer):
    """ThreadingHTTPServer on a socket that already listens: no bind, no listen."""

    daemon_threads = True

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock.getsockname()[:2], Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.server_name, self.server_port = str(sock.getsockname()[0]), sock.getsockname()[1]


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sock = inherited_socket()
    if sock is not None:
        server: ThreadingHTTPServer = InheritedServer(sock)
        print(f"serving on inherited fd {LISTEN_FDS_START}", flush=True)
    else:
        port = int(os.environ.get("PORT", "8080"))
        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        print(f"listening on 127.0.0.1:{port}", flush=True)
    with server:
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
