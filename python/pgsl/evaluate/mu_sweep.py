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
predicted label (as at inference), with the run's ``--jsma-theta`` / ``--jsma-gamma``. Each mu
starts from the previous mu's sparse part (rpca's warm start), which saves about a third of the
iterations of a sweep (bench/RESULTS.md, "rpca methods").

The control, in each setting: rpca of the *clean* input itself, MSE against it. rpca's low-rank
part of a clean image is not the image: the control says how much of the attacked curve is rpca's
own loss rather than the attack left behind.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

import pgsl_ext.ops

from ..config import PGSL_DEFENSES
from ..data import Split
from ..runs import Run
from . import settings as st

__all__ = ["DEFAULT_MUS", "MuSweepSettings", "sweep_mu"]

DEFAULT_MUS = tuple(round(0.05 * k, 2) for k in range(1, 21))
_MUS = (
    lambda v: isinstance(v, (tuple, list)) and len(v) > 0 and all(st.POSITIVE[0](m) for m in v),
    "a non-empty sequence of numbers > 0",
)
_IMAGES = (lambda v: v is None or (st.is_integer(v) and v >= 1), "an integer >= 1 or None (all)")


@dataclass
class MuSweepSettings:
    """``mus`` swept; the first ``images`` images (None: all); rpca's ``max_iter`` and ``tol``
    per matrix (``pgsl_ext.ops.rpca``; the cap is the trainer's default); ``batch_size`` images
    per rpca call."""

    mus: Tuple[float, ...] = st.setting(DEFAULT_MUS, _MUS)
    images: Optional[int] = st.setting(50, _IMAGES)
    max_iter: int = st.setting(200, st.POSITIVE_INTEGER)
    tol: float = st.setting(1e-5, st.POSITIVE)
    batch_size: int = st.setting(50, st.POSITIVE_INTEGER)


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


def sweep_mu(run: Run, images: Split, *, settings=None, progress: bool = True) -> dict:
    """MSE(rpca low-rank part, clean) against mu on the run's JSMA-attacked ``images``, on
    whole images and on the cut-layer activations (see the module docstring).

    Args:
        run: a restored ``--defense pgsl`` run (its client's surrogate attacks the images and
            its client net gives the activations).
        images: the images (x in [0, 1], ``(N, C, H, W)``).
        settings: a :class:`MuSweepSettings` or a dict of its fields (None: the defaults).

    Returns:
        dict (JSON-serialisable)::

            {"mus": [...], "num_images": N, "rpca": {"max_iter", "tol", "lam", "warm_start"}, "attack": text,
             "how": text,
             "images": {"mu": [...], "mse": [...], "mean_iterations": [...],
                        "converged_fraction": [...], "seconds": [...], "cpu_seconds": [...]
                        (one entry per mu: the table's columns),
                        "best_mu", "best_mse" (the minimising mu and its MSE),
                        "mse_attacked" (MSE of the attacked input itself, no rpca),
                        "clean_control": {"mu", "mse", "mean_iterations", "best_mu", "best_mse"} (rpca of the
                        clean input itself against it: what rpca loses of an unattacked input),
                        "matrix_shape", "matrices_per_image", "how"},
             "activations": {the same keys},
             "seconds", "cpu_seconds"}
    """
    op = "sweep_mu"
    if not isinstance(run, Run):
        raise TypeError(f"{op}: expected `run` to be a pgsl.runs.Run, got {type(run).__name__}")
    if run.defense not in PGSL_DEFENSES or run.client.surrogate is None:
        raise ValueError(f"{op}: expected `run` to be a --defense pgsl run (it needs the client's JSMA surrogate), got --defense {run.defense} ({run.folder})")
    if not isinstance(images, Split):
        raise TypeError(f"{op}: expected `images` to be a pgsl.data.Split, got {type(images).__name__}")
    x = images.x
    if not x.is_floating_point() or x.dim() != 4 or len(x) == 0 or tuple(x.shape[1:]) != tuple(run.dataset.image_shape):
        raise ValueError(f"{op}: expected `images.x` to be a float (N, *{tuple(run.dataset.image_shape)}) tensor with N >= 1, got {x.dtype} {tuple(x.shape)}")
    if float(x.min()) < 0 or float(x.max()) > 1:
        raise ValueError(f"{op}: expected `images.x` in [0, 1], got values in [{float(x.min()):g}, {float(x.max()):g}]")
    s = st.resolve(MuSweepSettings, settings, f"{op}: `settings`")
    if s.images is not None:
        x = x[: s.images]
    mus = [float(m) for m in s.mus]
    max_iter, tol, batch_size = s.max_iter, s.tol, s.batch_size

    start, cpu = time.perf_counter(), time.process_time()
    run.eval()
    client = run.client
    x = x.float().to(client.device)
    with torch.no_grad():
        x_adv = run.attack_images(x)
        attacked_acts = torch.cat([client.activations(c, a) for c, a in zip(x.split(batch_size), x_adv.split(batch_size))])
        # the clean image as its own attacked version: an all-zero perturbation map
        clean_acts = torch.cat([client.activations(c, c) for c in x.split(batch_size)])
    n = len(x)
    bar = tqdm(total=4 * n * len(mus), desc="mu sweep", unit="img", disable=not progress, dynamic_ncols=True)
    with bar:
        bar.set_postfix_str("images")
        images_result = _sweep(x_adv, x, mus, max_iter, tol, bar, batch_size)
        bar.set_postfix_str("activations")
        activations_result = _sweep(attacked_acts, clean_acts, mus, max_iter, tol, bar, batch_size)
        # The control: rpca of the clean input itself. What it loses of a clean image bounds what
        # any mu can recover; the attacked curve is read against it.
        bar.set_postfix_str("clean control")
        for result, clean in ((images_result, x), (activations_result, clean_acts)):
            control = _sweep(clean, clean, mus, max_iter, tol, bar, batch_size)
            result["clean_control"] = {k: control[k] for k in ("mu", "mse", "mean_iterations", "best_mu", "best_mse")}
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
            "(zero perturbation map); 'clean_control' in each: rpca of the clean input itself, against it (what rpca "
            "loses of an unattacked input at each mu)"
        ),
        "images": images_result,
        "activations": activations_result,
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
    }
