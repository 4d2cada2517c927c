"""A folder of the user's images (PNG, JPEG, WebP) as one in-memory :class:`Dataset`.

Layout: images anywhere under the folder; when they sit in first-level sub-folders, the sorted
sub-folder names are the classes (as in torchvision's ImageFolder). Every image is centre-cropped
to a square and resized with Pillow (Lanczos down, bicubic up) to `resolution`, or to the most
common size. Files that cannot be decoded are skipped, listed in `Dataset.notes` and warned about.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError

from ..errors import DataError, GanforgeWarning
from .base import Dataset

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
# Larger images are skipped as possible decompression bombs (a 100-megapixel photo still loads).
MAX_IMAGE_PIXELS = 100_000_000
MAX_LISTED = 5  # skipped files named in the note; the rest are counted

_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}
_GREY_MODES = {"1", "L", "LA", "La", "I", *_SIXTEEN_BIT}
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}


@dataclass
class _Probe:
    """What the header says about one file, before its pixels are decoded."""

    path: Path
    size: tuple[int, int]  # (W, H)
    grey: bool


class _Skip(Exception):
    """An image that cannot be used; the message is the short reason shown to the user."""


def load_image_folder(root: Path, resolution: int = 0) -> Dataset:
    """Every readable image under `root` as float32 (N, C, S, S) in [-1, 1]."""
    files = _list_images(root)
    if not files:
        raise DataError(
            f"no images found in {root} (looked for {', '.join(IMAGE_SUFFIXES)} files, also in sub-folders)"
        )
    notes: list[str] = []
    skipped: list[tuple[Path, str]] = []
    with _strict_pil():
        probes = []
        for path in files:
            try:
                probes.append(_probe(path))
            except _Skip as e:
                skipped.append((path, str(e)))
        if not probes:
            raise _unreadable(root, skipped)
        side = resolution or _common_side(probes, notes)
        x, probes = _decode_all(probes, side, skipped)
    if not probes:
        raise _unreadable(root, skipped)
    n_grey = sum(p.grey for p in probes)
    if n_grey == len(probes):
        x = x[:, :1]  # no colour image survived (there may have been unreadable ones)
    elif n_grey:
        notes.append(f"{n_grey} greyscale images converted to RGB to match the colour ones")
    n_crop = sum(p.size[0] != p.size[1] for p in probes)
    if n_crop:
        notes.append(f"centre-cropped {n_crop} non-square images to squares")
    n_resized = sum(min(p.size) != side for p in probes)
    if resolution and n_resized:
        notes.append(f"resized {n_resized} of {len(probes)} images to {side}x{side}")
    if skipped:
        line = skipped_note(skipped)
        notes.append(line)
        warnings.warn(line, GanforgeWarning, stacklevel=3)
    y, class_names = _labels(root, [p.path for p in probes], notes)
    return Dataset(
        x=torch.from_numpy(x), y=y, kind="image", name=root.name, class_names=class_names, notes=notes
    )


def _decode_all(
    probes: list[_Probe], side: int, skipped: list[tuple[Path, str]]
) -> tuple[np.ndarray, list[_Probe]]:
    """Decode into one preallocated (N, C, S, S) array; failures go to `skipped`."""
    channels = 1 if all(p.grey for p in probes) else 3
    x = np.empty((len(probes), channels, side, side), dtype=np.float32)
    kept: list[_Probe] = []
    for probe in probes:
        try:
            x[len(kept)] = _decode(probe.path, side)  # a (1, S, S) grey image broadcasts to RGB
            kept.append(probe)
        except _Skip as e:
            skipped.append((probe.path, str(e)))
    return x[: len(kept)], kept  # a view: no second copy of the pixels


def skipped_note(skipped: list[tuple[Path, str]]) -> str:
    """One line naming at most MAX_LISTED skipped files with their reasons, counting the rest."""
    skipped = sorted(skipped)
    listed = ", ".join(f"{path} ({reason})" for path, reason in skipped[:MAX_LISTED])
    more = f", and {len(skipped) - MAX_LISTED} more" if len(skipped) > MAX_LISTED else ""
    return f"skipped {len(skipped)} unreadable image files: {listed}{more}"


def _list_images(root: Path) -> list[Path]:
    """Image files under root, sorted, case-insensitive suffixes; hidden files and folders ignored."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
        and p.is_file()
    )


def _unreadable(root: Path, skipped: list[tuple[Path, str]]) -> DataError:
    path, reason = skipped[0]
    return DataError(
        f"none of the {len(skipped)} image files in {root} could be read (e.g. {path}: {reason})"
    )


