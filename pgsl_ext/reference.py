"""Plain-PyTorch reference implementations of every pgsl_ext op.

Readable first: these define what the ops compute. Tests compare the compiled
kernels against them and benchmarks time them side by side. The kernels never
fall back to these.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ._types import RPCAResult

__all__ = ["soft_threshold", "pixel_unshuffle_concat", "svt", "rpca", "RPCAResult", "jsma_saliency_search", "jsma"]


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


def jsma_saliency_search(
    grad_class: Tensor, grad_others: Tensor, domain: Tensor, *, targeted: bool, rows_per_chunk: int = 8
) -> Tuple[Tensor, Tensor, Tensor]:
    """Brute force over every pair: the definition of :func:`pgsl_ext.ops.jsma_saliency_search`.

    Builds the (N, N) matrices of ``a``, ``b`` and the score for ``rows_per_chunk`` rows at a
    time; ``argmax`` of the flattened upper triangle returns the first maximum, i.e. the
    smallest ``p * N + q`` among equal scores.
    """
    batch, n = grad_class.shape
    device = grad_class.device
    p_out = torch.full((batch,), -1, dtype=torch.long, device=device)
    q_out = torch.full((batch,), -1, dtype=torch.long, device=device)
    found = torch.zeros(batch, dtype=torch.bool, device=device)
    idx = torch.arange(n, device=device)
    upper = idx[:, None] < idx[None, :]
    for start in range(0, batch, rows_per_chunk):
        rows = slice(start, min(start + rows_per_chunk, batch))
        gc, go, dom = grad_class[rows], grad_others[rows], domain[rows]
        a = gc[:, :, None] + gc[:, None, :]
        b = go[:, :, None] + go[:, None, :]
        score = -a * b
        signs = (a > 0) & (b < 0) if targeted else (a < 0) & (b > 0)
        valid = (
            upper
            & dom[:, :, None]
            & dom[:, None, :]
            & signs
            & torch.isfinite(a)
            & torch.isfinite(b)
            & torch.isfinite(score)
        )
        masked = torch.where(valid, score, torch.full_like(score, float("-inf"))).flatten(1)
        if n == 0:
            continue
        best = masked.argmax(dim=1)
        ok = valid.flatten(1).any(dim=1)
        p_out[rows] = torch.where(ok, best // n, -1)
        q_out[rows] = torch.where(ok, best % n, -1)
        found[rows] = ok
    return p_out, q_out, found


def _jsma_masks(out: Tensor, classes: Tensor) -> Tuple[Tensor, Tensor]:
    chosen = torch.nn.functional.one_hot(classes, out.shape[1]).to(out.dtype)
    return chosen, 1 - chosen


def jsma(
    model,
    x: Tensor,
    y: Tensor,
    *,
    targeted: bool = False,
    target: Optional[Tensor] = None,
    theta: float = 1.0,
    gamma: float = 0.1,
    clip: Tuple[float, float] = (0.0, 1.0),
    jacobian: str = "logits",
    domain_margin: float = 0.0,
):
    """Plain-PyTorch batched JSMA: the definition of :func:`pgsl_ext.attacks.jsma`.

    One image at a time would be clearer still, but the model's numerics depend on the batch it
    sees, so this runs the same batches as the fast attack: every iteration, one forward of the
    images still running, two vector-Jacobian products (chosen class; sum of the others), the
    brute-force :func:`jsma_saliency_search`, and both pixels of each pair moved by ``theta``.
    Arguments are validated by :func:`pgsl_ext.attacks.jsma`; see it for their meaning.
    """
    from .attacks import JSMAResult, eval_mode, raises_chosen_class

    with eval_mode(model), torch.inference_mode(False), torch.enable_grad():
        batch = x.shape[0]
        n = math.prod(x.shape[1:])
        adv = x.detach().clone().reshape(batch, n)
        lo, hi = clip
        domain = adv < hi - domain_margin if theta > 0 else adv > lo + domain_margin
        classes = target if targeted else y
        budget = int(n * gamma / 2)
        iterations = torch.zeros(batch, dtype=torch.long, device=x.device)
        running = torch.ones(batch, dtype=torch.bool, device=x.device)
        success = torch.zeros(batch, dtype=torch.bool, device=x.device)
        for step in range(budget + 1):
            rows = running.nonzero().flatten()
            if rows.numel() == 0:
                break
            xa = adv[rows].reshape(rows.numel(), *x.shape[1:]).requires_grad_(True)
            out = model(xa)
            if jacobian == "softmax":
                out = out.softmax(dim=1)
            pred = out.argmax(dim=1)
            reached = pred == classes[rows] if targeted else pred != classes[rows]
            success[rows] = reached
            if step == budget:
                break
            chosen, others = _jsma_masks(out, classes[rows])
            g_class = torch.autograd.grad(out, xa, chosen, retain_graph=True)[0]
            g_others = torch.autograd.grad(out, xa, others)[0]
            running[rows[reached]] = False  # finished: never touched again
            go_on = ~reached
            rows, g_class, g_others = rows[go_on], g_class[go_on], g_others[go_on]
            # The sign conditions follow the step's direction: with theta < 0 a pair lowers the
            # chosen class when its gradient sum is positive.
            p, q, found = jsma_saliency_search(
                g_class.reshape(rows.numel(), n),
                g_others.reshape(rows.numel(), n),
                domain[rows],
                targeted=raises_chosen_class(targeted, theta),
            )
            running[rows[~found]] = False
            rows, p, q = rows[found], p[found], q[found]
            for pix in (p, q):
                adv[rows, pix] = (adv[rows, pix] + theta).clamp(lo, hi)
                domain[rows, pix] = False
            iterations[rows] += 1
        adversarial = adv.reshape(x.shape)
        return JSMAResult(adversarial, adversarial - x, success, iterations)


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
    init: Optional[Tensor] = None,
    method: str = "alternating",
) -> RPCAResult:
    """Robust PCA, batched, plain PyTorch: ``min F(L, S) = mu ||L||_* + mu lam ||S||_1 + 1/2 ||X - L - S||_F^2``.

    With ``mu=None``: continuation ``mu_k = max(0.9^k 0.99 ||X||_2, 1e-5 0.99 ||X||_2)``. Each matrix
    stops when ``||g||_F / ||X||_F < tol`` for a subgradient ``g`` of ``F`` at the new iterate; the
    loop keeps computing all matrices (finished ones are frozen), as a plain implementation does.

    ``method="apg"``: accelerated proximal gradient on ``(L, S)`` jointly (Lin et al. 2009; FISTA
    momentum, step 1/2, the gradient of the smooth term being 2-Lipschitz).

    ``method="alternating"``: ``L`` minimised out (the best ``L`` for a given ``S`` is
    ``svt(X - S, mu)``), FISTA with step 1 on what is left in ``S``, momentum restarted whenever
    it points uphill (O'Donoghue & Candes 2015). Same minimiser, same stopping rule.

    ``init``: the starting ``S`` (a warm start; ``L`` starts at zero, and both methods compute
    ``L`` from ``S`` first), projected onto the box ``|S_ij| <= sqrt(min(m, n)) ||X||_F / lam``,
    which holds the minimiser's ``S`` for every ``mu`` (so the projection only brings the start
    nearer to it).
    """
    if method not in ("alternating", "apg"):
        raise ValueError(f'rpca: expected `method` to be "alternating" or "apg", but got "{method}"')
    m, n = x.shape[-2:]
    lam = 1.0 / math.sqrt(max(m, n, 1)) if lam is None else lam
    tol = max(tol, 64 * torch.finfo(x.dtype).eps)
    batch_shape = x.shape[:-2]
    b = math.prod(batch_shape)
    X = x.reshape(b, m, n)
    if X.numel() == 0:  # nothing to iterate: converged at the start
        zeros = torch.zeros_like(x)
        return RPCAResult(zeros, zeros.clone(), x.new_zeros(batch_shape, dtype=torch.int64), x.new_ones(batch_shape, dtype=torch.bool))
    if mu is None:
        mu_k = 0.99 * torch.linalg.matrix_norm(X, 2)
    else:
        mu_k = torch.tensor(mu, dtype=X.dtype, device=X.device).expand(b)  # beyond the dtype: inf
    mu_floor = 1e-5 * mu_k
    L, Lp = torch.zeros_like(X), torch.zeros_like(X)
    if init is None:
        S = torch.zeros_like(X)
    else:  # projected onto a box holding the minimiser's S: |S*_ij| <= ||X||_* / lam <= sqrt(min(m, n)) ||X||_F / lam
        S = init.reshape(-1, m, n).to(X)
        box = (math.sqrt(min(m, n)) / lam * torch.linalg.vector_norm(X, dim=(-2, -1)))[:, None, None]
        S = torch.where(torch.isfinite(S), torch.minimum(torch.maximum(S, -box), box), S)
    Sp = S
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
        if method == "apg":
            YL, YS = L + beta * (L - Lp), S + beta * (S - Sp)
            half_grad = 0.5 * (YL + YS - X)
            L_new = svt(YL - half_grad, 0.5 * mu_k)
            S_new = soft_threshold(YS - half_grad, (0.5 * lam * mu_k)[:, None, None])
            excess = L_new + S_new - YL - YS
            residual = torch.sqrt(
                (2 * (YL - L_new) + excess).square().sum((-2, -1)) + (2 * (YS - S_new) + excess).square().sum((-2, -1))
            ) / x_norm
            restart = torch.zeros_like(active)
        else:
            Y = S + beta * (S - Sp)
            L_new = svt(X - Y, mu_k)
            S_new = soft_threshold(X - L_new, (lam * mu_k)[:, None, None])
            residual = torch.linalg.vector_norm(S_new - Y, dim=(-2, -1)) / x_norm  # dF(L_new, S_new) holds (S_new - Y, 0)
            restart = ((Y - S_new) * (S_new - S)).sum((-2, -1)) > 0
        ok = residual < tol
        if mu is None:
            ok = ok & (mu_k <= mu_floor)
            mu_k = torch.maximum(0.9 * mu_k, mu_floor)
        t_next = torch.where(restart, torch.ones_like(t), (1 + torch.sqrt(1 + 4 * t * t)) / 2)
        t_now = torch.where(restart, torch.ones_like(t), t)
        keep = active[:, None, None]
        Lp, L = torch.where(keep, L, Lp), torch.where(keep, L_new, L)
        Sp, S = torch.where(keep, S, Sp), torch.where(keep, S_new, S)
        tp, t = torch.where(active, t_now, tp), torch.where(active, t_next, t)
        iterations = torch.where(active, torch.full_like(iterations, k), iterations)
        converged = converged | (active & ok)
        active = active & ~ok
    shape = (*batch_shape, m, n)
    return RPCAResult(L.reshape(shape), S.reshape(shape), iterations.reshape(batch_shape), converged.reshape(batch_shape))
