"""svt: the Jacobi kernel, the blocked and randomized paths against float64 references,
edge cases (zeros, repeated singular values, extreme scales, conditioning, NaN), opcheck, errors."""

import pytest
import torch

from pgsl_ext import ops, reference
from tests.common_utils import (
    DEVICES,
    REAL_DTYPES,
    assert_within_float32_error,
    low_rank_plus_noise,
    max_relative_error as _err,
    random_matrices as _matrices,
    times_power_of_two,
    with_layout,
)

# min(m, n) <= 64: Jacobi kernel (QR-preconditioned when thin); larger: blocked path. Wide, tall, vectors, awkward sizes.
SHAPES = [(37, 14, 14), (5, 9, 4), (6, 4, 9), (3, 1, 7), (3, 7, 1), (2, 3, 5, 5), (4, 32, 32), (17, 59, 3), (2, 40, 33), (1, 33, 97), (2, 70, 66)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", REAL_DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "sliced"])
def test_exact_matches_float64_reference(device, dtype, shape, layout):
    x = with_layout(_matrices(shape, dtype, device), layout)
    out = ops.svt(x, 1.0)
    assert out.shape == x.shape and out.dtype == dtype and out.is_contiguous()
    expected = reference.svt(x.double(), 1.0)
    if dtype == torch.float32:
        assert_within_float32_error(_err(out, expected), _err(reference.svt(x, 1.0), expected), what="svt")
    else:
        assert _err(out, expected) < 1e-12


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(2, 3, 6, 5), (7, 14, 14), (3, 40, 35)], ids=str)
def test_tensor_tau_one_per_matrix(device, shape):
    x = _matrices(shape, torch.float64, device)
    tau = torch.rand(shape[:-2], dtype=torch.float64, device=device) * 3
    torch.testing.assert_close(ops.svt(x, tau), reference.svt(x, tau), rtol=0, atol=1e-12)
    # A tau that broadcasts over the batch (one value) equals the scalar overload.
    torch.testing.assert_close(ops.svt(x, torch.tensor(1.5, device=device)), ops.svt(x, 1.5), rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", REAL_DTYPES)
def test_each_matrix_is_independent_of_its_batch(device, dtype):
    # Lane groups of 16/8 matrices on the CPU, a thread per matrix on CUDA: a matrix's result
    # is bitwise the same alone, in a full group, or in the tail.
    x = _matrices((37, 14, 11), dtype, device, seed=3)
    together = ops.svt(x, 0.7)
    for i in (0, 5, 16, 36):
        assert torch.equal(ops.svt(x[i : i + 1], 0.7), together[i : i + 1])
    shuffled = torch.randperm(37)
    assert torch.equal(ops.svt(x[shuffled], 0.7), together[shuffled])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", REAL_DTYPES)
@pytest.mark.parametrize("n", [5, 14, 40])
def test_edge_cases(device, dtype, n):
    kw = dict(dtype=dtype, device=device)
    zeros = torch.zeros(3, n, n, **kw)
    assert torch.equal(ops.svt(zeros, 1.0), zeros)
    three_eye = 3 * torch.eye(n, **kw).expand(2, n, n)  # repeated singular values
    torch.testing.assert_close(ops.svt(three_eye, 1.0), 2 * torch.eye(n, **kw).expand(2, n, n))
    x = _matrices((4, n, n - 2), dtype, device)
    tol = 1e-5 if dtype == torch.float32 else 1e-13
    torch.testing.assert_close(ops.svt(x, 0.0), x, rtol=tol, atol=tol)
    top = torch.linalg.matrix_norm(x.double(), 2).max().item()
    assert torch.equal(ops.svt(x, 1.01 * top), torch.zeros_like(x))  # above every singular value: exactly 0
    low_rank = x[..., :2] @ x[..., :2].mT  # rank 2, n x n
    expected = reference.svt(low_rank.double(), 0.5)
    if dtype == torch.float32:
        reference_error = _err(reference.svt(low_rank, 0.5), expected)
        assert_within_float32_error(_err(ops.svt(low_rank, 0.5), expected), reference_error, what="rank 2")
    else:
        assert _err(ops.svt(low_rank, 0.5), expected) < 1e-12


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("scale", [1e20, 1e-20])
@pytest.mark.parametrize("n", [14, 40])
def test_extreme_scales_do_not_overflow(device, scale, n):
    x64 = _matrices((3, n, n), torch.float64, device, seed=1)
    expected = reference.svt(x64, 1.0) * scale
    out = ops.svt((x64 * scale).float(), scale)  # svt(c X, c tau) = c svt(X, tau)
    assert torch.isfinite(out).all()

    def error(y):
        return ((y.double() - expected).abs().amax() / expected.abs().amax()).item()

    assert_within_float32_error(error(out), error(reference.svt((x64 * scale).float(), scale)), what=f"scale {scale:g}")


@pytest.mark.parametrize("device", DEVICES)
def test_float32_holds_at_condition_number_1e6(device):
    # A Gram-matrix (eigh) shortcut squares the condition number and fails this.
    g = torch.Generator().manual_seed(4)
    n = 14
    u, _ = torch.linalg.qr(torch.randn(8, n, n, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(8, n, n, generator=g, dtype=torch.float64))
    s = torch.logspace(0, -6, n, dtype=torch.float64)
    x = ((u * s) @ v.mT).float().to(device)
    tau = 1e-4
    exact = reference.svt(x.double(), tau)
    err = (ops.svt(x, tau).double() - exact).abs().amax().item()
    assert_within_float32_error(err, (reference.svt(x, tau).double() - exact).abs().amax().item(), what="cond 1e6")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n", [9, 40])
def test_non_finite_matrix_is_confined(device, n):
    x = _matrices((5, n, n), torch.float32, device)
    bad = x.clone()
    bad[1, 2, 3] = float("nan")
    bad[3, 0, 0] = float("inf")
    out = ops.svt(bad, 0.5)
    assert torch.isnan(out[1]).all() and torch.isnan(out[3]).all()
    keep = [0, 2, 4]
    torch.testing.assert_close(out[keep], ops.svt(x[keep], 0.5), rtol=0, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(0, 5, 5), (3, 0, 4), (2, 4, 0)], ids=str)
def test_empty(device, shape):
    x = torch.zeros(shape, device=device)
    assert ops.svt(x, 1.0).shape == x.shape


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", REAL_DTYPES)
def test_randomized_matches_exact_on_low_rank(device, dtype):
    x = low_rank_plus_noise(3, 120, 90, 6, 1e-3, 5, device, dtype)
    g = torch.Generator(device=device).manual_seed(0)
    out = ops.svt(x, 1.0, rank=8, generator=g)
    expected = reference.svt(x.double(), 1.0)
    if dtype == torch.float32:
        assert_within_float32_error(_err(out, expected), _err(reference.svt(x, 1.0), expected), what="rank=8")
    else:
        assert _err(out, expected) < 1e-6


@pytest.mark.parametrize("device", DEVICES)
def test_randomized_grows_the_sketch_instead_of_truncating(device):
    # Full rank and a small tau: the thresholded rank (~60) is far above rank + oversample (12).
    x = _matrices((2, 64, 60), torch.float64, device, seed=6)
    g = torch.Generator(device=device).manual_seed(1)
    out = ops.svt(x, 0.05, rank=2, oversample=10, generator=g)
    assert _err(out, reference.svt(x, 0.05)) < 1e-10


@pytest.mark.parametrize("device", DEVICES)
def test_randomized_is_deterministic_for_a_generator(device):
    x = low_rank_plus_noise(2, 80, 70, 5, 1e-2, 7, device)
    runs = [ops.svt(x, 0.5, rank=5, generator=torch.Generator(device=device).manual_seed(42)) for _ in range(2)]
    assert torch.equal(runs[0], runs[1])


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    x = _matrices((3, 6, 5), torch.float32, device)
    torch.library.opcheck(torch.ops.pgsl_ext.svt.default, (x, 0.5))
    torch.library.opcheck(torch.ops.pgsl_ext.svt.Tensor, (x, torch.rand(3, device=device)))
    torch.library.opcheck(torch.ops.pgsl_ext.svt.default, (_matrices((2, 40, 36), torch.float64, device), 0.5))


@pytest.mark.parametrize("device", DEVICES)
def test_bad_inputs_name_the_argument(device):
    x = _matrices((3, 6, 5), torch.float32, device)
    with pytest.raises(ValueError, match=r"`x` of shape \(\.\.\., m, n\)"):
        ops.svt(x[0, 0], 1.0)
    with pytest.raises(TypeError, match="`x` to be float32 or float64.*Half"):
        ops.svt(x.half(), 1.0)
    with pytest.raises(ValueError, match="`tau` >= 0"):
        ops.svt(x, -1.0)
    with pytest.raises(ValueError, match="every entry of `tau` >= 0"):
        ops.svt(x, torch.tensor([1.0, -1.0, 0.0], device=device))
    with pytest.raises(ValueError, match=r"`tau` of shape x.shape\[:-2\]"):
        ops.svt(x, torch.ones(4, device=device))
    with pytest.raises(ValueError, match="`rank` >= 1"):
        ops.svt(x, 1.0, rank=0)
    with pytest.raises(ValueError, match="`oversample` >= 0"):
        ops.svt(x, 1.0, rank=2, oversample=-1)
    with pytest.raises(ValueError, match="`power_iters` >= 0"):
        ops.svt(x, 1.0, rank=2, power_iters=-1)
    with pytest.raises(NotImplementedError, match="not differentiable"):
        ops.svt(x.clone().requires_grad_(), 1.0).sum().backward()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(4, 150, 20), (4, 20, 150), (3, 300, 64)], ids=str)
