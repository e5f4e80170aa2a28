"""The report's PNG figures (matplotlib, headless)."""

from __future__ import annotations

from typing import Dict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import pgsl_ext.ops  # noqa: E402

from ..config import PGSL_DEFENSES  # noqa: E402

COLUMNS = 8


def reconstruction_grid(runs, targets, reconstructions: Dict[str, Dict[str, torch.Tensor]], path: str) -> str:
    """Rows: the original, the image pgsl's client encoded (JSMA-attacked), rpca's recovery of it
    (low-rank part of the whole image, the paper's Figure 3 setting), then every attack's
    reconstruction under every run's defence. Columns: the first targets."""
    n = min(COLUMNS, len(targets))
    originals = targets.x[:n]
    rows = [("original", originals)]
    pgsl = next((r for r in runs.values() if r.defense in PGSL_DEFENSES), None)
    if pgsl is not None:
        with torch.no_grad():
            attacked = pgsl.attack_images(originals)
        recovered = pgsl_ext.ops.rpca(attacked[:, 0], mu=pgsl.cfg.mu).low_rank.unsqueeze(1)
        rows += [("pgsl: attacked (sent)", attacked), ("pgsl: rpca-recovered", recovered)]
    for run_name, by_attack in reconstructions.items():
        for attack, images in by_attack.items():
            rows.append((f"{run_name}: {attack}", images[:n]))
    fig, axes = plt.subplots(len(rows), n, figsize=(1.2 * n + 1.6, 1.2 * len(rows)), squeeze=False)
    for i, (label, images) in enumerate(rows):
        for j in range(n):
            ax = axes[i][j]
            if j < len(images):  # an attack may reconstruct fewer targets (DLG: a few)
                ax.imshow(images[j, 0].clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
            else:
                ax.axis("off")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    return _save(fig, path, dpi=100)


def mu_curve(sweep: dict, path: str, *, paper_mu: float) -> str:
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, setting in enumerate(k for k in ("images", "activations") if k in sweep):
        s = sweep[setting]
        ax.plot(s["mu"], s["mse"], "o-", color=f"C{i}", label=f"{setting} (min at mu={s['best_mu']:.2f})")
        ax.axvline(s["best_mu"], color=f"C{i}", ls=":")
        if "clean_control" in s:
            ax.plot(s["clean_control"]["mu"], s["clean_control"]["mse"], "x--", color=f"C{i}", alpha=0.7,
                    label=f"{setting}: rpca of the clean input (control)")
    ax.axvline(paper_mu, color="k", ls="--", lw=0.8, label=f"the paper's mu = {paper_mu:g}")
    ax.set_xlabel("mu")
    ax.set_ylabel("MSE(rpca-recovered, clean)")
    ax.set_yscale("log")
    ax.set_title("rpca recovery of JSMA-attacked inputs")
    ax.legend(fontsize=8)
    return _save(fig, path, dpi=110)


def accuracy_bars(rob: dict, path: str) -> str:
    """Grouped bars: one group per (attack, setting) plus clean; one bar per run x stream."""
    results = rob.get("results", {})
    series = [(run, stream) for run, r in results.items() for stream in r.get("clean", {})]
    groups = [("clean", None)]
    for r in results.values():
        for attack, by_setting in r.get("attacks", {}).items():
            for setting in by_setting:
                if (attack, setting) not in groups:
                    groups.append((attack, setting))
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(groups) * max(1, len(series)) / 3), 4))
    width = 0.8 / max(1, len(series))
    for k, (run, stream) in enumerate(series):
        values = []
        for attack, setting in groups:
            if attack == "clean":
                values.append(results[run]["clean"].get(stream, float("nan")))
            else:
                acc = results[run].get("attacks", {}).get(attack, {}).get(setting, {}).get("accuracy", {}).get(stream)
                values.append(float("nan") if acc is None else acc)
        ax.bar([g + k * width for g in range(len(groups))], values, width, label=f"{run}: {stream}")
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))])
    ax.set_xticklabels([a if s is None else f"{a}\n{s}" for a, s in groups], fontsize=8)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("accuracy under attack")
    return _save(fig, path, dpi=110)


def privacy_accuracy(report: dict, path: str) -> str:
    """One panel per knowledge level, one point per run: clean accuracy against the PSNR of the
    best attack at or below that level (``report["privacy"][run]["knowledge_levels"]``)."""
    levels = []
    for results in report["privacy"].values():
        for level in results.get("knowledge_levels", []):
            if level["level"] not in levels:
                levels.append(level["level"])
    fig, axes = plt.subplots(1, max(1, len(levels)), figsize=(4.2 * max(1, len(levels)), 4), squeeze=False, sharey=True)
    for ax, level in zip(axes[0], levels):
        for i, (name, results) in enumerate(report["privacy"].items()):
            entry = next((e for e in results.get("knowledge_levels", []) if e["level"] == level), None)
            if entry is None:
                continue
            acc = report["runs"][name]["test_accuracy"]
            ax.scatter([acc], [entry["psnr_vs_clean"]], s=50, color=f"C{i}")
            ax.annotate(f"{name} ({entry['best_attack']})", (acc, entry["psnr_vs_clean"]), textcoords="offset points",
                        xytext=(5, 5 - 14 * (i % 2)), fontsize=8)  # neighbours alternate above / below
        ax.set_title(level, fontsize=9)
        ax.set_xlabel("clean test accuracy")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("PSNR of the best attack at this level (dB)\n(lower = more private)")
    fig.suptitle("privacy against accuracy, by what the attacker knows")
    return _save(fig, path, dpi=110)


def _save(fig, path: str, *, dpi: int) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
