"""Stacked digits: 1,000 modes, the analogue of Stacked MNIST (Metz et al. 2017; PacGAN, Table 3).

Three random `digits` images form the three channels of one image. A generator's samples are
classified channel by channel with ganforge's digits classifier; the three predicted digits
name one of 1,000 modes. Reported: modes covered and KL(predicted-mode histogram || uniform),
for the default DCGAN recipe with and without each stabiliser. Published on Stacked MNIST
(PacGAN Table 3): DCGAN 99 modes, KL 3.4; PacDCGAN2 1,000 modes, KL 0.06.

    python benchmarks/stacked_digits.py --recipes default,pacgan,mbstd --seeds 2
    python benchmarks/stacked_digits.py --recipes r1 --seeds 2 --first-seed 1   # seeds 1 and 2
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

import ganforge
from ganforge.config import DataConfig
from ganforge.data import load_dataset
from ganforge.metrics.extractors import digits_probs
from ganforge.metrics.modes import class_histogram_metrics

RECIPES: dict[str, list[str]] = {
    "default": [],  # the dcgan recipe: lazy R1 with gamma 1 since it measured best here
    "no_r1": ["stab.r1_gamma=0"],  # the recipe before that (the "default" rows recorded before 2026-11-22 20:30)
    "pacgan": ["stab.pac=2"],
    "mbstd": ["stab.mbstd=true"],
    "mbdisc": ["stab.mbdisc=8"],
    "spectral_norm": ["stab.spectral_norm=true"],
    "r1": ["stab.r1_gamma=1"],
    "unrolled": ["stab.unrolled_steps=1"],
    "diffaug": ["stab.diffaug=color,translation,cutout"],
    "feature_matching": ["stab.feature_matching=1"],
}


def stacked_modes(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1] -> (N,) mode index 100*d_R + 10*d_G + d_B from the per-channel digits."""
    digits = [digits_probs(images[:, c : c + 1]).argmax(dim=1) for c in range(3)]
    return digits[0] * 100 + digits[1] * 10 + digits[2]


def standard_error(values: list[float]) -> float:
    return statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0


def run_one(recipe: str, seed: int, steps: int | None, n: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        gan = ganforge.train(
            data="stacked_digits",
            model="dcgan",
            out=Path(tmp) / "run",
            seed=seed,
            steps=steps,
            overrides=[*RECIPES[recipe], "train.sample_every=0", "monitor.enabled=false"],
            progress=False,
        )
        seconds = time.perf_counter() - t0
        modes = torch.cat(
            [stacked_modes(gan.sample(min(2000, n - i), seed=seed + 1000 + i)) for i in range(0, n, 2000)]
        )
    result = class_histogram_metrics(modes, 1000)
    return {"modes": result["modes"], "kl": result["kl"], "seconds": seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipes", default="default")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--n", type=int, default=26_000, help="samples classified (26k as Metz et al. 2017)")
    p.add_argument("--no-record", action="store_true")
    args = p.parse_args()
    real = load_dataset(DataConfig(name="stacked_digits", n_points=args.n))
    real_modes = class_histogram_metrics(stacked_modes((real.x + 1) / 2), 1000)
    print(f"real data through the classifier: {real_modes['modes']} modes, KL {real_modes['kl']:.3f}")
    print(f"{'recipe':18} {'modes':>14} {'KL':>14} {'s/run':>7}")
    for recipe in args.recipes.split(","):
        seeds = range(args.first_seed, args.first_seed + args.seeds)
        runs = [{**run_one(recipe, s, args.steps, args.n), "seed": s} for s in seeds]
        m = [r["modes"] for r in runs]
        kl = [r["kl"] for r in runs]
        print(
            f"{recipe:18} {statistics.fmean(m):8.1f}±{standard_error(m):5.1f} {statistics.fmean(kl):8.3f}±{standard_error(kl):5.3f} "
            f"{statistics.fmean(r['seconds'] for r in runs):7.1f}"
        )
        if not args.no_record:
            record = {
                "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "recipe": recipe,
                "steps": args.steps,
                "n": args.n,
                "runs": runs,
                "real": real_modes,
                "machine": {"platform": platform.platform(), "threads": torch.get_num_threads()},
                "versions": {"ganforge": ganforge.__version__, "torch": torch.__version__},
            }
            out = Path(__file__).parent / "results" / "stacked_digits.jsonl"
            with out.open("a") as fh:
                fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
