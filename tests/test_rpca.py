"""rpca: the fused small-matrix loop and the batched loop against the plain-PyTorch reference
(both methods), the fixed point of every family against a tight float64 solution, optimality
conditions, warm starts, exact recovery, randomized SVT inside, NaN and zero matrices, errors."""

import pytest
import torch

from tests import common_utils as families
from pgsl_ext import ops, reference
from tests.common_utils import DEVICES, assert_within_float32_error, random_matrices as _matrices, times_power_of_two, with_layout

METHODS = ["alternating", "apg"]


def _low_rank_plus_sparse(batch, m, n, rank, density, seed, device):
    low, sparse = families.low_rank_plus_sparse(batch, m, n, rank, density, seed)
    return low.to(device), sparse.to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", [(19, 14, 14), (3, 6, 9), (2, 2, 9, 5), (1, 1, 6), (2, 40, 34), (1, 70, 66)], ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_matches_reference(device, method, shape, layout):
    x = with_layout(_matrices(shape, torch.float64, device, seed=1), layout)
    got = ops.rpca(x, mu=0.55, max_iter=300, tol=1e-9, method=method)
    want = reference.rpca(x, mu=0.55, max_iter=300, tol=1e-9, method=method)
    assert torch.equal(got.iterations, want.iterations)
    assert torch.equal(got.converged, want.converged)
    torch.testing.assert_close(got.low_rank, want.low_rank, rtol=0, atol=1e-9)
    torch.testing.assert_close(got.sparse, want.sparse, rtol=0, atol=1e-9)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(24, 14, 14), (2, 40, 36), (1, 72, 68)], ids=str)
def test_optimality_conditions_at_the_returned_point(device, dtype, shape):
    x = _matrices(shape, dtype, device, seed=2)
    mu, lam = 0.55, 1 / 14**0.5
    r = ops.rpca(x, mu=mu, lam=lam)
    assert r.converged.all()
    scale = x.double().norm(dim=(-2, -1), keepdim=True)

    def residuals(result):  # of the two optimality conditions, in float64, worst matrix
        low, sparse = result.low_rank.double(), result.sparse.double()
        return (((low - reference.svt(x.double() - sparse, mu)).norm(dim=(-2, -1), keepdim=True) / scale).max().item(),
                ((sparse - reference.soft_threshold(x.double() - low, mu * lam)).norm(dim=(-2, -1), keepdim=True) / scale).max().item())

    if dtype == torch.float32:  # the plain float32 loop stops at the same tolerance
        for got, plain in zip(residuals(r), residuals(reference.rpca(x, mu=mu, lam=lam))):
            assert_within_float32_error(got, plain, what="rpca optimality")
    else:
        assert max(residuals(r)) < 1e-6


def _family(name):
    if name == "activations":
        return families.activation_maps(2, channels=16)[::2]  # 16 maps of 14 x 14
    if name == "gaussian":
        return families.gaussian(12, 14, 14, seed=5)
    if name == "low_rank_sparse":
        low, sparse = families.low_rank_plus_sparse(6, 24, 20, 2, 0.05, seed=6)
        return low + sparse
    if name == "images_64":
        return families.digit_images(3, 64)
    return families.digit_images(2, 70)  # min(m, n) > 64: the batched loop


