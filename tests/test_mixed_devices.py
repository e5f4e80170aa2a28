"""Every op with more than one tensor argument refuses arguments on different devices, as
``torch.add`` does, including when one of them is on the meta device (the fake kernels serve
such calls, and once returned uninitialised memory on the other device)."""

import pytest
import torch

from pgsl_ext import ops
from tests.common_utils import cuda

_backward = torch.ops.pgsl_ext.pixel_unshuffle_concat_backward.default

# op name -> builder(first_device, second_device): the first argument on one device, one
# other argument on the other.
CALLS = {
    "soft_threshold": lambda a, b: ops.soft_threshold(torch.randn(3, 4, device=a), torch.zeros(4, device=b)),
    "svt": lambda a, b: ops.svt(torch.randn(2, 3, 3, device=a), torch.zeros(2, device=b)),
    "pixel_unshuffle_concat": lambda a, b: ops.pixel_unshuffle_concat(
        torch.randn(1, 2, 4, 4, device=a), torch.randn(1, 1, 4, 4, device=b)
    ),
    "pixel_unshuffle_concat_backward": lambda a, b: _backward(
        torch.randn(1, 9, 2, 2, device=b), torch.randn(1, 1, 4, 4, device=a), 2, 2, "max"
    ),
    "rpca(init)": lambda a, b: ops.rpca(torch.randn(2, 3, 3, device=a), init=torch.zeros(2, 3, 3, device=b)),
    "jsma_saliency_search(grad_others)": lambda a, b: ops.jsma_saliency_search(
        torch.randn(2, 5, device=a), torch.randn(2, 5, device=b), torch.ones(2, 5, dtype=torch.bool, device=a),
        targeted=False,
    ),
    "jsma_saliency_search(domain)": lambda a, b: ops.jsma_saliency_search(
        torch.randn(2, 5, device=a), torch.randn(2, 5, device=a), torch.ones(2, 5, dtype=torch.bool, device=b),
        targeted=True,
    ),
}

PAIRS = [
    ("cpu", "meta"),
    ("meta", "cpu"),
    pytest.param(("cuda", "cpu"), marks=[pytest.mark.cuda, cuda]),
    pytest.param(("cpu", "cuda"), marks=[pytest.mark.cuda, cuda]),
    pytest.param(("cuda", "meta"), marks=[pytest.mark.cuda, cuda]),
]


@pytest.mark.parametrize("devices", PAIRS, ids=lambda p: "-".join(p))
@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_arguments_on_different_devices_raise(call, devices):
    with pytest.raises(RuntimeError, match="on the device of"):
        call(*devices)


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_all_on_meta_gives_meta_results(call):
    out = call("meta", "meta")
    for t in out if isinstance(out, tuple) else (out,):
        assert t.device.type == "meta"
