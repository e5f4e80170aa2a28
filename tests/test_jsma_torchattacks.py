"""pgsl_ext.attacks.JSMA as a drop-in for torchattacks.JSMA: the same torchattacks-style script
run with either class, on real MNIST digits and a small LeNet trained inside the test, in every
mode torchattacks offers (with and without normalisation, in train mode), gives the same
adversarial images; PGSL's non-targeted mode equals attacks.jsma; a 3x224x224 input runs in
bounded memory."""

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn as nn

import torchattacks  # a test dependency (requirements.txt): missing fails, never skips

from pgsl_ext import attacks
from tests.common_utils import DEVICES, mnist_classifier

N_DIGITS = 8
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@pytest.fixture(scope="module")
def mnist():
    """(model, x, y): a LeNet trained for a few seconds on mnist5k's 4,000 training digits (seeded)
    and the first test digits."""
    model, x, y, accuracy = mnist_classifier(epochs=2)
    assert accuracy > 0.85, f"the test CNN trained to only {accuracy:.2f} accuracy"
    return model, x[:N_DIGITS], y[:N_DIGITS]


class _Normalized(nn.Module):
    """The LeNet behind a normalising front end: it takes (x - mean) / std, as a torchvision-style
    pipeline feeds its model."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, z):
        return self.model(z * MNIST_STD + MNIST_MEAN)


def _set_mode(atk, mode):
    """Puts a torchattacks-style attack in one of torchattacks' modes (quietly)."""
    if mode == "default":
        atk.set_mode_default()
    elif mode == "targeted_by_function":
        atk.set_mode_targeted_by_function(lambda images, labels: (labels + 3) % 10, quiet=True)
    elif mode == "targeted_random":
        atk.set_mode_targeted_random(quiet=True)
    elif mode == "targeted_least_likely":
        atk.set_mode_targeted_least_likely(kth_min=2, quiet=True)
    elif mode == "targeted_by_label":
        atk.set_mode_targeted_by_label(quiet=True)
    else:
        raise ValueError(mode)


def _script(attack_class, model, images, labels, mode, normalized, training):
    """A torchattacks user's script: build, configure, attack; returns (adversarial, targets)."""
    atk = attack_class(model, theta=1.0, gamma=0.1)
    _set_mode(atk, mode)
    if normalized:
        atk.set_normalization_used(mean=[MNIST_MEAN], std=[MNIST_STD])
    if training:
        atk.set_model_training_mode(model_training=True)
    torch.manual_seed(7)  # targeted_random draws its targets from torch's generator
    targets = atk.get_target_label(images, labels) if atk.targeted else (labels + 1) % 10
    torch.manual_seed(7)
    return atk(images, labels), targets


MODES = ["default", "targeted_by_function", "targeted_random", "targeted_least_likely", "targeted_by_label"]


@pytest.mark.parametrize(
    "mode, normalized, training",
    [(mode, False, False) for mode in MODES] + [("default", True, False), ("targeted_by_function", True, True)],
    ids=lambda v: str(v),
)
def test_same_adversarial_images_as_torchattacks(mnist, mode, normalized, training, capsys):
    model, x, y = mnist
    if mode == "targeted_by_label":
        y = (y + 5) % 10  # "labels" are the targets in this mode
    images = (x - MNIST_MEAN) / MNIST_STD if normalized else x
    net = _Normalized(model) if normalized else model
    seen_training = []
    hook = model.register_forward_pre_hook(lambda module, args: seen_training.append(module.training))
    try:
        ours, targets = _script(attacks.JSMA, net, images, y, mode, normalized, training)
        ours_training = set(seen_training)
        seen_training.clear()
        theirs, same_targets = _script(torchattacks.JSMA, net, images, y, mode, normalized, training)
    finally:
        hook.remove()
        # torchattacks' __call__ (inherited) leaves an eval-mode model in train mode after
        # set_model_training_mode(model_training=True); the module-scoped LeNet goes back.
        net.eval()
    assert torch.equal(targets, same_targets)
    assert ours_training == set(seen_training) == {training}  # set_model_training_mode honoured
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype and ours.device == theirs.device

    def summary(adversarial):
        clean = adversarial * MNIST_STD + MNIST_MEAN if normalized else adversarial
        with torch.no_grad():
            success = (net(adversarial).argmax(1) == targets).float().mean().item() * 100
        changed = ((clean - x).abs() > 1e-6).flatten(1).sum(1).float().mean().item()
        return success, changed

    (our_success, our_pixels), (their_success, their_pixels) = summary(ours), summary(theirs)
    print(f"{mode}: success {our_success:.0f}% vs {their_success:.0f}%, pixels {our_pixels:.1f} vs {their_pixels:.1f}")
    assert abs(our_success - their_success) <= 3
    assert abs(our_pixels - their_pixels) <= 0.1 * their_pixels
    # Same images: bitwise without normalisation; after it, both apply the same
    # (x - mean) / std to the same pixels, so equal up to that rounding.
    if normalized:
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    else:
        assert torch.equal(ours, theirs)


