"""Process identity where there is no /proc (macOS): psutil, bound once by proctime."""

from __future__ import annotations

import psutil

# Kept equal to proctime's (which imports this module: it cannot import it back).
CREATE_TIME_TOLERANCE_S = 0.011
_GONE = (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied)


def cmdline(pid: int) -> tuple[str, ...] | None:
    try:
        return tuple(psutil.Process(pid).cmdline())
    except _GONE:
        return None


def owner_uid(pid: int) -> int | None:
    try:
        return psutil.Process(pid).uids().real
    except _GONE:
        return None


def create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except _GONE:
        return None


def is_alive(pid: int, created: float) -> bool:
    """Runs (not a zombie) and was created at `created`."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return abs(proc.create_time() - created) <= CREATE_TIME_TOLERANCE_S
    except _GONE:
        return False
