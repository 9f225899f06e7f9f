"""The reconcile preflight (SPEC 5): who holds a sidecar's port, whose it is, and what to do.

Its face: `preflight.preflight` (run before every launch), `diagnose.diagnose` (`supervisor
port`), `sweep.sweep` (after an unclean exit). Inside: `holders` gathers facts, `evidence` turns
them into `classify.Evidence`, `classify` decides (pure), `consent` asks, `kill` acts. The
submodules are imported where used, so that importing one does not pull in the others.
"""

__all__ = ["classify", "consent", "diagnose", "evidence", "holders", "kill", "preflight", "sweep"]
