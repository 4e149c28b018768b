"""Helpers shared by the fixture scripts in this folder."""
from __future__ import annotations

import math

import torch


def randomize_(module: torch.nn.Module, seed: int) -> None:
    """Seeded weights, drawn in float64 from one generator in named_parameters() order, then cast:
    matrices and kernels N(0, 1/fan_in); 1-D `*weight` (norm scales) 1 + 0.1 N(0, 1); other 1-D
    0.1 N(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:
                v = torch.randn(p.shape, generator=g, dtype=torch.float64) / math.sqrt(p[0].numel())
            elif name.endswith("weight"):
                v = 1.0 + 0.1 * torch.randn(p.shape, generator=g, dtype=torch.float64)
            else:
                v = 0.1 * torch.randn(p.shape, generator=g, dtype=torch.float64)
            p.copy_(v.to(p.dtype))