def test_untargeted_mode_is_pgsl_jsma_with_torchattacks_domain_and_budget(mnist):
    model, x, y = mnist
    atk = attacks.JSMA(model, theta=1.0, gamma=0.1)
    atk.set_mode_untargeted(quiet=True)
    adversarial = atk(x, y)
    n = x[0].numel()
    # floor(N gamma' / 2) = 40 = ceil(N * 0.1 / 2), torchattacks' budget
    expected = attacks.jsma(model, x, y, domain_margin=0.01, gamma=40.5 * 2 / n)
    assert torch.equal(adversarial, expected.adversarial)
    assert torch.equal(atk.last_result.success, expected.success)
    with torch.no_grad():
        assert torch.equal(model(adversarial).argmax(1) != y, atk.last_result.success)
    assert atk.last_result.success.float().mean() > 0.9
    assert atk.get_mode() == "untargeted" and not atk.targeted
    atk.set_mode_default()
    assert atk.get_mode() == "default"
    assert torch.equal(atk(x, y), _script(torchattacks.JSMA, model, x, y, "default", False, False)[0])


def test_budget_domain_and_stop_as_torchattacks(mnist):
    model, x, y = mnist
    atk = attacks.JSMA(model, theta=1.0, gamma=0.1)
    atk.set_mode_targeted_by_function(lambda images, labels: (labels + 1) % 10, quiet=True)
    adversarial = atk(x, y)
    result = atk.last_result
    assert result.iterations.max().item() <= math.ceil(784 * 0.1 / 2) == 40
    changed = (adversarial != x).flatten(1).sum(1)
    assert torch.all(changed <= 2 * result.iterations)
    assert torch.all(x[adversarial != x] < 0.99)  # torchattacks' search domain
    with torch.no_grad():
        reached = model(adversarial).argmax(1) == (y + 1) % 10
    assert torch.equal(reached, result.success)
    assert torch.all(result.success | (result.iterations == 40))  # unsuccessful only at the budget


def test_negative_theta_lowers_features_in_torchattacks_domain(mnist):
    # torchattacks' score a |b| is negative on every valid pair when theta < 0, so its argmax
    # lands on feature 0 paired with itself every time; here the search follows the step.
    model, x, y = mnist
    atk = attacks.JSMA(model, theta=-1.0, gamma=0.05)
    adversarial = atk(x, y)
    n = x[0].numel()
    expected = attacks.jsma(
        model, x, y, targeted=True, target=(y + 1) % 10, theta=-1.0, domain_margin=0.01, gamma=20.5 * 2 / n
    )
    assert torch.equal(adversarial, expected.adversarial)
    lowered = adversarial != x
    assert torch.all(adversarial[lowered] == 0) and torch.all(x[lowered] > 0.01)
    assert (atk.last_result.iterations > 0).all()
    assert atk.last_result.iterations.max() <= math.ceil(n * 0.05 / 2) == 20


@pytest.mark.parametrize("device", DEVICES)
def test_device_handling(device):
    # The attack runs where the model is (torchattacks' rule), whatever the device of the input.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4), nn.Tanh(), nn.Linear(4, 3)).to(device).eval()
    x = torch.rand(6, 1, 4, 4)
    y = model(x.to(device)).argmax(1).cpu()
    atk = attacks.JSMA(model, theta=1.0, gamma=0.5)
    assert atk.device == torch.device(device) or atk.device.type == device
    adversarial = atk(x, y)
    assert adversarial.device.type == device
    expected = attacks.jsma(
        model, x.to(device), y.to(device), targeted=True, target=(y.to(device) + 1) % 3, domain_margin=0.01,
        gamma=(4 + 0.5) * 2 / 16,
    )  # fmt: skip
    assert torch.equal(adversarial, expected.adversarial)
    atk.set_device(torch.device("cpu"))
    assert atk.device == torch.device("cpu")


