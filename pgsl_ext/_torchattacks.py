"""``pgsl_ext.attacks.JSMA``: the batched, exact JSMA behind torchattacks' interface.

Imported by :mod:`pgsl_ext.attacks` only when ``JSMA`` is first asked for, because this module
needs torchattacks and ``pgsl_ext`` does not.
"""

from __future__ import annotations

import math
import numbers

import torch
from torchattacks.attack import Attack
from torch import Tensor

from .attacks import JSMAResult, _check_arguments, run_jsma

__all__ = ["JSMA"]

# torchattacks' JSMA searches the features below 0.99 (theta > 0) or above 0.01 (theta < 0).
_TORCHATTACKS_DOMAIN_MARGIN = 0.01


class JSMA(Attack):
    r"""Jacobian-based saliency map attack (Papernot et al. 2016) with torchattacks' interface:
    a drop-in for ``torchattacks.JSMA`` that is batched, exact and O(N) in memory.

    ``atk = JSMA(model, theta=1.0, gamma=0.1); adv = atk(images, labels)`` returns what
    torchattacks' JSMA returns: images in ``[0, 1]`` (or normalised again after
    ``set_normalization_used``), on the attack's device. Every setting of
    ``torchattacks.Attack`` works as there: ``set_mode_default`` (target ``(labels + 1) % K``),
    ``set_mode_targeted_by_function``, ``set_mode_targeted_random``,
    ``set_mode_targeted_least_likely``, ``set_mode_targeted_by_label``,
    ``set_normalization_used``, ``set_model_training_mode``, ``set_device``. One mode is added:
    ``set_mode_untargeted`` is PGSL's non-targeted attack (pairs that lower the true class and
    raise the others, stopping once the label changes).

    Shared with torchattacks: the search domain (features ``< 0.99`` for ``theta > 0``, ``> 0.01``
    for ``theta < 0``), two features per iteration each moved by ``theta`` and clamped to
    ``[0, 1]``, the budget of ``ceil(N * gamma / 2)`` iterations (``N = C*H*W``; ``attacks.jsma``
    allows ``floor``), the stop once the prediction is the target, the saliency ``a |b|`` of the
    logits' Jacobian (``a``: the target's gradient summed over the pair, ``b``: the other classes'),
    and the first maximum in ``p * N + q`` order among equal scores. Where the saliency has no
    ties the adversarial images are the same.

    Differences, and why:

    - *The search is exact over every pair in O(N) memory* (:func:`pgsl_ext.ops.jsma_saliency_search`)
      instead of five ``(N, N)`` tensors per image (84 GiB each at 3x224x224), and the images
      run as one batch: one forward and one batched vector-Jacobian product per iteration for
      the images still running, instead of a backward per class per image.
    - *The gradients are the two products the search needs*, the target's and the sum of the
      other classes', rather than the ``K`` rows of the Jacobian summed afterwards: equal up to
      float rounding, which can reorder pairs whose scores tie to within rounding.
    - *An image with no valid pair left stops* (unsuccessful). torchattacks' ``argmax`` over an
      all-zero saliency map then returns feature 0 paired with itself, moves it by ``2 theta``
      and goes on.
    - *theta < 0 lowers features as intended*: torchattacks scores a pair by ``a |b|``, negative
      for every valid pair when ``theta < 0``, so its ``argmax`` always lands on a masked entry
      (feature 0 with itself); here the sign conditions follow the step
      (:func:`pgsl_ext.attacks.raises_chosen_class`) and the score is ``|a b|``.
    - *The default target is* ``(labels + 1) % K`` with ``K`` the model's class count;
      torchattacks hard-codes ``% 10``.
    - *The input is clamped to* ``[0, 1]`` *before the attack*; torchattacks clamps only its
      output (its model sees the unclamped image until the first step), which matters only for
      inputs outside ``[0, 1]``, e.g. by rounding after ``set_normalization_used``.

    After each call ``last_result`` holds the :class:`pgsl_ext.attacks.JSMAResult`
    (``success``, ``iterations`` per image) of the images in ``[0, 1]``.

    Args:
        model (nn.Module): maps ``(B, C, H, W)`` images (normalised, if
            ``set_normalization_used``) to ``(B, K)`` logits, ``K >= 2``.
        theta (float): the step per feature, non-zero. (Default: 1.0)
        gamma (float): the fraction of features that may change, in ``(0, 1]``. (Default: 0.1)

    Shape:
        images (Tensor[B, C, H, W]): float32 or float64 in ``[0, 1]`` (or normalised).
        labels (Tensor[B]): integer true labels in ``[0, K)``.
        output (Tensor[B, C, H, W]): the adversarial images, on the attack's device.

    Example::

        >>> atk = pgsl_ext.attacks.JSMA(model, theta=1.0, gamma=0.1)
        >>> adv_images = atk(images, labels)
    """

    def __init__(self, model, theta=1.0, gamma=0.1):
        super().__init__("JSMA", model)
        if isinstance(theta, bool) or not isinstance(theta, numbers.Real) or theta == 0 or not math.isfinite(theta):
            raise ValueError(f"JSMA: expected `theta` to be a finite non-zero number, but got {theta!r}")
        if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real) or not 0 < gamma <= 1:
            raise ValueError(f"JSMA: expected `gamma` in (0, 1], but got {gamma!r}")
        self.theta = theta
        self.gamma = gamma
        self.supported_mode = ["default", "targeted", "untargeted"]
        self._last_result = None  # underscored: torchattacks' __repr__ lists every other attribute

    @property
    def last_result(self):
        """The :class:`pgsl_ext.attacks.JSMAResult` of the last call (None before the first)."""
        return self._last_result

    def set_mode_untargeted(self, quiet=False):
        """PGSL's non-targeted attack: lower the true class and raise the others until the
        prediction is no longer the label (``pgsl_ext.attacks.jsma(..., targeted=False)``)."""
        self.attack_mode = "untargeted"
        self.targeted = False
        if not quiet:
            print("Attack mode is changed to 'untargeted'.")

    def forward(self, images, labels):
        r"""Overridden. ``images`` (Tensor[B, C, H, W]) in ``[0, 1]``, ``labels`` (Tensor[B]);
        returns the adversarial images (Tensor[B, C, H, W]) in ``[0, 1]``."""
        if not isinstance(images, Tensor) or not isinstance(labels, Tensor):
            got = type(images if not isinstance(images, Tensor) else labels).__name__
            raise TypeError(f"JSMA: expected `images` and `labels` to be tensors, but got {got}")
        if not labels.dtype.is_floating_point and labels.dtype != torch.bool:
            labels = labels.long()
        else:
            raise ValueError(f"JSMA: expected `labels` to be an integer tensor, but got {labels.dtype}")
        device = self.device if self.device is not None else images.device
        images = images.clone().detach().to(device)
        labels = labels.clone().detach().to(device)
        x = images.clamp(0.0, 1.0)

        untargeted = self.attack_mode == "untargeted"
        if untargeted:
            classes = labels
        elif self.targeted:
            classes = self.get_target_label(images, labels)
            if not isinstance(classes, Tensor):
                raise TypeError(
                    f"JSMA: expected the target map function to return a tensor of labels, but got {type(classes).__name__}"
                )
            classes = classes.to(device=device, dtype=torch.long)
        else:
            # The class count is known at the attack's first forward; an extra forward here
            # would also move a training-mode BatchNorm's statistics.
            classes = lambda num_classes: (labels + 1) % num_classes  # noqa: E731

        targeted = not untargeted
        given_target = targeted and isinstance(classes, Tensor)
        _check_arguments(
            self.get_logits, x, labels, given_target, classes if given_target else None,
            self.theta, self.gamma, (0.0, 1.0), "logits", _TORCHATTACKS_DOMAIN_MARGIN, op="JSMA",
            names=("labels", "target labels"),
        )  # fmt: skip
        n = math.prod(x.shape[1:])
        result: JSMAResult = run_jsma(
            self.get_logits,
            x,
            classes,
            targeted=targeted,
            theta=self.theta,
            budget=math.ceil(n * self.gamma / 2.0),
            clip=(0.0, 1.0),
            jacobian="logits",
            domain_margin=_TORCHATTACKS_DOMAIN_MARGIN,
            label_name="target labels" if targeted else "labels",
        )
        self._last_result = result
        return result.adversarial
