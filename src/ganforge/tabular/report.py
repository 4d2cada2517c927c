"""`evaluate`: fidelity, utility and privacy of a synthetic table, as JSON and a readable HTML page.

    >>> report = evaluate(real, synth, holdout=test, target="income")
    >>> write_report(report, "report.html", real, synth)      # or "report.json"

`training` (e.g. {"differential_privacy": model.privacy}) adds how the generator was trained: a
private fit's spent (epsilon, delta), its mechanism and what it does not cover.

The HTML page is self-contained: plots are matplotlib PNGs embedded as base64.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import __version__
from ..engine.checkpoint import atomic_write
from ..errors import DataError
from .metrics import DISCRETE, NUMERIC, fidelity, privacy, utility
from .schema import Schema, infer_schema
from .transformer import numeric_values


def evaluate(
    real: pd.DataFrame,
    synthetic: pd.DataFrame,
    holdout: pd.DataFrame | None = None,
    target: str | None = None,
    schema: Schema | dict[str, Any] | str | Path | None = None,
    seed: int = 0,
    training: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Scores of `synthetic` against the training table `real` (and rows kept out of training).

    Without `holdout`, utility tests on a 30 % split of `real` (which the generator saw) and the
    privacy baselines and membership attack are skipped. `training`: see the module docstring."""
    if not isinstance(schema, Schema):
        schema = infer_schema(real, schema)
    missing = [c for c in real.columns if c not in synthetic.columns]
    extra = [c for c in synthetic.columns if c not in real.columns]
    if missing or extra:
        raise DataError(
            "the synthetic table's columns differ from the real one's: "
            + "; ".join(x for x in (missing and f"missing {missing}", extra and f"unexpected {extra}") if x)
        )
    for name, df in (("real", real), ("synthetic", synthetic), ("hold-out", holdout)):
        if df is not None and len(df) == 0:
            raise DataError(f"the {name} table has no rows")
    if holdout is not None and list(holdout.columns) != list(real.columns):
        raise DataError("the hold-out table's columns differ from the real one's")
    for name, df in (("synthetic", synthetic), ("hold-out", holdout)):
        if df is not None:
            check_like_real(df, schema, name)
    notes = []
    report: dict[str, Any] = {
        "meta": {
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "ganforge": __version__,
            "rows": {
                "real": len(real),
                "synthetic": len(synthetic),
                "holdout": None if holdout is None else len(holdout),
            },
            "columns": {c.name: c.kind for c in schema.columns},
        },
        "fidelity": fidelity(real, synthetic, schema),
    }
    if target is not None:
        kind = schema[target].kind
        if kind == "id":
            raise DataError(f"target {target!r} is an ID column; choose a column to predict")
        for name, df in (("real", real), ("hold-out", holdout)):
            if df is not None and df[target].isna().all():
                raise DataError(
                    f"target {target!r} has no values in the {name} table; choose a column to predict"
                )
        if holdout is not None:
            train, test = real, holdout
        else:
            idx = np.random.default_rng(seed).permutation(len(real))
            cut = max(1, int(0.7 * len(real)))
            train, test = real.iloc[idx[:cut]], real.iloc[idx[cut:]]
            notes.append("utility tests on a 30 % split of the real table, which the generator saw")
        report["utility"] = utility(train, synthetic, test, schema, target, seed) if len(test) else None
    else:
        notes.append("no target column: utility (train on synthetic, test on real) skipped")
    report["privacy"] = privacy(real, synthetic, schema, holdout, seed=seed)
    if "note" in report["privacy"]:
        notes.append(report["privacy"]["note"])
    u = report.get("utility")
    p = report["privacy"]
    report["summary"] = {
        "fidelity": report["fidelity"]["overall"],
        "column_shapes": report["fidelity"]["column_shapes"],
        "pair_trends": report["fidelity"]["pair_trends"],
        "utility_ratio": u["ratio"] if u else None,
        "exact_copies": p["exact_copies"],
        "mia_auc": p.get("mia_auc"),
        "closer_to_train_share": p.get("closer_to_train_share"),
    }
    dp = (training or {}).get("differential_privacy")
    if training is not None:
        report["training"] = training
        report["summary"]["dp_epsilon"] = dp["epsilon"] if dp else None
        notes.append(
            f"differential privacy: {privacy_summary(dp)}; {dp['not_covered']}"
            if dp
            else "the generator was trained without differential privacy"
        )
    report["notes"] = notes
    return clean(report)


