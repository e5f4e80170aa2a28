"""Model-inversion attacks on what crosses the wire, and :func:`evaluate_privacy`, which runs them.

Each attack is a small object with a settings dataclass and one ``reconstruct`` method whose
arguments are exactly what that attacker knows (breaching's ``attacks/`` without the config
tree). Every attack returns its estimate of the *clean* images ``(N, C, H, W)`` in [0, 1];
:func:`evaluate_privacy` scores it against the clean originals and against the image the client
actually encoded (for ``--defense pgsl`` the JSMA-attacked image; otherwise the same image).

What each attacker sees is what the defence sends: :meth:`pgsl.train.TrainedRun.wire` (pgsl: the
cut activations of ``pixel_unshuffle_concat(JSMA(x), perturbation map)``, ``(B, 64, H/2, W/2)``;
noise: the activations plus the Laplacian noise actually drawn; nopeek / none: the activations).

==========  ==================================================================================
attack      the attacker knows
==========  ==================================================================================
decoder     black box (He et al. 2019; Titcombe et al. 2021): auxiliary images from the same
            distribution (disjoint from training and targets) and query access to the trained
            client (image in, wire message out); trains a transposed-conv decoder
            wire -> image on the (message, image) pairs and applies it to the intercepted
            messages.
unsplit     the server (Erdogan et al. 2022): the intercepted messages, the client's
            architecture and input pipeline, not its weights; optimises a stand-in client and
            the inputs together so the stand-in's output matches the messages (TV prior), best
            of a few restarts. The input is identified only up to an affine map of its
            intensities (the stand-in's conv 1 absorbs it, sign included), which the attacker
            fixes with the pixel statistics of the domain (its auxiliary images' mean, std and
            skewness sign).
whitebox    the client's trained weights and pipeline; optimises the inputs so the client's
            output matches the intercepted messages (TV prior).
dlg         the full model at the observed step (client and server weights, e.g. an aggregator
            that averages client weights and colludes with the server), the labels of the batch
            (they cross the wire in split learning, so no iDLG label inference is needed) and the
            client's parameter gradients of that batch; optimises dummy images so their gradients
            match (DLG, Zhu et al. 2019; iDLG, Zhao et al. 2020) with Geiping et al. 2020's
            cosine distance and signed Adam, best of a few restarts. The step observed is by
            default the run's first (its initial weights, rebuilt from its seed): an aggregator
            sees every step, and the first leaks most (see below).
==========  ==================================================================================

The PGSL pipeline for the optimisation attacks (unsplit, whitebox, dlg): the attacker knows that
conv 1 sees ``pixel_unshuffle_concat(x_adv, max_pool_2(map))`` but not the client's surrogate, so
it cannot rerun its JSMA. It optimises the encoded image ``x_adv`` and the pooled perturbation map
``(N, 1, H/2, W/2)`` as a free nuisance variable in [-1, 1] (initialised at 0, with an L1 prior:
JSMA changes few pixels), and reports the image estimate. It cannot undo the perturbation (the
map is pooled, and where JSMA saturated a pixel the clean value is lost), so its best estimate of
the clean image is its estimate of ``x_adv``.

Status, measured with the defaults on the 2-epoch mnist5k runs of the README (commit 6657aea,
``results/mnist5k-compare/``; PSNR against the clean images, the mean auxiliary image 11.7 dB):
decoder none 36.6 / pgsl 27.5 / noise 30.6 / nopeek 35.2 dB; white box 93.1 / 19.1 (85.7
against the image pgsl encoded) / 33.9 / 92.5 dB; UnSplit 21.9 / 9.3 / 15.5 / 8.3 dB (under
nopeek the outlines, with wrong intensities); DLG at the initial weights 15.7 / 20.3 / 4.9 / 15.7
dB (2 images). Every attack recovers the undefended digits; DLG varies with its random starts
(14.7 to 17.7 dB on the same two images over seeds and restart counts), and at the trained
weights recovers nothing (9.9 dB, the mean image 12.5, on the undefended run's first targets).

Cost: the whole default report for the four runs took 12 minutes of wall time on an idle 2-core
CPU: per run the decoder 9-32 s, UnSplit 16-47 s, the white box 2-8 s, DLG 77-93 s (once 167 s,
slowed by another job), the robustness attacks and the mu sweep the rest; :data:`FULL_SETTINGS`
is the full protocol.

Simplifications, stated in each result's ``how``: the DLG gradients are those of one step with
both halves in eval mode (no dropout mask or batch statistics the attacker would have to guess),
and for ``--defense noise`` the server's gradient is taken at the noisy activations it received,
as in training, while the attacker (not knowing the noise) matches with noise-free dummies.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

import pgsl_ext.reference

from ..data import Split
from ..models import ClientNet
from ..train import restore
from .metrics import independent_classifier, reconstruction_metrics

__all__ = [
    "ATTACKS",
    "DLGSettings",
    "FULL_SETTINGS",
    "DecoderAttack",
    "DecoderSettings",
    "GradientLeakageAttack",
    "PipelineSpec",
    "UnSplitAttack",
    "UnSplitSettings",
    "WhiteBoxAttack",
    "WhiteBoxSettings",
    "encoded_images",
    "evaluate_privacy",
    "match_pixel_statistics",
    "messages",
    "pixel_statistics",
    "total_variation",
]


def total_variation(x: Tensor) -> Tensor:
    """Mean absolute difference between vertically and horizontally adjacent pixels."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


