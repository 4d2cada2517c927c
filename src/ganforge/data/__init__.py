"""Datasets: built-in names or the user's files, as one in-memory :class:`Dataset`."""

from __future__ import annotations

from pathlib import Path

from ..config import DataConfig
from ..errors import DataError, suggest
from .base import BatchSampler, Dataset, resize_images
from .builtin import DATASETS

__all__ = ["BatchSampler", "DATASETS", "Dataset", "load_dataset", "resize_images"]


def load_dataset(cfg: DataConfig) -> Dataset:
    """A built-in dataset by name, or the user's data at a path (folder or file)."""
    if cfg.name in DATASETS:
        ds = DATASETS.get(cfg.name)(cfg)
    elif Path(cfg.name).exists():
        from .files import load_path

        ds = load_path(Path(cfg.name), resolution=cfg.resolution)
    else:
        looks_like_path = any(ch in cfg.name for ch in "/\\.")
        if looks_like_path:
            raise DataError(f"data path not found: {cfg.name}")
        raise DataError(
            f"unknown dataset {cfg.name!r}{suggest(cfg.name, DATASETS.names())}; "
            f"choose from: {', '.join(DATASETS.names())}, or give a path to your own data"
        )
    if cfg.limit:
        ds.x = ds.x[: cfg.limit]
        ds.y = None if ds.y is None else ds.y[: cfg.limit]
    return ds
