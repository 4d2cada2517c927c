"""Array files as one in-memory :class:`Dataset`: NumPy .npy/.npz, MNIST-style IDX and CIFAR-10.

No format here can run code while loading: .npy/.npz go through `np.load(allow_pickle=False)`,
IDX and CIFAR's binary version are raw bytes, and CIFAR's python version (a pickle) is read by a
restricted unpickler that can only rebuild NumPy arrays (see :class:`_ArrayUnpickler`).
"""

from __future__ import annotations

import codecs
import gzip
import math
import pickle
import re
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .base import Dataset, resize_images

IDX_PATTERN = re.compile(r"idx\d-ubyte(\.gz)?$", re.IGNORECASE)  # MNIST: train-images-idx3-ubyte[.gz]
CIFAR_BATCH_PATTERN = re.compile(r"(data_batch_\d+|test_batch)(\.bin)?")
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

_CHANNELS = (1, 3, 4)  # grey, RGB, RGBA
_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


# ---- NumPy .npy / .npz ------------------------------------------------------------------------


def load_numpy(path: Path, resolution: int = 0) -> Dataset:
    """A .npy array, or a .npz with images under `x`/`images` and optional labels under `y`/`labels`."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as e:
        if "Object arrays" in str(e):
            raise DataError(
                f"{path} holds an object array; pickled arrays are refused, save numbers"
            ) from None
        if "pickled" in str(e):
            what = "a pickle, which is refused" if _looks_pickled(path) else "not a NumPy .npy/.npz file"
            raise DataError(f"{path} is {what}") from None
        raise DataError(f"cannot read {path}: {e}") from None
    except Exception as e:  # OSError, EOFError, BadZipFile, ... for a damaged file
        raise DataError(f"cannot read {path}: {e}") from None
    if isinstance(loaded, np.ndarray):
        return array_dataset(loaded, None, name=path.stem, source=str(path), resolution=resolution)
    with loaded:
        keys = list(loaded.files)
        x_key = _pick(keys, ("x", "images")) or (keys[0] if len(keys) == 1 else None)
        y_key = _pick(keys, ("y", "labels"))
        if x_key is None and keys == ["arr_0", "arr_1"]:  # np.savez(path, x, y)
            x_key, y_key = "arr_0", "arr_1"
        if x_key is None:
            raise DataError(
                f"{path}: no images array; name it 'x' or 'images' (found keys: {', '.join(keys)})"
            )
        x = _npz_array(loaded, x_key, path)
        y = None if y_key is None else _npz_array(loaded, y_key, path)
        names = _npz_array(loaded, "class_names", path) if "class_names" in keys else None
    class_names = [str(s) for s in names] if names is not None and names.dtype.kind in "US" else None
    return array_dataset(
        x, y, name=path.stem, source=str(path), resolution=resolution, class_names=class_names
    )


def _looks_pickled(path: Path) -> bool:
    """Pickle protocol 2+ starts with 0x80 and the protocol number (NumPy's fallback for old files)."""
    with open(path, "rb") as fh:
        head = fh.read(2)
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _pick(keys: list[str], wanted: tuple[str, ...]) -> str | None:
    return next((k for k in wanted if k in keys), None)


def _npz_array(npz: Any, key: str, path: Path) -> np.ndarray:
    try:
        return npz[key]
    except ValueError as e:
        if "Object arrays" in str(e):
            raise DataError(f"{path}: array {key!r} is an object array; pickled arrays are refused") from None
        raise DataError(f"cannot read array {key!r} from {path}: {e}") from None
    except Exception as e:
        raise DataError(f"cannot read array {key!r} from {path}: {e}") from None


# ---- arrays -> Dataset ------------------------------------------------------------------------


def array_dataset(
    x: np.ndarray,
    y: np.ndarray | None,
    *,
    name: str,
    source: str,
    resolution: int = 0,
    class_names: list[str] | None = None,
    notes: list[str] | None = None,
) -> Dataset:
    """(N, D) points, or images (N, H, W) / (N, H, W, C) / (N, C, H, W), with optional labels."""
    notes = list(notes or [])
    if x.dtype.kind not in "uif":
        raise DataError(f"{source}: expected a numeric array, got dtype {x.dtype}")
    if x.ndim < 2:
        raise DataError(
            f"{source}: expected (N, D) points or (N, H, W), (N, H, W, C), (N, C, H, W) images; got shape {x.shape}"
        )
    if x.shape[0] == 0:
        raise DataError(f"{source}: no examples (array shape {x.shape})")
    labels = None if y is None else _labels(y, x.shape[0], source)
    if class_names is not None and labels is not None and int(labels.max()) >= len(class_names):
        raise DataError(f"{source}: label {int(labels.max())} but only {len(class_names)} class names")
    if x.ndim == 2:  # (N, D) points or vectors: values kept as they are
        pts = x.astype(np.float32)
        if not np.isfinite(pts).all():
            raise DataError(f"{source} contains NaN or infinite values")
        if resolution:
            notes.append(f"resolution={resolution} ignored: {source} holds (N, D) vectors, not images")
        return Dataset(
            x=torch.from_numpy(pts), y=labels, kind="points", name=name, class_names=class_names, notes=notes
        )
    img = _scale(_channels_first(x, source), source, notes)  # (N, C, H, W) in [-1, 1]
    if img.shape[1] == 4:  # RGBA: composite onto white, which is +1 in [-1, 1]: a*c + (1 - a)
        alpha = (img[:, 3:] + 1.0) / 2.0
        img = img[:, :3] * alpha + (1.0 - alpha)
        notes.append("4-channel images read as RGBA and composited onto white")
    h, w = img.shape[-2:]
    if h != w:
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        img = img[..., top : top + s, left : left + s]
        notes.append(f"centre-cropped {h}x{w} images to {s}x{s}")
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))
    if resolution and resolution != t.shape[-1]:
        notes.append(f"resized images from {t.shape[-1]}x{t.shape[-1]} to {resolution}x{resolution}")
        t = resize_images(t, resolution)
    return Dataset(x=t, y=labels, kind="image", name=name, class_names=class_names, notes=notes)


