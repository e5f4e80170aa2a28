"""Seconds per PGSL training step: the pgsl_ext ops against the same step on the plain-PyTorch
references (pgsl_ext.reference), split into client / rpca / server time.

    PYTHONPATH=.:python python bench/bench_train_step.py [--steps 3] [--rpca-iters 100] [--write bench/RESULTS.md]

One step is what `pgsl train` does per batch: the client's pixel_unshuffle_concat and conv 1-2
(forward), the server's rpca of every activation channel, its three streams (forward, backward,
Adam), and the client's backward and Adam step. MNIST batch 128 from mnist5k, the trainer's
defaults (mu 0.55, the iteration cap below). The client's JSMA is computed once per image and
cached by the trainer (its surrogate is fixed), so it is timed apart: per batch of 128, once.
Correctness first: both providers' rpca agree on the batch (low-rank parts within 1e-3 relative)
before anything is timed. Timings: the median over --steps steps after one warm-up step, the two
providers' steps interleaved.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "python")]

from bench._common import git_commit, machine_summary  # noqa: E402
from bench.results import marked, update_results  # noqa: E402
from pgsl.data import load_mnist5k  # noqa: E402
from pgsl.client import Client  # noqa: E402
from pgsl.config import Config  # noqa: E402
from pgsl.server import Server  # noqa: E402
from pgsl.transport import LocalHub  # noqa: E402

BATCH = 128


def build(ops: str, rpca_iters: int, dataset, images):
    cfg = Config(ops=ops, rpca_iters=rpca_iters, batch_size=BATCH)
    hub = LocalHub()
    server = Server.new(cfg, dataset)
    hub.handlers[0] = server.handle
    client = Client.new(cfg, 1, hub.link(1), dataset, {"train": images})
    return client, server


def step(client: Client, server: Server, index):
    """One training step; returns (client, rpca, server) seconds."""
    server.reset_epoch()
    start = time.perf_counter()
    activations = client.held_activations("train", index)
    client_time = time.perf_counter() - start
    grad = server.train_step(activations.detach(), client.data["train"].split.y[index])[0]
    start = time.perf_counter()
    client.opt.zero_grad()
    activations.backward(grad)
    client.opt.step()
    client_time += time.perf_counter() - start
    return client_time, server.rpca_seconds, server.seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per provider (median)")
    parser.add_argument("--rpca-iters", type=int, default=Config.rpca_iters, help="rpca iteration cap (default: the trainer's)")
    parser.add_argument("--write", type=Path, default=None, help="results file to update (e.g. bench/RESULTS.md)")
    args = parser.parse_args(argv)

    ds = load_mnist5k()
    images = ds.train.subset(torch.arange(BATCH * (args.steps + 1)))
    providers = {}
    for ops in ("ext", "reference"):
        client, server = build(ops, args.rpca_iters, ds, images)
        client.prepare()  # surrogate + JSMA of every image (cached by the trainer)
        start = time.perf_counter()
        client.attack(images.x[:BATCH], images.y[:BATCH])
        providers[ops] = (client, server, time.perf_counter() - start)

    # correctness before timing: the same batch's rpca through both providers
    a = providers["ext"][0].encode("train", torch.arange(BATCH)).detach()
    ext = providers["ext"][1].low_rank(a)
    ref = providers["reference"][1].low_rank(a)
    error = float((ext - ref).norm() / ref.norm().clamp_min(1e-30))
    assert error < 1e-3, f"rpca providers disagree: relative difference {error:.2e}"
    same_attack = torch.equal(providers["ext"][0].data["train"].attacked, providers["reference"][0].data["train"].attacked)

    # Steps alternate between the providers, so that a change in the machine's load during the
    # run falls on both alike (a first version timed one provider after the other, and a load
    # change in between made identical convolutions differ 7x).
    batches = torch.arange(len(images)).split(BATCH)
    times = {ops: [] for ops in providers}
    for i, batch in enumerate(batches[: args.steps + 1]):
        for ops, (client, server, _) in providers.items():
            t = step(client, server, batch)
            if i > 0:  # the first step of each provider is a warm-up
                times[ops].append(t)
    rows = {}
    for ops, (_, _, attack_seconds) in providers.items():
        parts = [statistics.median(t[i] for t in times[ops]) for i in range(3)]
        rows[ops] = (*parts, sum(parts), attack_seconds)
        print(f"{ops}: client {parts[0]:.3f} s, rpca {parts[1]:.3f} s, server {parts[2]:.3f} s, step {sum(parts):.3f} s", flush=True)

    ext, ref = rows["ext"], rows["reference"]
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {machine_summary()}, commit `{git_commit()}`, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads. `PYTHONPATH=.:python python bench/bench_train_step.py --steps {args.steps} "
        f"--rpca-iters {args.rpca_iters}`. MNIST batch {BATCH}, mu 0.55, rpca capped at {args.rpca_iters} iterations; "
        f"median of {args.steps} steps after a warm-up. rpca low-rank parts of the two providers agree to {error:.1e} "
        f"(relative); JSMA results identical: {same_attack}.",
        "",
        "| provider | client (s) | rpca (s) | server streams (s) | step (s) | JSMA, once per batch (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *(f"| {name} | {r[0]:.3f} | {r[1]:.3f} | {r[2]:.3f} | {r[3]:.3f} | {r[4]:.3f} |"
          for name, r in (("pgsl_ext ops", ext), ("pgsl_ext.reference ops", ref))),
        f"| speed-up | {ref[0] / ext[0]:.1f}x | {ref[1] / ext[1]:.1f}x | {ref[2] / ext[2]:.2f}x | **{ref[3] / ext[3]:.1f}x** | {ref[4] / ext[4]:.1f}x |",
        "",
        f"Target: whole step >= 5x: {'met' if ref[3] / ext[3] >= 5 else 'missed'} ({ref[3] / ext[3]:.1f}x). The server "
        "streams are the same PyTorch convolutions in both (ratio ~1); the difference is rpca and the client's "
        "pixel_unshuffle_concat.",
    ]
    section = "## PGSL training step (CPU)\n\n" + "\n".join(lines) + "\n"
    print(section)
    if args.write is not None:
        update_results(args.write, {"train-step": marked("train-step", section)})


if __name__ == "__main__":
    main()
