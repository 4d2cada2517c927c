"""Discriminator layers that let D see a whole minibatch, against mode collapse."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class MinibatchStd(nn.Module):
    """Append the mean over features of the per-feature standard deviation across the batch
    (Karras et al. 2018, Sec. 3) as one extra feature: a collapsed batch has std ~ 0."""

    def forward(self, h: Tensor) -> Tensor:  # (B, F) -> (B, F + 1)
        std = torch.sqrt(h.var(dim=0, unbiased=False) + 1e-8).mean()
        return torch.cat([h, std.expand(h.shape[0], 1)], dim=1)


class MinibatchDiscrimination(nn.Module):
    """Minibatch discrimination (Salimans et al. 2016, Sec. 3.2): project features through a
    tensor T to B kernels of C dims, and append o(x_i)_b = sum_j exp(-||M_i,b - M_j,b||_1)."""

    def __init__(self, n_features: int, n_kernels: int, kernel_dim: int = 5) -> None:
        super().__init__()
        self.n_kernels, self.kernel_dim = n_kernels, kernel_dim
        self.T = nn.Parameter(torch.randn(n_features, n_kernels * kernel_dim) * 0.1)

    def forward(self, h: Tensor) -> Tensor:  # (B, F) -> (B, F + n_kernels)
        m = (h @ self.T).view(-1, self.n_kernels, self.kernel_dim)  # (B, K, C)
        l1 = (m.unsqueeze(0) - m.unsqueeze(1)).abs().sum(dim=3)  # (B, B, K)
        o = torch.exp(-l1).sum(dim=1) - 1.0  # (B, K); minus the self-term exp(0)
        return torch.cat([h, o], dim=1)
