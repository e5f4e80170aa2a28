"""``pgsl sweep``: defences swept over their strength and seeds, each point a ``pgsl train`` run and
a ``pgsl evaluate`` of it, merged into the privacy-utility frontier.

A plan (JSON) names the seeds, the training and evaluation settings every point shares, and the
defences with the option each is swept over::

    {"name": "mnist5k-frontier", "seeds": [0, 1, 2],
     "train": {"epochs": 2},                       # pgsl train options (Config field names)
     "evaluate": {"attacks": ["decoder", "whitebox"], "images": 64},
     "defenses": [{"defense": "none"},             # the reference: one point per seed
                  {"defense": "noise", "option": "noise_scale", "strengths": [0.1, 1, 10]},
                  {"defense": "pgsl", "option": "mu", "strengths": [0.1, 0.55, 2],
                   "train": {"surrogate_epochs": 1}}]}   # options of this defence alone

Each point is a folder ``OUT/points/<defense>-<option>-<strength>-s<seed>`` holding its run, its
evaluation, their logs and ``point.json``, written last: a point with ``point.json`` is done and
never redone; one without it was interrupted and is redone from scratch. ``point.json`` alone is
what the merge reads, so a sweep kept in git holds only those files (the runs are rebuilt where
needed: a Table 2 unit whose undefended point has no run here trains it again). A point being computed
by another process (its lock is held) is left to it. ``--shard K/N`` computes every N-th point
from the K-th, so a scheduler's array job (``sbatch --array=1-N``) spreads a plan over machines
sharing OUT; ``--jobs N`` runs N points at once on one machine, each with its share of the cores.
Every call ends by merging whatever points exist into ``frontier.json``, ``frontier.md``,
``summary.json`` and ``frontier.png``; ``--merge`` only merges.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import fcntl
import json
import math
import os
import shutil
import subprocess
import sys
import time
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from . import table2
from .config import DEFENSES, Config
from .errors import ConfigError, RunError
from .evaluate import inversion
from .evaluate.seeds import PSNR_CAP, bootstrap_interval

__all__ = ["QUICK_PLAN", "Point", "load_plan", "check_plan", "points", "shard", "sweep", "merge", "dcs"]

# What the sweep sets itself, per point; a plan may not.
_SWEEP_SETS = ("defense", "seed", "out", "resume", "distributed", "progress")
# The frontier's privacy: pgsl evaluate's inversion attacks (accuracy is the run's own test accuracy).
_EVALUATE_KEYS = {"attacks": "--attacks", "images": "--images", "full": "--full", "seed": "--seed"}
_PLAN_KEYS = ("name", "description", "seeds", "train", "evaluate", "defenses", "table2")

# The plan CI runs end to end (``pgsl sweep --quick``): two strengths per defence, one seed, a
# few hundred digits, the decoder and the white box on 16 targets, Table 2 on 128 / 64 digits
# (DLG on 8 / 8) at small budgets. Its numbers check the pipeline; they are not results (models
# trained on 512 digits for one epoch).
QUICK_PLAN = {
    "name": "quick",
    "description": "pipeline check: 2 strengths per defence, 1 seed, 512 training digits, 1 epoch; not a result",
    "seeds": [0],
    "train": {"epochs": 1, "train_subset": 512, "batch_size": 32, "eval_subset": 200},
    "evaluate": {"attacks": ["decoder", "whitebox"], "images": 16},
    "defenses": [
        {"defense": "none"},
        {"defense": "noise", "option": "noise_scale", "strengths": [0.5, 5.0]},
        {"defense": "nopeek", "option": "nopeek_weight", "strengths": [0.5, 5.0]},
        {"defense": "pgsl", "option": "jsma_gamma", "strengths": [0.1, 0.3], "train": {"surrogate_epochs": 1}},
    ],
    "table2": {
        "train_images": 128, "test_images": 64, "sizes": {"dlg": {"train_images": 8, "test_images": 8}},
        "attacks": {"cw": {"steps": 10, "binary_steps": 1}, "bim": {"steps": 3}, "decoder": {"epochs": 5},
                    "dlg": {"restarts": 1, "iterations": 50}},
    },
}


@dataclasses.dataclass(frozen=True)
class Point:
    """One run of a plan: ``defense`` with ``option`` at ``strength`` (both None for a defence
    swept over nothing, e.g. the undefended reference), trained with ``seed``."""

    defense: str
    option: Optional[str]
    strength: Optional[float]
    seed: int

    @property
    def name(self) -> str:
        swept = "" if self.option is None else f"-{self.option}-{self.strength:g}"
        return f"{self.defense}{swept}-s{self.seed}"

    @property
    def curve(self) -> Tuple[str, Optional[str]]:
        return self.defense, self.option


# --------------------------------------------------------------------------- the plan


def load_plan(path: str) -> dict:
    """The plan in the JSON file ``path``, checked (:func:`check_plan`)."""
    try:
        with open(path) as f:
            plan = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"PLAN {path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"PLAN {path}: is a folder; expected a JSON plan file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"PLAN {path}: cannot be read ({e})") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"PLAN {path}: not valid JSON ({e})") from None
    check_plan(plan, path)
    return plan


def check_plan(plan, where: str = "plan") -> None:
    """Raise :class:`ConfigError` naming the first entry of ``plan`` that cannot be run: an
    unknown key, a seed that is not an integer, a training option ``pgsl train`` refuses, an
    evaluation setting ``pgsl evaluate`` does not have, or a defence without a sweepable option."""
    if not isinstance(plan, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(plan).__name__}")
    unknown = sorted(set(plan) - set(_PLAN_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; expected some of {list(_PLAN_KEYS)}")
    for key in ("name", "seeds", "defenses"):
        if key not in plan:
            raise ConfigError(f"{where}: missing {key!r}")
    if not isinstance(plan["name"], str) or not plan["name"].strip():
        raise ConfigError(f"{where}: 'name' must be a non-empty string, got {plan['name']!r}")
    seeds = plan["seeds"]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(f"{where}: 'seeds' must be a non-empty list of integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{where}: 'seeds' names a seed twice: {seeds!r}")
    train = plan.get("train", {})
    if not isinstance(train, dict):
        raise ConfigError(f"{where}: 'train' must be an object of pgsl train options, got {train!r}")
    fields = {f.name for f in dataclasses.fields(Config)}
    for key in train:
        if key in _SWEEP_SETS:
            raise ConfigError(f"{where}: 'train' sets {key!r}, which the sweep sets for each point")
        if key not in fields:
            raise ConfigError(f"{where}: 'train' has {key!r}, not a pgsl train option (expected some of {sorted(fields - set(_SWEEP_SETS))})")
    evaluate = plan.get("evaluate", {})
    if not isinstance(evaluate, dict):
        raise ConfigError(f"{where}: 'evaluate' must be an object, got {evaluate!r}")
    unknown = sorted(set(evaluate) - set(_EVALUATE_KEYS))
    if unknown:
        raise ConfigError(f"{where}: 'evaluate' has unknown key(s) {unknown}; expected some of {sorted(_EVALUATE_KEYS)}")
    attacks = evaluate.get("attacks", list(inversion.ATTACKS))
    if not isinstance(attacks, list) or not attacks or any(a not in inversion.ATTACKS for a in attacks):
        raise ConfigError(f"{where}: 'evaluate.attacks' must be a non-empty list drawn from {list(inversion.ATTACKS)} "
                          f"(the frontier's privacy), got {attacks!r}")
    for key in ("images", "seed"):
        v = evaluate.get(key, 1)
        if not isinstance(v, int) or isinstance(v, bool) or v < (0 if key == "seed" else 1):
            raise ConfigError(f"{where}: 'evaluate.{key}' must be an integer >= {0 if key == 'seed' else 1}, got {v!r}")
    if not isinstance(evaluate.get("full", False), bool):
        raise ConfigError(f"{where}: 'evaluate.full' must be true or false, got {evaluate['full']!r}")
    defenses = plan["defenses"]
    if not isinstance(defenses, list) or not defenses:
        raise ConfigError(f"{where}: 'defenses' must be a non-empty list, got {defenses!r}")
    curves = set()
    for i, entry in enumerate(defenses):
        at = f"{where}: defenses[{i}]"
        if not isinstance(entry, dict) or "defense" not in entry:
            raise ConfigError(f"{at}: expected an object with 'defense' (and 'option' with 'strengths'), got {entry!r}")
        unknown = sorted(set(entry) - {"defense", "option", "strengths", "train"})
        if unknown:
            raise ConfigError(f"{at}: unknown key(s) {unknown}; expected 'defense', 'option', 'strengths', 'train'")
        own = entry.get("train", {})
        if not isinstance(own, dict):
            raise ConfigError(f"{at}: 'train' must be an object of pgsl train options, got {own!r}")
        for key in own:
            if key in _SWEEP_SETS or key not in fields:
                raise ConfigError(f"{at}: 'train' has {key!r}, not a pgsl train option the plan may set")
        if entry["defense"] not in DEFENSES:
            raise ConfigError(f"{at}: 'defense' must be one of {', '.join(DEFENSES)}, got {entry['defense']!r}")
        option = entry.get("option")
        if (option is None) != ("strengths" not in entry):
            raise ConfigError(f"{at}: 'option' and 'strengths' come together (a defence swept over an option), or neither")
        if option is not None:
            if option not in fields or option in _SWEEP_SETS:
                raise ConfigError(f"{at}: 'option' {option!r} is not a pgsl train option the sweep can vary")
            if option in train or option in own:
                raise ConfigError(f"{at}: 'option' {option!r} is also fixed in 'train'")
            strengths = entry["strengths"]
            if not isinstance(strengths, list) or not strengths or not all(
                    isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) for s in strengths):
                raise ConfigError(f"{at}: 'strengths' must be a non-empty list of finite numbers, got {strengths!r}")
            if len(set(strengths)) != len(strengths):
                raise ConfigError(f"{at}: 'strengths' names a value twice: {strengths!r}")
        curve = (entry["defense"], option)
        if curve in curves:
            raise ConfigError(f"{at}: --defense {entry['defense']} swept over {option!r} twice")
        curves.add(curve)
    table2.check(plan, where)
    for p in points(plan):  # every point's options as pgsl train checks them
        try:
            _config(plan, p, "unused").check()
        except ConfigError as e:
            raise ConfigError(f"{where}: point {p.name}: {e}") from None
    if not any(e["defense"] == "none" for e in defenses):
        raise ConfigError(f"{where}: 'defenses' needs the reference {{\"defense\": \"none\"}}: the frontier is read against it")


def points(plan: dict) -> List[Point]:
    """Every point of ``plan``, in plan order (defences, strengths, then seeds)."""
    out = []
    for entry in plan["defenses"]:
        for strength in entry.get("strengths", [None]):
            for seed in plan["seeds"]:
                out.append(Point(entry["defense"], entry.get("option"), None if strength is None else float(strength), seed))
    return out


def shard(items: Sequence, spec: Optional[str]) -> List:
    """The ``K``-th of ``N`` interleaved parts of ``items`` (``spec`` ``"K/N"``, K from 1)."""
    if spec is None:
        return list(items)
    try:
        k, n = (int(v) for v in spec.split("/"))
    except ValueError:
        raise ConfigError(f"--shard: expected K/N with integers 1 <= K <= N, got {spec!r}") from None
    if not 1 <= k <= n:
        raise ConfigError(f"--shard: expected K/N with integers 1 <= K <= N, got {spec!r}")
    return list(items)[k - 1::n]


def _entry(plan: dict, point: Point) -> dict:
    return next(e for e in plan["defenses"] if (e["defense"], e.get("option")) == point.curve)


def _config(plan: dict, point: Point, out: str) -> Config:
    options = dict(plan.get("train", {}), **_entry(plan, point).get("train", {}))
    options.update(defense=point.defense, seed=point.seed, out=out, progress=False)
    if point.option is not None:
        like = getattr(Config(), point.option)
        options[point.option] = int(point.strength) if isinstance(like, int) and float(point.strength).is_integer() else point.strength
    if "fusion_weights" in options:
        options["fusion_weights"] = tuple(options["fusion_weights"])
    return Config(**options)


def _train_argv(plan: dict, point: Point, out: str) -> List[str]:
    cfg, default = _config(plan, point, out), Config()
    argv = ["train"]
    for f in dataclasses.fields(Config):
        value = getattr(cfg, f.name)
        if f.name in ("progress", "resume", "distributed") or (value == getattr(default, f.name) and f.name not in ("defense", "seed", "out")):
            continue
        flag = f.metadata["flag"] or "--" + f.name.replace("_", "-")
        argv += [flag, ",".join(map(str, value)) if isinstance(value, tuple) else str(value)]
    return argv + ["--no-progress"]


def _evaluate_argv(plan: dict, run: str, out: str) -> List[str]:
    settings = dict(plan.get("evaluate", {}))
    settings.setdefault("attacks", list(inversion.ATTACKS))
    argv = ["evaluate", "--run", run, "--out", out, "--no-progress"]
    for key, flag in _EVALUATE_KEYS.items():
        if key not in settings:
            continue
        value = settings[key]
        if key == "full":
            argv += [flag] if value else []
        else:
            argv += [flag, ",".join(value) if isinstance(value, list) else str(value)]
    return argv


def _spec(plan: dict, point: Point) -> dict:
    """What a point's numbers depend on: a done point whose spec differs belongs to another plan."""
    return {"point": dataclasses.asdict(point), "train": _train_argv(plan, point, "RUN")[1:],
            "evaluate": _evaluate_argv(plan, "RUN", "EVALUATION")[1:]}


