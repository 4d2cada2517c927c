"""Kernel Inception Distance (Bińkowski et al. 2018, "Demystifying MMD GANs", Sec. 4 and App. D).

KID is the unbiased estimate of the squared MMD between real and fake features under the cubic
polynomial kernel k(x, y) = (x·y / d + 1)^3 (Eq. 4 of Gretton et al. 2012 with this kernel):

    MMD²_u = 1/(m(m-1)) sum_{i≠j} k(x_i, x_j) + 1/(n(n-1)) sum_{i≠j} k(y_i, y_j) - 2/(mn) sum_{i,j} k(x_i, y_j).

Unlike FID it has an unbiased estimator (it can be slightly negative when the sets match).
As in torch-fidelity and clean-fid, it is averaged over random subsets; float64 throughout.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

ArrayLike = Tensor | np.ndarray


def polynomial_kernel(x: Tensor, y: Tensor) -> Tensor:
    """(M, N) Gram matrix of k(x, y) = (x·y / d + 1)^3 for x (M, D), y (N, D) (Bińkowski et al. 2018)."""
    d = x.shape[1]
    return (x @ y.T / d + 1.0) ** 3


def mmd2_unbiased(x: ArrayLike, y: ArrayLike) -> float:
    """Unbiased MMD² between samples x (M, D) and y (N, D) with the cubic kernel (module docstring)."""
    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"unbiased MMD² needs at least 2 samples per set, got {m} and {n}")
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    xx = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))  # off-diagonal mean
    yy = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    xy = k_xy.sum() / (m * n)
    return float(xx + yy - 2.0 * xy)


def kernel_inception_distance(
    real: ArrayLike,
    fake: ArrayLike,
    n_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID as (mean, std) of unbiased MMD² over `n_subsets` random subsets (Bińkowski et al. 2018).

    Each subset draws `subset_size` rows without replacement from each set with a seeded
    torch.Generator; `subset_size` is capped at the smaller set (as clean-fid's max_subset_size).
    std is the population std over subsets (ddof=0, as torch-fidelity).
    """
    x, y = torch.as_tensor(real, dtype=torch.float64), torch.as_tensor(fake, dtype=torch.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"features must be (N, D) with equal D, got {tuple(x.shape)} and {tuple(y.shape)}")
    if n_subsets < 1:
        raise ValueError(f"n_subsets must be >= 1, got {n_subsets}")
    size = min(subset_size, x.shape[0], y.shape[0])
    gen = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(n_subsets):
        ix = torch.randperm(x.shape[0], generator=gen)[:size]
        iy = torch.randperm(y.shape[0], generator=gen)[:size]
        values.append(mmd2_unbiased(x[ix], y[iy]))
    v = torch.tensor(values, dtype=torch.float64)
    return float(v.mean()), float(v.std(correction=0))
