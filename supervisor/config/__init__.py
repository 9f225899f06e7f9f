"""The TOML config: `parse(mapping)` validates purely into frozen objects; `load(path)` reads."""

from supervisor.config.load import MAX_CONFIG_BYTES, load
from supervisor.config.parse import parse
from supervisor.config.schema import (
    NAME_RE,
    Config,
    ConsentMode,
    DaemonConfig,
    ForeignAction,
    LiveAction,
    LogFormat,
    LogLevel,
    OrphanAction,
    ProbeKind,
    ReadyConfig,
    ReclaimConfig,
    RestartConfig,
    RestartPolicy,
    SidecarConfig,
    SocketConfig,
    StopConfig,
)

__all__ = [
    "MAX_CONFIG_BYTES",
    "NAME_RE",
    "Config",
    "ConsentMode",
    "DaemonConfig",
    "ForeignAction",
    "LiveAction",
    "LogFormat",
    "LogLevel",
    "OrphanAction",
    "ProbeKind",
    "ReadyConfig",
    "ReclaimConfig",
    "RestartConfig",
    "RestartPolicy",
    "SidecarConfig",
    "SocketConfig",
    "StopConfig",
    "load",
    "parse",
]
