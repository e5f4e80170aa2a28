"""Run the benchmark suite and write its Markdown table, target checks and speed-up plot.

    python -m bench.table                    # run bench/ (CPU; CUDA too where a GPU exists),
                                             # print the table, update bench/RESULTS.md and
                                             # write bench/results_<device>.png
    python -m bench.table --json run.json    # tabulate an existing --benchmark-json file
    python -m bench.table --threads 1        # the CPU cases on one intra-op thread
    python -m bench.table --wait-idle 600    # first wait (<= 600 s) for nothing else to run
    python -m bench.table --quick            # a few minutes: the bandwidth suite and one PGSL
                                             # training step per provider (svt/jsma sections kept)
    python -m bench.table -- -k soft         # arguments after -- go to pytest

RESULTS.md holds one section per device; a run replaces the sections of the devices it
measured and keeps the others (so CUDA results from a GPU machine survive a CPU-only rerun).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from bench._common import COPY_PROVIDERS, REPO_ROOT, SHAPES, gbps, shape_id

BENCH_DIR = REPO_ROOT / "bench"
DEFAULT_JSON = BENCH_DIR / ".results" / "benchmark.json"  # git-ignored
DEFAULT_RESULTS = BENCH_DIR / "RESULTS.md"

# Sized so that the whole suite (30 CPU cases) takes about a minute on 2 idle cores: each case
# runs >= MIN_ROUNDS rounds and about MAX_TIME seconds, after a short warm-up.
MIN_ROUNDS = 10
MAX_TIME = 0.3
WARMUP_ITERATIONS = 20

OPS = ("soft_threshold", "pixel_unshuffle_concat")
# The bandwidth-bound ops tabulated here; svt / rpca (bench/compute_table.py) and JSMA
# (bench/bench_jsma.py) have tables of their own, written into the same results file.
BANDWIDTH_FILES = ("bench/test_bench_soft_threshold.py", "bench/test_bench_pixel_unshuffle_concat.py")
SUITES = ("bandwidth", "svt", "jsma", "train")
PROVIDER_ORDER = {
    "soft_threshold": ("pgsl_ext", "torch_composition", "F.softshrink", *COPY_PROVIDERS),
    "pixel_unshuffle_concat": ("pgsl_ext", "reference", "torch_two_pass", *COPY_PROVIDERS),
}
DEVICE_TITLES = {"cpu": "CPU", "cuda": "CUDA"}

# The targets the ops were written to: (device, op, what, kind, baseline, threshold).
#   kind "speedup":   baseline time / pgsl_ext time >= threshold
#   kind "bandwidth": pgsl_ext GB/s / baseline GB/s >= threshold
TARGETS: Tuple[Tuple[str, str, str, str, str, float], ...] = (
    ("cpu", "soft_threshold", ">= 3x torch_composition", "speedup", "torch_composition", 3.0),
    ("cpu", "soft_threshold", "no slower than F.softshrink", "speedup", "F.softshrink", 1.0),
    ("cpu", "pixel_unshuffle_concat", ">= 1.5x torch_two_pass", "speedup", "torch_two_pass", 1.5),
    ("cuda", "soft_threshold", ">= 80% of copy bandwidth", "bandwidth", "copy", 0.8),
    ("cuda", "pixel_unshuffle_concat", ">= 80% of copy bandwidth", "bandwidth", "copy", 0.8),
)

SECTION_RE = r"<!-- bench:{0} -->\n.*?<!-- /bench:{0} -->\n"
SECTION_ORDER = ("cpu", "cpu-threads1", "cuda")
PREAMBLE = """# Benchmark results

Written by `python -m bench.table` (the suite in `bench/`, pytest-benchmark); do not edit by
hand. Each device (and CPU thread count) has its own section: a run replaces the sections it
measured and keeps the others.

How to read the tables:

- **median**: median over rounds of the wall time of one call (a round times a loop of calls
  when one call is too short to time alone; on CUDA every round is a loop of >= 1 ms with
  `torch.cuda.synchronize()` at both ends, so the sync is spread over the loop).
