"""A corpus of malformed inputs, each through the CLI: one clear line on stderr naming the file (or
key) and the problem, exit code 2, no traceback, and no half-written run folder: `--out` does not
exist afterwards, and a run folder being resumed or sampled stays byte-identical.

Also: files that look odd but are fine (mixed image modes and sizes, an empty YAML file) load, a
few bad images among good ones are skipped with a count and their paths, property-based tests of
config parsing and image transforms, and a scan of src/ for anything that could unpickle user files.
"""

from __future__ import annotations

import ast
import io
import json
import os
import pickle
import re
import shutil
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from ganforge.cli import main

from .conftest import tiny_overrides

SRC = Path(__file__).resolve().parents[1] / "src" / "ganforge"


def sets(model: str, *extra: str) -> list[str]:
    return [a for s in [*tiny_overrides(model), *extra] for a in ("--set", s)]


def train(data: Path | str, out: Path, model: str = "dcgan", *extra: str) -> list[str]:
    """`ganforge train` on `data`, one tiny step."""
    res = ["data.resolution=8"] if model == "dcgan" else ["data.n_points=64"]
    return [
        "train",
        "--data",
        str(data),
        "--model",
        model,
        "--steps",
        "1",
        "--batch-size",
        "4",
        "--out",
        str(out),
        "--quiet",
        *sets(model, *res),
        *extra,
    ]


@dataclass
class Case:
    args: list[str]
    expect: str  # a regular expression the one error line must match (after "ganforge: error: ")
    out: Path | None = None  # must not exist afterwards
    keep: list[Path] = field(default_factory=list)  # folders that must stay byte-identical


CASES: dict[str, Callable[[Path, Path], Case]] = {}


def case(name: str) -> Callable:
    def register(fn: Callable[[Path, Path], Case]) -> Callable[[Path, Path], Case]:
        CASES[name] = fn
        return fn

    return register


# ---- helpers that write bad files ---------------------------------------------------------------


