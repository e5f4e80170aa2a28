"""Shared test helpers: devices (CUDA marked, never silently dropped), dtypes, layouts."""

import os

import pytest
import torch

import pgsl_ext

REQUIRE_CUDA = os.environ.get("PGSL_REQUIRE_CUDA", "") == "1"
HAVE_CUDA = torch.cuda.is_available() and pgsl_ext.build_info()["cuda"]

# With PGSL_REQUIRE_CUDA=1 the CUDA cases are not skipped: on a machine without a GPU (or a
# build without CUDA kernels) they fail instead.
cuda = pytest.mark.skipif(
    not HAVE_CUDA and not REQUIRE_CUDA,
    reason="needs a CUDA device and a build with CUDA kernels (PGSL_REQUIRE_CUDA=1 fails instead)",
)
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, cuda])]
FLOAT_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
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
