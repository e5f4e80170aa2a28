"""Reconstruction metrics, one module for every inversion attack (breaching's ``analysis/metrics``).

All metrics compare ``[0, 1]`` images ``(N, C, H, W)``:

- ``mse``: mean over images of the per-image mean squared error;
- ``psnr``: mean over images of the per-image PSNR in dB with data range 1
  (``torchmetrics``; ``inf`` for an image reproduced exactly);
- ``ssim``: mean over images of the per-image SSIM (``torchmetrics``: 11x11 Gaussian window,
  sigma 1.5, data range 1);
- ``dcor``: the bias-corrected estimate of the squared distance correlation between the
  reconstructions and the references over the batch (U-centred distance matrices; Szekely &
  Rizzo 2014, "Partial distance correlation with methods for dissimilarities", sec. 2.3): about 0
  for independent images and 1 for an exact (or shifted and scaled) copy, slightly negative at
  times; ``None`` where it is not defined (fewer than four images, a constant batch). The plain
  sample distance correlation (:func:`pgsl.defenses.distance_correlation`, what NoPeek trains
  against) is biased towards 1 with few images of many pixels (always 1.000 for two images), so
  the report does not show it. ``dcor_bias_corrected``: the same number under its explicit name;
- ``classifier_accuracy``: the accuracy of the evaluator's classifier (one the attacker never
  saw, of another architecture than the client's surrogate and trained on other images, see
  :func:`evaluator_classifier`) on the reconstructions, against the true labels: how much of the
  class a reconstruction still shows. ``None`` when no classifier is given.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
from torch import Tensor

from ..data import Split
from ..models import fit_classifier, predict

__all__ = ["EvaluatorMLP", "bias_corrected_dcor2", "evaluator_classifier", "reconstruction_metrics"]


def bias_corrected_dcor2(x: Tensor, z: Tensor) -> Optional[float]:
    """Bias-corrected squared distance correlation of the rows of ``x`` and ``z`` (flattened
    per sample), Szekely & Rizzo 2014; None for fewer than 4 samples or a constant input."""
    n = len(x)
    if n < 4:
        return None

    def u_centred(a: Tensor) -> Tensor:
        d = torch.cdist(a, a)
        u = d - d.sum(0, keepdim=True) / (n - 2) - d.sum(1, keepdim=True) / (n - 2) + d.sum() / ((n - 1) * (n - 2))
        return u.fill_diagonal_(0)

    a, b = u_centred(x.flatten(1).double()), u_centred(z.flatten(1).double())
    # the inner product's 1 / (n (n - 3)) cancels in the ratio
    denominator = float(((a * a).sum() * (b * b).sum()).sqrt())
    return float((a * b).sum()) / denominator if denominator > 0 else None


def _check_images(name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a tensor of images (N, C, H, W), got {type(x).__name__}")
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"{name}: expected floating-point images (N, C, H, W), got {x.dtype} of shape {tuple(x.shape)}")
    if x.numel() and (bool(torch.isnan(x).any()) or float(x.min()) < -1e-6 or float(x.max()) > 1 + 1e-6):
        lo, hi = float(x.nan_to_num(0).min()), float(x.nan_to_num(0).max())
        raise ValueError(f"{name}: expected values in [0, 1] without NaN, got the range [{lo:g}, {hi:g}]")


@torch.no_grad()
def reconstruction_metrics(
    recon: Tensor,
    reference: Tensor,
    *,
    classifier: Optional[nn.Module] = None,
    labels: Optional[Tensor] = None,
) -> dict:
    """Metrics of reconstructions ``recon`` against ``reference`` (both ``(N, C, H, W)`` in [0, 1]).

    Returns ``{"images": N, "mse", "psnr", "ssim", "dcor", "dcor_bias_corrected", "classifier_accuracy",
    "per_image": {"mse", "psnr", "ssim"} (lists of N floats)}`` (see the module docstring).
    ``classifier`` (in eval mode) and ``labels`` ``(N,)`` go together: the classifier's accuracy
    on ``recon`` against ``labels``.
    """
    _check_images("recon", recon)
    _check_images("reference", reference)
    if recon.shape != reference.shape:
        raise ValueError(f"recon: expected the shape of reference {tuple(reference.shape)}, got {tuple(recon.shape)}")
    if len(recon) == 0:
        raise ValueError("recon: expected at least one image, got 0")
    if (classifier is None) != (labels is None):
        given, missing = ("classifier", "labels") if labels is None else ("labels", "classifier")
        raise ValueError(f"{missing}: needed with {given} (the classifier's accuracy needs both), got None")
    if labels is not None and (labels.dim() != 1 or len(labels) != len(recon)):
        raise ValueError(f"labels: expected shape ({len(recon)},), got {tuple(labels.shape)}")
    import torchmetrics.functional.image as tm  # an optional dependency: `pgsl evaluate` needs it

    recon, reference = recon.float().clamp(0, 1), reference.float().clamp(0, 1)
    mse = (recon - reference).pow(2).flatten(1).mean(1)
    psnr = tm.peak_signal_noise_ratio(recon, reference, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = tm.structural_similarity_index_measure(recon, reference, data_range=1.0, reduction="none")
    dcor = bias_corrected_dcor2(recon, reference)
    accuracy = None
    if classifier is not None:
        accuracy = float((predict(classifier, recon).cpu() == labels.cpu()).double().mean())
    return {
        "images": len(recon),
        "mse": float(mse.mean()),
        "psnr": float(psnr.mean()),
        "ssim": float(ssim.mean()),
        "dcor": dcor,
        "dcor_bias_corrected": dcor,
        "classifier_accuracy": accuracy,
        "per_image": {"mse": mse.tolist(), "psnr": psnr.tolist(), "ssim": ssim.tolist()},
    }


class EvaluatorMLP(nn.Sequential):
    """The evaluator's classifier: a two-hidden-layer perceptron (256, 128), an architecture
    unlike the client's convolutional surrogate, so adversarial images crafted against the
    surrogate (PGSL's JSMA) do not transfer to it by construction."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__(nn.Flatten(), nn.Linear(in_features, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, num_classes))


def evaluator_classifier(train: Split, *, num_classes: int = 10, epochs: int = 20, seed: int = 0) -> EvaluatorMLP:
    """The metric's classifier: an :class:`EvaluatorMLP` trained on ``train``. The evaluation
    trains it on the validation slice and the attackers' auxiliary images, disjoint from the
    client's training shard (the surrogate's data) and from the reconstruction targets."""
    if len(train) < 2:
        raise ValueError(f"train: expected at least 2 labelled images for the evaluator's classifier, got {len(train)}")
    if epochs < 1:
        raise ValueError(f"epochs: expected an integer >= 1, got {epochs!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = EvaluatorMLP(train.x[0].numel(), num_classes)
        return fit_classifier(model, train.x, train.y, epochs=epochs, generator=torch.Generator().manual_seed(seed))
