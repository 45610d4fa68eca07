"""Accuracy against generation budget, one line per method (logged to MLflow as a PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def plot_accuracy_vs_budget(points: Sequence[tuple[str, float, float]], path: str | Path,
                            title: str = "accuracy vs generation budget") -> Path:
    """`points` are (method, budget in completions per problem, accuracy); writes a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for method in dict.fromkeys(p[0] for p in points):
        series = sorted((b, a) for m, b, a in points if m == method)
        ax.plot([b for b, _ in series], [a for _, a in series], marker="o", label=method)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("completions generated per problem")
    ax.set_ylabel("accuracy (strict)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
