"""Where the config and the state live (the only importer of platformdirs)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import platformdirs

APP_NAME = "sidecar-supervisor"
CONFIG_ENV = "SUPERVISOR_CONFIG"
STATE_DIR_ENV = "SUPERVISOR_STATE_DIR"


def config_path(cli_path: str | None, environ: Mapping[str, str] = os.environ) -> Path:
    """`--config`, then `$SUPERVISOR_CONFIG`, then `<user_config_dir>/supervisor.toml`."""
    if cli_path:
        return Path(cli_path).expanduser().absolute()
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV]).expanduser().absolute()
    return Path(platformdirs.user_config_dir(APP_NAME)) / "supervisor.toml"


def state_dir(
    cli_dir: str | None,
    configured: Path | None,
    environ: Mapping[str, str] = os.environ,
) -> Path:
    """`--state-dir`, then `$SUPERVISOR_STATE_DIR`, then the config's, then platformdirs."""
    if cli_dir:
        return Path(cli_dir).expanduser().absolute()
    if environ.get(STATE_DIR_ENV):
        return Path(environ[STATE_DIR_ENV]).expanduser().absolute()
    if configured is not None:
        return configured
    return Path(platformdirs.user_state_dir(APP_NAME))
