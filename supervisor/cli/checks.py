"""What `check-config` verifies beyond the schema: that each sidecar could start here.

Every command's program is resolved as the daemon would resolve it (the PATH of the sidecar's
environment: the daemon's own, with the sidecar's `env` over it; relative to its `cwd`), and the
files a launch needs (`cwd`, `env_file`) are checked to exist. A problem reads like a config
problem: `sidecar "api": command[0]: "pyhton3" is not found on PATH (...)`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from supervisor.config import SidecarConfig
from supervisor.core.show import printable
from supervisor.system import execshim

MAX_PATH_SHOWN = 160


def problems(sidecar: SidecarConfig, environ: Mapping[str, str] = os.environ) -> list[str]:
    """Why `sidecar` could not start on this machine (empty: nothing found)."""
    where = f'sidecar "{sidecar.name}"'
    found: list[str] = []
    cwd = sidecar.cwd
    if cwd is not None and not cwd.is_dir():
        what = "does not exist" if not cwd.exists() else "is not a directory"
        found.append(f'{where}: cwd: "{cwd}" {what}')
        cwd = None  # the commands below are judged from where they would be run otherwise
    env_file = getattr(sidecar, "env_file", None)  # a key of the orchestration round
    for path in env_file if isinstance(env_file, tuple | list) else [env_file]:
        if isinstance(path, Path) and not path.is_file():
            found.append(f'{where}: env_file: "{path}" does not exist')
    env = {**environ, **sidecar.env}
    commands = {"command": sidecar.command}
    if sidecar.health.command:
        commands["health.command"] = sidecar.health.command
    if sidecar.reclaim.consent_command:
        commands["reclaim.consent_command"] = sidecar.reclaim.consent_command
    for key, argv in commands.items():
        error = execshim.lookup_error(argv[0], cwd, env)
        if error is not None:
            found.append(f"{where}: {key}[0]: {_explain(argv[0], error, cwd, env)}")
    return [printable(p) for p in found]


def _explain(program: str, error: OSError, cwd: Path | None, env: Mapping[str, str]) -> str:
    denied = isinstance(error, PermissionError)
    if os.path.dirname(program):
        full = program if cwd is None else os.path.join(cwd, program)
        return f'"{full}" ' + ("is not executable" if denied else "does not exist")
    path = os.pathsep.join(os.get_exec_path(dict(env)))
    if len(path) > MAX_PATH_SHOWN:
        path = path[: MAX_PATH_SHOWN - 1] + "…"
    if denied:
        return f'"{program}" is found on PATH but is not executable (PATH={path})'
    return f'"{program}" is not found on PATH ({path}); give its absolute path or fix env.PATH'
