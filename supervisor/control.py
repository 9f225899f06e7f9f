"""Placeholder until its issue lands."""

from __future__ import annotations

import argparse

from supervisor.errors import NotImplementedYetError


def status(args: argparse.Namespace) -> int:
    raise NotImplementedYetError(args.command)


def stop(args: argparse.Namespace) -> int:
    raise NotImplementedYetError(args.command)


def signal_daemon(args: argparse.Namespace, name: str) -> int:
    raise NotImplementedYetError(args.command)