def _tight_solution(x, mu, lam):
    """The minimiser to ~1e-12, checked by its own optimality conditions."""
    r = reference.rpca(x, mu=mu, lam=lam, tol=1e-13, max_iter=20000, method="alternating")
    assert r.converged.all()
    scale = x.norm(dim=(-2, -1), keepdim=True)
    assert ((r.low_rank - reference.svt(x - r.sparse, mu)).norm(dim=(-2, -1), keepdim=True) / scale).max() < 1e-11
    return r


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("family", ["activations", "gaussian", "low_rank_sparse", "images_64", "images_70"])
def test_fixed_point_of_every_family(device, family):
    # Both methods stop at the same tolerance; the alternating method's L is as close to the
    # tight float64 minimiser as the plain APG's own (worst matrix, with slack for the different
    # paths), in float64 and in float32.
    x = _family(family)
    mu, lam = 0.55, 1 / max(x.shape[-2:]) ** 0.5
    tight = _tight_solution(x, mu, lam)
    apg = reference.rpca(x, mu=mu, lam=lam, tol=1e-7, max_iter=5000, method="apg")
    apg32 = reference.rpca(x.float(), mu=mu, lam=lam, max_iter=5000, method="apg")
    got = ops.rpca(x.to(device), mu=mu, lam=lam, tol=1e-7, max_iter=5000)
    got32 = ops.rpca(x.float().to(device), mu=mu, lam=lam, max_iter=5000)
    assert apg.converged.all() and got.converged.all() and got32.converged.all()

    def distance(low):  # relative to ||X||: some activation maps have L = 0
        return (low.double().cpu() - tight.low_rank).norm(dim=(-2, -1)) / x.norm(dim=(-2, -1))

    assert distance(got.low_rank).max() <= 2 * distance(apg.low_rank).max() + 1e-9
    assert distance(got32.low_rank).max() <= 2 * distance(apg32.low_rank).max() + 1e-6
    assert (got.iterations.cpu() < apg.iterations).float().mean() > 0.9


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(20, 14, 14), (2, 70, 66)], ids=str)
def test_warm_start(device, dtype, shape):
    x = _matrices(shape, dtype, device, seed=7)
    cold = ops.rpca(x, mu=0.55)
    # From the solution itself: one iteration, the same point.
    again = ops.rpca(x, mu=0.55, init=cold.sparse)
    assert again.converged.all() and (again.iterations <= 2).all()
    same_tol = 5e-3 if dtype == torch.float32 else 1e-4  # both stop at tol: L within ~100 tol

    def apart(a, b):
        return ((a - b).norm(dim=(-2, -1)) / x.norm(dim=(-2, -1))).max()

    assert apart(again.low_rank, cold.low_rank) < same_tol
    # The next mu of a sweep: fewer iterations, the same point as a cold start.
    next_cold = ops.rpca(x, mu=0.5)
    next_warm = ops.rpca(x, mu=0.5, init=cold.sparse)
    assert next_warm.converged.all()
    assert next_warm.iterations.sum() < next_cold.iterations.sum()
    assert apart(next_warm.low_rank, next_cold.low_rank) < same_tol
    # The kernel's warm start is the reference's; any strides.
    if dtype == torch.float64:
        init = with_layout(cold.sparse, "transposed")
        want = reference.rpca(x, mu=0.5, init=init)
        got = ops.rpca(x, mu=0.5, init=init)
        assert torch.equal(got.iterations, want.iterations)
        torch.testing.assert_close(got.low_rank, want.low_rank, rtol=0, atol=1e-9)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n", [14, 70])
