"""Inputs for tests, benchmarks and the oracle comparison (not used by the library itself)."""
