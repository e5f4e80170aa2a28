"""Accuracy under adversarial attack: JSMA, Carlini-Wagner L2, BIM and FGSM on test images.

Two settings per attack:

- ``transfer``: the adversarial images are crafted once against the undefended model (a ``pgsl
  train --defense none`` run, client and server together) and then classified by every run.
- ``adaptive``: crafted against each run itself, end to end from the image to its decision. The
  parts without a gradient are taken as the identity on the backward pass (BPDA, Athalye et al.
  2018): the client's own JSMA step and the server's rpca. For the undefended run both settings
  are the same attack.

The attacked decision is the run's final output: the fusion-weighted average of the streams'
softmax scores (pgsl), the single stream's logits (baselines). BIM and FGSM come from
torchattacks through :class:`RunModel`; JSMA is ours (:func:`pgsl_ext.attacks.jsma`) and so is
Carlini-Wagner L2 (:func:`carlini_wagner_l2`: torchattacks' CW takes the best other class as
``max((1 - onehot) * outputs)``, which is the masked true class's 0 whenever the outputs are
log-probabilities, so its margin term vanished against pgsl's decision). Every
adversarial image is then classified by the run's real inference pipeline (the client's JSMA
with its surrogate's predicted label, rpca to the trained iteration cap) and each stream's
accuracy is reported next to the fused decision's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from dataclasses import dataclass
from typing import Dict, Iterator, List, Mapping, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

import pgsl_ext.attacks

from ..config import NOISY
from ..data import Split
from ..runs import Run
from . import settings as st

__all__ = ["ATTACKS", "AUTHORS_SETTINGS", "DEFAULT_IMAGES", "FULL_SETTINGS", "RobustnessSettings", "RunModel", "carlini_wagner_l2", "craft", "evaluate_robustness", "margin"]

_THETA = (lambda v: st.is_number(v) and v != 0, "a finite non-zero number")
_GAMMA = (lambda v: st.is_number(v) and 0 < v <= 1, "a fraction in (0, 1]")


@dataclass
class JSMASettings:
    """JSMA's step ``theta`` and pixel budget ``gamma``; ``images``: the first targets attacked
    (0: all of them)."""

    theta: float = st.setting(1.0, _THETA)
    gamma: float = st.setting(0.1, _GAMMA)
    images: int = st.setting(0, st.INTEGER)


@dataclass
class CWSettings:
    """Carlini-Wagner L2 (:func:`carlini_wagner_l2`): the first constant ``c``, the confidence
    ``kappa``, ``steps`` Adam steps at ``lr`` per constant, ``binary_steps`` constants searched;
    ``images``: the first targets attacked (0: all of them; 25 by default, half the quick look's
    targets: CW's 200 forward and backward passes per image are most of the default evaluation's
    robustness time)."""

    c: float = st.setting(1.0, st.POSITIVE)
    kappa: float = st.setting(0.0, st.NON_NEGATIVE)
    steps: int = st.setting(50, st.POSITIVE_INTEGER)
    lr: float = st.setting(0.05, st.POSITIVE)
    binary_steps: int = st.setting(4, st.POSITIVE_INTEGER)
    images: int = st.setting(25, st.INTEGER)


@dataclass
class BIMSettings:
    """``steps`` of ``alpha`` within L-inf ``eps``; ``images``: the first targets (0: all)."""

    eps: float = st.setting(0.3, st.POSITIVE)
    alpha: float = st.setting(0.05, st.POSITIVE)
    steps: int = st.setting(10, st.POSITIVE_INTEGER)
    images: int = st.setting(0, st.INTEGER)


@dataclass
class FGSMSettings:
    """One step of L-inf ``eps``; ``images``: the first targets (0: all)."""

    eps: float = st.setting(0.3, st.POSITIVE)
    images: int = st.setting(0, st.INTEGER)


_ADAPTIVE_CAP = (lambda v: v is None or (st.is_integer(v) and v >= 1), "an integer >= 1 or None")


@dataclass
class RobustnessSettings:
    """Every attack's parameters, the crafting batch size, and ``adaptive_rpca_iters``: rpca's
    iteration cap in the forward passes of adaptive crafting (the attacker's own approximation:
    rpca is most of a pgsl forward pass); adversarial images are always classified with the
    run's own cap. None: the run's cap while crafting too.

    The defaults are sized for pgsl + none on :data:`DEFAULT_IMAGES` test images on a 2-core CPU:
    an adaptive pgsl step costs a whole pgsl forward pass (client JSMA, rpca, three streams), so
    the step counts are small. eps = 0.3 is the usual L-inf budget for MNIST (Madry et al. 2018)."""

    jsma: JSMASettings = st.setting(None, factory=JSMASettings)
    cw: CWSettings = st.setting(None, factory=CWSettings)
    bim: BIMSettings = st.setting(None, factory=BIMSettings)
    fgsm: FGSMSettings = st.setting(None, factory=FGSMSettings)
    batch_size: int = st.setting(100, st.POSITIVE_INTEGER)
    adaptive_rpca_iters: Optional[int] = st.setting(20, _ADAPTIVE_CAP)
    eot_samples: int = st.setting(4, st.POSITIVE_INTEGER)


# The registry: every adversarial attack, by name, in the report's order.
ATTACKS = tuple(f.name for f in dataclasses.fields(RobustnessSettings) if f.type.endswith("Settings"))
DEFAULT_IMAGES = 50
# The research protocol (``pgsl evaluate --full``, 500 targets): the default budgets (they bring the
# undefended run to 0.00 under JSMA, CW and BIM), JSMA on the first 100 targets and CW on the first
# 50: CW's 200 forward and backward passes cost 4.6 s per image against the undefended run and 7.9
# s against pgsl (adaptive, BPDA) on 2 cores loaded by other jobs, which 500 images and five
# defences times three seeds cannot afford.
FULL_SETTINGS = RobustnessSettings(jsma=JSMASettings(images=100), cw=CWSettings(images=50))
# The attacks as their authors ran them (CW: 1000 Adam steps at lr 0.01 for 9 constants; BIM:
# Kurakin et al.'s alpha = 1/255 with min(eps*255 + 4, 1.25 eps*255) steps), rpca uncapped while
# crafting: hours per run on a CPU, for who has a GPU (``settings=AUTHORS_SETTINGS``).
AUTHORS_SETTINGS = RobustnessSettings(
    cw=CWSettings(steps=1000, lr=0.01, binary_steps=9, images=0), bim=BIMSettings(alpha=1 / 255, steps=80), adaptive_rpca_iters=None
)

_HOW = {
    "jsma": "JSMA (Papernot et al. 2016; pgsl_ext.attacks.jsma), non-targeted against the true label: two pixels "
    "per iteration move by theta, at most gamma of the pixels; the jacobian is that of the attacked output",
    "cw": "Carlini-Wagner L2 (Carlini & Wagner 2017; pgsl.evaluate.robustness.carlini_wagner_l2): Adam on "
    "tanh-space images for `steps` steps at `lr` per constant, loss ||x'-x||^2 + c * max(z_y - max_{i!=y} z_i, "
    "-kappa) on the attacked output z (logits or log-probabilities: the margin is the same), the tanh box kept "
    "1e-3 off its asymptotes so that pixels at 0 or 1 can move; a binary search over c per image "
    "(`binary_steps` constants from `c`, x10 until the first success); keeps the closest misclassified iterate, "
    "else the clean image",
    "bim": "BIM (Kurakin et al. 2017; torchattacks.BIM): `steps` signed-gradient steps of `alpha` on the "
    "cross-entropy, projected to the L-inf ball of radius eps and to [0, 1]",
    "fgsm": "FGSM (Goodfellow et al. 2015; torchattacks.FGSM): one signed-gradient step of eps on the "
    "cross-entropy, clipped to [0, 1]",
}


class RunModel(nn.Module):
    """A trained run as a module from images ``(B, C, H, W)`` in [0, 1] to ``(B, K)`` scores, for
    attack libraries.

    ``output``: a stream name (its logits) or ``"fused"`` (the log of the fused probabilities,
    whose arg-max is the run's decision and whose cross-entropy is the decision's); ``None``
    means the decision: the logits of a single-stream run, else ``"fused"``. ``bpda``: gradients
    through the client's JSMA and rpca taken as the identity (the forward values are the real
    pipeline's either way); ``rpca_iters``: rpca's cap in these forward passes (None: the
    run's); ``eot``: the output averaged over that many forward passes (each draws the client's
    noise afresh). The run's networks are submodules, so ``eval()`` and ``parameters()`` reach them.
    """

    def __init__(self, run: Run, output: Optional[str] = None, *, bpda: bool = True, rpca_iters: Optional[int] = None,
                 eot: int = 1):
        super().__init__()
        if not isinstance(run, Run):
            raise TypeError(f"RunModel: expected `run` to be a pgsl.runs.Run, got {type(run).__name__}")
        streams = tuple(run.streams)
        if output is None:
            output = streams[0] if len(streams) == 1 else "fused"
        if output != "fused" and output not in streams:
            raise ValueError(f"RunModel: expected `output` to be 'fused' or one of {streams}, got {output!r}")
        self.run, self.output, self.bpda, self.rpca_iters, self.eot = run, output, bpda, rpca_iters, eot
        self.client_net, self.server_net = run.client.net, run.server.net
        self.surrogate = run.client.surrogate
        self.train(run.server.net.training)  # a new Module says training=True; keep the run's mode

    def forward(self, x: Tensor) -> Tensor:
        if self.eot > 1:
            return torch.stack([self._once(x) for _ in range(self.eot)]).mean(0)
        return self._once(x)

    def _once(self, x: Tensor) -> Tensor:
        logits = self.run.logits(x, bpda=self.bpda, rpca_iters=self.rpca_iters)
        if self.output != "fused":
            return logits[self.output]
        probs = self.run.fused_probs(logits)
        return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()


@contextlib.contextmanager
def _eval_without_parameter_gradients(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode with parameter gradients off (CW's ``backward`` would otherwise
    fill the run's ``.grad``), restored on exit."""
    params = [(p, p.requires_grad) for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]
    for p, _ in params:
        p.requires_grad_(False)
    model.eval()
    try:
        yield model
    finally:
        for p, flag in params:
            p.requires_grad_(flag)
        for m, flag in modes:
            m.training = flag


