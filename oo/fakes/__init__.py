"""Stand-in servers that speak real protocols, for tests, benchmarks and the demo (not shipped in the wheel)."""
