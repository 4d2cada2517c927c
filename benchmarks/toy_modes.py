"""Mode-collapse benchmark on the 2-D mixtures, PacGAN's Table 1 protocol (Lin et al. 2018).

For each recipe and dataset, train with several seeds, draw 2,500 samples and report modes
captured, % high-quality samples (within 3 sigma of a centre) and the reverse KL of the mode
histogram to uniform: mean +- standard error over seeds, plus seconds per run. Results are
appended to benchmarks/results/toy_modes.jsonl with the machine, versions and date.

The samples are the generator's own (`jacobian_limit=0`). `--jacobian-limits 10,20` also draws
them from the same trained models with Jacobian-based truncation at those limits (Tanielian et
al. 2020; `ganforge.engine.sampling`) and records those metrics and the share of latent draws
each limit rejects, per run, under "jbts".

    python benchmarks/toy_modes.py --seeds 10 --recipes default,pacgan,unrolled
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

import ganforge
from ganforge.config import DataConfig
from ganforge.data import load_dataset
from ganforge.engine.sampling import jbts_threshold, steep
from ganforge.metrics.modes import gaussian_mixture_modes

# Published figures (PacGAN, Table 1): modes, % high quality, reverse KL.
PUBLISHED = {
    ("ring8", "GAN"): (6.3, 98.2, 0.45), ("ring8", "PacGAN4"): (7.9, 95.6, 0.07),
    ("grid25", "GAN"): (17.3, 94.8, 0.70), ("grid25", "PacGAN4"): (24.8, 93.6, 0.04),
}

# Each recipe: (loss, --set overrides) on top of the default toy recipe.
RECIPES: dict[str, tuple[str, list[str]]] = {
    "default": ("ns", []),  # since 2026-11-22 20:00 with R1 (gamma 0.02 x the data's variance)
    "no_r1": ("ns", ["stab.r1_gamma=0"]),  # the default recipe before that
    "plain": ("ns", ["net.g_layers=1", "net.d_layers=1", "net.g_hidden=128", "net.d_hidden=128", "train.ema_decay=0",
                     "stab.r1_gamma=0"]),
    "minimax": ("minimax", []),
    "wgan-gp": ("wgan-gp", []),
    "hinge": ("hinge", []),
    "lsgan": ("lsgan", []),
    "pacgan": ("ns", ["stab.pac=4"]),
    "unrolled": ("ns", ["stab.unrolled_steps=2", "train.steps=5000"]),
    "deep": ("ns", ["net.g_layers=4", "net.d_layers=4"]),
    "spectral_norm": ("ns", ["stab.spectral_norm=true"]),
    "mbstd": ("ns", ["stab.mbstd=true"]),
}


def run_one(data: str, recipe: str, seed: int, steps: int | None, n: int, limits: list[float]) -> dict:
    loss, overrides = RECIPES[recipe]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        gan = ganforge.train(data=data, loss=loss, out=Path(tmp) / "run", seed=seed, steps=steps,
                             overrides=[*overrides, "monitor.enabled=false", "train.sample_every=0",
                                        "sample.jacobian_limit=0"], progress=False)
        seconds = time.perf_counter() - t0
        ds = load_dataset(DataConfig(name=data))
        result = gaussian_mixture_modes(gan.sample(n, seed=seed + 1000), ds.modes, ds.mode_std)
        jbts = {}
        for limit in limits:
            x = gan.sample(n, seed=seed + 1000, jacobian_limit=limit)
            jbts[f"{limit:g}"] = {**gaussian_mixture_modes(x, ds.modes, ds.mode_std),
                                  "rejected": rejected_share(gan, limit, n, seed + 1000)}
    return {**result, "seconds": seconds, **({"jbts": jbts} if jbts else {})}


def rejected_share(gan: ganforge.GAN, limit: float, n: int, seed: int) -> float:
    """Share of the first n latent draws of `seed` that Jacobian truncation at `limit` rejects."""
    tr = gan.trainer
    z = tr.family.sample_z(n, torch.device("cpu"), torch.Generator().manual_seed(seed))
    with torch.no_grad():
        _, norms = steep(tr, z, None, torch.Generator().manual_seed(seed))
    return float((norms > jbts_threshold(tr, limit, 1024)).double().mean())


def git_commit() -> str:
    """The ganforge commit measured (the default recipe changes over time), or '' outside a checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return ""
    return out.stdout.strip()