def test_tall_and_wide_thin_matrices_with_nan_and_extreme_scales(device, shape):
    # The QR-preconditioned Jacobi path (max(m, n) > 2 min(m, n)).
    x = _matrices(shape, torch.float64, device, seed=8)
    assert _err(ops.svt(x, 1.0), reference.svt(x, 1.0)) < 1e-12
    big = ops.svt((x * 1e20).float(), 1e20)
    assert torch.isfinite(big).all()
    assert _err(big.double() / 1e20, reference.svt(x, 1.0)) < 1e-5
    bad = x.clone()
    bad[1, 0, 0] = float("nan")
    out = ops.svt(bad, 1.0)
    assert torch.isnan(out[1]).all()
    torch.testing.assert_close(out[[0, 2]], ops.svt(x[[0, 2]], 1.0), rtol=0, atol=1e-13)


@pytest.mark.parametrize("device", DEVICES)
def test_randomized_confines_non_finite_matrices(device):
    x = _matrices((3, 90, 70), torch.float64, device, seed=9)
    x[1, 5, 5] = float("inf")
    out = ops.svt(x, 0.5, rank=10, generator=torch.Generator(device=device).manual_seed(0))
    assert torch.isnan(out[1]).all() and torch.isfinite(out[[0, 2]]).all()


