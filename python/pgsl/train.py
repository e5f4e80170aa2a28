"""``pgsl train``: PGSL (or a baseline) end to end, in one process or across processes.

Read top to bottom: the config, the data, then what the server and each client do per epoch, the
checkpoints, the metrics. The same functions run in one process (a :class:`LocalHub` carries
the messages; clients take their turns in a loop) and across processes (``torch.distributed``;
rank 0 is the server, ranks 1..K the clients).

Sequential split learning with K clients: the training set is split into K seeded IID shards.
Each epoch, client 1 trains on its shard through the server, then hands its client weights
(conv 1-2, Adam state, lr schedule) to client 2, and so on; client K hands them back to client 1,
which holds the validation and test images: it scores the validation slice (the server fits the
fusion weights on those scores), scores the test set, and checkpoints the client half. Client
weights move from client to client only; the server never receives them.

Checkpoints (in ``--out``): ``client_epoch{E}.pt`` / ``server_epoch{E}.pt`` written atomically
(temporary file + rename), then ``client.json`` / ``server.json`` naming the last complete epoch;
the last two epochs are kept. ``--resume`` starts after the last epoch both halves completed and
ends where an uninterrupted run with the same seed ends. Checkpoints load with
``weights_only=True``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from tqdm.auto import tqdm

import pgsl_ext

from . import data as datasets
from .split import DEFENSES, Client, Server, SplitConfig, state_bytes, state_from_bytes
from .transport import DistributedLink, LocalHub, Link, PeerError, init_from_env, role

__all__ = ["TrainConfig", "TrainError", "TrainedRun", "restore", "train", "load_run"]


class TrainError(RuntimeError):
    """A problem with the options, the run folder or a peer; the message says which."""


@dataclass
class TrainConfig:
    """Every option of `pgsl train` (the CLI's flags, one for one). The defaults both halves
    need are SplitConfig's; the rest are the run's."""

    data: str = "mnist5k"
    epochs: int = 2
    batch_size: int = SplitConfig.batch_size
    mu: float = SplitConfig.mu
    defense: str = SplitConfig.defense
    clients: int = 1
    distributed: bool = False
    device: str = SplitConfig.device
    seed: int = SplitConfig.seed
    out: str = "runs/pgsl"
    resume: bool = False
    lr: float = SplitConfig.lr
    lr_decay: float = SplitConfig.lr_decay
    rpca_iters: int = SplitConfig.rpca_iters
    rpca_tol: float = SplitConfig.rpca_tol
    rpca_grad: str = SplitConfig.rpca_grad
    fusion_weights: Tuple[float, ...] = SplitConfig.fusion_weights
    jsma_gamma: float = SplitConfig.jsma_gamma
    jsma_theta: float = SplitConfig.jsma_theta
    surrogate_epochs: int = SplitConfig.surrogate_epochs
    noise_scale: float = SplitConfig.noise_scale
    nopeek_weight: float = SplitConfig.nopeek_weight
    eval_batch_size: int = SplitConfig.eval_batch_size
    train_subset: int = 0
    eval_subset: int = 0
    mias_size: int = 64
    ops: str = SplitConfig.ops
    timeout: float = 120.0
    progress: bool = True

    # options that may differ between a run and its --resume
    RESUMABLE = ("epochs", "resume", "out", "distributed", "timeout", "progress", "device")

    def check(self) -> None:
        def need(cond, option, expected, got):
            if not cond:
                raise TrainError(f"--{option}: expected {expected}, got {got!r}")

        need(self.epochs >= 1, "epochs", "an integer >= 1", self.epochs)
        need(self.batch_size >= 2, "batch-size", "an integer >= 2 (BatchNorm needs two images)", self.batch_size)
        need(self.eval_batch_size >= 1, "eval-batch-size", "an integer >= 1", self.eval_batch_size)
        need(math.isfinite(self.mu) and self.mu > 0, "mu", "a number > 0", self.mu)
        need(self.defense in DEFENSES, "defense", f"one of {', '.join(DEFENSES)}", self.defense)
        need(self.clients >= 1, "clients", "an integer >= 1", self.clients)
        need(self.device in ("cpu", "cuda") or self.device.startswith("cuda:"), "device", "cpu or cuda", self.device)
        need(math.isfinite(self.lr) and self.lr > 0, "lr", "a number > 0", self.lr)
        need(math.isfinite(self.lr_decay) and self.lr_decay >= 0, "lr-decay", "a number >= 0", self.lr_decay)
        need(self.rpca_iters >= 1, "rpca-iters", "an integer >= 1", self.rpca_iters)
        need(math.isfinite(self.rpca_tol) and self.rpca_tol > 0, "rpca-tol", "a number > 0", self.rpca_tol)
        need(self.rpca_grad in ("detach", "identity"), "rpca-grad", "detach or identity", self.rpca_grad)
        need(
            len(self.fusion_weights) == 3 and all(w >= 0 for w in self.fusion_weights) and sum(self.fusion_weights) > 0,
            "fusion-weights", "three weights >= 0 (attacked,fusion,recovered) with a positive sum", self.fusion_weights,
        )
        need(0 < self.jsma_gamma <= 1, "jsma-gamma", "a fraction in (0, 1]", self.jsma_gamma)
        need(math.isfinite(self.jsma_theta) and self.jsma_theta != 0, "jsma-theta", "a non-zero number", self.jsma_theta)
        need(self.surrogate_epochs >= 1, "surrogate-epochs", "an integer >= 1", self.surrogate_epochs)
        need(math.isfinite(self.noise_scale) and self.noise_scale >= 0, "noise-scale", "a number >= 0", self.noise_scale)
        need(math.isfinite(self.nopeek_weight) and self.nopeek_weight >= 0, "nopeek-weight", "a number >= 0", self.nopeek_weight)
        need(self.train_subset >= 0, "train-subset", "an integer >= 0 (0: all)", self.train_subset)
        need(self.eval_subset >= 0, "eval-subset", "an integer >= 0 (0: all)", self.eval_subset)
        need(self.ops in ("ext", "reference"), "ops", "ext or reference", self.ops)
        need(math.isfinite(self.timeout) and self.timeout > 0, "timeout", "a number of seconds > 0", self.timeout)
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise TrainError(f"--device {self.device}: no CUDA device is visible (torch.cuda.is_available() is False)")

    def split_config(self, dataset: datasets.Dataset) -> SplitConfig:
        names = {f.name for f in dataclasses.fields(SplitConfig)}
        kwargs = {k: v for k, v in dataclasses.asdict(self).items() if k in names}
        return SplitConfig(num_classes=dataset.num_classes, image_shape=dataset.image_shape, **kwargs)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["fusion_weights"] = list(self.fusion_weights)
        return d


# --------------------------------------------------------------------------- files


def _atomic_write(path: str, write) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    write(tmp)
    os.replace(tmp, path)


def _save(obj, path: str) -> None:
    _atomic_write(path, lambda tmp: torch.save(obj, tmp))


def _write_json(obj, path: str) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")

    _atomic_write(path, write)


def _marker(out: str, half: str) -> int:
    """The last epoch (1-based) the ``half`` ('client' or 'server') completed, 0 if none."""
    path = os.path.join(out, f"{half}.json")
    if not os.path.exists(path):
        return 0
    try:
        with open(path) as f:
            return int(json.load(f)["epoch"])
    except (ValueError, KeyError, TypeError, json.JSONDecodeError):
        raise TrainError(f"{path}: not a checkpoint marker (expected {{\"epoch\": N}})") from None


def _checkpoint(out: str, half: str, epoch: int, state: dict) -> None:
    _save(state, os.path.join(out, f"{half}_epoch{epoch}.pt"))
    _write_json({"epoch": epoch}, os.path.join(out, f"{half}.json"))
    old = os.path.join(out, f"{half}_epoch{epoch - 2}.pt")
    if os.path.exists(old):
        os.remove(old)


def _load_checkpoint(out: str, half: str, epoch: int) -> dict:
    path = os.path.join(out, f"{half}_epoch{epoch}.pt")
    try:
        return torch.load(path, weights_only=True)
    except FileNotFoundError:
        raise TrainError(f"--resume: {path} is missing (the {half} half of epoch {epoch})") from None
    except Exception as e:  # a truncated or foreign file
        raise TrainError(f"--resume: {path} cannot be loaded ({type(e).__name__}: {e})") from None


def git_commit() -> Optional[str]:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def versions() -> dict:
    return {"pgsl_ext": pgsl_ext.__version__, "torch": torch.__version__, "python": platform.python_version()}


# --------------------------------------------------------------------------- the server's side


class ServerRole:
    """The server plus the two messages that concern the whole run: hello (agree on the start
    epoch, restore the server half) and epoch_end (checkpoint the server half, report the
    epoch's training statistics)."""

    def __init__(self, cfg: TrainConfig, server: Server):
        self.cfg, self.server = cfg, server
        self.start_epoch = None
        self._reset_epoch()

    def _reset_epoch(self) -> None:
        self.server.reset_counters()
        self.batch_losses: List[List[float]] = []
        self.images = 0
        self.loss_sum = None
        self.correct_sum = None

    def handle(self, src: int, kind: str, tensors: List[torch.Tensor]) -> List[torch.Tensor]:
        if kind == "hello":
            return [torch.tensor([self.hello(int(tensors[0]))])]
        if kind == "epoch_end":
            return self.epoch_end(int(tensors[0]))
        reply = self.server.handle(kind, tensors)
        if kind == "train":
            n = len(tensors[1])
            losses, correct = reply[1].double(), reply[2].double()
            self.batch_losses.append(losses.tolist())
            self.images += n
            self.loss_sum = losses * n if self.loss_sum is None else self.loss_sum + losses * n
            self.correct_sum = correct if self.correct_sum is None else self.correct_sum + correct
        return reply

    def hello(self, client_epoch: int) -> int:
        """Client 1 reports its last complete epoch (others -1); the run starts after the last
        epoch both halves completed."""
        if client_epoch < 0:
            return self.start_epoch if self.start_epoch is not None else 0
        start = min(client_epoch, _marker(self.cfg.out, "server")) if self.cfg.resume else 0
        if start > 0:
            self.server.load_state(_load_checkpoint(self.cfg.out, "server", start)["server"])
        self.start_epoch = start
        return start

    def epoch_end(self, epoch: int) -> List[torch.Tensor]:
        s = self.server
        state = {"server": s.state(), "epoch": epoch}
        _checkpoint(self.cfg.out, "server", epoch, state)
        matrices = max(s.rpca_matrices, 1)
        summary = torch.tensor(
            [self.images, s.rpca_iterations / matrices, s.rpca_converged / matrices, s.rpca_seconds, s.seconds],
            dtype=torch.float64,
        )
        images = max(self.images, 1)
        losses = (self.loss_sum / images) if self.loss_sum is not None else torch.zeros(0, dtype=torch.float64)
        accuracy = (self.correct_sum / images) if self.correct_sum is not None else torch.zeros(0, dtype=torch.float64)
        trace = torch.tensor(self.batch_losses, dtype=torch.float64)
        self._reset_epoch()
        return [summary, losses, accuracy, trace]


def serve(role_: ServerRole, link: Link, clients: int, epochs: int) -> None:
    """The server's loop in a distributed run: the schedule is known, so every receive names its
    sender (which NCCL requires) and a silent peer is detected."""

    def serve_until(src: int, last: str) -> None:
        while True:
            kind, tensors = link.recv(src)
            try:
                reply = role_.handle(src, kind, tensors)
            except Exception:
                link.send(src, "error")
                raise
            link.send(src, kind, reply)
            if kind == last:
                return

    for k in range(1, clients + 1):
        serve_until(k, "hello")
    for _ in range(role_.start_epoch, epochs):
        for k in range(1, clients + 1):
            serve_until(k, "turn_end")
        serve_until(1, "epoch_end")


# --------------------------------------------------------------------------- the clients' side


def shard_indices(n: int, clients: int, seed: int) -> List[torch.Tensor]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return [chunk.sort().values for chunk in order.tensor_split(clients)]


def client_splits(dataset: datasets.Dataset, cfg: TrainConfig, k: int) -> Dict[str, datasets.Split]:
    """What client ``k`` holds: its training shard; client 1 also the validation and test images."""
    train = dataset.train
    if cfg.train_subset:
        train = train.subset(torch.arange(min(cfg.train_subset, len(train))))
    shard = train.subset(shard_indices(len(train), cfg.clients, cfg.seed)[k - 1])
    if len(shard) < 2:
        raise TrainError(f"--clients {cfg.clients}: client {k} gets {len(shard)} training images; it needs at least 2")
    splits = {"train": shard}
    if k == 1:
        splits.update(val=dataset.val, test=dataset.test)
    return splits


class ClientRole:
    """Client ``k``'s side of the run; client 1 also evaluates and writes the metrics."""

    def __init__(self, cfg: TrainConfig, client: Client, dataset: datasets.Dataset):
        self.cfg, self.client, self.dataset = cfg, client, dataset
        self.k = client.index
        self.history: List[dict] = []
        self.seconds: List[float] = []

    def prepare(self) -> None:
        cache_path = os.path.join(self.cfg.out, f"client{self.k}_attack.pt")
        cache = None
        if self.cfg.resume and os.path.exists(cache_path):
            cache = torch.load(cache_path, weights_only=True)
        elif self.cfg.defense == "pgsl":
            print(f"client {self.k}: training the JSMA surrogate and attacking {sum(len(d.split) for d in self.client.data.values())} images", flush=True)
        fresh = self.client.prepare(cache)
        if cache is None and fresh:
            _save(fresh, cache_path)

    def hello(self) -> int:
        mine = _marker(self.cfg.out, "client") if (self.k == 1 and self.cfg.resume) else (0 if self.k == 1 else -1)
        start = int(self.client.link.call(0, "hello", [torch.tensor(mine)])[0])
        if self.k == 1 and start > 0:
            state = _load_checkpoint(self.cfg.out, "client", start)
            self.client.load_state(state["client"])
            self.history = list(state["history"])
            self.seconds = list(state["seconds"])
            print(f"resuming after epoch {start} (checkpoints in {self.cfg.out})", flush=True)
        return start

    def turn(self, epoch: int) -> None:
        """Receive the client weights from the previous client, train on this shard, pass them on."""
        K = self.cfg.clients
        if K > 1 and (self.k > 1):
            self._receive_state(self.k - 1)
        if self.k == 1:
            self._epoch_start = time.perf_counter()
        bar = tqdm(
            total=len(self.client.data["train"].split), desc=f"epoch {epoch + 1}/{self.cfg.epochs} client {self.k}",
            unit="img", disable=not self.cfg.progress, leave=False, dynamic_ncols=True,
        )
        with bar:
            self.client.train_turn(epoch, bar)
        if K > 1:
            self.client.link.send(self.k % K + 1, "state", [state_bytes(self.client.state())])

    def _receive_state(self, src: int) -> None:
        kind, tensors = self.client.link.recv(src)
        if kind != "state":
            raise PeerError(f"protocol error: expected client weights from {role(src)}, got '{kind}'")
        self.client.load_state(state_from_bytes(tensors[0]))

    def end_epoch(self, epoch: int) -> dict:
        """Client 1: take the weights back, evaluate, checkpoint, tell the server, record metrics."""
        if self.cfg.clients > 1:
            self._receive_state(self.cfg.clients)
        bar = tqdm(
            total=len(self.dataset.val) + len(self.dataset.test), desc=f"epoch {epoch + 1}/{self.cfg.epochs} evaluate",
            unit="img", disable=not self.cfg.progress, leave=False, dynamic_ncols=True,
        )
        with bar:
            val_probs = self.client.score("val", bar)
            weights = self.client.link.call(0, "fit_fusion", [val_probs, self.dataset.val.y])[0]
            test_probs = self.client.score("test", bar)
        summary, losses, train_accuracy, trace = self.client.link.call(0, "epoch_end", [torch.tensor(epoch + 1)])
        self.seconds.append(time.perf_counter() - self._epoch_start)
        streams = list(self.client_streams())
        y_val, y_test = self.dataset.val.y, self.dataset.test.y
        fused_test = (test_probs.double() * weights.view(1, -1, 1)).sum(1)
        fused_val = (val_probs.double() * weights.view(1, -1, 1)).sum(1)
        record = {
            "epoch": epoch + 1,
            "seconds": self.seconds[-1],
            "train_loss": dict(zip(streams, losses.tolist())),
            "train_accuracy": dict(zip(streams, train_accuracy.tolist())),
            "train_loss_trace": trace.tolist(),
            "val_accuracy": _accuracy(fused_val, y_val),
            "test_accuracy": _accuracy(fused_test, y_test),
            "stream_test_accuracy": {s: _accuracy(test_probs[:, i], y_test) for i, s in enumerate(streams)},
            "weights": dict(zip(streams, weights.tolist())),
        }
        if self.cfg.defense == "pgsl":
            record["rpca"] = {
                "mean_iterations": float(summary[1]),
                "converged_fraction": float(summary[2]),
                "seconds": float(summary[3]),
            }
        record["server_seconds"] = float(summary[4])
        self.history.append(record)
        state = {"client": self.client.state(), "history": self.history, "seconds": self.seconds, "epoch": epoch + 1}
        _checkpoint(self.cfg.out, "client", epoch + 1, state)
        self.write_metrics()
        streams_text = ", ".join(f"{s} {a:.4f}" for s, a in record["stream_test_accuracy"].items())
        print(
            f"epoch {epoch + 1}/{self.cfg.epochs}: test accuracy {record['test_accuracy']:.4f}"
            + (f" (streams: {streams_text})" if len(streams) > 1 else "")
            + f", {record['seconds']:.0f} s",
            flush=True,
        )
        return record

    def client_streams(self) -> Sequence[str]:
        from .models import PGSLServerNet, PlainServerNet

        return PGSLServerNet.streams if self.cfg.defense == "pgsl" else PlainServerNet.streams

    def write_metrics(self) -> None:
        last = self.history[-1]
        metrics = {
            "test_accuracy": last["test_accuracy"],
            "val_accuracy": last["val_accuracy"],
            "epochs": last["epoch"],
            "seconds_per_epoch": [h["seconds"] for h in self.history],
            "defense": self.cfg.defense,
            "data": self.cfg.data,
            "data_notes": self.dataset.notes,
            "clients": self.cfg.clients,
            "distributed": self.cfg.distributed,
            "versions": versions(),
            "git_commit": git_commit(),
            "config": self.cfg.to_json(),
            "history": self.history,
        }
        if self.cfg.defense == "pgsl":
            metrics["stream_accuracy"] = last["stream_test_accuracy"]
            metrics["weights"] = last["weights"]
            metrics["rpca"] = last["rpca"]
        _write_json(metrics, os.path.join(self.cfg.out, "metrics.json"))
        try:
            from .plots import training_curves

            training_curves(metrics, os.path.join(self.cfg.out, "training.png"))
        except ImportError:  # matplotlib is optional for training
            pass


def _accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return float((probs.argmax(1) == labels).double().mean()) if len(labels) else float("nan")


# --------------------------------------------------------------------------- the run


def _prepare_out(cfg: TrainConfig) -> None:
    os.makedirs(cfg.out, exist_ok=True)
    path = os.path.join(cfg.out, "config.json")
    mine = {k: v for k, v in cfg.to_json().items() if k not in TrainConfig.RESUMABLE}
    if cfg.resume and os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        for key, value in mine.items():
            if key in saved and saved[key] != value:
                option = key.replace("_", "-")
                raise TrainError(f"--resume: --{option} is {value!r}, but the run in {cfg.out} used {saved[key]!r}")
    elif not cfg.resume and any(os.path.exists(os.path.join(cfg.out, f)) for f in ("client.json", "server.json")):
        raise TrainError(f"--out {cfg.out}: holds an earlier run's checkpoints; pass --resume to continue it or choose another folder")
    _write_json(cfg.to_json(), path)


def _build(cfg: TrainConfig):
    dataset = datasets.load(cfg.data, mias_size=cfg.mias_size, seed=cfg.seed)
    if cfg.eval_subset:
        dataset.val = dataset.val.subset(torch.arange(min(cfg.eval_subset, len(dataset.val))))
        dataset.test = dataset.test.subset(torch.arange(min(cfg.eval_subset, len(dataset.test))))
        dataset.notes.append(f"--eval-subset {cfg.eval_subset}: only the first {len(dataset.val)} validation and {len(dataset.test)} test images")
    return dataset, cfg.split_config(dataset)


def _new_server(cfg: TrainConfig, split_cfg, link) -> Server:
    """The server as every run builds it, from the global RNG at ``cfg.seed`` (its initialisation
    is then the same whether it is built in one process or in its own, and :func:`restore` can
    rebuild it)."""
    torch.manual_seed(cfg.seed)
    return Server(split_cfg, link)


def _new_client(cfg: TrainConfig, split_cfg, link, k: int, splits: Dict[str, datasets.Split]) -> Client:
    """Client ``k`` as every run builds it, from the global RNG at ``cfg.seed + k``."""
    torch.manual_seed(cfg.seed + k)
    return Client(k, split_cfg, link, splits)


def train(cfg: TrainConfig) -> dict:
    """Run in one process (every client and the server here); returns the metrics dict."""
    cfg.check()
    _prepare_out(cfg)
    dataset, split_cfg = _build(cfg)
    hub = LocalHub()
    server = ServerRole(cfg, _new_server(cfg, split_cfg, hub.link(0)))
    hub.handlers[0] = server.handle
    roles = [
        ClientRole(cfg, _new_client(cfg, split_cfg, hub.link(k), k, client_splits(dataset, cfg, k)), dataset)
        for k in range(1, cfg.clients + 1)
    ]
    for r in roles:
        r.prepare()
    start = [r.hello() for r in roles][0]
    for epoch in range(start, cfg.epochs):
        for r in roles:
            r.turn(epoch)
        roles[0].end_epoch(epoch)
    with open(os.path.join(cfg.out, "metrics.json")) as f:
        return json.load(f)


def train_rank(cfg: TrainConfig) -> None:
    """One rank of a distributed run (under torchrun, or started by :func:`launch_local`)."""
    cfg.check()
    backend = "nccl" if cfg.device.startswith("cuda") else "gloo"
    rank, world = init_from_env(timeout=cfg.timeout, backend=backend)
    if world != cfg.clients + 1:
        raise TrainError(f"--clients {cfg.clients}: needs a world of {cfg.clients + 1} processes (server + clients), torchrun started {world}")
    if cfg.device.startswith("cuda"):
        cfg.device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank)) % torch.cuda.device_count()}"
    if rank == 0:
        os.makedirs(cfg.out, exist_ok=True)
    else:
        _prepare_out(cfg) if rank == 1 else os.makedirs(cfg.out, exist_ok=True)
    dataset, split_cfg = _build(cfg)
    link = DistributedLink(timeout=cfg.timeout, device=torch.device(cfg.device))
    try:
        if rank == 0:
            serve(ServerRole(cfg, _new_server(cfg, split_cfg, link)), link, cfg.clients, cfg.epochs)
        else:
            r = ClientRole(cfg, _new_client(cfg, split_cfg, link, rank, client_splits(dataset, cfg, rank)), dataset)
            r.prepare()
            start = r.hello()
            for epoch in range(start, cfg.epochs):
                r.turn(epoch)
                if rank == 1:
                    r.end_epoch(epoch)
    finally:
        link.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_local(cfg: TrainConfig, argv: Sequence[str]) -> int:
    """``--distributed`` without torchrun: start the server and K clients as local processes
    (gloo over loopback, or NCCL with ``--device cuda``) and wait for them. When one fails, the
    others get ``--timeout`` seconds to notice and exit, then are killed; returns the exit code."""
    cfg.check()
    world = cfg.clients + 1
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE=str(world))
    threads = max(1, (os.cpu_count() or 1) // world)
    procs = []
    for rank in range(world):
        child_env = dict(env, RANK=str(rank), LOCAL_RANK=str(rank), OMP_NUM_THREADS=str(threads), PGSL_RANK_CHILD="1")
        procs.append(subprocess.Popen([sys.executable, "-m", "pgsl.cli", *argv], env=child_env))
    failed_at = None
    code = 0
    try:
        while True:
            states = [p.poll() for p in procs]
            bad = [(rank, c) for rank, c in enumerate(states) if c not in (None, 0)]
            if bad and failed_at is None:
                failed_at = time.monotonic()
                code = bad[0][1]
                print(f"pgsl: {role(bad[0][0])} exited with code {bad[0][1]}; waiting up to {cfg.timeout:g} s for the others", file=sys.stderr, flush=True)
            if all(c is not None for c in states):
                return code if code else next((c for c in states if c), 0)
            if failed_at is not None and time.monotonic() - failed_at > cfg.timeout + 10:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
                print("pgsl: killed the ranks that were still running", file=sys.stderr, flush=True)
                return code or 1
            time.sleep(0.2)
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        return 130


def load_run(folder: str) -> Tuple[TrainConfig, dict]:
    """The config and metrics of a finished ``pgsl train`` folder (for the evaluation)."""
    for name in ("config.json", "metrics.json", "client.json", "server.json"):
        if not os.path.isfile(os.path.join(folder, name)):
            raise TrainError(f"--run {folder}: not a finished pgsl train folder ({name} is missing)")
    with open(os.path.join(folder, "config.json")) as f:
        saved = json.load(f)
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: (tuple(v) if k == "fusion_weights" else v) for k, v in saved.items() if k in names})
    with open(os.path.join(folder, "metrics.json")) as f:
        metrics = json.load(f)
    return cfg, metrics