def summarise(values: list[float]) -> tuple[float, float]:
    """Mean and standard error; nan when a run has no value (e.g. reverse KL without high-quality samples)."""
    if any(math.isnan(v) for v in values):
        return math.nan, math.nan
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0
    return mean, se


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="ring8,grid25")
    p.add_argument("--recipes", default="default")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--steps", type=int, default=None, help="override the recipe's steps")
    p.add_argument("--n", type=int, default=2500)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--jacobian-limits", default="", help="also sample with Jacobian truncation at these limits")
    p.add_argument("--no-record", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(__file__).parent / "results" / "toy_modes.jsonl"
    limits = [float(v) for v in args.jacobian_limits.split(",") if v.strip()]
    print(f"{'data':7} {'recipe':14} {'modes':>12} {'% hq':>12} {'rKL':>14} {'s/run':>7}  all seeds")
    for data in args.data.split(","):
        for recipe in args.recipes.split(","):
            runs = []
            for seed in range(args.seeds):
                runs.append(run_one(data, recipe, seed, args.steps, args.n, limits))
                print(f"  {data} {recipe} seed {seed}: {runs[-1]}", flush=True)
            m, hq, kl, sec = (summarise([r[k] for r in runs]) for k in ("modes", "hq_fraction", "reverse_kl", "seconds"))
            k = len(load_dataset(DataConfig(name=data, n_points=10)).modes)
            print(f"{data:7} {recipe:14} {m[0]:5.2f}±{m[1]:4.2f}/{k:<2} {100 * hq[0]:6.2f}±{100 * hq[1]:4.2f} "
                  f"{kl[0]:7.4f}±{kl[1]:.4f} {sec[0]:7.1f}  all modes: {sum(r['modes'] == k for r in runs)}/{len(runs)}")
            jbts = {}
            for limit in (f"{v:g}" for v in limits):
                rs = [r["jbts"][limit] for r in runs]
                jm, jhq, jkl, jrej = (summarise([r[key] for r in rs])
                                      for key in ("modes", "hq_fraction", "reverse_kl", "rejected"))
                jbts[limit] = {"modes_mean": jm[0], "modes_se": jm[1], "hq_mean": jhq[0], "hq_se": jhq[1],
                               "hq_min": min(r["hq_fraction"] for r in rs), "rkl_mean": jkl[0], "rkl_se": jkl[1],
                               "rkl_max": max(r["reverse_kl"] for r in rs), "rejected_mean": jrej[0],
                               "all_modes": sum(r["modes"] == k for r in rs)}
                print(f"{'':7} {'+ JBTS ' + limit:14} {jm[0]:5.2f}±{jm[1]:4.2f}/{k:<2} {100 * jhq[0]:6.2f}±{100 * jhq[1]:4.2f} "
                      f"{jkl[0]:7.4f}±{jkl[1]:.4f} rejects {100 * jrej[0]:.1f} %  min hq {100 * jbts[limit]['hq_min']:.1f} %")
            if not args.no_record:
                record = {
                    "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "data": data, "recipe": recipe,
                    "seeds": args.seeds, "steps": args.steps, "n": args.n, "runs": runs,
                    "loss": RECIPES[recipe][0], "overrides": RECIPES[recipe][1], "commit": git_commit(),
                    "modes_mean": m[0], "modes_se": m[1], "hq_mean": hq[0], "hq_se": hq[1], "rkl_mean": kl[0],
                    "rkl_se": kl[1], "seconds_mean": sec[0], "threads": args.threads, "jbts": jbts,
                    "machine": {"platform": platform.platform(), "processor": platform.processor(),
                                "cpus": torch.get_num_threads()},
                    "versions": {"ganforge": ganforge.__version__, "torch": torch.__version__},
                }
                with out.open("a") as fh:
                    fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
