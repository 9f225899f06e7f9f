"""Where the config, the state and the registry of running daemons live (the only importer of
platformdirs)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from supervisor.errors import PathError

APP_NAME = "sidecar-supervisor"
CONFIG_ENV = "SUPERVISOR_CONFIG"
STATE_DIR_ENV = "SUPERVISOR_STATE_DIR"
RUNTIME_DIR_ENV = "SUPERVISOR_RUNTIME_DIR"


def _expand(source: str, value: str) -> Path:
    try:
        return Path(value).expanduser().absolute()
    except RuntimeError:  # ~user of an unknown user, or no home directory
        raise PathError(source, value, "its ~ cannot be expanded (unknown user or home)") from None


def config_path(cli_path: str | None, environ: Mapping[str, str] = os.environ) -> Path:
    """`--config`, then `$SUPERVISOR_CONFIG`, then `<user_config_dir>/supervisor.toml`."""
    if cli_path:
        return _expand("--config", cli_path)
    if environ.get(CONFIG_ENV):
        return _expand(f"${CONFIG_ENV}", environ[CONFIG_ENV])
    import platformdirs  # only here: `status --state-dir` should not pay for it

    return Path(platformdirs.user_config_dir(APP_NAME)) / "supervisor.toml"


def log_file(cli_path: str) -> Path | None:
    """`--log-file PATH` (absolute against the current directory); "" means stderr."""
    return _expand("--log-file", cli_path) if cli_path else None


def state_dir(
    cli_dir: str | None,
    configured: Path | None,
    environ: Mapping[str, str] = os.environ,
) -> Path:
    """`--state-dir`, then `$SUPERVISOR_STATE_DIR`, then the config's, then platformdirs."""
    if cli_dir:
        return _expand("--state-dir", cli_dir)
    if environ.get(STATE_DIR_ENV):
        return _expand(f"${STATE_DIR_ENV}", environ[STATE_DIR_ENV])
    if configured is not None:
        return configured
    import platformdirs

    return Path(platformdirs.user_state_dir(APP_NAME))


def runtime_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """The folder of the per-user registry of running daemons.

    `$SUPERVISOR_RUNTIME_DIR`, else the user runtime dir: `$XDG_RUNTIME_DIR/sidecar-supervisor`
    on Linux. Where that is unset or unsafe (root in a container often has no /run/user/0),
    platformdirs falls back to `runtime-<uid>` in the temp dir, checked to be ours; we only
    silence its warning (commands must print nothing but their answer).
    """
    if environ.get(RUNTIME_DIR_ENV):
        return _expand(f"${RUNTIME_DIR_ENV}", environ[RUNTIME_DIR_ENV])
    import warnings

    import platformdirs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            found = Path(platformdirs.user_runtime_dir(APP_NAME))
        except OSError:  # its temp fallback is not ours (a planted link, another owner)
            found = None
    if found is None or not found.parent.is_dir():
        # platformdirs < 4.13 answers /run/user/<uid>/... even when that does not exist.
        import tempfile

        found = Path(tempfile.gettempdir()) / f"runtime-{os.getuid()}" / APP_NAME
    return found
