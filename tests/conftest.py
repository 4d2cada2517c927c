"""Shared fixtures: tiny configs so every test trains in well under a second."""

from __future__ import annotations

import pytest
import torch

from ganforge.families import FAMILIES

TINY_TRAIN = ["train.log_every=1", "train.sample_every=0", "train.ckpt_every=0", "train.n_grid=4"]


def tiny_overrides(model: str) -> list[str]:
    """`--set` overrides that shrink `model` to its tiny test size."""
    return [f"net.{k}={v}" for k, v in FAMILIES.get(model).tiny.items()] + TINY_TRAIN


@pytest.fixture(autouse=True)
def _single_thread():
    """One intra-op thread: faster for tiny models and immune to a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
