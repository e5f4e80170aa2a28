"""A finished run, restored: the one object evaluation talks to.

:func:`restore` rebuilds a ``pgsl train`` folder (its weights after any complete epoch, or before
the first step) as a :class:`Run`, whose methods are the only way the evaluation computes what the
client sends (:meth:`Run.messages`, :meth:`Run.logits`), the server's per-stream logits, the fused
decision (:meth:`Run.fused_probs`) and the client's parameter gradients
(:meth:`Run.parameter_gradients`); each is the same code training runs
(:class:`pgsl.client.Client`, :class:`pgsl.server.Server`, :func:`pgsl.models.fuse`).
"""

from __future__ import annotations

import contextlib
import copy
import os
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from . import rundir
from .client import Client
from .config import PGSL_DEFENSES, Config
from .data import Dataset
from .errors import ConfigError, RunError
from .models import client_forward_per_problem, fuse, optimizer
from .server import Server
from .transport import LocalHub

__all__ = ["Run", "restore"]

MESSAGE_CHUNK = 250


@dataclass
class Run:
    """A finished run: client 1 (trained conv 1-2, surrogate and attacked images of the
    validation and test sets) and the server (trained streams, fusion weights), in eval mode."""

    folder: str
    cfg: Config
    metrics: dict
    dataset: Dataset
    client: Client
    server: Server
    epoch: int

    @property
    def defense(self) -> str:
        return self.cfg.defense

    @property
    def streams(self) -> Sequence[str]:
        return tuple(self.server.net.streams)

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    def eval(self) -> "Run":
        self.client.net.eval()
        self.server.net.eval()
        return self

    # ------------------------------------------------------------------ the client's side

    @torch.no_grad()
    def encoded_images(self, x: Tensor) -> Tensor:
        """The images the client encodes for ``x``: for pgsl its JSMA-attacked images (JSMA is
        deterministic, so those the client already attacked, its validation and test images,
        are looked up instead of attacked again); otherwise ``x`` itself."""
        if self.defense not in PGSL_DEFENSES:
            return x
        known = {}
        for held in self.client.data.values():
            if held.attacked is not None:
                for clean, adv in zip(held.split.x, held.attacked):
                    known[clean.numpy().tobytes()] = adv
        keys = [image.numpy().tobytes() for image in x]
        missing = [i for i, key in enumerate(keys) if key not in known]
        if missing:
            fresh = self.client.attack(x[missing])
            for i, adv in zip(missing, fresh):
                known[keys[i]] = adv
        return torch.stack([known[key] for key in keys]) if len(x) else x.clone()

    @torch.no_grad()
    def messages(self, x: Tensor, encoded: Optional[Tensor] = None) -> Tensor:
        """What the client sends for images ``x`` (with ``encoded``, the images it encodes, from
        :meth:`encoded_images` by default): an eavesdropper's or the server's view."""
        encoded = self.encoded_images(x) if encoded is None else encoded
        return torch.cat([
            self.client.send(self.client.activations(a, b)) for a, b in zip(x.split(MESSAGE_CHUNK), encoded.split(MESSAGE_CHUNK))
        ])

    @contextlib.contextmanager
    def noise_seeded(self, seed: int) -> Iterator[None]:
        """The client's message noise (``--defense noise``) drawn from ``seed``, restored on exit."""
        saved = self.client.noise.get_state()
        self.client.noise.manual_seed(seed)
        try:
            yield
        finally:
            self.client.noise.set_state(saved)

    def attack_images(self, x: Tensor) -> Tensor:
        """The client's own JSMA of ``x`` (pgsl), as at inference."""
        return self.client.attack(x)

    # ------------------------------------------------------------------ both halves

    def logits(self, x: Tensor, *, bpda: bool = False, rpca_iters: Optional[int] = None) -> Dict[str, Tensor]:
        """Per-stream logits for images ``x`` through both halves. ``bpda=True``: differentiable
        in ``x`` end to end (the client's JSMA and the server's rpca as the identity);
        ``rpca_iters`` caps rpca further in this forward pass."""
        sent = self.client.send(self.client.activations(x, bpda=bpda), differentiable=True)
        return self.server.logits(sent, bpda=bpda, rpca_iters=rpca_iters)

    def fused_probs(self, logits: Dict[str, Tensor]) -> Tensor:
        """The decision: the fusion-weighted average of the streams' softmax scores ``(B, K)``."""
        return fuse(torch.stack([logits[s].softmax(1) for s in self.streams], 1), self.server.fusion.weights)

    def parameter_gradients(self, x: Tensor, activations: Tensor, sent: Tensor, labels: Tensor, *, create_graph: bool = False) -> List[Tensor]:
        """The client's parameter gradients of one training step on images ``x`` whose
        ``activations`` went out as ``sent``: the server's loss on ``sent`` along its training
        routes (the fusion stream's alone for pgsl), plus the client's own penalty (NoPeek)."""
        logits = self.server.logits(sent)
        loss = sum(F.cross_entropy(z, labels) for z in logits.values())
        penalty = self.client.penalty(x, activations)
        if penalty is not None:
            loss = loss + penalty
        return list(torch.autograd.grad(loss, list(self.client.net.parameters()), create_graph=create_graph))

    def gradients_per_problem(self, x: Tensor, net_input: Tensor, labels: Tensor, problems: int, *, create_graph: bool = False) -> List[Tensor]:
        """:meth:`parameter_gradients` (no noise: an attacker's dummies) for ``problems``
        independent problems at once, the client and server in eval mode: ``x`` ``(P * B, C, H,
        W)`` the images (problem-major, ``B`` each), ``net_input`` conv 1's input for them,
        ``labels`` ``(P * B,)``. Returns the client's parameter gradients stacked ``(P, *shape)``:
        row ``p`` is :meth:`parameter_gradients` of problem ``p``'s ``B`` images alone (each
        problem's mean loss; the server's eval-mode layers treat images independently)."""
        batch = len(x) // problems
        params = [p.detach().unsqueeze(0).repeat(problems, *[1] * p.dim()).requires_grad_(True) for p in self.client.net.parameters()]
        activations = client_forward_per_problem(self.client.net, params, net_input, problems)
        logits = self.server.logits(activations)
        loss = sum(F.cross_entropy(z, labels, reduction="sum") for z in logits.values()) / batch
        for p in range(problems):
            part = slice(p * batch, (p + 1) * batch)
            penalty = self.client.penalty(x[part], activations[part])
            if penalty is not None:
                loss = loss + penalty
        return list(torch.autograd.grad(loss, params, create_graph=create_graph))

    def client_gradients(self, x: Tensor, labels: Tensor) -> List[Tensor]:
        """The victim's side of gradient leakage: :meth:`parameter_gradients` of one step on
        images ``x`` through the client's real pipeline (its JSMA, its noise), in the current
        modes."""
        activations = self.client.activations(x, self.encoded_images(x))
        sent = self.client.send(activations, differentiable=True)
        return [g.detach() for g in self.parameter_gradients(x, activations, sent, labels)]

    def observed_turn(self, x: Tensor, labels: Tensor) -> Dict[str, dict]:
        """What the next client in the ring receives around the victim's turn of one training step
        on images ``x``: the client half's optimiser state (its ``state`` message holds the Adam
        state beside the weights) before and after, as ``{"before", "after"}`` state dicts. The
        step is the victim's (:meth:`client_gradients`: its real pipeline, the current modes) on a
        copy; this run is left as it was."""
        net = copy.deepcopy(self.client.net)
        opt, _ = optimizer(net.parameters(), self.cfg)
        opt.load_state_dict(self.client.opt.state_dict())
        before = copy.deepcopy(opt.state_dict())
        for p, g in zip(net.parameters(), self.client_gradients(x, labels)):
            p.grad = g
        opt.step()
        return {"before": before, "after": copy.deepcopy(opt.state_dict())}

    def initial(self) -> "Run":
        """This run before its first step (its folder restored at epoch 0)."""
        return restore(self.folder, device=str(self.client.device), epoch=0)


