"""svt and rpca: pgsl_ext against torch.linalg.svd / torch.svd_lowrank / numpy / scipy (and
CuPy on a GPU, where installed), and the plain-PyTorch APG loop, side by side in one run.

Each case checks accuracy before timing: the max error against a float64 reference, relative
to the largest entry of the reference, must be at most twice torch's own error at the same
precision (plus float32 rounding). The error and the model FLOP count go into ``extra_info``;
``bench/svt_rpca.py`` reports speed-ups, errors and the share of the FLOP floor reached (model
FLOPs at the GEMM rate measured in the same run).
"""

from __future__ import annotations

import time
from typing import Callable, Dict

import numpy as np
import pytest
import torch

from pgsl_ext import ops, reference
from tests.common_utils import DEVICES, low_rank_plus_noise, random_matrices

DTYPE = torch.float32

# (name, batch, m, n, rank or None, tau): PGSL's MNIST activations (128 images x 64 channels of
# 14 x 14), mid-sized channels, and mammogram-sized channels (nearly low rank).
SVT_CASES = (
    ("8192x14x14", 8192, 14, 14, None, 1.0),
    ("64x64x64", 64, 64, 64, None, 2.0),
    ("4x512x512 rank 10", 4, 512, 512, 10, 5.0),
)


def _svd_flops(m: int, n: int) -> float:
    """Golub & Van Loan's count for an SVD with both factors (R-SVD), m >= n."""
    m, n = max(m, n), min(m, n)
    return 4.0 * m * m * n + 8.0 * m * n * n + 9.0 * n**3


def _matrices(batch, m, n, rank, device):
    """(float32 input, its float64 values): Gaussian, or rank-``rank`` plus 1% noise (the tests' builders)."""
    if rank is None:
        x = random_matrices((batch, m, n), torch.float64, "cpu", seed=0)
    else:
        x = low_rank_plus_noise(batch, m, n, rank, 0.01, 0, "cpu")
    return x.to(device=device, dtype=DTYPE), x.to(device)


def _rel_err(out: torch.Tensor, ref64: torch.Tensor) -> float:
    return ((out.double() - ref64).abs().amax() / ref64.abs().amax().clamp_min(1e-300)).item()


def _lowrank_svt(x, tau, rank, oversample=10, niter=2):
    u, s, v = torch.svd_lowrank(x, q=rank + oversample, niter=niter)
    return (u * (s - tau).clamp_min(0).unsqueeze(-2)) @ v.mT


def _numpy_svt(x, tau):
    u, s, vh = np.linalg.svd(x.cpu().numpy(), full_matrices=False)
    return torch.from_numpy((u * np.maximum(s - tau, 0)[..., None, :]) @ vh)


def _scipy_loop_svt(x, tau):
    import scipy.linalg

    out = np.empty(x.shape, dtype=np.float32)
    for i, a in enumerate(x.cpu().numpy()):
        u, s, vh = scipy.linalg.svd(a, full_matrices=False, lapack_driver="gesdd")
        out[i] = (u * np.maximum(s - tau, 0)) @ vh
    return torch.from_numpy(out)


def _cupy_svt(x, tau):
    import cupy

    a = cupy.asarray(x)
    u, s, vh = cupy.linalg.svd(a, full_matrices=False)
    return torch.as_tensor((u * cupy.maximum(s - tau, 0)[..., None, :]) @ vh, device=x.device)


def _svt_providers(device: str, rank) -> Dict[str, Callable]:
    p = {
        "pgsl_ext": lambda x, tau: ops.svt(x, tau),
        "torch.linalg.svd": reference.svt,
    }
    if rank is not None:
        gen = torch.Generator(device=device)
        p["pgsl_ext rank=20"] = lambda x, tau: ops.svt(x, tau, rank=20, generator=gen.manual_seed(0))
        p["torch.svd_lowrank q=30"] = lambda x, tau: _lowrank_svt(x, tau, 20)
    if device == "cpu":
        p["numpy.linalg.svd"] = _numpy_svt
        p["scipy gesdd loop"] = _scipy_loop_svt
    else:
        p["cupy.linalg.svd"] = _cupy_svt
    return p


@pytest.fixture(scope="module")
def gemm_flops_per_s():
    """The FLOP ceiling of this run: a large float32 GEMM on the same device and threads."""
    rates = {}

    def measure(device: str) -> float:
        if device not in rates:
            a = torch.randn(1024, 1024, device=device)
            torch.mm(a, a)
            best = float("inf")
            for _ in range(5):
                if device == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                torch.mm(a, a)
                if device == "cuda":
                    torch.cuda.synchronize()
                best = min(best, time.perf_counter() - t)
            rates[device] = 2 * 1024**3 / best
        return rates[device]

    return measure


def _time(benchmark, device, fn, rounds=None):
    if device == "cuda":
        def synced():
            out = fn()
            torch.cuda.synchronize()
            return out
        run = synced
    else:
        run = fn
    if rounds is not None:
        return benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=0)
    return benchmark(run)


