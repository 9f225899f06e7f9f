"""Every LISTEN socket on a port, whatever the address: netlink first, then the fallbacks.

A lookup that fails is an error (`LookupFailed`), never an empty answer: "the port is free" is
only ever said when a method succeeded and found no listener.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import anyio

from supervisor.net import fallbacks, netlink
from supervisor.net.listener import Listener


class LookupFailed(OSError):
    """No method could tell who listens on the port (the reasons of each, in order)."""

    def __init__(self, port: int, reasons: list[str]) -> None:
        super().__init__(f"cannot tell who listens on port {port}: " + "; ".join(reasons))
        self.port = port
        self.reasons = reasons


def find_listeners(port: int) -> tuple[Listener, ...]:
    """Every TCP socket in LISTEN state on `port`, whatever the address.

    Raises LookupFailed when every method failed. Blocking (the lsof fallback can take
    seconds): call it from a worker thread in async code.
    """
    methods: list[tuple[str, Callable[[int], tuple[Listener, ...]]]]
    if sys.platform == "linux":
        methods = [("netlink", netlink.listeners), ("psutil", fallbacks.listeners_psutil)]
    else:
        methods = [("psutil", fallbacks.listeners_per_process)]
    methods.append(("lsof", fallbacks.listeners_lsof))
    reasons = []
    for name, method in methods:
        try:
            return method(port)
        except OSError as exc:
            reasons.append(f"{name}: {exc.strerror or exc}")
    raise LookupFailed(port, reasons)


async def find_listeners_async(port: int) -> tuple[Listener, ...]:
    """`find_listeners` for async code: netlink (~50 us) on the loop, the slow fallbacks in a
    worker thread."""
    if sys.platform == "linux":
        try:
            return netlink.listeners(port)
        except OSError:
            pass
    return await anyio.to_thread.run_sync(find_listeners, port)


def anyone_listening(port: int) -> bool | None:
    """Cheap check (~50 us, netlink): is any socket listening on `port`? None: can't tell.

    While a child starts, this keeps each readiness probe far cheaper than a connect attempt,
    so the probing does not compete with the child's own start-up for the CPU.
    """
    try:
        return bool(netlink.listeners(port))
    except OSError:
        return None
