"""The mu sweep (the paper's Figure 3): how well rpca removes the client's JSMA perturbation, as
MSE(rpca-recovered, clean) against rpca's relaxation ``mu``.

Two settings:

- ``image`` (the paper's): each JSMA-attacked image is one ``H x W`` matrix; rpca's low-rank
  part is compared with the clean image.
- ``activation`` (what the server really does): rpca of each of the 64 cut-layer channels the
  client sends for the attacked image, compared with the *clean activations*: the trained
  client's output for the clean image with an all-zero perturbation map, i.e.
  ``client.net(pixel_unshuffle_concat(x, 0))``, what the client would send if its JSMA had
  changed nothing.

The attacked images are the client's own: JSMA against its surrogate with the surrogate's
predicted label (as at inference), with the run's ``--jsma-theta`` / ``--jsma-gamma``.
"""

from __future__ import annotations

import math
import time
from typing import Optional, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

import pgsl_ext.ops

from ..data import Split
from ..train import TrainedRun

__all__ = ["DEFAULT_MUS", "DEFAULT_SWEEP_IMAGES", "DEFAULT_SWEEP_ITERS", "DEFAULT_SWEEP_TOL", "sweep_mu"]

DEFAULT_MUS = tuple(round(0.05 * k, 2) for k in range(1, 21))
# The trainer's default rpca cap (what the server runs). Each mu starts from the previous mu's
# sparse part (rpca's warm start), which saves about a third of the iterations of a sweep
# (bench/RESULTS.md, "rpca methods"); the result reports iterations and convergence per mu.
DEFAULT_SWEEP_IMAGES = 50
DEFAULT_SWEEP_ITERS = 200
DEFAULT_SWEEP_TOL = 1e-5


def _mse(a: Tensor, b: Tensor) -> float:
    return float((a.double() - b.double()).pow(2).mean())


def _sweep(attacked: Tensor, clean: Tensor, mus: Sequence[float], max_iter: int, tol: float, bar, batch: int) -> dict:
    """rpca of every ``(m, n)`` matrix of ``attacked (N, C, m, n)`` per mu, MSE of its low-rank part
    against ``clean``; each mu warm-started from the previous mu's sparse part."""
    table = {"mu": [], "mse": [], "mean_iterations": [], "converged_fraction": [], "seconds": [], "cpu_seconds": []}
    starts = [None] * len(attacked.split(batch))
    for mu in mus:
        start, cpu = time.perf_counter(), time.process_time()
        sq_error, iterations, converged = 0.0, 0.0, 0.0
        for i, (a, c) in enumerate(zip(attacked.split(batch), clean.split(batch))):
            result = pgsl_ext.ops.rpca(a, mu=mu, max_iter=max_iter, tol=tol, init=starts[i])
            starts[i] = result.sparse
            sq_error += float((result.low_rank.double() - c.double()).pow(2).sum())
            iterations += float(result.iterations.double().sum())
            converged += float(result.converged.double().sum())
            bar.update(len(a))
        matrices = attacked.shape[0] * attacked.shape[1]
        row = {
            "mu": mu,
            "mse": sq_error / attacked.numel(),
            "mean_iterations": iterations / matrices,
            "converged_fraction": converged / matrices,
            "seconds": time.perf_counter() - start,
            "cpu_seconds": time.process_time() - cpu,
        }
        for key, value in row.items():
            table[key].append(value)
    best = min(range(len(mus)), key=lambda i: table["mse"][i])
    return {
        **table,
        "best_mu": table["mu"][best],
        "best_mse": table["mse"][best],
        "mse_attacked": _mse(attacked, clean),
        "matrix_shape": list(attacked.shape[-2:]),
        "matrices_per_image": attacked.shape[1],
    }


