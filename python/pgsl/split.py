"""The two halves of split learning and the messages between them.

:class:`Client` (a hospital) holds its images, labels, its surrogate classifier and conv layers
1-2. :class:`Server` holds the rest. They share nothing but messages over a
:class:`pgsl.transport.Link` (requests from a client, one reply each):

=============  ===========================================  ====================================
kind           client sends                                 server replies
=============  ===========================================  ====================================
hello          [client's resume epoch]                      [the epoch everyone starts from]
train          [cut activations, labels]                    [d loss_fusion / d activations,
                                                             per-stream loss sum, correct count]
turn_end       []                                           [] (the next client's turn)
score          [cut activations]                            [per-stream softmax (B, S, K)]
fit_fusion     [validation softmax (N, S, K), labels]       [fusion weights (S,)]
epoch_end      [epoch]                                      [rpca iterations, converged,
                                                             client / rpca / server seconds]
=============  ===========================================  ====================================

What crosses the wire, and what does not: the client sends only cut-layer activations (after
its defence), labels, and the server's own softmax scores back for fitting the fusion; the
server sends only gradients w.r.t. those activations, losses, scores and the fusion weights.
No image (raw or attacked) leaves a client; no weight of either half crosses (client weights
move between clients only, see :mod:`pgsl.train`).

Defences (``--defense``): ``pgsl`` (JSMA + unshuffle + conv on the client; rpca and three streams
on the server), ``none`` (plain split learning with the same CNN), ``noise`` (Laplacian noise
added to the activations before sending; Titcombe et al. 2021), ``nopeek`` (the client adds
``weight * dCor(x, activations)`` to its loss; Vepakomma et al. 2020).
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

import pgsl_ext.attacks
import pgsl_ext.ops
import pgsl_ext.reference

from .data import Split
from .models import AdaptiveFusion, ClientNet, PGSLServerNet, PlainServerNet, SmallCNN, fit_classifier, predict
from .transport import Link

__all__ = ["Client", "Ops", "Server", "SplitConfig", "distance_correlation", "laplace_noise", "DEFENSES"]

DEFENSES = ("pgsl", "none", "noise", "nopeek")


@dataclass(frozen=True)
class Ops:
    """The three PGSL operations, from ``pgsl_ext`` (fast) or ``pgsl_ext.reference`` (plain PyTorch)."""

    name: str
    rpca: Callable
    pixel_unshuffle_concat: Callable
    jsma: Callable

    @staticmethod
    def named(name: str) -> "Ops":
        if name == "ext":
            return Ops("ext", pgsl_ext.ops.rpca, pgsl_ext.ops.pixel_unshuffle_concat, pgsl_ext.attacks.jsma)
        if name == "reference":
            r = pgsl_ext.reference
            return Ops("reference", r.rpca, r.pixel_unshuffle_concat, r.jsma)
        raise ValueError(f"--ops: expected 'ext' or 'reference', got {name!r}")


@dataclass
class SplitConfig:
    """The settings both halves need (a subset of the trainer's)."""

    defense: str = "pgsl"
    num_classes: int = 10
    image_shape: Sequence[int] = (1, 28, 28)
    seed: int = 0
    lr: float = 1e-3
    lr_decay: float = 3e-4
    mu: float = 0.55
    rpca_iters: int = 200
    rpca_tol: float = 1e-7
    rpca_grad: str = "detach"
    fusion_weights: Sequence[float] = (0.5, 0.3, 0.2)
    jsma_gamma: float = 0.1
    jsma_theta: float = 1.0
    surrogate_epochs: int = 2
    noise_scale: float = 1.0
    nopeek_weight: float = 1.0
    batch_size: int = 128
    eval_batch_size: int = 500
    device: str = "cpu"
    ops: str = "ext"


def _optimizer(params, cfg: SplitConfig):
    """Adam at the paper's lr with Keras-style inverse-time decay ``lr / (1 + decay * step)`` (the
    paper's "decay 3e-4" read as Keras's Adam ``decay`` argument)."""
    opt = torch.optim.Adam(params, lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1.0 + cfg.lr_decay * step))
    return opt, sched


def laplace_noise(shape, scale: float, generator: torch.Generator, device) -> Tensor:
    """Laplace(0, scale) samples drawn from ``generator`` (inverse CDF)."""
    u = torch.rand(shape, generator=generator, device=device) - 0.5
    return -scale * u.sign() * torch.log1p(-2 * u.abs()).clamp_min(-80)


