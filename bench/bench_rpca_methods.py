"""rpca methods: iterations and time to the same fixed point, per matrix family.

    PYTHONPATH=. python bench/bench_rpca_methods.py [--quick] [--write bench/RESULTS.md]

Providers, side by side in one run, interleaved, best of ``--repeats``:
  * ``alternating``: pgsl_ext.ops.rpca, the default method (FISTA on S with L minimised out,
    gradient restart),
  * ``apg``: pgsl_ext.ops.rpca(method="apg"), the fused APG the op ran before,
  * ``plain APG``: pgsl_ext.reference.rpca(method="apg"), the plain-PyTorch loop.
Families (tests/common_utils.py): PGSL activation maps (conv-ReLU-BN, 3x3, 64 channels, of real
MNIST digits after pixel_unshuffle_concat with a zero perturbation), Gaussian 14 x 14, the tests'
low-rank + sparse 24 x 24, digits upsampled to 64 x 64 and 512 x 512. mu = 0.55, lam default,
tol 1e-7 (floored at 7.6e-6 in float32). Correctness before timing: every provider's L within
the plain APG's own distance to a tight float64 solution (float64 runs, iteration counts are
noise-free). Then: distance to the solution at iteration caps, iterations/time against tol, and
what a warm start saves (a mu sweep; the same maps one "epoch" later, simulated by moving the
client's weights).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import environment  # noqa: E402
from bench.results import marked, update_results  # noqa: E402
from pgsl_ext import ops, reference  # noqa: E402
from tests import common_utils as families  # noqa: E402

MU = 0.55
PROVIDERS = {
    "alternating": lambda x, **kw: ops.rpca(x, mu=MU, **kw),
    "apg": lambda x, **kw: ops.rpca(x, mu=MU, method="apg", **kw),
    "plain APG": lambda x, **kw: reference.rpca(x, mu=MU, method="apg", **kw),
}


def family_inputs(quick: bool):
    n_act = 2 if quick else 16  # x 64 channels
    low, sparse = families.low_rank_plus_sparse(16 if quick else 64, 24, 24, 2, 0.05, seed=3)
    inputs = {
        "activations 14x14": families.activation_maps(n_act),
        "gaussian 14x14": families.gaussian(32 if quick else 256, 14, 14),
        "low-rank+sparse 24x24": low + sparse,
        "digits 64x64": families.digit_images(2 if quick else 16, 64),
    }
    if not quick:  # the batched loop with LAPACK SVDs: minutes per provider on 2 cores
        inputs["digits 512x512"] = families.digit_images(1, 512)
    return inputs


def distance(low, tight, x):
    """||L - L*|| / ||L*|| (/ ||X|| where L* = 0: some activation maps are all sparse)."""
    ref = tight.norm(dim=(-2, -1))
    return (low.double() - tight).norm(dim=(-2, -1)) / torch.where(ref > 0, ref, x.double().norm(dim=(-2, -1)))


def best_time(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def bench_families(inputs, repeats, quick):
    rows = []
    for name, x64 in inputs.items():
        big = x64.shape[-1] > 64
        tight = reference.rpca(x64, mu=MU, tol=1e-13, max_iter=20000).low_rank
        # Correctness and noise-free iteration counts in float64.
        stats = {}
        for provider, fn in PROVIDERS.items():
            if big and provider == "plain APG":
                continue
            r = fn(x64, tol=1e-7, max_iter=20000)
            stats[provider] = (r.iterations.double(), distance(r.low_rank, tight, x64))
        plain = stats.get("plain APG", stats["apg"])[1]
        for provider, (_, d) in stats.items():
            assert d.max() <= 2 * plain.max() + 1e-9, (name, provider, d.max().item(), plain.max().item())
        # Time in float32 (the trainer's dtype), interleaved.
        x32 = x64.float()
        times, iters32 = {p: float("inf") for p in stats}, {}
        for _ in range(1 if big else repeats):
            for provider in stats:
                t, r = best_time(lambda: PROVIDERS[provider](x32, max_iter=20000), 1)
                times[provider] = min(times[provider], t)
                iters32[provider] = r.iterations.double()
        for provider in stats:
            it64, d = stats[provider]
            rows.append(
                dict(family=name, batch=x64.shape[0], provider=provider, it64_mean=it64.mean().item(),
                     it64_max=it64.max().item(), it32_mean=iters32[provider].mean().item(),
                     dist=d.max().item(), time=times[provider])
            )
        print(name, [(r["provider"], round(r["it64_mean"]), round(r["time"], 3)) for r in rows[-len(stats):]], flush=True)
    return rows


def bench_caps(x64, caps=(10, 20, 50, 100)):
    """Median / worst distance of L to the converged solution at each iteration cap."""
    tight = reference.rpca(x64, mu=MU, tol=1e-13, max_iter=20000).low_rank
    out = []
    for cap in caps:
        row = [cap]
        for method in ("alternating", "apg"):
            d = distance(ops.rpca(x64.float(), mu=MU, max_iter=cap, method=method).low_rank, tight, x64)
            row += [d.median().item(), d.max().item()]
        out.append(row)
    return out


def bench_tol(x64, repeats):
    x32 = x64.float()
    tight = reference.rpca(x64, mu=MU, tol=1e-13, max_iter=20000).low_rank
    out = []
    for tol in (1e-3, 1e-4, 1e-5, 1e-7):
        row = [tol]
        for method in ("alternating", "apg"):
            t, r = best_time(lambda: ops.rpca(x32, mu=MU, tol=tol, max_iter=20000, method=method), repeats)
            row += [r.iterations.double().mean().item(), t, distance(r.low_rank, tight, x64).median().item()]
        out.append(row)
    return out


def bench_warm(quick, repeats):
    """A mu sweep (each mu warm-started from the previous one's S) and a simulated epoch 2."""
    x = families.activation_maps(2 if quick else 16).float()
    sweep = (0.3, 0.4, 0.55, 0.7, 0.9)
    cold_it = warm_it = 0.0
    cold_t = warm_t = 0.0
    previous = None
    for mu in sweep:
        t, cold = best_time(lambda: ops.rpca(x, mu=mu), repeats)
        cold_it, cold_t = cold_it + cold.iterations.double().mean().item(), cold_t + t
        init = None if previous is None else previous.sparse
        t, warm = best_time(lambda: ops.rpca(x, mu=mu, init=init), repeats)
        warm_it, warm_t = warm_it + warm.iterations.double().mean().item(), warm_t + t
        previous = warm
    # Epoch 2: the same digits through a client whose conv weights moved by 2% (relative, random).
    x1 = families.activation_maps(2 if quick else 16, seed=0)
    x2 = families.activation_maps(2 if quick else 16, seed=0, weight_noise=0.02)
    first = ops.rpca(x1.float(), mu=MU)
    t_cold, cold = best_time(lambda: ops.rpca(x2.float(), mu=MU), repeats)
    t_warm, warm = best_time(lambda: ops.rpca(x2.float(), mu=MU, init=first.sparse), repeats)
    return dict(sweep=sweep, cold_it=cold_it, warm_it=warm_it, cold_t=cold_t, warm_t=warm_t,
                e2_cold_it=cold.iterations.double().mean().item(), e2_warm_it=warm.iterations.double().mean().item(),
                e2_cold_t=t_cold, e2_warm_t=t_warm)


def bench_trained_epochs(folder: Path, repeats: int, images: int = 128) -> dict:
    """A real epoch 2: the activation maps a trained run's client sends for the same test images
    after epoch 1 and after epoch 2 (batch statistics, as in training); epoch 2 solved cold and
    warm-started from epoch 1's S."""
    import copy

    from pgsl.runs import restore

    run = restore(str(folder))
    if run.cfg.defense != "pgsl":
        raise SystemExit(f"--run {folder}: expected a --defense pgsl run, got --defense {run.cfg.defense}")
    second = run.client.net
    first = copy.deepcopy(second)
    first.load_state_dict(torch.load(folder / "client_epoch1.pt", weights_only=True)["client"]["net"])
    index = torch.arange(min(images, len(run.dataset.test)))
    with torch.no_grad():
        x1, x2 = (net.train()(run.client.inputs("test", index)) for net in (first, second))
    start = ops.rpca(x1, mu=run.cfg.mu)
    t_cold, cold = best_time(lambda: ops.rpca(x2, mu=run.cfg.mu), repeats)
    t_warm, warm = best_time(lambda: ops.rpca(x2, mu=run.cfg.mu, init=start.sparse), repeats)
    return dict(folder=str(folder), maps=x2.shape[0] * x2.shape[1], cold_it=cold.iterations.double().mean().item(),
                warm_it=warm.iterations.double().mean().item(), cold_t=t_cold, warm_t=t_warm,
                converged=(cold.converged.double().mean().item(), warm.converged.double().mean().item()),
                apart=((warm.low_rank - cold.low_rank).norm(dim=(-2, -1)) / x2.norm(dim=(-2, -1)).clamp_min(1e-30)).max().item())


def render(rows, caps, tols, warm, env) -> str:
    out = ["## rpca methods", "",
           f"{datetime.date.today()}, {env['cpu_model']} ({env['cpu_count']} logical CPUs, 1-minute load average "
           f"{os.getloadavg()[0]:.1f} at the end: timings depend on it, iteration counts do not), torch {env['torch']}, "
           f"{env['torch_threads']} threads, commit `{env['git_commit']}`. "
           "`PYTHONPATH=. python bench/bench_rpca_methods.py --write bench/RESULTS.md`.", "",
           "### Iterations and time to tol 1e-7, mu 0.55", "",
           "Iterations: mean per matrix (float64 to tol 1e-7 / float32 to its floor 7.6e-6). Time: float32, "
           "whole batch, best of the repeats. dist: worst relative distance of L (float64 run) to a "
           "tol-1e-13 float64 solution.", "",
           "| family | batch | provider | iterations f64 (mean / max) | iterations f32 | time f32 | x fewer iterations than apg (f64 / f32) | x faster than apg | x faster than plain APG | dist |",
           "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        apg = next(a for a in rows if a["family"] == r["family"] and a["provider"] == "apg")
        plain = next((a for a in rows if a["family"] == r["family"] and a["provider"] == "plain APG"), None)
        vs_plain = f"{plain['time'] / r['time']:.1f}x" if plain else "-"
        out.append(
            f"| {r['family']} | {r['batch']} | {r['provider']} | {r['it64_mean']:.0f} / {r['it64_max']:.0f} | "
            f"{r['it32_mean']:.0f} | {r['time'] * 1e3:.0f} ms | {apg['it64_mean'] / r['it64_mean']:.1f}x / "
            f"{apg['it32_mean'] / r['it32_mean']:.1f}x | {apg['time'] / r['time']:.1f}x | {vs_plain} | {r['dist']:.1e} |"
        )
    out += ["", "### Activation maps: distance of L to the converged solution at an iteration cap (float32)", "",
            "| cap | alternating median | alternating worst | apg median | apg worst |", "| ---: | ---: | ---: | ---: | ---: |"]
    out += [f"| {c} | {a:.1e} | {b:.1e} | {p:.1e} | {q:.1e} |" for c, a, b, p, q in caps]
    out += ["", "### Activation maps: iterations and time against tol (float32; 1e-7 runs at the 7.6e-6 floor)", "",
            "| tol | alternating iterations | alternating time | alternating L dist (median) | apg iterations | apg time | apg L dist (median) |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    out += [f"| {t:g} | {ai:.0f} | {at * 1e3:.0f} ms | {ad:.1e} | {pi:.0f} | {pt * 1e3:.0f} ms | {pd:.1e} |"
            for t, ai, at, ad, pi, pt, pd in tols]
    w = warm
    out += ["", "### Warm start (alternating, activation maps, float32)", "",
            "| case | cold iterations | warm iterations | cold time | warm time |", "| --- | ---: | ---: | ---: | ---: |",
            f"| mu sweep {', '.join(map(str, w['sweep']))} (sum of means; each mu from the previous S) | "
            f"{w['cold_it']:.0f} | {w['warm_it']:.0f} | {w['cold_t'] * 1e3:.0f} ms | {w['warm_t'] * 1e3:.0f} ms |",
            f"| simulated epoch 2 (client conv weights moved 2%, init = epoch-1 S) | {w['e2_cold_it']:.0f} | "
            f"{w['e2_warm_it']:.0f} | {w['e2_cold_t'] * 1e3:.0f} ms | {w['e2_warm_t'] * 1e3:.0f} ms |", ""]
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller batches, no 512 x 512 family")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write", type=Path, default=None, help="results file to update (e.g. bench/RESULTS.md)")
    parser.add_argument("--trained-run", type=Path, default=None, metavar="DIR",
                        help="only the warm start of a real epoch 2, from a `pgsl train` run folder with two epochs")
    args = parser.parse_args(argv)
    if args.trained_run is not None:
        t, env = bench_trained_epochs(args.trained_run, args.repeats), environment()
        section = "\n".join([
            "## rpca warm start in a trained run's epoch 2", "",
            f"{datetime.date.today()}, {env['cpu_model']} ({env['cpu_count']} logical CPUs), torch {env['torch']}, "
            f"commit `{env['git_commit']}`. `PYTHONPATH=.:python python bench/bench_rpca_methods.py --trained-run RUN "
            "--write bench/RESULTS.md`: the maps the client sends for the same 128 test images after epoch 1 and "
            "after epoch 2 (batch statistics, as in training), epoch 2 solved cold and from epoch 1's S "
            f"(mu 0.55, float32, best of {args.repeats}).", "",
            "| maps | cold iterations (mean) | warm iterations (mean) | cold time | warm time | converged cold / warm | max L distance warm vs cold |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            f"| {t['maps']} | {t['cold_it']:.1f} | {t['warm_it']:.1f} | {t['cold_t'] * 1e3:.0f} ms | {t['warm_t'] * 1e3:.0f} ms | "
            f"{t['converged'][0]:.3f} / {t['converged'][1]:.3f} | {t['apart']:.1e} |", ""])
        print(section)
        if args.write:
            update_results(args.write, {"rpca-trained-epoch2": marked("rpca-trained-epoch2", section)})
        return
    inputs = family_inputs(args.quick)
    rows = bench_families(inputs, args.repeats, args.quick)
    caps = bench_caps(inputs["activations 14x14"])
    tols = bench_tol(inputs["activations 14x14"], args.repeats)
    warm = bench_warm(args.quick, args.repeats)
    section = render(rows, caps, tols, warm, environment())
    print(section)
    if args.write:
        update_results(args.write, {"rpca-methods": marked("rpca-methods", section)})


if __name__ == "__main__":
    main()
