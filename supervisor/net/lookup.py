"""Every LISTEN socket on a port, whatever the address: netlink first, then the fallbacks."""

from __future__ import annotations

import sys
from collections.abc import Callable

from supervisor.net import fallbacks, netlink
from supervisor.net.listener import Listener


def find_listeners(port: int) -> tuple[Listener, ...]:
    """Every TCP socket in LISTEN state on `port`, whatever the address."""
    methods: list[Callable[[int], tuple[Listener, ...]]]
    if sys.platform == "linux":
        methods = [netlink.listeners, fallbacks.listeners_psutil]
    else:
        methods = [fallbacks.listeners_per_process]
    for method in methods:
        try:
            return method(port)
        except OSError:
            continue
    return fallbacks.listeners_lsof(port)


def anyone_listening(port: int) -> bool | None:
    """Cheap check (~50 us, netlink): is any socket listening on `port`? None: can't tell.

    While a child starts, this keeps each readiness probe far cheaper than a connect attempt,
    so the probing does not compete with the child's own start-up for the CPU.
    """
    try:
        return bool(netlink.listeners(port))
    except OSError:
        return None