@dataclass(frozen=True)
class PipelineSpec:
    """What every attacker knows of the client's input pipeline: the defence, the image shape,
    and conv 1's input channels (pgsl: 4 unshuffled pixels per colour channel + the map)."""

    defense: str
    image_shape: Sequence[int]

    @property
    def in_channels(self) -> int:
        return self.image_shape[0] * 4 + 1 if self.defense == "pgsl" else self.image_shape[0]

    def variables(self, n: int, generator: torch.Generator) -> List[Tensor]:
        """The optimised inputs: images near 0.5 and (pgsl) the pooled perturbation map at 0."""
        c, h, w = self.image_shape
        image = (0.5 + 0.01 * torch.randn(n, c, h, w, generator=generator)).requires_grad_(True)
        if self.defense != "pgsl":
            return [image]
        return [image, torch.zeros(n, 1, h // 2, w // 2, requires_grad=True)]

    def net_input(self, variables: Sequence[Tensor]) -> Tensor:
        """Conv 1's input for the optimised variables (plain PyTorch: twice differentiable)."""
        if self.defense != "pgsl":
            return variables[0]
        image, pooled_map = variables
        # The map enters pooled by 2x2 max; upsampling by repetition and pooling again is exact.
        return pgsl_ext.reference.pixel_unshuffle_concat(image, F.interpolate(pooled_map, scale_factor=2.0), 2)

    def prior(self, variables: Sequence[Tensor], tv: float, map_l1: float) -> Tensor:
        loss = tv * total_variation(variables[0])
        if self.defense == "pgsl":
            loss = loss + map_l1 * variables[1].abs().mean()
        return loss

    @staticmethod
    @torch.no_grad()
    def project(variables: Sequence[Tensor]) -> None:
        variables[0].clamp_(0, 1)
        for v in variables[1:]:
            v.clamp_(-1, 1)


def _bar(total: int, desc: str, progress: bool):
    return tqdm(total=total, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)


def _frozen(net: nn.Module) -> nn.Module:
    net = copy.deepcopy(net).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _check_settings(settings) -> None:
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if f.type in ("int", int) and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ValueError(f"{type(settings).__name__}.{f.name}: expected an integer >= 0, got {value!r}")
        if f.type in ("float", float) and (not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0):
            raise ValueError(f"{type(settings).__name__}.{f.name}: expected a finite number >= 0, got {value!r}")


# --------------------------------------------------------------------------- black-box decoder


@dataclass
class DecoderSettings:
    """``images``: targets reconstructed (0: all); ``aux_images``: auxiliary images queried
    (0: all); the decoder is trained for ``epochs`` with Adam (``lr``, ``batch_size``)."""

    images: int = 0
    aux_images: int = 0
    epochs: int = 30
    batch_size: int = 32
    lr: float = 2e-3
    width: int = 32


class Decoder(nn.Sequential):
    """Transposed convolutions from the wire ``(B, A, h, w)`` to images ``(B, C, H, W)``: one 4x4
    stride-2 layer per factor 2 of ``H / h``, then three 3x3 layers; sigmoid output."""

    def __init__(self, wire_channels: int, image_channels: int, upsample: int, width: int):
        layers: List[nn.Module] = [nn.ConvTranspose2d(wire_channels, width, 3, padding=1), nn.ReLU()]
        for _ in range(int(round(math.log2(upsample)))):
            layers += [nn.ConvTranspose2d(width, width, 4, stride=2, padding=1), nn.ReLU()]
        layers += [nn.ConvTranspose2d(width, width, 3, padding=1), nn.ReLU(), nn.ConvTranspose2d(width, image_channels, 3, padding=1), nn.Sigmoid()]
        super().__init__(*layers)


class DecoderAttack:
    name = "decoder"

    def __init__(self, settings: Optional[DecoderSettings] = None):
        self.settings = settings or DecoderSettings()
        _check_settings(self.settings)
        if self.settings.epochs < 1 or self.settings.batch_size < 1 or self.settings.width < 1:
            raise ValueError(f"DecoderSettings: epochs, batch_size and width must be >= 1, got {self.settings}")

    def how(self, aux: int) -> str:
        s = self.settings
        return (
            f"black-box decoder: {aux} auxiliary images sent through the trained client (query access), a "
            f"{s.width}-wide transposed-conv decoder trained {s.epochs} epochs (Adam lr {s.lr:g}, MSE) on "
            f"(message, clean image) pairs, applied to the intercepted messages"
        )

    def reconstruct(
        self,
        intercepted: Tensor,
        query: Callable[[Tensor], Tensor],
        aux_images: Tensor,
        *,
        generator: torch.Generator,
        progress: bool = True,
    ) -> Tensor:
        """``intercepted`` ``(N, A, h, w)`` messages; ``query``: images -> the client's messages;
        ``aux_images`` ``(M, C, H, W)``."""
        s = self.settings
        if len(aux_images) < 1:
            raise ValueError("aux: expected at least one auxiliary image for the decoder, got 0")
        with torch.no_grad():
            messages = torch.cat([query(chunk) for chunk in aux_images.split(250)])
        c, h = aux_images.shape[1], aux_images.shape[2]
        decoder = Decoder(messages.shape[1], c, h // messages.shape[2], s.width)
        opt = torch.optim.Adam(decoder.parameters(), lr=s.lr)
        steps_per_epoch = math.ceil(len(aux_images) / s.batch_size)
        with _bar(s.epochs * steps_per_epoch, "decoder: train", progress) as bar:
            for _ in range(s.epochs):
                for index in torch.randperm(len(aux_images), generator=generator).split(s.batch_size):
                    loss = F.mse_loss(decoder(messages[index]), aux_images[index])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    bar.update()
                bar.set_postfix(mse=f"{loss.item():.4f}")
        decoder.eval()
        with torch.no_grad():
            return torch.cat([decoder(chunk) for chunk in intercepted.split(250)]).clamp(0, 1)


# --------------------------------------------------------------------------- white box


@dataclass
class WhiteBoxSettings:
    """``images``: targets reconstructed (0: all); Adam for ``steps`` at ``lr`` on the
    activation MSE + ``tv`` x total variation (+ ``map_l1`` x |map| for pgsl)."""

    images: int = 32
    steps: int = 300
    lr: float = 0.05
    tv: float = 1e-3
    map_l1: float = 1e-3


class WhiteBoxAttack:
    name = "whitebox"

    def __init__(self, settings: Optional[WhiteBoxSettings] = None):
        self.settings = settings or WhiteBoxSettings()
        _check_settings(self.settings)

    def how(self, spec: PipelineSpec) -> str:
        s = self.settings
        extra = ", pooled perturbation map optimised as a nuisance (L1 %g)" % s.map_l1 if spec.defense == "pgsl" else ""
        return (
            f"white box: the client's trained weights; inputs optimised (Adam, {s.steps} steps, lr {s.lr:g}, "
            f"projected to [0, 1]) to match the intercepted messages in MSE, TV prior {s.tv:g}{extra}"
        )

    def reconstruct(
        self, intercepted: Tensor, client_net: nn.Module, spec: PipelineSpec, *, generator: torch.Generator, progress: bool = True
    ) -> Tensor:
        s = self.settings
        net = _frozen(client_net)
        variables = spec.variables(len(intercepted), generator)
        opt = torch.optim.Adam(variables, lr=s.lr)
        with _bar(s.steps, "whitebox", progress) as bar:
            for _ in range(s.steps):
                match = F.mse_loss(net(spec.net_input(variables)), intercepted)
                loss = match + spec.prior(variables, s.tv, s.map_l1)
                opt.zero_grad()
                loss.backward()
                opt.step()
                spec.project(variables)
                bar.update()
                bar.set_postfix(match=f"{match.item():.4f}", refresh=False)
        return variables[0].detach().clone()


# --------------------------------------------------------------------------- UnSplit


@dataclass
class UnSplitSettings:
    """``images``: targets reconstructed (0: all). ``restarts`` independent attempts (a fresh
    stand-in and start each), keeping the one whose stand-in matches the messages best; each is
    ``rounds`` of alternating Adam: ``input_steps`` on the inputs (``lr``), then ``model_steps``
    on the stand-in (``model_lr``); loss = activation MSE + ``tv`` x total variation (+
    ``map_l1`` x |map| for pgsl)."""

    images: int = 16
    restarts: int = 3
    rounds: int = 100
    input_steps: int = 5
    model_steps: int = 5
    lr: float = 0.1
    model_lr: float = 2e-3
    tv: float = 1e-3
    map_l1: float = 1e-3


def match_pixel_statistics(images: Tensor, mean: float, std: float, skewness: float) -> Tensor:
    """Map each image ``(N, C, H, W)`` affinely so its pixels have the given ``mean`` and ``std``,
    with the polarity whose skewness has the sign of ``skewness``; clamp to [0, 1].

    UnSplit identifies the input only up to an affine map of its intensities (the stand-in's
    conv 1 absorbs any ``a x + b``, a < 0 included: digits come back as bright-on-dark or
    dark-on-bright at any contrast); an attacker fixes it with the pixel statistics of the
    imaging domain, here those of its auxiliary images."""
    flat = images.flatten(1)
    z = (flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True).clamp_min(1e-12)
    flip = (z.pow(3).mean(1, keepdim=True) * skewness) < 0
    z = torch.where(flip, -z, z)
    return (mean + std * z).clamp(0, 1).view_as(images)


def pixel_statistics(images: Tensor) -> Dict[str, float]:
    """Mean, standard deviation and skewness of all pixels of ``images``."""
    mean, std = float(images.mean()), float(images.std())
    return {"mean": mean, "std": std, "skewness": float(((images - mean) ** 3).mean()) / max(std, 1e-12) ** 3}


class UnSplitAttack:
    name = "unsplit"

    def __init__(self, settings: Optional[UnSplitSettings] = None):
        self.settings = settings or UnSplitSettings()
        _check_settings(self.settings)
        if self.settings.restarts < 1:
            raise ValueError(f"UnSplitSettings.restarts: expected an integer >= 1, got {self.settings.restarts}")

    def how(self, spec: PipelineSpec) -> str:
        s = self.settings
        extra = ", pooled perturbation map optimised as a nuisance (L1 %g)" % s.map_l1 if spec.defense == "pgsl" else ""
        return (
            f"UnSplit: no client weights; a freshly initialised stand-in of the client's architecture "
            f"(conv-ReLU-BN x2, {spec.in_channels} input channels) and the inputs optimised in turn "
            f"({s.rounds} rounds of {s.input_steps} input steps at lr {s.lr:g} and {s.model_steps} model steps "
            f"at lr {s.model_lr:g}, Adam) to match the intercepted messages in MSE, TV prior {s.tv:g}{extra}; "
            f"best of {s.restarts} restarts by that MSE; the intensities (identified only up to an affine map) "
            f"mapped to the auxiliary images' pixel mean, std and skewness sign"
        )

    def reconstruct(
        self,
        intercepted: Tensor,
        spec: PipelineSpec,
        pixel_stats: Mapping[str, float],
        *,
        generator: torch.Generator,
        progress: bool = True,
    ) -> Tensor:
        """``pixel_stats``: :func:`pixel_statistics` of images from the target's domain."""
        s = self.settings
        best, best_match = None, math.inf
        with _bar(s.restarts * s.rounds * (s.input_steps + s.model_steps), "unsplit", progress) as bar:
            for _ in range(s.restarts):
                image, match = self._attempt(intercepted, spec, generator, bar)
                if best is None or match < best_match:
                    best, best_match = image, match
        return match_pixel_statistics(best, pixel_stats["mean"], pixel_stats["std"], pixel_stats["skewness"])

    def _attempt(self, intercepted: Tensor, spec: PipelineSpec, generator: torch.Generator, bar):
        s = self.settings
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=generator)))
            stand_in = ClientNet(spec.in_channels)
        # Eval mode: each BatchNorm is an affine layer the attacker learns (no batch coupling).
        stand_in.eval()
        variables = spec.variables(len(intercepted), generator)
        # The image as sigmoid(logits) from a uniform start: with a projected image and a random
        # stand-in, pixels pushed to 0 early stay there (the stand-in then matches only the mean).
        logits = torch.logit(torch.rand(variables[0].shape, generator=generator).clamp(0.05, 0.95)).requires_grad_(True)
        free = [logits, *variables[1:]]
        opt_input = torch.optim.Adam(free, lr=s.lr)
        opt_model = torch.optim.Adam(stand_in.parameters(), lr=s.model_lr)

        def current() -> List[Tensor]:
            return [torch.sigmoid(logits), *free[1:]]

        def step(opt) -> float:
            inputs = current()
            match = F.mse_loss(stand_in(spec.net_input(inputs)), intercepted)
            loss = match + spec.prior(inputs, s.tv, s.map_l1)
            opt_input.zero_grad()
            opt_model.zero_grad()
            loss.backward()
            opt.step()
            spec.project([torch.empty(0), *free[1:]])
            return match.item()

        for _ in range(s.rounds):
            for opt, steps in ((opt_input, s.input_steps), (opt_model, s.model_steps)):
                for _ in range(steps):
                    match = step(opt)
                    bar.update()
            bar.set_postfix(match=f"{match:.4f}", refresh=False)
        with torch.no_grad():
            final = F.mse_loss(stand_in(spec.net_input(current())), intercepted).item()
        return current()[0].detach().clone(), final


