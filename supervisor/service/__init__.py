"""User service files: rendering (pure) and installing them for this installation."""

from supervisor.service.commands import path_notes, service_path
from supervisor.service.install import default_kind, home, install, service_dir, spec_for, uninstall
from supervisor.service.templates import (
    LAUNCHD_LABEL,
    PLACEHOLDER,
    UNIT_NAME,
    Kind,
    ServiceError,
    ServiceSpec,
    file_name,
    is_generated,
    render,
    render_launchd,
    render_systemd,
)

__all__ = [
    "LAUNCHD_LABEL",
    "PLACEHOLDER",
    "UNIT_NAME",
    "Kind",
    "ServiceError",
    "ServiceSpec",
    "default_kind",
    "file_name",
    "home",
    "install",
    "is_generated",
    "path_notes",
    "render",
    "render_launchd",
    "render_systemd",
    "service_dir",
    "service_path",
    "spec_for",
    "uninstall",
]
