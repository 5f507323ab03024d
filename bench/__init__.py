"""Benchmarks: each measures the machine's own limit in the same run and prints a JSON line last."""