def _channels_first(x: np.ndarray, source: str) -> np.ndarray:
    """(N, H, W) -> (N, 1, H, W); channels-last when the last axis (and not axis 1) is 1, 3 or 4."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4:
        first, last = x.shape[1] in _CHANNELS, x.shape[3] in _CHANNELS
        if first and last:  # e.g. (N, 4, 4, 3): the reading that gives square images wins
            first = not (x.shape[1] == x.shape[2] != x.shape[3])
        if last and not first:
            return x.transpose(0, 3, 1, 2)
        if first:
            return x
        raise DataError(f"{source}: cannot find a channel axis of size 1, 3 or 4 in shape {x.shape}")
    raise DataError(
        f"{source}: expected (N, D) points or (N, H, W), (N, H, W, C), (N, C, H, W) images; got shape {x.shape}"
    )


def _scale(x: np.ndarray, source: str, notes: list[str]) -> np.ndarray:
    """uint8 / 255, uint16 / 65535, floats in [0, 1] or [-1, 1]; all mapped to float32 [-1, 1]."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 127.5 - 1.0
    if x.dtype == np.uint16:
        return x.astype(np.float32) / 32767.5 - 1.0
    if x.dtype.kind != "f":
        raise DataError(f"{source}: integer images must be uint8 or uint16, got {x.dtype}")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise DataError(f"{source} contains NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo >= 0.0 and hi <= 1.0:
        notes.append("float values in [0, 1] mapped to [-1, 1]")
        return x * 2.0 - 1.0
    if lo >= -1.0 and hi <= 1.0:
        return x
    raise DataError(f"{source}: float image values must lie in [0,1] or [-1,1], found {lo:.4g} to {hi:.4g}")


def _labels(y: np.ndarray, n: int, source: str) -> torch.Tensor:
    """(N,) non-negative integer class indices as int64."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{source}: labels must be a 1-D array of class indices, got shape {y.shape}")
    if len(y) != n:
        raise DataError(f"{source}: {n} examples but {len(y)} labels")
    if y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all():
        y = y.astype(np.int64)
    if y.dtype.kind not in "ui":
        raise DataError(f"{source}: labels must be integer class indices, got dtype {y.dtype}")
    if len(y) and y.min() < 0:
        raise DataError(f"{source}: labels must be non-negative class indices, found {int(y.min())}")
    return torch.from_numpy(y.astype(np.int64))


# ---- MNIST-style IDX --------------------------------------------------------------------------


def load_idx(path: Path, resolution: int = 0) -> Dataset:
    """`*-images-idx3-ubyte[.gz]` with its `*-labels-idx1-ubyte[.gz]`; in a folder, train over t10k."""
    notes: list[str] = []
    if path.is_dir():
        found = sorted(p for p in _idx_candidates(path) if "idx3" in p.name.lower())
        if not found:
            raise DataError(f"no *-images-idx3-ubyte file in {path}")
        train = [p for p in found if p.name.lower().startswith("train")]
        test = [p for p in found if p.name.lower().startswith(("t10k", "test"))]
        images = (train or test or found)[0]
        if len(found) > 1:
            which = (
                "the training split" if train else "the test split, no train files" if test else "first file"
            )
            others = ", ".join(p.name for p in found if p != images)
            notes.append(f"loaded {images.name} ({which}); not loaded: {others}")
    elif "idx1" in path.name.lower():
        raise DataError(
            f"{path} is an IDX labels file; give the matching *-images-idx3-ubyte file or its folder"
        )
    else:
        images = path
    x = read_idx(images)
    labels_path = _idx_labels_for(images)
    y = None
    if labels_path is None:
        notes.append(f"no labels file found for {images.name}: loaded without labels")
    else:
        y = read_idx(labels_path)
        if y.ndim != 1:
            raise DataError(f"{labels_path}: labels must be 1-D, header says shape {y.shape}")
    class_names = [str(i) for i in range(int(y.max()) + 1)] if y is not None and y.size else None
    name = path.name if path.is_dir() else images.name.split("-")[0]
    return array_dataset(
        x, y, name=name, source=str(images), resolution=resolution, class_names=class_names, notes=notes
    )


def _idx_candidates(folder: Path) -> list[Path]:
    """IDX files in folder, also `name/name` (some downloads unpack each file into a same-named folder)."""
    out = []
    for p in folder.iterdir():
        if IDX_PATTERN.search(p.name):
            inner = p / p.name
            if p.is_file():
                out.append(p)
            elif inner.is_file():
                out.append(inner)
    return out


def _idx_labels_for(images: Path) -> Path | None:
    stem = re.sub(r"\.gz$", "", images.name, flags=re.IGNORECASE)
    stem = stem.replace("images", "labels").replace("idx3", "idx1")
    for folder in (images.parent, images.parent.parent):
        for name in (stem, stem + ".gz"):
            for cand in (folder / name, folder / name / name):
                if cand.is_file():
                    return cand
    return None


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file: magic 0x00 0x00 <dtype> <ndim>, ndim big-endian uint32 sizes, then data."""
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise DataError(f"{path} is not an IDX file (bad magic number {raw[:4].hex() or 'missing'})")
    ndim, offset = raw[3], 4 + 4 * raw[3]
    if len(raw) < offset:
        raise DataError(f"{path} is truncated: the header needs {offset} bytes, the file has {len(raw)}")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    count = math.prod(dims)
    need, have = count * dtype.itemsize, len(raw) - offset
    if have != need:
        problem = "is truncated" if have < need else f"has {have - need} bytes too many"
        raise DataError(f"{path} {problem}: its header promises shape {dims} ({need} bytes), found {have}")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=offset).reshape(dims)


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when its name ends in .gz."""
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read {path}: {e}") from None


# ---- CIFAR-10 ---------------------------------------------------------------------------------


class _Refused(pickle.UnpicklingError):
    """A pickle that names a global outside the allowed list."""


def _frombuffer(buf: Any, dtype: Any, shape: tuple[int, ...], order: str) -> np.ndarray:
    """NumPy's protocol-5 array constructor, re-implemented so no numpy-private import is needed."""
    if not isinstance(dtype, np.dtype):
        raise _Refused("malformed array in pickle")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)


