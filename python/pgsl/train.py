"""``pgsl train``: PGSL (or a baseline) end to end, in one process or across processes.

Read top to bottom: :func:`train` checks the config, prepares the run folder, loads the data,
builds the server and the clients, and walks :func:`pgsl.protocol.schedule`: each client's
training turn (:meth:`pgsl.client.Client.turn`), then client 1 ends the epoch (evaluate,
checkpoint, metrics). :func:`train_rank` runs the same steps as one rank of a
``torch.distributed`` run (rank 0 the server, ranks 1..K the clients); :func:`launch_local`
starts those ranks on this machine.

Sequential split learning with K clients: the training set is split into K seeded IID shards;
client weights (conv 1-2, Adam state, lr schedule) go from client to client, never to the server.
``--resume`` starts after the last epoch both halves completed and ends where an uninterrupted
run with the same seed ends (each half has its own random stream); the run folder is
:mod:`pgsl.rundir`'s.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Sequence

import torch

from . import rundir
from .client import Client, client_splits
from .config import Config
from .errors import RunError
from .protocol import schedule
from .server import Server, serve
from .transport import DistributedLink, LocalHub, init_from_env, role

__all__ = ["launch_local", "train", "train_rank"]


def _checked(cfg: Config):
    """Every option, the data and each client's shard checked before anything is written or
    started; returns the dataset and the shards."""
    cfg.check()
    dataset = cfg.dataset()
    return dataset, [client_splits(dataset, cfg, k) for k in range(1, cfg.clients + 1)]


def train(cfg: Config) -> dict:
    """Run in one process (every client and the server here); returns the metrics dict."""
    dataset, shards = _checked(cfg)
    rundir.prepare(cfg)
    hub = LocalHub()
    server = Server.new(cfg, dataset)
    hub.handlers[0] = server.handle
    clients = [Client.new(cfg, k, hub.link(k), dataset, shards[k - 1]) for k in range(1, cfg.clients + 1)]
    for client in clients:
        client.prepare_attack()
    start = [client.hello() for client in clients][0]
    for step in schedule(cfg.clients, start, cfg.epochs):
        client = clients[step.client - 1]
        client.turn(step.epoch) if step.kind == "turn" else client.end_epoch(step.epoch)
    with open(os.path.join(cfg.out, "metrics.json")) as f:
        return json.load(f)


def train_rank(cfg: Config) -> None:
    """One rank of a distributed run (under torchrun, or started by :func:`launch_local`)."""
    cfg.check()
    backend = "nccl" if cfg.device.startswith("cuda") else "gloo"
    rank, world = init_from_env(timeout=cfg.timeout, backend=backend)
    if world != cfg.clients + 1:
        raise RunError(f"--clients {cfg.clients}: needs a world of {cfg.clients + 1} processes (server + clients), torchrun started {world}")
    if cfg.device.startswith("cuda"):
        cfg.device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank)) % torch.cuda.device_count()}"
    dataset, _ = _checked(cfg)
    if rank == 1 and os.environ.get(PREPARED) != os.path.abspath(cfg.out):
        rundir.prepare(cfg)  # under torchrun; launch_local prepares the folder before it starts the ranks
    else:
        os.makedirs(cfg.out, exist_ok=True)
    link = DistributedLink(timeout=cfg.timeout, device=torch.device(cfg.device))
    try:
        if rank == 0:
            serve(Server.new(cfg, dataset), link, cfg.clients, cfg.epochs)
            return
        client = Client.new(cfg, rank, link, dataset, client_splits(dataset, cfg, rank))
        client.prepare_attack()
        start = client.hello()
        for step in schedule(cfg.clients, start, cfg.epochs):
            if step.client == rank:
                client.turn(step.epoch) if step.kind == "turn" else client.end_epoch(step.epoch)
    finally:
        link.close()


# Set by launch_local for its ranks: the run folder it has prepared and holds locked.
PREPARED = "PGSL_PREPARED_OUT"


def _die_with_parent() -> None:
    """In a rank started by launch_local: be killed when the launcher dies (Linux), so a killed
    launcher leaves no rank behind to collide with a restart."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def exit_status(returncode: int) -> int:
    """A rank's return code as the launcher's exit status: killed by signal N (Popen's -N) is
    128 + N, the shell's convention (not -N, which the OS would report as 256 - N: 247 for
    SIGKILL, 250 for SIGABRT)."""
    return 128 - returncode if returncode < 0 else returncode


def _ended(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"


def launch_local(cfg: Config, argv: Sequence[str]) -> int:
    """``--distributed`` without torchrun: start the server and K clients as local processes
    (gloo over loopback, or NCCL with ``--device cuda``) and wait for them. When one fails, the
    others get ``--timeout`` seconds to notice and exit, then are killed; returns the exit code."""
    _checked(cfg)
    rundir.prepare(cfg)
    world = cfg.clients + 1
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE=str(world))
    env[PREPARED] = os.path.abspath(cfg.out)
    threads = max(1, (os.cpu_count() or 1) // world)
    procs = []
    for rank in range(world):
        # TORCH_CPP_LOG_LEVEL: torch's C++ warnings and errors (a store or pair that lost its peer) come with
        # 20 frames of C++ stack each; the rank's own one-line error says what happened.
        child_env = dict(env, RANK=str(rank), LOCAL_RANK=str(rank), OMP_NUM_THREADS=str(threads))
        child_env.setdefault("TORCH_CPP_LOG_LEVEL", "FATAL")
        procs.append(subprocess.Popen([sys.executable, "-m", "pgsl.cli", *argv], env=child_env, preexec_fn=_die_with_parent))
    failed_at = None
    code = 0
    try:
        while True:
            states = [p.poll() for p in procs]
            bad = [(rank, c) for rank, c in enumerate(states) if c not in (None, 0)]
            if bad and failed_at is None:
                failed_at = time.monotonic()
                code = exit_status(bad[0][1])
                print(f"pgsl: {role(bad[0][0])} {_ended(bad[0][1])}; waiting up to {cfg.timeout:g} s for the others", file=sys.stderr, flush=True)
            if all(c is not None for c in states):
                return code if code else next((exit_status(c) for c in states if c), 0)
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