def png_bytes(a: np.ndarray, **kw: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG", **kw)
    return buf.getvalue()


def noise(size: int = 8, channels: int = 3, seed: int = 0) -> np.ndarray:
    shape = (size, size, channels) if channels > 1 else (size, size)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def folder_with(tmp: Path, name: str, content: bytes) -> Path:
    folder = tmp / "imgs"
    folder.mkdir(exist_ok=True)
    (folder / name).write_bytes(content)
    return folder


def bomb_png(side: int = 100_000) -> bytes:
    """A tiny PNG whose header claims side x side pixels."""
    png = bytearray(png_bytes(np.zeros((1, 1), np.uint8)))
    chunk = b"IHDR" + struct.pack(">II", side, side) + bytes(png[24:29])
    png[12:29] = chunk
    png[29:33] = struct.pack(">I", zlib.crc32(chunk))
    return bytes(png)


def jpeg_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def npy(tmp: Path, name: str, a: np.ndarray, **kw: object) -> Path:
    path = tmp / name
    np.save(path, a, **kw)
    return path


def text(tmp: Path, name: str, content: str | bytes) -> Path:
    path = tmp / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


class Evil:
    """Unpickling this runs code: it creates the file `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def newest(run: Path) -> Path:
    entries = json.loads((run / "checkpoints" / "manifest.json").read_text())["checkpoints"]
    return run / "checkpoints" / entries[-1]["file"]


def legacy_run(tmp: Path, data: bytes) -> Path:
    """A run folder in the older layout, whose single checkpoint.safetensors holds `data`."""
    run = tmp / "legacy"
    run.mkdir()
    (run / "checkpoint.safetensors").write_bytes(data)
    return run


def sample(run: Path, tmp: Path, *extra: str) -> list[str]:
    return ["sample", str(run), "--n", "4", "--out", str(tmp / "s.npy"), *extra]


def resume(run: Path, *extra: str) -> list[str]:
    return ["train", "--resume", str(run), "--steps", "5", "--quiet", *extra]


def rewrite_meta(src: Path, dst: Path, edit: Callable[[dict], object]) -> None:
    """Copy a checkpoint with its JSON metadata edited."""
    from safetensors import safe_open

    with safe_open(str(src), framework="pt") as fh:
        meta = json.loads(fh.metadata()["ganforge"])
    edit(meta)
    save_file(load_file(str(src)), str(dst), metadata={"ganforge": json.dumps(meta)})


# ---- images -----------------------------------------------------------------------------------


@case("truncated PNG")
def _(tmp, run):
    data = png_bytes(noise(16))
    return Case(
        train(folder_with(tmp, "a.png", data[: len(data) // 2]), tmp / "o"), r"imgs/a\.png: truncated"
    )


@case("truncated JPEG")
def _(tmp, run):
    data = jpeg_bytes(noise(16))
    return Case(
        train(folder_with(tmp, "a.jpg", data[: len(data) // 2]), tmp / "o"),
        r"imgs/a\.jpg: (truncated|not a recognised image)",
    )


@case("zero-byte PNG")
def _(tmp, run):
    return Case(train(folder_with(tmp, "a.png", b""), tmp / "o"), r"imgs/a\.png: empty file")


@case("decompression bomb")
def _(tmp, run):
    return Case(train(folder_with(tmp, "a.png", bomb_png()), tmp / "o"), r"a\.png: .*decompression bomb")


@case("text file named .png")
def _(tmp, run):
    return Case(
        train(folder_with(tmp, "a.png", b"hello, world\n"), tmp / "o"), r"a\.png: not a recognised image"
    )


@case("HTML page named .jpg")
def _(tmp, run):
    page = b"<!doctype html><html><body>404</body></html>"
    return Case(train(folder_with(tmp, "a.jpg", page), tmp / "o"), r"a\.jpg: not a recognised image")


@case("PNG named .webp, truncated")
def _(tmp, run):
    data = png_bytes(noise(16))[:40]
    return Case(train(folder_with(tmp, "a.webp", data), tmp / "o"), r"a\.webp: ")


@case("empty folder")
def _(tmp, run):
    (tmp / "empty").mkdir()
    return Case(train(tmp / "empty", tmp / "o"), r"no images found in .*empty")


@case("folder of non-image files")
def _(tmp, run):
    folder = folder_with(tmp, "notes.txt", b"hi")
    return Case(train(folder, tmp / "o"), r"no images found in .*imgs")


@case("a single image instead of a folder")
def _(tmp, run):
    path = text(tmp, "one.png", png_bytes(noise()))
    return Case(train(path, tmp / "o"), r"one\.png is a single image, not a dataset")


@case("unsupported data file")
def _(tmp, run):
    path = text(tmp, "data.csv", "a,b\n1,2\n")
    return Case(train(path, tmp / "o"), r"data\.csv: '\.csv' files are not a supported data format")


# ---- arrays -----------------------------------------------------------------------------------


@case("object .npy")
def _(tmp, run):
    path = npy(tmp, "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return Case(train(path, tmp / "o", "mlp"), r"obj\.npy holds an object array")


@case("pickle named .npy")
def _(tmp, run):
    marker = tmp / "pwned"
    path = text(tmp, "evil.npy", pickle.dumps(Evil(marker)))
    return Case(train(path, tmp / "o", "mlp"), r"evil\.npy is a pickle, which is refused")


@case("1-D array")
def _(tmp, run):
    path = npy(tmp, "flat.npy", np.arange(10.0))
    return Case(
        train(path, tmp / "o", "mlp"), r"flat\.npy: expected \(N, D\) points or .*images; got shape \(10,\)"
    )


@case("5-D array")
def _(tmp, run):
    path = npy(tmp, "d5.npy", np.zeros((2, 1, 3, 4, 4), np.uint8))
    return Case(train(path, tmp / "o"), r"d5\.npy: expected .*got shape \(2, 1, 3, 4, 4\)")


@case("no channel axis")
def _(tmp, run):
    path = npy(tmp, "five.npy", np.zeros((2, 5, 5, 5), np.uint8))
    return Case(train(path, tmp / "o"), r"five\.npy: cannot find a channel axis")


@case("NaN in points")
def _(tmp, run):
    a = np.random.default_rng(0).normal(size=(64, 2))
    a[5, 1] = np.nan
    return Case(train(npy(tmp, "nan.npy", a), tmp / "o", "mlp"), r"nan\.npy contains NaN or infinite values")


@case("inf in images")
def _(tmp, run):
    a = np.zeros((4, 8, 8), np.float32)
    a[0, 0, 0] = np.inf
    return Case(train(npy(tmp, "inf.npy", a), tmp / "o"), r"inf\.npy contains NaN or infinite values")


@case("out-of-range float images")
def _(tmp, run):
    a = np.linspace(0, 5, 4 * 8 * 8, dtype=np.float32).reshape(4, 8, 8)
    return Case(train(npy(tmp, "big.npy", a), tmp / "o"), r"big\.npy: float image values must lie in")


@case("empty array")
def _(tmp, run):
    return Case(train(npy(tmp, "none.npy", np.zeros((0, 2))), tmp / "o", "mlp"), r"none\.npy: no examples")


@case("string array")
def _(tmp, run):
    path = npy(tmp, "str.npy", np.array([["a", "b"], ["c", "d"]]))
    return Case(train(path, tmp / "o", "mlp"), r"str\.npy: expected a numeric array")


@case("complex array")
def _(tmp, run):
    path = npy(tmp, "cx.npy", np.ones((4, 2), np.complex64))
    return Case(train(path, tmp / "o", "mlp"), r"cx\.npy: expected a numeric array")


@case("labels of the wrong length")
def _(tmp, run):
    path = tmp / "short.npz"
    np.savez(path, x=np.zeros((4, 8, 8), np.uint8), y=np.array([0, 1]))
    return Case(train(path, tmp / "o"), r"short\.npz: 4 examples but 2 labels")


@case("negative labels")
def _(tmp, run):
    path = tmp / "neg.npz"
    np.savez(path, x=np.zeros((4, 8, 8), np.uint8), y=np.array([0, 1, -1, 0]))
    return Case(train(path, tmp / "o"), r"neg\.npz: labels must be non-negative")


@case("npz without an images array")
def _(tmp, run):
    path = tmp / "keys.npz"
    np.savez(path, a=np.zeros((2, 2)), b=np.zeros((2, 2)))
    return Case(train(path, tmp / "o"), r"keys\.npz: no images array")


@case("truncated .npy")
def _(tmp, run):
    path = npy(tmp, "cut.npy", np.zeros((10, 8, 8), np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    return Case(train(path, tmp / "o"), r"cannot read .*cut\.npy")


@case("random bytes .npz")
def _(tmp, run):
    path = text(tmp, "junk.npz", np.random.default_rng(0).bytes(300))
    return Case(train(path, tmp / "o"), r"junk\.npz is not a NumPy \.npy/\.npz file")


# ---- IDX and CIFAR ----------------------------------------------------------------------------


@case("IDX bad magic")
def _(tmp, run):
    path = text(tmp, "train-images-idx3-ubyte", b"\x12\x34\x56\x78" + bytes(100))
    return Case(
        train(path, tmp / "o"), r"train-images-idx3-ubyte is not an IDX file \(bad magic number 12345678\)"
    )


@case("IDX truncated")
def _(tmp, run):
    header = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 10, 8, 8)
    path = text(tmp, "train-images-idx3-ubyte", header + bytes(100))
    return Case(train(path, tmp / "o"), r"train-images-idx3-ubyte is truncated")


@case("IDX labels file given")
def _(tmp, run):
    path = text(tmp, "train-labels-idx1-ubyte", bytes([0, 0, 8, 1]) + struct.pack(">I", 2) + b"\x01\x02")
    return Case(train(path, tmp / "o"), r"is an IDX labels file")


@case("CIFAR malicious pickle")
def _(tmp, run):
    folder = tmp / "cifar"
    folder.mkdir()
    marker = tmp / "pwned"
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil(marker)}, protocol=2))
    return Case(
        train(folder, tmp / "o"), r"refused to unpickle .*data_batch_1: it references (_?io|builtins)\.open"
    )


@case("CIFAR binary of the wrong size")
def _(tmp, run):
    folder = tmp / "cifarbin"
    folder.mkdir()
    (folder / "data_batch_1.bin").write_bytes(bytes(3073 * 2 + 5))
    return Case(train(folder, tmp / "o"), r"data_batch_1\.bin: 6151 bytes is not a whole number")


# ---- configs ----------------------------------------------------------------------------------


def with_config(tmp: Path, content: str | bytes, name: str = "c.yaml") -> list[str]:
    """A config file and nothing else that could override it (but one step, should it train)."""
    path = text(tmp, name, content)
    args = ["--data", "ring8", "--model", "mlp", "--steps", "1", "--set", "data.n_points=64"]
    return ["train", *args, "--out", str(tmp / "o"), "--quiet", "--config", str(path)]


@case("config: unknown key")
def _(tmp, run):
    return Case(
        with_config(tmp, "train:\n  stpes: 3\n"),
        r"unknown config key 'train\.stpes' \(did you mean 'steps'\?\)",
    )


@case("config: unknown section")
def _(tmp, run):
    return Case(
        with_config(tmp, "trian:\n  steps: 3\n"), r"unknown config key 'trian' \(did you mean 'train'\?\)"
    )


@case("config: wrong type")
def _(tmp, run):
    return Case(
        with_config(tmp, "train:\n  batch_size: lots\n"),
        r"train\.batch_size: expected an integer, got 'lots'",
    )


@case("config: a string for a number")
def _(tmp, run):
    return Case(with_config(tmp, "train:\n  beta1: half\n"), r"train\.beta1: expected a number, got 'half'")


@case("config: section is not a mapping")
def _(tmp, run):
    return Case(with_config(tmp, "train: 5\n"), r"c\.yaml: train: expected a mapping of settings, got 5")


@case("config: negative size")
def _(tmp, run):
    return Case(with_config(tmp, "train:\n  n_grid: -4\n"), r"train\.n_grid must be at least 1, got -4")


@case("config: negative network width")
def _(tmp, run):
    return Case(with_config(tmp, "net:\n  g_hidden: -16\n"), r"net\.g_hidden must be at least 1, got -16")


@case("config: infinite learning rate")
def _(tmp, run):
    return Case(with_config(tmp, "train:\n  g_lr: .inf\n"), r"train\.g_lr: expected a finite number, got inf")


@case("config: Python tag")
def _(tmp, run):
    marker = tmp / "pwned"
    yaml_text = f"train: !!python/object/apply:os.system ['touch {marker}']\n"
    return Case(
        with_config(tmp, yaml_text),
        r"c\.yaml is not valid YAML: line \d+, column \d+: could not determine a constructor",
    )


@case("config: a list")
def _(tmp, run):
    return Case(with_config(tmp, "- train\n- steps\n"), r"config file .*c\.yaml must hold a mapping")


@case("config: non-UTF-8 bytes")
def _(tmp, run):
    return Case(
        with_config(tmp, b"train:\n  steps: \xff\xfe3\n"), r"cannot read config file .*c\.yaml: .*utf-8"
    )


@case("config: invalid JSON")
def _(tmp, run):
    return Case(with_config(tmp, '{"train": {"steps": 3,}}', "c.json"), r"c\.json is not valid JSON")


@case("config: a directory")
def _(tmp, run):
    (tmp / "confdir").mkdir()
    args = [*train("ring8", tmp / "o", "mlp"), "--config", str(tmp / "confdir")]
    return Case(args, r"cannot read config file .*confdir: it is a folder, not a YAML or JSON file")


@case("config: missing file")
def _(tmp, run):
    args = [*train("ring8", tmp / "o", "mlp"), "--config", str(tmp / "nope.yaml")]
    return Case(args, r"config file not found: .*nope\.yaml")


@case("--set: a value for a whole section")
def _(tmp, run):
    return Case([*train("ring8", tmp / "o", "mlp"), "--set", "train=5"], r"train: expected a mapping")


@case("--set: key too deep")
def _(tmp, run):
    return Case(
        [*train("ring8", tmp / "o", "mlp"), "--set", "train.steps.x=5"], r"train\.steps: expected an integer"
    )


# ---- checkpoints ------------------------------------------------------------------------------


@case("checkpoint: truncated safetensors")
def _(tmp, run):
    bad = legacy_run(tmp, newest(run).read_bytes()[:2000])
    return Case(
        sample(bad, tmp),
        r"no usable checkpoint in .*legacy: checkpoint\.safetensors is not a readable ganforge checkpoint",
        keep=[bad],
    )


@case("checkpoint: random bytes")
def _(tmp, run):
    bad = legacy_run(tmp, np.random.default_rng(1).bytes(5000))
    return Case(
        sample(bad, tmp), r"checkpoint\.safetensors is not a readable ganforge checkpoint", keep=[bad]
    )


@case("checkpoint: safetensors without ganforge metadata")
def _(tmp, run):
    buf = tmp / "plain.safetensors"
    save_file({"w": torch.zeros(3)}, str(buf))
    bad = legacy_run(tmp, buf.read_bytes())
    return Case(
        sample(bad, tmp),
        r"checkpoint\.safetensors is a safetensors file but not a ganforge checkpoint \(no metadata\)",
        keep=[bad],
    )


@case("checkpoint: metadata without a config")
def _(tmp, run):
    rewrite_meta(newest(run), tmp / "x.safetensors", lambda m: m.pop("config"))
    bad = legacy_run(tmp, (tmp / "x.safetensors").read_bytes())
    return Case(sample(bad, tmp), r"checkpoint\.safetensors: not a ganforge training checkpoint", keep=[bad])


@case("checkpoint: weights do not fit the config")
def _(tmp, run):
    rewrite_meta(newest(run), tmp / "x.safetensors", lambda m: m["config"]["net"].update(g_hidden=32))
    bad = legacy_run(tmp, (tmp / "x.safetensors").read_bytes())
    expect = (
        r"legacy/checkpoint\.safetensors: checkpoint weights do not fit .*: size mismatch for net\.0\.weight"
    )
    return Case(sample(bad, tmp), expect, keep=[bad])


@case("checkpoint: optimiser state does not fit")
def _(tmp, run):
    rewrite_meta(newest(run), tmp / "x.safetensors", lambda m: m["opt_D"]["param_groups"].append({}))
    bad = legacy_run(tmp, (tmp / "x.safetensors").read_bytes())
    return Case(resume(bad), r"checkpoint training state is incomplete or corrupt", keep=[bad])


@case("checkpoint: a pickle")
def _(tmp, run):
    bad = legacy_run(tmp, pickle.dumps(Evil(tmp / "pwned")))
    return Case(
        sample(bad, tmp), r"checkpoint\.safetensors is not a readable ganforge checkpoint", keep=[bad]
    )


@case("checkpoint: a malicious torch .pt (zip)")
def _(tmp, run):
    buf = io.BytesIO()
    torch.save({"G": Evil(tmp / "pwned")}, buf)
    assert zipfile.is_zipfile(io.BytesIO(buf.getvalue()))
    bad = legacy_run(tmp, buf.getvalue())
    return Case(resume(bad), r"checkpoint\.safetensors is not a readable ganforge checkpoint", keep=[bad])


@case("checkpoint: every rotated copy corrupt")
def _(tmp, run):
    for p in (run / "checkpoints").glob("step_*.safetensors"):
        p.write_bytes(p.read_bytes()[:100])
    return Case(
        resume(run),
        r"no usable checkpoint in .*checkpoints: step_000003\.safetensors: checksum mismatch",
        keep=[run],
    )


@case("checkpoint: corrupt manifest and files")
def _(tmp, run):
    (run / "checkpoints" / "manifest.json").write_text("{not json")
    for p in (run / "checkpoints").glob("step_*.safetensors"):
        p.write_bytes(b"\x00" * 64)
    return Case(
        sample(run, tmp),
        r"manifest\.json is corrupt; .*step_000003\.safetensors is not a readable",
        keep=[run],
    )


@case("resume: another family")
def _(tmp, run):
    return Case(
        resume(run, "--model", "dcgan"), r"cannot resume .* as model 'dcgan': it trains 'mlp'", keep=[run]
    )


@case("resume: changed network width")
def _(tmp, run):
    args = resume(run, "--set", "net.g_hidden=32")
    return Case(args, r"resuming .* with a changed config \(net\.g_hidden\)", keep=[run])


@case("resume: changed width, change allowed")
def _(tmp, run):
    args = resume(run, "--set", "net.g_hidden=32", "--allow-config-change")
    expect = r"step_000003\.safetensors: checkpoint weights do not fit the configured networks: size mismatch"
    return Case(args, expect, keep=[run])


@case("resume: other data")
def _(tmp, run):
    args = resume(run, "--data", "digits", "--allow-config-change", "--set", "data.resolution=8")
    return Case(args, r"model 'mlp' trains on points data|the data no longer matches", keep=[run])


# ---- CLI --------------------------------------------------------------------------------------


@case("sample: negative --n")
def _(tmp, run):
    return Case(
        ["sample", str(run), "--n", "-3", "--out", str(tmp / "s.npy")],
        r"--n must be at least 1, got -3",
        keep=[run],
    )


@case("sample: unknown --out format")
def _(tmp, run):
    return Case(
        ["sample", str(run), "--out", str(tmp / "s.gif")], r"s\.gif: unsupported format \.gif", keep=[run]
    )


@case("sample: run folder missing")
def _(tmp, run):
    return Case(sample(tmp / "nope", tmp), r"run folder not found: .*nope")


@case("sample: folder without a checkpoint")
def _(tmp, run):
    (tmp / "bare").mkdir()
    return Case(sample(tmp / "bare", tmp), r"no checkpoint in .*bare", keep=[tmp / "bare"])


@case("--resume of a missing folder")
def _(tmp, run):
    return Case(
        ["train", "--resume", str(tmp / "gone"), "--quiet"],
        r"cannot resume: no run folder at .*gone",
        out=tmp / "gone",
    )


@case("--resume of a file")
def _(tmp, run):
    path = text(tmp, "afile", "x")
    return Case(
        ["train", "--resume", str(path), "--quiet"], r"cannot resume: .*afile is a file, not a run folder"
    )


@case("--out is a file")
def _(tmp, run):
    path = text(tmp, "afile", "x")
    return Case(train("ring8", path, "mlp"), r"--out .*afile is a file, not a folder")


@case("--steps negative")
def _(tmp, run):
    return Case(
        [*train("ring8", tmp / "o", "mlp"), "--steps", "-5"], r"train\.steps must be at least 1, got -5"
    )


@case("--batch-size zero")
def _(tmp, run):
    return Case(
        [*train("ring8", tmp / "o", "mlp"), "--batch-size", "0"], r"train\.batch_size must be at least 1"
    )


@case("train.keep_last zero")
def _(tmp, run):
    return Case(
        [*train("ring8", tmp / "o", "mlp"), "--set", "train.keep_last=0"],
        r"train\.keep_last must be at least 1",
    )


# ---- the corpus, run -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ring_template(tmp_path_factory) -> Path:
    """A finished tiny mlp run with checkpoints at steps 1, 2, 3."""
    out = tmp_path_factory.mktemp("template") / "ring"
    args = train("ring8", out, "mlp", "--steps", "3", "--set", "train.ckpt_every=1")
    assert main(args) == 0
    return out


def tree(folder: Path) -> dict[str, bytes]:
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, tmp_path, ring_template, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(ring_template, run)
    c = CASES[name](tmp_path, run)
    before = {p: tree(p) for p in c.keep}
    out = c.out
    if out is None and c.args[0] == "train" and "--out" in c.args:
        out = Path(c.args[c.args.index("--out") + 1])
    existed = out is not None and out.exists()
    capsys.readouterr()
    assert main(c.args) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ganforge: error: ") and "Traceback" not in err
    assert re.search(c.expect, lines[0]), lines[0]
    for folder, content in before.items():
        assert tree(folder) == content, f"{folder} changed"
    if out is not None and not existed:
        assert not out.exists(), f"{out} was created"
    assert not (tmp_path / "pwned").exists()
    assert not (tmp_path / "s.npy").exists()


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 40


# ---- odd but fine -----------------------------------------------------------------------------


def test_mixed_modes_and_sizes_load(tmp_path, capsys) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    rgb = noise(12)
    Image.fromarray(rgb).save(folder / "rgb.png")
    Image.fromarray(noise(12, 1)).save(folder / "grey.png")
    Image.fromarray(np.dstack([rgb, np.full((12, 12), 128, np.uint8)])).save(folder / "rgba.png")
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    Image.fromarray(noise(12, 1).astype(np.uint16) * 257).save(folder / "sixteen.png")
    Image.fromarray(noise(20)).save(folder / "bigger.jpg")
    Image.fromarray(noise(9)[:, :7]).save(folder / "narrow.webp", lossless=True)
    out = tmp_path / "o"
    assert main(train(folder, out)) == 0
    assert (out / "checkpoints" / "manifest.json").is_file()
    notes = json.loads((out / "run.json").read_text())["data_notes"]
    assert any("greyscale images converted to RGB" in n for n in notes)


def test_a_few_bad_images_among_good_ones_are_skipped(tmp_path, capsys) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(10):
        Image.fromarray(noise(8, seed=i)).save(folder / f"good{i}.png")
    (folder / "zero.png").write_bytes(b"")
    (folder / "bad.jpg").write_bytes(jpeg_bytes(noise(16))[:100])
    out = tmp_path / "o"
    assert main(train(folder, out)) == 0
    err = capsys.readouterr().err
    warning = [line for line in err.splitlines() if "warning" in line]
    assert len(warning) == 1, err
    assert warning[0].startswith("ganforge: warning: skipped 2 unreadable image files: ")
    assert (
        f"{folder / 'bad.jpg'} (truncated)" in warning[0]
        and f"{folder / 'zero.png'} (empty file)" in warning[0]
    )
    notes = json.loads((out / "run.json").read_text())["data_notes"]
    assert any(n.startswith("skipped 2 unreadable image files") for n in notes)


def test_empty_config_file_is_fine(tmp_path) -> None:
    path = text(tmp_path, "empty.yaml", "")
    assert main([*train("ring8", tmp_path / "o", "mlp"), "--config", str(path)]) == 0
    path = text(tmp_path, "comments.yaml", "# nothing here\n")
    assert main([*train("ring8", tmp_path / "o2", "mlp"), "--config", str(path)]) == 0


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_image_is_skipped(tmp_path, capsys) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(noise(8, seed=i)).save(folder / f"good{i}.png")
    Image.fromarray(noise(8)).save(folder / "locked.png")
    (folder / "locked.png").chmod(0)
    assert main(train(folder, tmp_path / "o")) == 0
    assert "locked.png (permission denied)" in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_config_is_one_line(tmp_path, capsys) -> None:
    path = text(tmp_path, "c.yaml", "train:\n  steps: 2\n")
    path.chmod(0)
    assert main([*train("ring8", tmp_path / "o", "mlp"), "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "permission denied" in err.lower()


# ---- property-based: config parsing and transforms ---------------------------------------------

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ganforge.config import Config, DataConfig, TrainConfig, coerce, from_dict, overrides_to_dict  # noqa: E402
from ganforge.data import resize_images  # noqa: E402
from ganforge.errors import ConfigError  # noqa: E402
from ganforge.report import save_grid, to_uint8_grid  # noqa: E402

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
HINTS = [int, float, str, bool, int | None, tuple[int, ...], list[str], DataConfig]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.binary(max_size=8),
)
values = st.recursive(
    scalars,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=10,
)


@FAST
@given(value=values, hint=st.sampled_from(HINTS))
def test_coerce_raises_only_config_errors(value, hint) -> None:
    try:
        coerce(value, hint, "key")
    except ConfigError:
        pass


@FAST
@given(
    data=st.dictionaries(st.text(max_size=12), values, max_size=5),
    cls=st.sampled_from([Config, TrainConfig, DataConfig]),
)
def test_from_dict_raises_only_config_errors(data, cls) -> None:
    try:
        from_dict(cls, data)
    except ConfigError:
        pass


@FAST
@given(overrides=st.lists(st.text(max_size=30), max_size=4))
def test_overrides_raise_only_config_errors(overrides) -> None:
    try:
        nested = overrides_to_dict(overrides)
        from_dict(Config, nested)
    except ConfigError:
        pass


@FAST
@given(
    key=st.sampled_from(["train.steps", "train.g_lr", "data.name", "stab.mbstd", "train.lr_decay"]),
    value=st.text(max_size=20),
)
def test_typed_override_strings(key, value) -> None:
    """Any string as a `--set` value: a valid config or a ConfigError, never anything else."""
    try:
        cfg = from_dict(Config, overrides_to_dict([f"{key}={value}"]))
    except ConfigError:
        return
    section, name = key.split(".")
    assert isinstance(getattr(getattr(cfg, section), name), type(getattr(getattr(Config(), section), name)))


@FAST
@given(
    n=st.integers(1, 3),
    c=st.sampled_from([1, 3]),
    h=st.integers(1, 20),
    w=st.integers(1, 20),
    size=st.integers(1, 24),
    seed=st.integers(0, 2**16),
)
def test_resize_images_shape_and_range(n, c, h, w, size, seed) -> None:
    x = torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    y = resize_images(x, size)
    if h != size or w != size:
        assert y.shape == (n, c, size, size)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    assert y.min() >= -1 and y.max() <= 1


@FAST
@given(
    n=st.integers(1, 10),
    c=st.sampled_from([1, 3]),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    nrow=st.integers(1, 5),
    padding=st.integers(0, 3),
)
def test_to_uint8_grid_shape_and_tiles(n, c, h, w, nrow, padding) -> None:
    x = (
        torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(n * h + w)) * 2 - 0.5
    )  # some out of [0, 1]
    g = to_uint8_grid(x, nrow, padding)
    rows = -(-n // nrow)
    assert g.dtype == np.uint8 and g.shape == (
        rows * (h + padding) + padding,
        nrow * (w + padding) + padding,
        c,
    )
    last = n - 1
    top, left = padding + (last // nrow) * (h + padding), padding + (last % nrow) * (w + padding)
    expected = (x[last].clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(g[top : top + h, left : left + w], expected)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 10), c=st.sampled_from([1, 3]), side=st.integers(1, 40), nrow=st.integers(1, 5))
def test_save_grid_image_size_and_mode(tmp_path, n, c, side, nrow) -> None:
    path = tmp_path / "g.png"
    x = torch.rand(n, c, side, side)
    save_grid(x, path, nrow=nrow)
    grid = to_uint8_grid(x, nrow)
    scale = max(1, -(-256 // max(grid.shape[:2])))
    with Image.open(path) as im:
        assert im.size == (grid.shape[1] * scale, grid.shape[0] * scale)
        assert im.mode == ("L" if c == 1 else "RGB")


# ---- nothing unpickles user files ---------------------------------------------------------------


def unsafe_calls(source: str) -> list[str]:
    """pickle.load(s) / Unpickler, torch.load without weights_only=True, np.load without
    allow_pickle=False, yaml.load / unsafe_load / full_load (yaml.safe_load is fine)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        kw = {k.arg: ast.unparse(k.value) for k in node.keywords if k.arg}
        if re.fullmatch(
            r"(c?pickle|_?pickle)\.(loads?|Unpickler)|dill\.loads?|joblib\.load|marshal\.loads?", name
        ):
            found.append(name)
        elif name.endswith("torch.load") and kw.get("weights_only") != "True":
            found.append(name)
        elif re.fullmatch(r"(np|numpy)\.load", name) and kw.get("allow_pickle") != "False":
            found.append(name)
        elif re.fullmatch(r"yaml\.(load|unsafe_load|full_load|load_all|unsafe_load_all)", name):
            found.append(name)
    return found


def test_no_code_path_unpickles_user_files() -> None:
    offenders = {}
    pickle_users = []
    for path in sorted(SRC.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        rel = str(path.relative_to(SRC))
        if found := unsafe_calls(source):
            offenders[rel] = found
        if re.search(r"^\s*(import pickle|from pickle import)", source, re.MULTILINE):
            pickle_users.append(rel)
    assert not offenders
    # The one allowed use: the restricted unpickler of the CIFAR loader, which overrides find_class.
    assert pickle_users == ["data/arrays.py"]
    tree_ = ast.parse((SRC / "data" / "arrays.py").read_text(encoding="utf-8"))
    unpicklers = [
        n
        for n in ast.walk(tree_)
        if isinstance(n, ast.ClassDef) and any(ast.unparse(b) == "pickle.Unpickler" for b in n.bases)
    ]
    assert [c.name for c in unpicklers] == ["_ArrayUnpickler"]
    assert any(isinstance(f, ast.FunctionDef) and f.name == "find_class" for f in unpicklers[0].body)


def test_the_scan_finds_what_it_should() -> None:
    bad = "import pickle, torch, numpy as np, yaml\npickle.load(f)\ntorch.load(p)\nnp.load(p)\nyaml.load(s)\n"
    assert unsafe_calls(bad) == ["pickle.load", "torch.load", "np.load", "yaml.load"]
    good = "torch.load(p, weights_only=True)\nnp.load(p, allow_pickle=False)\nyaml.safe_load(s)\n"
    assert unsafe_calls(good) == []
