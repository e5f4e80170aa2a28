"""The bandwidth-bound ops (soft_threshold, pixel_unshuffle_concat): run their suite
(``bench/test_bench_soft_threshold.py``, ``bench/test_bench_pixel_unshuffle_concat.py``) and
turn the pytest-benchmark JSON into one Markdown section per device (targets, every provider,
GB/s and % of the copy ceilings) and a speed-up plot. Called by ``python -m bench.table``.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from bench._common import COPY_PROVIDERS, REPO_ROOT, SHAPES, gbps, shape_id
from bench.results import DEFAULT_RESULTS, update_results

BENCH_DIR = REPO_ROOT / "bench"
DEFAULT_JSON = BENCH_DIR / ".results" / "benchmark.json"  # git-ignored

# Sized so that the whole suite (30 CPU cases) takes about a minute on 2 idle cores: each case
# runs >= MIN_ROUNDS rounds and about MAX_TIME seconds, after a short warm-up.
MIN_ROUNDS = 10
MAX_TIME = 0.3
WARMUP_ITERATIONS = 20

OPS = ("soft_threshold", "pixel_unshuffle_concat")
BANDWIDTH_FILES = ("bench/test_bench_soft_threshold.py", "bench/test_bench_pixel_unshuffle_concat.py")
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


# --------------------------------------------------------------------------- running


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
        sys.exit(f"bench.bandwidth: pytest exited with {rc}; {DEFAULT_RESULTS.name} left unchanged")


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


def tabulate(json_path: Path, results: Path, source: str, write: bool = True) -> int:
    """Prints the section of every device in ``json_path`` and, with ``write``, puts them and
    their plots (``results_<key>.png`` beside ``results``) into ``results``."""
    rows, env, run = load(json_path)
    if not rows:
        print("bench.bandwidth: no benchmarks in", json_path, file=sys.stderr)
        return 1
    add_ratios(rows)
    devices = [d for d in DEVICE_TITLES if any(r["device"] == d for r in rows)]
    sections = {}
    plots = []
    for device in devices:
        key = section_key(device, env)
        plot = None
        if write:
            plot = plot_speedups(rows, device, results.parent / f"results_{key.replace('-', '_')}.png")
            plots.append(plot)
        sections[key] = section(key, device, rows, env, run, source, plot)
        print(sections[key])
    if write:
        update_results(results, sections)
        print(f"bench.bandwidth: wrote {results}" + "".join(f", {p}" for p in plots))
    return 0