def test_save_and_repr_from_the_base_class(tmp_path):
    # torchattacks' Attack.save runs the attack over a DataLoader and stores the images.
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4), nn.Tanh(), nn.Linear(4, 3)).eval()
    x = torch.rand(10, 1, 4, 4)
    y = model(x).argmax(1)
    atk = attacks.JSMA(model, theta=1.0, gamma=0.5)
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    robust, _, _ = atk.save(loader, save_path=str(tmp_path / "adv.pt"), verbose=False, return_verbose=True)
    saved = torch.load(tmp_path / "adv.pt")["adv_inputs"]
    expected = torch.cat([atk(xb, yb) for xb, yb in loader])
    assert torch.equal(saved, expected)
    with torch.no_grad():
        assert robust == pytest.approx(100 * (model(saved).argmax(1) == y).float().mean().item())
    assert repr(atk).startswith("JSMA(") and "theta=1.0, gamma=0.5" in repr(atk) and "last_result" not in repr(atk)


def test_errors_name_the_argument(mnist):
    model, x, y = mnist
    with pytest.raises(ValueError, match="`theta` to be a finite non-zero number, but got 0"):
        attacks.JSMA(model, theta=0)
    with pytest.raises(ValueError, match=r"`gamma` in \(0, 1\], but got 2"):
        attacks.JSMA(model, gamma=2)
    atk = attacks.JSMA(model)
    with pytest.raises(ValueError, match="`labels` to be an integer tensor, but got torch.float32"):
        atk(x, y.float())
    with pytest.raises(ValueError, match=r"`labels` to be an int64 tensor of shape \(8,\)"):
        atk(x, y[:3])
    atk.set_mode_targeted_by_function(lambda images, labels: labels + 20, quiet=True)
    with pytest.raises(ValueError, match=r"label in `target labels` in \[0, 10\)"):
        atk(x, y)


def test_pgsl_ext_imports_without_torchattacks():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["torchattacks"] = None  # makes `import torchattacks` fail
        import pgsl_ext, pgsl_ext.attacks
        from pgsl_ext.attacks import *
        assert "JSMA" in dir(pgsl_ext.attacks)
        try:
            pgsl_ext.attacks.JSMA
        except ImportError as e:
            print("ImportError", e)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    assert "ImportError" in out.stdout


# A tiny conv net on 3 x 224 x 224 images and an attack of 3 iterations, in a child process whose
# large allocations go straight to mmap (freed memory leaves the resident set). The first attack
# pages in the code it runs; for the second, the kernel's peak resident set (VmHWM, reset through
# clear_refs just before, so no spike is missed) above what the process held just before it.
_MEMORY_SCRIPT = """
import json, sys
import torch
import torch.nn as nn
from pgsl_ext import attacks

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))

torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(3, 4, 5, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64, 10))
batch = int(sys.argv[1])
images = torch.rand(batch, 3, 224, 224)
labels = model(images).argmax(1)
atk = attacks.JSMA(model, theta=1.0, gamma=6 / (3 * 224 * 224))  # ceil(N gamma / 2) = 3 iterations
atk(images, labels)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets VmHWM to the current resident set
before = status("VmRSS")
adversarial = atk(images, labels)
print(json.dumps({"growth": status("VmHWM") - before, "iterations": atk.last_result.iterations.tolist(),
                  "changed": (adversarial != images).flatten(1).sum(1).tolist()}))
"""

# torchattacks' search builds five (N, N) float32 maps (84 GiB each at N = 3 x 224 x 224) and an
# (N, N) int64 diagonal mask (169 GiB) per image.
MEMORY_BOUND = 64 * 2**20


@pytest.mark.parametrize("batch", [1, 4])
def test_224x224_runs_in_bounded_memory(batch):
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(batch)], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"3x224x224, batch {batch}: peak growth {report['growth'] / 2**20:.1f} MiB; {report}")
    assert report["growth"] < MEMORY_BOUND
    assert all(0 < it <= 3 for it in report["iterations"])
    assert all(c <= 2 * it for c, it in zip(report["changed"], report["iterations"]))
