"""Readiness probes (tcp, http) that also prove the listener is our child's, not a stranger's;
the same tcp and http checks, with a reason for each failure, serve the health checks."""

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


async def tcp_failure(host: str, port: int, timeout_s: float) -> str | None:
    """None if a connect to host:port succeeds within `timeout_s`; else why not."""
    try:
        with anyio.fail_after(timeout_s):
            stream = await anyio.connect_tcp(host, port)
    except TimeoutError:
        return f"no connection within {timeout_s:g}s"
    except OSError as exc:
        return f"cannot connect: {exc.strerror or exc}"
    await stream.aclose()
    return None


async def http_failure(host: str, port: int, path: str, timeout_s: float) -> str | None:
    """None on a 2xx answer to `GET path` within `timeout_s`; else why not."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: sidecar-supervisor\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    head = b""
    try:
        with anyio.fail_after(timeout_s):
            stream = await anyio.connect_tcp(host, port)
            async with stream:
                await stream.send(request)
                while b"\r\n" not in head and len(head) < MAX_RESPONSE_HEAD:
                    head += await stream.receive(MAX_RESPONSE_HEAD)
    except TimeoutError:
        return f"no HTTP answer within {timeout_s:g}s"
    except OSError as exc:
        return f"cannot connect: {exc.strerror or exc}"
    except (anyio.EndOfStream, anyio.BrokenResourceError):
        if not head:
            return "the connection closed without an answer"
    parts = head.split(b"\r\n", 1)[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        return "not an HTTP answer"
    if parts[1][:1] != b"2" or len(parts[1]) != 3:
        return "HTTP " + _status_text(b" ".join(parts[1:]))
    return None


def _status_text(status: bytes) -> str:
    return status[:80].decode("ascii", "replace")


async def _connects(host: str, port: int) -> bool:
    return await tcp_failure(host, port, CONNECT_TIMEOUT_S) is None


async def _http_ok(host: str, port: int, path: str) -> bool:
    """True on any 2xx answer to `GET path`."""
    return await http_failure(host, port, path, HTTP_TIMEOUT_S) is None


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
            if listener_is_ours(port, child_pid):
                if config.ready.probe is ProbeKind.TCP:
                    return
                if await _http_ok(config.host, port, config.ready.path):
                    return
            elif on_stranger is not None:
                on_stranger()
        await anyio.sleep(probe_delay_s(time.monotonic() - started, config.ready.interval_s))