def margin(outputs: Tensor, labels: Tensor) -> Tensor:
    """``z_y - max_{i != y} z_i`` per row of ``outputs`` ``(B, K)``: negative when misclassified.
    The other classes' maximum masks the true class with -inf, so it holds for any outputs,
    log-probabilities (all <= 0) included; shifting a row (logits -> log-softmax) leaves it."""
    true = outputs.gather(1, labels.view(-1, 1)).squeeze(1)
    others = outputs.masked_fill(F.one_hot(labels, outputs.shape[1]).bool(), float("-inf")).amax(1)
    return true - others


def carlini_wagner_l2(model: nn.Module, x: Tensor, y: Tensor, *, c: float = 1.0, kappa: float = 0.0, steps: int = 50,
                      lr: float = 0.05, binary_steps: int = 4, box_margin: float = 1e-3) -> Tensor:
    """Carlini & Wagner's L2 attack (2017), untargeted, on images ``x`` ``(B, C, H, W)`` in
    [0, 1] with labels ``y``: per image, the smallest-L2 misclassified iterate found over a binary
    search on the constant ``c`` (else the clean image).

    The change of variables ``x' = (tanh(w) / 2 + 1/2 - m) / (1 - 2m)`` starts at
    ``w0 = atanh((2x - 1)(1 - 2m))``, so ``x'(w0) = x`` while ``w0`` stays finite: with ``m = 0`` a
    pixel at exactly 0 or 1 sits at ``w = -inf / +inf``, where tanh has no gradient, and never
    moves (most of an MNIST digit's background). ``x'`` is clipped to [0, 1] in the forward pass
    only (its gradient passes straight through), so a pixel pushed past 0 can come back."""
    scale = 1 - 2 * box_margin
    w0 = torch.atanh(((2 * x - 1) * scale).clamp(-1 + 1e-7, 1 - 1e-7)).detach()
    n, device = len(x), x.device
    lo = torch.zeros(n, dtype=torch.float64, device=device)
    hi = torch.full((n,), math.inf, dtype=torch.float64, device=device)
    const = torch.full((n,), float(c), dtype=torch.float64, device=device)
    best, best_l2 = x.clone(), torch.full((n,), math.inf, dtype=torch.float64, device=device)
    for _ in range(binary_steps):
        w = w0.clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=lr)
        succeeded = torch.zeros(n, dtype=torch.bool, device=device)
        cs = const.to(x.dtype)
        for _ in range(steps):
            raw = ((torch.tanh(w) + 1) / 2 - box_margin).div(scale)
            x_adv = raw + (raw.clamp(0, 1) - raw).detach()  # in the box, with the gradient of raw: no dead zone past 0 or 1
            m = margin(model(x_adv), y)
            l2 = (x_adv - x).pow(2).flatten(1).sum(1)
            loss = (l2 + cs * (m + kappa).clamp_min(0)).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                fooled = m < 0
                closer = fooled & (l2.double() < best_l2)
                best[closer] = x_adv.detach()[closer]
                best_l2[closer] = l2.double()[closer]
                succeeded |= fooled
        hi = torch.where(succeeded, torch.minimum(hi, const), hi)
        lo = torch.where(succeeded, lo, torch.maximum(lo, const))
        const = torch.where(torch.isfinite(hi), (lo + hi) / 2, const * 10)
    return best