# --------------------------------------------------------------------------- computing points


@contextlib.contextmanager
def _locked(path: str, *, wait: bool = False) -> Iterator[bool]:
    """Hold an exclusive lock on ``path`` for the block; yields False when another process holds
    it (``wait``: waits for it instead)."""
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read_point(folder: str) -> Optional[dict]:
    try:
        with open(os.path.join(folder, "point.json")) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as e:
        raise RunError(f"{os.path.join(folder, 'point.json')}: unreadable ({e}); delete the point's folder to redo it") from None


def _run_logged(argv: List[str], log: str, threads: int) -> None:
    """``pgsl ARGV`` (or ``python -m MODULE ...`` for argv starting with ``-m``) in a process of
    its own with ``threads`` threads, its output in ``log``; a failure names the log."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    command = [sys.executable, *argv] if argv[0] == "-m" else [sys.executable, "-m", "pgsl.cli", *argv]
    what = argv[1] if argv[0] == "-m" else f"pgsl {argv[0]}"
    with open(log, "w") as f:
        f.write("$ " + " ".join(command[1:]) + "\n")
        f.flush()
        code = subprocess.call(command, stdout=f, stderr=subprocess.STDOUT, env=env)
    if code != 0:
        with open(log) as f:
            lines = [line.strip() for line in f if line.strip()]
        raise RunError(f"{what} failed (exit {code}): {lines[-1] if lines else 'no output'} (log: {log})")


def _summarise(point: Point, run: str, evaluation: str) -> dict:
    """A done point's numbers: the decision's test accuracy, and per inversion attack its
    knowledge level and per-image PSNR / SSIM against the clean targets (PSNR capped at
    PSNR_CAP dB), plus the mean auxiliary image's PSNR (the baseline an attack must beat)."""
    with open(os.path.join(run, "metrics.json")) as f:
        metrics = json.load(f)
    with open(os.path.join(evaluation, "report.json")) as f:
        report = json.load(f)
    (entry,) = report["privacy"].values()
    attacks, baseline = {}, None
    for name, result in entry.items():
        if name not in inversion.ATTACKS:
            continue
        per = result["metrics_vs_clean"]["per_image"]
        attacks[name] = {"level": inversion.ATTACKS[name].level,
                         "psnr": [min(float(v), PSNR_CAP) for v in per["psnr"]], "ssim": [float(v) for v in per["ssim"]]}
        if baseline is None or len(result["baseline_vs_clean"]["per_image"]["psnr"]) > len(baseline):
            baseline = [min(float(v), PSNR_CAP) for v in result["baseline_vs_clean"]["per_image"]["psnr"]]
    return {"accuracy": float(metrics["test_accuracy"]), "test_correct": metrics.get("test_correct"), "attacks": attacks,
            "baseline_psnr": baseline,
            "seconds": {"train": float(sum(metrics.get("seconds_per_epoch", []))), "evaluate": float(report.get("seconds", 0.0))}}