def test_non_finite_warm_start_is_confined(device, n):
    x = _matrices((3, n, n), torch.float64, device, seed=8)
    init = torch.zeros_like(x)
    init[1, 2, 3] = float("inf")
    r = ops.rpca(x, init=init)
    assert r.converged.tolist() == [True, False, True] and r.iterations[1].item() == 0
    assert torch.isnan(r.low_rank[1]).all()
    torch.testing.assert_close(r.low_rank[[0, 2]], ops.rpca(x[[0, 2]]).low_rank, rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n", [14, 70])
@pytest.mark.parametrize("x_scale, init_value", [(1.0, 1e30), (1e-30, 1.0), (1.0, -3e38)])
def test_warm_start_far_larger_than_x(device, n, x_scale, init_value):
    # Such a start used to overflow once x was rescaled and came back as unflagged NaN.
    x = _matrices((3, n, n), torch.float32, device, seed=9) * x_scale
    init = torch.full_like(x, init_value)
    cold = ops.rpca(x)
    for r in (ops.rpca(x, init=init), reference.rpca(x.double(), init=init.double())):
        assert torch.isfinite(r.low_rank).all() and torch.isfinite(r.sparse).all()
        assert r.converged.all()
        # In float64: the norms of 1e-30 float32 matrices underflow.
        apart = (r.low_rank.double() - cold.low_rank.double()).norm(dim=(-2, -1)) / x.double().norm(dim=(-2, -1))
        assert apart.max() < 5e-3


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", [24, 48])
def test_exact_recovery_with_continuation(device, size):
    low, sparse = _low_rank_plus_sparse(3, size, size, 2, 0.05, 3, device)
    r = ops.rpca(low + sparse, mu=None, tol=1e-7, max_iter=2000)
    assert r.converged.all()
    rel = (r.low_rank - low).norm(dim=(-2, -1)) / low.norm(dim=(-2, -1))
    assert rel.max() < 5e-3
    assert ((r.sparse - sparse).abs() > 0.1).sum() == 0


@pytest.mark.parametrize("device", DEVICES)
def test_randomized_svt_inside_matches_exact(device):
    low, sparse = _low_rank_plus_sparse(2, 96, 80, 3, 0.03, 4, device)
    x = low + sparse
    exact = ops.rpca(x, mu=0.55, max_iter=200)
    randomized = ops.rpca(x, mu=0.55, max_iter=200, rank=8)
    torch.testing.assert_close(randomized.low_rank, exact.low_rank, rtol=0, atol=1e-6)
    assert torch.equal(randomized.iterations, exact.iterations)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n", [14, 70])
def test_zero_and_non_finite_matrices(device, n):
    x = _matrices((4, n, n), torch.float32, device)
    x[1] = 0
    x[2, 3, 4] = float("nan")
    r = ops.rpca(x)
    assert r.converged.tolist() == [True, True, False, True]
    assert r.iterations[1].item() == 1 and r.iterations[2].item() == 0
    assert torch.equal(r.low_rank[1], torch.zeros(n, n, device=device))  # no 0/0
    assert torch.isnan(r.low_rank[2]).all() and torch.isnan(r.sparse[2]).all()
    alone = ops.rpca(x[[0, 3]])
    torch.testing.assert_close(r.low_rank[[0, 3]], alone.low_rank, rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_batch_dims_and_empty(device):
    x = _matrices((2, 3, 5, 4), torch.float64, device)
    r = ops.rpca(x)
    assert r.low_rank.shape == x.shape and r.iterations.shape == (2, 3) and r.converged.dtype == torch.bool
    e = ops.rpca(torch.zeros(0, 5, 5, device=device))
    assert e.low_rank.shape == (0, 5, 5) and e.iterations.shape == (0,)


@pytest.mark.parametrize("device", DEVICES)
def test_max_iter_reports_not_converged(device):
    r = ops.rpca(_matrices((3, 14, 14), torch.float64, device), max_iter=5, tol=1e-12)
    assert r.iterations.tolist() == [5, 5, 5] and not r.converged.any()


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    x = _matrices((3, 6, 5), torch.float64, device)
    torch.library.opcheck(torch.ops.pgsl_ext.rpca.default, (x,), {"mu": 0.55, "max_iter": 50})
    torch.library.opcheck(torch.ops.pgsl_ext.rpca.default, (x,), {"mu": None, "max_iter": 50})
    torch.library.opcheck(torch.ops.pgsl_ext.rpca.default, (x,), {"max_iter": 50, "method": "apg"})
    torch.library.opcheck(torch.ops.pgsl_ext.rpca.default, (x, torch.ones_like(x)), {"max_iter": 50})


@pytest.mark.parametrize("device", DEVICES)
def test_bad_inputs_name_the_argument(device):
    x = _matrices((3, 6, 5), torch.float32, device)
    with pytest.raises(ValueError, match="`mu` > 0"):
        ops.rpca(x, mu=0.0)
    with pytest.raises(ValueError, match="`lam` > 0"):
        ops.rpca(x, lam=-1.0)
    with pytest.raises(ValueError, match="`max_iter` >= 0"):
        ops.rpca(x, max_iter=-1)
    with pytest.raises(ValueError, match="`tol` >= 0"):
        ops.rpca(x, tol=-1e-9)
    with pytest.raises(ValueError, match="`tol` >= 0"):
        ops.rpca(x, tol=float("nan"))
    with pytest.raises(ValueError, match="`rank` >= 1"):
        ops.rpca(x, rank=0)
    with pytest.raises(ValueError, match='`method` to be "alternating" or "apg"'):
        ops.rpca(x, method="admm")
    with pytest.raises(ValueError, match="`init`.*shape"):
        ops.rpca(x, init=x[:2])
    with pytest.raises(TypeError, match="`init` of x's dtype"):
        ops.rpca(x, init=x.double())
    with pytest.raises(TypeError, match="`x` to be float32 or float64"):
        ops.rpca(x.long())
    with pytest.raises(ValueError, match="`x` of shape"):
        ops.rpca(x[0, 0])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(3, 0, 4), (3, 5, 0), (0, 0), (2, 0, 0), (0, 3, 3)], ids=str)
