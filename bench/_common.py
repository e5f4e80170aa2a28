"""What the benchmark files share: the shape grid, byte counts, bench naming and the machine
facts of a results header. Devices (and the CUDA marks), input builders and the MNIST helpers are
the tests' own: ``tests/common_utils.py``.

Imported by ``bench/conftest.py`` (fixtures), the ``bench/test_bench_*.py`` files, the
tabulating modules (``bench/bandwidth.py``, ``bench/svt_rpca.py``, which read back the names and
``extra_info`` keys written here) and the script-style suites (``bench/bench_*.py``).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Dict, Sequence, Tuple

import torch

import pgsl_ext

# (B, C, H, W), float32: MNIST-sized client batches, a mid-network feature map, and a few
# megapixel images (32 MiB per tensor: far beyond any cache, so bandwidth-bound).
SHAPES: Tuple[Tuple[int, int, int, int], ...] = (
    (128, 1, 28, 28),
    (128, 64, 14, 14),
    (8, 1, 1024, 1024),
)
DTYPE = torch.float32
TAU = 0.5  # zeroes ~38% of a standard normal: both branches of the threshold are taken
FACTOR = 2

# The two bandwidth ceilings every op is compared with. Both move the bytes of the op's output
# once in and once out: "copy" into a tensor allocated once beforehand, "alloc_copy" into a
# fresh tensor every call (what an op that returns a new tensor pays for its output).
COPY_PROVIDERS = ("copy", "alloc_copy")

def shape_id(shape: Sequence[int]) -> str:
    """``(128, 1, 28, 28)`` -> ``"128x1x28x28"``."""
    return "x".join(str(int(n)) for n in shape)


def group_name(op: str, shape: Sequence[int], device: str) -> str:
    """The pytest-benchmark group of one op x shape x device: its providers side by side."""
    return f"{op} {shape_id(shape)} {device}"


def nbytes(*tensors: torch.Tensor) -> int:
    """Bytes held by the elements of ``tensors`` (each counted once, as read or written once)."""
    return sum(t.numel() * t.element_size() for t in tensors)


def out_numel(shape: Sequence[int], op: str) -> int:
    """Elements in the output of ``op`` for an input ``x`` of ``shape``."""
    b, c, h, w = shape
    if op == "soft_threshold":
        return b * c * h * w
    if op == "pixel_unshuffle_concat":
        return b * (c * FACTOR * FACTOR + 1) * (h // FACTOR) * (w // FACTOR)
    raise ValueError(f"out_numel: unknown op {op!r}")


def gbps(bytes_moved: float, seconds: float) -> float:
    return bytes_moved / seconds / 1e9 if seconds > 0 else math.nan


# --------------------------------------------------------------------------- the machine

REPO_ROOT = Path(__file__).resolve().parents[1]
# What the benchmarks write (bench/results.py, bench/bandwidth.py): left out of the "-dirty"
# check, or a rerun would always be dirty.
OUTPUT_PATHS = ("bench/RESULTS.md", "bench/results_*.png")


def git_commit() -> str:
    """``git rev-parse --short HEAD``, plus ``-dirty`` when tracked files (other than the
    benchmark outputs) differ from it; ``"unknown"`` outside a git checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        excludes = [f":(exclude,glob){p}" for p in OUTPUT_PATHS]
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", ".", *excludes], cwd=REPO_ROOT).returncode
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _spin(start_at: float, seconds: float, cpu: int, queue) -> None:
    # Busy-wait on one core and add up the wall-clock gaps (> 0.5 ms) in which this process
    # did not run: on a shared or over-committed VM the "cores" are not all there at once.
    try:
        os.sched_setaffinity(0, {cpu})
    except (AttributeError, OSError):
        pass
    while time.monotonic() < start_at:
        pass
    start = last = time.monotonic()
    lost = 0.0
    while last - start < seconds:
        now = time.monotonic()
        if now - last > 5e-4:
            lost += now - last
        last = now
    queue.put(1.0 - lost / (last - start))


def cpu_availability(seconds: float = 0.5) -> float:
    """Mean fraction of wall time each core actually ran while all of them were kept busy.

    1.0 on dedicated cores; about 0.5 when two vCPUs share one physical core. Multi-threaded
    CPU timings (OpenMP barriers wait for the slowest thread) are only meaningful near 1.0.
    """
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    # fork: the children run plain Python only, and must not spend seconds re-importing torch.
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    queue = ctx.Queue()
    start_at = time.monotonic() + 0.2
    procs = [ctx.Process(target=_spin, args=(start_at, seconds, cpu, queue)) for cpu in cpus]
    for p in procs:
        p.start()
    shares = [queue.get(timeout=60 + 10 * seconds) for _ in procs]
    for p in procs:
        p.join()
    return sum(shares) / len(shares)


def machine_summary() -> str:
    """One line for a results header: CPU model, logical CPUs, torch and its thread count."""
    return (f"{cpu_model()}, {os.cpu_count()} logical CPUs, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads)")


def environment() -> Dict[str, object]:
    """Machine and software facts for the results header (stored in the benchmark JSON)."""
    cuda = torch.cuda.is_available()
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "pgsl_ext_build": pgsl_ext.build_info(),
        "git_commit": git_commit(),
        "python": platform.python_version(),
    }
