"""PNG figures of a run (training curves) and of a sweep (the privacy-utility frontier); matplotlib,
headless. An evaluation report's figures are in :mod:`pgsl.evaluate.figures`."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["frontier", "training_curves"]


def training_curves(metrics: dict, path: str) -> None:
    """Training loss per batch (left) and test accuracy per epoch (right), one line per stream."""
    history = metrics["history"]
    streams = list(history[0]["train_loss"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    step = 0
    for record in history:
        trace = record["train_loss_trace"]
        xs = range(step, step + len(trace))
        for i, stream in enumerate(streams):
            left.plot(xs, [row[i] for row in trace], color=f"C{i}", lw=0.8, label=stream if record is history[0] else None)
        step += len(trace)
    left.set_xlabel("training batch")
    left.set_ylabel("cross-entropy")
    left.set_title("training loss per stream")
    left.legend()
    epochs = [r["epoch"] for r in history]
    for i, stream in enumerate(streams):
        right.plot(epochs, [r["stream_test_accuracy"][stream] for r in history], "o-", color=f"C{i}", label=stream)
    if len(streams) > 1:
        right.plot(epochs, [r["test_accuracy"] for r in history], "s-", color="k", label="fused decision")
    right.set_xlabel("epoch")
    right.set_ylabel("test accuracy")
    right.set_title(f"{metrics['defense']} on {metrics['data']}")
    right.set_xticks(epochs)
    right.grid(alpha=0.3)
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def frontier(summary: dict, path: str) -> None:
    """Accuracy against privacy, one panel per knowledge level: per defence a curve through its
    strengths (mean over seeds; bands: the 95 % intervals of accuracy, bars: of PSNR), the
    undefended reference as a star and the mean auxiliary image's PSNR as a dashed line (left of
    it, the attack recovered nothing it could not guess)."""
    levels = []
    for curve in summary["curves"]:
        for row in curve["rows"]:
            for lv in row["levels"]:
                if lv["level"] not in levels:
                    levels.append(lv["level"])
    fig, axes = plt.subplots(1, len(levels), figsize=(5.2 * len(levels), 4.4), squeeze=False)
    for ax, level in zip(axes[0], levels):
        for i, curve in enumerate(c for c in summary["curves"] if c["option"] is not None):
            pts = [(row, next(lv for lv in row["levels"] if lv["level"] == level)) for row in curve["rows"]
                   if any(lv["level"] == level for lv in row["levels"])]
            if not pts:
                continue
            pts.sort(key=lambda p: p[1]["psnr"])
            x = [lv["psnr"] for _, lv in pts]
            y = [row["accuracy"] for row, _ in pts]
            xerr = [[lv["psnr"] - lv["psnr_ci95"][0] for _, lv in pts], [lv["psnr_ci95"][1] - lv["psnr"] for _, lv in pts]]
            colour = f"C{i}"
            ax.errorbar(x, y, xerr=xerr, fmt="o-", color=colour, ms=4, lw=1.2, capsize=2,
                        label=f"{curve['defense']} ({curve['option']})")
            if all(row["accuracy_ci95"] for row, _ in pts):
                ax.fill_between(x, [row["accuracy_ci95"][0] for row, _ in pts], [row["accuracy_ci95"][1] for row, _ in pts],
                                color=colour, alpha=0.15, lw=0)
            for (row, lv) in pts:
                ax.annotate(f"{row['strength']:g}", (lv["psnr"], row["accuracy"]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points", color=colour)
        ref = summary.get("reference")
        if ref:
            lv = next((x for x in ref["levels"] if x["level"] == level), None)
            if lv:
                ax.plot([lv["psnr"]], [ref["accuracy"]], "k*", ms=12, label="no defence")
        if summary.get("baseline_psnr") is not None:
            ax.axvline(summary["baseline_psnr"], color="grey", ls="--", lw=1, label="mean auxiliary image")
        ax.set_title(level, fontsize=10)
        ax.set_xlabel("best attack's PSNR vs the clean image (dB; lower = more private)")
        ax.set_ylabel("test accuracy (decision)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"privacy-utility frontier: {summary['plan']} ({summary['points']} of {summary['of']} points)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