- **(min)**: the fastest round, for reference only; everything else is computed from the median.
- **GB/s**: bytes read + bytes written (each element once) / median time.
- **output**: `new` = the provider allocates its output on every call. Both ops do (they return
  a new tensor), as do the torch alternatives. `copy` is the one provider writing into a tensor
  allocated beforehand: `dst.copy_(src)` with `src`/`dst` the byte size of the op's output.
  `alloc_copy` is `src.clone()`, the same copy into a fresh tensor, i.e. the ceiling for an op
  that allocates its output. On the CPU a fresh tensor of >= 32 MiB costs a page fault per 4 KiB
  (glibc serves blocks that large with a new mmap and unmaps them on free), which is most of
  the cost on the 8x1x1024x1024 shape; on CUDA the caching allocator hides the allocation.
- **speed-up**: provider time / pgsl_ext time, i.e. how many times faster pgsl_ext is than the
  provider (< 1: pgsl_ext is slower).
- **% copy BW**, **% alloc_copy BW**: the provider's GB/s as a fraction of what `copy` /
  `alloc_copy` reach on the same shape and device.
"""


# --------------------------------------------------------------------------- running


def _cpu_idle_fraction(seconds: float) -> float:
    def snapshot():
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    total0, idle0 = snapshot()
    time.sleep(seconds)
    total1, idle1 = snapshot()
    return (idle1 - idle0) / max(1, total1 - total0)


def wait_for_idle_cpu(timeout: float, threshold: float = 0.95, quiet_seconds: int = 5) -> bool:
    """Waits (up to ``timeout`` s) until the CPUs have been idle for ``quiet_seconds`` in a row.

    On a machine shared with builds and tests, multi-threaded timings are worthless while
    anything else runs (an OpenMP barrier waits a whole scheduler slice for a preempted thread).
    """
    if not os.path.exists("/proc/stat"):
        return True
    deadline = time.monotonic() + timeout
    streak = 0
    while time.monotonic() < deadline:
        idle = _cpu_idle_fraction(1.0)
        streak = streak + 1 if idle >= threshold else 0
        if streak >= quiet_seconds:
            return True
        print(f"bench.table: waiting for an idle CPU (idle {100 * idle:.0f}% over the last second)", flush=True)
    return False


def run_suite(json_path: Path, threads: Optional[int], pytest_args: Sequence[str]) -> None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "pytest", *BANDWIDTH_FILES, "-q", "-p", "no:cacheprovider",
        f"--benchmark-json={json_path}",
        f"--benchmark-min-rounds={MIN_ROUNDS}",
        f"--benchmark-max-time={MAX_TIME}",
        "--benchmark-warmup=on",
        f"--benchmark-warmup-iterations={WARMUP_ITERATIONS}",
        "--benchmark-group-by=group",
        "--benchmark-sort=name",
        "--benchmark-columns=median,iqr,rounds,iterations",
        *pytest_args,
    ]
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    print("+", shlex.join(cmd), flush=True)
    rc = subprocess.run(cmd, cwd=REPO_ROOT, env=env).returncode
    if rc != 0:
        # A correctness assertion (or any error) fails the run: no numbers are published from it.
        sys.exit(f"bench.table: pytest exited with {rc}; {DEFAULT_RESULTS.name} left unchanged")


# --------------------------------------------------------------------------- tabulating


def load(json_path: Path) -> Tuple[List[dict], dict, dict]:
    """Rows (one per benchmark), the environment recorded by bench/conftest.py, run info."""
    data = json.loads(json_path.read_text())
    rows = []
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        median = bench["stats"]["median"]
        rows.append(
            dict(
                op=info["op"],
                shape=info["shape"],
                device=info["device"],
                provider=info["provider"],
                median=median,
                min=bench["stats"]["min"],
                iqr=bench["stats"]["iqr"],
                rounds=bench["stats"]["rounds"],
                bytes=info["bytes"],
                gbps=gbps(info["bytes"], median),
                allocates=info["allocates_output"],
                threads=info.get("threads"),
                options=bench.get("options", {}),
            )
        )
    env = data.get("machine_info", {}).get("pgsl_bench", {})
    run = dict(datetime=data.get("datetime"), version=data.get("version"))
    return rows, env, run


def add_ratios(rows: List[dict]) -> None:
    """Adds speed-up (provider time / pgsl_ext time) and fractions of the copy ceilings."""
    groups: Dict[Tuple[str, str, str], Dict[str, dict]] = defaultdict(dict)
    for r in rows:
        groups[(r["op"], r["shape"], r["device"])][r["provider"]] = r
    for r in rows:
        g = groups[(r["op"], r["shape"], r["device"])]
        pgsl, copy, alloc = g.get("pgsl_ext"), g.get("copy"), g.get("alloc_copy")
        r["speedup"] = r["median"] / pgsl["median"] if pgsl else math.nan
        r["of_copy"] = r["gbps"] / copy["gbps"] if copy else math.nan
        r["of_alloc_copy"] = r["gbps"] / alloc["gbps"] if alloc else math.nan


def _sort_key(r: dict):
    shapes = [shape_id(s) for s in SHAPES]
    order = PROVIDER_ORDER.get(r["op"], ())
    return (
        OPS.index(r["op"]) if r["op"] in OPS else len(OPS),
        shapes.index(r["shape"]) if r["shape"] in shapes else len(shapes),
        order.index(r["provider"]) if r["provider"] in order else len(order),
        r["provider"],
    )


def check_targets(rows: List[dict], device: str) -> List[dict]:
    by_key = {(r["op"], r["shape"], r["provider"]): r for r in rows if r["device"] == device}
    shapes = sorted({r["shape"] for r in rows if r["device"] == device}, key=lambda s: _sort_key(
        dict(op=OPS[0], shape=s, provider="")))
    results = []
    for dev, op, what, kind, baseline, threshold in TARGETS:
        if dev != device:
            continue
        for shape in shapes:
            pgsl, base = by_key.get((op, shape, "pgsl_ext")), by_key.get((op, shape, baseline))
            if pgsl is None or base is None:
                continue
            if kind == "speedup":
                value = base["median"] / pgsl["median"]
                shown = f"{value:.2f}x"
            else:
                value = pgsl["gbps"] / base["gbps"]
                shown = f"{100 * value:.0f}% ({pgsl['gbps']:.3g} of {base['gbps']:.3g} GB/s)"
            met = value >= threshold
            if met:
                status = "met"
            elif kind == "speedup":
                # How much faster pgsl_ext would have to get to meet it.
                status = f"**missed** by {100 * (1 - value / threshold):.0f}% (needs {threshold / value:.2f}x faster)"
            else:
                status = f"**missed** by {100 * (threshold - value):.0f} points"
            results.append(dict(op=op, what=what, shape=shape, shown=shown, met=met, status=status))
    return results


def _fmt_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3f} ms"
    return f"{seconds:.3f} s"


def _fmt_pct(x: float) -> str:
    return "–" if math.isnan(x) else f"{100 * x:.0f}%"


def markdown_table(rows: List[dict]) -> str:
    lines = [
        "| op | shape | provider | output | median | (min) | GB/s | speed-up of pgsl_ext (provider time / pgsl_ext time) "
        "| % copy BW | % alloc_copy BW |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in sorted(rows, key=_sort_key):
        provider = f"**{r['provider']}**" if r["provider"] == "pgsl_ext" else r["provider"]
        speedup = "–" if math.isnan(r["speedup"]) else f"{r['speedup']:.2f}x"
        lines.append(
            f"| {r['op']} | {r['shape']} | {provider} | {'new' if r['allocates'] else 'pre-allocated'} "
            f"| {_fmt_time(r['median'])} | {_fmt_time(r['min'])} | {r['gbps']:.1f} | {speedup} | {_fmt_pct(r['of_copy'])} "
            f"| {_fmt_pct(r['of_alloc_copy'])} |"
        )
    return "\n".join(lines)


def markdown_targets(targets: List[dict]) -> str:
    if not targets:
        return "_No targets for this device._"
    met = sum(t["met"] for t in targets)
    lines = [
        f"Targets met: **{met} / {len(targets)}** (per shape).",
        "",
        "| op | target | shape | measured | status |",
        "| --- | --- | --- | ---: | --- |",
    ]
    for t in targets:
        lines.append(f"| {t['op']} | {t['what']} | {t['shape']} | {t['shown']} | {t['status']} |")
    return "\n".join(lines)


def markdown_header(device: str, rows: List[dict], env: dict, run: dict, source: str) -> str:
    build = env.get("pgsl_ext_build") or {}
    threads = sorted({r["threads"] for r in rows if r["threads"] is not None})
    options = rows[0]["options"] if rows else {}
    loadavg = env.get("loadavg")
    availability = env.get("cpu_availability")
    lines = [
        f"- date: {run.get('datetime') or 'unknown'} (UTC)",
        f"- machine: {env.get('cpu_model', 'unknown CPU')}, {env.get('cpu_count', '?')} cores; "
        f"GPU: {env.get('gpu') or 'none'}",
        f"- torch {env.get('torch', '?')} (CUDA {env.get('torch_cuda') or 'none'}), python {env.get('python', '?')}; "
        f"pgsl_ext build: CUDA kernels {'yes' if build.get('cuda') else 'no'}, "
        f"OpenMP {'yes' if build.get('openmp') else 'no'}",
        f"- commit: `{env.get('git_commit', 'unknown')}`",
    ]
    if device == "cpu":
        lines.append(f"- CPU threads (torch intra-op, also used by pgsl_ext): {', '.join(map(str, threads)) or '?'}")
    if loadavg and device == "cpu":
        lines.append(f"- load average before the run: {' '.join(f'{x:.2f}' for x in loadavg)}")
    if availability is not None and device == "cpu":
        after = env.get("cpu_availability_after", availability)
        note = ""
        if min(availability, after) < 0.9:
            note = (
                " — **the cores were not all there at once** (other work on this machine, or an "
                "over-committed VM): multi-threaded CPU timings include waits for a descheduled "
                "thread and are noisy"
            )
        lines.append(
            f"- CPU availability with every core busy (share of wall time each core ran): "
            f"{100 * availability:.0f}% before the run, {100 * after:.0f}% after{note}"
        )
    lines.append(
        f"- pytest-benchmark {run.get('version', '?')}: min_rounds {options.get('min_rounds', '?')}, "
        f"max_time {options.get('max_time', '?')} s, warm-up {options.get('warmup', '?')}, timer "
        f"{options.get('timer', '?')}; {source}"
    )
    return "\n".join(lines)


def section_key(device: str, env: dict) -> str:
    """``cpu`` for a run on torch's default thread count; ``cpu-threads1`` for one run with
    OMP_NUM_THREADS=1 (what ``--threads 1`` sets)."""
    threads = env.get("omp_num_threads")
    return device if not threads or device != "cpu" else f"{device}-threads{threads}"


def section(key: str, device: str, rows: List[dict], env: dict, run: dict, source: str, plot: Optional[Path]) -> str:
    dev_rows = [r for r in rows if r["device"] == device]
    title = DEVICE_TITLES.get(device, device)
    if key != device:
        threads = key.rsplit("threads", 1)[-1]
        title += f", {threads} thread{'s' if threads != '1' else ''} (--threads {threads})"
    parts = [
        f"<!-- bench:{key} -->",
        f"## {title}",
        "",
        markdown_header(device, dev_rows, env, run, source),
        "",
        "### Targets",
        "",
        markdown_targets(check_targets(rows, device)),
        "",
        "### All providers",
        "",
        markdown_table(dev_rows),
        "",
    ]
    if plot is not None:
        parts += [f"![speed-ups on {device}]({plot.name})", ""]
    parts.append(f"<!-- /bench:{key} -->")
    return "\n".join(parts) + "\n"


def update_results(path: Path, sections: Dict[str, str]) -> None:
    """Rewrites ``path``: the preamble, then one section per device (and thread count), keeping
    the old sections this run did not replace."""
    old = path.read_text() if path.exists() else ""
    kept = {}
    for key in re.findall(r"<!-- bench:([\w-]+) -->", old):
        match = re.search(SECTION_RE.format(re.escape(key)), old, flags=re.S)
        if match and key not in sections:
            kept[key] = match.group(0)
    merged = {**kept, **sections}
    order = sorted(merged, key=lambda k: (SECTION_ORDER.index(k) if k in SECTION_ORDER else 99, k))
    path.write_text(PREAMBLE + "".join("\n" + merged[d] for d in order))


# --------------------------------------------------------------------------- plotting


def plot_speedups(rows: List[dict], device: str, path: Path) -> Path:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dev_rows = [r for r in rows if r["device"] == device]
    ops = [op for op in OPS if any(r["op"] == op for r in dev_rows)]
    fig, axes = plt.subplots(1, len(ops), figsize=(6.5 * len(ops), 5.0), squeeze=False)
    for ax, op in zip(axes[0], ops):
        op_rows = [r for r in dev_rows if r["op"] == op]
        shapes = [s for s in map(shape_id, SHAPES) if any(r["shape"] == s for r in op_rows)]
        providers = [p for p in PROVIDER_ORDER[op] if p != "pgsl_ext" and any(r["provider"] == p for r in op_rows)]
        width = 0.8 / max(1, len(providers))
        for k, provider in enumerate(providers):
            values = []
            for s in shapes:
                match = [r["speedup"] for r in op_rows if r["shape"] == s and r["provider"] == provider]
                values.append(match[0] if match else math.nan)
            xs = [i + (k - (len(providers) - 1) / 2) * width for i in range(len(shapes))]
            bars = ax.bar(xs, values, width, label=provider)
            ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=7, padding=1)
        for dev, t_op, what, kind, baseline, threshold in TARGETS:
            if dev == device and t_op == op and kind == "speedup":
                ax.axhline(threshold, color="grey", ls=":", lw=1)
                ax.annotate(f"target vs {baseline}: {threshold:g}x", (-0.45, threshold),
                            ha="left", va="bottom", fontsize=7, color="grey")
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xticks(range(len(shapes)), shapes)
        ax.set_title(f"{op} ({device})")
        ax.set_ylabel("speed-up of pgsl_ext (provider time / pgsl_ext time)")
        ax.legend(fontsize=8, ncol=len(providers), loc="upper center", bbox_to_anchor=(0.5, -0.08), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- main


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = shlex.join(["python", "-m", "bench.table", *argv])
    pytest_args: List[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, pytest_args = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(prog="python -m bench.table", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="tabulate this pytest-benchmark JSON instead of running the suite")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for the run (default: torch's default)")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS,
                        help=f"the Markdown file to update (default: {DEFAULT_RESULTS.relative_to(REPO_ROOT)}); "
                             "plots are written next to it")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    parser.add_argument("--suite", choices=SUITES, action="append",
                        help="run only this part (repeatable; default: all of them)")
    parser.add_argument("--quick", action="store_true",
                        help="only the bandwidth suite and a one-step PGSL training benchmark (minutes, not ~25); "
                             "the svt and jsma sections of the results file are kept")
    parser.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                        help="first wait up to SECONDS for the CPUs to be idle for 5 s (shared machines)")
    args = parser.parse_args(argv)

    suites = args.suite or (["bandwidth", "train"] if args.quick else list(SUITES))
    if args.json is None:
        json_path = DEFAULT_JSON
        if args.wait_idle > 0 and not wait_for_idle_cpu(args.wait_idle):
            print(f"bench.table: the CPUs were not idle within {args.wait_idle:g} s; running anyway", flush=True)
        if "svt" in suites:
            from bench import compute_table

            compute_table.run(compute_table.DEFAULT_JSON)
            if not args.no_write:
                update_results(args.results, compute_table.sections(compute_table.DEFAULT_JSON))
        if "jsma" in suites:
            cmd = [sys.executable, "bench/bench_jsma.py", *([] if args.no_write else ["--write", str(args.results)])]
            print("+", shlex.join(cmd), flush=True)
            if subprocess.run(cmd, cwd=REPO_ROOT).returncode != 0:
                sys.exit("bench.table: bench/bench_jsma.py failed; its section left unchanged")
        if "train" in suites:
            cmd = [sys.executable, "bench/bench_train_step.py", *(["--steps", "1"] if args.quick else []),
                   *([] if args.no_write else ["--write", str(args.results)])]
            print("+", shlex.join(cmd), flush=True)
            if subprocess.run(cmd, cwd=REPO_ROOT).returncode != 0:
                sys.exit("bench.table: bench/bench_train_step.py failed; its section left unchanged")
        if "bandwidth" not in suites:
            return 0
        run_suite(json_path, args.threads, pytest_args)
        source = f"written by `{command}`"
    else:
        json_path = args.json
        source = f"tabulated by `{command}`"

    rows, env, run = load(json_path)
    if not rows:
        print("bench.table: no benchmarks in", json_path, file=sys.stderr)
        return 1
    add_ratios(rows)
    devices = [d for d in DEVICE_TITLES if any(r["device"] == d for r in rows)]
    sections = {}
    plots = []
    for device in devices:
        key = section_key(device, env)
        plot = None
        if not args.no_write:
            plot = plot_speedups(rows, device, args.results.parent / f"results_{key.replace('-', '_')}.png")
            plots.append(plot)
        sections[key] = section(key, device, rows, env, run, source, plot)
        print(sections[key])
    if not args.no_write:
        update_results(args.results, sections)
        print(f"bench.table: wrote {args.results}" + "".join(f", {p}" for p in plots))
    return 0


if __name__ == "__main__":
    sys.exit(main())
