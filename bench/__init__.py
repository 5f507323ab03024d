"""Benchmarks (`python -m bench.<name>`) and the load tools they share with the tests."""