# --------------------------------------------------------------------------- gradient leakage


@dataclass
class DLGSettings:
    """``batch_size`` (1-8) images per observed gradient, ``batches`` observed batches, taken at
    the run's ``weights``: ``"initial"`` (before its first step, rebuilt from the run's seed as
    training built them: the aggregator sees every step, and the first leaks most) or ``"final"``
    (its last epoch). Per batch, ``restarts`` attempts from uniform noise, keeping the one whose
    gradients match best. ``optimizer``: ``"adam"`` (Geiping et al. 2020: ``iterations`` Adam steps
    at ``lr`` on the sign of the gradient, the step divided by 10 after 3/8, 5/8 and 7/8 of them,
    on one minus the cosine similarity of the dummy and observed gradients) or ``"lbfgs"`` (Zhu et
    al. 2019: L-BFGS with ``iterations`` function evaluations at ``lr`` on the squared distance,
    relative to the observed gradients' squared norm). Both add ``tv`` x total variation (+
    ``map_l1`` x |map| for pgsl) and keep the images in [0, 1]."""

    batch_size: int = 1
    batches: int = 2
    restarts: int = 4
    iterations: int = 600
    lr: float = 0.03
    tv: float = 0.05
    map_l1: float = 1e-3
    weights: str = "initial"
    optimizer: str = "adam"


