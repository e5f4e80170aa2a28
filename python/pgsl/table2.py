"""The paper's Table 2 protocol (Khowaja et al. 2022): "we report the results when trained directly
with the attacked images, the images constructed using DLG and DCGAN from maps acquired using split
layer, and the proposed PGSL method". Each row is the paper's CNN (the undefended split model,
``pgsl train --defense none``) trained and tested on one kind of image:

- ``jsma``, ``cw``, ``bim``, ``fgsm``: adversarial images crafted against the undefended run of the
  same seed (a model trained on clean images; transfer, not adaptive) at the plan's budgets;
- ``decoder`` (the DCGAN row's role): the black-box decoder's reconstructions from what the
  undefended run's split layer sends, the decoder trained on the validation slice's (message,
  image) pairs (the attacker's auxiliary data, disjoint from the images it reconstructs);
- ``dlg``: DLG's reconstructions from each image's client-side gradients of the undefended run
  (one image per observed gradient, at the run's initial weights: the upper bound);
- ``clean`` controls: the same CNN on clean images of the same subset sizes, so that a row's drop
  can be told apart from its smaller training set;

beside ``none`` (the undefended run's own accuracy) and ``pgsl`` (PGSL at its defaults), taken
from the sweep's points. A row's images replace the train and test splits (its first
``train_images`` and ``test_images``); the validation slice stays clean (a single-stream run only
reports it). ``python -m pgsl.table2 PLAN OUT ROW SEED`` builds one unit's images (``pgsl sweep``
runs it, then trains on them with ``pgsl train --data saved:FILE``). :func:`perturbation_probe`
asks what a built row's images give away: a linear probe of the label on its perturbations alone
(``scripts/table2_probe.py``).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import sys
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from . import data as data_mod
from .config import Config
from .errors import ConfigError
from .evaluate import inversion, robustness
from .evaluate import settings as st
from .evaluate.report import PAPER
from .evaluate.seeds import bootstrap_interval, paired_difference, unpaired_difference

__all__ = ["ROWS", "TABLE_ROWS", "Unit", "check", "units", "build", "rows", "label_probe", "perturbation_probe"]

ATTACK_ROWS = ("jsma", "cw", "bim", "fgsm")
ROWS = ATTACK_ROWS + ("decoder", "dlg")  # built from images
TABLE_ROWS = ROWS + ("pgsl", "none")
_KEYS = ("rows", "train_images", "test_images", "sizes", "attacks")
# The settings each row's images are made with, beside the plan's own.
_SETTINGS = {"jsma": robustness.JSMASettings, "cw": robustness.CWSettings, "bim": robustness.BIMSettings,
             "fgsm": robustness.FGSMSettings, "decoder": inversion.DecoderSettings, "dlg": inversion.DLGSettings}
_SWEEP_SETS_DLG = ("images", "batches", "batch_size")  # DLG: one image per gradient, every image of the subset
# Options of pgsl train that name the data or cut it: the unit's saved images are the data.
_DATA_OPTIONS = ("data", "train_subset", "eval_subset", "mias_size")


@dataclasses.dataclass(frozen=True)
class Unit:
    """One trained CNN: ``row``'s images at ``seed`` (``clean`` units carry their sizes)."""

    row: str
    seed: int
    train_images: int
    test_images: int

    @property
    def name(self) -> str:
        if self.row == "clean":
            return f"clean-{self.train_images}x{self.test_images}-s{self.seed}"
        return f"{self.row}-s{self.seed}"


