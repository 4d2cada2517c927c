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
    .venv-bench/bin/python benchmarks/bench_tabular.py --repeats 5   # as recorded, private rows included (~18 min)
    .venv-bench/bin/python benchmarks/bench_tabular.py --tables fair --repeats 5 --dp-epsilons ''   # fair again (~5 min)
    .venv-bench/bin/python benchmarks/bench_tabular.py --repeats 5 --extra fresh   # with CTGAN's step order too
    .venv-bench/bin/python benchmarks/bench_tabular.py --tables fair --epochs 5 --repeats 1   # quick look

Each table runs `--repeats` rounds (default 3, seeds seed..seed+2) in alternating order, so that
a machine whose speed drifts during the run slows both tools alike; speed-ups are per round
(ctgan / ganforge) and summarised by their median, min and max. `--extra bf16,reuse,fresh` adds
ganforge rows with `amp="bf16"`, `reuse_fakes=True` or `share_fakes=False` (CTGAN's step order). The plain ganforge fit is scored three
ways: as `sample` draws by default (calibrated: a 3x pool of G's rows weighted to the training
category frequencies), `ganforge:raw` (`calibrate=False`, G's rows as they come) and `ganforge:log`
(`cond_sampling="log"`: CTGAN's rule for drawing conditional vectors, more rows of rare categories).

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
    train: pd.DataFrame, epochs: int, seed: int, dp_epsilon: float | None = None, **options: Any
) -> tuple[Any, dict[str, float]]:
    from ganforge.tabular import TabularGAN

    model = TabularGAN(epochs=epochs, batch_size=500, pac=10, seed=seed, dp_epsilon=dp_epsilon, **options)
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


VARIANTS = {  # extra ganforge rows (--extra): TabularGAN keyword arguments on top of the defaults
    "bf16": {"amp": "bf16"},
    "reuse": {"reuse_fakes": True},
    "fresh": {"share_fakes": False},  # CTGAN's step: the generator step draws new rows
}


def fit_and_score(
    which: str, train: pd.DataFrame, hold: pd.DataFrame, schema: Any, table: str, epochs: int, seed: int
) -> dict[str, dict[str, Any]]:
    """{which: fit timing and scores}; for plain ganforge also the same fit sampled two more ways:
    "ganforge:raw" (`calibrate=False`: G's rows as they come) and "ganforge:log"
    (`cond_sampling="log"`: CTGAN's rule for drawing the conditional vector)."""
    from ganforge.tabular.report import evaluate

    torch.manual_seed(seed)
    if which == "ctgan":
        discrete = [c.name for c in schema.columns if c.kind in ("categorical", "boolean")]
        model, timing = fit_ctgan(train, discrete, epochs, seed)
        samples = {which: model.sample(len(train))}
    else:
        extra = VARIANTS[which.split("+", 1)[1]] if "+" in which else {}
        model, timing = fit_ganforge(train, epochs, seed, **extra)
        samples = {which: model.sample(len(train), seed=seed)}
        if not extra:
            samples[f"{which}:raw"] = model.sample(len(train), seed=seed, calibrate=False)
            samples[f"{which}:log"] = model.sample(len(train), seed=seed, cond_sampling="log")
    return {
        key: {
            **timing,
            **scores(evaluate(train, synth, holdout=hold, target=TARGETS[table], schema=schema, seed=seed)),
        }
        for key, synth in samples.items()
    }


def summary(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    return {
        "median": float(np.median(a)),
        "mean": float(a.mean()),
        "min": float(a.min()),
        "max": float(a.max()),
        "sd": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
    }


def run_table(
    name: str, epochs: int, seed: int, models: list[str], repeats: int, dp_epsilons: list[float]
) -> dict[str, Any]:
    """`repeats` rounds on one split; round r fits every model with seed + r, in an order that
    alternates (ctgan first, then ganforge first, ...) so that a machine's drift in speed
    during the run falls on both tools alike. Speed-ups are per round (ctgan / ganforge)."""
    from ganforge.tabular import infer_schema

    df = load_table(name)
    train, hold = split(df, seed)
    schema = infer_schema(train)
    discrete = [c.name for c in schema.columns if c.kind in ("categorical", "boolean")]
    out: dict[str, Any] = {"rows": len(df), "train_rows": len(train), "epochs": epochs, "discrete": discrete}
    rounds: list[dict[str, Any]] = []
    for r in range(repeats):
        order = models if r % 2 == 0 else [models[1], models[0], *models[2:]]
        row: dict[str, Any] = {"seed": seed + r, "order": order}
        for which in order:
            for key, result in fit_and_score(which, train, hold, schema, name, epochs, seed + r).items():
                row[key] = result
                print(
                    f"  {name:10s} round {r} {key:18s} fit {result['fit_seconds']:7.1f} s"
                    f"  fidelity {result['fidelity']:.3f}  utility {result['utility_ratio'] or 0:.3f}",
                    flush=True,
                )
        rounds.append(row)
    out["rounds"] = rounds
    models = [key for key in rounds[0] if key not in ("seed", "order")]
    out["summary"] = {
        which: {
            key: summary([row[which][key] for row in rounds])
            for key in SUMMARY_KEYS
            if all(isinstance(row[which].get(key), (int, float)) for row in rounds)
        }
        for which in models
    }
    out["speedup"] = {
        which: summary([row["ctgan"]["fit_seconds"] / row[which]["fit_seconds"] for row in rounds])
        for which in models
        if which != "ctgan" and ":" not in which  # ":log" rows share their fit
    }
    for eps in dp_epsilons:
        torch.manual_seed(seed)
        model, timing = fit_ganforge(train, epochs, seed, dp_epsilon=eps)
        from ganforge.tabular.report import evaluate

        report = evaluate(train, model.sample(len(train), seed=seed), hold, TARGETS[name], schema, seed)
        out.setdefault("ganforge_dp", {})[f"{eps:g}"] = {**timing, **scores(report)}
        print(
            f"  {name:10s} DP eps={eps:<4g} fit {timing['fit_seconds']:7.1f} s  spent {timing['dp']['epsilon']:.3f}"
            f"  fidelity {out['ganforge_dp'][f'{eps:g}']['fidelity']:.3f}",
            flush=True,
        )
    return out


SUMMARY_KEYS = [
    "fit_seconds",
    "transform_seconds",
    "fidelity",
    "column_shapes",
    "pair_trends",
    "utility_ratio",
    "exact_copies",
    "mia_auc",
    "load_1m",
]


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
    ap.add_argument(
        "--repeats", type=int, default=3, help="rounds per table, in alternating order (default 3)"
    )
    ap.add_argument(
        "--extra", default="", help=f"extra ganforge rows, comma-separated from {', '.join(VARIANTS)}"
    )
    ap.add_argument(
        "--dp-epsilons", default="1,10", help="private ganforge fits per table (comma-separated; '' for none)"
    )
    ap.add_argument("--no-record", action="store_true", help="do not append to the results file")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    extra = [e for e in args.extra.split(",") if e]
    unknown = [e for e in extra if e not in VARIANTS]
    if unknown or args.repeats < 1:
        raise SystemExit(
            f"--extra takes {', '.join(VARIANTS)}; --repeats at least 1 (got {args.extra!r}, {args.repeats})"
        )
    models = ["ctgan", "ganforge", *(f"ganforge+{e}" for e in extra)]
    dp_epsilons = [float(e) for e in args.dp_epsilons.split(",") if e]
    load_start = os.getloadavg()[0]
    results = {}
    for name in args.tables.split(","):
        results[name] = run_table(
            name, args.epochs or EPOCHS[name], args.seed, models, args.repeats, dp_epsilons
        )
    record = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "benchmark": "tabular_vs_ctgan",
        "format": 2,  # rounds + summary; earlier lines hold one fit per model
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "loadavg_1m_start": load_start,
            "loadavg_1m_end": os.getloadavg()[0],
        },
        "versions": versions(),
        "config": {
            "batch_size": 500,
            "pac": 10,
            "seed": args.seed,
            "repeats": args.repeats,
            "models": models,
        },
        "tables": results,
    }
    keys = [k for k in SUMMARY_KEYS if k not in ("transform_seconds", "load_1m")]
    print(
        f"\n{'table':10s} {'model':18s} "
        + " ".join(f"{k[:13]:>15s}" for k in keys)
        + "   (median over rounds, [min, max])"
    )
    for name, r in results.items():
        for which in r["summary"]:
            cells = []
            for k in keys:
                v = r["summary"][which].get(k)
                cells.append(f"{v['median']:7.3f} ±{v['sd']:6.3f}" if v else f"{'-':>15s}")
            print(f"{name:10s} {which:18s} " + " ".join(cells))
        for eps, d in r.get("ganforge_dp", {}).items():
            vals = [d.get(k) for k in keys]
            print(
                f"{name:10s} {'dp ' + eps:18s} "
                + " ".join(f"{v:15.3f}" if isinstance(v, float) else f"{v!s:>15s}" for v in vals)
                + f"   epsilon spent {d['dp']['epsilon']:.3f}"
            )
        for which, sp in r["speedup"].items():
            print(
                f"{name:10s} {which} speed-up over ctgan (wall, per round): median {sp['median']:.2f}x "
                f"[{sp['min']:.2f}, {sp['max']:.2f}] over {args.repeats} rounds at {r['epochs']} epochs"
            )
    if not args.no_record:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with RESULTS.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
