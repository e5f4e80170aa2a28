"""Several training seeds of one configuration as one report entry, and every defence compared
with the undefended entry as a paired difference with its 95 % interval over seeds and images.

Runs whose configurations differ only in ``--seed`` (and where they were written) form a group,
named as its first run is; each is evaluated on the same targets, then
:func:`aggregate_privacy` and :func:`aggregate_robustness` pool them: a scalar metric is the mean
over seeds, and an interval is a two-level bootstrap of the mean (seeds resampled, then images
resampled within them), so it holds both the training seed's and the images' variation.
:func:`compare` pairs each group with the undefended one, seed with seed (in seed order) and image
with image, and calls a difference significant when its interval excludes 0.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..runs import Run
from .inversion import ATTACKS, KNOWLEDGE_LEVELS, knowledge_levels

__all__ = ["aggregate_privacy", "aggregate_robustness", "bootstrap_interval", "compare", "group_runs", "paired_difference",
           "unpaired_difference"]

# Options that do not make two runs different configurations.
NOT_CONFIGURATION = ("seed", "out", "resume", "run_id", "progress", "device", "distributed", "timeout")
RESAMPLES = 4000
PSNR_CAP = 100.0  # dB: an exact reconstruction's infinite PSNR counted as this in means and intervals


def _signature(run: Run) -> str:
    cfg = run.cfg.to_json()
    return json.dumps({k: v for k, v in cfg.items() if k not in NOT_CONFIGURATION}, sort_keys=True)


def group_runs(runs: Sequence[Tuple[str, Run]]) -> Dict[str, List[Tuple[str, Run]]]:
    """``runs`` (name, run), in order, grouped by configuration: ``{group: [(member, run), ...]}``,
    each group named as its first run; a member is named ``group@s<seed>`` when its group has
    several, else as the group. A run whose seed its group already holds starts a new group."""
    groups: Dict[str, List[Tuple[str, Run]]] = {}
    keys: Dict[str, str] = {}
    for name, run in runs:
        key = _signature(run)
        home = next((g for g, k in keys.items() if k == key and all(r.cfg.seed != run.cfg.seed for _, r in groups[g])), None)
        if home is None:
            keys[name] = key
            groups[name] = [(name, run)]
        else:
            groups[home].append((name, run))
    out: Dict[str, List[Tuple[str, Run]]] = {}
    for group, members in groups.items():
        members = sorted(members, key=lambda m: m[1].cfg.seed)
        out[group] = [(f"{group}@s{r.cfg.seed}" if len(members) > 1 else group, r) for _, r in members]
    return out


def _bootstrap_means(arrays: Sequence[np.ndarray], resamples: int, seed: int) -> List[np.ndarray]:
    """Each ``(S, N_i)`` array's mean under ``resamples`` two-level bootstrap draws: S seeds drawn
    with replacement (the same draw for every array), then each array's own N_i images within
    them. One ``(resamples,)`` array of means per input."""
    s = len(arrays[0])
    rng = np.random.default_rng(seed)
    means = [np.empty(resamples) for _ in arrays]
    for start in range(0, resamples, 500):
        b = min(500, resamples - start)
        seeds = rng.integers(0, s, (b, s))
        for v, out in zip(arrays, means):
            images = rng.integers(0, v.shape[1], (b, s, v.shape[1]))
            out[start:start + b] = v[seeds[:, :, None], images].mean(axis=(1, 2))
    return means


def _percentile_interval(values: np.ndarray) -> List[float]:
    low, high = np.percentile(values, [2.5, 97.5])
    return [float(low), float(high)]


def bootstrap_interval(values, *, resamples: int = RESAMPLES, seed: int = 0) -> List[float]:
    """The 95 % percentile interval of the mean of ``values`` ``(S, N)`` (S seeds, N images each)
    under a two-level bootstrap: S seeds drawn with replacement, then N images within each."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or v.size == 0:
        raise ValueError(f"bootstrap_interval: expected an (S, N) array with S, N >= 1, got shape {v.shape}")
    return _percentile_interval(_bootstrap_means([v], resamples, seed)[0])


def paired_difference(a, b, *, seed: int = 0) -> dict:
    """``a - b`` paired seed by seed and image by image (``(S, N)`` each; the first
    ``min(S_a, S_b)`` seeds): the mean difference, its :func:`bootstrap_interval` and whether
    that interval excludes 0."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    s = min(len(a), len(b))
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"paired_difference: expected the same images, got {a.shape[1:]} and {b.shape[1:]}")
    d = a[:s] - b[:s]
    low, high = bootstrap_interval(d, seed=seed)
    return {"difference": float(d.mean()), "ci95": [low, high], "significant": bool(low > 0 or high < 0), "seeds": s, "images": d.shape[1]}


def unpaired_difference(a, b, *, resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """``mean(a) - mean(b)`` for two different image sets, ``(S, N_a)`` and ``(S, N_b)``, seed
    ``i`` of ``a`` paired with seed ``i`` of ``b`` (the first ``min(S_a, S_b)``): a two-level
    bootstrap draws the seeds once for both, then ``a``'s and ``b``'s images each within their
    own set. The mean difference, its 95 % percentile interval and whether it excludes 0."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or 0 in a.shape or 0 in b.shape:
        raise ValueError(f"unpaired_difference: expected two (S, N) arrays with S, N >= 1, got shapes {a.shape} and {b.shape}")
    s = min(len(a), len(b))
    a, b = a[:s], b[:s]
    mean_a, mean_b = _bootstrap_means([a, b], resamples, seed)
    low, high = _percentile_interval(mean_a - mean_b)
    return {"difference": float(a.mean() - b.mean()), "ci95": [low, high], "significant": bool(low > 0 or high < 0), "seeds": s}