def test_zero_size_matrices(device, shape):
    # (3, 0, 4) once crashed: "cannot reshape tensor of 0 elements" (reshape(-1, m, n)).
    x = torch.zeros(shape, device=device)
    for r in (ops.rpca(x), reference.rpca(x), ops.rpca(x, rank=2), ops.rpca(x, init=torch.zeros_like(x))):
        assert r.low_rank.shape == shape and r.sparse.shape == shape
        assert r.iterations.shape == shape[:-2] and r.converged.shape == shape[:-2]
        assert (r.iterations == 0).all() and r.converged.all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape,kwargs", [((3, 6, 5), {}), ((3, 6, 5), {"mu": None}), ((1, 66, 65), {})], ids=str)
def test_subnormal_matrices(device, dtype, shape, kwargs):
    # A finite subnormal matrix once ran 1,000 iterations and returned NaN, not converged.
    x = _matrices(shape, torch.float64, "cpu", seed=5)
    e = {torch.float32: 126 + 12, torch.float64: 1022 + 12}[dtype]  # max |x| ~ 2^-12 of the smallest normal
    tiny = times_power_of_two(x / x.abs().max(), -e).to(dtype)
    assert tiny.abs().max() < torch.finfo(dtype).tiny
    mu = kwargs.get("mu", 0.55)
    mu_tiny = None if mu is None else torch.tensor(times_power_of_two(torch.tensor(mu, dtype=torch.float64), -e).item(), dtype=dtype).item()
    max_iter = 400 if shape[-1] < 64 else 60
    got = ops.rpca(tiny.to(device), mu=mu_tiny, max_iter=max_iter)
    assert torch.isfinite(got.low_rank).all() and torch.isfinite(got.sparse).all()
    # rpca is homogeneous: the same problem on the exactly rescaled (normal) matrix.
    normal = times_power_of_two(tiny.double(), e).to(dtype)
    want = ops.rpca(normal.to(device), mu=None if mu is None else times_power_of_two(mu_tiny, e), max_iter=max_iter)
    assert torch.equal(got.converged, want.converged)
    if "mu" not in kwargs and max_iter == 400:
        assert got.converged.all()
    # Quantised to the subnormal grid (2^-149 for float32, ~1e-4 of these entries); mu_0 of
    # the continuation (a subnormal number itself) carries ~1e-3 relative rounding.
    tol = 2e-2 if dtype == torch.float32 else 1e-6
    for a, b in ((got.low_rank, want.low_rank), (got.sparse, want.sparse)):
        torch.testing.assert_close(times_power_of_two(a.double(), e), b.double(), rtol=0, atol=tol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(3, 6, 5), (1, 66, 65)], ids=str)