def sweep_mu(
    run: TrainedRun,
    images: Split,
    *,
    mus: Optional[Sequence[float]] = None,
    progress: bool = True,
    max_iter: int = DEFAULT_SWEEP_ITERS,
    tol: float = DEFAULT_SWEEP_TOL,
    batch_size: int = 50,
    max_images: Optional[int] = DEFAULT_SWEEP_IMAGES,
) -> dict:
    """MSE(rpca low-rank part, clean) against ``mu`` on the run's JSMA-attacked ``images``, on
    whole images and on the cut-layer activations (see the module docstring).

    Args:
        run: a restored ``--defense pgsl`` run (its client's surrogate attacks the images and
            its client net gives the activations).
        images: the images (x in [0, 1], ``(N, C, H, W)``); the first ``max_images`` are used
            (None: all; the default :data:`DEFAULT_SWEEP_IMAGES` fits the time budget).
        mus: the values of mu (default 0.05, 0.10, ..., 1.00).
        max_iter, tol: rpca's iteration cap and tolerance per matrix (``pgsl_ext.ops.rpca``).
        batch_size: images per rpca call.

    Returns:
        dict (JSON-serialisable)::

            {"mus": [...], "num_images": N, "rpca": {"max_iter", "tol", "lam"}, "attack": text,
             "how": text,
             "images": {"mu": [...], "mse": [...], "mean_iterations": [...],
                        "converged_fraction": [...], "seconds": [...], "cpu_seconds": [...]
                        (one entry per mu: the table's columns),
                        "best_mu", "best_mse" (the minimising mu and its MSE),
                        "mse_attacked" (MSE of the attacked input itself, no rpca),
                        "matrix_shape", "matrices_per_image", "how"},
             "activations": {the same keys},
             "seconds", "cpu_seconds"}
    """
    op = "sweep_mu"
    if not isinstance(run, TrainedRun):
        raise TypeError(f"{op}: expected `run` to be a pgsl.train.TrainedRun, got {type(run).__name__}")
    if run.cfg.defense != "pgsl" or run.client.surrogate is None:
        raise ValueError(f"{op}: expected `run` to be a --defense pgsl run (it needs the client's JSMA surrogate), got --defense {run.cfg.defense} ({run.folder})")
    if not isinstance(images, Split):
        raise TypeError(f"{op}: expected `images` to be a pgsl.data.Split, got {type(images).__name__}")
    x = images.x
    if not x.is_floating_point() or x.dim() != 4 or len(x) == 0 or tuple(x.shape[1:]) != tuple(run.dataset.image_shape):
        raise ValueError(f"{op}: expected `images.x` to be a float (N, *{tuple(run.dataset.image_shape)}) tensor with N >= 1, got {x.dtype} {tuple(x.shape)}")
    if float(x.min()) < 0 or float(x.max()) > 1:
        raise ValueError(f"{op}: expected `images.x` in [0, 1], got values in [{float(x.min()):g}, {float(x.max()):g}]")
    mus = DEFAULT_MUS if mus is None else mus
    if isinstance(mus, (str, bytes)) or not isinstance(mus, Sequence) or not mus or not all(
        isinstance(m, (int, float)) and not isinstance(m, bool) and math.isfinite(m) and m > 0 for m in mus
    ):
        raise ValueError(f"{op}: expected `mus` to be a non-empty sequence of numbers > 0, got {mus!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"{op}: expected `max_iter` to be an integer >= 1, got {max_iter!r}")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol > 0:
        raise ValueError(f"{op}: expected `tol` to be a number > 0, got {tol!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"{op}: expected `batch_size` to be an integer >= 1, got {batch_size!r}")
    if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1):
        raise ValueError(f"{op}: expected `max_images` to be an integer >= 1 or None, got {max_images!r}")
    if max_images is not None:
        x = x[:max_images]
    mus = [float(m) for m in mus]

    start, cpu = time.perf_counter(), time.process_time()
    run.eval()
    client = run.client
    x = x.float().to(client.device)
    with torch.no_grad():
        x_adv = client.attack(x)
        perturbation = (x_adv - x).sum(1, keepdim=True)
        attacked_acts = torch.cat([client.net(client.ops.pixel_unshuffle_concat(a, p, 2)) for a, p in zip(x_adv.split(batch_size), perturbation.split(batch_size))])
        clean_acts = torch.cat([client.net(client.ops.pixel_unshuffle_concat(c, torch.zeros_like(c[:, :1]), 2)) for c in x.split(batch_size)])
    n = len(x)
    bar = tqdm(total=2 * n * len(mus), desc="mu sweep", unit="img", disable=not progress, dynamic_ncols=True)
    with bar:
        bar.set_postfix_str("images")
        images_result = _sweep(x_adv, x, mus, max_iter, tol, bar, batch_size)
        bar.set_postfix_str("activations")
        activations_result = _sweep(attacked_acts, clean_acts, mus, max_iter, tol, bar, batch_size)
    images_result["how"] = (
        "each JSMA-attacked image channel is one matrix; MSE between rpca's low-rank part and the clean image, "
        "over all pixels of all images (the paper's Figure 3 setting)"
    )
    activations_result["how"] = (
        "rpca of each cut-layer channel the client sends for the attacked image (client.net(pixel_unshuffle_concat("
        "x_adv, x_adv - x))); MSE of the low-rank part against the clean activations client.net("
        "pixel_unshuffle_concat(x, 0)) (the clean image with a zero perturbation map), over all channels and images"
    )
    return {
        "mus": mus,
        "num_images": n,
        "rpca": {"max_iter": max_iter, "tol": tol, "lam": "1/sqrt(max(m, n))", "warm_start": "each mu from the previous mu's sparse part"},
        "attack": (
            f"the client's JSMA against its surrogate with the surrogate's predicted label (theta {run.cfg.jsma_theta}, "
            f"gamma {run.cfg.jsma_gamma}); mean L0 {float(((x_adv - x).abs() > 1e-6).flatten(1).sum(1).double().mean()):.1f} pixels"
        ),
        "how": (
            f"MSE(rpca low-rank part, clean) against mu on {n} JSMA-attacked test images (the client's own JSMA); "
            f"rpca capped at {max_iter} iterations, tol {tol:g}, each mu warm-started from the previous mu's sparse part; "
            "'images': whole images (the paper's Figure 3), "
            "'activations': the cut-layer channels the server receives, against the clean image's activations "
            "(zero perturbation map)"
        ),
        "images": images_result,
        "activations": activations_result,
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
    }