@dataclass
class TrainedRun:
    """A finished run, restored for evaluation: client 1 (trained conv 1-2, surrogate and attacked
    images of the validation and test sets) and the server (trained streams, fusion weights)."""

    folder: str
    cfg: TrainConfig
    metrics: dict
    dataset: datasets.Dataset
    client: Client
    server: Server

    @property
    def streams(self) -> Sequence[str]:
        return tuple(self.server.net.streams)

    def eval(self) -> "TrainedRun":
        self.client.net.eval()
        self.server.net.eval()
        return self

    def wire(self, x: torch.Tensor, *, bpda: bool = False) -> torch.Tensor:
        """What the client sends for images ``x``: its whole pipeline (pgsl: JSMA against the
        surrogate; noise: Laplacian noise), in eval mode. ``bpda``: differentiable in ``x``."""
        activations = self.client.net(self.client.net_input_for(x, bpda=bpda))
        return activations + (self.client.to_wire(activations) - activations).detach()

    def logits(self, x: torch.Tensor, *, bpda: bool = False) -> Dict[str, torch.Tensor]:
        """Per-stream logits for images ``x`` through both halves; ``bpda=True``: differentiable
        in ``x`` end to end (JSMA and rpca as the identity)."""
        a = self.wire(x, bpda=bpda)
        if bpda:
            return self.server.attack_logits(a)
        if self.cfg.defense == "pgsl":
            return self.server.net(a, self.server.low_rank(a))
        return self.server.net(a)

    def fused_probs(self, logits: Dict[str, torch.Tensor]) -> torch.Tensor:
        """The decision: the fusion-weighted average of the streams' softmax scores ``(B, K)``."""
        probs = torch.stack([logits[s].softmax(1) for s in self.streams], 1)
        return (probs * self.server.fusion.weights.to(probs.dtype).view(1, -1, 1)).sum(1)


