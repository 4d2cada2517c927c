"""GAN families, one file each, registered by name in :data:`FAMILIES`."""

from . import cgan, dcgan, mlp, stylegan, tabular  # noqa: F401  (registration on import)
from .base import FAMILIES, DataSpec, Family

__all__ = ["FAMILIES", "DataSpec", "Family"]
