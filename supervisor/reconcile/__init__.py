"""The reconcile preflight: find who holds a sidecar's port, classify the holder, act."""
