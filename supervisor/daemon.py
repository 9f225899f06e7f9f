"""Placeholder until its issue lands."""

from __future__ import annotations

import argparse

from supervisor.errors import NotImplementedYetError


def main(args: argparse.Namespace) -> int:
    raise NotImplementedYetError(args.command)