def _once(folder: str, spec: dict, work, *, wait: bool = False) -> str:
    """Run ``work(folder) -> result dict`` into ``folder`` unless it is done (``point.json`` with
    this ``spec``) or another process holds it (``wait``: wait for that process instead); an
    interrupted folder is redone from scratch. Returns "computed", "done" or "held"."""
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    with _locked(folder + ".lock", wait=wait) as mine:
        if not mine:
            return "held"
        done = _read_point(folder)
        if done is not None:
            if done.get("spec") != spec:
                raise RunError(f"{folder}: computed for another plan (its settings differ); use another --out or delete the folder")
            return "done"
        if os.path.exists(folder):  # interrupted: redone from scratch
            shutil.rmtree(folder)
        os.makedirs(folder)
        start = time.perf_counter()
        result = dict(spec=spec, **work(folder))
        result["wall_seconds"] = time.perf_counter() - start
        _write_json(os.path.join(folder, "point.json"), result)
        return "computed"


def _compute(plan: dict, point: Point, out: str, threads: int, *, wait: bool = False) -> str:
    """Compute ``point`` under ``out``/points unless it is done or held; returns what happened."""

    def work(folder: str) -> dict:
        run, evaluation = os.path.join(folder, "run"), os.path.join(folder, "evaluation")
        _run_logged(_train_argv(plan, point, run), os.path.join(folder, "train.log"), threads)
        _run_logged(_evaluate_argv(plan, run, evaluation), os.path.join(folder, "evaluate.log"), threads)
        return dict(**dataclasses.asdict(point), **_summarise(point, run, evaluation))

    return _once(os.path.join(out, "points", point.name), _spec(plan, point), work, wait=wait)


