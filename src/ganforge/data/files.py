"""The user's own data at a local path: decide the format, hand it to the loader that owns it.

Folders: CIFAR-10 (`data_batch_*`), MNIST-style IDX (`*-idx3-ubyte`), otherwise a folder of
images (:mod:`.images`). Files: `.npy`/`.npz`, an IDX file or a single CIFAR batch (:mod:`.arrays`).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from .arrays import CIFAR_BATCH_PATTERN, IDX_PATTERN, load_cifar, load_idx, load_numpy
from .base import Dataset
from .images import IMAGE_SUFFIXES, load_image_folder

SUPPORTED = (
    "a folder of images (.png, .jpg, .jpeg, .webp; one sub-folder per class for labels), "
    "a .npy or .npz array file, MNIST-style IDX files (*-images-idx3-ubyte[.gz]), "
    "or a CIFAR-10 folder (data_batch_1 ... or data_batch_1.bin ...)"
)


def load_path(path: Path, resolution: int = 0) -> Dataset:
    """Load a folder or file of the user's data; images come out float32 (N, C, H, W) in [-1, 1].

    `resolution` > 0 resizes images to that square size; 0 keeps the data's own size (for a
    folder of images of several sizes, the most common one).
    """
    path = Path(path)
    if resolution < 0:
        raise DataError(f"resolution must be 0 (keep the data's size) or positive, got {resolution}")
    if not path.exists():
        raise DataError(f"data path not found: {path}")
    if path.is_dir():
        try:
            names = [p.name for p in path.iterdir()]
        except OSError as e:
            raise DataError(f"cannot list the folder {path}: {e.strerror or e}") from None
        if any(CIFAR_BATCH_PATTERN.fullmatch(n) for n in names):
            return load_cifar(path, resolution)
        if any(IDX_PATTERN.search(n) for n in names):
            return load_idx(path, resolution)
        return load_image_folder(path, resolution)
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        return load_numpy(path, resolution)
    if IDX_PATTERN.search(path.name):
        return load_idx(path, resolution)
    if CIFAR_BATCH_PATTERN.fullmatch(path.name):
        return load_cifar(path, resolution)
    if suffix in IMAGE_SUFFIXES:
        raise DataError(f"{path} is a single image, not a dataset; give the folder that holds your images")
    kind = f"'{suffix}' files" if suffix else "files without an extension"
    raise DataError(f"{path}: {kind} are not a supported data format; use {SUPPORTED}")