@contextmanager
def _strict_pil() -> Iterator[None]:
    """Refuse truncated files and decompression bombs while loading, then restore PIL's globals."""
    old = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = MAX_IMAGE_PIXELS, False
    try:
        with warnings.catch_warnings():
            # PIL warns above MAX_IMAGE_PIXELS and raises above twice that; both become a skip.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = old


def _open(path: Path) -> Image.Image:
    """Image.open with every failure turned into a short reason."""
    try:
        if path.stat().st_size == 0:
            raise _Skip("empty file")
        return Image.open(path)
    except _Skip:
        raise
    except PermissionError:
        raise _Skip("permission denied") from None
    except UnidentifiedImageError:
        raise _Skip("not a recognised image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _Skip(f"over {MAX_IMAGE_PIXELS:,} pixels, a possible decompression bomb") from None
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError, ...) for bad files
        raise _Skip(_reason(e, path)) from None


def _reason(e: Exception, path: Path) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return "truncated" if "truncated" in text.lower() or _cut_short(path) else text[:80]


def _cut_short(path: Path) -> bool:
    """A PNG without its IEND chunk or a JPEG without its end marker: the file was cut off.
    (PIL's own message for these can be a vague 'cannot load this image'.)"""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - 16))
            tail = fh.read()
    except OSError:
        return False
    if head.startswith(b"\x89PNG"):
        return b"IEND" not in tail
    if head.startswith(b"\xff\xd8"):
        return b"\xff\xd9" not in tail
    return False


def _probe(path: Path) -> _Probe:
    with _open(path) as im:
        return _Probe(path, im.size, im.mode in _GREY_MODES)


def _common_side(probes: list[_Probe], notes: list[str]) -> int:
    """The square side of the most common image size (ties: the larger); notes when sizes differ."""
    counts = Counter(p.size for p in probes)
    size = max(counts, key=lambda s: (counts[s], min(s)))
    side = min(size)
    if len(counts) > 1:
        n_other = sum(min(p.size) != side for p in probes)
        notes.append(
            f"images have {len(counts)} different sizes; resized {n_other} of {len(probes)} "
            f"to {side}x{side}, the most common size"
        )
    return side


def _decode(path: Path, side: int) -> np.ndarray:
    """One file as float32 (C, side, side) in [-1, 1], C = 1 for greyscale, 3 for colour."""
    with _open(path) as im:
        try:
            if im.format == "JPEG":
                im.draft(None, (side, side))  # decode at a reduced DCT scale, never below side
            im.load()
            im = _normalise(im)
            w, h = im.size
            s = min(w, h)
            left, top = (w - s) // 2, (h - s) // 2
            im = im.crop((left, top, left + s, top + s))
            if s > side:
                im = im.resize((side, side), Image.Resampling.LANCZOS, reducing_gap=3.0)
            elif s < side:
                im = im.resize((side, side), Image.Resampling.BICUBIC)
            a = np.asarray(im, dtype=np.float32)
        except _Skip:
            raise
        except Exception as e:
            raise _Skip(_reason(e, path)) from None
    if im.mode == "F":  # 16-bit greyscale, already in [0, 1]; filters may overshoot
        a = np.clip(a, 0.0, 1.0) * 2.0 - 1.0
    else:
        a = a / 127.5 - 1.0  # uint8 0..255 -> [-1, 1]
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)  # (H, W, C) -> (C, H, W)


def _normalise(im: Image.Image) -> Image.Image:
    """Mode 'L' or 'RGB' (transparency composited onto white), or 'F' in [0, 1] for 16-bit grey."""
    mode = im.mode
    if mode in _SIXTEEN_BIT or mode == "I":
        a = np.asarray(im).astype(np.float32)
        if a.min() < 0 or a.max() > 65535:
            raise _Skip(f"unsupported 32-bit pixel values ({mode})")
        return Image.fromarray(a / 65535.0)  # scaled by the real bit depth, 16
    grey = mode in _GREY_MODES
    if mode in _ALPHA_MODES or "transparency" in im.info:
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        white.alpha_composite(im.convert("RGBA"))
        return white.convert("L" if grey else "RGB")
    return im.convert("L" if grey else "RGB")


def _labels(root: Path, files: list[Path], notes: list[str]) -> tuple[torch.Tensor | None, list[str] | None]:
    """Class indices from first-level sub-folder names, or none when images are loose in root."""
    tops = [f.relative_to(root).parts for f in files]
    loose = sum(len(parts) == 1 for parts in tops)
    if loose == len(files):
        return None, None
    if loose:
        notes.append(
            f"{loose} images lie directly in {root}, not in class sub-folders: loaded without labels"
        )
        return None, None
    class_names = sorted({parts[0] for parts in tops})
    index = {name: i for i, name in enumerate(class_names)}
    return torch.tensor([index[parts[0]] for parts in tops], dtype=torch.int64), class_names