DLG_WEIGHTS = ("initial", "final")
DLG_OPTIMIZERS = ("adam", "lbfgs")


def client_gradients(run, x: Tensor, y: Tensor) -> List[Tensor]:
    """The victim's side: the client's parameter gradients of one step on images ``x`` with
    labels ``y``, computed as in training (the server's gradient at the message it received; for
    pgsl the fusion loss through the attacked branch, rpca detached; for nopeek plus the gradient
    of its distance-correlation penalty, which is zero for a single image) with both halves in
    eval mode. Uses the client's real pipeline (its JSMA, its noise)."""
    client = run.client
    activations = client.net(client.net_input(x, encoded_images(run, x)))
    sent = activations + (client.to_wire(activations) - activations).detach()
    return [g.detach() for g in _parameter_gradients(run, x, activations, sent, y)]


def _parameter_gradients(run, x: Tensor, activations: Tensor, sent: Tensor, y: Tensor, *, create_graph: bool = False) -> List[Tensor]:
    """The client's parameter gradients of the training loss for ``activations`` (sent as ``sent``)."""
    logits = _server_logits(run, sent)
    loss = sum(F.cross_entropy(z, y) for z in logits.values())
    penalty = run.client.penalty(x, activations)
    if penalty is not None:
        loss = loss + penalty
    return list(torch.autograd.grad(loss, list(run.client.net.parameters()), create_graph=create_graph))