# Every path: Jacobi, QR-preconditioned Jacobi (tall, wide), blocked, randomized.
PATHS = {"jacobi": ((3, 6, 5), {}), "qr-tall": ((2, 40, 6), {}), "qr-wide": ((2, 6, 40), {}),
         "blocked": ((2, 66, 65), {}), "randomized": ((2, 90, 70), {"rank": 3})}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", REAL_DTYPES)
@pytest.mark.parametrize("magnitude", ["subnormal", "near_max"])
@pytest.mark.parametrize("path", PATHS.keys())
def test_whole_finite_range(device, dtype, magnitude, path):
    # Subnormal matrices once came back all-NaN (the rescale factor 2^-e overflowed) and
    # made the blocked path raise for the whole batch; entries near the largest float came
    # back NaN on the QR-preconditioned and randomized paths (unscaled QR and GEMMs).
    shape, kwargs = PATHS[path]
    finfo = torch.finfo(dtype)
    unit = _matrices(shape, torch.float64, "cpu", seed=3).clamp(-3, 3) / 3  # |unit| <= 1
    peak = finfo.tiny * 2**-10 if magnitude == "subnormal" else finfo.max * 0.9
    x = (unit * peak).to(dtype)  # float64 holds float32's range; for float64, peak * unit is exact enough
    if magnitude == "subnormal":
        assert x.abs().max() < finfo.tiny
    e = -torch.frexp(x.abs().max().double()).exponent.item()
    scaled = times_power_of_two(x.double(), e)  # exact: a normal float64 matrix with max in [0.5, 1)
    for tau in (0.0, 0.3):
        # tau as the op sees it (rounded to x's dtype), then the same in the rescaled problem.
        tau_x = torch.tensor(times_power_of_two(torch.tensor(tau, dtype=torch.float64), -e).item(), dtype=dtype).item()
        gen = torch.Generator(device=device).manual_seed(0) if "rank" in kwargs else None
        out = ops.svt(x.to(device), tau_x, generator=gen, **kwargs)
        assert torch.isfinite(out).all()
        expected = reference.svt(scaled, times_power_of_two(torch.tensor(tau_x, dtype=torch.float64), e).item())
        got = times_power_of_two(out.double().cpu(), e)
        # A subnormal float32 result is quantised to 2^-149, ~1e-4 of these entries.
        tol = {torch.float32: 1e-5, torch.float64: 1e-10}[dtype] if magnitude == "near_max" else {torch.float32: 2e-3, torch.float64: 1e-9}[dtype]
        if "rank" in kwargs:
            tol = max(tol, 1e-4 if dtype == torch.float32 else 1e-9)  # a rank-3 sketch of a full-rank matrix grows to exact
        assert _err(got, expected) < tol, (tau, _err(got, expected))


