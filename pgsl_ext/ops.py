"""Typed wrappers for the ``torch.ops.pgsl_ext`` ops, with their fake kernels.

This is the only module that touches ``torch.ops.pgsl_ext``. Every op here is a real torch
custom op: it dispatches to CPU or CUDA kernels and works under ``torch.compile`` (fake kernels
below). ``soft_threshold`` and ``pixel_unshuffle_concat`` are differentiable through autograd
kernels registered in C++ (``csrc/autograd.cpp``: a Python autograd kernel would cost ~6 us per
call, as much as the op on a small tensor), twice over; under ``torch.func`` transforms the
wrappers below switch to Python autograd.Functions, which those transforms need. ``svt`` and
``rpca`` have an autograd kernel in the same file whose backward raises NotImplementedError.
Plain-PyTorch definitions of the same maths live in :mod:`pgsl_ext.reference`.
"""

from __future__ import annotations

import numbers
from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from ._types import RPCAResult

__all__ = ["soft_threshold", "pixel_unshuffle_concat", "jsma_saliency_search", "svt", "rpca", "RPCAResult"]

_ops = torch.ops.pgsl_ext
_INT64_MAX = 2**63 - 1


def _require_tensor(value, op: str, arg: str) -> None:
    if not isinstance(value, Tensor):
        raise TypeError(f"{op}: expected `{arg}` to be a torch.Tensor, but got {type(value).__name__}")


def _require_int64(value, op: str, arg: str) -> None:
    """An integer argument the schema takes as int64: a larger Python int would fail in the
    dispatcher with "Expected a value of type 'int' ... found type 'int'"."""
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        raise ValueError(f"{op}: expected `{arg}` to fit in 64 bits (at most {2**63 - 1}), got {value}")


def _check_same_device(op: str, *named: Tuple[str, Tensor]) -> None:
    """The fake kernels serve any call that involves a meta tensor, so they check devices as the
    real kernels do: without this a CPU call with one meta argument returns uninitialised memory."""
    first_name, first = named[0]
    for name, t in named[1:]:
        torch._check(
            t.device == first.device,
            lambda: f"{op}: expected `{name}` on the device of `{first_name}` ({first.device}), but got {t.device}",
        )


# --------------------------------------------------------------------------- soft_threshold


def soft_threshold(x: Tensor, tau: Union[float, Tensor]) -> Tensor:
    r"""Soft thresholding, the proximal operator of :math:`\tau \lVert x \rVert_1`.

    .. math:: y = \operatorname{sign}(x) \max(|x| - \tau, 0)

    Args:
        x (Tensor[...]): any shape and strides; float16, bfloat16, float32 or float64.
        tau (float or Tensor): threshold ``>= 0``. A tensor must broadcast *to* ``x``
            (e.g. one threshold per matrix, shape ``(..., 1, 1)``), live on ``x``'s device
            and hold no negative or NaN entry; it is cast to ``x``'s dtype.

    Returns:
        Tensor[...]: same shape, dtype, device and memory layout as ``x``. float16/bfloat16
        are computed in float32. NaN in ``x`` stays NaN; ``±inf`` stays ``±inf``.

    Gradient: ``d y / d x = 1`` where ``|x| > tau``, else ``0``; for a tensor ``tau``,
    ``d y / d tau = -sign(x)`` there (summed over the broadcast dims). Works with
    ``torch.autograd`` (double backward too) and, through this wrapper, with ``torch.func``
    (``grad``, ``vjp``, ``jacrev``, ``jvp``, ``jacfwd``, ``vmap``).

    Raises:
        TypeError: ``x`` not a floating tensor, or ``tau`` neither a real number nor a tensor.
        ValueError: ``tau`` negative or NaN, or a ``tau`` tensor that does not broadcast to ``x``.
    """
    _require_tensor(x, "soft_threshold", "x")
    if isinstance(tau, Tensor):
        if _functorch_active():
            return _SoftThresholdFunction.apply(x, tau)
        return _ops.soft_threshold.Tensor(x, tau)
    if isinstance(tau, bool) or not isinstance(tau, numbers.Real):
        raise TypeError(
            f"soft_threshold: expected `tau` to be a float >= 0 or a Tensor, but got {type(tau).__name__}"
        )
    if _functorch_active():
        return _SoftThresholdFunction.apply(x, float(tau))
    return _ops.soft_threshold.default(x, float(tau))


