"""Side-by-side benchmarks of the supervisor (`python -m bench NAME`); see SPEC section 10."""