def _server_logits(run, activations: Tensor) -> Dict[str, Tensor]:
    """The server's training-time forward (its gradient routes), in whatever mode it is in."""
    if run.cfg.defense == "pgsl":
        return run.server.net(activations, run.server.low_rank(activations.detach()))
    return run.server.net(activations)


class GradientLeakageAttack:
    name = "dlg"

    def __init__(self, settings: Optional[DLGSettings] = None):
        self.settings = settings or DLGSettings()
        s = self.settings
        _check_settings(s)
        if not 1 <= s.batch_size <= 8:
            raise ValueError(f"DLGSettings.batch_size: expected 1 to 8 images, got {s.batch_size}")
        for name in ("iterations", "restarts", "batches"):
            if getattr(s, name) < 1:
                raise ValueError(f"DLGSettings.{name}: expected an integer >= 1, got {getattr(s, name)}")
        if s.weights not in DLG_WEIGHTS:
            raise ValueError(f"DLGSettings.weights: expected one of {', '.join(DLG_WEIGHTS)}, got {s.weights!r}")
        if s.optimizer not in DLG_OPTIMIZERS:
            raise ValueError(f"DLGSettings.optimizer: expected one of {', '.join(DLG_OPTIMIZERS)}, got {s.optimizer!r}")

    def how(self, spec: PipelineSpec) -> str:
        s = self.settings
        extra = ", pooled perturbation map optimised as a nuisance" if spec.defense == "pgsl" else ""
        noise = "; the victim's gradient is taken at its noisy message, the attacker's dummies are noise-free" if spec.defense == "noise" else ""
        weights = "before the first step (the run's initial weights, rebuilt from its seed)" if s.weights == "initial" else "at the run's final weights"
        if s.optimizer == "adam":
            method = (
                f"Adam on the signed gradient ({s.iterations} steps, lr {s.lr:g}, /10 at 3/8, 5/8, 7/8) of the cosine "
                f"distance to the observed gradients (Geiping et al. 2020)"
            )
        else:
            method = f"L-BFGS ({s.iterations} evaluations, lr {s.lr:g}) on the squared distance to the observed gradients (Zhu et al. 2019)"
        return (
            f"gradient leakage with known labels (iDLG's premise; labels cross the wire): full model known, the client's "
            f"parameter gradients of batches of {s.batch_size} observed {weights}, eval mode; dummy images from uniform "
            f"noise, {method}, TV prior {s.tv:g}, kept in [0, 1]{extra}; best of {s.restarts} restarts by the "
            f"gradient match{noise}"
        )

    def reconstruct(
        self,
        observed: Sequence[Tensor],
        labels: Tensor,
        run,
        spec: PipelineSpec,
        *,
        generator: torch.Generator,
        progress: bool = True,
        bar=None,
    ) -> Tensor:
        """``observed``: the client's parameter gradients of one batch with ``labels`` ``(B,)``;
        ``run``: the full model (client net and server) at the step observed, which this attacker
        knows. Its dummy gradients are computed as :func:`client_gradients` computes the
        victim's (same modes, same server routes), without the victim's noise."""
        observed = [o.detach() for o in observed]
        best, best_match = None, math.inf
        for _ in range(self.settings.restarts):
            variables = spec.variables(len(labels), generator)
            with torch.no_grad():  # DLG's random start, here uniform in the image box
                variables[0].copy_(torch.rand(variables[0].shape, generator=generator))
            optimise = self._adam if self.settings.optimizer == "adam" else self._lbfgs
            image, match = optimise(variables, observed, labels, run, spec, bar)
            if best is None or match < best_match:
                best, best_match = image, match
        return best

    @staticmethod
    def _match(variables, observed, labels, run, spec: PipelineSpec, *, cosine: bool, create_graph: bool = False) -> Tensor:
        x = variables[0]
        activations = run.client.net(spec.net_input(variables))
        dummy = _parameter_gradients(run, x, activations, activations, labels, create_graph=create_graph)
        if cosine:
            dot = sum((d * o).sum() for d, o in zip(dummy, observed))
            norms = torch.sqrt(sum(d.pow(2).sum() for d in dummy)) * torch.sqrt(sum(o.pow(2).sum() for o in observed))
            return 1 - dot / norms.clamp_min(1e-30)
        scale = sum(o.pow(2).sum() for o in observed).clamp_min(1e-30)
        return sum((d - o).pow(2).sum() for d, o in zip(dummy, observed)) / scale

    def _adam(self, variables, observed, labels, run, spec: PipelineSpec, bar) -> Tuple[Tensor, float]:
        s = self.settings
        opt = torch.optim.Adam(variables, lr=s.lr)
        milestones = sorted({max(1, int(s.iterations * f)) for f in (3 / 8, 5 / 8, 7 / 8)})
        schedule = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
        best, best_match = None, math.inf
        for _ in range(s.iterations):
            match = self._match(variables, observed, labels, run, spec, cosine=True, create_graph=True)
            value = match.item()
            if value < best_match:  # the signed steps oscillate: keep the best iterate
                best, best_match = variables[0].detach().clone(), value
            total = match + spec.prior(variables, s.tv, s.map_l1)
            # only the dummies' gradients: the model's own .grad stays untouched
            for v, g in zip(variables, torch.autograd.grad(total, variables)):
                v.grad = g.sign()
            opt.step()
            schedule.step()
            spec.project(variables)
            if bar is not None:
                bar.update()
                bar.set_postfix(match=f"{value:.3g}", refresh=False)
        match = self._match(variables, observed, labels, run, spec, cosine=True).item()
        return (variables[0].detach().clone(), match) if match < best_match else (best, best_match)

    def _lbfgs(self, variables, observed, labels, run, spec: PipelineSpec, bar) -> Tuple[Tensor, float]:
        s = self.settings
        # tolerances 0: the gradient distance is tiny in absolute terms, and L-BFGS would stop at once
        opt = torch.optim.LBFGS(
            variables, lr=s.lr, max_iter=s.iterations, max_eval=s.iterations, history_size=100,
            tolerance_grad=0.0, tolerance_change=0.0, line_search_fn="strong_wolfe",
        )
        evaluations = 0

        def closure():
            nonlocal evaluations
            opt.zero_grad()
            match = self._match(variables, observed, labels, run, spec, cosine=False, create_graph=True)
            total = match + spec.prior(variables, s.tv, s.map_l1)
            grads = torch.autograd.grad(total, variables)
            for v, g in zip(variables, grads):
                v.grad = g
            evaluations += 1
            if bar is not None:
                bar.update()
                bar.set_postfix(match=f"{match.item():.3g}", refresh=False)
            return total

        opt.step(closure)
        if bar is not None:  # L-BFGS may stop before its budget (a failed line search)
            bar.update(s.iterations - evaluations)
        spec.project(variables)
        return variables[0].detach().clone(), self._match(variables, observed, labels, run, spec, cosine=False).item()