@torch.library.register_fake("pgsl_ext::soft_threshold")
def _soft_threshold_fake(x: Tensor, tau: float) -> Tensor:
    return torch.empty_like(x)


@torch.library.register_fake("pgsl_ext::soft_threshold.Tensor")
def _soft_threshold_tensor_fake(x: Tensor, tau: Tensor) -> Tensor:
    _check_same_device("soft_threshold", ("x", x), ("tau", tau))
    return torch.empty_like(x)


# Autograd of soft_threshold, pixel_unshuffle_concat, svt and rpca is registered in C++
# (csrc/autograd.cpp): a Python autograd kernel costs ~6 us per call. torch.func transforms
# cannot run a C++ autograd function, so under them the wrappers call these Python
# autograd.Functions instead (the same kernels, the same derivatives, plus forward mode).
# Only the wrappers check for transforms (one C call, ~0.1 us); torch.ops.pgsl_ext.* called
# directly inside torch.func.grad still raises.


def _functorch_active() -> bool:
    return torch._C._are_functorch_transforms_active()


class _SoftThresholdFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x, tau):
        return _ops.soft_threshold.Tensor(x, tau) if isinstance(tau, Tensor) else _ops.soft_threshold.default(x, tau)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, tau = inputs
        ctx.tau_is_tensor = isinstance(tau, Tensor)
        if ctx.tau_is_tensor:
            ctx.save_for_backward(x, tau)
            ctx.save_for_forward(x, tau)
        else:
            ctx.save_for_backward(x)
            ctx.save_for_forward(x)
            ctx.tau = tau

    @staticmethod
    def _passed(ctx, saved):
        x = saved[0]
        tau = saved[1] if ctx.tau_is_tensor else ctx.tau
        return x, tau, x.abs() > tau

    @staticmethod
    def backward(ctx, grad):
        x, tau, passed = _SoftThresholdFunction._passed(ctx, ctx.saved_tensors)
        grad_x = grad * passed if ctx.needs_input_grad[0] else None
        grad_tau = None
        if ctx.tau_is_tensor and ctx.needs_input_grad[1]:
            grad_tau = (grad * x.sign() * passed).neg().sum_to_size(tau.shape).to(tau.dtype)
        return grad_x, grad_tau

    @staticmethod
    def jvp(ctx, x_tangent, tau_tangent):
        x, tau, passed = _SoftThresholdFunction._passed(ctx, ctx.saved_tensors)
        out = x_tangent * passed if x_tangent is not None else torch.zeros_like(x)
        if tau_tangent is not None:
            out = out - x.sign() * passed * tau_tangent
        return out


# --------------------------------------------------------------------------- pixel_unshuffle_concat


