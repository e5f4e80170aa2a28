"""pixel_unshuffle_concat against the reference: exact data movement, both reductions,
gradients (arg-max routing, ties, NaN), opcheck, torch.compile and errors."""

import pytest
import torch
import torch.nn.functional as F

from pgsl_ext import ops, reference
from tests.common_utils import DEVICES, FLOAT_DTYPES, with_layout

# (B, C, H, W, factor): batch 0, one pixel block, awkward and realistic sizes.
CASES = [
    (0, 3, 4, 4, 2), (1, 1, 2, 2, 2), (2, 3, 6, 10, 2), (3, 1, 28, 28, 2), (2, 5, 14, 30, 2),
    (1, 2, 58, 94, 2), (2, 3, 9, 15, 3), (1, 2, 8, 16, 4), (2, 3, 5, 7, 1),
]
LAYOUTS = ["contiguous", "transposed", "sliced", "channels_last"]


def _inputs(b, c, h, w, dtype, device, layout, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, h, w, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
    s = torch.rand(b, 1, h, w, generator=g, dtype=torch.float64).to(dtype=dtype, device=device)
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last), s.contiguous(memory_format=torch.channels_last)
    return with_layout(x, layout), with_layout(s, layout)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_max_matches_reference_exactly(device, dtype, case, layout):
    *shape, f = case
    x, s = _inputs(*shape, dtype, device, layout)
    out = ops.pixel_unshuffle_concat(x, s, f, "max")
    assert out.is_contiguous() and out.dtype == dtype
    assert torch.equal(out, reference.pixel_unshuffle_concat(x, s, f, "max"))
    if x.shape[0] > 0:  # F.pixel_unshuffle returns a wrong shape for an empty batch
        assert torch.equal(out[:, :-1], F.pixel_unshuffle(x, f))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "sliced"])
def test_mean_matches_reference(device, dtype, case, layout):
    *shape, f = case
    x, s = _inputs(*shape, dtype, device, layout)
    out = ops.pixel_unshuffle_concat(x, s, f, "mean")
    expected = reference.pixel_unshuffle_concat(x, s, f, "mean")
    assert torch.equal(out[:, :-1], expected[:, :-1])
    # The block mean is summed in float32 for 16-bit inputs: compare with a float64 mean.
    exact = F.avg_pool2d(s.double(), f).to(dtype)
    torch.testing.assert_close(out[:, -1:], exact, rtol=0, atol=0 if dtype == torch.float64 else 1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_default_arguments_are_factor_2_max(device):
    x, s = _inputs(2, 3, 8, 8, torch.float32, device, "contiguous")
    assert torch.equal(ops.pixel_unshuffle_concat(x, s), ops.pixel_unshuffle_concat(x, s, 2, "max"))
    assert torch.equal(torch.ops.pgsl_ext.pixel_unshuffle_concat(x, s), ops.pixel_unshuffle_concat(x, s))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduce", ["max", "mean"])
@pytest.mark.parametrize("case", [(2, 3, 6, 10, 2), (1, 2, 9, 6, 3), (0, 2, 4, 4, 2)], ids=str)
def test_gradients_match_reference(device, reduce, case):
    *shape, f = case
    x, s = _inputs(*shape, torch.float64, device, "sliced", seed=5)
    x.requires_grad_()
    s.requires_grad_()
    out = ops.pixel_unshuffle_concat(x, s, f, reduce)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (x, s), grad)
    want = torch.autograd.grad(reference.pixel_unshuffle_concat(x, s, f, reduce), (x, s), grad)
    assert torch.equal(got[0], want[0])
    torch.testing.assert_close(got[1], want[1], rtol=0, atol=1e-15)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduce", ["max", "mean"])
