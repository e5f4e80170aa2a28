"""The networks: the paper's 7-conv CNN cut after its 2nd conv, the PGSL server's three streams and
their decision fusion, and the small CNN the client trains as its JSMA surrogate.

The paper's CNN: seven 3x3 conv layers of 64 channels, each conv-ReLU-BN, dropout 0.25 after every
third conv (after conv 3 and conv 6), and two fully connected layers. Choices the paper leaves
open, made here:

- Before the fully connected layers the 64-channel map is average-pooled to 7x7 (so the head is
  the same for 28x28 digits and larger mammograms); the first FC layer has 128 units.
- PGSL's server receives 64 channels at half resolution (the client ran on the 2x2 unshuffled
  image plus the perturbation map). Conv-sum fusion happens there, at the cut resolution:
  ``F = conv3x3(cat[A, L]) + A + L`` (concatenate, convolve to reduce 128 to 64 channels, sum).
  Each stream's map is then pixel-shuffled back to full resolution (64 channels at H/2 -> 16 at
  H), so the server's first conv (conv 3) takes 16 channels.
"""

from __future__ import annotations

from typing import Dict, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .config import PGSL_ARCHITECTURE

__all__ = [
    "AdaptiveFusion",
    "fuse",
    "optimizer",
    "stream_names",
    "ClientNet",
    "PGSLServerNet",
    "PlainServerNet",
    "SmallCNN",
    "STREAMS",
    "conv_block",
    "client_forward_per_problem",
    "finite_weights",
    "fit_classifier",
    "predict",
]

WIDTH = 64
DROPOUT = 0.25
HIDDEN = 128
STREAMS = ("attacked", "fusion", "recovered")


class BatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose running statistics start as the plain average of the first batches
    (momentum ``1 / (n + 1)`` for the n-th batch) and then follow torch's default moving average
    (momentum 0.1). With the default from the first batch, the initial (mean 0, variance 1)
    lingers for tens of steps; after a ReLU the true variance is far below 1, so a short run
    evaluates with activations shrunk layer after layer (measured: 93% accuracy with batch
    statistics, 17% with the running ones after 16 steps of plain split learning)."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training and self.track_running_stats:
            self.momentum = max(0.1, 1.0 / (int(self.num_batches_tracked) + 1))
        return super().forward(x)


def conv_block(in_channels: int, out_channels: int = WIDTH) -> nn.Sequential:
    """3x3 conv (same padding), ReLU, BatchNorm: the paper's layer."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(), BatchNorm2d(out_channels))


class ClientNet(nn.Sequential):
    """Conv layers 1-2: what the client runs; their output is all that leaves the client."""

    def __init__(self, in_channels: int):
        super().__init__(conv_block(in_channels), conv_block(WIDTH))


def client_forward_per_problem(net: ClientNet, params: Sequence[Tensor], x: Tensor, problems: int) -> Tensor:
    """``net`` in eval mode run with its own parameters per problem: ``x`` ``(P * B, C, H, W)``
    holds ``P = problems`` problems of ``B`` images each (problem-major), ``params`` are ``net``'s
    parameters in :meth:`~torch.nn.Module.parameters` order, each stacked ``(P, *shape)``.
    Problem ``p``'s output is ``net``'s with ``params[k][p]`` as its parameters (one grouped conv
    per layer, BatchNorm with the net's running statistics), so the gradient of a sum of
    per-problem losses w.r.t. ``params[k][p]`` is problem ``p``'s own: many independent
    gradient-matching problems solved in one batch."""
    if net.training:
        raise ValueError("client_forward_per_problem: expected the net in eval mode (running BatchNorm statistics)")
    n = x.shape[0]
    if problems < 1 or n % problems:
        raise ValueError(f"client_forward_per_problem: {n} images do not split into {problems} problems")
    batch = n // problems
    h = x.reshape(problems, batch, *x.shape[1:]).transpose(0, 1).reshape(batch, -1, *x.shape[2:])
    params = list(params)
    for i, block in enumerate(net):
        conv, bn = block[0], block[2]
        weight, bias, gamma, beta = params[4 * i: 4 * i + 4]
        h = F.conv2d(h, weight.reshape(-1, *weight.shape[2:]), bias.reshape(-1), conv.stride, conv.padding, conv.dilation, conv.groups * problems)
        h = F.relu(h)
        h = F.batch_norm(h, bn.running_mean.repeat(problems), bn.running_var.repeat(problems), gamma.reshape(-1), beta.reshape(-1), False, 0.0, bn.eps)
    return h.reshape(batch, problems, -1, *h.shape[2:]).transpose(0, 1).reshape(n, -1, *h.shape[2:])


class Trunk(nn.Module):
    """Conv layers 3-7 and the two FC layers: one server stream."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.convs = nn.Sequential(
            conv_block(in_channels), nn.Dropout(DROPOUT),  # conv 3
            conv_block(WIDTH), conv_block(WIDTH), conv_block(WIDTH), nn.Dropout(DROPOUT),  # conv 4-6
            conv_block(WIDTH),  # conv 7
        )
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(7), nn.Flatten(), nn.Linear(WIDTH * 49, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.convs(x))


