"""The demo sidecar: a tiny HTTP server (GET /health -> 200) for the demo config, tests and benches.

`--report FILE` appends `listening <pid> <epoch_ns>` once the socket listens, so benchmarks can
measure readiness latency from the moment the port really accepts.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    server_version = "sidecar-demo/1"

    def do_GET(self) -> None:
        if self.path == "/health":
            body = b'{"status": "ok"}\n'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
        else:
            body = b"not found\n"
            self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m supervisor.demo", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--crash-after", type=float, metavar="S", help="exit 1 after S seconds")
    parser.add_argument("--ignore-sigterm", action="store_true")
    parser.add_argument(
        "--fork-grandchild",
        action="store_true",
        help="leave a grandchild process in the same process group",
    )
    parser.add_argument("--exit-code", type=int, default=1, help="exit code for --crash-after")
    parser.add_argument("--report", metavar="FILE", help="append 'listening PID NS' when ready")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    if args.fork_grandchild:
        # A grandchild in our process group that outlives nothing on its own: stop must kill it.
        grandchild = os.fork()
        if grandchild == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            while True:
                signal.pause()
        print(f"grandchild {grandchild}", flush=True)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    _Server.address_family = family
    server = _Server((args.host, args.port), _Handler)
    listened_ns = time.time_ns()
    if args.report:
        with open(args.report, "a") as report:
            report.write(f"listening {os.getpid()} {listened_ns}\n")
    print(f"listening on {args.host}:{args.port}", flush=True)
    if args.crash_after is not None:
        code = args.exit_code

        def crash() -> None:
            print(f"crashing with exit code {code}", flush=True)
            os._exit(code)

        timer = threading.Timer(args.crash_after, crash)
        timer.daemon = True
        timer.start()
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever(poll_interval=3600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