def _compute_unit(plan: dict, unit: "table2.Unit", out: str, threads: int) -> str:
    """Compute one Table 2 unit under ``out``/table2: its images against the undefended point of
    its seed (computed first if no process has, waited for if one is computing it), then the CNN
    trained on them."""
    source = Point("none", None, None, unit.seed)
    _compute(plan, source, out, threads, wait=True)
    point_run = os.path.join(out, "points", source.name, "run")

    def work(folder: str) -> dict:
        images, run = os.path.join(folder, "images.pt"), os.path.join(folder, "run")
        source_run = point_run
        if not os.path.isfile(os.path.join(point_run, "metrics.json")):
            # the undefended point was computed elsewhere and only its point.json kept (a sweep
            # committed to git, or another machine's): its model is trained again, here
            source_run = os.path.join(folder, "source")
            _run_logged(_train_argv(plan, source, source_run), os.path.join(folder, "source.log"), threads)
        _run_logged(["-m", "pgsl.table2", os.path.join(out, "plan.json"), source_run, unit.row, str(unit.seed),
                     str(unit.train_images), str(unit.test_images), images], os.path.join(folder, "images.log"), threads)
        _run_logged(table2.train_argv(plan, unit, images, run), os.path.join(folder, "train.log"), threads)
        with open(os.path.join(run, "metrics.json")) as f:
            metrics = json.load(f)
        return dict(**dataclasses.asdict(unit), accuracy=float(metrics["test_accuracy"]), test_correct=metrics.get("test_correct"),
                    source="the undefended point's run" if source_run == point_run else "the undefended point's training, run again in this unit")

    return _once(os.path.join(out, "table2", unit.name), table2.spec(plan, unit), work)