def pixel_unshuffle_concat(x: Tensor, saliency: Tensor, factor: int = 2, reduce: str = "max") -> Tensor:
    r"""Space-to-depth of ``x`` with a pooled saliency map as one extra channel, in one pass.

    PGSL's client input: the attacked image is pixel-unshuffled and the attack's
    perturbation map, pooled to the same resolution, is concatenated.

    .. math::
        \mathrm{out}[b, c f^2 + i f + j, h, w] = x[b, c, h f + i, w f + j], \qquad
        \mathrm{out}[b, C f^2, h, w] = \operatorname{reduce}_{i, j < f}\, s[b, 0, h f + i, w f + j]

    The first ``C*f*f`` channels equal ``torch.nn.functional.pixel_unshuffle(x, f)`` exactly.

    Args:
        x (Tensor[B, C, H, W]): any strides; float16, bfloat16, float32 or float64.
        saliency (Tensor[B, 1, H, W]): same dtype and device as ``x``, any strides.
        factor (int): the downscale factor ``f >= 1``; ``H`` and ``W`` must be divisible by it.
        reduce (str): ``"max"`` (NaN propagates, as in ``max_pool2d``) or ``"mean"`` (summed in
            float32 for 16-bit dtypes) over each ``f x f`` block.

    Returns:
        Tensor[B, C*f*f + 1, H/f, W/f]: contiguous.

    Gradient: the inverse permutation for ``x``; for ``saliency`` the block's gradient goes to
    its arg-max (the first one, row-major, on ties) with ``"max"``, or is split evenly with
    ``"mean"``. Double backward works (the backward is linear in
    the output gradient; no gradient flows through the arg-max choice), and so does
    ``torch.func`` through this wrapper.

    Raises:
        ValueError: wrong rank, ``saliency`` not one channel, batch or spatial size mismatch,
            ``H``/``W`` not divisible by ``factor``, ``factor < 1``, unknown ``reduce``.
        TypeError: non-floating ``x`` or a dtype mismatch between ``x`` and ``saliency``.
    """
    _require_tensor(x, "pixel_unshuffle_concat", "x")
    _require_tensor(saliency, "pixel_unshuffle_concat", "saliency")
    if _functorch_active():
        return _PixelUnshuffleConcatFunction.apply(x, saliency, factor, reduce)
    return _ops.pixel_unshuffle_concat.default(x, saliency, factor, reduce)


class _PixelUnshuffleConcatFunction(torch.autograd.Function):
    """pixel_unshuffle_concat under torch.func transforms (see _SoftThresholdFunction). Inside a
    transform every call of an op goes through one of these Functions: their forward runs below
    the transform, where the C++ autograd kernels are allowed."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, saliency, factor, reduce):
        return _ops.pixel_unshuffle_concat.default(x, saliency, factor, reduce)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, saliency, ctx.factor, ctx.reduce = inputs
        ctx.channels = x.shape[1]
        ctx.save_for_backward(saliency)
        ctx.save_for_forward(saliency)

    @staticmethod
    def backward(ctx, grad):
        (saliency,) = ctx.saved_tensors
        grad_x, grad_s = _PixelUnshuffleConcatBackwardFunction.apply(
            grad, saliency, ctx.channels, ctx.factor, ctx.reduce
        )
        return grad_x, grad_s, None, None

    @staticmethod
    def jvp(ctx, x_tangent, saliency_tangent, *_):
        (saliency,) = ctx.saved_tensors
        return _unshuffle_jvp(x_tangent, saliency_tangent, saliency, ctx.channels, ctx.factor, ctx.reduce)


class _PixelUnshuffleConcatBackwardFunction(torch.autograd.Function):
    """The backward op under torch.func transforms: linear in grad_out, so its derivative is the
    forward's Jacobian (as PixelUnshuffleConcatBackward in csrc/autograd.cpp)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(grad_out, saliency, channels, factor, reduce):
        return _ops.pixel_unshuffle_concat_backward.default(grad_out, saliency, channels, factor, reduce)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, saliency, ctx.channels, ctx.factor, ctx.reduce = inputs
        ctx.save_for_backward(saliency)
        ctx.save_for_forward(saliency)

    @staticmethod
    def backward(ctx, grad_grad_x, grad_grad_s):
        (saliency,) = ctx.saved_tensors
        grad_grad_out = _unshuffle_jvp(grad_grad_x, grad_grad_s, saliency, ctx.channels, ctx.factor, ctx.reduce)
        return grad_grad_out, None, None, None, None

    @staticmethod
    def jvp(ctx, grad_out_tangent, *_):
        (saliency,) = ctx.saved_tensors
        return _PixelUnshuffleConcatBackwardFunction.apply(
            grad_out_tangent, saliency, ctx.channels, ctx.factor, ctx.reduce
        )