def restore(folder: str, *, device: str = "cpu", epoch: Optional[int] = None) -> Run:
    """Load a finished ``pgsl train`` folder: the weights after ``epoch`` (default: its last
    complete epoch; 0: before the first step, rebuilt from the run's seed exactly as training
    built them), in eval mode. The client's surrogate and attacked images are the run's either
    way (they are fixed before training)."""
    cfg, metrics = rundir.load_config_and_metrics(folder)
    cfg.out, cfg.resume, cfg.device, cfg.progress = folder, True, device, False
    try:
        cfg.check()
    except ConfigError as e:
        raise RunError(f"device: {e}") from None
    last = min(rundir.marker(folder, "client"), rundir.marker(folder, "server"))
    if last < 1:
        raise RunError(f"--run {folder}: no complete epoch to load")
    epoch = last if epoch is None else epoch
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= last:
        raise RunError(f"epoch: expected an integer from 0 to {last} (the run's last complete epoch), got {epoch!r}")
    dataset = cfg.dataset()
    hub = LocalHub()
    server = Server.new(cfg, dataset)
    # client 1 holds the validation and test images
    client = Client.new(cfg, 1, hub.link(1), dataset, {"val": dataset.val, "test": dataset.test})
    if epoch > 0:
        server.load_state(rundir.load_checkpoint(folder, "server", epoch)["server"])
        client.load_state(rundir.load_checkpoint(folder, "client", epoch)["client"])
    if cfg.defense in PGSL_DEFENSES:
        cache_path = os.path.join(folder, "client1_attack.pt")
        if not os.path.exists(cache_path):
            raise RunError(f"--run {folder}: {cache_path} is missing (the client's surrogate and attacked images)")
        cache = torch.load(cache_path, weights_only=True)
        client.prepare({"surrogate": cache["surrogate"], "attacked": {k: cache["attacked"][k] for k in ("val", "test")}})
    return Run(folder, cfg, metrics, dataset, client, server, epoch).eval()
