"""soft_threshold against the reference: device x dtype x shape x layout, gradients, opcheck, errors."""

import pytest
import torch

from pgsl_ext import ops, reference
from tests.common_utils import DEVICES, FLOAT_DTYPES, LAYOUTS, with_layout

SHAPES = [(), (0,), (0, 3), (1,), (59,), (7, 97), (3, 14, 14), (2, 3, 1025), (4, 1, 5, 5)]


def _x(shape, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (3 * torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype=dtype, device=device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_scalar_tau_matches_reference(device, dtype, shape, layout):
    x = with_layout(_x(shape, dtype, device), layout)
    out = ops.soft_threshold(x, 1.25)
    expected = reference.soft_threshold(x, 1.25)
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    # Same arithmetic in the same precision as the reference: bitwise equal.
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    if layout != "sliced":
        assert out.stride() == x.stride()  # the layout of x is kept, as empty_like would


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize(
    "x_shape,tau_shape",
    [((5, 7, 9), (5, 1, 1)), ((5, 7, 9), (7, 9)), ((5, 7, 9), (9,)), ((5, 7, 9), ()),
     ((5, 7, 9), (5, 7, 9)), ((2, 3, 14, 14), (2, 3, 1, 1)), ((0, 4, 4), (0, 1, 1)), ((3, 4), (1, 1, 1)[:2])],
    ids=str,
)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_tensor_tau_matches_reference(device, dtype, x_shape, tau_shape, layout):
    x = with_layout(_x(x_shape, dtype, device), layout)
    tau = with_layout(torch.rand(tau_shape, dtype=torch.float64).mul(3).to(dtype=dtype, device=device), layout)
    out = ops.soft_threshold(x, tau)
    torch.testing.assert_close(out, reference.soft_threshold(x, tau), rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_tensor_tau_is_cast_to_x_dtype(device):
    x = _x((4, 6), torch.float64, device)
    tau = torch.full((4, 1), 0.3, dtype=torch.float32, device=device)
    out = ops.soft_threshold(x, tau)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, reference.soft_threshold(x, tau.double()), rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_special_values(device, dtype):
    inf, nan = float("inf"), float("nan")
    x = torch.tensor([0.0, -0.0, 0.5, -0.5, 1.0, -1.0, 1.5, -1.5, inf, -inf, nan], dtype=dtype, device=device)
    out = ops.soft_threshold(x, 1.0).float().cpu()
    expected = torch.tensor([0, 0, 0, 0, 0, 0, 0.5, -0.5, inf, -inf, nan])
    torch.testing.assert_close(out, expected, equal_nan=True, rtol=0, atol=0)
    # tau = 0 is the identity (NaN stays NaN); a huge tau zeroes every finite entry.
    torch.testing.assert_close(ops.soft_threshold(x, 0.0), x, equal_nan=True, rtol=0, atol=0)
    finite = x[torch.isfinite(x)]
    assert torch.equal(ops.soft_threshold(finite, 1e30), torch.zeros_like(finite))


def _away_from_kinks(shape, tau, seed):
    """float64 values whose |x| is at least 0.1 away from tau (gradcheck needs smoothness)."""
    g = torch.Generator().manual_seed(seed)
    magnitude = torch.rand(shape, generator=g, dtype=torch.float64)
    magnitude = torch.where(magnitude < 0.5, magnitude * (tau - 0.1), tau + 0.1 + magnitude)
    sign = torch.randint(0, 2, shape, generator=g).double() * 2 - 1
    return magnitude * sign


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_scalar_tau(device):
    x = _away_from_kinks((3, 5, 4), 0.7, 1).to(device).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: ops.soft_threshold(t, 0.7), (x,))
    assert torch.autograd.gradgradcheck(lambda t: ops.soft_threshold(t, 0.7), (x,))


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_tensor_tau(device):
    x = _away_from_kinks((3, 5, 4), 0.7, 2).to(device).requires_grad_()
    tau = torch.full((3, 1, 1), 0.7, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(ops.soft_threshold, (x, tau))


@pytest.mark.parametrize("device", DEVICES)
def test_gradient_matches_reference(device):
    x = _x((6, 7), torch.float32, device, seed=3).requires_grad_()
    tau = torch.rand(6, 1, device=device).mul(2).requires_grad_()
    grad = torch.randn(6, 7, device=device)
    got = torch.autograd.grad(ops.soft_threshold(x, tau), (x, tau), grad)
    want = torch.autograd.grad(reference.soft_threshold(x, tau), (x, tau), grad)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck(device, dtype):
    x = _x((3, 4, 5), dtype, device).requires_grad_()
    tau = torch.rand(3, 1, 1, dtype=dtype, device=device).requires_grad_()
    torch.library.opcheck(torch.ops.pgsl_ext.soft_threshold.default, (x, 0.5))
    torch.library.opcheck(torch.ops.pgsl_ext.soft_threshold.Tensor, (x, tau))
    torch.library.opcheck(torch.ops.pgsl_ext.soft_threshold.default, (x.detach().transpose(0, 2), 0.0))


@pytest.mark.parametrize("device", DEVICES)
def test_bad_inputs_name_the_argument(device):
    x = torch.randn(3, 4, device=device)
    with pytest.raises(TypeError, match="`x`.*Int"):
        ops.soft_threshold(torch.ones(3, dtype=torch.int32, device=device), 0.5)
    with pytest.raises(TypeError, match="`x`"):
        ops.soft_threshold([1.0, 2.0], 0.5)
    with pytest.raises(ValueError, match="`tau` >= 0.*-0.5"):
        ops.soft_threshold(x, -0.5)
    with pytest.raises(ValueError, match="`tau` >= 0"):
        ops.soft_threshold(x, float("nan"))
    with pytest.raises(ValueError, match="every entry of `tau` >= 0"):
        ops.soft_threshold(x, torch.tensor([[0.1], [0.2], [-0.3]], device=device))
    with pytest.raises(ValueError, match="every entry of `tau` >= 0"):
        ops.soft_threshold(x, torch.tensor(float("nan"), device=device))
    with pytest.raises(ValueError, match="`tau` to broadcast to the shape of `x`"):
        ops.soft_threshold(x, torch.ones(4, 1, device=device))
    with pytest.raises(ValueError, match="`tau` to broadcast"):
        ops.soft_threshold(x, torch.ones(2, 3, 4, device=device))
    with pytest.raises(TypeError, match="`tau` to be a floating-point tensor"):
        ops.soft_threshold(x, torch.ones(3, 1, dtype=torch.int64, device=device))
    with pytest.raises(TypeError, match="`tau` to be a float >= 0 or a Tensor.*str"):
        ops.soft_threshold(x, "0.5")


@pytest.mark.cuda
@pytest.mark.parametrize("device", [pytest.param("cuda", marks=DEVICES[1].marks)])
def test_tau_on_another_device_is_an_error(device):
    with pytest.raises(RuntimeError, match="`tau` on the device of `x`"):
        ops.soft_threshold(torch.randn(3, 4, device=device), torch.ones(3, 1))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("tensor_tau", [False, True], ids=["float_tau", "tensor_tau"])
def test_torch_func_transforms_match_reference(device, tensor_tau):
    # torch.func once raised "cannot use C++ torch::autograd::Function with functorch transforms".
    x = _away_from_kinks((3, 4), 0.7, 3).to(device)
    tau = torch.full((3, 1), 0.7, dtype=torch.float64, device=device) if tensor_tau else 0.7
    argnums = (0, 1) if tensor_tau else 0
    tangent = torch.randn_like(x)
    for transform in (
        lambda f: torch.func.grad(lambda a, t: f(a, t).pow(2).sum(), argnums=argnums)(x, tau),
        lambda f: torch.func.jacrev(f, argnums=argnums)(x, tau),
        lambda f: torch.func.jacfwd(f, argnums=argnums)(x, tau),
        lambda f: torch.func.jvp(lambda a: f(a, tau), (x,), (tangent,))[1],
        lambda f: torch.func.vmap(f, in_dims=(0, 0 if tensor_tau else None))(x, tau),
        lambda f: torch.func.grad(lambda a: torch.func.grad(lambda b: f(b, tau).pow(3).sum())(a).sum())(x),
    ):
        got, want = transform(ops.soft_threshold), transform(reference.soft_threshold)
        for a, b in zip(torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(want)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-14)
