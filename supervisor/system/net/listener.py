"""One TCP LISTEN socket as a lookup reports it (pure)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Listener:
    address: str  # "127.0.0.1:4820", "0.0.0.0:4820", "[::]:4820", "[::1]:4820"
    uid: int | None
    inode: int | None  # None when the lookup method cannot tell
    pid: int | None  # set when the method reports it directly (psutil/lsof), else None


def format_address(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