def test_gradcheck(device, reduce):
    # Random continuous saliency: every block's maximum is unique (away from the kink).
    x, s = _inputs(2, 2, 6, 4, torch.float64, device, "transposed", seed=7)
    assert torch.autograd.gradcheck(
        lambda a, b: ops.pixel_unshuffle_concat(a, b, 2, reduce), (x.requires_grad_(), s.requires_grad_())
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_max_ties_route_gradient_to_first_in_block(device, dtype):
    # Blocks of equal values, and blocks whose maximum appears twice: the gradient goes to the
    # first maximum in row-major order within the f x f block.
    s = torch.tensor([[[[1.0, 1.0, 0.0, 2.0, 5.0, 5.0],
                        [1.0, 1.0, 2.0, 1.0, 5.0, 5.0],
                        [3.0, 0.0, 7.0, 7.0, 4.0, 2.0],
                        [0.0, 3.0, 7.0, 7.0, 4.0, 9.0]]]], dtype=dtype, device=device, requires_grad=True)
    x = torch.zeros(1, 1, 4, 6, dtype=dtype, device=device)
    out = ops.pixel_unshuffle_concat(x, s, 2, "max")
    (grad_s,) = torch.autograd.grad(out[:, -1].sum(), s)
    expected = torch.tensor([[1, 0, 0, 1, 1, 0],
                             [0, 0, 0, 0, 0, 0],
                             [1, 0, 1, 0, 0, 0],
                             [0, 0, 0, 0, 0, 1]], dtype=dtype)
    assert torch.equal(grad_s[0, 0].cpu(), expected)
    assert torch.equal(out[0, -1].cpu(), torch.tensor([[1, 2, 5], [3, 7, 9]], dtype=dtype))


@pytest.mark.parametrize("device", DEVICES)
def test_max_propagates_nan_and_routes_gradient_to_first_nan(device):
    nan = float("nan")
    s = torch.tensor([[[[0.5, nan, 9.0, 1.0],
                        [nan, 2.0, 3.0, 4.0]]]], device=device, requires_grad=True)
    x = torch.zeros(1, 2, 2, 4, device=device)
    out = ops.pixel_unshuffle_concat(x, s, 2, "max")
    assert torch.isnan(out[0, -1, 0, 0]) and out[0, -1, 0, 1] == 9.0
    (grad_s,) = torch.autograd.grad(out[:, -1].sum(), s)
    assert torch.equal(grad_s[0, 0].cpu(), torch.tensor([[0.0, 1, 1, 0], [0, 0, 0, 0]]))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    x, s = _inputs(2, 3, 6, 8, torch.float32, device, "contiguous")
    for reduce in ("max", "mean"):
        torch.library.opcheck(
            torch.ops.pgsl_ext.pixel_unshuffle_concat.default,
            (x.clone().requires_grad_(), s.clone().requires_grad_(), 2, reduce),
        )
        grad = torch.randn(2, 13, 3, 4, device=device)
        torch.library.opcheck(torch.ops.pgsl_ext.pixel_unshuffle_concat_backward.default, (grad, s, 3, 2, reduce))
    torch.library.opcheck(torch.ops.pgsl_ext.pixel_unshuffle_concat.default, (x.transpose(2, 3), s.transpose(2, 3), 2, "max"))


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph(device):
    """Both ops inside one compiled graph, forward and backward, against the references."""

    def client_input(x, s, tau):
        return ops.soft_threshold(ops.pixel_unshuffle_concat(x, s, 2, "max"), tau).square().sum()

    def client_input_ref(x, s, tau):
        return reference.soft_threshold(reference.pixel_unshuffle_concat(x, s, 2, "max"), tau).square().sum()

    torch._dynamo.reset()
    compiled = torch.compile(client_input, fullgraph=True)
    x, s = _inputs(2, 3, 8, 6, torch.float32, device, "contiguous", seed=9)
    tau = torch.full((1, 13, 1, 1), 0.2, device=device)
    for args in ((x, s), (x[:1], s[:1])):
        a = [t.clone().requires_grad_() for t in args]
        b = [t.clone().requires_grad_() for t in args]
        got = compiled(*a, tau)
        want = client_input_ref(*b, tau)
        torch.testing.assert_close(got, want)
        got.backward()
        want.backward()
        for ga, gb in zip(a, b):
            torch.testing.assert_close(ga.grad, gb.grad)


@pytest.mark.parametrize("device", DEVICES)
def test_bad_inputs_name_the_argument(device):
    x, s = _inputs(2, 3, 6, 8, torch.float32, device, "contiguous")
    f = ops.pixel_unshuffle_concat
    with pytest.raises(ValueError, match=r"`x` of shape \(B, C, H, W\).*3-d"):
        f(x[0], s)
    with pytest.raises(ValueError, match=r"`saliency` of shape \(B, 1, H, W\)"):
        f(x, x)
    with pytest.raises(ValueError, match="divisible by `factor` = 4.*6, 8"):
        f(x, s, 4)
    with pytest.raises(ValueError, match="`factor` >= 1, but got 0"):
        f(x, s, 0)
    with pytest.raises(ValueError, match="`saliency` batch size 2"):
        f(x, s[:1])
    with pytest.raises(ValueError, match="`saliency` spatial size"):
        f(x, s[:, :, :4])
    with pytest.raises(TypeError, match="`saliency` to have the dtype of `x`"):
        f(x, s.double())
    with pytest.raises(TypeError, match="`x` to be float16, bfloat16, float32 or float64.*Long"):
        f(x.long(), s.long())
    with pytest.raises(ValueError, match='`reduce` to be "max" or "mean".*"min"'):
        f(x, s, 2, "min")
    with pytest.raises(TypeError, match="`saliency` to be a torch.Tensor"):
        f(x, None)
    with pytest.raises(ValueError, match="`grad_out` of shape"):
        torch.ops.pgsl_ext.pixel_unshuffle_concat_backward(torch.ones(2, 12, 3, 4, device=device), s, 3, 2, "max")


@pytest.mark.cuda
@pytest.mark.parametrize("device", [pytest.param("cuda", marks=DEVICES[1].marks)])
def test_saliency_on_another_device_is_an_error(device):
    with pytest.raises(RuntimeError, match="`saliency` on the device of `x`"):
        ops.pixel_unshuffle_concat(torch.randn(1, 1, 4, 4, device=device), torch.randn(1, 1, 4, 4))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduce", ["max", "mean"])
def test_double_backward(device, reduce):
    # The backward op had no autograd kernel: gradgradcheck failed, and d(grads)/d(grad_out)
    # came back None with only a warning.
    x, s = _inputs(2, 2, 6, 4, torch.float64, device, "transposed", seed=8)
    args = (x.requires_grad_(), s.requires_grad_())
    assert torch.autograd.gradgradcheck(lambda a, b: ops.pixel_unshuffle_concat(a, b, 2, reduce), args)
    out = ops.pixel_unshuffle_concat(*args, 2, reduce)
    grad_out = torch.randn_like(out).requires_grad_()
    grads = torch.autograd.grad(out, args, grad_out, create_graph=True)
    dx_dg, ds_dg = (torch.autograd.grad(g.sum(), grad_out, retain_graph=True)[0] for g in grads)
    ref = reference.pixel_unshuffle_concat(*args, 2, reduce)
    ref_grads = torch.autograd.grad(ref, args, grad_out, create_graph=True)
    for got, g in zip((dx_dg, ds_dg), ref_grads):
        torch.testing.assert_close(got, torch.autograd.grad(g.sum(), grad_out, retain_graph=True)[0], rtol=0, atol=1e-15)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduce", ["max", "mean"])
def test_torch_func_transforms_match_reference(device, reduce):
    # torch.func once raised "cannot use C++ torch::autograd::Function with functorch transforms".
    x, s = _inputs(2, 2, 4, 6, torch.float64, device, "contiguous", seed=9)
    ours = lambda a, b: ops.pixel_unshuffle_concat(a, b, 2, reduce)  # noqa: E731
    ref = lambda a, b: reference.pixel_unshuffle_concat(a, b, 2, reduce)  # noqa: E731
    weight = torch.randn(2, 9, 2, 3, dtype=torch.float64, device=device)
    tangents = (torch.randn_like(x), torch.randn_like(s))
    for transform in (
        lambda f: torch.func.grad(lambda a, b: (f(a, b) * weight).sum(), argnums=(0, 1))(x, s),
        lambda f: torch.func.jacrev(f, argnums=(0, 1))(x, s),
        lambda f: torch.func.jacfwd(f, argnums=(0, 1))(x, s),
        lambda f: torch.func.jvp(f, (x, s), tangents)[1],
        lambda f: torch.func.vmap(f)(x[:, None], s[:, None]),
    ):
        got, want = transform(ours), transform(ref)
        for a, b in zip(torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(want)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-15)


@pytest.mark.parametrize("device", DEVICES)
def test_channel_count_overflow_names_factor(device):
    # C * f^2 + 1 once wrapped around int64: a (1, 1, 0, 0) input with factor 2**32 gave (1, 1, 0, 0).
    x, s = torch.zeros(1, 1, 0, 0, device=device), torch.zeros(1, 1, 0, 0, device=device)
    for dev in (device, "meta"):
        for factor in (2**32, 3037000500):
            with pytest.raises((ValueError, RuntimeError), match="C \\* factor\\*\\*2 \\+ 1 output channels to fit in int64"):
                ops.pixel_unshuffle_concat(x.to(dev), s.to(dev), factor)
    assert ops.pixel_unshuffle_concat(x, s, 2**20).shape == (1, 2**40 + 1, 0, 0)
