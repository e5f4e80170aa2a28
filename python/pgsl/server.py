"""The server and its part in the run.

:class:`Server` holds conv layers 3-7 and the heads (PGSL: the rpca block, three streams and
their decision fusion; the baselines: one stream). It answers the clients' requests
(:mod:`pgsl.protocol`), checkpoints its half after every epoch, and reports the epoch's
training statistics. It never sees an image or a client weight.
"""

from __future__ import annotations

import time
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from . import rundir
from .config import PGSL_ARCHITECTURE, PGSL_DEFENSES, Config
from .data import Dataset
from .defenses import Ops
from .errors import RunError
from .models import AdaptiveFusion, PGSLServerNet, PlainServerNet, optimizer
from .protocol import schedule
from .transport import Link

__all__ = ["Server", "serve"]


class Server:
    """Conv layers 3-7 and the heads (three streams for pgsl), the rpca block, the fusion."""

    def __init__(self, cfg: Config, num_classes: int):
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        self.ops = Ops.named(cfg.ops)
        if cfg.defense in PGSL_ARCHITECTURE:
            self.net = PGSLServerNet(num_classes, rpca_grad=cfg.rpca_grad).to(self.device)
            self.fusion = AdaptiveFusion(cfg.fusion_weights).to(self.device)
        else:
            self.net = PlainServerNet(num_classes).to(self.device)
            self.fusion = AdaptiveFusion([1.0]).to(self.device)
        self.opt, self.sched = optimizer(self.net.parameters(), cfg)
        # The server's own random stream (dropout), so that one process and several processes,
        # and a resumed run, draw the same masks.
        self.rng_state = torch.Generator().manual_seed(cfg.seed * 1000).get_state()
        self.start_epoch: Optional[int] = None
        self.reset_epoch()

    @classmethod
    def new(cls, cfg: Config, dataset: Dataset) -> "Server":
        """The server as every run builds it, from the global RNG at ``cfg.seed`` (the same in
        one process or its own, and rebuilt so by :func:`pgsl.runs.restore`)."""
        torch.manual_seed(cfg.seed)
        return cls(cfg, dataset.num_classes)

    def reset_epoch(self) -> None:
        self.rpca_iterations = 0.0
        self.rpca_converged = 0.0
        self.rpca_matrices = 0
        self.rpca_seconds = 0.0
        self.seconds = 0.0
        self.batch_losses: List[List[float]] = []
        self.images = 0
        self.loss_sum = None
        self.correct_sum = None

    # ------------------------------------------------------------------ the forward pass

    def low_rank(self, activations: Tensor, *, rpca_iters: Optional[int] = None) -> Tensor:
        """rpca's low-rank part of every activation channel; ``rpca_iters`` caps the run's own
        iteration cap further (an attacker's cheaper forward passes)."""
        start = time.perf_counter()
        cap = self.cfg.rpca_iters if rpca_iters is None else min(self.cfg.rpca_iters, rpca_iters)
        result = self.ops.rpca(activations.detach(), mu=self.cfg.mu, max_iter=cap, tol=self.cfg.rpca_tol)
        self.rpca_iterations += float(result.iterations.double().sum())
        self.rpca_converged += float(result.converged.double().sum())
        self.rpca_matrices += result.iterations.numel()
        self.rpca_seconds += time.perf_counter() - start
        return result.low_rank

    def logits(self, activations: Tensor, *, bpda: bool = False, rpca_iters: Optional[int] = None) -> Dict[str, Tensor]:
        """Per-stream logits for ``activations``, in whatever mode the net is in. Training's
        gradient routes by default (only the fusion stream's gradient reaches the activations);
        ``bpda=True``: differentiable along every path, rpca's gradient taken as the identity
        (BPDA), for an attacker. ``--defense arch``: no rpca, the recovered stream sees the
        received map itself."""
        if self.cfg.defense not in PGSL_ARCHITECTURE:
            start = time.perf_counter()
            out = self.net(activations)
        else:
            low_rank = self.low_rank(activations, rpca_iters=rpca_iters) if self.cfg.defense in PGSL_DEFENSES else activations.detach()
            start = time.perf_counter()
            if bpda:
                out = self.net(activations, activations + (low_rank - activations).detach(), route_gradients=False)
            else:
                out = self.net(activations, low_rank)
        self.seconds += time.perf_counter() - start
        return out

    def train_step(self, activations: Tensor, labels: Tensor) -> List[Tensor]:
        self.net.train()
        activations = activations.to(self.device).requires_grad_(True)
        labels = labels.to(self.device)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.set_rng_state(self.rng_state)
            out = self.logits(activations)
            self.rng_state = torch.get_rng_state()
        start = time.perf_counter()
        losses = torch.stack([F.cross_entropy(z, labels) for z in out.values()])
        if not bool(torch.isfinite(losses).all()):
            raise RunError(f"a training loss is not finite ({losses.tolist()}): training diverged (try a smaller --lr than "
                           f"{self.cfg.lr:g}); the last checkpoint is kept")
        correct = torch.stack([(z.argmax(1) == labels).sum() for z in out.values()])
        self.opt.zero_grad()
        losses.sum().backward()
        self.opt.step()
        self.sched.step()
        self.seconds += time.perf_counter() - start
        return [activations.grad.detach().cpu(), losses.detach().cpu(), correct.cpu()]

    @torch.no_grad()
    def scores(self, activations: Tensor) -> Tensor:
        self.net.eval()
        out = self.logits(activations.to(self.device))
        return torch.stack([z.softmax(1) for z in out.values()], 1).cpu()

    # ------------------------------------------------------------------ checkpoints of this half

    def state(self) -> dict:
        return {
            "net": self.net.state_dict(),
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
            "fusion": self.fusion.state_dict(),
            "rng": self.rng_state,
        }

    def load_state(self, state: dict) -> None:
        def set_rng(rng):
            self.rng_state = rng

        loaders = {"net": self.net.load_state_dict, "opt": self.opt.load_state_dict, "sched": self.sched.load_state_dict,
                   "fusion": self.fusion.load_state_dict, "rng": set_rng}
        rundir.load_half(state, loaders, "the server's half", self.net)

    # ------------------------------------------------------------------ the role in the run

    def handle(self, src: int, kind: str, tensors: List[Tensor]) -> List[Tensor]:
        """One request from client ``src`` -> its reply (the table of :mod:`pgsl.protocol`)."""
        if kind == "hello":
            return [torch.tensor([self.hello(int(tensors[0]))])]
        if kind == "train":
            reply = self.train_step(*tensors)
            n = len(tensors[1])
            losses, correct = reply[1].double(), reply[2].double()
            self.batch_losses.append(losses.tolist())
            self.images += n
            self.loss_sum = losses * n if self.loss_sum is None else self.loss_sum + losses * n
            self.correct_sum = correct if self.correct_sum is None else self.correct_sum + correct
            return reply
        if kind == "turn_end":
            return []
        if kind == "score":
            return [self.scores(tensors[0])]
        if kind == "fit_fusion":
            return [self.fusion.fit(tensors[0].to(self.device), tensors[1].to(self.device)).cpu()]
        if kind == "epoch_end":
            return self.epoch_end(int(tensors[0]))
        raise ValueError(f"the server cannot handle message kind {kind!r}")

    def hello(self, client_epoch: int) -> int:
        """Client 1 reports its last complete epoch (others -1); the run starts after the last
        epoch both halves completed."""
        if client_epoch < 0:
            return self.start_epoch if self.start_epoch is not None else 0
        start = min(client_epoch, rundir.marker(self.cfg.out, "server")) if self.cfg.resume else 0
        if start > 0:
            self.load_state(rundir.load_checkpoint(self.cfg.out, "server", start)["server"])
        self.start_epoch = start
        return start

    def epoch_end(self, epoch: int) -> List[Tensor]:
        rundir.checkpoint(self.cfg.out, "server", epoch, {"server": self.state()})
        matrices = max(self.rpca_matrices, 1)
        summary = torch.tensor(
            [self.images, self.rpca_iterations / matrices, self.rpca_converged / matrices, self.rpca_seconds, self.seconds],
            dtype=torch.float64,
        )
        images = max(self.images, 1)
        losses = (self.loss_sum / images) if self.loss_sum is not None else torch.zeros(0, dtype=torch.float64)
        accuracy = (self.correct_sum / images) if self.correct_sum is not None else torch.zeros(0, dtype=torch.float64)
        trace = torch.tensor(self.batch_losses, dtype=torch.float64)
        self.reset_epoch()
        return [summary, losses, accuracy, trace]


def serve(server: Server, link: Link, clients: int, epochs: int) -> None:
    """The server's loop in a distributed run: it follows :func:`pgsl.protocol.schedule`, so
    every receive names its sender (which NCCL requires) and a silent peer is detected."""

    def serve_until(src: int, last: str) -> None:
        while True:
            kind, tensors = link.recv(src)
            try:
                reply = server.handle(src, kind, tensors)
            except Exception:
                link.send(src, "error")
                raise
            link.send(src, kind, reply)
            if kind == last:
                return

    for k in range(1, clients + 1):
        serve_until(k, "hello")
    for step in schedule(clients, server.start_epoch, epochs):
        serve_until(step.client, "turn_end" if step.kind == "turn" else "epoch_end")
