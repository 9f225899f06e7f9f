"""`load(path)`: read the file (refusing FIFOs, devices, huge files), decode, TOML, `parse`."""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import stat
import sys
import tomllib
from pathlib import Path
from types import MappingProxyType

from supervisor.config import dotenv
from supervisor.config.parse import parse
from supervisor.config.schema import Config, SidecarConfig
from supervisor.core import show
from supervisor.errors import ConfigError

MAX_CONFIG_BYTES = 4 << 20


def _read(path: Path) -> bytes:
    """The file's bytes; a FIFO, a device or a huge file is refused rather than read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        init = f"supervisor init {shlex.quote(str(path))}"
        remedy = f'create a commented starter config with "{init}", or pass --config'
        raise ConfigError(path, ["file not found"], remedy) from None
    except OSError as exc:
        raise ConfigError(path, [f"cannot be read: {exc.strerror or exc}"]) from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ConfigError(path, ["is a directory, not a file"])
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(path, ["is not a regular file"])
        if info.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(path, [f"is too large ({info.st_size} bytes) for a config file"])
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise ConfigError(path, [f"cannot be read: {exc.strerror or exc}"]) from None
    finally:
        os.close(fd)


_AT = re.compile(r"\s*\(at line (\d+), column (\d+)\)$|\s*\(at end of document\)$")


def toml_problem(message: str, text: str) -> str:
    """`line 5, column 6: invalid TOML: expected '=' ...: prot 8080` (the line quoted)."""
    found = _AT.search(message)
    what = message[: found.start()] if found else message
    what = what[:1].lower() + what[1:]
    if found is None:
        return show.printable(f"invalid TOML: {what}", 300)
    if found.group(1) is None:
        return show.printable(f"at the end of the file: invalid TOML: {what}", 300)
    line, column = int(found.group(1)), int(found.group(2))
    lines = text.splitlines()
    quoted = lines[line - 1].strip() if 0 < line <= len(lines) else ""
    shown = f": {show.printable(quoted, 80)}" if quoted else ""
    return show.printable(f"line {line}, column {column}: invalid TOML: {what}", 200) + shown


def load(path: Path) -> Config:
    """Read and validate the config file at `path`."""
    data = _read(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(path, [f"is not UTF-8 text (byte {exc.start})"]) from None
    # The guard against a file that crashes the parser sits here, once: deep nesting makes
    # tomllib (or a validator) recurse past the interpreter's limit; that is a bad config, not
    # a reason for the daemon to die on SIGHUP.
    try:
        raw = tomllib.loads(text)
    except RecursionError:
        raise ConfigError(path, ["is nested too deeply to be read"]) from None
    except Exception as exc:  # TOMLDecodeError, an integer too long to convert, ...
        raise ConfigError(path, [toml_problem(str(exc), text)]) from None
    try:
        # "{python}" is the interpreter this process runs on, as is: a venv's python is a
        # symlink to the base interpreter, and only the venv's path runs with its packages.
        config = parse(raw, path.absolute(), interpreter=sys.executable or None)
    except ConfigError:
        raise
    except RecursionError:
        raise ConfigError(path, ["is nested too deeply to be validated"]) from None
    return with_env_files(config, path)


def with_env_files(config: Config, path: Path) -> Config:
    """Each sidecar's `env_file` read into its `env` (its own `env` wins). Read at every load,
    so a reload sees the file's changes (and restarts the sidecars whose variables changed)."""
    problems: list[str] = []
    sidecars: list[SidecarConfig] = []
    for index, sidecar in enumerate(config.sidecars):
        if sidecar.env_file is None:
            sidecars.append(sidecar)
            continue
        key = f"sidecar[{index}].env_file"
        try:
            values = dotenv.parse(_read_env_file(sidecar.env_file))
        except dotenv.DotenvError as exc:
            problems.append(show.printable(f"{key}: {sidecar.env_file}: {exc}"))
            continue
        except ConfigError as exc:
            problems.append(show.printable(f"{key}: {sidecar.env_file}: {'; '.join(exc.problems)}"))
            continue
        env = {**values, **sidecar.env}
        sidecars.append(dataclasses.replace(sidecar, env=MappingProxyType(env)))
    if problems:
        raise ConfigError(path, problems)
    return dataclasses.replace(config, sidecars=tuple(sidecars))


def _read_env_file(path: Path) -> str:
    data = _read(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(path, [f"is not UTF-8 text (byte {exc.start})"]) from None
