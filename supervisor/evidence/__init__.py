"""What we plant in every child (env tags) and record (the spawn ledger)."""
