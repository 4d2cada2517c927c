"""Calibrated sampling: generated rows re-weighted to the training table's category frequencies.

A conditional tabular GAN reproduces a categorical column's frequencies exactly only in the rows
whose conditional vector names that column; elsewhere (7 rows in 8 on a table with 8 such columns)
the column comes from G's learned conditionals, which lean towards frequent categories, as GANs
do. :func:`rake_weights` finds the weights closest to uniform in Kullback-Leibler divergence that
give a pool of generated rows the training frequencies of every categorical column at once —
iterative proportional fitting ("raking", Deming & Stephan 1940) — and :func:`weighted_subsample`
draws the sample from the pool by those weights, without replacement. Raking keeps the pool's
associations between columns (odds ratios) and only corrects its margins.

The frequencies are the training counts that the fitted transformer already stores; in a private
model they are, like the rest of the transformer, not covered by the privacy guarantee.
"""

from __future__ import annotations

import numpy as np

POOL_FACTOR = 3  # rows generated per row returned (benchmarks/bench_tabular.py: 2x -> 3x still helps)
CALIBRATE_CHUNK = 100_000  # rows returned per pool (bounds memory for large samples; each pool is raked)


def rake_weights(
    codes: list[np.ndarray], targets: list[np.ndarray], max_iter: int = 100, tol: float = 1e-6
) -> np.ndarray:
    """Row weights (summing to 1) under which each column's category shares equal its target.

    `codes[j]` (N,) holds each row's category in column j, `targets[j]` (K_j,) that column's
    target counts or shares. Iterative proportional fitting: scale the weights column by column
    to its target share until the largest share error is below `tol`. A category absent from
    the pool cannot be reached; its share is spread over the others (the rest stay exact)."""
    n = len(codes[0]) if codes else 0
    w = np.full(n, 1.0 / max(n, 1))
    shares = []
    for code, target in zip(codes, targets):
        t = np.asarray(target, dtype=np.float64)
        present = np.bincount(code, minlength=len(t)) > 0
        t = np.where(present, t, 0.0)
        shares.append(t / t.sum() if t.sum() > 0 else t)
    for _ in range(max_iter):
        error = 0.0
        for code, share in zip(codes, shares):
            have = np.bincount(code, weights=w, minlength=len(share))
            have /= have.sum()
            error = max(error, float(np.abs(have - share).max()))
            w = w * np.divide(share, have, out=np.zeros_like(share), where=have > 0)[code]
        if error < tol:
            break
    return w / w.sum()


def inclusion_probabilities(weights: np.ndarray, n: int) -> np.ndarray:
    """pi_i ~ weights_i with sum n and none above 1: rows whose share would exceed 1 are taken
    for sure and the rest rescaled, until none does (the usual pi-ps capping)."""
    pi = np.zeros(len(weights))
    sure = np.zeros(len(weights), dtype=bool)
    for _ in range(len(weights)):
        rest = ~sure & (weights > 0)
        pi[rest] = weights[rest] * ((n - sure.sum()) / weights[rest].sum())
        over = rest & (pi >= 1.0)
        if not over.any():
            break
        sure |= over
        pi[sure] = 1.0
    return pi


def weighted_subsample(weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` distinct row indices, in increasing order, row i included with probability pi_i ~
    `weights`_i (:func:`inclusion_probabilities`): systematic sampling along a random order of
    the rows (Madow 1949; Hartley & Rao 1962), so a weighted share in the pool is the expected share
    in the sample. Rows of weight 0 are drawn (uniformly) only when fewer than `n` rows have a
    positive weight."""
    weights = np.asarray(weights, dtype=np.float64)
    if n > len(weights):
        raise ValueError(f"cannot draw {n} distinct rows from {len(weights)}")
    positive = np.flatnonzero(weights > 0)
    if len(positive) <= n:
        zero = np.flatnonzero(weights <= 0)
        return np.sort(np.concatenate([positive, rng.choice(zero, n - len(positive), replace=False)]))
    order = rng.permutation(len(weights))
    edges = np.cumsum(inclusion_probabilities(weights, n)[order])
    edges *= n / edges[-1]  # exactly n units of probability: every point falls inside
    points = rng.random() + np.arange(n)  # one random start, then every 1 unit of probability
    picked = np.minimum(np.searchsorted(edges, points, side="right"), len(weights) - 1)
    return np.sort(order[picked])
