"""Benchmarks (`python -m bench.<name>`) and the load tools they share with the tests. Each
measures the machine's own limit in the same run and prints a JSON line last."""
