"""jsma_saliency_search against the brute-force reference: device x dtype x shape x layout,
adversarial inputs (ties, overflow, NaN/Inf, underflow, a whole row on the Pareto frontier),
edge cases, invariance to threads and batch composition, opcheck, errors."""

import pytest
import torch

from pgsl_ext import ops, reference
from tests.common_utils import DEVICES, LAYOUTS, with_layout

DTYPES = [torch.float32, torch.float64]
KINDS = ["normal", "ties", "cauchy", "frontier", "overflow", "special", "underflow", "sparse"]


def _gradients(kind, batch, n, dtype, seed):
    """(grad_class, grad_others) of one of the KINDS, in float64 then cast."""
    g = torch.Generator().manual_seed(seed)

    def normal():
        return torch.randn(batch, n, generator=g, dtype=torch.float64)

    if kind == "normal":
        gc, go = normal(), normal()
    elif kind == "ties":  # small integers: many pairs share the best score
        gc = torch.randint(-3, 4, (batch, n), generator=g).double()
        go = torch.randint(-3, 4, (batch, n), generator=g).double()
    elif kind == "cauchy":  # heavy tails, like real saliency gradients
        gc = torch.tan(torch.pi * (torch.rand(batch, n, generator=g, dtype=torch.float64) - 0.5))
        go = torch.tan(torch.pi * (torch.rand(batch, n, generator=g, dtype=torch.float64) - 0.5))
    elif kind == "frontier":  # every feature on one anti-diagonal: none dominates another
        t = torch.rand(batch, n, generator=g, dtype=torch.float64)
        gc, go = t, t - 1  # targeted: u = t, v = 1 - t
    elif kind == "overflow":  # sums and products overflow: the kernel's fallback path
        big = torch.finfo(dtype).max / 3
        gc, go = normal() * big, normal() * big
    elif kind == "special":  # NaN and +-inf sprinkled in both gradients
        gc, go = normal(), normal()
        gc[torch.rand(batch, n, generator=g) < 0.1] = float("nan")
        go[torch.rand(batch, n, generator=g) < 0.05] = float("inf")
        gc[torch.rand(batch, n, generator=g) < 0.05] = float("-inf")
    elif kind == "underflow":  # products round to zero: valid pairs scoring exactly 0
        tiny = torch.finfo(dtype).tiny
        gc, go = normal() * tiny * 8, normal() * tiny * 8
    elif kind == "sparse":  # mostly zero gradients (a ReLU network's dead pixels)
        gc, go = normal(), normal()
        gc[torch.rand(batch, n, generator=g) < 0.8] = 0
        go[torch.rand(batch, n, generator=g) < 0.8] = 0
    else:
        raise ValueError(kind)
    return gc.to(dtype), go.to(dtype)


def _domain(batch, n, density, seed, device):
    g = torch.Generator().manual_seed(seed + 1)
    return (torch.rand(batch, n, generator=g) < density).to(device)


def _assert_same(got, expected):
    names = ("p", "q", "found")
    for name, a, b in zip(names, got, expected):
        assert a.device == b.device, name
        assert torch.equal(a.cpu(), b.cpu()), f"{name}: {a.tolist()} != {b.tolist()}"
    assert got[0].dtype == torch.long and got[1].dtype == torch.long and got[2].dtype == torch.bool


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("targeted", [True, False], ids=["targeted", "pgsl"])
@pytest.mark.parametrize("shape", [(0, 5), (3, 0), (4, 1), (2, 2), (5, 3), (7, 59), (3, 97), (2, 300)], ids=str)
def test_matches_brute_force(device, dtype, kind, targeted, shape):
    batch, n = shape
    gc, go = _gradients(kind, batch, n, dtype, seed=n * 31 + batch)
    if kind == "frontier" and not targeted:
        gc, go = -gc, -go  # keep every feature on the frontier in the non-targeted orientation
    gc, go = gc.to(device), go.to(device)
    for density in (1.0, 0.5):
        domain = _domain(batch, n, density, seed=n, device=device)
        got = ops.jsma_saliency_search(gc, go, domain, targeted=targeted)
        _assert_same(got, reference.jsma_saliency_search(gc, go, domain, targeted=targeted))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_strided_inputs(device, layout):
    gc, go = _gradients("cauchy", 6, 77, torch.float32, seed=3)
    domain = _domain(6, 77, 0.7, seed=3, device="cpu")
    expected = reference.jsma_saliency_search(gc, go, domain, targeted=True)
    got = ops.jsma_saliency_search(
        with_layout(gc.to(device), layout), with_layout(go.to(device), layout), with_layout(domain.to(device), layout), targeted=True
    )
    _assert_same(got, tuple(t.to(device) for t in expected))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_many_random_rows(device, dtype):
    """2,400 rows of mixed kinds and domain densities against brute force, both modes."""
    rows_gc, rows_go = [], []
    for i, kind in enumerate(KINDS * 3):
        gc, go = _gradients(kind, 100, 41, dtype, seed=100 + i)
        rows_gc.append(gc)
        rows_go.append(go)
    gc, go = torch.cat(rows_gc).to(device), torch.cat(rows_go).to(device)
    density = torch.rand(gc.shape[0], 1, generator=torch.Generator().manual_seed(5))
    domain = (torch.rand(gc.shape, generator=torch.Generator().manual_seed(6)) < density).to(device)
    for targeted in (True, False):
        got = ops.jsma_saliency_search(gc, go, domain, targeted=targeted)
        _assert_same(got, reference.jsma_saliency_search(gc, go, domain, targeted=targeted, rows_per_chunk=256))


