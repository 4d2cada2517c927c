"""The process-wide random number generators, saved in checkpoints so a resumed run is exact.

The trainer draws its own noise and data order from seeded generators it owns, but user code
(a custom augmentation, a family's dropout) may draw from the global ones: Python's `random`,
NumPy's legacy `np.random`, and torch's default CPU and CUDA generators. Their states go into
a checkpoint as tensors (`rng/python`, `rng/numpy`, `rng/torch`, `rng/cuda/<i>`) plus a little
JSON, and are restored on resume. :func:`seed_global_rngs` seeds them all at the start of a
fresh run (as Hugging Face's `set_seed` does), so an uninterrupted run is reproducible too.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import Tensor


def seed_global_rngs(seed: int) -> None:
    """Seed Python's `random`, NumPy's global RNG and torch's CPU (and every CUDA) generator."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def global_rng_state() -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(tensors, JSON) holding the states of the global generators."""
    version, words, gauss_next = random.getstate()  # words: 625 ints < 2**32
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    tensors = {
        "rng/python": torch.tensor(words, dtype=torch.int64),
        "rng/numpy": torch.from_numpy(keys.astype(np.int64)),
        "rng/torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = state
    meta = {
        "python": {"version": version, "gauss_next": gauss_next},
        "numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
    }
    return tensors, meta


def set_global_rng_state(tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Restore what :func:`global_rng_state` saved; states a checkpoint lacks (older versions,
    CUDA states on a CPU-only machine) are left as they are."""
    if "rng/python" in tensors and "python" in meta:
        words = tuple(int(w) for w in tensors["rng/python"].tolist())
        random.setstate((meta["python"]["version"], words, meta["python"]["gauss_next"]))
    if "rng/numpy" in tensors and "numpy" in meta:
        m = meta["numpy"]
        keys = tensors["rng/numpy"].numpy().astype(np.uint32)
        np.random.set_state((m["kind"], keys, m["pos"], m["has_gauss"], m["cached"]))
    if "rng/torch" in tensors:
        torch.set_rng_state(tensors["rng/torch"].cpu())
    cuda_keys = sorted((k for k in tensors if k.startswith("rng/cuda/")), key=lambda k: int(k.split("/")[2]))
    cuda = [tensors[k] for k in cuda_keys]
    if cuda and torch.cuda.is_available():
        for i, state in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state.cpu(), i)
