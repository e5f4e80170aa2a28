"""soft_threshold(x, tau): pgsl_ext against plain-torch alternatives, over device x shape.

Providers: ``pgsl_ext``; ``torch_composition``, ``sign(x) * (|x| - tau).clamp_min(0)``, which
is exactly :func:`pgsl_ext.reference.soft_threshold` (so the reference is timed once, under
this name, and used as the correctness oracle); ``F.softshrink``, ATen's fused kernel; and the
bandwidth ceilings ``copy`` / ``alloc_copy`` (see ``conftest.py``).
"""

import pytest
import torch
import torch.nn.functional as F

from bench._common import COPY_PROVIDERS, DTYPE, TAU
from pgsl_ext import ops, reference

OP = "soft_threshold"
PROVIDERS = {
    "pgsl_ext": lambda x: ops.soft_threshold(x, TAU),
    "torch_composition": lambda x: torch.sign(x) * (x.abs() - TAU).clamp_min(0),
    "F.softshrink": lambda x: F.softshrink(x, TAU),
}


@pytest.fixture(scope="module")
def case(shape, device):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, dtype=DTYPE, generator=gen).to(device)
    return (x,), reference.soft_threshold(x, TAU)


@pytest.mark.parametrize("provider", [*PROVIDERS, *COPY_PROVIDERS])
def test_soft_threshold(bench_provider, case, shape, provider):
    inputs, expected = case
    bench_provider(OP, provider, PROVIDERS, inputs, expected, shape)
