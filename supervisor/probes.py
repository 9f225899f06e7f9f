"""Readiness probes (tcp, http) that also prove the listener is our child's, not a stranger's."""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio

from supervisor import net, procs
from supervisor.config import ProbeKind, SidecarConfig
from supervisor.lifecycle import probe_delay_s

CONNECT_TIMEOUT_S = 1.0
HTTP_TIMEOUT_S = 2.0
MAX_RESPONSE_HEAD = 4096


async def _connects(host: str, port: int) -> bool:
    try:
        with anyio.fail_after(CONNECT_TIMEOUT_S):
            stream = await anyio.connect_tcp(host, port)
    except (OSError, TimeoutError):
        return False
    await stream.aclose()
    return True


async def _http_ok(host: str, port: int, path: str) -> bool:
    """True on any 2xx answer to `GET path`."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: sidecar-supervisor\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    try:
        with anyio.fail_after(HTTP_TIMEOUT_S):
            stream = await anyio.connect_tcp(host, port)
            async with stream:
                await stream.send(request)
                head = b""
                while b"\r\n" not in head and len(head) < MAX_RESPONSE_HEAD:
                    head += await stream.receive(MAX_RESPONSE_HEAD)
    except (OSError, TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError):
        return False
    parts = head.split(b" ", 2)
    return len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1][:1] == b"2"


def listener_is_ours(port: int, child_pid: int) -> bool:
    """The LISTEN socket on `port` belongs to the child or one of its descendants."""
    tree = [child_pid, *procs.descendant_pids(child_pid)]
    return bool(net.pids_listening(port, tree))


async def wait_ready(
    config: SidecarConfig, child_pid: int, on_stranger: Callable[[], None] | None = None
) -> None:
    """Return once the sidecar is ready; the caller bounds the wait (ready.timeout)."""
    if config.ready.probe is ProbeKind.NONE or config.port is None:
        return
    port = config.port
    started = time.monotonic()
    while True:
        if net.anyone_listening(port) is not False and await _connects(config.host, port):
            # A walk of /proc: in a worker thread, off the event loop.
            if await anyio.to_thread.run_sync(listener_is_ours, port, child_pid):
                if config.ready.probe is ProbeKind.TCP:
                    return
                if await _http_ok(config.host, port, config.ready.path):
                    return
            elif on_stranger is not None:
                on_stranger()
        await anyio.sleep(probe_delay_s(time.monotonic() - started, config.ready.interval_s))
