"""What one launch runs (pure): `{port}`, `{name}`, `{state_dir}` replaced in `command` items and
`env` values, and the port the sidecar really serves on (`port = "auto"`, a relocation)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from types import MappingProxyType

from supervisor.config.schema import SidecarConfig

PLACEHOLDERS = ("{port}", "{name}", "{state_dir}")


def uses_port(texts: Iterable[str]) -> bool:
    return any("{port}" in text for text in texts)


def substitute(text: str, values: dict[str, str]) -> str:
    # Only the three names: any other brace (a JSON argument, a shell snippet) is left alone.
    for key, value in values.items():
        text = text.replace(key, value)
    return text


def for_launch(config: SidecarConfig, *, port: int | None, state_dir: str) -> SidecarConfig:
    """The config of one launch on `port` (the configured one, an auto or a relocated one)."""
    values = {"{port}": "" if port is None else str(port), "{name}": config.name}
    values["{state_dir}"] = state_dir
    command = tuple(substitute(arg, values) for arg in config.command)
    env = MappingProxyType({k: substitute(v, values) for k, v in config.env.items()})
    ready = dataclasses.replace(
        config.ready, command=tuple(substitute(a, values) for a in config.ready.command)
    )
    health = dataclasses.replace(
        config.health, command=tuple(substitute(a, values) for a in config.health.command)
    )
    marker = config.marker
    if marker == " ".join(config.command):  # the default marker follows the real command
        marker = " ".join(command)
    return dataclasses.replace(
        config, command=command, env=env, marker=marker, port=port, ready=ready, health=health
    )