class PlainServerNet(nn.Module):
    """Plain split learning (``--defense none|noise|nopeek``): one stream on the received map."""

    streams = ("plain",)

    def __init__(self, num_classes: int):
        super().__init__()
        self.trunk = Trunk(WIDTH, num_classes)

    def forward(self, activations: Tensor) -> Dict[str, Tensor]:
        return {"plain": self.trunk(activations)}


class PGSLServerNet(nn.Module):
    """PGSL's server: three streams on the received map ``A`` and its low-rank part ``L``.

    ``L`` is computed by the caller (``rpca`` has no gradient) and passed in. Gradients: the
    attacked and recovered streams see ``A`` and ``L`` detached, so the gradient w.r.t. ``A`` that
    goes back to the client is the fusion stream's alone. Inside the fusion stream ``L`` is
    either a constant (``rpca_grad="detach"``, the default: the client's gradient is that of the
    fusion loss through the ``A`` branch) or straight-through (``"identity"``: BPDA, dL/dA taken
    as the identity, so both branches pass gradient back).
    """

    streams = STREAMS

    def __init__(self, num_classes: int, *, rpca_grad: str = "detach"):
        super().__init__()
        if rpca_grad not in ("detach", "identity"):
            raise ValueError(f"--rpca-grad: expected 'detach' or 'identity', got {rpca_grad!r}")
        self.rpca_grad = rpca_grad
        self.fuse = nn.Conv2d(2 * WIDTH, WIDTH, 3, padding=1)
        self.trunks = nn.ModuleDict({name: Trunk(WIDTH // 4, num_classes) for name in STREAMS})

    def forward(self, activations: Tensor, low_rank: Tensor, *, route_gradients: bool = True) -> Dict[str, Tensor]:
        """Stream logits. ``route_gradients=False`` (an attacker differentiating the whole model)
        keeps every path to ``activations`` and ``low_rank`` open instead of the training routes."""
        if not route_gradients:
            fused = self.fuse(torch.cat([activations, low_rank], 1)) + activations + low_rank
            maps = {"attacked": activations, "fusion": fused, "recovered": low_rank}
            return {name: self.trunks[name](F.pixel_shuffle(maps[name], 2)) for name in STREAMS}
        attacked, recovered = activations.detach(), low_rank.detach()
        if self.rpca_grad == "identity":
            fusion_low_rank = activations + (recovered - activations).detach()
        else:
            fusion_low_rank = recovered
        fused = self.fuse(torch.cat([activations, fusion_low_rank], 1)) + activations + fusion_low_rank
        maps = {"attacked": attacked, "fusion": fused, "recovered": recovered}
        return {name: self.trunks[name](F.pixel_shuffle(maps[name], 2)) for name in STREAMS}


def stream_names(defense: str) -> Sequence[str]:
    """The server's streams under ``defense``: PGSL's three (``pgsl`` and its architecture
    control ``arch``), or the baselines' one."""
    return PGSLServerNet.streams if defense in PGSL_ARCHITECTURE else PlainServerNet.streams


def fuse(stream_probs: Tensor, weights: Tensor) -> Tensor:
    """The decision: ``(B, S, K)`` per-stream probabilities averaged with ``weights`` ``(S,)``
    into ``(B, K)``, in the probabilities' dtype."""
    return (stream_probs * weights.to(stream_probs.dtype).view(1, -1, 1)).sum(1)


class AdaptiveFusion(nn.Module):
    """Adaptive weighted averaging of the streams' softmax scores (the paper's eqs. 7-9, as read here).

    The decision is ``sum_s w_s softmax(z_s)``. Weights start at ``initial`` (0.5 / 0.3 / 0.2 for
    attacked / fusion / recovered) and are adapted on the validation slice from per-class average
    scores: with ``m[s, c]`` the mean score stream ``s`` gives class ``c`` on validation images of
    class ``c``, each stream's reliability is ``r_s = mean_c m[s, c] / max_s' m[s', c]`` (1 for a
    stream that is the best on every class) and ``w_s = initial_s r_s / sum_s' initial_s' r_s'``.
    """

    def __init__(self, initial: Sequence[float]):
        super().__init__()
        initial = torch.as_tensor(list(initial), dtype=torch.float64)
        if initial.dim() != 1 or bool((initial < 0).any()) or float(initial.sum()) <= 0:
            raise ValueError(f"--fusion-weights: expected non-negative weights with a positive sum, got {initial.tolist()}")
        self.register_buffer("initial", initial / initial.sum())
        self.register_buffer("weights", self.initial.clone())

    def forward(self, stream_probs: Tensor) -> Tensor:
        """``(B, S, K)`` per-stream probabilities -> ``(B, K)`` fused probabilities."""
        return fuse(stream_probs, self.weights)

    @torch.no_grad()
    def fit(self, stream_probs: Tensor, labels: Tensor) -> Tensor:
        """Adapt the weights to validation ``(B, S, K)`` probabilities and ``(B,)`` labels."""
        probs = stream_probs.double()
        true_scores = probs.gather(2, labels.view(-1, 1, 1).expand(-1, probs.shape[1], 1)).squeeze(2)  # (B, S)
        classes = [c for c in range(probs.shape[2]) if bool((labels == c).any())]
        if not classes:
            return self.weights
        mean_scores = torch.stack([true_scores[labels == c].mean(0) for c in classes], 1)  # (S, C)
        best = mean_scores.max(0).values.clamp_min(torch.finfo(torch.float64).tiny)
        reliability = (mean_scores / best).mean(1)
        weights = self.initial * reliability
        self.weights.copy_(weights / weights.sum() if float(weights.sum()) > 0 else self.initial)
        return self.weights


class SmallCNN(nn.Module):
    """LeNet-5 style CNN (two 5x5 convs, three FC layers): the client's JSMA surrogate, also used
    by the tests and benchmarks as a quick MNIST classifier. ``image_size`` must be >= 12."""

    def __init__(self, num_classes: int = 10, image_size: int = 28, in_channels: int = 1):
        super().__init__()
        side = ((image_size // 2) - 4) // 2
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * side * side, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def finite_weights(net: nn.Module) -> bool:
    """Whether every parameter of ``net`` is finite (a diverged run's are not)."""
    return all(bool(torch.isfinite(p).all()) for p in net.parameters())


def optimizer(params, cfg):
    """Adam at the paper's lr with Keras-style inverse-time decay ``lr / (1 + decay * step)`` (the
    paper's "decay 3e-4" read as Keras's Adam ``decay`` argument); ``cfg``: a
    :class:`pgsl.config.Config`."""
    opt = torch.optim.Adam(params, lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1.0 + cfg.lr_decay * step))
    return opt, sched


def fit_classifier(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    epochs: int = 2,
    batch_size: int = 100,
    lr: float = 2e-3,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Train ``model`` with Adam and cross-entropy (shuffled when a generator is given); returns it
    in eval mode with no parameter gradients left behind."""
    opt = torch.optim.Adam(model.parameters(), lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator) if generator is not None else torch.arange(len(y))
        for index in order.split(batch_size):
            loss = F.cross_entropy(model(x[index]), y[index])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    for p in model.parameters():
        p.grad = None
    return model


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int = 500) -> Tensor:
    """Class predictions of ``model`` (in eval mode) for ``x``, in batches."""
    return torch.cat([model(chunk).argmax(1) for chunk in x.split(batch_size)]) if len(x) else x.new_zeros(0, dtype=torch.long)