def check(plan: dict, where: str) -> None:
    """Raise ConfigError naming the first entry of ``plan["table2"]`` that cannot be built."""
    table = plan.get("table2")
    if table is None:
        return
    at = f"{where}: 'table2'"
    if not isinstance(table, dict):
        raise ConfigError(f"{at} must be an object, got {table!r}")
    unknown = sorted(set(table) - set(_KEYS))
    if unknown:
        raise ConfigError(f"{at} has unknown key(s) {unknown}; expected some of {list(_KEYS)}")
    rows_ = table.get("rows", list(ROWS))
    if not isinstance(rows_, list) or not rows_ or any(r not in ROWS for r in rows_) or len(set(rows_)) != len(rows_):
        raise ConfigError(f"{at}.rows must list distinct rows drawn from {list(ROWS)} (none and pgsl come from the sweep's "
                          f"points), got {rows_!r}")
    for key in ("train_images", "test_images"):
        v = table.get(key, 1)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"{at}.{key} must be an integer >= 1, got {v!r}")
    sizes = table.get("sizes", {})
    if not isinstance(sizes, dict):
        raise ConfigError(f"{at}.sizes must map rows to {{'train_images', 'test_images'}}, got {sizes!r}")
    for row, size in sizes.items():
        if row not in rows_ or not isinstance(size, dict) or set(size) - {"train_images", "test_images"}:
            raise ConfigError(f"{at}.sizes[{row!r}] must be a row of 'rows' mapped to 'train_images' and/or 'test_images', got {size!r}")
        for key, v in size.items():
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{at}.sizes[{row!r}].{key} must be an integer >= 1, got {v!r}")
    attacks = table.get("attacks", {})
    if not isinstance(attacks, dict):
        raise ConfigError(f"{at}.attacks must map rows to their settings, got {attacks!r}")
    for row, given in attacks.items():
        if row not in rows_:
            raise ConfigError(f"{at}.attacks[{row!r}]: not a row of 'rows'")
        if row == "dlg" and isinstance(given, dict) and set(given) & set(_SWEEP_SETS_DLG):
            raise ConfigError(f"{at}.attacks['dlg'] sets {sorted(set(given) & set(_SWEEP_SETS_DLG))}: Table 2 reconstructs every "
                              "image of the subset, one per gradient")
        try:
            st.resolve(_SETTINGS[row], given, f"{at}.attacks[{row!r}]")
        except (TypeError, ValueError) as e:
            raise ConfigError(str(e)) from None
    if not any(e["defense"] == "pgsl" for e in plan["defenses"]):
        raise ConfigError(f"{at}: its pgsl row comes from the plan's --defense pgsl points, and the plan has none")


def _size(table: dict, row: str) -> Tuple[int, int]:
    own = table.get("sizes", {}).get(row, {})
    return own.get("train_images", table.get("train_images", 1000)), own.get("test_images", table.get("test_images", 500))


def units(plan: dict) -> List[Unit]:
    """Every unit of the plan's Table 2 (none without a ``table2`` section): per seed, each row,
    then one clean control per distinct subset size."""
    table = plan.get("table2")
    if table is None:
        return []
    out = []
    for seed in plan["seeds"]:
        sizes = []
        for row in table.get("rows", list(ROWS)):
            n_train, n_test = _size(table, row)
            out.append(Unit(row, seed, n_train, n_test))
            if (n_train, n_test) not in sizes:
                sizes.append((n_train, n_test))
        out += [Unit("clean", seed, n_train, n_test) for n_train, n_test in sizes]
    return out


def train_argv(plan: dict, unit: Unit, data_file: str, out: str) -> List[str]:
    """``pgsl train`` on a unit's images: the undefended CNN with the plan's shared options."""
    default = Config()
    argv = ["train", "--defense", "none", "--seed", str(unit.seed), "--data", f"saved:{data_file}", "--out", out]
    for key, value in plan.get("train", {}).items():
        if key in _DATA_OPTIONS or value == getattr(default, key):
            continue
        f = next(f for f in dataclasses.fields(Config) if f.name == key)
        flag = f.metadata["flag"] or "--" + key.replace("_", "-")
        argv += [flag, ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)]
    return argv + ["--no-progress"]


def spec(plan: dict, unit: Unit) -> dict:
    table = plan["table2"]
    settings = table.get("attacks", {}).get(unit.row) if unit.row in ROWS else None
    return {"unit": dataclasses.asdict(unit), "settings": settings, "train": train_argv(plan, unit, "DATA", "RUN")[1:]}


def build(plan: dict, unit: Unit, source_run: str, path: str, *, progress: bool = True) -> None:
    """Write ``unit``'s images (train and test splits replaced, validation clean) to ``path``,
    made against the undefended run in ``source_run``."""
    from .data import Dataset, Split
    from .runs import restore

    torch.manual_seed(unit.seed)
    source = restore(source_run)
    dataset = source.dataset
    train = dataset.train.subset(torch.arange(min(unit.train_images, len(dataset.train))))
    test = dataset.test.subset(torch.arange(min(unit.test_images, len(dataset.test))))
    given = plan["table2"].get("attacks", {}).get(unit.row)
    notes = list(dataset.notes)
    if unit.row == "clean":
        made = [train.x, test.x]
        how = "clean images (the control)"
    elif unit.row in ATTACK_ROWS:
        params = st.resolve(_SETTINGS[unit.row], given, f"table2.attacks[{unit.row!r}]")
        model = robustness.RunModel(source)
        made = [_craft(model, unit.row, part, params, progress) for part in (train, test)]
        how = f"{unit.row} against the undefended run of seed {unit.seed} ({dataclasses.asdict(params)})"
    elif unit.row == "decoder":
        attack = inversion.DecoderAttack(given)
        both = Split(torch.cat([train.x, test.x]), torch.cat([train.y, test.y]))
        view = attack.observe(source, both, source.messages(both.x), dataset.val)
        out = attack.reconstruct(view, generator=torch.Generator().manual_seed(unit.seed), progress=progress)
        made = [out[: len(train)], out[len(train):]]
        how = attack.how(view) + " (auxiliary images: the validation slice)"
    else:  # dlg
        made, how = [], ""
        for part in (train, test):
            attack = inversion.GradientLeakageAttack(dict(given or {}, batches=len(part), batch_size=1))
            view = attack.observe(source, part, source.messages(part.x), dataset.val)
            made.append(attack.reconstruct(view, generator=torch.Generator().manual_seed(unit.seed), progress=progress))
            how = attack.how(view)
    notes.append(f"Table 2 row {unit.row}: {len(train)} train and {len(test)} test images replaced by {how}; "
                 "the validation slice is clean")
    saved = Dataset(f"{dataset.name}-table2-{unit.row}", dataset.classes, Split(made[0].detach().float().clamp(0, 1), train.y),
                    dataset.val, Split(made[1].detach().float().clamp(0, 1), test.y), notes)
    data_mod.save(saved, path)