PROVIDER_NAMES = ("pgsl_ext", "torch.linalg.svd", "pgsl_ext rank=20", "torch.svd_lowrank q=30",
                  "numpy.linalg.svd", "scipy gesdd loop", "cupy.linalg.svd")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", SVT_CASES, ids=lambda c: c[0])
@pytest.mark.parametrize("provider", PROVIDER_NAMES)
def test_svt(benchmark, gemm_flops_per_s, device, case, provider):
    name, batch, m, n, rank, tau = case
    providers = _svt_providers(device, rank)
    if provider not in providers:
        pytest.skip(f"{provider} does not apply to {name} on {device}")
    if provider.startswith("cupy"):
        pytest.importorskip("cupy")
    x, x64 = _matrices(batch, m, n, rank, device)
    ref64 = reference.svt(x.double(), tau)
    torch_err = _rel_err(reference.svt(x, tau), ref64)
    fn = lambda: providers[provider](x, tau)  # noqa: E731
    err = _rel_err(fn(), ref64)
    assert err <= 2 * torch_err + 1e-5, f"{provider}: error {err:.2e} vs torch {torch_err:.2e}"
    benchmark.group = f"svt {name} {device}"
    benchmark.extra_info.update(
        op="svt", shape=name, device=device, provider=provider, error=err,
        flops=batch * _svd_flops(m, n), gemm_flops_per_s=gemm_flops_per_s(device),
        threads=torch.get_num_threads() if device == "cpu" else None,
    )
    slow = provider == "scipy gesdd loop" and batch > 1000
    _time(benchmark, device, fn, rounds=3 if slow else None)


# ---------------------------------------------------------------------------- rpca

# PGSL's server step: 128 images x 64 channels of 14 x 14 cut-layer activations
# (conv-ReLU-BN output: standardised, rectified-then-normalised values), to convergence at
# the paper's mu = 0.55; plus mid-sized and mammogram-sized channels at a fixed iteration cap.
# Both providers run method="apg", so this measures the per-iteration speed of the same
# iterations; bench/bench_rpca_methods.py compares the methods (iterations and time to tol).
RPCA_CASES = (
    ("PGSL step 128x64x14x14", 8192, 14, 14, None, 1000),
    ("64x64x64", 64, 64, 64, None, 100),
    ("4x512x512 rank 10", 4, 512, 512, 20, 30),
)


def _activations(batch, m, n, device):
    g = torch.Generator().manual_seed(1)
    a = torch.relu(torch.randn(batch, m, n, generator=g))
    a = (a - a.mean(dim=(-2, -1), keepdim=True)) / a.std(dim=(-2, -1), keepdim=True)
    return a.to(device=device, dtype=DTYPE)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", RPCA_CASES, ids=lambda c: c[0])
@pytest.mark.parametrize("provider", ("pgsl_ext", "plain-PyTorch APG"))
def test_rpca(benchmark, gemm_flops_per_s, device, case, provider):
    name, batch, m, n, rank, max_iter = case
    x = _activations(batch, m, n, device) if rank is None else _matrices(batch, m, n, 10, device)[0]
    ours = ops.rpca(x, mu=0.55, max_iter=max_iter, rank=rank, method="apg")
    # The plain loop runs as many iterations as the slowest matrix needed, over the whole
    # batch (it cannot drop converged matrices cheaply); same maths, same stopping rule.
    iters = int(ours.iterations.max())
    if provider == "pgsl_ext":
        fn = lambda: ops.rpca(x, mu=0.55, max_iter=max_iter, rank=rank, method="apg")  # noqa: E731
        rounds = None if batch * m * n * max_iter < 1e9 else 3
    else:
        fn = lambda: reference.rpca(x, mu=0.55, max_iter=iters, method="apg")  # noqa: E731
        rounds = 1
        if rank is None:  # same algorithm: against float64, at most twice the plain loop's error
            exact = reference.rpca(x[:8].double(), mu=0.55, max_iter=max_iter, method="apg").low_rank
            plain = reference.rpca(x[:8], mu=0.55, max_iter=max_iter, method="apg").low_rank
            err, plain_err = ((r.double() - exact).norm() / exact.norm() for r in (ours.low_rank[:8], plain))
            assert err <= 2 * plain_err + 1e-5, f"rpca error {err:.1e} vs the plain loop's {plain_err:.1e}"
    benchmark.group = f"rpca {name} {device}"
    benchmark.extra_info.update(
        op="rpca", shape=name, device=device, provider=provider,
        iterations_mean=float(ours.iterations.double().mean()), iterations_max=iters,
        converged=float(ours.converged.double().mean()),
        flops=float(ours.iterations.double().sum()) * _svd_flops(m, min(n, rank + 10) if rank else n),
        gemm_flops_per_s=gemm_flops_per_s(device),
        threads=torch.get_num_threads() if device == "cpu" else None,
    )
    _time(benchmark, device, fn, rounds=rounds)
