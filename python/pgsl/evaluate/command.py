"""``pgsl evaluate``'s command line: what it says in ``--help``, its options, and what runs them
(:mod:`pgsl.cli` builds the subcommand from these)."""

from __future__ import annotations

import os

from .report import EVALUATIONS, evaluate

__all__ = ["DESCRIPTION", "HELP", "add_arguments", "run"]

HELP = "privacy and robustness of trained runs"
DESCRIPTION = (
    "Attack trained runs: model inversion (black-box decoder, UnSplit, white-box, gradient leakage) and "
    "accuracy under adversarial attacks (JSMA, Carlini-Wagner L2, BIM, FGSM; transferred and adaptive), plus "
    "rpca's mu sweep. Writes report.json, report.md and PNG figures."
)


def add_arguments(p) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", metavar="DIR", help="one run folder written by pgsl train")
    which.add_argument("--compare", metavar="DIR", nargs="+", help="several run folders (same data) in one report")
    p.add_argument("--attacks", default=None, help="comma-separated subset of " + ", ".join(EVALUATIONS)
                   + " (default: every one that applies to the runs; musweep needs a pgsl run)")
    p.add_argument("--out", default=None, help="report folder (default: RUN/evaluation, or runs/compare)")
    p.add_argument("--images", type=int, default=64, help="reconstruction targets per attack")
    p.add_argument("--robust-images", type=int, default=None,
                   help="test images attacked for accuracy under attack (default 50; 500 with --full)")
    p.add_argument("--full", action="store_true",
                   help="the research protocol: 500 robustness targets (JSMA on the first 100, CW on the first 50), "
                        "the decoder and white box on every inversion target with longer optimisations, UnSplit, "
                        "DLG and its realistic form on 16 each")
    p.add_argument("--seed", type=int, default=0, help="seed of the attacks")
    p.add_argument("--resume", action="store_true", help="keep the parts an interrupted evaluation wrote into --out; compute the rest")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def run(args, argv) -> int:
    folders = [args.run] if args.run else args.compare
    out = args.out or (os.path.join(args.run, "evaluation") if args.run else os.path.join("runs", "compare"))
    evaluations = None if args.attacks is None else [a.strip() for a in args.attacks.split(",") if a.strip()]
    report = evaluate(folders, out=out, evaluations=evaluations, images=args.images, robust_images=args.robust_images,
                      full=args.full, seed=args.seed, progress=args.progress, resume=args.resume)
    print(f"pgsl evaluate: {report['seconds']:.0f} s; report in {os.path.join(out, 'report.md')} (and report.json, PNG figures)")
    return 0