def _craft(model, attack: str, part, params, progress: bool) -> torch.Tensor:
    from tqdm.auto import tqdm

    out = []
    with tqdm(total=len(part), desc=f"table2 {attack}", unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for xb, yb in zip(part.x.split(100), part.y.split(100)):
            out.append(robustness.craft(model, attack, xb, yb, params))
            bar.update(len(xb))
    return torch.cat(out)


def _interval(bits: List[str]) -> Optional[List[float]]:
    if not bits or len({len(b) for b in bits}) != 1:
        return None
    return [100 * v for v in bootstrap_interval([[float(c) for c in b] for b in bits])]


def _on_common_seeds(a: List[dict], b: List[dict]) -> Optional[Tuple[List[List[float]], List[List[float]], List[int]]]:
    """``a``'s and ``b``'s per-image correctness (0/1) on the seeds both hold, in seed order, and
    those seeds; None when they share none or a shared seed lacks its ``test_correct``."""
    bits_a, bits_b = ({m["seed"]: m.get("test_correct") for m in x} for x in (a, b))
    common = sorted(set(bits_a) & set(bits_b))
    if not common or any(not bits_a[s] or not bits_b[s] for s in common):
        return None
    return ([[float(c) for c in bits_a[s]] for s in common], [[float(c) for c in bits_b[s]] for s in common], common)


def _percent(d: dict) -> dict:
    return {"difference": 100 * d["difference"], "ci95": [100 * v for v in d["ci95"]], "significant": d["significant"],
            "seeds": d["seeds"]}


def rows(plan: dict, done_units: Dict[Unit, dict], reference: List[dict], pgsl: List[dict]) -> Tuple[List[dict], dict]:
    """Table 2 as rows (``row``, ``ours`` mean accuracy in percent over the seeds, ``ours_ci95``
    its two-level bootstrap interval over seeds and test images, ``paper`` the paper's figure for
    this dataset or None, the seeds and subset sizes, and for built rows the clean control at the
    same sizes and the row's difference from it, paired by seed and test image), and the paper's
    claims against ours: PGSL minus the row on the seeds both hold, its interval a two-level
    bootstrap with the seeds paired and each side's own test images resampled. ``reference`` /
    ``pgsl``: the done points (one per seed) of the undefended run and of PGSL at its defaults."""
    dataset = "mias" if str(plan.get("train", {}).get("data", "mnist5k")).startswith("mias") else "mnist"
    paper = PAPER["table2_accuracy_percent"]
    table = plan["table2"]
    out = []

    def entry(row, members, sizes=None):
        accs = [m["accuracy"] for m in members]
        e = {"row": row, "ours": 100 * float(np.mean(accs)) if accs else None,
             "ours_ci95": _interval([m.get("test_correct") for m in members]) if accs and all(m.get("test_correct") for m in members) else None,
             "paper": paper.get(row, {}).get(dataset), "seeds": [m["seed"] for m in members]}
        if sizes:
            e["train_images"], e["test_images"] = sizes
        return e

    for row in table.get("rows", list(ROWS)):
        sizes = _size(table, row)
        members = [r for u, r in done_units.items() if u.row == row]
        e = entry(row, members, sizes)
        controls = [r for u, r in done_units.items() if u.row == "clean" and (u.train_images, u.test_images) == sizes]
        e["clean_same_size"] = entry("clean", controls)["ours"] if controls else None
        paired = _on_common_seeds(members, controls)
        e["minus_clean"] = (_percent(paired_difference(paired[0], paired[1]))
                            if paired and len({len(b) for b in paired[0] + paired[1]}) == 1 else None)
        out.append(e)
    e = entry("pgsl", pgsl)
    if dataset == "mias":
        e["paper"] = PAPER["pgsl_mias_accuracy_percent"]
    out.append(e)
    out.append(entry("none", reference))
    claims = {}
    for row, claimed in (("jsma", 36.9), ("dlg", 17.5)):
        common = _on_common_seeds(pgsl, [r for u, r in done_units.items() if u.row == row])
        if common:
            d = _percent(unpaired_difference(common[0], common[1]))
            claims[f"pgsl_minus_{row}"] = {"ours": d["difference"], "ci95": d["ci95"], "seeds": common[2], "paper_mias": claimed}
    return out, claims


def label_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, *,
                weight_decay: float = 1e-3, iterations: int = 300) -> torch.Tensor:
    """A linear probe: multinomial logistic regression (L2 ``weight_decay``, L-BFGS) fit on the
    flattened ``train_x`` and its labels; which of ``test_x`` it labels right (bool per image)."""
    xtr, xte = train_x.flatten(1).double(), test_x.flatten(1).double()
    classes = int(max(train_y.max(), test_y.max())) + 1
    w = torch.zeros(xtr.shape[1], classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=iterations, line_search_fn="strong_wolfe")

    def loss():
        opt.zero_grad()
        value = torch.nn.functional.cross_entropy(xtr @ w + b, train_y) + weight_decay * (w ** 2).sum()
        value.backward()
        return value

    with torch.enable_grad():
        opt.step(loss)
    with torch.no_grad():
        return (xte @ w + b).argmax(1) == test_y