def sweep(plan: dict, out: str, *, shard_spec: Optional[str] = None, jobs: int = 1, merge_only: bool = False,
          progress: bool = True) -> dict:
    """Compute this shard's points of ``plan`` under ``out`` (``jobs`` at a time), then merge
    every point that exists; returns :func:`merge`'s summary with ``"counts"`` of this call's
    points (computed, done, held by another process, failed). Failed points are named in a
    :class:`RunError` after the merge."""
    check_plan(plan)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"--jobs: expected an integer >= 1, got {jobs!r}")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"--out {out}: is a file; expected a folder")
    mine = shard(points(plan), shard_spec)
    my_units = shard(table2.units(plan), shard_spec)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot be created ({e.strerror or e})") from None
    _write_plan(plan, out)
    counts = {"computed": 0, "done": 0, "held": 0, "failed": 0}
    failures: List[str] = []
    if not merge_only:
        from tqdm.auto import tqdm

        threads = max(1, (os.cpu_count() or 1) // jobs)
        bar = tqdm(total=len(mine) + len(my_units), desc=f"sweep {plan['name']}", unit="point", disable=not progress,
                   dynamic_ncols=True)
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            # the frontier's points first: Table 2's units start from the undefended ones
            for phase in ([(p, lambda p=p: _compute(plan, p, out, threads)) for p in mine],
                          [(u, lambda u=u: _compute_unit(plan, u, out, threads)) for u in my_units]):
                futures = {pool.submit(task): item for item, task in phase}
                for future in concurrent.futures.as_completed(futures):
                    try:
                        counts[future.result()] += 1
                    except RunError as e:
                        counts["failed"] += 1
                        failures.append(f"{futures[future].name}: {e}")
                    bar.update(1)
                    bar.set_postfix({k: v for k, v in counts.items() if v})
        bar.close()
    summary = merge(plan, out)
    summary["counts"] = counts
    if failures:
        raise RunError(f"{len(failures)} of {len(mine) + len(my_units)} point(s) failed (the others are merged): " + "; ".join(failures))
    return summary


def _write_plan(plan: dict, out: str) -> None:
    path = os.path.join(out, "plan.json")
    if os.path.isfile(path):
        try:
            with open(path) as f:
                earlier = json.load(f)
        except (OSError, json.JSONDecodeError):
            earlier = None
        if earlier is not None and earlier != plan:
            raise ConfigError(f"--out {out}: holds the sweep of another plan ({earlier.get('name')!r}, plan.json); "
                              "use another --out")
    with open(path, "w") as f:
        json.dump(plan, f, indent=1)


# --------------------------------------------------------------------------- the frontier


def dcs(accuracy: float, psnr: float, *, reference_accuracy: float, reference_psnr: float, baseline_psnr: float) -> float:
    """A defence capability score in the spirit of VFLAIR's DCS (Zou et al. 2024, beta = 1/2):
    ``1 - sqrt((AP^2 + (1 - MP)^2) / 2)``, the distance to the ideal point (nothing leaked, no
    accuracy lost) in the unit square, where ``MP = accuracy / reference_accuracy`` (clipped
    to [0, 1]) is the utility kept and ``AP = (psnr - baseline_psnr) / (reference_psnr -
    baseline_psnr)`` (clipped to [0, 1]) the share of the undefended leak left above the mean
    image's PSNR. 1 is ideal; the undefended run scores 1 - sqrt(1/2) = 0.293."""
    mp = min(max(accuracy / reference_accuracy, 0.0), 1.0) if reference_accuracy > 0 else 0.0
    span = reference_psnr - baseline_psnr
    ap = min(max((psnr - baseline_psnr) / span, 0.0), 1.0) if span > 0 else 1.0
    return 1.0 - math.sqrt((ap * ap + (1.0 - mp) ** 2) / 2.0)


def accuracy_interval(members: List[dict]) -> Optional[List[float]]:
    """The 95 % interval of the mean test accuracy of ``members`` (one per seed): a two-level
    bootstrap over seeds and test images from each run's per-image correctness (``test_correct``),
    or, for runs trained before it was recorded, a t-interval over the seeds (None for one seed)."""
    bits = [m.get("test_correct") for m in members]
    if all(bits) and len({len(b) for b in bits}) == 1:
        return bootstrap_interval([[float(c) for c in b] for b in bits])
    acc = np.array([m["accuracy"] for m in members])
    if len(acc) < 2:
        return None
    t = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306}.get(len(acc), 2.262)
    half = t * acc.std(ddof=1) / math.sqrt(len(acc))
    return [max(0.0, float(acc.mean() - half)), min(1.0, float(acc.mean() + half))]