# The full protocol (``pgsl evaluate --full``): every target and many more iterations; hours on a CPU.
FULL_SETTINGS = {
    "decoder": DecoderSettings(images=0, aux_images=0, epochs=100),
    "whitebox": WhiteBoxSettings(images=0, steps=1000),
    "unsplit": UnSplitSettings(images=0, rounds=200, input_steps=10, model_steps=10),
    "dlg": DLGSettings(batch_size=1, batches=16, restarts=4, iterations=1000),
}

ATTACKS = {"decoder": DecoderAttack, "unsplit": UnSplitAttack, "whitebox": WhiteBoxAttack, "dlg": GradientLeakageAttack}
SETTINGS = {"decoder": DecoderSettings, "unsplit": UnSplitSettings, "whitebox": WhiteBoxSettings, "dlg": DLGSettings}


# --------------------------------------------------------------------------- the evaluation


def _settings_for(name: str, given) -> object:
    cls = SETTINGS[name]
    if given is None:
        return cls()
    if isinstance(given, cls):
        return given
    if isinstance(given, Mapping):
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(given) - fields)
        if unknown:
            raise ValueError(f"settings[{name!r}]: unknown option(s) {unknown}; expected some of {sorted(fields)}")
        return cls(**given)
    raise TypeError(f"settings[{name!r}]: expected a {cls.__name__} or a dict of its fields, got {type(given).__name__}")


