"""A stand-in database for the chain example: listens on the port it is given, then tells the
supervisor it is ready with sd_notify (READY=1 and a STATUS= line over $NOTIFY_SOCKET).

The protocol is one datagram of KEY=VALUE lines to a unix socket: no library needed.
"""

from __future__ import annotations

import os
import socket
import sys
import time


def sd_notify(message: str) -> None:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return  # not supervised with probe = "notify": nothing to tell
    if address.startswith("@"):
        address = "\0" + address[1:]  # an abstract socket (Linux)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(message.encode(), address)


def main() -> None:
    port = int(sys.argv[1])
    server = socket.create_server(("127.0.0.1", port))
    time.sleep(0.5)  # "loading the data"
    print(f"db: accepting connections on port {port}", flush=True)
    sd_notify(f"READY=1\nSTATUS=accepting connections on port {port}")
    while True:
        conn, _ = server.accept()
        conn.close()


if __name__ == "__main__":
    main()