def check_like_real(df: pd.DataFrame, schema: Schema, name: str) -> None:
    """DataError naming the first numeric or date column of `df` holding a value that is not a number
    or date like the real column's: such values would silently count as missing in every score."""
    for c in schema.columns:
        if c.kind not in NUMERIC:
            continue
        s = df[c.name]
        bad = s.notna().to_numpy() & np.isnan(numeric_values(c, s))
        if bad.any():
            like = (
                "numeric"
                if c.kind != "datetime"
                else "a date" + (f" in the format {c.format}" if c.format else "")
            )
            raise DataError(
                f"{name} column {c.name!r} is not {like} like the real one: {int(bad.sum())} of {len(s)} "
                f"values are not, e.g. {s[bad].iloc[0]!r}"
            )


def privacy_summary(dp: dict[str, Any]) -> str:
    """One line on a private fit: what it spent and with which noise."""
    return (
        f"epsilon {dp['epsilon']:.3g} spent (target {dp['target_epsilon']:.3g}) at delta {dp['delta']:.2g}; "
        f"noise multiplier {dp['noise_multiplier']:.3g}, clip {dp['max_grad_norm']:.3g} per {dp['unit'][2:]}, "
        f"sampling rate {dp['sample_rate']:.3g}, {dp['steps']} critic steps"
    )