def _bits(correct: str) -> List[float]:
    return [1.0 if c == "1" else 0.0 for c in correct]


def _mean_or_none(values: Sequence) -> Optional[float]:
    if any(v is None for v in values):
        return None
    return float(np.mean([min(v, PSNR_CAP) if isinstance(v, float) and math.isinf(v) else v for v in values]))


def _pool_metrics(metrics: Sequence[dict]) -> dict:
    """Reconstruction metrics of several seeds: scalars averaged, per-image lists one per seed."""
    pooled = {}
    for key, value in metrics[0].items():
        if key == "per_image":
            pooled[key] = {k: [m[key][k] for m in metrics] for k in value}
        elif key == "images":
            pooled[key] = value
        elif isinstance(value, (int, float)) or value is None:
            pooled[key] = _mean_or_none([m.get(key) for m in metrics])
        else:
            pooled[key] = value
    return pooled


def _per_image(result: dict, metric: str) -> np.ndarray:
    """``(S, N)`` per-image values of ``metric`` against the clean image (PSNR capped)."""
    per = result["metrics_vs_clean"]["per_image"][metric]
    rows = per if per and isinstance(per[0], list) else [per]
    return np.minimum(np.asarray(rows, dtype=np.float64), PSNR_CAP)


def aggregate_privacy(members: Dict[str, dict], seeds: Sequence[int]) -> dict:
    """One group's privacy entry from its members' (``{attack: result}`` each, in seed order):
    the first member's descriptions, metrics pooled (:func:`_pool_metrics`), ``per_seed`` PSNR /
    SSIM, and the knowledge levels with 95 % intervals of their best attack's mean PSNR and SSIM."""
    results = list(members.values())
    if len(results) == 1:
        entry = copy.deepcopy(results[0])
    else:
        entry = {}
        for attack in (a for a in results[0] if a in ATTACKS):
            parts = [r[attack] for r in results]
            merged = {k: v for k, v in parts[0].items() if not k.startswith(("metrics_", "baseline_"))}
            for key in ("metrics_vs_clean", "metrics_vs_encoded", "baseline_vs_clean"):
                merged[key] = _pool_metrics([p[key] for p in parts])
            merged["seconds"] = sum(p["seconds"] for p in parts)
            merged["cpu_seconds"] = sum(p["cpu_seconds"] for p in parts)
            merged["per_seed"] = {str(s): {k: p["metrics_vs_clean"][k] for k in ("psnr", "ssim", "classifier_accuracy")}
                                  for s, p in zip(seeds, parts)}
            entry[attack] = merged
    levels = knowledge_levels({a: r for a, r in entry.items() if a in ATTACKS})
    for level in levels:
        best = entry[level["best_attack"]]
        level["psnr_vs_clean_ci95"] = bootstrap_interval(_per_image(best, "psnr"))
        level["ssim_vs_clean_ci95"] = bootstrap_interval(_per_image(best, "ssim"))
        level["seeds"] = len(results)
    entry["knowledge_levels"] = levels
    return entry


def aggregate_robustness(members: Dict[str, dict]) -> dict:
    """One group's robustness entry from its members' (``evaluate_robustness``'s ``results``
    entries, in seed order): accuracies over all seeds' images, intervals by
    :func:`bootstrap_interval`, ``correct`` one string per seed, ``per_seed`` accuracies."""
    results = list(members.values())
    first = results[0]
    if len(results) == 1:
        return copy.deepcopy(first)

    def pooled(correct_of: Callable[[dict], Dict[str, str]]) -> Tuple[dict, dict, dict]:
        outputs = correct_of(first)
        rows = {o: np.asarray([_bits(correct_of(r)[o]) for r in results]) for o in outputs}
        return ({o: float(v.mean()) for o, v in rows.items()}, {o: bootstrap_interval(v) for o, v in rows.items()},
                {o: [correct_of(r)[o] for r in results] for o in outputs})

    entry = {k: first[k] for k in ("defense", "streams")}
    entry["folders"] = [r["folder"] for r in results]
    entry["folder"] = first["folder"]
    entry["clean"], entry["clean_ci95"], entry["clean_correct"] = pooled(lambda r: r["clean_correct"])
    entry["attacks"] = {}
    for attack, by_setting in first["attacks"].items():
        entry["attacks"][attack] = {}
        for setting, r0 in by_setting.items():
            parts = [r["attacks"][attack][setting] for r in results]
            acc, ci, correct = pooled(lambda r, a=attack, s=setting: r["attacks"][a][s]["correct"])
            entry["attacks"][attack][setting] = {
                "source": [p["source"] for p in parts],
                "images": r0.get("images"),
                "accuracy": acc,
                "accuracy_ci95": ci,
                "correct": correct,
                "per_seed": [p["accuracy"] for p in parts],
                "source_accuracy": _mean_or_none([p["source_accuracy"] for p in parts]),
                "perturbation": {k: _mean_or_none([p["perturbation"][k] for p in parts]) for k in r0["perturbation"]},
                "seconds": sum(p["seconds"] for p in parts),
                "cpu_seconds": sum(p["cpu_seconds"] for p in parts),
                **({"note": r0["note"]} if "note" in r0 else {}),
            }
    return entry


