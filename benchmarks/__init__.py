"""Benchmarks: timing, machine facts and reports (timing.py, probes.py, machine.py, report.py,
flops.py), reference-vs-runtime comparisons. The AVSBench evaluation (``avs eval``) lives in
``evaluation/``."""
