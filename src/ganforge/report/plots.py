"""Training curves from stats.jsonl: losses, discriminator outputs and gradient norms."""

from __future__ import annotations

import json
from pathlib import Path


def read_stats(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_training(stats_path: str | Path, out: str | Path, title: str = "") -> bool:
    """Plot Loss/*, D/* and Grad/* series against step; False when there is nothing to plot."""
    records = read_stats(stats_path)
    if not records:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    panels = [
        ("Loss/", "losses"),
        ("D/", "mean D output (D(x): real, D(G(z)): fake)"),
        ("Grad/", "gradient norm"),
    ]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 8), dpi=100, sharex=True)
    for ax, (prefix, label) in zip(axes, panels):
        keys = sorted({k for r in records for k in r if k.startswith(prefix)})
        for key in keys:
            ax.plot(steps, [r.get(key, float("nan")) for r in records], label=key, linewidth=1.2)
        ax.set_ylabel(label, fontsize=9)
        if prefix == "Grad/":
            ax.set_yscale("log")
        if keys:
            ax.legend(fontsize=8, loc="best")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("step")
    if title:
        axes[0].set_title(title, fontsize=10)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return True
