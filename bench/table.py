"""Run the benchmark suites, each in the module named for what it measures, and write their
sections of bench/RESULTS.md (through bench/results.py). Orchestration only: no tabulation here.

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
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

from bench import bandwidth, svt_rpca
from bench._common import REPO_ROOT
from bench.results import DEFAULT_RESULTS, update_results

# Each suite and the module that runs and tabulates it: "bandwidth" bench/bandwidth.py,
# "svt" bench/svt_rpca.py, "jsma" bench/bench_jsma.py, "train" bench/bench_train_step.py.
SUITES = ("bandwidth", "svt", "jsma", "train")


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
        json_path = bandwidth.DEFAULT_JSON
        if args.wait_idle > 0 and not wait_for_idle_cpu(args.wait_idle):
            print(f"bench.table: the CPUs were not idle within {args.wait_idle:g} s; running anyway", flush=True)
        if "svt" in suites:
            svt_rpca.run(svt_rpca.DEFAULT_JSON)
            if not args.no_write:
                update_results(args.results, svt_rpca.sections(svt_rpca.DEFAULT_JSON))
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
        bandwidth.run_suite(json_path, args.threads, pytest_args)
        source = f"written by `{command}`"
    else:
        json_path = args.json
        source = f"tabulated by `{command}`"
    return bandwidth.tabulate(json_path, args.results, source, write=not args.no_write)


if __name__ == "__main__":
    sys.exit(main())
