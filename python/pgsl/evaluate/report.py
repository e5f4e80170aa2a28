"""The evaluation protocol and its report.

Protocol (the same for every run compared):

- Images: the runs' common test split. Its first half is the attackers' auxiliary data (same
  distribution, disjoint from training and from the targets); reconstruction and robustness
  targets are taken, in order, from the second half.
- Privacy: every inversion attack against every run, each seeing what that attacker would really
  see (:mod:`pgsl.evaluate.inversion`); metrics against the clean originals and against the
  image the client actually encoded (the JSMA-attacked one for pgsl).
- Robustness: every adversarial attack on the same targets, transferred from the undefended run
  (``--defense none``) and adaptive against each run (:mod:`pgsl.evaluate.robustness`).
- mu sweep: on the first pgsl run (:mod:`pgsl.evaluate.mu_sweep`).

Outputs in ``--out``: ``report.json`` (every number, with the settings that produced it),
``report.md`` (the tables, the paper's numbers and how its protocol differs), and PNG figures.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Dict, List, Optional, Sequence

import torch

from ..data import Split
from ..config import NOISY, PGSL_DEFENSES, SEED_LIMIT
from ..errors import RunError
from ..rundir import git_commit, versions
from ..runs import Run, restore
from . import inversion, mu_sweep, robustness, seeds as seeding

__all__ = ["default_evaluations", "evaluate", "markdown", "EVALUATIONS", "PAPER"]

# The research protocol's robustness targets (``--full``; the default is robustness.DEFAULT_IMAGES).
FULL_ROBUST_IMAGES = 500

# Every evaluation by name, from the two attack registries, in the report's order.
EVALUATIONS = tuple(inversion.ATTACKS) + tuple(robustness.ATTACKS) + ("musweep",)

# The PGSL paper's numbers (Khowaja et al. 2022), labelled as the paper's. Its Table 2 is the
# accuracy of a CNN trained and tested on images attacked by each attack (DLG: reconstructed),
# not accuracy under attack; pgsl.table2 (``pgsl sweep``) runs that protocol.
PAPER = {
    "table2_accuracy_percent": {  # Table 2, MIAS / MNIST
        "jsma": {"mias": 46.3, "mnist": 65.4},
        "cw": {"mias": 51.2, "mnist": 58.6},
        "bim": {"mias": 56.8, "mnist": 81.2},
        "fgsm": {"mias": 61.9, "mnist": 83.8},
        "dlg": {"mias": 65.7, "mnist": 88.3},
    },
    "pgsl_mias_accuracy_percent": 83.2,  # the text: +36.9 over JSMA, +17.5 over DLG on MIAS
    "mu": 0.55,
}

PROTOCOL_DIFFERENCES = [
    "The paper trains on full MNIST and 1024x1024 MIAS; the default here is mnist5k (5,000 real digits, 3,600 "
    "training images) for a few epochs on a 2-core CPU (`--data mnist:DIR`, more `--epochs` and `--full` for the "
    "full protocol).",
    "The paper does not state its attack budgets (epsilon, steps, confidence) or whether its attacks were adaptive; "
    "ours are listed with every number, transferred from the undefended model and adaptive with BPDA.",
    "The paper's Table 2 is not accuracy under attack: it reports the CNN 'trained directly with the attacked "
    "images, the images constructed using DLG and DCGAN from maps acquired using split layer, and the proposed PGSL "
    "method'. This report measures trained runs attacked at test time (every stream, the fused decision and the "
    "baseline), so no number here is comparable with it; `pgsl sweep`'s Table 2 (pgsl.table2) runs the paper's "
    "protocol.",
    "The paper's reconstruction MSE comes from its own inversion setup; ours come from the four attacks below, each "
    "given exactly what its attacker would see.",
]


# --------------------------------------------------------------------------- the protocol


def _split_test(run: Run, n_targets: int) -> tuple[Split, Split]:
    test = run.dataset.test
    half = len(test) // 2
    if half < 1 or len(test) - half < 1:
        raise RunError(f"--run {run.folder}: its test split has {len(test)} images; the protocol needs at least 2")
    aux = test.subset(torch.arange(half))
    targets = test.subset(torch.arange(half, min(len(test), half + n_targets)))
    return aux, targets


def _name(run: Run, names: Dict[str, int]) -> str:
    base = run.cfg.defense if run.cfg.defense not in NOISY else f"{run.cfg.defense}({run.cfg.noise_scale:g})"
    if run.cfg.defense == "nopeek":
        base = f"nopeek({run.cfg.nopeek_weight:g})"
    names[base] = names.get(base, 0) + 1
    return base if names[base] == 1 else f"{base}#{names[base]}"


def default_evaluations(runs: Sequence[Run]) -> List[str]:
    """What ``pgsl evaluate`` runs when ``--attacks`` is not given: every evaluation of
    :data:`EVALUATIONS` that applies to ``runs``; rpca's mu sweep needs a pgsl run among them."""
    pgsl = any(r.defense in PGSL_DEFENSES for r in runs)
    return [e for e in EVALUATIONS if e != "musweep" or pgsl]


