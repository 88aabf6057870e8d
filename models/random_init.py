"""Seeded random initialisation helpers for builds and tests without official weights."""

from __future__ import annotations

import torch
from torch import nn


def randomize_batchnorm(module: nn.Module, seed: int = 0, *, scale: float = 0.2) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters (seeded).

    Random-weight parity checks mean little when every BN is the identity; this makes them bite.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                c = m.running_mean.numel()
                m.running_mean.copy_(torch.randn(c, generator=g) * scale)
                m.running_var.copy_(1.0 + torch.rand(c, generator=g) * scale * 2)
                if m.affine:
                    m.weight.copy_(1.0 + torch.randn(c, generator=g) * scale)
                    m.bias.copy_(torch.randn(c, generator=g) * scale)
    return module
