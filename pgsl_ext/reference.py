"""Plain-PyTorch reference implementations of every pgsl_ext op.

Readable first: these define what the ops compute. Tests compare the compiled
kernels against them and benchmarks time them side by side. The kernels never
fall back to these.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ._types import RPCAResult

__all__ = ["soft_threshold", "pixel_unshuffle_concat", "svt", "rpca", "RPCAResult"]


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


def svt(x: Tensor, tau: Union[float, Tensor]) -> Tensor:
    """Singular value thresholding ``U diag(max(s - tau, 0)) V^T`` via ``torch.linalg.svd``.

    ``x`` is ``(..., m, n)``; ``tau`` a float or a tensor of shape ``x.shape[:-2]``.
    """
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    tau = torch.as_tensor(tau, dtype=x.dtype, device=x.device)
    return (u * (s - tau[..., None]).clamp_min(0).unsqueeze(-2)) @ vh


def rpca(
    x: Tensor,
    *,
    mu: Optional[float] = 0.55,
    lam: Optional[float] = None,
    max_iter: int = 1000,
    tol: float = 1e-7,
) -> RPCAResult:
    """Robust PCA by accelerated proximal gradient (Lin et al. 2009), batched, plain PyTorch.

    Solves ``min mu ||L||_* + mu lam ||S||_1 + 1/2 ||X - L - S||_F^2`` per matrix (with
    ``mu=None``: continuation ``mu_k = max(0.9^k 0.99 ||X||_2, 1e-5 0.99 ||X||_2)``). Each matrix
    stops when the relative residual of the optimality conditions drops below ``tol``; the
    loop keeps computing all matrices (finished ones are frozen), as a plain implementation does.
    """
    m, n = x.shape[-2:]
    lam = 1.0 / math.sqrt(max(m, n, 1)) if lam is None else lam
    tol = max(tol, 64 * torch.finfo(x.dtype).eps)
    batch_shape = x.shape[:-2]
    X = x.reshape(-1, m, n)
    b = X.shape[0]
    if mu is None:
        mu_k = 0.99 * torch.linalg.matrix_norm(X, 2) if b else X.new_zeros(0)
    else:
        mu_k = X.new_full((b,), mu)
    mu_floor = 1e-5 * mu_k
    L, Lp, S, Sp = (torch.zeros_like(X) for _ in range(4))
    t = tp = X.new_ones(b)
    x_norm = torch.linalg.vector_norm(X, dim=(-2, -1))
    x_norm = torch.where(x_norm > 0, x_norm, torch.ones_like(x_norm))  # a zero X: residual 0
    active = torch.ones(b, dtype=torch.bool, device=x.device)
    converged = torch.zeros(b, dtype=torch.bool, device=x.device)
    iterations = torch.zeros(b, dtype=torch.int64, device=x.device)
    for k in range(1, max_iter + 1):
        if not bool(active.any()):
            break
        beta = ((tp - 1) / t)[:, None, None]
        YL, YS = L + beta * (L - Lp), S + beta * (S - Sp)
        half_grad = 0.5 * (YL + YS - X)
        L_new = svt(YL - half_grad, 0.5 * mu_k)
        S_new = soft_threshold(YS - half_grad, (0.5 * lam * mu_k)[:, None, None])
        excess = L_new + S_new - YL - YS
        residual = torch.sqrt(
            (2 * (YL - L_new) + excess).square().sum((-2, -1)) + (2 * (YS - S_new) + excess).square().sum((-2, -1))
        ) / x_norm
        ok = residual < tol
        if mu is None:
            ok = ok & (mu_k <= mu_floor)
            mu_k = torch.maximum(0.9 * mu_k, mu_floor)
        keep = active[:, None, None]
        Lp, L = torch.where(keep, L, Lp), torch.where(keep, L_new, L)
        Sp, S = torch.where(keep, S, Sp), torch.where(keep, S_new, S)
        tp, t = torch.where(active, t, tp), torch.where(active, (1 + torch.sqrt(1 + 4 * t * t)) / 2, t)
        iterations = torch.where(active, torch.full_like(iterations, k), iterations)
        converged = converged | (active & ok)
        active = active & ~ok
    shape = (*batch_shape, m, n)
    return RPCAResult(L.reshape(shape), S.reshape(shape), iterations.reshape(batch_shape), converged.reshape(batch_shape))