def _levels(members: List[dict]) -> List[dict]:
    """Per knowledge level: the best attack at or below it by mean PSNR over the members (seeds,
    images), its mean PSNR / SSIM and the two-level bootstrap 95 % interval of the PSNR."""
    attacks = sorted(members[0]["attacks"], key=lambda a: members[0]["attacks"][a]["level"])
    out, best = [], None
    for index, level in enumerate(inversion.KNOWLEDGE_LEVELS):
        here = [a for a in attacks if members[0]["attacks"][a]["level"] == index]
        if not here:
            continue
        scored = [(float(np.mean([np.mean(m["attacks"][a]["psnr"]) for m in members])), a) for a in here]
        top = max(scored)
        if best is None or top[0] > best[0]:
            best = top
        name = best[1]
        psnr = np.array([m["attacks"][name]["psnr"] for m in members])
        ssim = np.array([m["attacks"][name]["ssim"] for m in members])
        out.append({"level": level, "best_attack": name, "psnr": float(psnr.mean()), "psnr_ci95": bootstrap_interval(psnr),
                    "ssim": float(ssim.mean())})
    return out


def merge(plan: dict, out: str) -> dict:
    """Build ``frontier.json`` (one entry per done point: ``defense``, ``option``, ``strength``,
    ``seed``, ``accuracy`` and ``privacy``, knowledge level -> the best attack's PSNR against the
    clean image), ``summary.json`` / ``frontier.md`` (per defence and strength: means over
    seeds with 95 % intervals, the DCS, and which points leave the decoder below the mean image)
    and ``frontier.png`` from whatever points of ``plan`` exist under ``out``; returns the summary."""
    done: List[Tuple[Point, dict]] = []
    for p in points(plan):
        result = _read_point(os.path.join(out, "points", p.name))
        if result is not None and result.get("spec") == _spec(plan, p):
            done.append((p, result))
    frontier = []
    for p, r in done:
        levels = _levels([r])
        frontier.append({"defense": p.defense, "option": p.option, "strength": p.strength, "seed": p.seed,
                         "accuracy": r["accuracy"], "privacy": {lv["level"]: lv["psnr"] for lv in levels},
                         "ssim": {lv["level"]: lv["ssim"] for lv in levels},
                         "best_attack": {lv["level"]: lv["best_attack"] for lv in levels},
                         "folder": os.path.join("points", p.name)})
    _write_json(os.path.join(out, "frontier.json"), frontier)
    summary = _summary(plan, done)
    _write_json(os.path.join(out, "summary.json"), summary)
    with open(os.path.join(out, "frontier.md"), "w") as f:
        f.write(_markdown(plan, summary))
    if summary["curves"]:
        from . import plots

        plots.frontier(summary, os.path.join(out, "frontier.png"))
    if plan.get("table2") is not None:
        summary["table2"] = _merge_table2(plan, out, done)
    return summary