def _unshuffle_jvp(x_tangent, saliency_tangent, saliency, channels, factor, reduce):
    """The forward's Jacobian applied to the tangents, as unshuffle_jvp in csrc/autograd.cpp: the
    unshuffle of the x tangent; per block, the saliency tangent weighted by the backward's routing
    (one-hot at the arg-max for "max", 1/f^2 for "mean"). A None tangent counts as zeros."""
    b, _, h, w = saliency.shape
    f, c = factor, channels
    if x_tangent is None:
        x_tangent = saliency.new_zeros((b, c, h, w))
    part_x = x_tangent.reshape(b, c, h // f, f, w // f, f).permute(0, 1, 3, 5, 2, 4).reshape(b, c * f * f, h // f, w // f)
    if saliency_tangent is None:
        part_s = saliency.new_zeros((b, 1, h // f, w // f))
    else:
        ones_in_saliency_channel = saliency.new_zeros((b, c * f * f + 1, h // f, w // f))
        ones_in_saliency_channel[:, -1] = 1
        routing = _PixelUnshuffleConcatBackwardFunction.apply(ones_in_saliency_channel, saliency.detach(), c, f, reduce)[1]
        part_s = (saliency_tangent * routing).reshape(b, 1, h // f, f, w // f, f).sum((3, 5))
    return torch.cat([part_x, part_s], dim=1)


def _unshuffle_out_shape(x: Tensor, saliency: Tensor, factor: int) -> Tuple[int, int, int, int]:
    op = "pixel_unshuffle_concat"
    torch._check(x.dim() == 4, lambda: f"{op}: expected `x` of shape (B, C, H, W), got {tuple(x.shape)}")
    torch._check(
        saliency.dim() == 4 and saliency.shape[1] == 1,
        lambda: f"{op}: expected `saliency` of shape (B, 1, H, W), got {tuple(saliency.shape)}",
    )
    torch._check(factor >= 1, lambda: f"{op}: expected `factor` >= 1, got {factor}")
    _check_same_device(op, ("x", x), ("saliency", saliency))
    b, c, h, w = x.shape
    torch._check(
        c * factor * factor + 1 <= _INT64_MAX,
        lambda: f"{op}: expected C * factor**2 + 1 output channels to fit in int64, but got C = {c}, factor = {factor}",
    )
    torch._check(
        h % factor == 0 and w % factor == 0,
        lambda: f"{op}: expected the height and width of `x` divisible by `factor` = {factor}, got ({h}, {w})",
    )
    return b, c * factor * factor + 1, h // factor, w // factor


@torch.library.register_fake("pgsl_ext::pixel_unshuffle_concat")
def _pixel_unshuffle_concat_fake(x: Tensor, saliency: Tensor, factor: int = 2, reduce: str = "max") -> Tensor:
    return x.new_empty(_unshuffle_out_shape(x, saliency, factor))


@torch.library.register_fake("pgsl_ext::pixel_unshuffle_concat_backward")
def _pixel_unshuffle_concat_backward_fake(grad_out, saliency, channels, factor, reduce):
    _check_same_device("pixel_unshuffle_concat_backward", ("saliency", saliency), ("grad_out", grad_out))
    b, _, h, w = saliency.shape
    return saliency.new_empty((b, channels, h, w)), saliency.new_empty(saliency.shape)


# --------------------------------------------------------------------------- jsma_saliency_search


def jsma_saliency_search(
    grad_class: Tensor, grad_others: Tensor, domain: Tensor, *, targeted: bool
) -> Tuple[Tensor, Tensor, Tensor]:
    r"""The best pair of features for one step of a Jacobian-based saliency map attack.

    Per row, over pairs :math:`p < q` with both features in ``domain``:

    .. math::
        a = g^{c}_p + g^{c}_q, \qquad b = g^{o}_p + g^{o}_q, \qquad \mathrm{score} = -a\,b

    A pair is valid when ``a > 0 and b < 0`` (``targeted=True``: raise the chosen class, lower
    the others; Papernot et al. 2016) or ``a < 0 and b > 0`` (``targeted=False``: PGSL's
    non-targeted attack, lower the true class, raise the others). The valid pair with the
    largest score wins; among equal scores the smallest ``p * N + q``. A pair whose ``a``, ``b``
    or score is not finite (NaN or ``±inf`` in either gradient, or an overflow) is never valid.
    Scores are computed in the input dtype, identically on CPU and CUDA.

    Exact and O(B*N) memory: it returns the brute-force O(N^2) winner, pruning features that
    provably cannot be part of it. Time is close to linear in ``N`` for gradients such as a
    model's (1.3 ms for a random row of N = 60,000) but quadratic in the worst case, a row in
    which every feature is Pareto-optimal (15 s at N = 60,000).

    Args:
        grad_class (Tensor[B, N]): float32 or float64; the gradient of the chosen class's output
            w.r.t. each of ``N`` input features. Any strides.
        grad_others (Tensor[B, N]): same dtype and device; the gradient of the sum of the other
            classes' outputs.
        domain (Tensor[B, N]): bool; the features that may still be changed.
        targeted (bool, keyword-only): which validity conditions apply (see above).

    Returns:
        (p, q, found): ``p`` and ``q`` (Tensor[B], int64, ``p < q``) the winning pair, ``-1``
        where ``found`` (Tensor[B], bool) is False (no valid pair: e.g. fewer than two features
        left in the domain, ``N < 2``, or no pair meeting the sign conditions).

    Not differentiable: the outputs are indices; gradients never flow through this op.

    Raises:
        ValueError: ``grad_class`` not 2-d, or a shape mismatch between the three inputs.
        TypeError: a dtype other than float32/float64, ``grad_others`` of another dtype, or
            ``domain`` not bool.
        RuntimeError: inputs on different devices.
    """
    _require_tensor(grad_class, "jsma_saliency_search", "grad_class")
    _require_tensor(grad_others, "jsma_saliency_search", "grad_others")
    _require_tensor(domain, "jsma_saliency_search", "domain")
    if not isinstance(targeted, bool):
        raise TypeError(
            f"jsma_saliency_search: expected `targeted` to be a bool, but got {type(targeted).__name__}"
        )
    return _ops.jsma_saliency_search.default(grad_class, grad_others, domain, targeted=targeted)


@torch.library.register_fake("pgsl_ext::jsma_saliency_search")
def _jsma_saliency_search_fake(grad_class: Tensor, grad_others: Tensor, domain: Tensor, *, targeted: bool):
    op = "jsma_saliency_search"
    torch._check(
        grad_class.dim() == 2, lambda: f"{op}: expected `grad_class` of shape (B, N), got {tuple(grad_class.shape)}"
    )
    torch._check(
        grad_others.shape == grad_class.shape and domain.shape == grad_class.shape,
        lambda: f"{op}: expected `grad_others` and `domain` of the shape of `grad_class` {tuple(grad_class.shape)}",
    )
    _check_same_device(op, ("grad_class", grad_class), ("grad_others", grad_others), ("domain", domain))
    batch = grad_class.shape[0]
    return (
        grad_class.new_empty((batch,), dtype=torch.long),
        grad_class.new_empty((batch,), dtype=torch.long),
        grad_class.new_empty((batch,), dtype=torch.bool),
    )


# --------------------------------------------------------------------------- svt


def svt(
    x: Tensor,
    tau: Union[float, Tensor],
    *,
    rank: Optional[int] = None,
    oversample: int = 10,
    power_iters: int = 2,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    r"""Singular value thresholding, the proximal operator of :math:`\tau \lVert X \rVert_*`.

    .. math:: \operatorname{svt}(X, \tau) = U \operatorname{diag}(\max(\sigma - \tau, 0)) V^\top

    Batched over the leading dims, each matrix independent of the rest of its batch.

    Args:
        x (Tensor[..., m, n]): float32 or float64, any strides.
        tau (float or Tensor[...]): threshold ``>= 0``; a tensor gives one per matrix (shape
            ``x.shape[:-2]``, or broadcastable to it).
        rank (int, optional): ``None`` computes exactly: a batched one-sided Jacobi kernel when
            ``min(m, n) <= 64`` (high relative accuracy, no Gram matrix; QR-preconditioned when
            ``max(m, n) > 2 min(m, n)``), a blocked LAPACK /
            cuSOLVER SVD otherwise. ``rank=k`` uses a randomized SVD (Halko, Martinsson & Tropp
            2011) with a sketch of ``k + oversample`` columns; when the thresholded rank of some
            matrix reaches the sketch size the sketch is doubled (up to the exact path), so the
            result is never silently truncated.
        oversample (int): extra sketch columns for ``rank=k``.
        power_iters (int): power iterations (re-orthonormalised) for ``rank=k``.
        generator (torch.Generator, optional): for ``rank=k``; the result is deterministic for a
            given generator state.

    Returns:
        Tensor[..., m, n]: contiguous, ``x``'s dtype.

    NaN policy: a matrix holding NaN or Inf gives an all-NaN result for that matrix only; the
    other matrices are unaffected (``torch.linalg.svd`` raises for the whole batch). Every path
    rescales each matrix by an exact power of two, so any finite input works, from subnormal
    entries to entries near the dtype's largest value. A ``tau`` beyond the dtype's largest
    finite value acts as ``inf`` (zeros), as it does for ``reference.svt``.

    Determinism: the Jacobi and randomized paths are bitwise reproducible for the same input
    (and, for ``rank=k``, the same generator state) on one device; the randomized path's result
    depends on the batch it is computed in (one sketch is drawn for the whole batch), and the
    LAPACK path (``min(m, n) > 64``) may differ in the last bits across thread counts.

    Not differentiable (backward raises).

    Raises:
        ValueError: fewer than 2 dims, negative or NaN ``tau``, a ``tau`` tensor of the wrong
            shape, ``rank < 1``, ``oversample < 0``, ``power_iters < 0``.
        TypeError: ``x`` not float32/float64.
    """
    _require_tensor(x, "svt", "x")
    kwargs = dict(rank=rank, oversample=oversample, power_iters=power_iters, generator=generator)
    if isinstance(tau, Tensor):
        return _ops.svt.Tensor(x, tau, **kwargs)
    if isinstance(tau, bool) or not isinstance(tau, numbers.Real):
        raise TypeError(f"svt: expected `tau` to be a float >= 0 or a Tensor, but got {type(tau).__name__}")
    return _ops.svt.default(x, float(tau), **kwargs)


def _svt_fake(x, tau, *, rank=None, oversample=10, power_iters=2, generator=None):
    torch._check(x.dim() >= 2, lambda: f"svt: expected `x` of shape (..., m, n), got {tuple(x.shape)}")
    if isinstance(tau, Tensor):
        _check_same_device("svt", ("x", x), ("tau", tau))
    return x.new_empty(x.shape)


torch.library.register_fake("pgsl_ext::svt")(_svt_fake)
torch.library.register_fake("pgsl_ext::svt.Tensor")(_svt_fake)


# --------------------------------------------------------------------------- rpca


def rpca(
    x: Tensor,
    *,
    mu: Optional[float] = 0.55,
    lam: Optional[float] = None,
    max_iter: int = 1000,
    tol: float = 1e-7,
    rank: Optional[int] = None,
    init: Optional[Tensor] = None,
    method: str = "alternating",
    generator: Optional[torch.Generator] = None,
) -> RPCAResult:
    r"""Robust PCA, ``X = L + S`` with ``L`` low-rank and ``S`` sparse, batched over leading dims.

    Solves PGSL's relaxed problem per matrix

    .. math:: \min_{L, S}\ F(L, S) = \mu \lVert L \rVert_* + \mu \lambda \lVert S \rVert_1
              + \tfrac12 \lVert X - L - S \rVert_F^2

    Args:
        x (Tensor[..., m, n]): float32 or float64, any strides.
        mu (float or None): the relaxation (0.55 in the PGSL paper). ``None``: continuation,
            ``mu_0 = 0.99 ||X||_2`` shrinking by 0.9 per iteration to ``1e-5 mu_0``, which
            approximates exact RPCA ``min ||L||_* + lam ||S||_1 s.t. L + S = X``.
        lam (float, optional): sparsity weight; default ``1 / sqrt(max(m, n))``.
        max_iter (int): iteration cap per matrix, ``>= 0``; 0 returns the starting point
            (``L = 0``, ``S = init`` or 0), ``converged = False``.
        tol (float): ``>= 0``; per-matrix stop when ``||g||_F / ||X||_F < tol`` for a subgradient
            ``g`` of ``F`` at the returned ``(L, S)`` (the residual of the optimality conditions;
            with continuation, once ``mu`` has reached its floor). Floored at ``64 * eps`` of
            ``x``'s dtype (``7.6e-6`` for float32), below which the residual is rounding noise.
        rank (int, optional): use randomized SVT of this rank in every iteration (large,
            nearly low-rank matrices such as 512 x 512 mammogram channels).
        init (Tensor[..., m, n], optional): warm start, the starting sparse part ``S`` (e.g. the
            ``sparse`` of a nearby problem's result: the same image an epoch earlier, the previous
            ``mu`` of a sweep); x's dtype and device. ``L`` follows from ``S``. Entries beyond
            ``sqrt(min(m, n)) ||X||_F / lam``, a bound on the minimiser's ``S`` for every ``mu``,
            are clipped to it (never farther from the solution; a start far larger than ``x``
            cannot overflow).
        method (str): ``"alternating"`` (default): ``L`` minimised out exactly
            (``L = svt(X - S, mu)``), FISTA with step 1 on ``S`` with gradient restart (O'Donoghue &
            Candes 2015); ``"apg"``: accelerated proximal gradient on ``(L, S)``, step 1/2 (Lin,
            Ganesh, Wright, Wu, Chen & Ma 2009). The same minimiser and stopping rule;
            ``"alternating"`` needs several times fewer iterations (``bench/RESULTS.md``).
        generator (torch.Generator, optional): for ``rank=k``, as in :func:`svt`; without it
            the sketches draw from the global RNG.

    Returns:
        RPCAResult: ``(low_rank, sparse, iterations, converged)``. Matrices with
        ``min(m, n) <= 64`` run the whole loop inside the extension (fused, warm-started Jacobi
        SVT, converged matrices stop costing work); others run a batched loop that only computes
        matrices still iterating. A matrix holding NaN/Inf (in ``x`` or ``init``) yields all-NaN
        ``low_rank`` and ``sparse``, ``iterations = 0`` and ``converged = False``; the rest are
        unaffected. Zero-size matrices give empty results with ``converged = True``,
        ``iterations = 0``. Every finite input works, subnormal ones included (exact
        power-of-two rescaling); a ``mu``, ``lam`` or ``tol`` beyond the dtype's largest finite
        value acts as ``inf``.

    Not differentiable (backward raises). ``pgsl_ext.reference.rpca`` is the plain-PyTorch
    definition of both methods.
    """
    _require_tensor(x, "rpca", "x")
    if init is not None:
        _require_tensor(init, "rpca", "init")
    _require_int64(max_iter, "rpca", "max_iter")
    out = _ops.rpca.default(
        x, init, mu=mu, lam=lam, max_iter=max_iter, tol=tol, rank=rank, method=method, generator=generator
    )
    return RPCAResult(*out)


@torch.library.register_fake("pgsl_ext::rpca")
def _rpca_fake(
    x, init=None, *, mu=0.55, lam=None, max_iter=1000, tol=1e-7, rank=None, method="alternating", generator=None
):
    torch._check(x.dim() >= 2, lambda: f"rpca: expected `x` of shape (..., m, n), got {tuple(x.shape)}")
    if init is not None:
        _check_same_device("rpca", ("x", x), ("init", init))
    batch = x.shape[:-2]
    return (
        x.new_empty(x.shape),
        x.new_empty(x.shape),
        x.new_empty(batch, dtype=torch.int64),
        x.new_empty(batch, dtype=torch.bool),
    )
