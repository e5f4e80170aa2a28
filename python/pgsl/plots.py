"""PNG figures of a run (training curves) and of an evaluation report; matplotlib, headless."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["training_curves"]


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
