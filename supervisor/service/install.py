"""Installing a service file for this installation: paths, atomic writes, enable hints.

`install` and `uninstall` return the lines to show; the CLI prints them.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import assert_never

from supervisor.service.templates import (
    LAUNCHD_LABEL,
    UNIT_NAME,
    Kind,
    ServiceError,
    ServiceSpec,
    file_name,
    is_generated,
    render,
)


def default_kind() -> Kind:
    return Kind.LAUNCHD if sys.platform == "darwin" else Kind.SYSTEMD


def home() -> Path:
    try:
        home = Path.home()
    except RuntimeError:
        home = Path("~")
    if not home.is_absolute():
        raise ServiceError(home, "is not a usable home directory", "set HOME to an absolute path")
    return home


def service_dir(kind: Kind, home: Path) -> Path:
    match kind:
        case Kind.SYSTEMD:
            xdg = os.environ.get("XDG_CONFIG_HOME", "")
            # The XDG spec says to ignore a relative value, and systemd does.
            base = Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".config"
            return base / "systemd" / "user"
        case Kind.LAUNCHD:
            return home / "Library" / "LaunchAgents"
        case _:
            assert_never(kind)


def _python() -> Path:
    # As is, never resolved: a venv's python is a symlink to the base interpreter, and only the
    # venv's path runs with the venv's packages.
    if not sys.executable:
        raise ServiceError(
            Path("python"), "(the interpreter) cannot be located", "run supervisor from its venv"
        )
    return Path(sys.executable).absolute()


def spec_for(config_arg: str | None) -> ServiceSpec:
    """The spec for this installation; raises ConfigError when the config does not load."""
    from supervisor import config
    from supervisor.system import paths

    path = paths.config_path(config_arg)
    cfg = config.load(path)
    return ServiceSpec(
        python=_python(),
        config=path,
        home=home(),
        shutdown_timeout_s=cfg.supervisor.shutdown_timeout_s,
    )


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ServiceError(path, f"cannot be read ({reason})", "check it and retry") from None


def _write(path: Path, text: str) -> None:
    """Write atomically (temp file + fsync + rename), replacing a symlink rather than its target."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(text)
                file.flush()
                os.fsync(file.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise ServiceError(
            path, f"cannot be written ({exc.strerror or exc})", "check the folder's permissions"
        ) from None


def _enable_commands(kind: Kind, path: Path, replaced: bool) -> list[str]:
    match kind:
        case Kind.SYSTEMD:
            if replaced:
                return [
                    f"systemctl --user daemon-reload && systemctl --user enable {UNIT_NAME}"
                    f" && systemctl --user restart {UNIT_NAME}"
                ]
            return [f"systemctl --user daemon-reload && systemctl --user enable --now {UNIT_NAME}"]
        case Kind.LAUNCHD:
            bootstrap = f"launchctl bootstrap gui/$(id -u) {path}"
            if replaced:
                return [f"launchctl bootout gui/$(id -u)/{LAUNCHD_LABEL}; {bootstrap}"]
            return [bootstrap]
        case _:
            assert_never(kind)


def install(kind: Kind, spec: ServiceSpec, *, force: bool) -> list[str]:
    """Write the service file (unless it is already up to date); the lines to show."""
    text = render(kind, spec)
    path = service_dir(kind, spec.home) / file_name(kind)
    existing = _read(path)
    if existing is not None and existing != text and not force:
        whose = (
            "written for another config or installation"
            if is_generated(existing)
            else 'not written by "supervisor service install"'
        )
        raise ServiceError(
            path,
            f"already exists with different content ({whose})",
            'compare it with "supervisor service print" and pass --force to replace it',
        )
    if kind is Kind.LAUNCHD:
        # launchd opens the log files but does not create their folder.
        try:
            spec.log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ServiceError(
                spec.log_dir, f"cannot be created ({exc.strerror or exc})", "check its permissions"
            ) from None
    replaced = existing is not None and existing != text
    lines = []
    if existing == text:
        lines.append(f"{path} is already installed and up to date")
    else:
        _write(path, text)
        lines.append(f"{'replaced' if replaced else 'wrote'} {path}")
    lines.append("enable and start it with:")
    lines += [f"  {command}" for command in _enable_commands(kind, path, replaced=replaced)]
    if kind is Kind.SYSTEMD:
        lines.append("to start it at boot and keep it running after you log out:")
        lines.append('  loginctl enable-linger "$USER"')
    return lines


def uninstall(kind: Kind, home: Path, *, force: bool) -> list[str]:
    """Remove the service file if we wrote it and nobody edited it since; the lines to show."""
    path = service_dir(kind, home) / file_name(kind)
    existing = _read(path)
    if existing is None and not path.is_symlink():
        return [f"{path} is not installed; nothing to remove"]
    if not force and (existing is None or not is_generated(existing)):
        raise ServiceError(
            path,
            'was not written by "supervisor service install" or was edited since',
            "remove it yourself or pass --force",
        )
    if kind is Kind.SYSTEMD and not force:
        wanted = path.parent / "default.target.wants" / UNIT_NAME
        if os.path.lexists(wanted):
            raise ServiceError(
                path,
                "is still enabled",
                f"run: systemctl --user disable --now {UNIT_NAME}, then retry",
            )
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ServiceError(
            path, f"cannot be removed ({exc.strerror or exc})", "check the folder's permissions"
        ) from None
    lines = [f"removed {path}"]
    match kind:
        case Kind.SYSTEMD:
            lines.append("stop it if it is still running, and make systemd forget it:")
            lines.append(f"  systemctl --user stop {UNIT_NAME}; systemctl --user daemon-reload")
        case Kind.LAUNCHD:
            lines.append("stop and unload it if it is still loaded:")
            lines.append(f"  launchctl bootout gui/$(id -u)/{LAUNCHD_LABEL}")
        case _:
            assert_never(kind)
    return lines
