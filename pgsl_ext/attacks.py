"""Adversarial attacks built on the pgsl_ext ops.

:func:`jsma` is the Jacobian-based saliency map attack (Papernot et al. 2016) that PGSL's client
applies to every image, batched: per iteration one forward of the images still running, one
batched vector-Jacobian product (both cotangents at once) and one
:func:`pgsl_ext.ops.jsma_saliency_search`. Its plain-PyTorch definition is
:func:`pgsl_ext.reference.jsma`.

``JSMA`` is the same attack as a ``torchattacks.Attack`` (torchattacks' constructor, call, modes
and settings), defined in :mod:`pgsl_ext._torchattacks` and imported from there on first use, so
that ``pgsl_ext`` itself does not need torchattacks.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from typing import Callable, NamedTuple, Optional, Tuple, Union

import torch
from torch import Tensor

from . import ops

# JSMA is left out of __all__: `from pgsl_ext.attacks import *` must work without torchattacks.
__all__ = ["jsma", "JSMAResult"]


def __getattr__(name):
    # PEP 562: torchattacks is imported only by whoever asks for the class.
    if name == "JSMA":
        from ._torchattacks import JSMA

        return JSMA
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), "JSMA"])


class JSMAResult(NamedTuple):
    """What :func:`jsma` returns.

    Attributes:
        adversarial (Tensor[B, C, H, W]): the attacked images (the input's shape and dtype).
        perturbation (Tensor[B, C, H, W]): ``adversarial - x``, the saliency map ("Map") that
            PGSL's client concatenates to its input.
        success (Tensor[B], bool): the model's final prediction on ``adversarial`` differs from
            ``y`` (non-targeted) or equals ``target`` (targeted).
        iterations (Tensor[B], int64): pixel pairs changed per image (0 for an input that was
            already misclassified, or already at its target).
    """

    adversarial: Tensor
    perturbation: Tensor
    success: Tensor
    iterations: Tensor


def _check_arguments(
    model, x, y, targeted, target, theta, gamma, clip, jacobian, domain_margin, op="jsma", names=("y", "target")
):
    if not callable(model):
        raise TypeError(f"{op}: expected `model` to be callable (an nn.Module or a function), but got {type(model).__name__}")
    if not isinstance(x, Tensor) or x.dtype not in (torch.float32, torch.float64) or x.dim() < 2:
        got = f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(
            f"{op}: expected `x` to be a float32 or float64 tensor of shape (B, C, H, W) (or (B, *)), but got {got}"
        )
    batch = x.shape[0]

    def check_labels(t, name):
        if not isinstance(t, Tensor) or t.dtype not in (torch.int64, torch.int32) or tuple(t.shape) != (batch,):
            got = f"{t.dtype} tensor of shape {tuple(t.shape)}" if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{op}: expected `{name}` to be an int64 tensor of shape ({batch},), but got {got}")
        if t.device != x.device:
            raise ValueError(f"{op}: expected `{name}` on the device of `x` ({x.device}), but got {t.device}")

    check_labels(y, names[0])
    if not isinstance(targeted, bool):
        raise TypeError(f"{op}: expected `targeted` to be a bool, but got {type(targeted).__name__}")
    if targeted:
        if target is None:
            raise ValueError(f"{op}: `targeted=True` needs `target` (the class to reach per image)")
        check_labels(target, names[1])
    elif target is not None:
        raise ValueError(f"{op}: `target` was given but `targeted=False`; pass targeted=True to use it")
    if isinstance(theta, bool) or not isinstance(theta, numbers.Real) or theta == 0 or not math.isfinite(theta):
        raise ValueError(f"{op}: expected `theta` to be a finite non-zero number, but got {theta!r}")
    if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real) or not 0 < gamma <= 1:
        raise ValueError(f"{op}: expected `gamma` in (0, 1], but got {gamma!r}")
    if (
        not isinstance(clip, (tuple, list))
        or len(clip) != 2
        or not all(isinstance(c, numbers.Real) and math.isfinite(c) for c in clip)
        or not clip[0] < clip[1]
    ):
        raise ValueError(f"{op}: expected `clip` = (clip_min, clip_max) with clip_min < clip_max, but got {clip!r}")
    outside = ~((x >= clip[0]) & (x <= clip[1]))  # NaN is outside too
    if bool(outside.any()):
        raise ValueError(
            f"{op}: expected every entry of `x` within `clip` = {tuple(clip)}, but {int(outside.sum())} are not"
            f" (min {x.min().item()}, max {x.max().item()})"
        )
    if jacobian not in ("logits", "softmax"):
        raise ValueError(f"{op}: expected `jacobian` to be 'logits' or 'softmax', but got {jacobian!r}")
    if (
        isinstance(domain_margin, bool)
        or not isinstance(domain_margin, numbers.Real)
        or not math.isfinite(domain_margin)
        or domain_margin < 0
    ):
        raise ValueError(f"{op}: expected `domain_margin` to be a finite number >= 0, but got {domain_margin!r}")


def jsma(
    model: torch.nn.Module,
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
) -> JSMAResult:
    r"""Batched Jacobian-based saliency map attack (JSMA), two pixels per iteration.

    Per iteration, for the images still running: one forward pass; the prediction decides
    whether an image is finished (label no longer ``y`` when non-targeted, ``target`` reached
    when targeted); one batched vector-Jacobian product (two stacked cotangents) gives the
    gradients of the chosen class's output and of the sum of the other classes' outputs w.r.t.
    every input feature;
    :func:`pgsl_ext.ops.jsma_saliency_search` picks the pair; both its features move by
    ``theta``, are clamped to ``clip`` and leave the search domain. Finished images are never
    touched again; an image whose search finds no valid pair stops (unsuccessful).

    The search domain starts as the features ``< clip_max - domain_margin`` (``theta > 0``) or
    ``> clip_min + domain_margin`` (``theta < 0``). The budget is ``floor(N * gamma / 2)``
    iterations per image, ``N = C*H*W``.

    ``targeted=False`` is PGSL's non-targeted attack (chosen class ``y``, pairs that lower it
    and raise the others); ``targeted=True`` is Papernot et al.'s (chosen class ``target``).
    Either works with ``theta < 0`` (lowering features): the search's sign conditions follow
    the direction of the step (:func:`raises_chosen_class`).

    Args:
        model (nn.Module or callable): maps ``x``-shaped batches to one ``(B, K)`` tensor,
            ``K >= 2``. A module runs in eval mode; every submodule's train/eval mode is
            restored on exit. Gradients are taken w.r.t. the input only, so nothing accumulates
            in its parameters' ``.grad``. Autograd is enabled inside, also under ``no_grad`` or
            ``inference_mode``.
        x (Tensor[B, C, H, W]): float32 or float64 images (any ``(B, *)`` shape, ``B >= 0``),
            every entry within ``clip`` (checked).
        y (Tensor[B]): int64 true labels in ``[0, K)`` (checked at the first forward).
        targeted (bool): see above. target (Tensor[B], int64): required iff ``targeted``.
        theta (float): the step per pixel (non-zero; 1 saturates pixels in [0, 1]).
        gamma (float): the fraction of features that may change, in ``(0, 1]``.
        clip ((float, float)): ``(clip_min, clip_max)``, ``clip_min < clip_max``.
        jacobian (str): ``"logits"`` or ``"softmax"`` (gradients of the probabilities).
        domain_margin (float): ``>= 0``; see the search domain above.

    Returns:
        JSMAResult: ``(adversarial, perturbation, success, iterations)``. An input that is
        already misclassified (or already at its target) is returned unchanged with
        ``success=True`` and ``iterations=0``.

    Raises:
        ValueError: a bad argument value, named in the message (also labels outside
            ``[0, K)`` and ``x`` outside ``clip``).
        TypeError: ``model`` not callable or not returning one floating tensor, ``targeted``
            not a bool.
    """
    _check_arguments(model, x, y, targeted, target, theta, gamma, clip, jacobian, domain_margin)
    n = math.prod(x.shape[1:])
    with eval_mode(model):
        return run_jsma(
            model,
            x,
            (target if targeted else y).long(),
            targeted=targeted,
            theta=theta,
            budget=int(n * gamma / 2),
            clip=clip,
            jacobian=jacobian,
            domain_margin=domain_margin,
            label_name="target" if targeted else "y",
        )


def run_jsma(
    model,
    x: Tensor,
    classes: Union[Tensor, Callable[[int], Tensor]],
    *,
    targeted: bool,
    theta: float,
    budget: int,
    clip: Tuple[float, float],
    jacobian: str,
    domain_margin: float,
    label_name: str,
) -> JSMAResult:
    """The attack loop of :func:`jsma` on checked arguments, with the model's train/eval mode left
    as the caller set it and the iteration budget given directly (``torchattacks`` allows
    ``ceil(N * gamma / 2)`` where :func:`jsma` allows ``floor``).

    Args:
        model (callable): ``(b, C, H, W) -> (b, K)`` outputs.
        x (Tensor[B, C, H, W]): images within ``clip``.
        classes (Tensor[B], int64): the chosen class per image (``y`` or ``target``), or a
            function of the model's class count ``K`` that returns them.
        budget (int): iterations (pixel pairs) per image, ``>= 0``.
        label_name (str): the argument ``classes`` came from, for the error on a label ``>= K``.
        Others as in :func:`jsma`.
    """
    batch = x.shape[0]
    n = math.prod(x.shape[1:])
    feature_shape = x.shape[1:]
    lo, hi = float(clip[0]), float(clip[1])
    search_targeted = raises_chosen_class(targeted, theta)
    batched_vjp = True

    # The attack needs autograd even when called under no_grad or inference_mode.
    with torch.inference_mode(False), torch.enable_grad():
        adv = x.detach().clone().reshape(batch, n)
        domain = adv < hi - domain_margin if theta > 0 else adv > lo + domain_margin
        iterations = torch.zeros(batch, dtype=torch.long, device=x.device)
        success = torch.zeros(batch, dtype=torch.bool, device=x.device)
        rows = torch.arange(batch, device=x.device)
        for step in range(budget + 1):
            if rows.numel() == 0:
                break
            last = step == budget
            with torch.set_grad_enabled(not last):
                xa = adv[rows].reshape(rows.numel(), *feature_shape)
                if not last:
                    xa.requires_grad_(True)
                out = model(xa)
                if step == 0:
                    classes = check_model_output(out, rows.numel(), classes, label_name)
                if jacobian == "softmax":
                    out = out.softmax(dim=1)
                cls = classes[rows]
                pred = out.argmax(dim=1)
                reached = pred == cls if targeted else pred != cls
                success[rows] = reached
                if last:
                    break
                # The chosen class's one-hot rows and their complements (one_hot itself checks
                # its input's range every call, which costs more than this).
                chosen = torch.zeros_like(out).scatter_(1, cls[:, None], 1.0)
                cotangents = torch.stack([chosen, 1 - chosen])
                if batched_vjp:
                    try:
                        # One backward pass for both cotangents. The first try keeps the graph so
                        # that a model whose backward cannot be batched (an autograd.Function
                        # without vmap support, an op without a batching rule) still gets its
                        # two separate products.
                        grads = vjp(out, xa, cotangents, retain_graph=step == 0)
                    except RuntimeError:
                        if step != 0:
                            raise
                        batched_vjp = False
                if not batched_vjp:
                    grads = torch.stack([torch.autograd.grad(out, xa, c, retain_graph=True)[0] for c in cotangents])
                del out
            # Late iterations run a few images each, where every small indexing op counts as
            # much as the model: a selection that keeps every row is skipped.
            grads = grads.reshape(2, -1, n)
            if bool(reached.any()):
                go_on = ~reached
                rows, grads = rows[go_on], grads[:, go_on]
            p, q, found = ops.jsma_saliency_search(grads[0], grads[1], domain[rows], targeted=search_targeted)
            if not bool(found.all()):
                rows, p, q = rows[found], p[found], q[found]
            # p < q: both features of a pair move at once.
            at, pair = rows[:, None], torch.stack([p, q], dim=1)
            adv[at, pair] = (adv[at, pair] + theta).clamp(lo, hi)
            domain[at, pair] = False
            iterations[rows] += 1
        adversarial = adv.reshape(x.shape)
        return JSMAResult(adversarial, adversarial - x, success, iterations)


def vjp(out: Tensor, xa: Tensor, cotangents: Tensor, retain_graph: bool = False) -> Tensor:
    """Both vector-Jacobian products of one forward in one batched backward pass.

    Args:
        out (Tensor[b, K]): the model's outputs, computed from ``xa``.
        xa (Tensor[b, C, H, W]): the input that requires grad.
        cotangents (Tensor[2, b, K]): the chosen class's one-hot rows and their complements.

    Returns:
        Tensor[2, b, C, H, W]: ``cotangents[i]^T d out / d xa`` for ``i = 0, 1``.
    """
    return torch.autograd.grad(out, xa, cotangents, retain_graph=retain_graph, is_grads_batched=True)[0]


def raises_chosen_class(targeted: bool, theta: float) -> bool:
    """The ``targeted`` flag of :func:`pgsl_ext.ops.jsma_saliency_search` for one attack step.

    Moving a pair by ``theta`` changes the chosen class's output by about ``theta * a`` and the
    others' by ``theta * b``. A targeted attack wants the first up and the second down, i.e.
    ``a > 0, b < 0`` for ``theta > 0`` but ``a < 0, b > 0`` for ``theta < 0``; a non-targeted
    attack wants the opposite. The score ``-a b`` is the same either way.
    """
    return targeted if theta > 0 else not targeted


@contextlib.contextmanager
def eval_mode(model):
    """Puts an ``nn.Module`` in eval mode and restores every submodule's own mode on exit (a
    BatchNorm frozen in eval inside a training model stays frozen). Plain callables pass."""
    if not isinstance(model, torch.nn.Module):
        yield
        return
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def check_model_output(out, batch: int, classes, name: str) -> Tensor:
    """The model's first output: a (B, K) floating tensor, K >= 2, and every label < K.

    ``classes`` is the (B,) tensor of labels, or a function of ``K`` that returns it (a default
    target such as ``(y + 1) % K`` known only once the model has run); returns the labels."""
    if not isinstance(out, Tensor) or not out.is_floating_point():
        got = f"{out.dtype} tensor" if isinstance(out, Tensor) else type(out).__name__
        raise TypeError(f"jsma: expected `model` to return one floating (B, K) tensor of outputs, but got {got}")
    if out.dim() != 2 or out.shape[0] != batch or out.shape[1] < 2:
        raise ValueError(
            f"jsma: expected `model` to return (B, K) outputs with K >= 2 classes, but got shape {tuple(out.shape)}"
        )
    if callable(classes):
        classes = classes(out.shape[1])
    bad = (classes < 0) | (classes >= out.shape[1])
    if bool(bad.any()):
        raise ValueError(
            f"jsma: expected every label in `{name}` in [0, {out.shape[1]}) (the model has {out.shape[1]} classes),"
            f" but got {classes[bad][0].item()}"
        )
    return classes
