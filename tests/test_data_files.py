"""Loading the user's own data: image folders, .npy/.npz, IDX, CIFAR-10, and every bad-file path."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

import ganforge.data.images as images_mod
from ganforge.config import DataConfig
from ganforge.data import load_dataset
from ganforge.data.files import load_path
from ganforge.errors import DataError


def u8(v: float | np.ndarray) -> np.ndarray:
    """The [-1, 1] value the loader must produce for 8-bit pixel values."""
    return np.asarray(v, dtype=np.float32) / 255 * 2 - 1


def save(path: Path, a: np.ndarray, **kw: object) -> Path:
    """Write an array as an image file (format from the suffix), creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path, **kw)
    return path


def noise_png(path: Path, size: int = 32) -> Path:
    rng = np.random.default_rng(0)
    return save(path, rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def bomb_png(path: Path, side: int = 100_000) -> None:
    """A tiny PNG whose header claims side x side pixels."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    png = bytearray(buf.getvalue())
    chunk = b"IHDR" + struct.pack(">II", side, side) + bytes(png[24:29])  # keep depth, colour type, ...
    png[12:29] = chunk
    png[29:33] = struct.pack(">I", zlib.crc32(chunk))
    path.write_bytes(bytes(png))


# ---- folders of images ------------------------------------------------------------------------


def test_rgb_png_exact_values_and_labels_from_subfolders(tmp_path: Path) -> None:
    rgb = np.array([[[0, 0, 0], [255, 255, 255]], [[255, 0, 0], [51, 102, 153]]], dtype=np.uint8)
    save(tmp_path / "dog" / "b.png", rgb)
    save(tmp_path / "cat" / "a.png", rgb)
    save(tmp_path / "cat" / "deeper" / "c.PNG", rgb)  # recursive, upper-case suffix, label of level 1
    ds = load_path(tmp_path)
    assert ds.kind == "image" and ds.x.dtype == torch.float32 and ds.x.shape == (3, 3, 2, 2)
    assert ds.class_names == ["cat", "dog"]
    assert ds.y.dtype == torch.int64 and ds.y.tolist() == [0, 0, 1]  # cat/a, cat/deeper/c, dog/b
    np.testing.assert_allclose(ds.x[0].numpy(), u8(rgb.transpose(2, 0, 1)), atol=1e-6)
    assert ds.x[0, :, 1, 1].tolist() == pytest.approx([-0.6, -0.2, 0.2], abs=1e-6)


def test_loose_images_have_no_labels_and_case_insensitive_suffixes(tmp_path: Path) -> None:
    grey = np.array([[0, 51], [204, 255]], dtype=np.uint8)
    save(tmp_path / "one.PNG", grey)
    save(tmp_path / "two.JpG", np.full((2, 2), 255, np.uint8), quality=100)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden").mkdir()
    save(tmp_path / ".hidden" / "thumb.png", grey)  # hidden folders are ignored
    ds = load_path(tmp_path)
    assert ds.y is None and ds.class_names is None and ds.name == tmp_path.name
    assert ds.x.shape == (2, 1, 2, 2)  # all greyscale -> 1 channel
    np.testing.assert_allclose(ds.x[0, 0].numpy(), u8(grey), atol=1e-6)
    assert ds.x[1].min() > 0.95  # near-white JPEG


def test_lossless_webp_exact_values(tmp_path: Path) -> None:
    rgb = np.array([[[0, 10, 20], [30, 40, 50]], [[255, 128, 1], [7, 8, 9]]], dtype=np.uint8)
    save(tmp_path / "a.WEBP", rgb, lossless=True, exact=True)
    ds = load_path(tmp_path)
    np.testing.assert_allclose(ds.x[0].numpy(), u8(rgb.transpose(2, 0, 1)), atol=1e-6)


def test_loose_images_beside_class_folders_load_without_labels(tmp_path: Path) -> None:
    noise_png(tmp_path / "loose.png")
    noise_png(tmp_path / "cls" / "a.png")
    ds = load_path(tmp_path)
    assert ds.y is None and any("without labels" in n for n in ds.notes)


def test_sixteen_bit_greyscale_scaled_by_its_bit_depth(tmp_path: Path) -> None:
    a = np.array([[0, 65535], [32768, 13107]], dtype=np.uint16)
    save(tmp_path / "deep.png", a)
    with Image.open(tmp_path / "deep.png") as im:
        assert im.mode.startswith("I")
    ds = load_path(tmp_path)
    assert ds.x.shape == (1, 1, 2, 2)
    np.testing.assert_allclose(ds.x[0, 0].numpy(), a / 65535 * 2 - 1, atol=1e-6)


def test_mixed_grey_and_colour_become_rgb(tmp_path: Path) -> None:
    save(tmp_path / "a_grey.png", np.full((2, 2), 51, np.uint8))
    save(tmp_path / "b_rgb.png", np.zeros((2, 2, 3), np.uint8))
    ds = load_path(tmp_path)
    assert ds.x.shape == (2, 3, 2, 2)
    assert torch.allclose(ds.x[0], torch.tensor(-0.6))  # grey replicated into R, G and B
    assert any("converted to RGB" in n for n in ds.notes)


def test_transparency_composited_onto_white(tmp_path: Path) -> None:
    rgba = np.array([[[255, 0, 0, 0], [255, 0, 0, 255]], [[0, 0, 0, 51], [0, 0, 255, 255]]], np.uint8)
    save(tmp_path / "c" / "rgba.png", rgba)
    pal = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), mode="P")
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.save(tmp_path / "c" / "pal.png", transparency=0)  # index 0 (red) is fully transparent
    ds = load_path(tmp_path / "c")
    assert ds.x.shape == (2, 3, 2, 2)
    x_pal, x_rgba = ds.x[0], ds.x[1]  # sorted: pal.png, rgba.png
    assert x_rgba[:, 0, 0].tolist() == [1.0, 1.0, 1.0]  # transparent -> white
    assert x_rgba[:, 0, 1].tolist() == [1.0, -1.0, -1.0]  # opaque red
    assert x_rgba[:, 1, 0].tolist() == pytest.approx(u8([204, 204, 204]).tolist(), abs=1 / 127.5)  # 20% black
    assert x_pal[:, 0, 0].tolist() == [1.0, 1.0, 1.0] and x_pal[:, 0, 1].tolist() == [-1.0, -1.0, 1.0]


def test_grey_with_alpha_stays_one_channel(tmp_path: Path) -> None:
    la = np.zeros((2, 2, 2), np.uint8)
    la[0, 1, 1] = la[1, :, 1] = 255  # alpha opaque except at (0, 0)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    ds = load_path(tmp_path)
    assert ds.x.shape == (1, 1, 2, 2)
    assert ds.x[0, 0].tolist() == [[1.0, -1.0], [-1.0, -1.0]]


def test_non_square_is_centre_cropped(tmp_path: Path) -> None:
    save(tmp_path / "wide.png", np.array([[10, 20, 30, 40]] * 2, np.uint8))  # H=2, W=4
    save(tmp_path / "tall.png", np.array([[1, 1]] + [[2, 3], [4, 5]] + [[9, 9]], np.uint8))  # H=4, W=2
    ds = load_path(tmp_path)
    assert ds.x.shape == (2, 1, 2, 2)
    np.testing.assert_allclose(ds.x[0, 0].numpy(), u8([[2, 3], [4, 5]]), atol=1e-6)  # tall.png
    np.testing.assert_allclose(ds.x[1, 0].numpy(), u8([[20, 30], [20, 30]]), atol=1e-6)  # wide.png
    assert any("centre-cropped 2" in n for n in ds.notes)


def test_most_common_size_wins_and_resolution_resizes(tmp_path: Path) -> None:
    for i in range(2):
        save(tmp_path / f"small{i}.png", np.full((4, 4, 3), 100, np.uint8))
    save(tmp_path / "big.png", np.full((8, 8, 3), 100, np.uint8))
    ds = load_path(tmp_path)
    assert ds.x.shape == (3, 3, 4, 4)
    assert torch.allclose(ds.x, torch.tensor(float(u8(100))), atol=1e-6)  # a flat image stays flat
    assert any("most common size" in n and "resized 1 of 3" in n for n in ds.notes)
    ds = load_path(tmp_path, resolution=6)
    assert ds.x.shape == (3, 3, 6, 6) and torch.allclose(ds.x, torch.tensor(float(u8(100))), atol=1e-6)


def test_jpeg_downscaled_with_draft_keeps_content(tmp_path: Path) -> None:
    a = np.zeros((64, 64, 3), np.uint8)
    a[:, 32:] = 255
    save(tmp_path / "half.jpg", a, quality=95)
    ds = load_path(tmp_path, resolution=8)
    assert ds.x.shape == (1, 3, 8, 8)
    assert ds.x[0, :, :, :3].max() < -0.9 and ds.x[0, :, :, 5:].min() > 0.9


def test_bad_files_skipped_with_note_and_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    noise_png(tmp_path / "good.png")
    good = (tmp_path / "good.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(good[: len(good) // 2])
    save(tmp_path / "full.jpg", np.random.default_rng(1).integers(0, 256, (32, 32, 3), np.uint8))
    jpeg = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "text.jpeg").write_text("definitely not a JPEG")
    bomb_png(tmp_path / "bomb.png")
    noise_png(tmp_path / "locked.png")
    real_open = images_mod.Image.open

    def open_or_deny(fp: Path, *args: object, **kwargs: object) -> Image.Image:
        if Path(fp).name == "locked.png":
            raise PermissionError(13, "Permission denied")
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(images_mod.Image, "open", open_or_deny)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # a user's global must not leak in
    with pytest.warns(UserWarning, match="skipped 6 unreadable image files") as record:
        ds = load_path(tmp_path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # and is restored afterwards
    assert ds.x.shape == (2, 3, 32, 32)  # full.jpg and good.png
    note = next(n for n in ds.notes if n.startswith("skipped"))
    assert str(record[0].message) == note
    assert "and 1 more" in note and note.count("(") == 5  # five listed, the sixth counted
    for reason in ("possible decompression bomb", "permission denied", "not a recognised image", "truncated"):
        assert reason in note
    assert "zero.png" not in note  # the 6th in sorted order is only counted
    monkeypatch.setattr(images_mod, "MAX_LISTED", 10)
    with pytest.warns(UserWarning):
        note = next(n for n in load_path(tmp_path).notes if n.startswith("skipped"))
    for name, reason in [("trunc.png", "truncated"), ("trunc.jpg", "truncated"), ("zero.png", "empty file")]:
        assert f"{tmp_path / name} ({reason})" in note


def test_decompression_bomb_warning_is_a_skip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    noise_png(tmp_path / "a.png", size=8)  # 64 pixels
    noise_png(tmp_path / "b.png", size=12)  # 144 pixels: over the limit, under twice it (a PIL warning)
    monkeypatch.setattr(images_mod, "MAX_IMAGE_PIXELS", 100)
    with pytest.warns(UserWarning, match="skipped 1 unreadable.*b.png"):
        ds = load_path(tmp_path)
    assert ds.x.shape == (1, 3, 8, 8)
    assert Image.MAX_IMAGE_PIXELS != 100  # PIL's global restored


def test_only_colour_file_unreadable_leaves_one_channel(tmp_path: Path) -> None:
    save(tmp_path / "a.png", np.full((32, 32), 255, np.uint8))
    raw = noise_png(tmp_path / "b.png").read_bytes()
    (tmp_path / "b.png").write_bytes(raw[: len(raw) // 2])  # header says RGB; pixels are cut off
    with pytest.warns(UserWarning, match="b.png \\(truncated\\)"):
        ds = load_path(tmp_path)
    assert ds.x.shape == (1, 1, 32, 32) and torch.equal(ds.x, torch.ones_like(ds.x))


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_permissions_skipped(tmp_path: Path) -> None:
    noise_png(tmp_path / "a.png")
    noise_png(tmp_path / "b.png").chmod(0)
    with pytest.warns(UserWarning, match="permission denied"):
        ds = load_path(tmp_path)
    assert len(ds) == 1


def test_folder_without_readable_images_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"no images found in {tmp_path}"):
        load_path(tmp_path)
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(DataError, match="no images found"):
        load_path(tmp_path)
    (tmp_path / "x.png").write_bytes(b"")
    (tmp_path / "y.jpg").write_text("nope")
    with pytest.raises(DataError, match=f"none of the 2 image files in {tmp_path} could be read"):
        load_path(tmp_path)


# ---- .npy / .npz ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, axes",
    [
        ((2, 5, 5), None),
        ((2, 5, 5, 1), (0, 3, 1, 2)),
        ((2, 5, 5, 3), (0, 3, 1, 2)),
        ((2, 3, 5, 5), None),
        ((2, 4, 4, 3), (0, 3, 1, 2)),  # both axes could be channels: the square reading wins
        ((2, 3, 4, 4), None),
        ((2, 1, 1, 1), None),
    ],
)
def test_npy_image_layouts(tmp_path: Path, shape: tuple[int, ...], axes: tuple[int, ...] | None) -> None:
    a = np.arange(np.prod(shape)).reshape(shape).astype(np.uint8)
    np.save(tmp_path / "a.npy", a)
    ds = load_path(tmp_path / "a.npy")
    want = a[:, None] if a.ndim == 3 else a if axes is None else a.transpose(axes)
    assert ds.kind == "image" and ds.y is None and ds.x.dtype == torch.float32
    np.testing.assert_allclose(ds.x.numpy(), u8(want), atol=1e-6)


def test_npy_value_ranges(tmp_path: Path) -> None:
    np.save(tmp_path / "u16.npy", np.array([[[0, 65535], [32768, 0]]], np.uint16))
    assert load_path(tmp_path / "u16.npy").x.flatten().tolist() == pytest.approx(
        [-1, 1, 1 / 65535, -1], abs=1e-6
    )
    unit = np.array([[[0.0, 0.25], [0.5, 1.0]]], np.float32)
    np.save(tmp_path / "unit.npy", unit)
    assert load_path(tmp_path / "unit.npy").x.flatten().tolist() == [-1.0, -0.5, 0.0, 1.0]
    signed = np.array([[[-1.0, -0.3], [0.7, 0.1]]], np.float32)
    np.save(tmp_path / "signed.npy", signed)
    assert load_path(tmp_path / "signed.npy").x.flatten().tolist() == signed.flatten().tolist()  # kept
    np.save(tmp_path / "wide.npy", unit * 255)
    with pytest.raises(DataError, match=r"wide.npy: float image values must lie in \[0,1\] or \[-1,1\]"):
        load_path(tmp_path / "wide.npy")
    np.save(tmp_path / "nan.npy", np.array([[[0.0, np.nan], [0.0, 0.0]]]))
    with pytest.raises(DataError, match="NaN"):
        load_path(tmp_path / "nan.npy")
    np.save(tmp_path / "i64.npy", np.zeros((1, 2, 2), np.int64))
    with pytest.raises(DataError, match="uint8 or uint16"):
        load_path(tmp_path / "i64.npy")


def test_npy_rgba_composited_and_resolution(tmp_path: Path) -> None:
    a = np.zeros((1, 2, 2, 4), np.uint8)
    a[0, 0, 0] = [255, 0, 0, 0]  # transparent -> white
    a[0, 0, 1] = [0, 0, 0, 51]  # 20% black over white -> 204
    a[0, 1, :] = [0, 255, 0, 255]
    np.save(tmp_path / "rgba.npy", a)
    ds = load_path(tmp_path / "rgba.npy")
    assert ds.x.shape == (1, 3, 2, 2)
    assert ds.x[0, :, 0, 0].tolist() == [1.0, 1.0, 1.0]
    assert ds.x[0, :, 0, 1].tolist() == pytest.approx([0.6, 0.6, 0.6], abs=1e-6)
    assert ds.x[0, :, 1, 0].tolist() == [-1.0, 1.0, -1.0]
    np.save(tmp_path / "big.npy", np.zeros((2, 8, 8), np.uint8))
    assert load_path(tmp_path / "big.npy", resolution=4).x.shape == (2, 1, 4, 4)


def test_npy_points_kept_as_is(tmp_path: Path) -> None:
    pts = np.array([[1.5, -20.0], [3.0, 1e3]], dtype=np.float64)
    np.save(tmp_path / "pts.npy", pts)
    ds = load_path(tmp_path / "pts.npy")
    assert ds.kind == "points" and ds.x.dtype == torch.float32 and ds.x.tolist() == pts.tolist()


def test_npy_refuses_pickles_and_bad_shapes(tmp_path: Path) -> None:
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="obj.npy.*pickled arrays are refused"):
        load_path(tmp_path / "obj.npy")
    (tmp_path / "junk.npy").write_bytes(b"\x80\x04this is not numpy")
    with pytest.raises(DataError, match="junk.npy"):
        load_path(tmp_path / "junk.npy")
    np.save(tmp_path / "trunc.npy", np.zeros((10, 8, 8), np.uint8))
    raw = (tmp_path / "trunc.npy").read_bytes()
    (tmp_path / "trunc.npy").write_bytes(raw[:-100])
    with pytest.raises(DataError, match="trunc.npy"):
        load_path(tmp_path / "trunc.npy")
    np.save(tmp_path / "five.npy", np.zeros((2, 5, 5, 5), np.uint8))
    with pytest.raises(DataError, match="channel axis"):
        load_path(tmp_path / "five.npy")
    np.save(tmp_path / "d5.npy", np.zeros((2, 1, 3, 4, 4), np.uint8))
    with pytest.raises(DataError, match="got shape"):
        load_path(tmp_path / "d5.npy")


def test_npz_keys_and_labels(tmp_path: Path) -> None:
    x = np.zeros((3, 5, 5, 3), np.uint8)
    np.savez(tmp_path / "xy.npz", x=x, y=np.array([2, 0, 1]), class_names=np.array(["a", "b", "c"]))
    ds = load_path(tmp_path / "xy.npz")
    assert ds.x.shape == (3, 3, 5, 5) and ds.y.tolist() == [2, 0, 1] and ds.class_names == ["a", "b", "c"]
    np.savez(tmp_path / "named.npz", images=x, labels=np.array([[1], [1], [0]]))
    assert load_path(tmp_path / "named.npz").y.tolist() == [1, 1, 0]
    np.savez(tmp_path / "only.npz", whatever=x)
    assert load_path(tmp_path / "only.npz").y is None
    np.savez(tmp_path / "positional.npz", x, np.array([0, 1, 1]))
    assert load_path(tmp_path / "positional.npz").y.tolist() == [0, 1, 1]
    np.savez(tmp_path / "short.npz", x=x, y=np.array([0, 1]))
    with pytest.raises(DataError, match="short.npz: 3 examples but 2 labels"):
        load_path(tmp_path / "short.npz")
    np.savez(tmp_path / "keys.npz", a=x, b=x)
    with pytest.raises(DataError, match="keys.npz: no images array.*found keys: a, b"):
        load_path(tmp_path / "keys.npz")
    np.savez(tmp_path / "objy.npz", x=x, y=np.array([0, "a", None], dtype=object))
    with pytest.raises(DataError, match="pickled arrays are refused"):
        load_path(tmp_path / "objy.npz")


# ---- IDX (MNIST format) -----------------------------------------------------------------------


def write_idx(path: Path, a: np.ndarray, gz: bool = False) -> Path:
    header = bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
    data = header + a.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def test_idx_folder_prefers_train(tmp_path: Path) -> None:
    train = np.arange(3 * 4 * 4).reshape(3, 4, 4).astype(np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", train, gz=True)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([7, 0, 3]))
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((2, 4, 4)))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([1, 1]))
    ds = load_path(tmp_path)
    assert ds.x.shape == (3, 1, 4, 4) and ds.y.tolist() == [7, 0, 3] and ds.n_classes == 8
    np.testing.assert_allclose(ds.x[:, 0].numpy(), u8(train), atol=1e-6)
    assert any("training split" in n and "t10k-images-idx3-ubyte" in n for n in ds.notes)
    single = load_path(tmp_path / "t10k-images-idx3-ubyte")
    assert single.x.shape == (2, 1, 4, 4) and single.y.tolist() == [1, 1]


def test_idx_each_file_in_its_own_folder(tmp_path: Path) -> None:
    for name, a in [
        ("train-images-idx3-ubyte", np.ones((2, 3, 3))),
        ("train-labels-idx1-ubyte", np.array([4, 2])),
    ]:
        (tmp_path / name).mkdir()
        write_idx(tmp_path / name / name, a)
    ds = load_path(tmp_path)
    assert ds.x.shape == (2, 1, 3, 3) and ds.y.tolist() == [4, 2] and not ds.notes


def test_idx_errors(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 4, 4)))
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match=f"{path} is truncated"):
        load_path(tmp_path)
    path.write_bytes(b"\x00\x00\x08")
    with pytest.raises(DataError, match="not an IDX file"):
        load_path(path)
    (tmp_path / "x-images-idx3-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match="cannot read .*x-images-idx3-ubyte.gz"):
        load_path(tmp_path / "x-images-idx3-ubyte.gz")
    labels = write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(3))
    with pytest.raises(DataError, match="labels file"):
        load_path(labels)


# ---- CIFAR-10 ---------------------------------------------------------------------------------


def cifar_batch(n: int, first_label: int, protocol: int = 2) -> tuple[bytes, np.ndarray]:
    data = np.random.default_rng(first_label).integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [(first_label + i) % 10 for i in range(n)]
    batch = {b"batch_label": b"training batch", b"labels": labels, b"data": data, b"filenames": [b"f"] * n}
    return pickle.dumps(batch, protocol=protocol), data


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_python_batches(tmp_path: Path, protocol: int) -> None:
    blob1, data1 = cifar_batch(2, 0, protocol)
    blob2, _ = cifar_batch(3, 5, protocol)
    (tmp_path / "data_batch_1").write_bytes(blob1)
    (tmp_path / "data_batch_10").write_bytes(blob2)  # natural order: 1 before 10
    (tmp_path / "test_batch").write_bytes(cifar_batch(4, 9, protocol)[0])
    meta = {b"label_names": [f"c{i}".encode() for i in range(10)], b"num_vis": 3072}
    (tmp_path / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    ds = load_path(tmp_path)
    assert ds.x.shape == (5, 3, 32, 32) and ds.y.tolist() == [0, 1, 5, 6, 7]
    assert ds.class_names == [f"c{i}" for i in range(10)]
    r, g, b = data1[0, :1024], data1[0, 1024:2048], data1[0, 2048:]  # planes of 32x32, row-major
    np.testing.assert_allclose(ds.x[0, 0].numpy(), u8(r.reshape(32, 32)), atol=1e-6)
    np.testing.assert_allclose(ds.x[0, 2, 1, 1], u8(b[33]), atol=1e-6)
    assert ds.x[0, 1, 0, 31].item() == pytest.approx(float(u8(g[31])), abs=1e-6)
    assert any("test_batch not loaded" in n for n in ds.notes)


def test_cifar_without_meta_uses_standard_names(tmp_path: Path) -> None:
    (tmp_path / "data_batch_1").write_bytes(cifar_batch(2, 0)[0])
    ds = load_path(tmp_path)
    assert ds.class_names[:3] == ["airplane", "automobile", "bird"] and len(ds.class_names) == 10
    assert len(load_path(tmp_path / "data_batch_1")) == 2  # one batch file on its own


class Evil:
    """Unpickling this would run a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


class Harmless:
    pass


@pytest.mark.parametrize("where", ["batch", "nested", "meta", "class"])
def test_cifar_restricted_unpickler_refuses_code(tmp_path: Path, where: str) -> None:
    marker = tmp_path / "pwned"
    good, data = cifar_batch(2, 0)
    payload = {
        "batch": Evil(marker),
        "nested": {b"data": data, b"labels": [0, Evil(marker)]},
        "class": {b"data": data, b"labels": [0, 1], b"extra": Harmless()},
    }.get(where)
    (tmp_path / "data_batch_1").write_bytes(good if where == "meta" else pickle.dumps(payload, protocol=2))
    if where == "meta":
        (tmp_path / "batches.meta").write_bytes(pickle.dumps({b"label_names": Evil(marker)}))
    with pytest.raises(DataError, match=r"refused to unpickle .*(posix|os|nt)\.system|refused.*Harmless"):
        load_path(tmp_path)
    assert not marker.exists()


def test_cifar_binary_batches(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    recs = rng.integers(0, 256, (3, 3073), dtype=np.uint8)
    recs[:, 0] = [4, 0, 9]
    (tmp_path / "data_batch_1.bin").write_bytes(recs[:2].tobytes())
    (tmp_path / "data_batch_2.bin").write_bytes(recs[2:].tobytes())
    (tmp_path / "batches.meta.txt").write_text("\n".join(f"n{i}" for i in range(10)) + "\n\n")
    ds = load_path(tmp_path)
    assert ds.x.shape == (3, 3, 32, 32) and ds.y.tolist() == [4, 0, 9] and ds.class_names[9] == "n9"
    np.testing.assert_allclose(ds.x[2].numpy(), u8(recs[2, 1:].reshape(3, 32, 32)), atol=1e-6)
    (tmp_path / "data_batch_2.bin").write_bytes(recs[2:, :-1].tobytes())
    with pytest.raises(DataError, match="data_batch_2.bin: 3072 bytes is not a whole number"):
        load_path(tmp_path)


def test_cifar_test_batch_alone(tmp_path: Path) -> None:
    (tmp_path / "test_batch").write_bytes(cifar_batch(3, 0)[0])
    with pytest.raises(DataError, match="no CIFAR-10 data_batch_\\* files .*give its path"):
        load_path(tmp_path)
    ds = load_path(tmp_path / "test_batch", resolution=16)
    assert ds.x.shape == (3, 3, 16, 16) and any("resized" in n for n in ds.notes)


def test_cifar_not_a_batch(tmp_path: Path) -> None:
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": [1, 2, 3]}))
    with pytest.raises(DataError, match="is not a CIFAR-10 batch"):
        load_path(tmp_path)
    (tmp_path / "data_batch_1").write_bytes(b"garbage")
    with pytest.raises(DataError, match="cannot read CIFAR batch"):
        load_path(tmp_path)


# ---- dispatch ---------------------------------------------------------------------------------


def test_dispatch_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data path not found"):
        load_path(tmp_path / "missing")
    with pytest.raises(DataError, match="resolution must be"):
        load_path(tmp_path, resolution=-1)
    image = noise_png(tmp_path / "one.png")
    with pytest.raises(DataError, match="single image, not a dataset"):
        load_path(image)
    (tmp_path / "table.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match=r"table.csv: '.csv' files are not a supported data format; .*\.npz"):
        load_path(tmp_path / "table.csv")


def test_load_dataset_reaches_files(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros((5, 4, 4), np.uint8))
    ds = load_dataset(DataConfig(name=str(tmp_path / "a.npy"), limit=3))
    assert ds.x.shape == (3, 1, 4, 4)