@torch.no_grad()
def encoded_images(run, x: Tensor) -> Tensor:
    """The images the client encodes for ``x``: for pgsl its JSMA-attacked images (JSMA is
    deterministic, so those the client already attacked, its validation and test images, are
    looked up instead of attacked again); otherwise ``x`` itself."""
    if run.cfg.defense != "pgsl":
        return x
    known = {}
    for held in run.client.data.values():
        if held.attacked is not None:
            for clean, adv in zip(held.split.x, held.attacked):
                known[clean.numpy().tobytes()] = adv
    keys = [image.numpy().tobytes() for image in x]
    missing = [i for i, key in enumerate(keys) if key not in known]
    if missing:
        fresh = run.client.attack(x[missing])
        for i, adv in zip(missing, fresh):
            known[keys[i]] = adv
    return torch.stack([known[key] for key in keys]) if len(x) else x.clone()


@torch.no_grad()
def messages(run, x: Tensor, encoded: Optional[Tensor] = None) -> Tensor:
    """What the client sends for images ``x`` (:meth:`pgsl.train.TrainedRun.wire`, with the
    attacked images from :func:`encoded_images`): the attacker's view."""
    encoded = encoded_images(run, x) if encoded is None else encoded
    client = run.client
    return torch.cat([client.to_wire(client.net(client.net_input(a, b))) for a, b in zip(x.split(250), encoded.split(250))])


def _check_split(name: str, split: Split, image_shape) -> None:
    if not isinstance(split, Split):
        raise TypeError(f"{name}: expected a pgsl.data.Split, got {type(split).__name__}")
    if len(split) < 1:
        raise ValueError(f"{name}: expected at least one image, got 0")
    if tuple(split.x.shape[1:]) != tuple(image_shape):
        raise ValueError(f"{name}: expected images of shape {tuple(image_shape)} (the run's), got {tuple(split.x.shape[1:])}")


def _initial(run):
    """``run`` before its first step: its folder restored at epoch 0, in eval mode."""
    return restore(run.folder, device=str(run.client.device), epoch=0).eval()


def _first(n: int, total: int) -> int:
    return total if n == 0 else min(n, total)


