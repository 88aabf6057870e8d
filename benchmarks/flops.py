"""FLOP counting of torch modules (2 per multiply-add) with torch's ``FlopCounterMode``; torch is
imported only when :func:`count_flops_torch` runs."""

from __future__ import annotations

__all__ = ["count_flops_torch"]


def count_flops_torch(module, inputs) -> int:
    """FLOPs of one forward call of ``module`` (2 per multiply-add), torch FlopCounterMode.

    ``inputs``: a tuple/list of positional arguments, a dict of keyword arguments, or a single
    argument. Runs under ``torch.no_grad()``; works with tensors on the meta device too.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    if not callable(module):
        raise TypeError(f"count_flops_torch: module must be callable, got {type(module).__name__}")
    if isinstance(inputs, dict):

        def call():
            return module(**inputs)
    elif isinstance(inputs, tuple | list):

        def call():
            return module(*inputs)
    else:

        def call():
            return module(inputs)

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        call()
    return int(counter.get_total_flops())