def restore(folder: str, *, device: str = "cpu", epoch: Optional[int] = None) -> TrainedRun:
    """Load a finished ``pgsl train`` folder for evaluation: the weights after ``epoch`` (default:
    its last complete epoch; 0: before the first step, rebuilt from the run's seed exactly as
    training built them). The client's surrogate and attacked images are the run's either way
    (they are fixed before training)."""
    cfg, metrics = load_run(folder)
    cfg.out, cfg.resume, cfg.device, cfg.progress = folder, True, device, False
    last = min(_marker(folder, "client"), _marker(folder, "server"))
    if last < 1:
        raise TrainError(f"--run {folder}: no complete epoch to load")
    epoch = last if epoch is None else epoch
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= last:
        raise TrainError(f"epoch: expected an integer from 0 to {last} (the run's last complete epoch), got {epoch!r}")
    dataset, split_cfg = _build(cfg)
    hub = LocalHub()
    server = _new_server(cfg, split_cfg, hub.link(0))
    # client 1 holds the validation and test images
    client = _new_client(cfg, split_cfg, hub.link(1), 1, {"val": dataset.val, "test": dataset.test})
    if epoch > 0:
        server.load_state(_load_checkpoint(folder, "server", epoch)["server"])
        client.load_state(_load_checkpoint(folder, "client", epoch)["client"])
    if cfg.defense == "pgsl":
        cache_path = os.path.join(folder, "client1_attack.pt")
        if not os.path.exists(cache_path):
            raise TrainError(f"--run {folder}: {cache_path} is missing (the client's surrogate and attacked images)")
        cache = torch.load(cache_path, weights_only=True)
        client.prepare({"surrogate": cache["surrogate"], "attacked": {k: cache["attacked"][k] for k in ("val", "test")}})
    return TrainedRun(folder, cfg, metrics, dataset, client, server).eval()
