"""`python -m supervisor` entry point (signals blocked first: see entry.py)."""

from supervisor.entry import main

raise SystemExit(main())
