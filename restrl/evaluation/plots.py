"""Accuracy against generation budget: one line per (policy, method), as a PNG.

Budget is completions generated per problem. Sampling's line is pass@k, the share of problems
with a correct program among k samples (what a perfect selector would reach); the majority vote
answers with the most frequent of the same k samples; best-of-k keeps the value model's
favourite of them (with the vote rule: the program its scores vote for); VM-MCTS is its search
at its budget.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

Point = tuple[str, float, float]  # (method, completions per problem, accuracy)
METHOD_LABELS = {"sample": "sampling, pass@k", "majority_vote": "majority vote of k",
                 "best_of_n": "best-of-k (value model)",
                 "best_of_n_vote": "best-of-k, votes weighted by the value model",
                 "vm_mcts": "VM-MCTS", "vm_mcts_vote": "VM-MCTS, weighted vote",
                 "oracle_mcts": "oracle: MCTS valued by the verifier"}
STYLES = ("-", "--", ":", "-.")


def plot_accuracy_vs_budget(curves: Mapping[str, Sequence[Point]], path: str | Path,
                            title: str = "accuracy vs generation budget") -> Path:
    """`curves` maps a policy label (e.g. base, trained) to its points; writes a PNG with one
    colour per method and one line style per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    methods = list(dict.fromkeys(m for points in curves.values() for m, _, _ in points))
    colors = {m: f"C{i}" for i, m in enumerate(methods)}
    for style, (policy, points) in zip(STYLES * 4, curves.items(), strict=False):
        for method in methods:
            series = sorted((b, a) for m, b, a in points if m == method)
            if series:
                ax.plot([b for b, _ in series], [a for _, a in series], style, marker="o",
                        color=colors[method],
                        label=f"{policy}: {METHOD_LABELS.get(method, method)}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("completions generated per problem")
    ax.set_ylabel("accuracy (strict)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return save_figure(fig, path)


def plot_calibration(bins: Sequence[tuple[float, float, int]], path: str | Path,
                     title: str = "value model calibration") -> Path:
    """Mean verified reward against mean score per score bin; the diagonal is perfect."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    ax.plot([0, 1], [0, 1], ":", color="grey", label="calibrated")
    ax.plot([b[0] for b in bins], [b[1] for b in bins], marker="o", label="value model")
    for score, reward, rows in bins:
        ax.annotate(str(rows), (score, reward), textcoords="offset points", xytext=(4, -10),
                    fontsize="x-small")
    ax.set_xlabel("mean score in bin")
    ax.set_ylabel("mean verified reward in bin")
    ax.set_title(title, fontsize="small")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return save_figure(fig, path)


def save_figure(fig: Any, path: str | Path) -> Path:
    """Write `fig` as a PNG at `path` (its folder created) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def markdown_image(path: str | Path, alt: str) -> str:
    """The PNG inline in Markdown (a data URI), for places that cannot reach the file."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f"![{alt}](data:image/png;base64,{data})"