_RECONSTRUCT = np.empty(0).__reduce__()[0]  # numpy.(_)core.multiarray._reconstruct, on any version
# The only globals a pickled NumPy array refers to (protocols 2 to 5, NumPy 1.x and 2.x).
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # the same function as _codecs.encode
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and NumPy arrays, and nothing else.

    Why this is safe: a pickle can only run code by naming a global (module.attribute) that the
    unpickler imports and then calls; `find_class` is the single place where that lookup happens.
    Here it returns only the callables NumPy's own array pickles use: `_reconstruct` and
    `_frombuffer` (build an array from a shape, dtype and bytes), `ndarray`, `dtype`, and
    `_codecs.encode` (protocol 2 stores array bytes as latin-1 text). None of them touches files,
    processes (`encode` may import a standard codec, from the `encodings` package only); the worst
    a hostile file can do is ask for a huge array (MemoryError). Anything else (`os.system`,
    `builtins.eval`, any class) raises before it is even imported. PyTorch's `weights_only`
    loader relies on the same idea.
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise _Refused(f"it references {module}.{name}, which a CIFAR batch never contains") from None


def _unpickle(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            # The batches were written by Python 2: encoding="bytes" keeps str as bytes (b"data").
            return _ArrayUnpickler(f, encoding="bytes").load()  # restricted: see _ArrayUnpickler
    except _Refused as e:
        raise DataError(f"refused to unpickle {path}: {e}") from None
    except Exception as e:
        raise DataError(f"cannot read CIFAR batch {path}: {type(e).__name__}: {e}") from None


def _get(d: dict, key: str) -> Any:
    return d[key.encode()] if key.encode() in d else d.get(key)


def _cifar_python_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(path)
    data = _get(d, "data") if isinstance(d, dict) else None
    labels = _get(d, "labels") if isinstance(d, dict) else None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path} is not a CIFAR-10 batch: expected a dict with b'data', uint8 (N, 3072)")
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        y = np.empty(0)
    if y.shape != (len(data),):
        raise DataError(f"{path}: {len(data)} images but labels are missing or of the wrong length")
    return data.reshape(-1, 3, 32, 32), y  # rows hold the 1024 R, then G, then B values