@pytest.mark.parametrize("device", DEVICES)
def test_exact_ties_go_to_smallest_key(device):
    # targeted: u = grad_class, v = -grad_others. Features 1, 3, 4 and 6 are identical, so the
    # pairs among them tie for the best score (a = 4, b = -4, score 16); (1, 3) has the
    # smallest key. Feature 0 alone would pair best with them but its b makes it invalid.
    gc = torch.tensor([[5.0, 2.0, -1.0, 2.0, 2.0, 0.0, 2.0]], device=device)
    go = torch.tensor([[3.0, -2.0, 1.0, -2.0, -2.0, 0.0, -2.0]], device=device)
    domain = torch.ones_like(gc, dtype=torch.bool)
    _assert_same(ops.jsma_saliency_search(gc, go, domain, targeted=True), (torch.tensor([1]), torch.tensor([3]), torch.tensor([True])))
    # Remove feature 1 from the domain: (3, 4) is next.
    domain[0, 1] = False
    _assert_same(ops.jsma_saliency_search(gc, go, domain, targeted=True), (torch.tensor([3]), torch.tensor([4]), torch.tensor([True])))
    # Equal scores from different features: (0, 3) and (1, 3) both score (2 + 3) * (1 + 1) = 10.
    gc = torch.tensor([[2.0, 2.0, 1.0, 3.0]], device=device)
    go = -torch.tensor([[1.0, 1.0, 1.0, 1.0]], device=device)
    out = ops.jsma_saliency_search(gc, go, torch.ones_like(gc, dtype=torch.bool), targeted=True)
    _assert_same(out, (torch.tensor([0]), torch.tensor([3]), torch.tensor([True])))
    gc = torch.tensor([[3.0, 1.0, 1.0, 3.0]], device=device)  # (0, 3): 6 * 2 = 12, unique
    out = ops.jsma_saliency_search(gc, go, torch.ones_like(gc, dtype=torch.bool), targeted=True)
    _assert_same(out, (torch.tensor([0]), torch.tensor([3]), torch.tensor([True])))
    gc = torch.tensor([[1.0, 3.0, 3.0, 1.0, 3.0]], device=device)  # (1, 2), (1, 4), (2, 4) tie
    go = -torch.ones(1, 5, device=device)
    out = ops.jsma_saliency_search(gc, go, torch.ones_like(gc, dtype=torch.bool), targeted=True)
    _assert_same(out, (torch.tensor([1]), torch.tensor([2]), torch.tensor([True])))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_no_valid_pair(device, dtype):
    n = 9
    none = (torch.full((1,), -1), torch.full((1,), -1), torch.zeros(1, dtype=torch.bool))
    zeros = torch.zeros(1, n, dtype=dtype, device=device)
    full = torch.ones(1, n, dtype=torch.bool, device=device)
    for targeted in (True, False):
        # zero gradients: a = b = 0 fails the strict sign tests
        _assert_same(ops.jsma_saliency_search(zeros, zeros, full, targeted=targeted), none)
        # every pair has a and b of the same sign
        same = torch.rand(1, n, dtype=dtype, device=device) + 0.5
        _assert_same(ops.jsma_saliency_search(same, same, full, targeted=targeted), none)
        _assert_same(ops.jsma_saliency_search(-same, -same, full, targeted=targeted), none)
    # valid only for the other mode
    gc = torch.rand(1, n, dtype=dtype, device=device) + 0.5
    _assert_same(ops.jsma_saliency_search(gc, -gc, full, targeted=False), none)
    assert ops.jsma_saliency_search(gc, -gc, full, targeted=True)[2].item()
    # an empty domain, or one feature left in it
    _assert_same(ops.jsma_saliency_search(gc, -gc, torch.zeros_like(full), targeted=True), none)
    one = torch.zeros_like(full)
    one[0, 4] = True
    _assert_same(ops.jsma_saliency_search(gc, -gc, one, targeted=True), none)
    one[0, 7] = True
    _assert_same(ops.jsma_saliency_search(gc, -gc, one, targeted=True), (torch.tensor([4]), torch.tensor([7]), torch.tensor([True])))
    # N = 1
    single = torch.ones(3, 1, dtype=dtype, device=device)
    got = ops.jsma_saliency_search(single, -single, torch.ones(3, 1, dtype=torch.bool, device=device), targeted=True)
    _assert_same(got, (torch.full((3,), -1), torch.full((3,), -1), torch.zeros(3, dtype=torch.bool)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_and_inf_never_chosen(device, dtype):
    nan, inf = float("nan"), float("inf")
    # Feature 0 would win every comparison if NaN/Inf were ordered; feature 1 and 2 are the
    # best finite pair.
    gc = torch.tensor([[nan, 1.0, 2.0, 0.5, inf, 1e3]], dtype=dtype, device=device)
    go = torch.tensor([[-5.0, -1.0, -1.0, -0.5, -1.0, nan]], dtype=dtype, device=device)
    domain = torch.ones_like(gc, dtype=torch.bool)
    got = ops.jsma_saliency_search(gc, go, domain, targeted=True)
    _assert_same(got, (torch.tensor([1]), torch.tensor([2]), torch.tensor([True])))
    _assert_same(got, reference.jsma_saliency_search(gc, go, domain, targeted=True))
    # Overflowing score: finite gradients, but (big + big) * (big + big) is inf.
    big = torch.finfo(dtype).max / 2
    gc = torch.tensor([[big, big, 1.0, 1.0]], dtype=dtype, device=device)
    go = torch.tensor([[-big, -big, -1.0, -1.0]], dtype=dtype, device=device)
    got = ops.jsma_saliency_search(gc, go, torch.ones_like(gc, dtype=torch.bool), targeted=True)
    _assert_same(got, reference.jsma_saliency_search(gc, go, torch.ones_like(gc, dtype=torch.bool), targeted=True))
    assert got[2].item() and (got[0].item(), got[1].item()) != (0, 1)


def test_results_do_not_depend_on_threads_or_batch():
    gc, go = _gradients("cauchy", 64, 784, torch.float32, seed=11)
    domain = _domain(64, 784, 0.9, seed=11, device="cpu")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = ops.jsma_saliency_search(gc, go, domain, targeted=True)
    finally:
        torch.set_num_threads(threads)
    _assert_same(ops.jsma_saliency_search(gc, go, domain, targeted=True), single)
    order = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    shuffled = ops.jsma_saliency_search(gc[order], go[order], domain[order], targeted=True)
    _assert_same(tuple(t[order.argsort()] for t in shuffled), single)
    for row in (0, 17, 63):
        alone = ops.jsma_saliency_search(gc[row : row + 1], go[row : row + 1], domain[row : row + 1], targeted=True)
        _assert_same(alone, tuple(t[row : row + 1] for t in single))


@pytest.mark.parametrize("device", DEVICES)
def test_large_rows_use_64_bit_indices(device):
    # N = 3 x 224 x 224 (and a row past 2^18): a planted pair far into the row wins, and the key
    # p * N + q (about 2e10) does not fit 32 bits.
    n = 3 * 224 * 224
    gc, go = _gradients("normal", 2, n, torch.float32, seed=2)
    gc, go = gc * 0.1, go * 0.1
    gc[0, n - 7], gc[0, n - 2] = 50.0, 50.0
    go[0, n - 7], go[0, n - 2] = -50.0, -50.0
    gc[1, 70_000], gc[1, 140_000] = 50.0, 50.0
    go[1, 70_000], go[1, 140_000] = -50.0, -50.0
    domain = torch.ones(2, n, dtype=torch.bool)
    got = ops.jsma_saliency_search(gc.to(device), go.to(device), domain.to(device), targeted=True)
    _assert_same(got, (torch.tensor([n - 7, 70_000]), torch.tensor([n - 2, 140_000]), torch.tensor([True, True])))


@pytest.mark.cuda
@pytest.mark.parametrize("device", [pytest.param("cuda", marks=DEVICES[1].marks)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_matches_cpu(device, dtype):
    """The same rows on both devices, bit for bit, including long rows past the brute-force range."""
    for kind, batch, n in (("cauchy", 100, 784), ("normal", 3, 3 * 224 * 224), ("ties", 50, 500), ("overflow", 8, 300)):
        gc, go = _gradients(kind, batch, n, dtype, seed=n)
        domain = _domain(batch, n, 0.95, seed=n, device="cpu")
        for targeted in (True, False):
            cpu = ops.jsma_saliency_search(gc, go, domain, targeted=targeted)
            gpu = ops.jsma_saliency_search(gc.to(device), go.to(device), domain.to(device), targeted=targeted)
            _assert_same(tuple(t.cpu() for t in gpu), cpu)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    gc, go = _gradients("normal", 4, 33, torch.float32, seed=1)
    domain = _domain(4, 33, 0.8, seed=1, device=device)
    for targeted in (True, False):
        torch.library.opcheck(
            torch.ops.pgsl_ext.jsma_saliency_search.default,
            (gc.to(device), go.to(device), domain),
            {"targeted": targeted},
        )


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph(device):
    def step(gc, go, domain):
        p, q, found = ops.jsma_saliency_search(gc, go, domain, targeted=False)
        return p + q, found

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True)
    gc, go = _gradients("normal", 5, 40, torch.float32, seed=4)
    gc, go = gc.to(device), go.to(device)
    domain = _domain(5, 40, 0.9, seed=4, device=device)
    got, expected = compiled(gc, go, domain), step(gc, go, domain)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


@pytest.mark.parametrize("device", DEVICES)
def test_bad_inputs_name_the_argument(device):
    gc = torch.randn(2, 8, device=device)
    domain = torch.ones(2, 8, dtype=torch.bool, device=device)
    f = ops.jsma_saliency_search
    with pytest.raises(ValueError, match=r"`grad_class` of shape \(B, N\).*3-d"):
        f(gc[None], gc[None], domain[None], targeted=True)
    with pytest.raises(ValueError, match=r"`grad_others` of the shape of `grad_class`"):
        f(gc, gc[:, :7], domain, targeted=True)
    with pytest.raises(ValueError, match=r"`domain` of the shape of `grad_class`"):
        f(gc, gc, domain[:1], targeted=True)
    with pytest.raises(TypeError, match="`grad_class` to be float32 or float64.*Half"):
        f(gc.half(), gc.half(), domain, targeted=True)
    with pytest.raises(TypeError, match="`grad_others` to have the dtype of `grad_class`"):
        f(gc, gc.double(), domain, targeted=True)
    with pytest.raises(TypeError, match="`domain` to be a bool tensor.*Float"):
        f(gc, gc, domain.float(), targeted=True)
    with pytest.raises(TypeError, match="`targeted` to be a bool"):
        f(gc, gc, domain, targeted=1)
    with pytest.raises(TypeError, match="`domain` to be a torch.Tensor"):
        f(gc, gc, None, targeted=True)


@pytest.mark.cuda
@pytest.mark.parametrize("device", [pytest.param("cuda", marks=DEVICES[1].marks)])
def test_inputs_on_another_device_are_an_error(device):
    gc = torch.randn(2, 8, device=device)
    with pytest.raises(RuntimeError, match="`domain` on the device of `grad_class`"):
        ops.jsma_saliency_search(gc, gc, torch.ones(2, 8, dtype=torch.bool), targeted=True)


@pytest.mark.parametrize("kind", KINDS)
def test_reference_is_the_definition(kind):
    """The reference against a literal loop over pairs, in the spec's own words."""
    import itertools
    import math

    gc, go = _gradients(kind, 6, 11, torch.float32, seed=8)
    domain = _domain(6, 11, 0.8, seed=8, device="cpu")
    for targeted in (True, False):
        p, q, found = reference.jsma_saliency_search(gc, go, domain, targeted=targeted)
        for row in range(6):
            best = None
            for i, j in itertools.combinations(range(11), 2):
                if not (domain[row, i] and domain[row, j]):
                    continue
                a = gc[row, i] + gc[row, j]  # float32 tensor arithmetic, as the spec
                b = go[row, i] + go[row, j]
                score = -a * b
                if not all(math.isfinite(t.item()) for t in (a, b, score)):
                    continue
                if not ((a > 0 and b < 0) if targeted else (a < 0 and b > 0)):
                    continue
                if best is None or score.item() > best[0]:  # strict: ties keep the first (smallest key)
                    best = (score.item(), i, j)
            if best is None:
                assert not found[row] and p[row] == -1 and q[row] == -1
            else:
                assert found[row] and (p[row].item(), q[row].item()) == best[1:]
