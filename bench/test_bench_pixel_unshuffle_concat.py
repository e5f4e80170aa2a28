"""pixel_unshuffle_concat(x, saliency, 2, "max"): pgsl_ext against plain torch, device x shape.

Providers: ``pgsl_ext``; ``reference``, :func:`pgsl_ext.reference.pixel_unshuffle_concat`
(reshape/permute, max-pool, cat); ``torch_two_pass``, ``cat([F.pixel_unshuffle(x, f),
F.max_pool2d(s, f)], 1)``, the plain library spelling; and the bandwidth ceilings ``copy`` /
``alloc_copy`` for a tensor the size of the output (see ``conftest.py``).
"""

import pytest
import torch
import torch.nn.functional as F

from bench._common import COPY_PROVIDERS, DTYPE, FACTOR
from pgsl_ext import ops, reference

OP = "pixel_unshuffle_concat"
PROVIDERS = {
    "pgsl_ext": lambda x, s: ops.pixel_unshuffle_concat(x, s, FACTOR, "max"),
    "reference": lambda x, s: reference.pixel_unshuffle_concat(x, s, FACTOR, "max"),
    "torch_two_pass": lambda x, s: torch.cat([F.pixel_unshuffle(x, FACTOR), F.max_pool2d(s, FACTOR)], 1),
}


@pytest.fixture(scope="module")
def case(shape, device):
    gen = torch.Generator().manual_seed(0)
    b, _, h, w = shape
    x = torch.randn(shape, dtype=DTYPE, generator=gen).to(device)
    saliency = torch.rand((b, 1, h, w), dtype=DTYPE, generator=gen).to(device)
    return (x, saliency), reference.pixel_unshuffle_concat(x, saliency, FACTOR, "max")


@pytest.mark.parametrize("provider", [*PROVIDERS, *COPY_PROVIDERS])
def test_pixel_unshuffle_concat(bench_provider, case, shape, provider):
    inputs, expected = case
    bench_provider(OP, provider, PROVIDERS, inputs, expected, shape)
