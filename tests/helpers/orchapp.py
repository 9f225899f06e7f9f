"""A small sidecar for the orchestration tests: serves a port, says a line, notifies over
NOTIFY_SOCKET (sd_notify, by hand), reports its environment, or exits at once.

python tests/helpers/orchapp.py [--port P] [--say TEXT] [--notify] [--status TEXT]
    [--gate FILE] [--pings N] [--env-report FILE] [--exit CODE] [--touch FILE]
    [--fail-unless FILE]
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time


def notify(message: str) -> None:
    address = os.environ["NOTIFY_SOCKET"]
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(message.encode(), address)


def main(argv: list[str]) -> int:
    opts: dict[str, str] = {}
    flags: set[str] = set()
    words = list(argv)
    while words:
        word = words.pop(0)
        if word in ("--notify",):
            flags.add(word[2:])
        else:
            opts[word[2:]] = words.pop(0)
    if "env-report" in opts:
        with open(opts["env-report"] + ".tmp", "w") as out:
            json.dump({"env": dict(os.environ), "argv": argv}, out)
        os.rename(opts["env-report"] + ".tmp", opts["env-report"])
    if "touch" in opts:
        with open(opts["touch"], "a") as out:
            out.write(f"{os.getpid()}\n")
    if "exit" in opts:
        return int(opts["exit"])
    if "fail-unless" in opts and not os.path.exists(opts["fail-unless"]):
        return 3
    server = None
    if "port" in opts:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", int(opts["port"])))
        server.listen(16)
    if "gate" in opts:  # the test says when: a file appears (bounded by the test's timeouts)
        while not os.path.exists(opts["gate"]):
            time.sleep(0.01)
    if "say" in opts:
        print(opts["say"], flush=True)
    if "notify" in flags:
        notify("READY=1\nSTATUS=" + opts.get("status", "serving"))
    pings = int(opts.get("pings", "0"))
    interval = int(os.environ.get("WATCHDOG_USEC", "1000000")) / 2 / 1e6
    for n in range(pings):
        notify("WATCHDOG=1")
        print(f"ping {n + 1}", flush=True)
        time.sleep(interval)
    if pings:
        print("silent", flush=True)
    while True:
        if server is not None:
            conn, _ = server.accept()
            conn.close()
        else:
            time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
