"""Which training defaults ganforge.tabular ships: its defaults against CTGAN's, seed by seed.

Quality only (no timing): each table's fit at the recorded epochs of `bench_tabular.py` (batch
500, pac 10, same 80/20 split), sampled by default and scored by the same code, for several seeds.

    ctgan-defaults   Adam's step 2e-4 for both networks, G's last weights sample (CTGAN's choice)
    ema-only         step 2e-4, and an exponential moving average of G's weights samples
    ganforge         TabularGAN's defaults: step 5e-4, and the average (decay 0.999, warmed up
                     as in the engine) samples

More variants: `--variant name='{"g_lr": 1e-3, "d_lr": 1e-3}'` (TabularGAN keyword arguments).

Besides the speed benchmark's tables, three small plotnine tables at TabularGAN's default 300
epochs (batch 500 is more than their rows, so an epoch is one step): `mpg` (234 cars, target
`drv`), `midwest` (437 counties, 28 columns, target `state`), `economics` (574 months, target
`psavert`, a regression).

    .venv-bench/bin/python benchmarks/bench_tabular_defaults.py --tables diamonds,fair --seeds 0,1,2,3,4

Quality results depend on the torch thread count (products sum in another order), so the run
records it; `--threads 1` lets two runs share this 2-core machine. Prints each fit and the
medians; appends one JSON line per run to benchmarks/results/tabular_defaults.jsonl.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_tabular import EPOCHS, TARGETS, load_table, scores, split, versions  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "tabular_defaults.jsonl"
SMALL = {"mpg": "drv", "midwest": "state", "economics": "psavert"}  # plotnine tables: their targets


def load(table: str) -> tuple[pd.DataFrame, str, int]:
    """The table, its utility target and the epochs to fit it for."""
    if table not in SMALL:
        return load_table(table), TARGETS[table], EPOCHS[table]
    import plotnine.data

    df = getattr(plotnine.data, table).copy()
    for col in df.columns:  # plain text categories, as in bench_tabular
        if isinstance(df[col].dtype, pd.CategoricalDtype):
            df[col] = df[col].astype(str).astype(object)
    return df, SMALL[table], 300


VARIANTS: dict[str, dict[str, Any]] = {
    "ctgan-defaults": {"g_lr": 2e-4, "d_lr": 2e-4, "ema_decay": 0.0},
    "ema-only": {"g_lr": 2e-4, "d_lr": 2e-4},
    "ganforge": {},
}
KEYS = ("fidelity", "column_shapes", "pair_trends", "utility_ratio", "mia_auc")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--tables", default="diamonds,fair", help=f"comma-separated, from {', '.join([*EPOCHS, *SMALL])}"
    )
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--epochs", type=int, help="override the recorded epochs for every table")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=JSON", help="an extra variant")
    ap.add_argument(
        "--only", help=f"comma-separated variants to run (default: {', '.join(VARIANTS)} and extras)"
    )
    args = ap.parse_args()
    variants = dict(VARIANTS)
    for v in args.variant:
        name, _, text = v.partition("=")
        variants[name] = json.loads(text)
    if args.only:
        unknown = set(args.only.split(",")) - set(variants)
        if unknown:
            raise SystemExit(f"unknown variants: {', '.join(sorted(unknown))}")
        variants = {k: v for k, v in variants.items() if k in args.only.split(",")}
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    from ganforge.tabular import TabularGAN, infer_schema
    from ganforge.tabular.report import evaluate

    date = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    seeds = [int(s) for s in args.seeds.split(",")]
    for table in args.tables.split(","):
        df, target, epochs = load(table)
        train, hold = split(df, 0)
        schema = infer_schema(train)
        epochs = args.epochs or epochs
        fits: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
        for seed in seeds:
            for name, kw in variants.items():
                model = TabularGAN(epochs=epochs, batch_size=500, pac=10, seed=seed, **kw).fit(train)
                s = scores(
                    evaluate(
                        train,
                        model.sample(len(train), seed=seed),
                        holdout=hold,
                        target=target,
                        schema=schema,
                        seed=seed,
                    )
                )
                row = {"seed": seed, **{k: round(s[k], 4) for k in KEYS}}
                fits[name].append(row)
                print(json.dumps({"table": table, "variant": name, **row}), flush=True)
        summary = {
            name: {k: statistics.median(r[k] for r in rows) for k in KEYS} for name, rows in fits.items()
        }
        for name, med in summary.items():
            print(f"{table:9s} {name:15s} " + "  ".join(f"{k} {v:.3f}" for k, v in med.items()))
        record = {
            "date": date,
            "benchmark": "tabular_defaults",
            "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()},
            "versions": versions(),
            "table": table,
            "epochs": epochs,
            "variants": variants,
            "fits": fits,
            "median": summary,
        }
        with RESULTS.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