def test_parameters_beyond_the_dtype_act_as_inf(device, shape):
    # rpca(x_f32, mu=1e39) once raised "value cannot be converted to type float without overflow".
    x = _matrices(shape, torch.float32, device)
    for r in (ops.rpca(x, mu=1e39), ops.rpca(x, mu=float("inf")), reference.rpca(x, mu=1e39)):
        assert torch.equal(r.low_rank, torch.zeros_like(x)) and torch.equal(r.sparse, torch.zeros_like(x))
        assert r.converged.all()
    got, want = ops.rpca(x, lam=1e39, max_iter=200), reference.rpca(x, lam=1e39, max_iter=200)
    assert torch.equal(got.sparse, torch.zeros_like(x)) and torch.equal(want.sparse, torch.zeros_like(x))
    torch.testing.assert_close(got.low_rank, want.low_rank, rtol=0, atol=1e-5)
    assert ops.rpca(x, tol=1e39).converged.all()


@pytest.mark.parametrize("device", DEVICES)
def test_generator_makes_rank_k_deterministic(device):
    # rpca(rank=k) once drew from the global RNG, with no generator argument.
    x = _matrices((2, 80, 70), torch.float64, device, seed=6)
    state = torch.random.get_rng_state()
    runs = [ops.rpca(x, max_iter=8, rank=4, generator=torch.Generator(device=device).manual_seed(1)) for _ in range(2)]
    assert torch.equal(runs[0].low_rank, runs[1].low_rank) and torch.equal(runs[0].sparse, runs[1].sparse)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.library.opcheck(
        torch.ops.pgsl_ext.rpca.default, (x,), {"max_iter": 2, "rank": 4, "generator": torch.Generator(device=device)}
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(3, 6, 5), (1, 66, 65)], ids=str)
def test_tol_zero_is_floored_and_max_iter_zero_returns_the_start(device, shape):
    # Both were refused although the docstring floors tol and the reference accepts both.
    x = _matrices(shape, torch.float64, device, seed=7)
    floor = ops.rpca(x, max_iter=60, tol=64 * torch.finfo(torch.float64).eps)
    zero = ops.rpca(x, max_iter=60, tol=0.0)
    assert torch.equal(zero.low_rank, floor.low_rank) and torch.equal(zero.iterations, floor.iterations)
    ref = reference.rpca(x, max_iter=60, tol=0.0)
    torch.testing.assert_close(zero.low_rank, ref.low_rank, rtol=0, atol=1e-9)
    x[0, 0, 0] = float("nan")
    for r in (ops.rpca(x, max_iter=0), reference.rpca(x, max_iter=0)):
        assert (r.iterations == 0).all() and not r.converged.any()
        assert torch.equal(r.low_rank[1:], torch.zeros_like(x[1:])) and torch.equal(r.sparse[1:], torch.zeros_like(x[1:]))
    assert torch.isnan(ops.rpca(x, max_iter=0).low_rank[0]).all()
    # With a warm start the starting point is (0, init); a non-finite init makes its matrix NaN.
    x[0, 0, 0] = 0.0
    init = with_layout(_matrices(shape, torch.float64, device, seed=8), "transposed")
    if shape[0] > 2:
        init[2, 0, 0] = float("inf")
    for r in (ops.rpca(x, init=init, max_iter=0), reference.rpca(x, init=init, max_iter=0)):
        assert (r.iterations == 0).all() and not r.converged.any()
        assert torch.equal(r.low_rank[:2], torch.zeros_like(x[:2])) and torch.equal(r.sparse[:2], init[:2])
    got = ops.rpca(x, init=init, max_iter=0)
    if shape[0] > 2:
        assert torch.isnan(got.low_rank[2]).all() and torch.isnan(got.sparse[2]).all()
