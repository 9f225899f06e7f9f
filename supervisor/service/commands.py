"""Sidecar commands that a service's minimal PATH would not find (or would find elsewhere).

A service manager does not start the daemon with the user's shell PATH, and sidecars inherit
the daemon's: a bare `python` or `node` that works in a terminal may be missing there, or be
another program (the system's python instead of a venv's).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import assert_never

from supervisor.config import SidecarConfig
from supervisor.service.templates import Kind

# systemd's compiled-in PATH for user services (DEFAULT_USER_PATH; systemd 252 on Debian 12:
# `systemd-path search-binaries-default`). Merged-bin systems use a subset, but there sbin is a
# link to bin, so a program found here is found there too.
SYSTEMD_USER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# launchd's PATH for agents (_PATH_STDPATH).
LAUNCHD_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"


def service_path(kind: Kind) -> str:
    match kind:
        case Kind.SYSTEMD:
            return SYSTEMD_USER_PATH
        case Kind.LAUNCHD:
            return LAUNCHD_PATH
        case _:
            assert_never(kind)


def _where(program: str, path: str | None) -> str | None:
    found = shutil.which(program, path=path)
    if found is None:
        return None
    # The folder resolved (/bin -> /usr/bin), the file not: a venv's python is a symlink to the
    # system's, yet it is another program (its own packages).
    folder, name = os.path.split(os.path.abspath(found))
    return os.path.join(os.path.realpath(folder), name)


def path_notes(
    kind: Kind, sidecars: Iterable[SidecarConfig], *, current_path: str | None = None
) -> list[str]:
    """One line per sidecar command whose bare program name the service would not find, or
    would find somewhere other than `current_path` (default: this process's PATH) does."""
    minimal = service_path(kind)
    here_path = os.environ.get("PATH", os.defpath) if current_path is None else current_path
    manager = "a systemd user service" if kind is Kind.SYSTEMD else "a launchd agent"
    lines = []
    for sidecar in sidecars:
        for key, argv in (
            ("command", sidecar.command),
            ("reclaim.consent_command", sidecar.reclaim.consent_command),
        ):
            if not argv or "/" in argv[0]:
                continue
            program = argv[0]
            there = _where(program, minimal)
            here = _where(program, here_path)
            what = f'sidecar "{sidecar.name}": {key} program "{program}"'
            if there is None:
                fix = f"give its absolute path (here: {here})" if here else "give its absolute path"
                if program.startswith("python"):
                    fix += ', or "{python}" for the daemon\'s own interpreter'
                lines.append(
                    f"{what} is not found in the PATH of {manager} ({minimal}); "
                    f"{fix}, or set PATH for the service"
                )
            elif here is not None and Path(here) != Path(there):
                lines.append(
                    f"{what} is {there} in the PATH of {manager}, but {here} here; "
                    "give the absolute path you mean"
                )
    return lines