def _cifar_binary_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Records of <1 label byte><3072 pixel bytes: 1024 R, 1024 G, 1024 B, row-major 32x32."""
    raw = _read_bytes(path)
    if not raw or len(raw) % 3073:
        raise DataError(f"{path}: {len(raw)} bytes is not a whole number of 3073-byte CIFAR-10 records")
    rec = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3073)
    return rec[:, 1:].reshape(-1, 3, 32, 32), rec[:, 0].astype(np.int64)


def _cifar_names(folder: Path, binary: bool, notes: list[str]) -> list[str]:
    if binary and (folder / "batches.meta.txt").is_file():
        text = _read_bytes(folder / "batches.meta.txt").decode("utf-8", "replace")
        return [s.strip() for s in text.splitlines() if s.strip()]
    if not binary and (folder / "batches.meta").is_file():
        meta = _unpickle(folder / "batches.meta")
        names = _get(meta, "label_names") if isinstance(meta, dict) else None
        if isinstance(names, list) and names:
            return [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names]
        raise DataError(f"{folder / 'batches.meta'} has no label_names list")
    notes.append("no batches.meta: using the standard CIFAR-10 class names")
    return list(CIFAR10_NAMES)


def load_cifar(path: Path, resolution: int = 0) -> Dataset:
    """The training batches of a CIFAR-10 folder (python or binary version), or one batch file."""
    notes: list[str] = []
    if path.is_dir():
        folder = path
        batches = [
            p for p in path.iterdir() if re.fullmatch(r"data_batch_\d+(\.bin)?", p.name) and p.is_file()
        ]
        binary = any(p.suffix == ".bin" for p in batches)
        batches = sorted((p for p in batches if (p.suffix == ".bin") == binary), key=_batch_number)
        if not batches:
            raise DataError(f"no CIFAR-10 data_batch_* files in {path}; to use test_batch, give its path")
        notes.append(
            f"CIFAR-10: loaded training batches {', '.join(p.name for p in batches)}; test_batch not loaded"
        )
    else:
        folder, batches, binary = path.parent, [path], path.suffix == ".bin"
    read = _cifar_binary_batch if binary else _cifar_python_batch
    parts = [read(p) for p in batches]
    x = np.concatenate([p[0] for p in parts])  # (N, 3, 32, 32) uint8
    y = np.concatenate([p[1] for p in parts])
    class_names = _cifar_names(folder, binary, notes)
    return array_dataset(
        x, y, name=path.name, source=str(path), resolution=resolution, class_names=class_names, notes=notes
    )


def _batch_number(p: Path) -> int:
    return int(re.sub(r"\D", "", p.stem) or 0)
