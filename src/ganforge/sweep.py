"""Hyperparameter sweeps: train a grid of settings x seeds, evaluate each run, draw heat maps.

GANs are notoriously sensitive to hyperparameters (Lucic et al. 2018, "Are GANs created
equal?"): a sweep makes that visible for the user's own data.

    ganforge sweep --data ring8 --grid train.g_lr=1e-4,1e-3 --grid loss.name=ns,hinge --seeds 3 --out S

Keys joined by "+" share one axis: `--grid train.g_lr+train.d_lr=1e-4,1e-3` moves both learning rates
together.

writes S/runs/<cell>-s<seed>/ (ordinary run folders), S/results.jsonl (one line per run, so an
interrupted sweep continues where it stopped), S/summary.md (mean +- standard error per cell,
best first) and S/heatmap_<metric>.png.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .api import build_config, data_config, spec_of, train, user_settings
from .config import merge, overrides_to_dict
from .data import load_dataset
from .errors import ConfigError
from .evaluate import BEST, evaluate


def parse_grid(axes: Sequence[str]) -> list[tuple[str, list[str]]]:
    """['train.g_lr=1e-4,1e-3', ...] -> [('train.g_lr', ['1e-4', '1e-3']), ...]."""
    out: list[tuple[str, list[str]]] = []
    for text in axes:
        if "=" not in text:
            raise ConfigError(f"--grid {text!r} is not of the form key=value1,value2,...")
        key, values = text.split("=", 1)
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not key.strip() or not vals:
            raise ConfigError(f"--grid {text!r} needs a key and at least one value")
        if any(key.strip() == k for k, _ in out):
            raise ConfigError(f"--grid names {key.strip()!r} twice")
        out.append((key.strip(), vals))
    if not out:
        raise ConfigError("a sweep needs at least one --grid key=value1,value2,...")
    return out


def cell_name(cell: dict[str, str]) -> str:
    short = {k: "+".join(part.split(".")[-1] for part in k.split("+")) for k in cell}
    return "_".join(f"{short[k]}={v}" for k, v in cell.items()).replace("/", "-")


def cell_overrides(cell: dict[str, str]) -> list[str]:
    """--set overrides of one grid cell; an axis 'a+b' sets both a and b to its value."""
    return [f"{part}={v}" for k, v in cell.items() for part in k.split("+")]


def metric_group(metric: str) -> tuple[str, bool]:
    """(metric group to evaluate, lower is better) of a value name such as 'fid' or 'rkl'."""
    if metric not in BEST:
        raise ConfigError(f"unknown sweep metric {metric!r}; choose from: {', '.join(BEST)}")
    return BEST[metric]


def sweep(
    data: str,
    grid: Sequence[str],
    out: str | Path,
    seeds: int = 3,
    model: str | None = None,
    loss: str | None = None,
    steps: int | None = None,
    metric: str | None = None,
    overrides: Sequence[str] = (),
    n: int | None = None,
) -> list[dict[str, Any]]:
    """Train every grid cell with `seeds` seeds, evaluate `metric`, write results and heat maps."""
    if seeds < 1:
        raise ConfigError(f"seeds must be at least 1, got {seeds}")
    if n is not None and n < 2:  # the metrics need two samples; refused before any cell trains
        raise ConfigError(f"n must be at least 2 samples, got {n}")
    axes = parse_grid(grid)
    cells = [dict(zip([k for k, _ in axes], values)) for values in itertools.product(*(v for _, v in axes))]
    base = user_settings(None, overrides, data=data, model=model, loss=loss, steps=steps)
    ds = load_dataset(data_config(base))
    spec = spec_of(ds)
    for cell in cells:  # every cell must make a valid config before anything trains
        build_config(merge(base, overrides_to_dict(cell_overrides(cell))), spec)
    metric = metric or ("rkl" if ds.modes is not None else "fid")
    group, lower = metric_group(metric)

    root = Path(out)
    settings = {"data": data, "model": model, "loss": loss, "steps": steps, "metric": metric, "n": n}
    settings["overrides"] = list(overrides)
    check_same_sweep(root / "sweep.json", settings)
    root.mkdir(parents=True, exist_ok=True)
    (root / "sweep.json").write_text(json.dumps(settings, indent=1), encoding="utf-8")
    results_path = root / "results.jsonl"
    done = {(r["cell_name"], r["seed"]): r for r in read_results(results_path)}
    results = []
    for cell in cells:
        for seed in range(seeds):
            name = cell_name(cell)
            if (name, seed) in done:
                results.append(done[(name, seed)])
                continue
            run_dir = root / "runs" / f"{name}-s{seed}"
            train(
                data=data,
                model=model,
                loss=loss,
                steps=steps,
                seed=seed,
                out=run_dir,
                overrides=[*overrides, *cell_overrides(cell), "train.sample_every=0"],
                progress=False,
                resume="auto",
            )
            values = evaluate(run_dir, metrics=group, n=n, seed=seed)["metrics"]
            record = {
                "cell": cell,
                "cell_name": name,
                "seed": seed,
                "metric": metric,
                "value": finite_or_none(values.get(metric)),
                "values": values,
            }
            with results_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
            results.append(record)
    summary = summarise(results, lower)
    (root / "summary.md").write_text(summary_markdown(summary, metric, lower, seeds), encoding="utf-8")
    plot_heatmap(summary, axes, metric, root / f"heatmap_{metric}.png")
    return results


def check_same_sweep(path: Path, settings: dict[str, Any]) -> None:
    """A sweep continues in its folder only with the settings its runs were made with (the grid
    and the seeds may grow); anything else would mix old results into a new summary."""
    if not path.is_file():
        return
    try:
        before = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ConfigError(f"{path} is corrupt; choose another --out") from None
    changed = [k for k in settings if before.get(k) != settings[k]]
    if changed:
        k = changed[0]
        raise ConfigError(
            f"{path.parent} holds a sweep made with other settings ({k}: {before.get(k)!r}, now "
            f"{settings[k]!r}); choose another --out, or repeat its settings to continue it"
        )


def finite_or_none(value: Any) -> float | None:
    """A metric value for JSON: NaN and infinities (no value) as null."""
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def read_results(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def summarise(results: list[dict[str, Any]], lower: bool) -> list[dict[str, Any]]:
    """Mean and standard error per cell, best first."""
    by_cell: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_cell.setdefault(r["cell_name"], []).append(r)
    rows = []
    for runs in by_cell.values():
        vals = [r["value"] for r in runs if r["value"] is not None and math.isfinite(r["value"])]
        mean = statistics.fmean(vals) if vals else math.nan
        se = statistics.stdev(vals) / math.sqrt(len(vals)) if len(vals) > 1 else 0.0
        rows.append(
            {
                "cell": runs[0]["cell"],
                "mean": mean,
                "se": se,
                "n": len(vals),
                "missing": len(runs) - len(vals),
            }
        )
    return sorted(rows, key=lambda r: (math.isnan(r["mean"]), r["mean"] if lower else -r["mean"]))


def summary_markdown(rows: list[dict[str, Any]], metric: str, lower: bool, seeds: int) -> str:
    keys = list(rows[0]["cell"]) if rows else []
    lines = [
        f"# Sweep: {metric} ({'lower' if lower else 'higher'} is better), {seeds} seed(s) per cell",
        "",
        "| " + " | ".join([*keys, f"{metric} mean", "± s.e.", "runs"]) + " |",
        "|" + "---|" * (len(keys) + 3),
    ]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(
                [
                    *(r["cell"][k] for k in keys),
                    f"{r['mean']:.4g}",
                    f"{r['se']:.2g}",
                    f"{r['n']}" + (f" ({r['missing']} without a value)" if r["missing"] else ""),
                ]
            )
            + " |"
        )
    if rows:
        best = ", ".join(f"{k}={v}" for k, v in rows[0]["cell"].items())
        if math.isfinite(rows[0]["mean"]):
            lines += ["", f"Best: {best} ({metric} {rows[0]['mean']:.4g} ± {rows[0]['se']:.2g})."]
        else:
            lines += ["", f"No cell has a {metric} value (e.g. no mode found): nothing to rank."]
    return "\n".join(lines) + "\n"


def plot_heatmap(
    rows: list[dict[str, Any]], axes: list[tuple[str, list[str]]], metric: str, path: Path
) -> None:
    """A heat map of the mean metric over the first two grid axes, one panel per value of the rest."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    (ykey, yvals), (xkey, xvals) = axes[0], axes[1] if len(axes) > 1 else ("", [""])
    rest = axes[2:]
    panels = list(itertools.product(*(v for _, v in rest))) or [()]
    mean = {tuple(sorted(r["cell"].items())): r["mean"] for r in rows}
    fig, subplots = plt.subplots(
        1,
        len(panels),
        figsize=(1.2 * len(xvals) * len(panels) + 2.5, 0.6 * len(yvals) + 2),
        squeeze=False,
        dpi=100,
    )
    for ax, panel in zip(subplots[0], panels):
        grid = np.full((len(yvals), len(xvals)), np.nan)
        for i, yv in enumerate(yvals):
            for j, xv in enumerate(xvals):
                cell = {ykey: yv, **({xkey: xv} if xkey else {}), **dict(zip((k for k, _ in rest), panel))}
                grid[i, j] = mean.get(tuple(sorted(cell.items())), np.nan)
        image = ax.imshow(grid, cmap="viridis", aspect="auto")
        for i in range(len(yvals)):
            for j in range(len(xvals)):
                missing = np.isnan(grid[i, j])
                ax.text(
                    j,
                    i,
                    "n/a" if missing else f"{grid[i, j]:.3g}",
                    ha="center",
                    va="center",
                    color="black" if missing else "white",
                    fontsize=8,
                )
        ax.set_yticks(range(len(yvals)), yvals)
        ax.set_ylabel(ykey)
        ax.set_xticks(range(len(xvals)), xvals)
        ax.set_xlabel(xkey)
        if rest:
            ax.set_title(", ".join(f"{k}={v}" for (k, _), v in zip(rest, panel)), fontsize=9)
        fig.colorbar(image, ax=ax, label=metric)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


__all__ = ["parse_grid", "sweep"]
