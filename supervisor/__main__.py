"""`python -m supervisor` entry point."""

from supervisor.cli import main

raise SystemExit(main())
