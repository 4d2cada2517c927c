"""The default class-conditional GAN on digits: digits-FID and GAN-test accuracy (Shmelkov et al.
2018) during training (2,000 samples every 250 steps) and at the end (`ganforge evaluate`: 10,000
samples, every metric), to justify the cgan recipe.

    python benchmarks/cgan_digits.py [--steps 1500] [--out runs/cgan-digits] [--set key=value ...]

Trains exactly what `ganforge train --data digits --model cgan` trains (plus the evaluations),
writes a class-ordered grid (column c: digit c) to OUT/grid.png, and appends one JSON line (curve,
final metrics, per-class accuracy, seconds, machine, versions, date) to
benchmarks/results/cgan_digits.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

import ganforge
from ganforge.cli import main as cli
from ganforge.config import to_dict
from ganforge.evaluate import evaluate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, help="generator steps (default: the recipe's)")
    p.add_argument("--every", type=int, default=250)
    p.add_argument("--out", type=Path, help="keep the run folder here (default: a temporary folder)")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = args.out or Path(tmp) / "run"
        t0 = time.perf_counter()
        gan = ganforge.train(
            data="digits",
            model="cgan",
            out=run,
            steps=args.steps,
            progress=False,
            overrides=[
                *args.overrides,
                f"eval.every={args.every}",
                "eval.metrics=fid,pr",
                "eval.n=2000",
            ],
        )
        seconds = time.perf_counter() - t0
        curve = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        final = evaluate(run)
        cli(["sample", str(run), "--n", "100", "--out", str(run / "grid.png")])
    points = [
        {"step": r["step"], **{k: r["metrics"][k] for k in ("fid", "precision", "recall", "accuracy")}}
        for r in curve
    ]
    for pt in points:
        print(
            f"step {pt['step']:5d}  digits-FID {pt['fid']:6.3f}  precision {pt['precision']:.3f}  "
            f"recall {pt['recall']:.3f}  GAN-test accuracy {pt['accuracy']:.3f}"
        )
    m = final["metrics"]
    print(f"final (10,000 samples): digits-FID {m['fid']:.3f}, GAN-test accuracy {m['accuracy']:.4f}")
    record = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "overrides": args.overrides,
        "net": to_dict(gan.cfg.net),
        "loss": gan.cfg.loss.name,
        "steps": gan.step,
        "seconds": round(seconds, 1),
        "seconds_note": "wall time of training, including the evaluations every --every steps",
        "curve": points,
        "final": {
            "n": final["n"],
            "metrics": final["metrics"],
            "per_class": final["per_class"],
            "seconds": final["seconds"],
        },
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load": os.getloadavg()[0]},
        "versions": {"ganforge": ganforge.__version__, "torch": torch.__version__},
        "threads": torch.get_num_threads(),
    }
    with (Path(__file__).parent / "results" / "cgan_digits.jsonl").open("a") as fh:
        fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
