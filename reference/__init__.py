"""PyTorch reference pipelines in the original code's control flow: the oracles of the tests and the
baselines of the benchmarks (``reference.acfpn``, ``reference.zero_shot``, ``reference.box``), and the
real test media made from ../shared/data (``reference.media``).

Imports torch, models/ and segment-anything; never imported by runtime/ or export/. These follow the
original code independently of the runtime: they share no preprocessing code with it.
"""
