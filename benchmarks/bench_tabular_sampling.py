"""Why ganforge's default samples trail ctgan's utility on `diamonds`: class balance, not G.

`bench_tabular.py` scores utility as the macro-F1 of a classifier trained on synthetic rows and
tested on real ones, against the same classifier trained on real rows. Macro-F1 rewards the rare
classes of the target (`cut`: Fair 3 %, Good 9 %), so a synthetic table that over-represents them
scores higher whatever its quality. ctgan samples conditional vectors ~ log(1 + count), which
over-represents rare categories; ganforge's default draws them by frequency and then calibrates
the sample to the training frequencies.

This script fits ganforge once per seed (the bench's split, epochs, batch 500, pac 10) and samples
the same fit five ways:

    data+cal     the default: frequencies, calibrated (raked) to the training counts
    data raw     frequencies, not calibrated
    log raw      ctgan's rule, not calibrated (`cond_sampling="log"`)
    log+cal      ctgan's rule for the 3x pool, then calibrated to the training counts
    uniform+cal  every category alike for the pool, then calibrated

If G's rows for rare classes were the problem, the calibrated pools drawn with more rare-class
rows (log+cal, uniform+cal) would gain; if class balance is, only the uncalibrated log sample gains.

    .venv-bench/bin/python benchmarks/bench_tabular_sampling.py --table diamonds --seeds 0,1,2,3,4
    .venv-bench/bin/python benchmarks/bench_tabular_sampling.py --fresh-fakes   # CTGAN's step order

Appends one JSON line per (seed, variant) to benchmarks/results/tabular_sampling.jsonl.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_tabular import EPOCHS, TARGETS, load_table, scores, split, versions  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "tabular_sampling.jsonl"


def calibrated_from(model, n: int, seed: int, cond_sampling: str):
    """n rows from a pool drawn with `cond_sampling`, raked to the training category counts: what
    `sample(n, seed=seed)` does with "data", through the same method."""
    return model._fitted().inverse(
        model._calibrated(n, torch.Generator().manual_seed(seed), seed, cond_sampling)
    )


VARIANTS = ("data+cal", "data raw", "log raw", "log+cal", "uniform+cal")


def draw(model, variant: str, n: int, seed: int):
    """n rows of `model` sampled as `variant` (see the module docstring)."""
    if variant == "data+cal":
        return model.sample(n, seed=seed)
    if variant == "data raw":
        return model.sample(n, seed=seed, calibrate=False)
    if variant == "log raw":
        return model.sample(n, seed=seed, cond_sampling="log")
    return calibrated_from(model, n, seed, variant.split("+")[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--table", default="diamonds", choices=list(EPOCHS))
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument(
        "--fresh-fakes", action="store_true", help="fit with CTGAN's step order (share_fakes=False)"
    )
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(2)
    from ganforge.tabular import TabularGAN, infer_schema
    from ganforge.tabular.report import evaluate

    train, hold = split(load_table(args.table), 0)
    schema = infer_schema(train)
    date = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    for seed in (int(s) for s in args.seeds.split(",")):
        model = TabularGAN(
            epochs=EPOCHS[args.table], batch_size=500, pac=10, seed=seed, share_fakes=not args.fresh_fakes
        ).fit(train)
        n = len(train)
        for name in VARIANTS:
            synth = draw(model, name, n, seed)
            s = scores(
                evaluate(train, synth, holdout=hold, target=TARGETS[args.table], schema=schema, seed=seed)
            )
            share = float((synth[TARGETS[args.table]].astype(str).value_counts(normalize=True)).min())
            row = {
                "date": date,
                "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()},
                "versions": versions(),
                "table": args.table,
                "share_fakes": not args.fresh_fakes,
                "seed": seed,
                "variant": name,
                "rarest_target_share": round(share, 4),
                **{k: s[k] for k in ("fidelity", "column_shapes", "pair_trends", "utility_ratio")},
            }
            print(json.dumps(row), flush=True)
            with RESULTS.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