def distance_correlation(x: Tensor, z: Tensor) -> Tensor:
    """Sample distance correlation (Szekely et al. 2007) between the rows of ``x`` and ``z``
    (flattened per sample); differentiable; in [0, 1]."""

    def centred(a: Tensor) -> Tensor:
        d = torch.cdist(a, a)
        return d - d.mean(0, keepdim=True) - d.mean(1, keepdim=True) + d.mean()

    a, b = centred(x.flatten(1).double()), centred(z.flatten(1).double())
    dcov_xz = (a * b).mean().clamp_min(0)
    dvar = (a * a).mean() * (b * b).mean()
    return (dcov_xz / dvar.sqrt().clamp_min(1e-30)).sqrt().to(x.dtype)


def state_bytes(obj) -> Tensor:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)


def state_from_bytes(blob: Tensor):
    return torch.load(io.BytesIO(blob.numpy().tobytes()), weights_only=True)


# --------------------------------------------------------------------------- client


@dataclass
class ClientData:
    """One split as the client holds it: clean images, labels, and (pgsl) the attacked images."""

    split: Split
    attacked: Optional[Tensor] = None  # x_adv, same shape as split.x


class Client:
    """A hospital: its shard of the training data (and, for client 1, the validation and test
    images), its JSMA surrogate, and conv layers 1-2."""

    def __init__(self, index: int, cfg: SplitConfig, link: Link, splits: Dict[str, Split]):
        self.index, self.cfg, self.link = index, cfg, link
        self.device = torch.device(cfg.device)
        self.ops = Ops.named(cfg.ops)
        in_channels = cfg.image_shape[0]
        if cfg.defense == "pgsl":
            in_channels = in_channels * 4 + 1  # 2x2 unshuffle + the perturbation map
        self.net = ClientNet(in_channels).to(self.device)
        self.opt, self.sched = _optimizer(self.net.parameters(), cfg)
        self.data = {name: ClientData(split) for name, split in splits.items()}
        self.surrogate: Optional[SmallCNN] = None
        self.noise = torch.Generator(device=self.device).manual_seed(cfg.seed * 1000 + index)
        self.seconds = 0.0

    # -- PGSL's client-side attack (once: the surrogate is fixed after training)
    def prepare(self, cache: Optional[dict] = None) -> dict:
        """Train the surrogate on this client's training shard and JSMA-attack every split it
        holds (training images with their labels; validation and test images, as at inference,
        with the surrogate's predicted label). ``cache``: a dict from an earlier :meth:`prepare`
        of the same client and data (then nothing is recomputed). Returns the cache."""
        if self.cfg.defense != "pgsl":
            return {}
        c, h, w = self.cfg.image_shape
        self.surrogate = SmallCNN(self.cfg.num_classes, h, c).to(self.device)
        if cache is not None:
            self.surrogate.load_state_dict(cache["surrogate"])
            self.surrogate.eval()
            for name, held in self.data.items():
                held.attacked = cache["attacked"][name].to(self.device)
            return cache
        train = self.data["train"].split
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed * 1000 + self.index)
            generator = torch.Generator().manual_seed(self.cfg.seed * 1000 + self.index)
            fit_classifier(
                self.surrogate, train.x.to(self.device), train.y.to(self.device), epochs=self.cfg.surrogate_epochs, generator=generator
            )
        for name, held in self.data.items():
            x = held.split.x.to(self.device)
            held.attacked = self.attack(x, held.split.y.to(self.device) if name == "train" else None)
        return {"surrogate": self.surrogate.state_dict(), "attacked": {n: d.attacked.cpu() for n, d in self.data.items()}}

    def net_input(self, x: Tensor, x_adv: Optional[Tensor] = None) -> Tensor:
        """What conv 1 sees for clean images ``x`` and (pgsl) their attacked version ``x_adv``:
        ``pixel_unshuffle_concat(x_adv, perturbation map)`` (the map summed over colour channels)."""
        if self.cfg.defense != "pgsl":
            return x
        return self.ops.pixel_unshuffle_concat(x_adv, (x_adv - x).sum(1, keepdim=True), 2)

    def inputs(self, name: str, index: Tensor) -> Tensor:
        """What conv 1 sees for images ``index`` of split ``name`` (attacked images from the cache)."""
        held = self.data[name]
        x = held.split.x[index].to(self.device)
        return self.net_input(x, held.attacked[index] if held.attacked is not None else None)

    def attack(self, x: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        """The client's JSMA of images ``x`` against its surrogate, with ``labels`` (training) or,
        as at inference, the surrogate's predictions."""
        if self.surrogate is None:
            raise RuntimeError("Client.attack needs prepare() first (the surrogate)")
        labels = predict(self.surrogate, x) if labels is None else labels
        return torch.cat(
            [
                self.ops.jsma(self.surrogate, xb, yb, theta=self.cfg.jsma_theta, gamma=self.cfg.jsma_gamma).adversarial
                for xb, yb in zip(x.split(self.cfg.eval_batch_size), labels.split(self.cfg.eval_batch_size))
            ]
        ) if len(x) else x.clone()

    def net_input_for(self, x: Tensor, *, bpda: bool = False) -> Tensor:
        """Conv 1's input for new images ``x`` (the whole client-side defence). ``bpda=True``
        makes it differentiable in ``x`` for an attacker: the JSMA step's gradient is taken as
        the identity and its perturbation map as a constant (BPDA, Athalye et al. 2018)."""
        if self.cfg.defense != "pgsl":
            return x
        with torch.no_grad():
            x_adv = self.attack(x.detach())
        if bpda:
            x_adv = x + (x_adv - x).detach()
            return self.ops.pixel_unshuffle_concat(x_adv, (x_adv - x).detach().sum(1, keepdim=True), 2)
        return self.net_input(x, x_adv)

    def encode(self, name: str, index: Tensor) -> Tensor:
        """Cut-layer activations (with graph) for images ``index`` of split ``name``."""
        return self.net(self.inputs(name, index))

    def to_wire(self, activations: Tensor) -> Tensor:
        """What is actually sent: the activations, plus Laplacian noise under ``--defense noise``."""
        sent = activations.detach()
        if self.cfg.defense == "noise":
            sent = sent + laplace_noise(sent.shape, self.cfg.noise_scale, self.noise, self.device)
        return sent

    # -- weights move between clients, never to the server
    def state(self) -> dict:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(), "sched": self.sched.state_dict(), "noise": self.noise.get_state()}

    def load_state(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.noise.set_state(state["noise"])

    def penalty(self, x: Tensor, activations: Tensor) -> Optional[Tensor]:
        """The client's own loss term beside the server's gradient, for images ``x`` and their
        ``activations``: NoPeek's weighted distance correlation; None for the other defences and
        for a single image (its distance correlation is 0, with zero gradient)."""
        if self.cfg.defense != "nopeek" or len(x) < 2:
            return None
        return self.cfg.nopeek_weight * distance_correlation(x, activations)

    # -- training and scoring through the server
    def train_turn(self, epoch: int, progress=None) -> Dict[str, float]:
        """One pass over this client's training shard; returns summed losses / correct counts."""
        split = self.data["train"].split
        generator = torch.Generator().manual_seed((self.cfg.seed * 1009 + epoch) * 1013 + self.index)
        order = torch.randperm(len(split), generator=generator)
        totals: Dict[str, float] = {}
        self.net.train()
        for index in order.split(self.cfg.batch_size):
            start = time.perf_counter()
            activations = self.encode("train", index)
            labels = split.y[index]
            self.seconds += time.perf_counter() - start
            grad, losses, correct = self.link.call(0, "train", [self.to_wire(activations), labels])
            start = time.perf_counter()
            self.opt.zero_grad()
            penalty = self.penalty(split.x[index].to(self.device), activations)
            if penalty is not None:
                torch.autograd.backward([activations, penalty], [grad.to(self.device), None])
            else:
                activations.backward(grad.to(self.device))
            self.opt.step()
            self.sched.step()
            self.seconds += time.perf_counter() - start
            n = len(index)
            totals["images"] = totals.get("images", 0) + n
            for i, (loss, hits) in enumerate(zip(losses.tolist(), correct.tolist())):
                totals[f"loss{i}"] = totals.get(f"loss{i}", 0.0) + loss * n
                totals[f"correct{i}"] = totals.get(f"correct{i}", 0.0) + hits
            if progress is not None:
                progress.update(n)
                progress.set_postfix(loss=f"{losses.mean().item():.3f}", acc=f"{correct.max().item() / n:.2f}")
        self.link.call(0, "turn_end")
        return totals

    @torch.no_grad()
    def score(self, name: str, progress=None) -> Tensor:
        """Per-stream softmax scores ``(N, S, K)`` of split ``name`` from the server."""
        self.net.eval()
        n = len(self.data[name].split)
        out = []
        for index in torch.arange(n).split(self.cfg.eval_batch_size):
            out.append(self.link.call(0, "score", [self.to_wire(self.encode(name, index))])[0])
            if progress is not None:
                progress.update(len(index))
        return torch.cat(out) if out else torch.zeros(0)


# --------------------------------------------------------------------------- server


class Server:
    """Conv layers 3-7 and the heads (three streams for pgsl), the rpca block, the fusion."""

    def __init__(self, cfg: SplitConfig, link: Link):
        self.cfg, self.link = cfg, link
        self.device = torch.device(cfg.device)
        self.ops = Ops.named(cfg.ops)
        if cfg.defense == "pgsl":
            self.net = PGSLServerNet(cfg.num_classes, rpca_grad=cfg.rpca_grad).to(self.device)
            self.fusion = AdaptiveFusion(cfg.fusion_weights).to(self.device)
        else:
            self.net = PlainServerNet(cfg.num_classes).to(self.device)
            self.fusion = AdaptiveFusion([1.0]).to(self.device)
        self.opt, self.sched = _optimizer(self.net.parameters(), cfg)
        # The server's own random stream (dropout), so that one process and several processes,
        # and a resumed run, draw the same masks.
        self.rng_state = torch.Generator().manual_seed(cfg.seed * 1000).get_state()
        self.reset_counters()

    def reset_counters(self) -> None:
        self.rpca_iterations = 0.0
        self.rpca_converged = 0.0
        self.rpca_matrices = 0
        self.rpca_seconds = 0.0
        self.seconds = 0.0

    def low_rank(self, activations: Tensor) -> Tensor:
        start = time.perf_counter()
        kwargs = dict(mu=self.cfg.mu, max_iter=self.cfg.rpca_iters, tol=self.cfg.rpca_tol)
        result = self.ops.rpca(activations.detach(), **kwargs)
        self.rpca_iterations += float(result.iterations.double().sum())
        self.rpca_converged += float(result.converged.double().sum())
        self.rpca_matrices += result.iterations.numel()
        self.rpca_seconds += time.perf_counter() - start
        return result.low_rank

    def logits(self, activations: Tensor) -> Dict[str, Tensor]:
        if self.cfg.defense == "pgsl":
            low_rank = self.low_rank(activations)
            start = time.perf_counter()
            out = self.net(activations, low_rank)
        else:
            start = time.perf_counter()
            out = self.net(activations)
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
        correct = torch.stack([(z.argmax(1) == labels).sum() for z in out.values()])
        self.opt.zero_grad()
        losses.sum().backward()
        self.opt.step()
        self.sched.step()
        self.seconds += time.perf_counter() - start
        return [activations.grad.detach().cpu(), losses.detach().cpu(), correct.cpu()]

    def attack_logits(self, activations: Tensor) -> Dict[str, Tensor]:
        """Stream logits differentiable in ``activations`` along every path, for an attacker;
        rpca's gradient is taken as the identity (BPDA). Eval mode is the caller's choice."""
        if self.cfg.defense != "pgsl":
            return self.net(activations)
        low_rank = self.low_rank(activations)
        return self.net(activations, activations + (low_rank - activations).detach(), route_gradients=False)

    @torch.no_grad()
    def scores(self, activations: Tensor) -> Tensor:
        self.net.eval()
        out = self.logits(activations.to(self.device))
        return torch.stack([z.softmax(1) for z in out.values()], 1).cpu()

    # -- checkpoints of this half (pgsl.train writes them)
    def state(self) -> dict:
        return {
            "net": self.net.state_dict(),
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
            "fusion": self.fusion.state_dict(),
            "rng": self.rng_state,
        }

    def load_state(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.fusion.load_state_dict(state["fusion"])
        self.rng_state = state["rng"]

    def handle(self, kind: str, tensors: List[Tensor]) -> List[Tensor]:
        """One request -> its reply (except hello and epoch_end, which pgsl.train handles)."""
        if kind == "train":
            return self.train_step(*tensors)
        if kind == "score":
            return [self.scores(tensors[0])]
        if kind == "fit_fusion":
            return [self.fusion.fit(tensors[0].to(self.device), tensors[1].to(self.device)).cpu()]
        if kind == "turn_end":
            return []
        raise ValueError(f"the server cannot handle message kind {kind!r}")
