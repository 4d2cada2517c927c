"""Speed and value of ganforge's `frechet_distance` against the pytorch-fid formula (scipy `sqrtm`).

Features are 2048-d like Inception pool3, non-negative and correlated: relu(z @ W + b) with
Gaussian z and W; the fake set uses a perturbed W and b so the FID is of a realistic size. The
statistics (mean, covariance) are common to both methods and are timed apart; the comparison
times only the distance from (mu, sigma), over several repeats (median, min, max).

    python benchmarks/bench_frechet.py            # 10k x 2048 per set, as recorded
    python benchmarks/bench_frechet.py --n 1000   # N < D: singular covariances, pytorch-fid's offset path

Prints a table and appends one JSON line (date, machine, versions, figures) to
benchmarks/results/frechet.jsonl.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy
import torch
from scipy import linalg

from ganforge.metrics import feature_statistics, frechet_distance

RESULTS = Path(__file__).parent / "results" / "frechet.jsonl"


def pytorch_fid_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """pytorch-fid's calculate_frechet_distance, re-created: sqrtm of S1 S2, offset if singular, drop imag."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    assert mu1.shape == mu2.shape and sigma1.shape == sigma2.shape
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))  # product might be almost singular
    if not np.isfinite(covmean).all():
        print(f"fid calculation produces singular product; adding {eps} to diagonal of cov estimates")
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):  # numerical error might give a slight imaginary component
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def make_features(n: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(real, fake), each (n, dim) float32: relu(z @ W + b), fake with W, b perturbed."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, dim, generator=g) / dim**0.5
    b = 0.5 * torch.randn(dim, generator=g)
    w_fake = w + 0.3 * torch.randn(dim, dim, generator=g) / dim**0.5
    b_fake = b + 0.1 * torch.randn(dim, generator=g)
    real = torch.relu(torch.randn(n, dim, generator=g) @ w + b)
    fake = torch.relu(torch.randn(n, dim, generator=g) @ w_fake + b_fake)
    return real, fake


def timed(fn: Callable[[], float], repeats: int) -> tuple[float, list[float]]:
    """(value of the last call, wall times in seconds of each call)."""
    times, value = [], float("nan")
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return value, times


def summary(times: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="samples per set")
    ap.add_argument("--dim", type=int, default=2048, help="feature dimension")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls of ganforge's frechet_distance")
    ap.add_argument("--ref-repeats", type=int, default=3, help="timed calls of the pytorch-fid formula")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-record", action="store_true", help="do not append to the results file")
    args = ap.parse_args()

    real, fake = make_features(args.n, args.dim, args.seed)
    t0 = time.perf_counter()
    mu1, sigma1 = feature_statistics(real)
    mu2, sigma2 = feature_statistics(fake)
    t_stats = (time.perf_counter() - t0) / 2  # per set, common to both methods
    t0 = time.perf_counter()
    np.cov(real.numpy().astype(np.float64), rowvar=False)
    t_np_cov = time.perf_counter() - t0
    m1, s1, m2, s2 = (t.numpy() for t in (mu1, sigma1, mu2, sigma2))  # float64, shared by both
    pd = int(torch.linalg.cholesky_ex(sigma1).info) == 0  # which route ours takes

    tiny_mu, tiny_sigma = np.zeros(8), np.eye(8)  # warm-up: library and thread start-up are not timed
    frechet_distance(tiny_mu, tiny_sigma, tiny_mu, tiny_sigma)
    pytorch_fid_distance(tiny_mu, tiny_sigma, tiny_mu, tiny_sigma)
    ours, t_ours = timed(lambda: frechet_distance(m1, s1, m2, s2), args.repeats)
    ref, t_ref = timed(lambda: pytorch_fid_distance(m1, s1, m2, s2), args.ref_repeats)
    ratio = statistics.median(t_ref) / statistics.median(t_ours)
    rel_diff = abs(ours - ref) / abs(ref)

    print(f"Frechet distance, N={args.n} per set, D={args.dim}, float64 (sigma1 positive definite: {pd})")
    print(
        f"statistics (common): {t_stats:.2f} s per set (ganforge, float64 Chan merge); numpy.cov {t_np_cov:.2f} s"
    )
    print(f"{'method':<34}{'value':>16}{'median s':>11}{'min s':>9}{'max s':>9}{'runs':>6}")
    for name, value, times in [
        ("ganforge (Cholesky + trmm + eigh values)", ours, t_ours),
        ("pytorch-fid formula (scipy sqrtm)", ref, t_ref),
    ]:
        s = summary(times)
        print(
            f"{name:<34}{value:>16.6f}{s['median_s']:>11.3f}{s['min_s']:>9.3f}{s['max_s']:>9.3f}{len(times):>6}"
        )
    print(
        f"speed-up (median sqrtm / median ours): {ratio:.1f}x; relative difference of values: {rel_diff:.2e}"
    )

    if args.no_record:
        return
    record = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "benchmark": "frechet_distance",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "loadavg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        },
        "versions": {"torch": torch.__version__, "numpy": np.__version__, "scipy": scipy.__version__},
        "config": {"n": args.n, "dim": args.dim, "seed": args.seed, "sigma1_positive_definite": pd},
        "stats_s_per_set": t_stats,
        "numpy_cov_s": t_np_cov,
        "ours": {"value": ours, **summary(t_ours), "times_s": t_ours},
        "pytorch_fid": {"value": ref, **summary(t_ref), "times_s": t_ref},
        "speedup_median": ratio,
        "relative_difference": rel_diff,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(json.dumps(record) + "\n")
    print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
