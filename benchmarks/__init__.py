"""Benchmarks: timing harness (harness.py), reference-vs-runtime comparisons, evaluation."""
