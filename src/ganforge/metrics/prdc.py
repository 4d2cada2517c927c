"""Manifold metrics from k-NN balls: improved precision & recall, density & coverage.

A set's manifold is the union of balls B(x_i, NND_k(x_i)), where NND_k is the distance to the k-th
nearest *other* sample of the same set.

- Improved precision & recall (Kynkäänniemi et al. 2019, Eq. 1-2; default k = 3):
  precision = fraction of FAKE samples inside the REAL manifold (are samples realistic?),
  recall    = fraction of REAL samples inside the FAKE manifold (is the real data covered?).
  Not swapped (torch-fidelity issue #58 swapped them). Balls are closed (<=), as the authors' code.
- Density & coverage (Naeem et al. 2020, Eq. 3-4; default k = 5), with real X (N) and fake Y (M):
  density  = 1/(kM) sum_j sum_i 1[Y_j in B(X_i, NND_k(X_i))],
  coverage = 1/N sum_i 1[exists j: Y_j in B(X_i, NND_k(X_i))].
  Balls are open (<), as the authors' code, so density is 1 (up to distance rounding) when fake = real.

Distances come from `torch.cdist` on row chunks, so (chunk, N) is the largest matrix held and
10k x 10k sets fit easily in memory: one pass over each set for the radii, one over cdist(fake, real)
for all four metrics. cdist works in the features' dtype (float32 is plenty for ball membership).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

ArrayLike = Tensor | np.ndarray

_CHUNK = 1024  # query rows per cdist call: a (1024, N) float matrix


def _features(x: ArrayLike) -> Tensor:
    t = torch.as_tensor(x)
    if t.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {tuple(t.shape)}")
    return t if t.is_floating_point() else t.float()


def knn_radii(x: Tensor, ks: tuple[int, ...]) -> Tensor:
    """(N, len(ks)) distance from each row of x (N, D) to its k-th nearest other row, for each k in ks.

    The k-th smallest entry of a row of cdist(x, x) counting from 0 is the k-th neighbour with the
    point itself (distance 0) excluded.
    """
    n = x.shape[0]
    if not all(1 <= k < n for k in ks):
        raise ValueError(f"k must be in [1, {n - 1}] for {n} samples, got {ks}")
    idx = torch.tensor(ks, device=x.device)
    radii = []
    for start in range(0, n, _CHUNK):
        dist = torch.cdist(x[start : start + _CHUNK], x)  # (c, N)
        radii.append(dist.topk(max(ks) + 1, dim=1, largest=False).values[:, idx])  # sorted ascending
    return torch.cat(radii)


def prdc(real: ArrayLike, fake: ArrayLike, k_pr: int = 3, k_dc: int = 5) -> dict[str, float]:
    """{'precision', 'recall', 'density', 'coverage'} of fake Y (M, D) against real X (N, D).

    Precision & recall use k = k_pr (Kynkäänniemi et al. 2019), density & coverage k = k_dc
    (Naeem et al. 2020). One chunked pass over cdist(Y, X) serves all four (module docstring).
    """
    x, y = _features(real), _features(fake)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"real and fake feature dimensions differ: {x.shape[1]} vs {y.shape[1]}")
    r_real = knn_radii(x, (k_pr, k_dc))  # (N, 2)
    r_real_pr, r_real_dc = r_real[:, 0], r_real[:, 1]
    r_fake_pr = knn_radii(y, (k_pr,))[:, 0]  # (M,)

    n_precise = 0  # fakes inside some real ball (closed, radius NND_k_pr)
    n_in_real_balls = 0  # sum over fakes of the number of real balls (open, NND_k_dc) holding them
    real_recalled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)  # real inside a fake ball
    real_nearest_fake = torch.full((x.shape[0],), float("inf"), dtype=x.dtype, device=x.device)
    for start in range(0, y.shape[0], _CHUNK):
        dist = torch.cdist(y[start : start + _CHUNK], x)  # (c, N): fake rows, real columns
        n_precise += int((dist <= r_real_pr).any(dim=1).sum())
        n_in_real_balls += int((dist < r_real_dc).sum())
        real_recalled |= (dist <= r_fake_pr[start : start + _CHUNK, None]).any(dim=0)
        real_nearest_fake = torch.minimum(real_nearest_fake, dist.min(dim=0).values)
    return {
        "precision": n_precise / y.shape[0],
        "recall": float(real_recalled.double().mean()),
        "density": n_in_real_balls / (k_dc * y.shape[0]),
        "coverage": float((real_nearest_fake < r_real_dc).double().mean()),
    }
