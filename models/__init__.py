"""PyTorch definitions of every network in avs-runtime, and loading of the official checkpoints.

Imports torch. Nothing here imports ``export`` or ``runtime``.
"""
