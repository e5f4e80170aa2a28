"""The svt / rpca part of the benchmark table (bench/test_bench_svt_rpca.py): speed-ups, accuracy
and the share of the FLOP floor, per device. Called by ``python -m bench.table``; also

    python -m bench.svt_rpca [--json run.json]   # run (or re-tabulate) this part alone
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from bench._common import REPO_ROOT, environment
from bench.results import DEFAULT_RESULTS, update_results

BENCH_FILE = "bench/test_bench_svt_rpca.py"
DEFAULT_JSON = REPO_ROOT / "bench" / ".results" / "svt.json"
BASELINE = {"svt": "torch.linalg.svd", "rpca": "plain-PyTorch APG"}
# (device, op, case, provider, target speed-up of pgsl_ext over the provider)
TARGETS = (
    ("cpu", "svt", "8192x14x14", "pgsl_ext", "torch.linalg.svd", 10.0),
    ("cpu", "rpca", "PGSL step 128x64x14x14", "pgsl_ext", "plain-PyTorch APG", 10.0),
    ("cpu", "svt", "4x512x512 rank 10", "pgsl_ext rank=20", "torch.svd_lowrank q=30", 1.5),
    ("cuda", "svt", "8192x14x14", "pgsl_ext", "torch.linalg.svd", 20.0),
)


def run(json_path: Path, pytest_args: Sequence[str] = ()) -> None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pytest", BENCH_FILE, "-q", "-p", "no:cacheprovider",
           f"--benchmark-json={json_path}", "--benchmark-min-rounds=3", "--benchmark-max-time=0.5",
           "--benchmark-group-by=group", "--benchmark-columns=median,rounds", *pytest_args]
    print("+", " ".join(cmd), flush=True)
    rc = subprocess.run(cmd, cwd=REPO_ROOT).returncode
    if rc != 0:
        sys.exit(f"bench.svt_rpca: pytest exited with {rc}; no numbers published")


def load(json_path: Path) -> tuple[List[dict], dict]:
    data = json.loads(json_path.read_text())
    rows = []
    for b in data["benchmarks"]:
        info = dict(b["extra_info"])
        info["median"] = b["stats"]["median"]
        rows.append(info)
    return rows, data


def _fmt_time(s: float) -> str:
    return f"{s * 1e3:.2f} ms" if s < 10 else f"{s:.1f} s"


def section(device: str, rows: List[dict], data: dict, design: Optional[str] = None) -> str:
    """``design``: the small-matrix CUDA kernel design the run used (PGSL_SMALL_MATRIX_KERNEL),
    which then names the section, so that scripts/gpu_check.sh records both side by side."""
    rows = [r for r in rows if r["device"] == device]
    times = {(r["op"], r["shape"], r["provider"]): r["median"] for r in rows}
    env = data.get("machine_info", {}).get("pgsl_bench") or environment()  # as measured
    key = f"svt-rpca-{device}" + (f"-{design}" if design else "")
    title = device.upper() + (f", PGSL_SMALL_MATRIX_KERNEL={design}" if design else "")
    lines = [
        f"<!-- bench:{key} -->",
        f"## svt and rpca ({title})",
        "",
        f"- date: {data.get('datetime', '?')} (UTC); machine: {env.get('cpu_model')}, {env.get('cpu_count')} cores; "
        f"GPU: {env.get('gpu') or 'none'}; torch {env.get('torch')}; commit `{env.get('git_commit')}`",
        "- written by `python -m bench.table` (`bench/test_bench_svt_rpca.py`): each case checks accuracy before "
        "timing; **error** = max |provider - float64 reference| / max |reference|; **% FLOP floor** = "
        "Golub & Van Loan's SVD FLOP count (per iteration for rpca) at the GEMM rate measured in the same "
        "run, over the median time; the plain-PyTorch APG loop runs, once, as many iterations as pgsl_ext's "
        "slowest matrix needed, over the whole batch.",
        "",
        "### Targets",
        "",
        "| op | case | target | measured | status |",
        "| --- | --- | --- | ---: | --- |",
    ]
    for dev, op, case, ours, baseline, want in TARGETS:
        if dev != device:
            continue
        a, b = times.get((op, case, ours)), times.get((op, case, baseline))
        if a is None or b is None:
            continue
        got = b / a
        lines.append(f"| {op} | {case} | {ours} >= {want:g}x {baseline} | {got:.2f}x | "
                     f"{'met' if got >= want else '**missed**'} |")
    lines += [
        "",
        "### All providers",
        "",
        "| op | case | provider | median | speed-up of pgsl_ext | error | % FLOP floor | iterations (mean / max) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in sorted(rows, key=lambda r: (r["op"], r["shape"], r["median"])):
        # Randomized providers are compared with pgsl_ext's randomized path, exact ones with its
        # exact path; the FLOP floor (a full SVD's count) only means something for exact ones.
        randomized = "rank=" in r["provider"] or "lowrank" in r["provider"]
        ours = "pgsl_ext rank=20" if randomized else "pgsl_ext"
        ref = times.get((r["op"], r["shape"], ours))
        speedup = r["median"] / ref if ref else math.nan
        floor = math.nan if randomized else r["flops"] / r["gemm_flops_per_s"] / r["median"]
        err = f"{r['error']:.1e}" if "error" in r else ""
        its = f"{r['iterations_mean']:.0f} / {r['iterations_max']}" if "iterations_max" in r else ""
        name = f"**{r['provider']}**" if r["provider"].startswith("pgsl_ext") else r["provider"]
        lines.append(f"| {r['op']} | {r['shape']} | {name} | {_fmt_time(r['median'])} | {speedup:.2f}x | "
                     f"{err} | {'-' if math.isnan(floor) else f'{100 * floor:.1f}%'} | {its} |")
    lines += ["", f"<!-- /bench:{key} -->", ""]
    return "\n".join(lines)


def sections(json_path: Path, design: Optional[str] = None) -> Dict[str, str]:
    """The CPU and CUDA sections of a run; ``design`` names the CUDA one (see section())."""
    rows, data = load(json_path)
    out = {}
    for d in ("cpu", "cuda"):
        if any(r["device"] == d for r in rows):
            named = design if d == "cuda" else None
            out[f"svt-rpca-{d}" + (f"-{named}" if named else "")] = section(d, rows, data, named)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.svt_rpca")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    json_path = args.json or DEFAULT_JSON
    if args.json is None:
        run(json_path)
    out = sections(json_path)
    for text in out.values():
        print(text)
    if not args.no_write:
        update_results(DEFAULT_RESULTS, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
