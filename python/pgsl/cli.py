"""The ``pgsl`` command: ``pgsl train``, ``pgsl evaluate`` and ``pgsl sweep``.

Bad options and unusable files end with one line, ``pgsl <command>: error: ...``, naming the
option or file, and exit code 2 (1 for a peer that failed during the run). Anything else is a
bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import faulthandler
import io
import os
import signal
import sys
from typing import Optional, Sequence

# A rank under torchrun (or the launcher): torch's C++ warnings and errors about a peer that went
# away come with 20 frames of C++ stack each, read before torch is imported; the rank's own
# one-line error says what happened. A value the user set is kept.
if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "FATAL")

from . import config  # noqa: E402  (after the environment above: it imports torch)
from .errors import PeerError, PgslError

__all__ = ["main"]

# Optional dependencies, by the command that needs them and the pip package that provides them.
OPTIONAL = {"torchmetrics": "torchmetrics", "torchattacks": "torchattacks", "matplotlib": "matplotlib"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage block
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


TRAIN_HELP = "train PGSL (or a baseline defence) by split learning"
TRAIN_DESCRIPTION = (
    "Train the paper's CNN by split learning. The client JSMA-attacks its own images with a surrogate, "
    "pixel-unshuffles them with the perturbation map and runs conv 1-2; the server removes the sparse attack "
    "from every activation channel with rpca, trains three streams (attacked, fusion, recovered) and fuses "
    "their decisions. Writes OUT/metrics.json, OUT/training.png and checkpoints of both halves."
)


def _add_command(sub, name: str, help: str, description: str, add_arguments, run) -> None:
    p = sub.add_parser(name, help=help, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_arguments(p)
    p.set_defaults(run_command=run)


def _train(args, argv: Sequence[str]) -> int:
    from .train import launch_local, train, train_rank

    cfg = config.from_arguments(args)
    if cfg.distributed:
        if "RANK" in os.environ:
            train_rank(cfg)
            return 0
        return launch_local(cfg, argv)
    metrics = train(cfg)
    print(f"test accuracy {metrics['test_accuracy']:.4f}; metrics in {os.path.join(cfg.out, 'metrics.json')}, curves in {os.path.join(cfg.out, 'training.png')}")
    return 0


SWEEP_HELP = "defences swept over their strength and seeds: the privacy-utility frontier"
SWEEP_DESCRIPTION = (
    "Train and evaluate every point of a plan (a JSON file naming seeds, training and evaluation settings, and each "
    "defence with the option it is swept over), one run folder per point under OUT/points, then merge whatever "
    "points exist into OUT/frontier.json, frontier.md, summary.json and frontier.png. Resumable: a finished point is "
    "never redone, an interrupted one is redone. --shard K/N computes every N-th point from the K-th (one task of a "
    "scheduler's array job each; all sharing OUT), --jobs N runs N points at once on this machine."
)


def _sweep_arguments(p) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("plan", nargs="?", metavar="PLAN", help="the plan (JSON); see results/*/plan.json")
    which.add_argument("--quick", action="store_true", help="the built-in pipeline check CI runs (2 strengths per defence, "
                       "1 seed, 512 digits, 1 epoch): not a result")
    p.add_argument("--out", required=True, help="the sweep's folder (points, frontier, plan.json)")
    p.add_argument("--shard", metavar="K/N", default=None, help="compute only every N-th point, from the K-th (K from 1)")
    p.add_argument("--jobs", type=config._integer, default=1, help="points computed at once on this machine")
    p.add_argument("--merge", action="store_true", help="compute nothing; merge the points that exist")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def _sweep(args, argv: Sequence[str]) -> int:
    from . import sweep

    plan = sweep.QUICK_PLAN if args.quick else sweep.load_plan(args.plan)
    summary = sweep.sweep(plan, args.out, shard_spec=args.shard, jobs=args.jobs, merge_only=args.merge, progress=args.progress)
    counts = ", ".join(f"{v} {k}" for k, v in summary["counts"].items() if v) or "nothing to do"
    print(f"pgsl sweep: {counts}; {summary['points']} of {summary['of']} points merged into "
          f"{os.path.join(args.out, 'frontier.md')} (and frontier.json, summary.json, frontier.png)")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    if hasattr(signal, "SIGUSR1"):  # `kill -USR1 PID` prints every thread's stack (diagnosing a stuck rank)
        try:
            faulthandler.register(signal.SIGUSR1, all_threads=True)
        except (io.UnsupportedOperation, ValueError):  # stderr is not a file (e.g. captured)
            pass
    argv = list(sys.argv[1:] if argv is None else argv)
    # "--fusion-weights -1,1,1": argparse would take the value for an option and say "expected one
    # argument"; joined with "=" it reaches the option's own check, which names what is wrong.
    argv = [f"{a}={argv[i + 1]}" if a == "--fusion-weights" and i + 1 < len(argv) and argv[i + 1].startswith("-")
            and argv[i + 1][1:2].isdigit() else a for i, a in enumerate(argv)
            if not (i > 0 and argv[i - 1] == "--fusion-weights" and a.startswith("-") and a[1:2].isdigit())]
    parser = _Parser(prog="pgsl", description="PGSL split learning: train, and evaluate privacy and robustness.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_command(sub, "train", TRAIN_HELP, TRAIN_DESCRIPTION, config.add_arguments, _train)
    from .evaluate import command as evaluate

    _add_command(sub, "evaluate", evaluate.HELP, evaluate.DESCRIPTION, evaluate.add_arguments, evaluate.run)
    _add_command(sub, "sweep", SWEEP_HELP, SWEEP_DESCRIPTION, _sweep_arguments, _sweep)
    args = parser.parse_args(argv)
    command = f"pgsl {args.command}"
    try:
        return args.run_command(args, argv)
    except ModuleNotFoundError as e:
        package = OPTIONAL.get((e.name or "").split(".")[0])
        if package is None or os.environ.get("PGSL_DEBUG"):
            raise
        print(f"{command}: error: {command} needs {package}: pip install {package} (or pip install 'pgsl_ext[evaluate]')", file=sys.stderr)
        return 2
    except PeerError as e:
        if os.environ.get("PGSL_DEBUG"):
            raise
        print(f"{command}: error: {e}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(1)  # pending point-to-point work could block a normal interpreter exit
    except PgslError as e:
        if os.environ.get("PGSL_DEBUG"):
            raise
        print(f"{command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