def craft(model: RunModel, attack: str, x: Tensor, y: Tensor, params) -> Tensor:
    """Adversarial versions of images ``x`` (labels ``y``) against ``model`` by ``attack`` with
    ``params`` (that attack's settings dataclass, e.g. :class:`CWSettings`)."""
    with _eval_without_parameter_gradients(model):
        if attack == "jsma":
            return pgsl_ext.attacks.jsma(model, x, y, theta=float(params.theta), gamma=float(params.gamma)).adversarial

        if attack == "cw":
            return carlini_wagner_l2(model, x, y, c=params.c, kappa=params.kappa, steps=params.steps, lr=params.lr,
                                     binary_steps=params.binary_steps).detach()
        import torchattacks

        if attack == "bim":
            atk = torchattacks.BIM(model, eps=params.eps, alpha=params.alpha, steps=int(params.steps))
        elif attack == "fgsm":
            atk = torchattacks.FGSM(model, eps=params.eps)
        else:
            raise ValueError(f"craft: expected `attack` in {ATTACKS}, got {attack!r}")
        return atk(x, y).detach()


@torch.no_grad()
def _predictions(run: Run, x: Tensor, batch_size: int) -> Dict[str, Tensor]:
    """Each stream's and the fused decision's predicted classes, by the run's inference pipeline."""
    out: Dict[str, List[Tensor]] = {}
    for xb in x.split(batch_size):
        logits = run.logits(xb)
        for name, z in logits.items():
            out.setdefault(name, []).append(z.argmax(1))
        out.setdefault("fused", []).append(run.fused_probs(logits).argmax(1))
    return {name: torch.cat(p) for name, p in out.items()}


