"""Plain-PyTorch reference implementations of every pgsl_ext op.

Readable first: these define what the ops compute. Tests compare the compiled
kernels against them and benchmarks time them side by side. The kernels never
fall back to these.
"""

from __future__ import annotations

from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["soft_threshold", "pixel_unshuffle_concat"]


def soft_threshold(x: Tensor, tau: Union[float, Tensor]) -> Tensor:
    """``sign(x) * max(|x| - tau, 0)``, the proximal operator of ``tau * ||x||_1``."""
    return torch.sign(x) * (x.abs() - tau).clamp_min(0)


def pixel_unshuffle_concat(x: Tensor, saliency: Tensor, factor: int = 2, reduce: str = "max") -> Tensor:
    """``cat([pixel_unshuffle(x, f), pool_f(saliency)], dim=1)`` with max or mean pooling.

    The unshuffle is spelled out as a reshape/permute (what ``F.pixel_unshuffle`` computes), so
    that it also holds for an empty batch, where ``F.pixel_unshuffle`` returns the wrong shape.
    """
    if reduce == "max":
        pooled = F.max_pool2d(saliency, factor)
    elif reduce == "mean":
        pooled = F.avg_pool2d(saliency, factor)
    else:
        raise ValueError(f"reduce must be 'max' or 'mean', got {reduce!r}")
    b, c, h, w = x.shape
    blocks = x.reshape(b, c, h // factor, factor, w // factor, factor)
    unshuffled = blocks.permute(0, 1, 3, 5, 2, 4).reshape(b, c * factor * factor, h // factor, w // factor)
    return torch.cat([unshuffled, pooled], dim=1)
