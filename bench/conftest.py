"""Fixtures shared by the benchmark files: the device x shape grid, the bandwidth-ceiling
providers ("copy", "alloc_copy") and ``bench_provider``, which checks correctness and then
times one provider, recording what ``bench/bandwidth.py`` needs in ``benchmark.extra_info``.

Run the suite with ``python -m bench.table`` (which also writes the Markdown table), or
directly: ``python -m pytest bench --benchmark-json=out.json``.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Dict, Sequence, Tuple

import pytest
import torch

from bench._common import (
    COPY_PROVIDERS,
    SHAPES,
    cpu_availability,
    environment,
    group_name,
    nbytes,
    shape_id,
)
from tests.common_utils import DEVICES

CUDA_MIN_LOOP_S = 1e-3
_session_start: Dict[str, object] = {}


def pytest_sessionstart(session) -> None:
    # How loaded and how "real" the CPU was before the first timing and after the last one:
    # both explain a noisy run.
    _session_start["loadavg"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    _session_start["cpu_availability"] = cpu_availability()


def pytest_benchmark_update_machine_info(config, machine_info) -> None:
    after = {"cpu_availability_after": cpu_availability()}
    machine_info["pgsl_bench"] = {**environment(), **_session_start, **after}


@pytest.fixture(scope="module", params=DEVICES)
def device(request) -> str:
    return request.param


@pytest.fixture(scope="module", params=SHAPES, ids=shape_id)
def shape(request) -> Tuple[int, int, int, int]:
    return request.param


def _cuda_synchronized_perf_counter() -> float:
    # pytest-benchmark reads the timer before and after a loop of calibrated length; syncing
    # here waits for the queued kernels once per loop instead of once per call, so the sync
    # cost is spread over the loop and the queue stays full, as it would in a training step.
    torch.cuda.synchronize()
    return time.perf_counter()


def _copy_ceiling(provider: str, like: torch.Tensor) -> Tuple[Callable[[], torch.Tensor], int]:
    """A bandwidth-ceiling provider moving as many bytes as ``like`` (the op's output) holds.

    ``copy``: ``dst.copy_(src)`` into a tensor allocated once, up front. ``alloc_copy``:
    ``src.clone()``, a fresh tensor every call, as the ops allocate theirs. On the CPU the
    fresh allocation of a large tensor costs page faults; on CUDA the caching allocator hides it.
    Returns the callable and the bytes it moves (read + write).
    """
    src = torch.rand(like.numel(), dtype=like.dtype, device=like.device)
    if provider == "copy":
        dst = torch.empty_like(src)
        run = lambda: dst.copy_(src)  # noqa: E731
    elif provider == "alloc_copy":
        run = src.clone
    else:
        raise ValueError(f"_copy_ceiling: expected one of {COPY_PROVIDERS}, got {provider!r}")
    torch.testing.assert_close(run(), src, rtol=0, atol=0)
    return run, 2 * nbytes(src)


@pytest.fixture
def bench_provider(benchmark, device):
    """``run(op, provider, providers, inputs, expected, shape)`` times one provider of ``op``.

    ``providers`` maps provider names to functions of ``*inputs``; it holds ``"pgsl_ext"``,
    which is checked against ``expected`` (the reference's output) before anything is timed,
    as is the timed provider itself. ``"copy"`` and ``"alloc_copy"`` are the bandwidth
    ceilings for an output the size of ``expected``.
    """

    def run(
        op: str,
        provider: str,
        providers: Dict[str, Callable[..., torch.Tensor]],
        inputs: Sequence[torch.Tensor],
        expected: torch.Tensor,
        shape: Sequence[int],
    ) -> None:
        torch.testing.assert_close(providers["pgsl_ext"](*inputs), expected, rtol=0, atol=0)
        if provider in COPY_PROVIDERS:
            fn, bytes_moved = _copy_ceiling(provider, expected)
        else:
            fn = lambda: providers[provider](*inputs)  # noqa: E731
            torch.testing.assert_close(fn(), expected, rtol=0, atol=0)
            bytes_moved = nbytes(*inputs, expected)

        benchmark.group = group_name(op, shape, device)
        benchmark.extra_info.update(
            op=op,
            shape=shape_id(shape),
            device=device,
            provider=provider,
            bytes=bytes_moved,  # read + write, each element once
            out_bytes=nbytes(expected),
            allocates_output=provider != "copy",
            threads=torch.get_num_threads() if device == "cpu" else None,
            timer="perf_counter + cuda.synchronize" if device == "cuda" else "perf_counter",
        )
        if device == "cuda":
            # pytest-benchmark has no per-test timer option; these two private attributes (there
            # since 3.x) are the timer and the shortest timed loop. 1 ms loops make the one sync
            # per loop (~10 µs) negligible next to kernels of a few µs.
            if not (hasattr(benchmark, "_timer") and hasattr(benchmark, "_min_time")):
                pytest.fail("bench: this pytest-benchmark has no BenchmarkFixture._timer/_min_time to sync CUDA with")
            benchmark._timer = _cuda_synchronized_perf_counter
            benchmark._min_time = max(benchmark._min_time, CUDA_MIN_LOOP_S)
            torch.cuda.synchronize()
        benchmark(fn)

    return run
