"""Benchmarks (not run by the test command); results are printed as tables."""
