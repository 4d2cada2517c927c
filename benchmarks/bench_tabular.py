"""ganforge.tabular against the reference `ctgan` package: fit time, fidelity, utility, privacy.

Both models train in this one process, one after the other, on the same 80 % split of each
table, with the same epochs, batch size (500), pac (10) and torch threads; both are scored by
the same code (`ganforge.tabular.report.evaluate`) against the 20 % hold-out. Discrete columns
given to ctgan are the ones ganforge's schema inference calls categorical or boolean.

Tables ship inside packages (no download at run time):
    diamonds  plotnine.data.diamonds        53,940 rows: 6 numbers, 3 categories; target `cut`
    fair      statsmodels.datasets.fair      6,366 rows: coded survey answers + `affairs`; target `rate_marriage`
    txhousing plotnine.data.txhousing        8,602 rows (rows with missing values dropped, as ctgan
                                             refuses them): city, dates, sales figures; target `city`

Set up its environment once (ctgan pins its own pandas, so it lives apart from the project's):

    python3 -m venv .venv-bench
    .venv-bench/bin/pip install 'torch==2.13.0' -r benchmarks/requirements-tabular.txt -e .
    .venv-bench/bin/python benchmarks/bench_tabular.py                    # as recorded
    .venv-bench/bin/python benchmarks/bench_tabular.py --tables fair --epochs 5   # quick look

Prints a table and appends one JSON line per run to benchmarks/results/tabular.jsonl. Times are
wall-clock seconds of `fit` (ganforge: schema, transformer, training; ctgan: the same), with the
transformer's share apart. `cpu_seconds` is this process's CPU time: ctgan's transformer also runs
in joblib worker processes, which it does not count. On a machine shared with other jobs, one torch
thread (`--threads 1`) gives steadier figures: two threads on two busy cores make every small op
wait for the slower one. The 1-minute load average is recorded at the start of each fit.

Private runs (`--dp-epsilons 1,10`, ganforge only; needs `opacus`): the same fit with DP-SGD on the
critic calibrated to each epsilon (delta = 1 / rows^1.1), scored the same way, with the epsilon
actually spent. Their cost is the fidelity/utility lost against the non-private ganforge run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

RESULTS = Path(__file__).parent / "results" / "tabular.jsonl"
EPOCHS = {"diamonds": 20, "fair": 100, "txhousing": 60}  # the recorded runs; same for both models
TARGETS = {"diamonds": "cut", "fair": "rate_marriage", "txhousing": "city"}


def load_table(name: str) -> pd.DataFrame:
    if name == "diamonds":
        from plotnine.data import diamonds

        df = diamonds.copy()
    elif name == "fair":
        import statsmodels.api as sm

        df = sm.datasets.fair.load_pandas().data
    elif name == "txhousing":
        from plotnine.data import txhousing

        df = txhousing.dropna().reset_index(drop=True)
    else:
        raise SystemExit(f"unknown table {name!r}; choose from {', '.join(EPOCHS)}")
    for col in df.columns:  # plain text categories for both models
        if isinstance(df[col].dtype, pd.CategoricalDtype):
            df[col] = df[col].astype(str).astype(object)
    return df


def split(df: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    idx = np.random.default_rng(seed).permutation(len(df))
    cut = int(0.8 * len(df))
    return df.iloc[idx[:cut]].reset_index(drop=True), df.iloc[idx[cut:]].reset_index(drop=True)


class Timed:
    """Wall and CPU seconds of a block, with the 1-minute load average at its start."""

    def __enter__(self) -> Timed:
        self.load = os.getloadavg()[0]
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def fit_ctgan(
    train: pd.DataFrame, discrete: list[str], epochs: int, seed: int
) -> tuple[Any, dict[str, float]]:
    from ctgan import CTGAN
    from ctgan import data_transformer as dtm

    # Time ctgan's transformer apart by wrapping its fit/transform.
    spent = {"transform_seconds": 0.0}
    fit0, tr0 = dtm.DataTransformer.fit, dtm.DataTransformer.transform

    def timed(fn: Any) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent["transform_seconds"] += time.perf_counter() - t

        return wrapper

    dtm.DataTransformer.fit, dtm.DataTransformer.transform = timed(fit0), timed(tr0)
    try:
        model = CTGAN(epochs=epochs, batch_size=500, pac=10)
        model.set_random_state(seed)
        with Timed() as t:
            model.fit(train, discrete_columns=discrete)
    finally:
        dtm.DataTransformer.fit, dtm.DataTransformer.transform = fit0, tr0
    return model, {"fit_seconds": t.wall, "cpu_seconds": t.cpu, "load_1m": t.load, **spent}


def fit_ganforge(
    train: pd.DataFrame, epochs: int, seed: int, dp_epsilon: float | None = None, amp: str = "off"
) -> tuple[Any, dict[str, float]]:
    from ganforge.tabular import TabularGAN

    model = TabularGAN(epochs=epochs, batch_size=500, pac=10, seed=seed, dp_epsilon=dp_epsilon, amp=amp)
    with Timed() as t:
        model.fit(train)
    timing = {
        "fit_seconds": t.wall,
        "cpu_seconds": t.cpu,
        "load_1m": t.load,
        "transform_seconds": model.info["transform_seconds"],
    }
    if model.privacy:
        keys = ("epsilon", "delta", "noise_multiplier", "max_grad_norm", "sample_rate", "steps")
        timing["dp"] = {k: model.privacy[k] for k in keys}
    return model, timing


def scores(report: dict[str, Any]) -> dict[str, Any]:
    u, p = report.get("utility") or {}, report["privacy"]
    return {
        "fidelity": report["fidelity"]["overall"],
        "column_shapes": report["fidelity"]["column_shapes"],
        "pair_trends": report["fidelity"]["pair_trends"],
        "utility_metric": u.get("metric"),
        "utility_real": (u.get("real") or {}).get(u.get("metric")),
        "utility_synthetic": (u.get("synthetic") or {}).get(u.get("metric")),
        "utility_ratio": u.get("ratio"),
        "exact_copies": p["exact_copies"],
        "exact_copies_holdout": p.get("exact_copies_holdout"),  # real unseen rows that also occur in train
        "dcr_median": p["dcr_synthetic"]["dcr_median"],
        "dcr_holdout_median": (p.get("dcr_holdout") or {}).get("dcr_median"),
        "mia_auc": p.get("mia_auc"),
    }


def run_table(
    name: str, epochs: int, seed: int, order: list[str], dp_epsilons: list[float]
) -> dict[str, Any]:
    from ganforge.tabular import infer_schema
    from ganforge.tabular.report import evaluate

    df = load_table(name)
    train, hold = split(df, seed)
    schema = infer_schema(train)
    discrete = [c.name for c in schema.columns if c.kind in ("categorical", "boolean")]
    out: dict[str, Any] = {"rows": len(df), "train_rows": len(train), "epochs": epochs, "discrete": discrete}
    for which in order:
        torch.manual_seed(seed)
        if which == "ctgan":
            model, timing = fit_ctgan(train, discrete, epochs, seed)
            synth = model.sample(len(train))
        else:
            model, timing = fit_ganforge(
                train, epochs, seed, amp="bf16" if which == "ganforge+bf16" else "off"
            )
            synth = model.sample(len(train), seed=seed)
        report = evaluate(train, synth, holdout=hold, target=TARGETS[name], schema=schema, seed=seed)
        out[which] = {**timing, **scores(report)}
        print(
            f"  {name:10s} {which:9s} fit {timing['fit_seconds']:7.1f} s  fidelity {out[which]['fidelity']:.3f}",
            flush=True,
        )
    out["speedup"] = out["ctgan"]["fit_seconds"] / out["ganforge"]["fit_seconds"]
    out["speedup_cpu"] = out["ctgan"]["cpu_seconds"] / out["ganforge"]["cpu_seconds"]
    if "ganforge+bf16" in out:
        out["speedup_bf16"] = out["ctgan"]["fit_seconds"] / out["ganforge+bf16"]["fit_seconds"]
    for eps in dp_epsilons:
        torch.manual_seed(seed)
        model, timing = fit_ganforge(train, epochs, seed, dp_epsilon=eps)
        report = evaluate(train, model.sample(len(train), seed=seed), hold, TARGETS[name], schema, seed)
        out.setdefault("ganforge_dp", {})[f"{eps:g}"] = {**timing, **scores(report)}
        print(
            f"  {name:10s} DP eps={eps:<4g} fit {timing['fit_seconds']:7.1f} s  spent {timing['dp']['epsilon']:.3f}"
            f"  fidelity {out['ganforge_dp'][f'{eps:g}']['fidelity']:.3f}",
            flush=True,
        )
    return out


def versions() -> dict[str, str]:
    import ctgan
    import sklearn

    import ganforge

    return {
        "ganforge": ganforge.__version__,
        "ctgan": ctgan.__version__,
        "torch": torch.__version__,
        "pandas": pd.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "python": platform.python_version(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", default="diamonds,fair", help=f"comma-separated, from {', '.join(EPOCHS)}")
    ap.add_argument("--epochs", type=int, help="override the recorded epochs for every table")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads for both (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ganforge-first", action="store_true", help="fit ganforge before ctgan")
    ap.add_argument(
        "--bf16", action="store_true", help="also fit ganforge with amp='bf16' (row ganforge+bf16)"
    )
    ap.add_argument(
        "--dp-epsilons", default="1,10", help="private ganforge fits per table (comma-separated; '' for none)"
    )
    ap.add_argument("--no-record", action="store_true", help="do not append to the results file")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    order = ["ganforge", "ctgan"] if args.ganforge_first else ["ctgan", "ganforge"]
    if args.bf16:
        order.append("ganforge+bf16")
    dp_epsilons = [float(e) for e in args.dp_epsilons.split(",") if e]
    load_start = os.getloadavg()[0]
    results = {}
    for name in args.tables.split(","):
        results[name] = run_table(name, args.epochs or EPOCHS[name], args.seed, order, dp_epsilons)
    record = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "benchmark": "tabular_vs_ctgan",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "loadavg_1m_start": load_start,
            "loadavg_1m_end": os.getloadavg()[0],
        },
        "versions": versions(),
        "config": {"batch_size": 500, "pac": 10, "seed": args.seed, "order": order},
        "tables": results,
    }
    keys = [
        "fit_seconds",
        "transform_seconds",
        "fidelity",
        "column_shapes",
        "pair_trends",
        "utility_ratio",
        "exact_copies",
        "mia_auc",
    ]
    print(f"\n{'table':10s} {'model':13s} " + " ".join(f"{k[:13]:>13s}" for k in keys))
    for name, r in results.items():
        for which in ("ctgan", "ganforge", "ganforge+bf16"):
            if which not in r:
                continue
            vals = [r[which].get(k) for k in keys]
            print(
                f"{name:10s} {which:13s} "
                + " ".join(f"{v:13.3f}" if isinstance(v, float) else f"{v!s:>13s}" for v in vals)
            )
        for eps, d in r.get("ganforge_dp", {}).items():
            vals = [d.get(k) for k in keys]
            print(
                f"{name:10s} {'dp ' + eps:13s} "
                + " ".join(f"{v:13.3f}" if isinstance(v, float) else f"{v!s:>13s}" for v in vals)
                + f"   epsilon spent {d['dp']['epsilon']:.3f}"
            )
        print(
            f"{name:10s} speed-up (wall) {r['speedup']:.2f}x, (cpu) {r['speedup_cpu']:.2f}x at {r['epochs']} epochs"
            + (f"; with bf16 {r['speedup_bf16']:.2f}x" if "speedup_bf16" in r else "")
        )
    if not args.no_record:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with RESULTS.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
