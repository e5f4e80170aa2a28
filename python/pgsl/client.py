"""A client (a hospital) and its part in the run.

:class:`Client` holds its shard of the training images (client 1 also the validation and test
images), its JSMA surrogate (pgsl) and conv layers 1-2, and plays its role in the ring of
sequential split learning: each epoch it takes the client weights from the previous client,
trains on its shard through the server, and passes them on; client 1 then evaluates through the
server, checkpoints the client half and writes the run's metrics. Client weights move between
clients only, never to the server. The messages are :mod:`pgsl.protocol`'s.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
from torch import Tensor
from tqdm.auto import tqdm

from . import rundir
from .config import NOISY, PGSL_ARCHITECTURE, PGSL_DEFENSES, Config
from .data import Dataset, Split
from .defenses import Ops, distance_correlation, laplace_noise
from .errors import PeerError, RunError
from .models import ClientNet, SmallCNN, finite_weights, fit_classifier, fuse, optimizer, predict, stream_names
from .protocol import state_bytes, state_from_bytes
from .transport import Link, role

__all__ = ["Client", "client_splits", "shard_indices"]


def shard_indices(n: int, clients: int, seed: int) -> List[Tensor]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return [chunk.sort().values for chunk in order.tensor_split(clients)]


def client_splits(dataset: Dataset, cfg: Config, k: int) -> Dict[str, Split]:
    """What client ``k`` holds: its training shard; client 1 also the validation and test images."""
    train = dataset.train
    if cfg.train_subset:
        train = train.subset(torch.arange(min(cfg.train_subset, len(train))))
    shard = train.subset(shard_indices(len(train), cfg.clients, cfg.seed)[k - 1])
    if len(shard) < 2:
        given = f"--train-subset {cfg.train_subset} and " if cfg.train_subset else ""
        raise RunError(f"{given}--clients {cfg.clients}: client {k} gets {len(shard)} training images; it needs at least 2")
    splits = {"train": shard}
    if k == 1:
        splits.update(val=dataset.val, test=dataset.test)
    return splits


@dataclass
class ClientData:
    """One split as the client holds it: clean images, labels, and (pgsl) the attacked images."""

    split: Split
    attacked: Optional[Tensor] = None  # x_adv, same shape as split.x


class Client:
    """Client ``index``: its data, its surrogate (pgsl), conv layers 1-2 and its role in the run."""

    def __init__(self, cfg: Config, index: int, link: Link, dataset: Dataset, splits: Dict[str, Split]):
        self.cfg, self.index, self.link = cfg, index, link
        self.image_shape, self.num_classes, self.data_notes = dataset.image_shape, dataset.num_classes, dataset.notes
        self.device = torch.device(cfg.device)
        self.ops = Ops.named(cfg.ops)
        in_channels = self.image_shape[0]
        if cfg.defense in PGSL_ARCHITECTURE:
            in_channels = in_channels * 4 + 1  # 2x2 unshuffle + the perturbation map
        self.net = ClientNet(in_channels).to(self.device)
        self.opt, self.sched = optimizer(self.net.parameters(), cfg)
        self.data = {name: ClientData(split) for name, split in splits.items()}
        self.surrogate: Optional[SmallCNN] = None
        self.noise = torch.Generator(device=self.device).manual_seed(cfg.seed * 1000 + index)
        self.history: List[dict] = []
        self.seconds: List[float] = []  # wall time of each epoch (client 1)

    @classmethod
    def new(cls, cfg: Config, index: int, link: Link, dataset: Dataset, splits: Dict[str, Split]) -> "Client":
        """Client ``index`` as every run builds it, from the global RNG at ``cfg.seed + index``
        (the same in one process or its own, and rebuilt so by :func:`pgsl.runs.restore`)."""
        torch.manual_seed(cfg.seed + index)
        return cls(cfg, index, link, dataset, splits)

    # ------------------------------------------------------------------ the defence's pipeline

    def prepare(self, cache: Optional[dict] = None) -> dict:
        """PGSL: train the surrogate on this client's training shard and JSMA-attack every split
        it holds (training images with their labels; validation and test images, as at
        inference, with the surrogate's predicted label). ``cache``: a dict from an earlier
        :meth:`prepare` of the same client and data (then nothing is recomputed). Returns it."""
        if self.cfg.defense not in PGSL_DEFENSES:
            return {}
        c, h, w = self.image_shape
        self.surrogate = SmallCNN(self.num_classes, h, c).to(self.device)
        if cache is not None:
            try:
                self.surrogate.load_state_dict(cache["surrogate"])
                for name, held in self.data.items():
                    attacked = cache["attacked"][name]
                    if not isinstance(attacked, Tensor) or attacked.shape != held.split.x.shape:
                        raise ValueError(f"its {name!r} images do not match this client's")
                    held.attacked = attacked.to(self.device)
            except (RuntimeError, KeyError, ValueError) as e:
                raise RunError(f"client {self.index}'s attack cache does not fit this run ({str(e).splitlines()[0]})") from None
            self.surrogate.eval()
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

    def net_input(self, x: Tensor, x_adv: Optional[Tensor] = None, *, bpda: bool = False) -> Tensor:
        """What conv 1 sees for clean images ``x``: for pgsl ``pixel_unshuffle_concat(x_adv,
        perturbation map)`` (the map summed over colour channels), with ``x_adv`` the attacked
        images (default: attacked now). ``bpda=True`` makes it differentiable in ``x`` for an
        attacker: the JSMA step's gradient is the identity and its map a constant (BPDA,
        Athalye et al. 2018). ``--defense arch``: the unshuffle with an all-zero map (no JSMA)."""
        if self.cfg.defense == "arch":
            return self.ops.pixel_unshuffle_concat(x, torch.zeros_like(x[:, :1]), 2)
        if self.cfg.defense not in PGSL_DEFENSES:
            return x
        if x_adv is None:
            with torch.no_grad():
                x_adv = self.attack(x.detach())
        if bpda:
            x_adv = x + (x_adv - x).detach()
            return self.ops.pixel_unshuffle_concat(x_adv, (x_adv - x).detach().sum(1, keepdim=True), 2)
        return self.ops.pixel_unshuffle_concat(x_adv, (x_adv - x).sum(1, keepdim=True), 2)

    def activations(self, x: Tensor, x_adv: Optional[Tensor] = None, *, bpda: bool = False) -> Tensor:
        """Cut-layer activations (with graph) for images ``x`` (see :meth:`net_input`)."""
        return self.net(self.net_input(x, x_adv, bpda=bpda))

    def held_activations(self, name: str, index: Tensor) -> Tensor:
        """Cut-layer activations for images ``index`` of the held split ``name`` (attacked images
        from the cache)."""
        held = self.data[name]
        return self.activations(held.split.x[index].to(self.device), held.attacked[index] if held.attacked is not None else None)

    def send(self, activations: Tensor, *, differentiable: bool = False) -> Tensor:
        """The message for ``activations``: plus Laplacian noise under ``--defense noise`` (and pgsl+noise).
        Detached, as a wire carries it; ``differentiable=True``: the same values with the
        gradient of ``activations`` (straight through the noise), for an attacker."""
        sent = activations.detach()
        if self.cfg.defense in NOISY:
            sent = sent + laplace_noise(sent.shape, self.cfg.noise_scale, self.noise, self.device)
        return activations + (sent - activations).detach() if differentiable else sent

    def penalty(self, x: Tensor, activations: Tensor) -> Optional[Tensor]:
        """The client's own loss term beside the server's gradient, for images ``x`` and their
        ``activations``: NoPeek's weighted distance correlation; None for the other defences and
        for a single image (its distance correlation is 0, with zero gradient)."""
        if self.cfg.defense != "nopeek" or len(x) < 2:
            return None
        return self.cfg.nopeek_weight * distance_correlation(x, activations)

    # ------------------------------------------------------------------ weights (client to client)

    def state(self) -> dict:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(), "sched": self.sched.state_dict(), "noise": self.noise.get_state()}

    def load_state(self, state: dict) -> None:
        loaders = {"net": self.net.load_state_dict, "opt": self.opt.load_state_dict, "sched": self.sched.load_state_dict,
                   "noise": self.noise.set_state}
        rundir.load_half(state, loaders, f"client {self.index}'s half", self.net)

    # ------------------------------------------------------------------ the role in the run

    def prepare_attack(self) -> None:
        """:meth:`prepare`, cached in the run folder (``client{k}_attack.pt``) for ``--resume``."""
        cache_path = os.path.join(self.cfg.out, f"client{self.index}_attack.pt")
        cache = None
        if self.cfg.resume and os.path.exists(cache_path):
            cache = rundir.load_cache(cache_path)
        elif self.cfg.defense in PGSL_DEFENSES:
            print(f"client {self.index}: training the JSMA surrogate and attacking {sum(len(d.split) for d in self.data.values())} images", flush=True)
        fresh = self.prepare(cache)
        if cache is None and fresh:
            rundir.save(fresh, cache_path)

    def hello(self) -> int:
        """Agree with the server on the epoch to start from (client 1 reports its last complete
        one, the others -1) and, resuming, restore client 1's half."""
        first = self.index == 1
        mine = rundir.marker(self.cfg.out, "client") if (first and self.cfg.resume) else (0 if first else -1)
        start = int(self.link.call(0, "hello", [torch.tensor(mine)])[0])
        if first and start > 0:
            state = rundir.load_checkpoint(self.cfg.out, "client", start)
            self.load_state(state["client"])
            self.history = list(state["history"])
            self.seconds = list(state["seconds"])
            # a process killed between this checkpoint and metrics.json left them apart
            self.write_metrics()
            print(f"resuming after epoch {start} (checkpoints in {self.cfg.out})", flush=True)
        return start

    def turn(self, epoch: int) -> None:
        """Receive the client weights from the previous client, train on this shard, pass them on."""
        K = self.cfg.clients
        if K > 1 and self.index > 1:
            self._receive_state(self.index - 1)
        if self.index == 1:
            self._epoch_start = time.perf_counter()
        split = self.data["train"].split
        bar = tqdm(
            total=len(split), desc=f"epoch {epoch + 1}/{self.cfg.epochs} client {self.index}",
            unit="img", disable=not self.cfg.progress, leave=False, dynamic_ncols=True,
        )
        with bar:
            self._train_shard(epoch, bar)
        if K > 1:
            self.link.send(self.index % K + 1, "state", [state_bytes(self.state())])

    def _train_shard(self, epoch: int, progress) -> None:
        """One pass over this client's training shard through the server."""
        split = self.data["train"].split
        generator = torch.Generator().manual_seed((self.cfg.seed * 1009 + epoch) * 1013 + self.index)
        order = torch.randperm(len(split), generator=generator)
        self.net.train()
        for index in order.split(self.cfg.batch_size):
            activations = self.held_activations("train", index)
            grad, losses, correct = self.link.call(0, "train", [self.send(activations), split.y[index]])
            self.opt.zero_grad()
            penalty = self.penalty(split.x[index].to(self.device), activations)
            if penalty is not None:
                torch.autograd.backward([activations, penalty], [grad.to(self.device), None])
            else:
                activations.backward(grad.to(self.device))
            self.opt.step()
            self.sched.step()
            progress.update(len(index))
            progress.set_postfix(loss=f"{losses.mean().item():.3f}", acc=f"{correct.max().item() / len(index):.2f}")
        self.link.call(0, "turn_end")

    def _receive_state(self, src: int) -> None:
        kind, tensors = self.link.recv(src)
        if kind != "state":
            raise PeerError(f"protocol error: expected client weights from {role(src)}, got '{kind}'")
        self.load_state(state_from_bytes(tensors[0]))

    @torch.no_grad()
    def score(self, name: str, progress=None) -> Tensor:
        """Per-stream softmax scores ``(N, S, K)`` of the held split ``name``, from the server."""
        self.net.eval()
        n = len(self.data[name].split)
        out = []
        for index in torch.arange(n).split(self.cfg.eval_batch_size):
            out.append(self.link.call(0, "score", [self.send(self.held_activations(name, index))])[0])
            if progress is not None:
                progress.update(len(index))
        return torch.cat(out) if out else torch.zeros(0)

    def end_epoch(self, epoch: int) -> dict:
        """Client 1: take the weights back, evaluate, checkpoint, tell the server, record metrics."""
        if self.cfg.clients > 1:
            self._receive_state(self.cfg.clients)
        val, test = self.data["val"].split, self.data["test"].split
        bar = tqdm(
            total=len(val) + len(test), desc=f"epoch {epoch + 1}/{self.cfg.epochs} evaluate",
            unit="img", disable=not self.cfg.progress, leave=False, dynamic_ncols=True,
        )
        with bar:
            val_probs = self.score("val", bar)
            weights = self.link.call(0, "fit_fusion", [val_probs, val.y])[0]
            test_probs = self.score("test", bar)
        summary, losses, train_accuracy, trace = self.link.call(0, "epoch_end", [torch.tensor(epoch + 1)])
        self.seconds.append(time.perf_counter() - self._epoch_start)
        streams = stream_names(self.cfg.defense)
        fused_test, fused_val = fuse(test_probs.double(), weights), fuse(val_probs.double(), weights)
        record = {
            "epoch": epoch + 1,
            "seconds": self.seconds[-1],
            "train_loss": dict(zip(streams, losses.tolist())),
            "train_accuracy": dict(zip(streams, train_accuracy.tolist())),
            "train_loss_trace": trace.tolist(),
            "val_accuracy": _accuracy(fused_val, val.y),
            "test_accuracy": _accuracy(fused_test, test.y),
            # the decision's correctness per test image, for intervals over images (pgsl sweep)
            "test_correct": "".join("1" if c else "0" for c in (fused_test.argmax(1) == test.y).tolist()),
            "stream_test_accuracy": {s: _accuracy(test_probs[:, i], test.y) for i, s in enumerate(streams)},
            "weights": dict(zip(streams, weights.tolist())),
        }
        if self.cfg.defense in PGSL_DEFENSES:
            record["rpca"] = {
                "mean_iterations": float(summary[1]),
                "converged_fraction": float(summary[2]),
                "seconds": float(summary[3]),
            }
        record["server_seconds"] = float(summary[4])
        if not finite_weights(self.net):
            raise RunError(f"epoch {epoch + 1}: the client's weights are no longer finite: training diverged (try a smaller --lr "
                           f"than {self.cfg.lr:g}); the last checkpoint is kept")
        self.history.append(record)
        state = {"client": self.state(), "history": self.history, "seconds": self.seconds}
        rundir.checkpoint(self.cfg.out, "client", epoch + 1, state)
        self.write_metrics()
        streams_text = ", ".join(f"{s} {a:.4f}" for s, a in record["stream_test_accuracy"].items())
        print(
            f"epoch {epoch + 1}/{self.cfg.epochs}: test accuracy {record['test_accuracy']:.4f}"
            + (f" (streams: {streams_text})" if len(streams) > 1 else "")
            + f", {record['seconds']:.0f} s",
            flush=True,
        )
        return record

    def write_metrics(self) -> None:
        last = self.history[-1]
        metrics = {
            "test_accuracy": last["test_accuracy"],
            "test_correct": last.get("test_correct"),  # None for an epoch trained before it was recorded
            "val_accuracy": last["val_accuracy"],
            "epochs": last["epoch"],
            "seconds_per_epoch": [h["seconds"] for h in self.history],
            "defense": self.cfg.defense,
            "data": self.cfg.data,
            "data_notes": self.data_notes,
            "clients": self.cfg.clients,
            "distributed": self.cfg.distributed,
            "versions": rundir.versions(),
            "git_commit": rundir.git_commit(),
            "config": self.cfg.to_json(),
            "history": self.history,
        }
        if self.cfg.defense in PGSL_ARCHITECTURE:
            metrics["stream_accuracy"] = last["stream_test_accuracy"]
            metrics["weights"] = last["weights"]
        if "rpca" in last:
            metrics["rpca"] = last["rpca"]
        rundir.write_json(metrics, os.path.join(self.cfg.out, "metrics.json"))
        try:
            from .plots import training_curves

            training_curves(metrics, os.path.join(self.cfg.out, "training.png"))
        except ImportError:  # matplotlib is optional for training
            pass


def _accuracy(probs: Tensor, labels: Tensor) -> float:
    return float((probs.argmax(1) == labels).double().mean()) if len(labels) else float("nan")