def evaluate_privacy(
    run,
    targets: Split,
    aux: Split,
    *,
    attacks: Sequence[str] = ("decoder", "unsplit", "whitebox", "dlg"),
    settings: Optional[Mapping[str, object]] = None,
    classifier: Optional[nn.Module] = None,
    progress: bool = True,
    seed: int = 0,
) -> dict:
    """Run the inversion ``attacks`` on ``run`` (a :class:`pgsl.train.TrainedRun`).

    ``targets``: the images the attacker tries to reconstruct (each attack takes the first
    ``settings.images`` of them, DLG the first ``batches x batch_size``); ``aux``: the decoder's
    auxiliary images (disjoint from training and targets). ``settings``: per attack name a
    settings dataclass or a dict of its fields (defaults: :class:`DecoderSettings` ...).
    ``classifier``: the metric's independent classifier (default: a SmallCNN trained on the
    run's training split, :func:`~pgsl.evaluate.metrics.independent_classifier`).

    Returns ``{attack name: {"how", "knows", "settings", "images", "indices", "seconds",
    "cpu_seconds", "defense", "references", "baseline", "classifier", "metrics_vs_clean",
    "metrics_vs_encoded", "baseline_vs_clean", "reconstructions"}}``: the ``metrics_*`` are dicts
    from :func:`~pgsl.evaluate.metrics.reconstruction_metrics` (against the clean targets, against
    the image the client encoded, and the mean auxiliary image's score on the same targets);
    ``reconstructions`` ``(n, C, H, W)`` in [0, 1] are those of ``targets[indices]`` (always the
    first ``n`` targets); ``seconds`` is wall time, ``cpu_seconds`` the process's CPU time (all
    threads) for the attack, metrics included.
    """
    if isinstance(attacks, str):
        attacks = [a.strip() for a in attacks.split(",") if a.strip()]
    unknown = [a for a in attacks if a not in ATTACKS]
    if unknown or not attacks:
        raise ValueError(f"attacks: expected some of {', '.join(ATTACKS)}, got {list(attacks)!r}")
    settings = dict(settings or {})
    stray = sorted(set(settings) - set(ATTACKS))
    if stray:
        raise ValueError(f"settings: unknown attack name(s) {stray}; expected some of {list(ATTACKS)}")
    image_shape = tuple(run.dataset.image_shape)
    _check_split("targets", targets, image_shape)
    _check_split("aux", aux, image_shape)
    objects = {name: ATTACKS[name](_settings_for(name, settings.get(name))) for name in attacks}
    run.eval()
    spec = PipelineSpec(run.cfg.defense, image_shape)
    generator = torch.Generator().manual_seed(seed)

    attacked = encoded_images(run, targets.x)
    intercepted = messages(run, targets.x, attacked)
    classifier_note = "given by the caller"
    if classifier is None:
        classifier = independent_classifier(run.dataset.train, num_classes=len(run.dataset.classes), seed=seed)
        classifier_note = f"a SmallCNN trained 3 epochs on the run's training split ({len(run.dataset.train)} images, disjoint from aux and targets)"

    references = (
        "metrics_vs_clean: against the clean target images; metrics_vs_encoded: against the image the client encoded "
        + ("(its JSMA-attacked image)" if spec.defense == "pgsl" else "(the clean image itself: the same numbers)")
    )
    mean_image = aux.x.mean(0, keepdim=True)

    def scores(recon: Tensor, index: Tensor) -> dict:
        y = targets.y[index]
        return {
            "metrics_vs_clean": reconstruction_metrics(recon, targets.x[index], classifier=classifier, labels=y),
            "metrics_vs_encoded": reconstruction_metrics(recon, attacked[index], classifier=classifier, labels=y),
            "baseline_vs_clean": reconstruction_metrics(
                mean_image.expand(len(index), -1, -1, -1), targets.x[index], classifier=classifier, labels=y
            ),
        }

    result = {}
    for name, attack in objects.items():
        start, cpu_start = time.perf_counter(), time.process_time()
        if name == "decoder":
            s = attack.settings
            index = torch.arange(_first(s.images, len(targets)))
            aux_x = aux.x[: _first(s.aux_images, len(aux))]
            recon = attack.reconstruct(intercepted[index], lambda x: messages(run, x), aux_x, generator=generator, progress=progress)
            how, knows = attack.how(len(aux_x)), "query access to the trained client, auxiliary images, intercepted messages"
        elif name == "whitebox":
            index = torch.arange(_first(attack.settings.images, len(targets)))
            recon = attack.reconstruct(intercepted[index], run.client.net, spec, generator=generator, progress=progress)
            how, knows = attack.how(spec), "the client's weights and pipeline, intercepted messages"
        elif name == "unsplit":
            index = torch.arange(_first(attack.settings.images, len(targets)))
            recon = attack.reconstruct(intercepted[index], spec, pixel_statistics(aux.x), generator=generator, progress=progress)
            how, knows = attack.how(spec), "the client's architecture and pipeline (not its weights), intercepted messages"
        else:
            s = attack.settings
            count = min(s.batches * s.batch_size, len(targets))
            index = torch.arange(count)
            # the model at the observed step; the client's pipeline (surrogate, JSMA, noise) is the run's
            observed_run = run if s.weights == "final" else _initial(run)
            parts = []
            with _bar(math.ceil(count / s.batch_size) * s.restarts * s.iterations, "dlg", progress) as bar:
                for batch in index.split(s.batch_size):
                    observed = client_gradients(observed_run, targets.x[batch], targets.y[batch])
                    parts.append(attack.reconstruct(observed, targets.y[batch], observed_run, spec, generator=generator, progress=progress, bar=bar))
            recon = torch.cat(parts)
            how, knows = attack.how(spec), "the full model at the observed step, the batch's labels and the client's parameter gradients of that batch"
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        result[name] = {
            "how": how,
            "knows": knows,
            "settings": dataclasses.asdict(attack.settings),
            "images": len(index),
            "indices": index.tolist(),
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "defense": spec.defense,
            "references": references,
            "baseline": f"baseline_vs_clean: the mean of the {len(aux)} auxiliary images guessed for every target",
            "classifier": classifier_note,
            **scores(recon, index),
            "reconstructions": recon,
        }
        if progress:
            m = result[name]["metrics_vs_clean"]
            tqdm.write(f"{name}: {len(index)} images, PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.3f}, {seconds:.0f} s")
    return result
