"""`supervisor port` (read-only diagnosis of a port's holders) and `supervisor mcp`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from supervisor.errors import (
    EXIT_OK,
)

if TYPE_CHECKING:
    from supervisor.reconcile import diagnose

from supervisor.cli.common import _out


def _cmd_port(args: argparse.Namespace) -> int:
    from supervisor.control import registry
    from supervisor.errors import EXIT_PORT_HELD
    from supervisor.reconcile import diagnose
    from supervisor.system import paths

    marker: str | None = args.marker or None
    # The same evidence as the daemon's: the default state dir's ledger, --state-dir's, and
    # with -c the config's state dir and the sidecar configured on this port.
    folders = [paths.state_dir(None, None)]
    if args.state_dir:
        folders.append(paths.state_dir(args.state_dir, None))
    sidecar = None
    if args.config:
        from supervisor import config

        cfg = config.load(paths.config_path(args.config))
        folders.append(paths.state_dir(None, cfg.supervisor.state_dir))
        sidecar = next((s for s in cfg.sidecars if s.port == args.port), None)
    known = registry.known_ledgers(folders)
    found, next_run = diagnose.diagnose(args.port, marker, known, sidecar)
    if args.json:
        _out(diagnose.render_json(args.port, found, next_run))
    else:
        _out(diagnose.render_text(args.port, found, marker, next_run))
    return EXIT_PORT_HELD if found else EXIT_OK


def _known_ledgers(state_dir_arg: str | None) -> list[diagnose.Known]:
    """The spawn ledgers the MCP tool `diagnose_port` reads: the default state dir's, --state-dir's
    and every registered daemon's (as `port` without -c)."""
    from supervisor.control import registry
    from supervisor.system import paths

    folders = [paths.state_dir(None, None)]
    if state_dir_arg:
        folders.append(paths.state_dir(state_dir_arg, None))
    return registry.known_ledgers(folders)


def _cmd_mcp(args: argparse.Namespace) -> int:
    from supervisor import mcp  # the optional MCP SDK: only here

    return mcp.serve(args.config, args.state_dir, _known_ledgers)
