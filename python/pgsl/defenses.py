"""What the defences add to plain split learning, beside the networks: PGSL's three operations
(from ``pgsl_ext`` or its plain-PyTorch references), the Laplacian noise of ``--defense noise``
(Titcombe et al. 2021) and the distance correlation NoPeek trains against (Vepakomma et al.
2020), which the evaluation also reports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

import pgsl_ext.attacks
import pgsl_ext.ops
import pgsl_ext.reference

__all__ = ["Ops", "distance_correlation", "laplace_noise"]


@dataclass(frozen=True)
class Ops:
    """The three PGSL operations, from ``pgsl_ext`` (fast) or ``pgsl_ext.reference`` (plain PyTorch)."""

    name: str
    rpca: Callable
    pixel_unshuffle_concat: Callable
    jsma: Callable

    @staticmethod
    def named(name: str) -> "Ops":
        if name == "ext":
            return Ops("ext", pgsl_ext.ops.rpca, pgsl_ext.ops.pixel_unshuffle_concat, pgsl_ext.attacks.jsma)
        if name == "reference":
            r = pgsl_ext.reference
            return Ops("reference", r.rpca, r.pixel_unshuffle_concat, r.jsma)
        raise ValueError(f"--ops: expected 'ext' or 'reference', got {name!r}")


def laplace_noise(shape, scale: float, generator: torch.Generator, device) -> Tensor:
    """Laplace(0, scale) samples drawn from ``generator`` (inverse CDF)."""
    u = torch.rand(shape, generator=generator, device=device) - 0.5
    return -scale * u.sign() * torch.log1p(-2 * u.abs()).clamp_min(-80)


def distance_correlation(x: Tensor, z: Tensor) -> Tensor:
    """Sample distance correlation (Szekely et al. 2007) between the rows of ``x`` and ``z``
    (flattened per sample); differentiable; in [0, 1]."""

    def centred(a: Tensor) -> Tensor:
        d = torch.cdist(a, a)
        return d - d.mean(0, keepdim=True) - d.mean(1, keepdim=True) + d.mean()

    a, b = centred(x.flatten(1).double()), centred(z.flatten(1).double())
    dcov_xz = (a * b).mean().clamp_min(0)
    dvar = (a * a).mean() * (b * b).mean()
    return (dcov_xz / dvar.sqrt().clamp_min(1e-30)).sqrt().to(x.dtype)