def clean(x: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN/inf to None."""
    if isinstance(x, dict):
        return {str(k): clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_report(
    report: dict[str, Any],
    path: str | Path,
    real: pd.DataFrame | None = None,
    synthetic: pd.DataFrame | None = None,
    schema: Schema | None = None,
) -> Path:
    """`.json`: the report; `.html`: a page with tables and plots (needs `real` and `synthetic`)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        text = json.dumps(report, indent=1)
    elif path.suffix.lower() in (".html", ".htm"):
        if real is None or synthetic is None:
            raise DataError("an HTML report needs the real and synthetic tables for its plots")
        text = render_html(report, real, synthetic, schema or infer_schema(real))
    else:
        raise DataError(f"{path}: report format {path.suffix or '(none)'} unknown; use .html or .json")
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return path


# --- HTML ---------------------------------------------------------------------------------------------

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.25em .7em;border-bottom:1px solid #eee;text-align:left}
th{background:#f6f6f6}.num{text-align:right;font-variant-numeric:tabular-nums}.big{font-size:2em;font-weight:600}
.cards{display:flex;gap:1em;flex-wrap:wrap}.card{border:1px solid #ddd;border-radius:6px;padding:.7em 1.2em;min-width:150px}
.note{color:#855;font-size:.95em}img{max-width:100%}"""


def fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return html.escape(str(x))


def table(rows: list[list[Any]], head: list[str]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{"num" if isinstance(v, (int, float)) else ""}">{fmt(v)}</td>' for v in r)
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{th}</tr>{body}</table>"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def png(fig: Any) -> str:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def render_html(report: dict[str, Any], real: pd.DataFrame, synth: pd.DataFrame, schema: Schema) -> str:
    s, f, u, p = report["summary"], report["fidelity"], report.get("utility"), report["privacy"]
    cards = [
        ("Fidelity", s["fidelity"]),
        ("Column shapes", s["column_shapes"]),
        ("Pair trends", s["pair_trends"]),
        ("Utility (synth/real)", s["utility_ratio"]),
        ("Exact copies", s["exact_copies"]),
        ("Membership AUC", s["mia_auc"]),
    ]
    if "dp_epsilon" in s:
        cards.append(("DP ε", s["dp_epsilon"] if s["dp_epsilon"] is not None else "none"))
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>Synthetic data report</title><style>{CSS}</style></head><body>",
        "<h1>Synthetic data report</h1>",
        f"<p>{report['meta']['rows']['real']} real rows, {report['meta']['rows']['synthetic']} synthetic rows"
        + (
            f", {report['meta']['rows']['holdout']} hold-out rows"
            if report["meta"]["rows"]["holdout"]
            else ""
        )
        + f"; ganforge {html.escape(report['meta']['ganforge'])}, {html.escape(report['meta']['date'])}.</p>",
        "<div class='cards'>"
        + "".join(
            f"<div class='card'>{html.escape(k)}<div class='big'>{fmt(v)}</div></div>" for k, v in cards
        )
        + "</div>",
        "".join(f"<p class='note'>{html.escape(n)}</p>" for n in report.get("notes", [])),
        "<h2>Columns</h2><p>1 − KS statistic (numbers, dates) or 1 − total variation distance (categories); 1 is identical.</p>",
        table(
            [[k, v["kind"], v["metric"], v["score"]] for k, v in f["columns"].items()],
            ["column", "kind", "metric", "score"],
        ),
        png(plot_columns(real, synth, schema)),
        "<h2>Column pairs</h2><p>Correlation similarity (two numeric columns) or contingency similarity (others).</p>",
        png(plot_pairs(f)),
    ]
    numeric = [c.name for c in schema.columns if c.kind in NUMERIC]
    if len(numeric) >= 2:
        parts.append(png(plot_correlations(real, synth, schema, numeric[:20])))
    if u:
        parts.append(
            f"<h2>Utility</h2><p>{u['task'].capitalize()} of <b>{html.escape(str(u['target']))}</b>: a gradient-boosting model trained on real rows vs on synthetic rows, both tested on real rows.</p>"
        )
        keys = list(dict.fromkeys([*u["real"], *u["synthetic"]]))
        parts.append(
            table(
                [[k, u["real"].get(k), u["synthetic"].get(k)] for k in keys],
                ["metric", "train on real", "train on synthetic"],
            )
        )
        parts.append("".join(f"<p class='note'>{html.escape(n)}</p>" for n in u.get("notes", [])))
    parts.append("<h2>Privacy</h2>")
    rows = [["exact copies of training rows", p["exact_copies"], p.get("exact_copies_holdout")]]
    for key, label in (
        ("dcr_median", "distance to closest record, median"),
        ("dcr_p05", "distance to closest record, 5th percentile"),
        ("nndr_median", "nearest-neighbour distance ratio, median"),
    ):
        rows.append([label, p["dcr_synthetic"][key], (p.get("dcr_holdout") or {}).get(key)])
    parts.append(table(rows, ["measure", "synthetic → train", "hold-out → train (baseline)"]))
    if "mia_auc" in p:
        parts.append(
            f"<p>Membership-inference attack AUC: <b>{fmt(p['mia_auc'])}</b> (0.5: training rows are no closer to synthetic rows than unseen rows). "
            f"Share of synthetic rows closer to a training row than to a hold-out row: <b>{fmt(p['closer_to_train_share'])}</b> (0.5 by chance).</p>"
        )
    if "training" in report:
        parts.append(privacy_html(report["training"].get("differential_privacy")))
    parts.append("</body></html>")
    return "\n".join(parts)


def privacy_html(dp: dict[str, Any] | None) -> str:
    """The 'Differential privacy' section: the guarantee, its parameters and what it leaves out."""
    head = "<h2>Differential privacy</h2>"
    if not dp:
        return head + "<p>The generator was trained <b>without</b> differential privacy.</p>"
    rows = [
        ["epsilon spent", dp["epsilon"]],
        ["target epsilon", dp["target_epsilon"]],
        ["delta", f"{dp['delta']:.3g}"],
        ["noise multiplier σ", f"{dp['noise_multiplier']:.4g}"],
        ["clip norm C (per pack)", f"{dp['max_grad_norm']:.4g}"],
        ["unit", dp["unit"]],
        ["sampling rate q", f"{dp['sample_rate']:.4g}"],
        ["critic steps", dp["steps"]],
        ["sampling", dp["sampling"]],
        ["accountant", dp["accountant"]],
    ]
    return (
        head
        + f"<p>{html.escape(dp['mechanism'])}: the trained networks and every sample drawn from them are "
        "(ε, δ)-differentially private with respect to one row of the training table, apart from what is "
        "listed under <i>not covered</i>.</p>"
        + table(rows, ["", "value"])
        + f"<p class='note'>Not covered: {html.escape(dp['not_covered'])}. These are stored in the model "
        "folder and shape every sample.</p>"
    )


def plot_columns(real: pd.DataFrame, synth: pd.DataFrame, schema: Schema, limit: int = 24) -> Any:
    plt = _pyplot()
    cols = [c for c in schema.columns if c.kind != "id"][:limit]
    n = max(len(cols), 1)
    ncol = min(4, n)
    nrow = math.ceil(n / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 2.6 * nrow), squeeze=False)
    for ax, c in zip(axes.flat, cols):
        if c.kind in DISCRETE:
            r = real[c.name].astype(object).fillna("<missing>").astype(str).value_counts(normalize=True)
            sy = synth[c.name].astype(object).fillna("<missing>").astype(str).value_counts(normalize=True)
            cats = list(r.index[:12])
            x = np.arange(len(cats))
            ax.bar(x - 0.2, r.reindex(cats).fillna(0).to_numpy(), 0.4, label="real")
            ax.bar(x + 0.2, sy.reindex(cats).fillna(0).to_numpy(), 0.4, label="synthetic")
            ax.set_xticks(x, [t[:10] for t in cats], rotation=45, ha="right", fontsize=7)
        else:
            a, b = numeric_values(c, real[c.name]), numeric_values(c, synth[c.name])
            a, b = a[~np.isnan(a)], b[~np.isnan(b)]
            if c.kind == "datetime":  # matplotlib's date unit: days since 1970-01-01
                a, b = a / 86400.0, b / 86400.0
                ax.xaxis_date()
            if len(a):
                lo, hi = np.quantile(a, [0.005, 0.995])
                edges = np.linspace(lo, hi if hi > lo else lo + 1, 31)
                ax.hist(a, edges, density=True, alpha=0.5, label="real")
                ax.hist(b, edges, density=True, alpha=0.5, label="synthetic")
            if c.kind == "datetime":
                ax.tick_params(axis="x", labelrotation=30)
        ax.set_title(f"{c.name} ({c.kind})", fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(cols) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_pairs(f: dict[str, Any]) -> Any:
    plt = _pyplot()
    names = list(f["columns"])[:40]
    pos = {n: i for i, n in enumerate(names)}
    m = np.full((len(names), len(names)), np.nan)
    for pr in f["pairs"]:
        a, b = pr["columns"]
        if a in pos and b in pos and pr["score"] is not None:
            m[pos[a], pos[b]] = m[pos[b], pos[a]] = pr["score"]
    size = max(4.0, 0.3 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    fig.colorbar(im, ax=ax, label="pair score")
    return fig


def plot_correlations(real: pd.DataFrame, synth: pd.DataFrame, schema: Schema, names: list[str]) -> Any:
    plt = _pyplot()

    def corr(df: pd.DataFrame) -> np.ndarray:
        return pd.DataFrame({n: numeric_values(schema[n], df[n]) for n in names}).corr().to_numpy()

    cr, cs = corr(real), corr(synth)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    for ax, m, title, cmap, lim in (
        (axes[0], cr, "real (Pearson)", "RdBu_r", (-1, 1)),
        (axes[1], cs, "synthetic (Pearson)", "RdBu_r", (-1, 1)),
        (axes[2], np.abs(cr - cs), "|difference|", "magma", (0, 1)),
    ):
        im = ax.imshow(m, vmin=lim[0], vmax=lim[1], cmap=cmap)
        ax.set_title(title, fontsize=10)
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig
