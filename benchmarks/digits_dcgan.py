"""The default digits DCGAN's quality against training time: digits-FID, precision and recall
every 250 steps (2,000 samples each), to justify the recipe's steps and widths.

    python benchmarks/digits_dcgan.py --steps 2000 [--set net.g_channels=64 --set net.d_channels=64]

Appends one JSON line (curve, seconds, machine, versions, date) to
benchmarks/results/digits_dcgan.jsonl.
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
from ganforge.config import to_dict


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--every", type=int, default=250)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        t0 = time.perf_counter()
        gan = ganforge.train(
            data="digits",
            model="dcgan",
            out=run,
            steps=args.steps,
            progress=False,
            overrides=[
                *args.overrides,
                f"eval.every={args.every}",
                "eval.metrics=fid,pr",
                "eval.n=2000",
                "train.sample_every=0",
            ],
        )
        seconds = time.perf_counter() - t0
        curve = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    points = [
        {"step": r["step"], **{k: r["metrics"][k] for k in ("fid", "precision", "recall")}} for r in curve
    ]
    for pt in points:
        print(
            f"step {pt['step']:5d}  digits-FID {pt['fid']:6.3f}  precision {pt['precision']:.3f}  recall {pt['recall']:.3f}"
        )
    record = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "overrides": args.overrides,
        "net": to_dict(gan.cfg.net),
        "train": to_dict(gan.cfg.train),
        "steps": args.steps,
        "seconds": seconds,
        "curve": points,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load": os.getloadavg()[0]},
        "versions": {"ganforge": ganforge.__version__, "torch": torch.__version__},
    }
    with (Path(__file__).parent / "results" / "digits_dcgan.jsonl").open("a") as fh:
        fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