def wilson_interval(correct: float, n: int, z: float = 1.959964) -> List[float]:
    """The 95 % Wilson score interval of a proportion ``correct / n`` (sound at 0 and 1, where the
    normal approximation collapses to a point)."""
    if n <= 0:
        return [0.0, 1.0]
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def _intervals(accuracy: Dict[str, float], n: int) -> Dict[str, List[float]]:
    return {name: wilson_interval(round(a * n), n) for name, a in accuracy.items()}


def _correct(run: Run, x: Tensor, y: Tensor, batch_size: int) -> Dict[str, str]:
    """Per output, which images it classifies correctly, as a string of 0s and 1s (image order)."""
    return {name: "".join("1" if c else "0" for c in (p == y).tolist()) for name, p in _predictions(run, x, batch_size).items()}


def _accuracy(correct: Dict[str, str]) -> Dict[str, float]:
    return {name: c.count("1") / len(c) for name, c in correct.items()}


def _accuracies(run: Run, x: Tensor, y: Tensor, batch_size: int) -> Dict[str, float]:
    return _accuracy(_correct(run, x, y, batch_size))


def _check(runs, undefended: List[Run], images, attacks) -> None:
    op = "evaluate_robustness"
    if not isinstance(runs, Mapping) or not runs:
        raise ValueError(f"{op}: expected `runs` to be a non-empty dict of name -> Run, got {runs!r}")
    for name, run in runs.items():
        if not isinstance(run, Run):
            raise TypeError(f"{op}: expected `runs[{name!r}]` to be a pgsl.runs.Run, got {type(run).__name__}")
    for source in undefended:
        if not isinstance(source, Run):
            raise TypeError(f"{op}: expected `undefended` to be pgsl.runs.Run(s) or None, got {type(source).__name__}")
        if source.defense != "none":
            raise ValueError(f"{op}: expected `undefended` to be --defense none run(s), got a --defense {source.defense} run ({source.folder})")
    if not isinstance(images, Split):
        raise TypeError(f"{op}: expected `images` to be a pgsl.data.Split, got {type(images).__name__}")
    x, y = images.x, images.y
    if not x.is_floating_point() or x.dim() != 4 or len(x) == 0 or y.dtype != torch.int64 or tuple(y.shape) != (len(x),):
        raise ValueError(
            f"{op}: expected `images` with x a float (N, C, H, W) tensor, N >= 1, and y int64 (N,), got x {x.dtype} "
            f"{tuple(x.shape)}, y {y.dtype} {tuple(y.shape)}"
        )
    if float(x.min()) < 0 or float(x.max()) > 1:
        raise ValueError(f"{op}: expected `images.x` in [0, 1], got values in [{float(x.min()):g}, {float(x.max()):g}]")
    for name, run in list(runs.items()) + [("undefended", u) for u in undefended]:
        shape = tuple(run.dataset.image_shape)
        if tuple(x.shape[1:]) != shape:
            raise ValueError(f"{op}: `images` are {tuple(x.shape[1:])} but run {name!r} ({run.folder}) takes {shape}")
        if int(y.max()) >= run.num_classes or int(y.min()) < 0:
            raise ValueError(f"{op}: `images.y` has labels outside run {name!r}'s {run.num_classes} classes")
    if isinstance(attacks, str) or not isinstance(attacks, Sequence) or not attacks:
        raise ValueError(f"{op}: expected `attacks` to be a non-empty sequence drawn from {ATTACKS}, got {attacks!r}")
    for a in attacks:
        if a not in ATTACKS:
            raise ValueError(f"{op}: unknown attack {a!r} in `attacks` (expected some of {ATTACKS})")
    if len(set(attacks)) != len(attacks):
        raise ValueError(f"{op}: `attacks` names an attack twice: {list(attacks)!r}")