def perturbation_probe(folders: List[str]) -> List[dict]:
    """How much of the label an attack row's perturbation alone carries. For each attack unit
    (``<row>-s<seed>``) under ``folders`` (a sweep's ``table2`` folders, whose ``images.pt`` are kept
    on the machine that built them) and its clean control of the same sizes and seed:
    :func:`label_probe` fit on the train perturbations (attacked minus clean) and scored on the test
    ones, beside the same probe on the clean and on the attacked images. One entry per row: mean
    accuracy (%) over seeds with a two-level bootstrap interval over seeds and test images, and
    the pixels the attack changed per image."""
    found: Dict[str, Dict[int, str]] = {}
    for folder in folders:
        for path in sorted(glob.glob(os.path.join(folder, "*-s*", "images.pt"))):
            m = re.fullmatch(r"(\w+)-s(\d+)", os.path.basename(os.path.dirname(path)))
            if m and m.group(1) in ATTACK_ROWS:
                found.setdefault(m.group(1), {})[int(m.group(2))] = path
    out = []
    for row in (r for r in ATTACK_ROWS if r in found):
        bits = {"perturbation": [], "clean": [], "attacked": []}
        changed, seeds = [], []
        for seed, path in sorted(found[row].items()):
            attacked = data_mod.load_saved(path)
            n_train, n_test = len(attacked.train), len(attacked.test)
            control = Unit("clean", seed, n_train, n_test).name
            clean_path = next((c for c in (os.path.join(f, control, "images.pt") for f in folders) if os.path.exists(c)), None)
            if clean_path is None:
                raise FileNotFoundError(f"perturbation_probe: {path} has no clean control {control}/images.pt in {folders}")
            clean = data_mod.load_saved(clean_path)
            if not (torch.equal(clean.train.y, attacked.train.y) and torch.equal(clean.test.y, attacked.test.y)):
                raise ValueError(f"perturbation_probe: {path} and {clean_path} hold different digits")
            parts = {"perturbation": (attacked.train.x - clean.train.x, attacked.test.x - clean.test.x),
                     "clean": (clean.train.x, clean.test.x), "attacked": (attacked.train.x, attacked.test.x)}
            for key, (xtr, xte) in parts.items():
                bits[key].append(label_probe(xtr, attacked.train.y, xte, attacked.test.y).double().tolist())
            changed.append(float((parts["perturbation"][0].abs() > 1e-6).flatten(1).sum(1).double().mean()))
            seeds.append(seed)
        entry = {"row": row, "seeds": seeds, "pixels_changed": float(np.mean(changed))}
        for key, b in bits.items():
            entry[key] = 100 * float(np.mean(b))
            entry[f"{key}_ci95"] = [100 * v for v in bootstrap_interval(b)]
        out.append(entry)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m pgsl.table2 PLAN_JSON SOURCE_RUN ROW SEED TRAIN_IMAGES TEST_IMAGES OUT_FILE``:
    one unit's images (what ``pgsl sweep`` starts in a process of its own)."""
    import json

    plan_path, source, row, seed, n_train, n_test, path = argv if argv is not None else sys.argv[1:]
    with open(plan_path) as f:
        plan = json.load(f)
    build(plan, Unit(row, int(seed), int(n_train), int(n_test)), source, path, progress=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