@pytest.mark.parametrize("device", DEVICES)
def test_subnormal_matrix_does_not_fail_its_batch(device):
    # oneMKL's SLASCL once rejected the whole batch (the blocked path) for one subnormal matrix.
    x = _matrices((2, 65, 65), torch.float32, device, seed=2)
    tiny = x[1] * 1e-41 / x[1].abs().max()
    batch = torch.stack([x[0], tiny])
    out = ops.svt(batch, 0.0)
    torch.testing.assert_close(out[0], ops.svt(x[0], 0.0), rtol=0, atol=0)
    assert torch.isfinite(out[1]).all()
    assert (out[1] - tiny).abs().max() <= 64 * 2**-149


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", REAL_DTYPES)
@pytest.mark.parametrize("shape,kwargs", [((3, 6, 5), {}), ((2, 66, 65), {}), ((2, 40, 6), {}), ((2, 90, 70), {"rank": 3})], ids=str)
def test_threshold_beyond_the_dtype_acts_as_inf(device, dtype, shape, kwargs):
    # svt(x_f32, 1e39) once raised "value cannot be converted to type float without overflow".
    x = _matrices(shape, dtype, device)
    for tau in (1e39, float("inf")):
        out = ops.svt(x, tau, **kwargs)
        assert torch.equal(out, torch.zeros_like(x)), tau
        torch.testing.assert_close(out, reference.svt(x, tau), rtol=0, atol=0)
    assert torch.equal(ops.svt(x, torch.full(shape[:-2], 1e39, dtype=torch.float64, device=device), **kwargs), torch.zeros_like(x))


@pytest.mark.parametrize("device", DEVICES)
def test_huge_rank_and_oversample_mean_the_whole_matrix(device):
    # rank + oversample once overflowed int64 and failed inside torch.
    x = _matrices((2, 30, 20), torch.float64, device)
    exact = ops.svt(x, 0.5)
    for rank, oversample in ((2**62, 2**62), (2**63 - 1, 10), (5, 2**63 - 1)):
        torch.testing.assert_close(ops.svt(x, 0.5, rank=rank, oversample=oversample), exact, rtol=0, atol=1e-12)