def evaluate(
    folders: Sequence[str],
    *,
    out: str,
    evaluations: Optional[Sequence[str]] = None,
    images: int = 64,
    robust_images: Optional[int] = None,
    full: bool = False,
    seed: int = 0,
    progress: bool = True,
    resume: bool = False,
) -> dict:
    """Evaluate the runs in ``folders`` and write the report into ``out``; returns report.json's dict.

    ``evaluations``: names from :data:`EVALUATIONS`; ``None``, every one that applies to the runs
    (:func:`default_evaluations`: the mu sweep only with a pgsl run among them).

    The report is written as each part finishes (every run's privacy, robustness, the mu sweep);
    ``resume=True`` keeps the parts an earlier, interrupted call with the same runs and protocol
    wrote into ``out`` and computes the rest. Each part is seeded on its own, so a resumed report
    holds the numbers an uninterrupted one would."""
    if robust_images is None:
        robust_images = FULL_ROBUST_IMAGES if full else robustness.DEFAULT_IMAGES
    if isinstance(folders, str):
        folders = [folders]
    if not folders:
        raise RunError("--run / --compare: expected at least one run folder")
    if isinstance(evaluations, str):
        evaluations = [e.strip() for e in evaluations.split(",") if e.strip()]
    if evaluations is not None and not evaluations:
        raise RunError(f"--attacks: expected some of {', '.join(EVALUATIONS)}, got none")
    unknown = [e for e in evaluations or () if e not in EVALUATIONS]
    if unknown:
        raise RunError(f"--attacks: unknown {', '.join(map(str, unknown))}; expected some of {', '.join(EVALUATIONS)}")
    for option, value in (("--images", images), ("--robust-images", robust_images)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RunError(f"{option}: expected an integer >= 1, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise RunError(f"--seed: expected an integer from 0 to {SEED_LIMIT - 1}, got {seed!r}")
    if os.path.exists(out) and not os.path.isdir(out):
        raise RunError(f"--out {out}: is a file; expected a folder")
    for folder in folders:
        if not os.path.isdir(folder):
            raise RunError(f"--run {folder}: no such run folder")
    named = []
    seen: Dict[str, int] = {}
    for folder in folders:
        run = restore(folder)
        named.append((_name(run, seen), run))
    datas = {r.cfg.data for _, r in named}
    if len(datas) > 1:
        raise RunError(f"--compare: the runs were trained on different data ({', '.join(sorted(datas))}); compare runs of one dataset")
    applicable = default_evaluations([r for _, r in named])
    if evaluations is None:
        evaluations = applicable
    if "musweep" in evaluations and "musweep" not in applicable:
        raise RunError("--attacks musweep: the mu sweep needs a --defense pgsl run among the runs")
    # Runs differing only in their seed are one entry; each is evaluated, then they are pooled.
    groups = seeding.group_runs(named)
    members: Dict[str, Run] = {m: r for group in groups.values() for m, r in group}
    runs: Dict[str, Run] = {g: group[0][1] for g, group in groups.items()}  # each group's first seed
    several = any(len(group) > 1 for group in groups.values())
    first = named[0][1]
    aux, targets = _split_test(first, max(images, robust_images))
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise RunError(f"--out {out}: cannot be created ({e.strerror})") from None
    started = time.perf_counter()

    def write_so_far() -> None:
        """The report as it stands: an interrupted evaluation keeps every part that finished."""
        report["seconds"] = time.perf_counter() - started
        _write_report(report, out)
        if reconstructions:
            torch.save(reconstructions, os.path.join(out, "reconstructions.pt"))

    def run_entry(group) -> dict:
        rs = [r for _, r in group]
        accuracy = [r.metrics["test_accuracy"] for r in rs]
        streams = [r.metrics.get("stream_accuracy") or {} for r in rs]
        entry = {
            "folder": os.path.abspath(rs[0].folder),
            "defense": rs[0].cfg.defense,
            "data": rs[0].cfg.data,
            "epochs": rs[0].metrics["epochs"],
            "test_accuracy": sum(accuracy) / len(accuracy),
            "stream_accuracy": {k: sum(s[k] for s in streams) / len(streams) for k in streams[0]} if all(streams) else None,
            "git_commit": rs[0].metrics.get("git_commit"),
            "seeds": [r.cfg.seed for r in rs],
        }
        if len(rs) > 1:
            entry["folders"] = [os.path.abspath(r.folder) for r in rs]
            entry["test_accuracy_per_seed"] = accuracy
        return entry

    report: dict = {
        "runs": {g: run_entry(group) for g, group in groups.items()},
        "protocol": {
            "auxiliary_images": len(aux),
            "targets": "the second half of the test split, in order",
            "inversion_images": min(images, len(targets)),
            "robustness_images": min(robust_images, len(targets)),
            "full": full,
            "seed": seed,
        },
        "versions": versions(),
        "git_commit": git_commit(),
        "paper": PAPER,
        "protocol_differences": PROTOCOL_DIFFERENCES,
    }
    if several:
        report["seed_runs"] = {"privacy": {}, "robustness": {}}
    figures: Dict[str, str] = {}
    inversion_names = [e for e in evaluations if e in inversion.ATTACKS]
    reconstructions: Dict[str, Dict[str, torch.Tensor]] = {}
    earlier, earlier_reconstructions = _earlier_report(out, report) if resume else ({}, {})
    earlier_privacy = earlier.get("seed_runs", {}).get("privacy") or earlier.get("privacy", {})
    if inversion_names:
        member_privacy: Dict[str, dict] = {}
        dcor: Dict[str, float] = {}
        if several:
            report["seed_runs"]["dcor_image_message"] = dcor
        inv_targets = targets.subset(torch.arange(min(images, len(targets))))
        settings = inversion.FULL_SETTINGS if full else None
        from .metrics import bias_corrected_dcor2, evaluator_classifier

        # The evaluator's classifier: trained on images neither the surrogate nor the targets hold.
        known = Split(torch.cat([first.dataset.val.x, aux.x]), torch.cat([first.dataset.val.y, aux.y]))
        classifier = evaluator_classifier(known, num_classes=first.dataset.num_classes, seed=seed)
        with torch.no_grad():
            ceiling = float((classifier(inv_targets.x).argmax(1) == inv_targets.y).double().mean())
        report["protocol"]["classifier"] = {
            "architecture": "EvaluatorMLP (784-256-128-10 perceptron), not the surrogate's CNN",
            "trained_on": f"the validation slice and the auxiliary images ({len(known)} images, disjoint from the client's "
                          "training shard and from the targets)",
            "accuracy_on_clean_targets": ceiling,
        }
        report["privacy"] = {}
        for group_name, group in groups.items():
            for name, run in group:
                done = earlier_privacy.get(name, {})
                if all(a in done for a in inversion_names) and set(inversion_names) <= set(earlier_reconstructions.get(name, {})):
                    member_privacy[name] = {a: r for a, r in done.items() if a in inversion.ATTACKS}
                    if several:
                        report["seed_runs"]["privacy"][name] = done
                    reconstructions[name] = earlier_reconstructions[name]
                    dcor[name] = (earlier.get("seed_runs", {}).get("dcor_image_message") or {}).get(
                        name, earlier.get("runs", {}).get(name, {}).get("dcor_image_message"))
                    continue
                with torch.random.fork_rng(devices=[]):  # each run's attacks seeded alike, whatever ran before
                    torch.manual_seed(seed)
                    result = inversion.evaluate_privacy(
                        run, inv_targets, aux, attacks=inversion_names, settings=settings, classifier=classifier,
                        progress=progress, seed=seed,
                    )
                reconstructions[name] = {a: r.pop("reconstructions") for a, r in result.items()}
                member_privacy[name] = result
                dcor[name] = bias_corrected_dcor2(inv_targets.x, run.messages(inv_targets.x))
                if several:
                    report["seed_runs"]["privacy"][name] = dict(result, knowledge_levels=inversion.knowledge_levels(result))
                    write_so_far()
            report["privacy"][group_name] = seeding.aggregate_privacy({m: member_privacy[m] for m, _ in group}, report["runs"][group_name]["seeds"])
            values = [dcor[m] for m, _ in group]
            report["runs"][group_name]["dcor_image_message"] = None if any(v is None for v in values) else sum(values) / len(values)
            write_so_far()
    adversarial_names = [e for e in evaluations if e in robustness.ATTACKS]
    if adversarial_names:
        undefended = [r for r in members.values() if r.defense == "none"]
        rob_targets = targets.subset(torch.arange(min(robust_images, len(targets))))
        done = earlier.get("seed_runs", {}).get("robustness") or earlier.get("robustness") or {}
        if list(done.get("attacks", {})) != adversarial_names:
            done = {}
        # One run at a time, each seeded on its own, the transfer images crafted once and kept on
        # disk: an interrupted evaluation resumes at the next run.
        cache_path = os.path.join(out, "transfer_images.pt")
        cache = torch.load(cache_path, weights_only=True) if resume and os.path.isfile(cache_path) else {}
        cache = {k: tuple(v) for k, v in cache.items()}
        # the times of the runs an earlier call finished, then each run's as it is computed
        member_robustness: dict = dict(done, results={}) if done else {}
        for name, run in members.items():
            if name in done.get("results", {}):
                member_robustness["results"][name] = done["results"][name]
                continue
            part = robustness.evaluate_robustness(
                {name: run}, undefended=undefended, images=rob_targets, attacks=adversarial_names,
                settings=robustness.FULL_SETTINGS if full else None, progress=progress, seed=seed, transfer_cache=cache,
            )
            torch.save(cache, cache_path)
            if not member_robustness:
                member_robustness = dict(part, results={}, seconds=0.0, cpu_seconds=0.0)
            member_robustness["results"][name] = part["results"][name]
            member_robustness["seconds"] += part["seconds"]
            member_robustness["cpu_seconds"] += part["cpu_seconds"]
            if several:
                report["seed_runs"]["robustness"] = member_robustness
            else:
                report["robustness"] = member_robustness
            write_so_far()
        report["robustness"] = dict(member_robustness, results={
            g: seeding.aggregate_robustness({m: member_robustness["results"][m] for m, _ in group}) for g, group in groups.items()
        })
        if several:
            report["seed_runs"]["robustness"] = member_robustness
        write_so_far()
    reference = next((g for g, group in groups.items() if group[0][1].defense == "none"), None)
    if reference is not None and ("privacy" in report or "robustness" in report):
        report["comparisons"] = {"reference": reference, "runs": seeding.compare(report, reference)}
    pgsl_runs = [r for r in runs.values() if r.defense in PGSL_DEFENSES]
    if "musweep" in evaluations and pgsl_runs:
        report["mu_sweep"] = earlier.get("mu_sweep") or mu_sweep.sweep_mu(pgsl_runs[0], targets, progress=progress)
    # The numbers and the reconstructions first: a figure that fails must not lose the run.
    write_so_far()

    from . import figures as figs

    if reconstructions:
        shown = {g: reconstructions[group[0][0]] for g, group in groups.items() if group[0][0] in reconstructions}
        figures["reconstructions"] = figs.reconstruction_grid(runs, targets, shown, os.path.join(out, "reconstructions.png"))
    if "mu_sweep" in report:
        figures["mu_sweep"] = figs.mu_curve(report["mu_sweep"], os.path.join(out, "mu_sweep.png"), paper_mu=PAPER["mu"])
    if "robustness" in report:
        figures["accuracy"] = figs.accuracy_bars(report["robustness"], os.path.join(out, "accuracy.png"))
    if report.get("privacy"):
        figures["privacy_accuracy"] = figs.privacy_accuracy(report, os.path.join(out, "privacy_accuracy.png"))
    report["figures"] = {k: os.path.basename(v) for k, v in figures.items()}
    _write_report(report, out)
    return report


def _earlier_report(out: str, report: dict):
    """The report (and reconstructions) an interrupted evaluation left in ``out``, checked to be of
    the same runs under the same protocol as ``report``."""
    path = os.path.join(out, "report.json")
    if not os.path.isfile(path):
        raise RunError(f"--resume: {out} holds no report to continue (no report.json)")
    try:
        with open(path) as f:
            earlier = json.load(f)
        folders = {n: r.get("folders", [r["folder"]]) for n, r in earlier["runs"].items()}
        protocol = earlier["protocol"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RunError(f"--resume: {path} is not a pgsl evaluate report ({type(e).__name__}: {e})") from None
    mine = {n: r.get("folders", [r["folder"]]) for n, r in report["runs"].items()}
    if folders != mine:
        raise RunError(f"--resume: {path} evaluated other runs ({sorted(sum(folders.values(), []))}); expected {sorted(sum(mine.values(), []))}")
    for key in ("inversion_images", "robustness_images", "full", "seed", "auxiliary_images"):
        if protocol.get(key) != report["protocol"][key]:
            raise RunError(f"--resume: {path} has {key} {protocol.get(key)!r}, this evaluation {report['protocol'][key]!r}")
    recon_path = os.path.join(out, "reconstructions.pt")
    recons = torch.load(recon_path, weights_only=True) if os.path.isfile(recon_path) else {}
    return earlier, recons


def _write_report(report: dict, out: str) -> None:
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(_jsonable(report), f, indent=2)
        f.write("\n")
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(markdown(report))


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


# --------------------------------------------------------------------------- Markdown


def _fmt(value, digits=3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.{digits}f}"
    return str(value)


def markdown(report: dict) -> str:
    lines: List[str] = ["# PGSL evaluation report", ""]
    lines += [
        f"Commit `{report.get('git_commit') or 'unknown'}`, torch {report['versions']['torch']}; "
        f"{report['seconds']:.0f} s. Every number below was measured by `pgsl evaluate` with the settings listed "
        "with it; the paper's numbers are labelled as the paper's.",
        "",
        "## Runs",
        "",
        "| run | defence | data | epochs | training seeds | clean test accuracy (mean over seeds) | streams |",
        "| --- | --- | --- | ---: | --- | ---: | --- |",
    ]
    for name, r in report["runs"].items():
        streams = ", ".join(f"{s} {a:.3f}" for s, a in (r["stream_accuracy"] or {}).items()) or "-"
        per_seed = r.get("test_accuracy_per_seed")
        spread = f" ({', '.join(f'{a:.4f}' for a in per_seed)})" if per_seed else ""
        seeds = ", ".join(map(str, r.get("seeds", [])))
        lines.append(f"| {name} | {r['defense']} | {r['data']} | {r['epochs']} | {seeds} | {r['test_accuracy']:.4f}{spread} | {streams} |")
    p = report["protocol"]
    lines += [
        "",
        f"Protocol: the attackers' auxiliary data are the first {p['auxiliary_images']} test images; targets are "
        f"{p['targets']} ({p['inversion_images']} for inversion, {p['robustness_images']} for robustness)"
        + (", full-protocol settings" if p["full"] else "") + ".",
        "",
    ]
    if report.get("privacy"):
        lines += ["## Privacy: model inversion", ""]
        lines += privacy_markdown(report)
    if "robustness" in report:
        lines += ["## Accuracy under attack", ""]
        lines += robustness_markdown(report["robustness"])
    if report.get("comparisons"):
        lines += ["## Differences from the undefended run", ""]
        lines += seeding.comparison_markdown(report["comparisons"]["runs"], report["comparisons"]["reference"])
    if "mu_sweep" in report:
        lines += ["## mu sweep (the paper's Figure 3)", ""]
        lines += mu_sweep_markdown(report["mu_sweep"])
    lines += ["## The paper's numbers (another protocol)", ""]
    lines += paper_markdown(report)
    lines += ["", "Protocol differences:", ""] + [f"- {d}" for d in report["protocol_differences"]]
    if report.get("figures"):
        lines += ["", "## Figures", ""] + [f"![{k}]({v})" for k, v in report["figures"].items()]
    return "\n".join(lines) + "\n"


def attack_results(privacy_of_run: dict) -> Dict[str, dict]:
    """The per-attack entries of ``report["privacy"][run]`` (without ``knowledge_levels``)."""
    return {a: r for a, r in privacy_of_run.items() if a in inversion.ATTACKS}


def privacy_markdown(report: dict) -> List[str]:
    """The knowledge-level table (the best attack at or below each level), then every attack."""
    lines = [
        "Lower PSNR / SSIM / distance correlation / classifier accuracy = less is revealed. Each knowledge level "
        "includes the ones above it, and its row is the best attack at or below it (a stronger attacker may run "
        "every weaker attack). An attack that does not beat the mean auxiliary image has not recovered anything at "
        "its budget: that says nothing about the defence.",
        "",
    ]
    classifier = report["protocol"].get("classifier")
    if classifier:
        lines += [f"Classifier accuracy: {classifier['architecture']}, trained on {classifier['trained_on']}; on the clean "
                  f"targets it reads {_fmt(classifier['accuracy_on_clean_targets'])} (the ceiling).", ""]
    lines += ["| run | knowledge | best attack | PSNR vs clean | SSIM vs clean |", "| --- | --- | --- | ---: | ---: |"]
    for name, results in report["privacy"].items():
        for level in results.get("knowledge_levels", []):
            lines.append(f"| {name} | {level['level']} | {level['best_attack']} | {_fmt(level['psnr_vs_clean'], 2)} | "
                         f"{_fmt(level['ssim_vs_clean'])} |")
    lines += [
        "",
        "Every attack. `vs clean`: against the original image; `vs encoded`: against the image the client actually "
        "encoded (the JSMA-attacked one under pgsl); dCor: the bias-corrected squared distance correlation over the "
        "images (- where it is not defined, fewer than 4 images).",
        "",
        "| run | attack | MSE vs clean | PSNR vs clean | SSIM vs clean | dCor vs clean | classifier acc. | PSNR vs encoded | SSIM vs encoded | seconds |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, results in report["privacy"].items():
        attacks = attack_results(results)
        baseline = next((r["baseline_vs_clean"] for r in attacks.values() if "baseline_vs_clean" in r), None)
        if baseline is not None:
            lines.append(
                f"| {name} | (mean auxiliary image, no attack) | {_fmt(baseline.get('mse'), 4)} | {_fmt(baseline.get('psnr'), 2)} | "
                f"{_fmt(baseline.get('ssim'))} | {_fmt(baseline.get('dcor'))} | {_fmt(baseline.get('classifier_accuracy'))} | - | - | - |"
            )
        for attack, r in attacks.items():
            c, e = r.get("metrics_vs_clean", {}), r.get("metrics_vs_encoded", {})
            lines.append(
                f"| {name} | {attack} | {_fmt(c.get('mse'), 4)} | {_fmt(c.get('psnr'), 2)} | {_fmt(c.get('ssim'))} | "
                f"{_fmt(c.get('dcor'))} | {_fmt(c.get('classifier_accuracy'))} | {_fmt(e.get('psnr'), 2)} | "
                f"{_fmt(e.get('ssim'))} | {_fmt(r.get('seconds'), 0)} |"
            )
    lines += ["", "dCor(image, message), the dependence NoPeek minimises, on the inversion targets (bias-corrected): "
              + ", ".join(f"{n} {_fmt(r.get('dcor_image_message'))}" for n, r in report["runs"].items()) + ".", ""]
    lines += ["How:", ""]
    for attack, r in attack_results(next(iter(report["privacy"].values()))).items():
        lines.append(f"- **{attack}**: {r.get('how', '')} Settings: `{json.dumps(_jsonable(r.get('settings', {})))}`.")
    return lines + [""]


def _with_interval(value, interval) -> str:
    if value is None or not interval:
        return _fmt(value)
    return f"{value:.3f} [{interval[0]:.2f}, {interval[1]:.2f}]"


def robustness_markdown(rob: dict) -> List[str]:
    """Rows run x stream, columns clean and attack x setting (the layout robustness returns);
    each accuracy with its 95 % interval (Wilson over the images for one seed; over seeds and
    images for several)."""
    lines: List[str] = ["Accuracy [95 % interval: Wilson over the images for one training seed, a two-level bootstrap "
                        "over seeds and images for several].", ""]
    results = rob.get("results", {})
    columns = []
    for run_result in results.values():
        for attack, by_setting in run_result.get("attacks", {}).items():
            for setting in by_setting:
                if (attack, setting) not in columns:
                    columns.append((attack, setting))
    header = "| run | stream | clean | " + " | ".join(f"{a} ({s})" for a, s in columns) + " |"
    lines += [header, "| --- | --- | ---: |" + " ---: |" * len(columns)]
    for run_name, run_result in results.items():
        clean = run_result.get("clean", {})
        for stream in clean:
            cells = []
            for attack, setting in columns:
                r = run_result.get("attacks", {}).get(attack, {}).get(setting, {})
                cells.append(_with_interval(r.get("accuracy", {}).get(stream), (r.get("accuracy_ci95") or {}).get(stream)))
            clean_cell = _with_interval(clean.get(stream), (run_result.get("clean_ci95") or {}).get(stream))
            lines.append(f"| {run_name} | {stream} | {clean_cell} | " + " | ".join(cells) + " |")
    lines += ["", "What each attack changed (mean over the images: pixels moved by more than 1e-6, the largest and the "
              "L2 change; an attack that moved nothing shows 0):", "",
              "| run | attack | setting | images | pixels moved | L-inf | L2 |", "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for run_name, run_result in results.items():
        for attack, by_setting in run_result.get("attacks", {}).items():
            for setting, r in by_setting.items():
                d = r.get("perturbation", {})
                lines.append(f"| {run_name} | {attack} | {setting} | {r.get('images', rob.get('images', '-'))} | {_fmt(d.get('l0_mean'), 1)} | {_fmt(d.get('linf_mean'))} | "
                             f"{_fmt(d.get('l2_mean'))} |")
    lines += ["", "How:", ""]
    for attack, info in rob.get("attacks", {}).items():
        lines.append(f"- **{attack}**: {info.get('how', '')} Settings: `{json.dumps(_jsonable(info.get('settings', {})))}`.")
    for note in rob.get("notes", []):
        lines.append(f"- {note}")
    return lines + [""]


def mu_sweep_markdown(sweep: dict) -> List[str]:
    lines = [sweep.get("how", ""), ""]
    settings = [k for k in ("images", "activations") if k in sweep]
    controls = [k for k in settings if "clean_control" in sweep[k]]
    lines.append("| mu | " + " | ".join(f"MSE ({s})" for s in settings) + "".join(f" | MSE ({s}, clean control)" for s in controls) + " |")
    lines.append("| ---: |" + " ---: |" * (len(settings) + len(controls)))
    mus = sweep[settings[0]]["mu"] if settings else []
    for i, mu in enumerate(mus):
        cells = [_fmt(sweep[s]["mse"][i], 5) for s in settings] + [_fmt(sweep[s]["clean_control"]["mse"][i], 5) for s in controls]
        lines.append(f"| {mu:.2f} | " + " | ".join(cells) + " |")
    lines.append("")
    for s in settings:
        lines.append(f"- {s}: minimising mu = {sweep[s]['best_mu']:.2f} (MSE {sweep[s]['best_mse']:.5f}); the paper chose {PAPER['mu']}"
                     + (f"; rpca of the clean input loses MSE {sweep[s]['clean_control']['best_mse']:.5f} at best "
                        f"(mu {sweep[s]['clean_control']['best_mu']:.2f}), the attacked input without rpca {sweep[s]['mse_attacked']:.5f}"
                        if s in controls else "") + ".")
    return lines + [""]


def paper_markdown(report: dict) -> List[str]:
    """The paper's Table 2 on its own: it measures a CNN trained and tested on attacked images, not
    a trained run attacked at test time, so it is not set beside this report's accuracies."""
    data = next(iter(report["runs"].values()))["data"]
    key = "mias" if data.startswith("mias") else "mnist"
    lines = [
        f"The paper's Table 2 ({key.upper()} column, accuracy %) is the accuracy of its CNN trained and tested on "
        "images attacked by each attack (DLG: reconstructed from what the split layer sends), not the accuracy of a "
        "trained model under attack, which is what this report measures; the two are not comparable, so ours are not "
        "set beside it here. `pgsl sweep` builds Table 2 under the paper's protocol (table2.json / table2.md).",
        "",
        "| attack | the paper (Table 2) |",
        "| --- | ---: |",
    ]
    for attack, paper in PAPER["table2_accuracy_percent"].items():
        lines.append(f"| {attack} | {paper[key]} |")
    lines.append("")
    lines.append(f"The paper's text implies {PAPER['pgsl_mias_accuracy_percent']}% for PGSL on MIAS (gains of 36.9 and 17.5 points over JSMA and DLG).")
    return lines