def _perturbation(x_adv: Tensor, x: Tensor) -> dict:
    d = (x_adv - x).flatten(1).double()
    return {
        "linf_mean": float(d.abs().amax(1).mean()),
        "l2_mean": float(d.norm(dim=1).mean()),
        "l0_mean": float((d.abs() > 1e-6).double().sum(1).mean()),
    }


class _Timer:
    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def evaluate_robustness(
    runs: Dict[str, Run],
    *,
    undefended,
    images: Split,
    attacks: Sequence[str] = ATTACKS,
    settings: Optional[Mapping] = None,
    progress: bool = True,
    seed: int = 0,
    transfer_cache: Optional[Dict[str, tuple]] = None,
) -> dict:
    """Accuracy of every run (each stream and the fused decision) on ``images``, clean and under
    each of ``attacks``, transfer (crafted against an undefended run; skipped when there is none) and
    adaptive (against the run itself, BPDA through the client's JSMA and rpca).

    Args:
        runs: name -> restored run (:func:`pgsl.runs.restore`).
        undefended: ``--defense none`` run(s), the transfer attacks' source models: each run is
            attacked with images crafted against the first of them that is not itself (another
            seed), else against itself (then transfer is the white-box attack, and says so).
        images: the test images (x in [0, 1], ``(N, C, H, W)``) with their labels; sized so the
            defaults fit a CPU with :data:`DEFAULT_IMAGES`.
        attacks: some of :data:`ATTACKS`.
        settings: a :class:`RobustnessSettings` or a dict of its fields, e.g.
            ``{"fgsm": {"eps": 0.1}}``, or :data:`FULL_SETTINGS` (None: the defaults).
        seed: seeds the global RNG and the runs' activation noise for the duration.
        transfer_cache: a dict that keeps the transfer images crafted against each source
            (``"attack|source folder" -> (images, source accuracy)``) across calls: evaluating
            runs one call at a time crafts them once. A caller may save and reload it.

    Returns:
        dict (JSON-serialisable)::

            {"images": N, "undefended": the first source's folder or None, "transfer_sources": [folders],
             "seed": seed, "batch_size": B,
             "adaptive_rpca_iters": cap or None,
             "attacks": {attack: {"how": text, "settings": {...}}}, "notes": [text, ...],
             "seconds": wall, "cpu_seconds": cpu,
             "results": {name: {"folder", "defense", "streams": [...],
                             "clean": {stream: acc, ..., "fused": acc}, "clean_ci95": {stream: [low, high], ...},
                             "clean_correct": {stream: "0110...", ...} (per image, 1 where it is right),
                             "attacks": {attack: {setting: {"accuracy": {stream: acc, ..., "fused": acc},
                                                            "accuracy_ci95": {stream: [low, high], ...} (95 % Wilson
                                                            interval over the images), "correct": {stream: "0110..."},
                                                            "source_accuracy": acc of the model attacked,
                                                            "perturbation": {"linf_mean", "l2_mean", "l0_mean"},
                                                            "seconds", "cpu_seconds"}}}}}}

        ``setting`` is ``"transfer"`` or ``"adaptive"``; ``"fused"`` is the decision (for a
        single-stream run, the same as its stream). ``source_accuracy`` is the fused accuracy of
        the model the images were crafted against (the undefended one for transfer); crafting
        time is counted once for transfer images, under the first run.
    """
    undefended = [] if undefended is None else ([undefended] if isinstance(undefended, Run) else list(undefended))
    _check(runs, undefended, images, attacks)
    cfg = st.resolve(RobustnessSettings, settings, "evaluate_robustness: `settings`")
    batch = cfg.batch_size
    x, y = images.x.float(), images.y
    all_runs = list(runs.values()) + undefended
    for r in all_runs:
        r.eval()
    wall, cpu_start = time.perf_counter(), time.process_time()
    steps = len(runs) * len(attacks) * (bool(undefended) + 1)
    bar = tqdm(total=steps * len(x), desc="accuracy under attack", unit="img", disable=not progress, dynamic_ncols=True)
    report = {
        "images": len(x),
        "undefended": undefended[0].folder if undefended else None,
        "transfer_sources": [u.folder for u in undefended],
        "seed": seed,
        "batch_size": batch,
        "adaptive_rpca_iters": cfg.adaptive_rpca_iters,
        "eot_samples": cfg.eot_samples,
        "attacks": {a: {"how": _HOW[a], "settings": dataclasses.asdict(getattr(cfg, a))} for a in attacks},
        "notes": [],
        "results": {},
    }
    report["notes"].append(
        "adversarial images are classified by each run's inference pipeline: for pgsl the client first applies its "
        "own JSMA against its surrogate with the surrogate's predicted label (it has no true label at inference), "
        "then the server runs rpca and three streams; 'fused' is the fusion-weighted softmax average (the decision). "
        "Adaptive attacks target the decision (log fused probabilities for pgsl) with the true labels; gradients pass "
        "the client's JSMA and rpca as the identity (BPDA), rpca capped at adaptive_rpca_iters in those forward "
        "passes; against --defense noise the output is averaged over eot_samples noise draws (EOT). Transfer attacks "
        "are crafted against the undefended run's full model (client and server)."
    )
    report["notes"].append(
        "Accuracies are fractions of the images; 'seconds' / 'cpu_seconds' per setting are the crafting time "
        "(wall / process CPU, all threads), counted once for transfer images."
    )
    transfer_cache = {} if transfer_cache is None else transfer_cache
    with torch.random.fork_rng(devices=[]), contextlib.ExitStack() as noise, bar:
        for r in all_runs:
            noise.enter_context(r.noise_seeded(seed))
        torch.manual_seed(seed)
        for name, run in runs.items():
            entry = {
                "folder": run.folder,
                "defense": run.defense,
                "streams": list(run.streams),
                "clean_correct": _correct(run, x, y, batch),
                "clean": None,
                "clean_ci95": None,
                "attacks": {},
            }
            entry["clean"] = _accuracy(entry["clean_correct"])
            entry["clean_ci95"] = _intervals(entry["clean"], len(x))
            transfer_source = next((u for u in undefended if u.folder != run.folder), undefended[0] if undefended else None)
            same_as_undefended = transfer_source is not None and transfer_source.folder == run.folder
            for attack in attacks:
                results = {}
                n = getattr(cfg, attack).images or len(x)  # this attack's targets: the first n
                xa, ya = x[:n], y[:n]
                sources = ([("transfer", transfer_source)] if transfer_source is not None else []) + [("adaptive", run)]
                for setting, source in sources:
                    bar.set_postfix_str(f"{name} {attack} {setting}")
                    seconds = cpu = 0.0
                    key = f"{attack}|{os.path.abspath(source.folder)}"
                    if setting == "transfer" and key in transfer_cache and len(transfer_cache[key][0]) == len(xa):
                        x_adv, source_accuracy = transfer_cache[key]
                    elif setting == "adaptive" and same_as_undefended and "transfer" in results:
                        results["adaptive"] = dict(results["transfer"], note="the undefended run itself: the same images as transfer")
                        results["transfer"]["note"] = "crafted against this run itself (no other undefended run to transfer from)"
                        bar.update(len(x))
                        continue
                    else:
                        eot = cfg.eot_samples if source.defense in NOISY else 1
                        model = RunModel(source, bpda=True, rpca_iters=cfg.adaptive_rpca_iters, eot=eot)
                        with _Timer() as t:
                            x_adv = torch.cat(
                                [craft(model, attack, xb, yb, getattr(cfg, attack)) for xb, yb in zip(xa.split(batch), ya.split(batch))]
                            )
                        seconds, cpu = t.wall, t.cpu
                        source_accuracy = None
                    correct = _correct(run, x_adv, ya, batch)
                    accuracy = _accuracy(correct)
                    if source_accuracy is None:
                        source_accuracy = accuracy["fused"] if source is run else _accuracies(source, x_adv, ya, batch)["fused"]
                        if setting == "transfer":
                            transfer_cache[key] = (x_adv, source_accuracy)
                    results[setting] = {
                        "source": source.folder,
                        "images": len(xa),
                        "accuracy": accuracy,
                        "accuracy_ci95": _intervals(accuracy, len(xa)),
                        "correct": correct,
                        "source_accuracy": source_accuracy,
                        "perturbation": _perturbation(x_adv, xa),
                        "seconds": seconds,
                        "cpu_seconds": cpu,
                    }
                    bar.update(len(x))  # the bar counts every setting as all the targets, capped or not
                entry["attacks"][attack] = results
            report["results"][name] = entry
    report["seconds"], report["cpu_seconds"] = time.perf_counter() - wall, time.process_time() - cpu_start
    return report