def _merge_table2(plan: dict, out: str, done: List[Tuple[Point, dict]]) -> dict:
    """``table2.json`` (the rows, :func:`pgsl.table2.rows`) and ``table2.md`` from the units and
    points that exist. PGSL's row: its points at the paper's defaults (a swept option at its
    default value)."""
    units = {}
    for u in table2.units(plan):
        result = _read_point(os.path.join(out, "table2", u.name))
        if result is not None and result.get("spec") == table2.spec(plan, u):
            units[u] = result
    default = Config()

    def at_defaults(p: Point) -> bool:
        return p.defense == "pgsl" and (p.option is None or p.strength == getattr(default, p.option))

    curve = next((p.curve for p, _ in done if at_defaults(p)), None)
    pgsl = [r for p, r in done if at_defaults(p) and p.curve == curve]
    reference = [r for p, r in done if p.defense == "none"]
    table, claims = table2.rows(plan, units, reference, pgsl)
    _write_json(os.path.join(out, "table2.json"), table)
    lines = [f"# Table 2 under the paper's protocol: {plan['name']}", "",
             "Accuracy (%) of the paper's CNN trained and tested on each kind of image (mean over seeds, 95 % two-level "
             "bootstrap interval over seeds and test images), beside the paper's figure for this dataset. The attacks are "
             "crafted against the undefended run of the same seed; the decoder and DLG reconstruct from its split layer. "
             "A row trained on a subset has the same CNN on clean images of the same sizes beside it. pgsl and none: "
             "the sweep's points (PGSL at its defaults), on the whole test split. Row minus clean: the difference from that "
             "control, paired by seed and test image, with its 95 % interval.", "",
             "| row | ours | 95 % interval | paper | seeds | train / test images | clean, same sizes | row minus clean |",
             "| --- | ---: | --- | ---: | --- | --- | ---: | --- |"]
    for e in table:
        ours = "-" if e["ours"] is None else f"{e['ours']:.1f}"
        ci = "-" if not e["ours_ci95"] else f"[{e['ours_ci95'][0]:.1f}, {e['ours_ci95'][1]:.1f}]"
        paper = "-" if e["paper"] is None else f"{e['paper']:g}"
        sizes = f"{e['train_images']} / {e['test_images']}" if "train_images" in e else "all"
        clean = "-" if e.get("clean_same_size") is None else f"{e['clean_same_size']:.1f}"
        d = e.get("minus_clean")
        minus = "-" if d is None else f"{d['difference']:+.1f} [{d['ci95'][0]:+.1f}, {d['ci95'][1]:+.1f}]"
        lines.append(f"| {e['row']} | {ours} | {ci} | {paper} | {len(e['seeds'])} | {sizes} | {clean} | {minus} |")
    for name, c in claims.items():
        lines.append(f"\n{name.replace('_', ' ')}: {c['ours']:+.1f} points here [{c['ci95'][0]:+.1f}, {c['ci95'][1]:+.1f}] "
                     f"(seeds {', '.join(map(str, c['seeds']))}); the paper claims {c['paper_mias']:+.1f} (on MIAS).")
    with open(os.path.join(out, "table2.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return {"rows": table, "claims": claims, "units": len(units), "of": len(table2.units(plan))}


def _summary(plan: dict, done: List[Tuple[Point, dict]]) -> dict:
    groups: Dict[Tuple[str, Optional[str], Optional[float]], List[dict]] = {}
    for p, r in done:
        groups.setdefault((p.defense, p.option, p.strength), []).append(r)
    reference = groups.get(("none", None, None))
    summary = {"plan": plan["name"], "points": len(done), "of": len(points(plan)), "reference": None, "curves": [],
               "dcs": "1 - sqrt((AP^2 + (1 - MP)^2) / 2); MP = accuracy / the undefended accuracy, AP = (PSNR - the mean "
                      "image's PSNR) / (the undefended PSNR - the mean image's PSNR), both clipped to [0, 1], at each "
                      "knowledge level (VFLAIR's DCS with beta = 1/2)"}
    ref_levels = _levels(reference) if reference else []
    baseline = float(np.mean([np.mean(r["baseline_psnr"]) for _, r in done])) if done else None
    summary["baseline_psnr"] = baseline
    if reference:
        acc = [r["accuracy"] for r in reference]
        summary["reference"] = {"accuracy": float(np.mean(acc)), "seeds": len(acc), "levels": ref_levels}
    for entry in plan["defenses"]:
        rows = []
        for strength in entry.get("strengths", [None]):
            members = groups.get((entry["defense"], entry.get("option"), None if strength is None else float(strength)))
            if not members:
                continue
            acc = np.array([r["accuracy"] for r in members])
            levels = _levels(members)
            for lv in levels:
                ref = next((x for x in ref_levels if x["level"] == lv["level"]), None)
                lv["dcs"] = None if ref is None or not summary["reference"] else dcs(
                    float(acc.mean()), lv["psnr"], reference_accuracy=summary["reference"]["accuracy"],
                    reference_psnr=ref["psnr"], baseline_psnr=baseline)
                lv["below_mean_image"] = bool(lv["psnr_ci95"][1] < baseline)
            rows.append({"strength": strength, "seeds": [r["seed"] for r in members],
                         "accuracy": float(acc.mean()), "accuracy_ci95": accuracy_interval(members), "levels": levels})
        if rows:
            summary["curves"].append({"defense": entry["defense"], "option": entry.get("option"), "rows": rows,
                                      "reading": _reading(rows, summary["reference"])})
    return summary


def _reading(rows: List[dict], reference: Optional[dict]) -> dict:
    """Per knowledge level: the strength with the best DCS, and the most accurate strength whose
    best attack's PSNR interval lies wholly below the mean image's (None where none does)."""
    out = {}
    for level in [lv["level"] for lv in rows[0]["levels"]]:
        at = [(row, next(lv for lv in row["levels"] if lv["level"] == level)) for row in rows
              if any(lv["level"] == level for lv in row["levels"])]
        scored = [(lv["dcs"], row["strength"]) for row, lv in at if lv["dcs"] is not None]
        private = [row for row, lv in at if lv["below_mean_image"]]
        cheapest = max(private, key=lambda row: row["accuracy"]) if private else None
        out[level] = {
            "best_dcs": max(scored)[0] if scored else None,
            "best_dcs_strength": max(scored)[1] if scored else None,
            "private_strength": None if cheapest is None else cheapest["strength"],
            "private_accuracy": None if cheapest is None else cheapest["accuracy"],
            "private_cost": None if cheapest is None or not reference else reference["accuracy"] - cheapest["accuracy"],
        }
    return out


def _write_json(path: str, value) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=1)
    os.replace(tmp, path)


def _markdown(plan: dict, summary: dict) -> str:
    lines = [f"# Privacy-utility frontier: {plan['name']}", ""]
    if plan.get("description"):
        lines += [plan["description"], ""]
    lines += [f"{summary['points']} of {summary['of']} points done. Accuracy: the decision's test accuracy, mean over seeds "
              "(95 % two-level bootstrap interval over seeds and test images). Privacy: per knowledge level, the best attack at or below it, its PSNR (dB) "
              "against the clean image, mean over seeds and images (95 % two-level bootstrap interval); lower is more "
              f"private. The mean auxiliary image scores {summary['baseline_psnr']:.1f} dB: a level below it leaks nothing "
              "an attacker could not guess without the messages." if summary["baseline_psnr"] is not None else "", "",
              f"DCS = {summary['dcs']}.", ""]
    for curve in summary["curves"]:
        swept = f" over {curve['option']}" if curve["option"] else ""
        lines += [f"## {curve['defense']}{swept}", ""]
        if not curve["rows"]:
            continue
        levels = [lv["level"] for lv in curve["rows"][0]["levels"]]
        lines += ["| strength | accuracy | " + " | ".join(f"{lv}: PSNR (best attack), DCS" for lv in levels) + " |",
                  "| --- | ---: | " + " | ".join("---:" for _ in levels) + " |"]
        for row in curve["rows"]:
            ci = row["accuracy_ci95"]
            acc = f"{row['accuracy']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
            cells = []
            for lv in row["levels"]:
                mark = " (below the mean image)" if lv["below_mean_image"] else ""
                d = "" if lv["dcs"] is None else f", {lv['dcs']:.3f}"
                cells.append(f"{lv['psnr']:.1f} [{lv['psnr_ci95'][0]:.1f}, {lv['psnr_ci95'][1]:.1f}] ({lv['best_attack']}){mark}{d}")
            strength = "-" if row["strength"] is None else f"{row['strength']:g}"
            lines.append(f"| {strength} | {acc} | " + " | ".join(cells) + " |")
        lines.append("")
        for level, r in curve["reading"].items():
            if r["best_dcs"] is None or curve["option"] is None:
                continue
            if r["private_strength"] is None:
                verdict = "no strength swept leaves the best attack below the mean image"
            else:
                cost = "" if r["private_cost"] is None else f", {100 * r['private_cost']:.1f} points below no defence"
                verdict = (f"the most accurate strength that leaves the best attack below the mean image is "
                           f"{r['private_strength']:g} (accuracy {r['private_accuracy']:.3f}{cost})")
            strength = "-" if r["best_dcs_strength"] is None else f"{r['best_dcs_strength']:g}"
            lines.append(f"- {level}: best DCS {r['best_dcs']:.3f} (strength {strength}); {verdict}.")
        lines.append("")
    return "\n".join(lines) + "\n"