def _decision(correct: Dict[str, object]) -> np.ndarray:
    """The decision's per-image correctness ``(S, N)`` ("fused": for one stream, its own)."""
    c = correct.get("fused", next(iter(correct.values())))
    return np.asarray([_bits(row) for row in (c if isinstance(c, list) else [c])])


def compare(report: dict, reference: str) -> dict:
    """Every group but ``reference`` (the undefended one) against it, paired: the decision's
    accuracy, clean and under every attack and setting both measured, and per knowledge level
    the best attack's PSNR and SSIM against the clean image. ``{group: {"clean_accuracy",
    "robustness": {attack: {setting: diff}}, "privacy": {level: {"psnr", "ssim"}}}}``, each diff
    :func:`paired_difference`'s (group minus reference)."""
    out: Dict[str, dict] = {}
    rob = report.get("robustness", {}).get("results", {})
    privacy = report.get("privacy", {})
    for group in report["runs"]:
        if group == reference:
            continue
        entry: Dict[str, object] = {}
        if group in rob and reference in rob:
            mine, base = rob[group], rob[reference]
            entry["clean_accuracy"] = paired_difference(_decision(mine["clean_correct"]), _decision(base["clean_correct"]))
            entry["robustness"] = {
                attack: {
                    setting: paired_difference(_decision(r["correct"]), _decision(base["attacks"][attack][setting]["correct"]))
                    for setting, r in by_setting.items() if setting in base["attacks"].get(attack, {})
                }
                for attack, by_setting in mine["attacks"].items() if attack in base["attacks"]
            }
        if group in privacy and reference in privacy:
            levels = {}
            base_levels = {lv["level"]: lv for lv in privacy[reference].get("knowledge_levels", [])}
            for lv in privacy[group].get("knowledge_levels", []):
                if lv["level"] not in base_levels:
                    continue
                a, b = privacy[group][lv["best_attack"]], privacy[reference][base_levels[lv["level"]]["best_attack"]]
                pairs = {m: (_per_image(a, m), _per_image(b, m)) for m in ("psnr", "ssim")}
                n = min(pairs["psnr"][0].shape[1], pairs["psnr"][1].shape[1])  # every attack takes the first targets
                levels[lv["level"]] = {m: paired_difference(x[:, :n], y[:, :n]) for m, (x, y) in pairs.items()}
            entry["privacy"] = levels
        out[group] = entry
    return out


def comparison_markdown(comparisons: dict, reference: str) -> List[str]:
    """The paired differences as a table, significant ones in bold."""
    lines = [
        f"Each run minus `{reference}`, paired seed by seed and image by image; 95 % interval from a two-level bootstrap "
        "(seeds, then images); **bold**: the interval excludes 0. Accuracy is the decision's (fused for three-stream runs); "
        "privacy is the best attack's PSNR (dB) / SSIM against the clean image at each knowledge level (lower = more private).",
        "",
        "| run | measure | difference | 95 % interval | seeds x images |",
        "| --- | --- | ---: | --- | --- |",
    ]

    def row(group: str, measure: str, d: dict, digits: int = 3) -> str:
        value = f"{d['difference']:+.{digits}f}"
        value = f"**{value}**" if d["significant"] else value
        return (f"| {group} | {measure} | {value} | [{d['ci95'][0]:+.{digits}f}, {d['ci95'][1]:+.{digits}f}] | "
                f"{d['seeds']} x {d['images']} |")

    for group, entry in comparisons.items():
        if "clean_accuracy" in entry:
            lines.append(row(group, "clean accuracy", entry["clean_accuracy"]))
        for attack, by_setting in entry.get("robustness", {}).items():
            for setting, d in by_setting.items():
                lines.append(row(group, f"accuracy under {attack} ({setting})", d))
        for level, d in entry.get("privacy", {}).items():
            index = KNOWLEDGE_LEVELS.index(level) if level in KNOWLEDGE_LEVELS else -1
            lines.append(row(group, f"PSNR, level {index}: {level}", d["psnr"], 2))
            lines.append(row(group, f"SSIM, level {index}: {level}", d["ssim"]))
    return lines + [""]
