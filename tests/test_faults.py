"""Fault injection: kill -9 and resume, interrupted and failed checkpoint writes, SIGTERM, and the
divergence guard (NaN/inf steps skipped, rollback with lower learning rates, a clear stop)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

import ganforge
from ganforge.cli import main
from ganforge.engine import checkpoint as ckpt_mod
from ganforge.engine.guard import GuardWarning, nonfinite_keys
from ganforge.families.base import Family

from .conftest import tiny_overrides

ROOT = Path(__file__).resolve().parents[1]


def train_args(out: Path, steps: int, *extra: str) -> list[str]:
    sets = [*tiny_overrides("mlp"), "data.n_points=256", "train.ckpt_every=1", *extra]
    return [
        "train",
        "--data",
        "ring8",
        "--model",
        "mlp",
        "--steps",
        str(steps),
        "--batch-size",
        "16",
        "--out",
        str(out),
        "--quiet",
        "--resume",
        "auto",
        *[a for s in sets for a in ("--set", s)],
    ]


def spawn(out: Path, steps: int, *extra: str) -> subprocess.Popen:
    """`python -m ganforge train ...` in a child process, one thread (as the tests' own runs)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "ganforge", *train_args(out, steps, *extra)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def manifest(run: Path) -> list[dict]:
    return json.loads((run / "checkpoints" / "manifest.json").read_text())["checkpoints"]


def newest(run: Path) -> Path:
    return run / "checkpoints" / manifest(run)[-1]["file"]


def newest_step(run: Path) -> int:
    try:
        return manifest(run)[-1]["step"]
    except (OSError, ValueError, KeyError, IndexError):
        return -1


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def leftovers(run: Path) -> list[Path]:
    return [p for p in run.rglob("*") if ".tmp" in p.name]


# ---- kill -9 at random points, then resume: bitwise the uninterrupted run ----------------------


def kill_and_resume(tmp_path: Path, n_kills: int, steps: int, seed: int) -> None:
    """Start, kill -9, start again (`--resume auto`) ... then finish in this process (a child
    process costs seconds of imports) and compare with an uninterrupted run."""
    rng = random.Random(seed)  # fixed kill schedule: which checkpoint to pass, how long after
    targets = sorted(rng.sample(range(1, steps - 2), n_kills))
    out = tmp_path / "killed"
    for target in targets:
        proc = spawn(out, steps)
        deadline = time.monotonic() + 120
        while newest_step(out) < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.03))  # about one step: lands anywhere, mid-write included
        proc.kill()  # SIGKILL: no handler, no cleanup
        proc.wait()
        assert proc.returncode in (-signal.SIGKILL, 0), proc.stderr.read()
        proc.stderr.close()
    assert 0 <= newest_step(out) < steps  # killed before the end
    assert main(train_args(out, steps)) == 0
    assert main(train_args(tmp_path / "reference", steps)) == 0
    assert_same_tensors(load_file(str(newest(out))), load_file(str(newest(tmp_path / "reference"))))
    assert newest_step(out) == steps and len(manifest(out)) <= 3
    assert not leftovers(out / "checkpoints")
    logged = [json.loads(line)["step"] for line in (out / "stats.jsonl").read_text().splitlines()]
    assert logged == list(range(1, steps + 1))  # lines of lost steps were dropped on resume


def test_kill_9_and_resume_is_bitwise_identical(tmp_path: Path) -> None:
    kill_and_resume(tmp_path, n_kills=2, steps=24, seed=0)


@pytest.mark.slow
def test_many_kills_and_resumes_are_bitwise_identical(tmp_path: Path) -> None:
    kill_and_resume(tmp_path, n_kills=12, steps=60, seed=1)


def test_resume_auto_restarts_a_run_killed_before_its_first_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "r"
    assert main(train_args(out, 3)) == 0
    for p in (out / "checkpoints").iterdir():
        p.unlink()  # as if killed after writing config.yaml and run.json, before a checkpoint
    (out / "checkpoints" / ".step_000001.safetensors.x.tmp.safetensors").write_bytes(b"half")
    (out / "checkpoints" / ".tmpAb12Cd").write_bytes(b"half")  # the safetensors writer's own
    assert main(train_args(out, 3)) == 0
    assert newest_step(out) == 3 and not leftovers(out)


# ---- SIGTERM: a checkpoint, then exit 0 ---------------------------------------------------------


def test_sigterm_stops_at_a_step_boundary_with_a_checkpoint(tmp_path: Path, monkeypatch, capsys) -> None:
    """The CLI's handler, in this process (fast); the child-process version below is marked slow."""
    from ganforge.engine import Callback

    class Terminate(Callback):
        def on_step_end(self, trainer):
            if trainer.step == 3:
                os.kill(os.getpid(), signal.SIGTERM)

    real_train = ganforge.api.train
    monkeypatch.setattr(
        ganforge.api, "train", lambda **kw: real_train(**{**kw, "callbacks": [*kw["callbacks"], Terminate()]})
    )
    previous = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "r"
    assert main(train_args(out, 1000, "train.ckpt_every=0")) == 0
    assert signal.getsignal(signal.SIGTERM) == previous  # the handler is removed again
    err = capsys.readouterr().err
    assert "SIGTERM received; stopping after the current step with a checkpoint" in err
    assert "(step 3;" in err and newest_step(out) == 3 and ganforge.load(out).step == 3


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "r"
    proc = spawn(out, 100_000, "train.ckpt_every=0")
    deadline = time.monotonic() + 120
    stats = out / "stats.jsonl"
    while proc.poll() is None and time.monotonic() < deadline:
        if stats.is_file() and len(stats.read_text().splitlines()) >= 3:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "SIGTERM received" in err and "Traceback" not in err
    step = newest_step(out)
    assert 3 <= step < 100_000 and f"(step {step};" in err
    assert json.loads(stats.read_text().splitlines()[-1])["step"] == step
    assert not leftovers(out)
    assert ganforge.load(out).step == step


# ---- checkpoint writes that fail ---------------------------------------------------------------


@pytest.fixture
def run4(tmp_path: Path) -> Path:
    """A finished 4-step run with checkpoints at steps 2 and 4."""
    out = tmp_path / "r"
    assert main(train_args(out, 4, "train.ckpt_every=2")) == 0
    assert [e["step"] for e in manifest(out)] == [2, 4]
    return out


def snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in (run / "checkpoints").iterdir()}


def half_write_then(exc: BaseException):
    """A safetensors writer that writes part of the file, then fails."""

    def save_file(tensors, path, metadata=None):
        Path(path).write_bytes(b"\x00" * 1000)
        raise exc

    return save_file


@pytest.mark.parametrize(
    "exc", [RuntimeError("writer crashed"), KeyboardInterrupt()], ids=["exception", "interrupt"]
)
def test_interrupted_checkpoint_write_keeps_the_previous_one(run4, monkeypatch, exc) -> None:
    before = snapshot(run4)
    monkeypatch.setattr(ckpt_mod, "save_file", half_write_then(exc))
    with pytest.raises(type(exc)):
        ganforge.train(out=run4, steps=6, resume=True, progress=False)
    monkeypatch.undo()
    assert snapshot(run4) == before and not leftovers(run4)
    assert ganforge.load(run4).step == 4


def test_failed_rename_keeps_the_previous_checkpoint(run4, monkeypatch) -> None:
    before = snapshot(run4)
    real_replace = os.replace

    def replace(src, dst):
        if "step_" in str(dst):
            raise OSError(errno.EIO, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt_mod.os, "replace", replace)
    with pytest.raises(OSError, match="Input/output"):
        ganforge.train(out=run4, steps=6, resume=True, progress=False)
    monkeypatch.undo()
    assert snapshot(run4) == before and not leftovers(run4)
    assert ganforge.train(out=run4, steps=6, resume=True, progress=False).step == 6


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"),
    ],
    ids=["oserror", "safetensors"],
)
def test_full_disk_is_one_line_and_loses_nothing(run4, monkeypatch, capsys, exc) -> None:
    before = snapshot(run4)
    monkeypatch.setattr(ckpt_mod, "save_file", half_write_then(exc))
    assert main(train_args(run4, 6, "train.ckpt_every=2")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("ganforge: error: cannot write") and "no space left on device" in err
    assert "step_000006.safetensors" in err
    monkeypatch.undo()
    assert snapshot(run4) == before and not leftovers(run4)
    assert main(train_args(run4, 6, "train.ckpt_every=2")) == 0  # space freed: it continues


def test_full_disk_while_appending_stats_is_one_line(run4, monkeypatch, capsys) -> None:
    from ganforge.engine.run import RunWriter

    def on_log(self, trainer, record):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.folder.stats))

    monkeypatch.setattr(RunWriter, "on_log", on_log)
    assert main(train_args(run4, 6, "train.ckpt_every=2")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err == f"ganforge: error: cannot write {run4 / 'stats.jsonl'}: no space left on device"


# ---- choosing the checkpoint to resume from ---------------------------------------------------


def test_corrupt_newest_checkpoint_falls_back_and_says_so(run4, capsys) -> None:
    newest(run4).write_bytes(newest(run4).read_bytes()[:-7] + b"garbage")  # same size class, bad sum
    assert main(["sample", str(run4), "--n", "4", "--out", str(run4.parent / "s.npy")]) == 0
    err = capsys.readouterr().err
    warning = [line for line in err.splitlines() if "warning" in line]
    assert len(warning) == 1 and "step_000004.safetensors: checksum mismatch" in warning[0]
    assert "falling back to" in warning[0] and "step_000002.safetensors (step 2)" in warning[0]
    assert main(train_args(run4, 6, "train.ckpt_every=2")) == 0  # resumes from step 2
    assert "falling back" in capsys.readouterr().err
    assert [e["step"] for e in manifest(run4)] == [2, 4, 6]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the corrupt file was replaced: no warning now
        assert ganforge.load(run4).step == 6


def test_corrupt_manifest_still_loads_with_a_warning(run4, capsys) -> None:
    (run4 / "checkpoints" / "manifest.json").write_text('{"checkpoints": [{"file": 3}]}')
    assert main(["sample", str(run4), "--n", "4", "--out", str(run4.parent / "s.npy")]) == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warning) == 1 and "manifest.json is corrupt" in warning[0] and "(step 4)" in warning[0]


def test_rotation_after_a_fallback_keeps_the_new_checkpoint(run4) -> None:
    newest(run4).write_bytes(b"corrupt")
    with pytest.warns(UserWarning, match="falling back"):
        ganforge.train(out=run4, steps=6, resume=True, progress=False, overrides=["train.keep_last=1"])
    assert [e["step"] for e in manifest(run4)] == [6]
    assert sorted(p.name for p in (run4 / "checkpoints").iterdir()) == [
        "manifest.json",
        "step_000006.safetensors",
    ]
    assert ganforge.load(run4).step == 6


def test_rotation_keeps_the_last_k(tmp_path: Path) -> None:
    out = tmp_path / "r"
    assert main(train_args(out, 7, "train.ckpt_every=1", "train.keep_last=2")) == 0
    assert [e["step"] for e in manifest(out)] == [6, 7]
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["manifest.json", "step_000006.safetensors", "step_000007.safetensors"]
    for entry in manifest(out):
        assert ckpt_mod.sha256_file(out / "checkpoints" / entry["file"]) == entry["sha256"]


def test_legacy_run_folder_with_one_checkpoint_file(run4, tmp_path) -> None:
    """Run folders from before checkpoints/: a single RUN/checkpoint.safetensors."""
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "checkpoint.safetensors").write_bytes(newest(run4).read_bytes())
    assert ganforge.load(legacy).step == 4
    gan = ganforge.train(out=legacy, steps=6, resume=True, progress=False)
    assert gan.step == 6 and newest_step(legacy) == 6
    assert (legacy / "checkpoint.safetensors").is_file()  # left alone


def test_checkpoint_holds_every_rng_state(run4) -> None:
    tensors = load_file(str(newest(run4)))
    for key in ("rng/noise", "rng/python", "rng/numpy", "rng/torch", "data/rng", "data/perm", "data/pos"):
        assert key in tensors, key
    assert any(k.startswith("opt_D/state/") for k in tensors) and any(k.startswith("G_ema/") for k in tensors)


def test_global_rngs_resume_exactly(tmp_path: Path, monkeypatch) -> None:
    """User code drawing from Python's, NumPy's and torch's global RNGs resumes exactly too."""
    real = Family.d_loss

    def d_loss(self, G, D, batch, gen):
        jitter = (
            0.01 * torch.randn(batch["x"].shape, device=batch["x"].device)
            + 0.01 * np.random.randn()
            + 0.01 * random.random()
        )
        return real(self, G, D, {**batch, "x": batch["x"] + jitter.float()}, gen)

    monkeypatch.setattr(Family, "d_loss", d_loss)
    kw = {"data": "ring8", "model": "mlp", "progress": False, "batch_size": 16}
    sets = [*tiny_overrides("mlp"), "data.n_points=256"]
    ganforge.train(out=tmp_path / "full", steps=6, overrides=sets, **kw)
    ganforge.train(out=tmp_path / "split", steps=3, overrides=sets, **kw)
    random.random(), np.random.rand(), torch.rand(1)  # what else the process does in between
    ganforge.train(out=tmp_path / "split", steps=6, resume=True, progress=False)
    assert_same_tensors(load_file(str(newest(tmp_path / "full"))), load_file(str(newest(tmp_path / "split"))))


# ---- the divergence guard ---------------------------------------------------------------------


def nan_d_loss(monkeypatch, bad) -> list[int]:
    """Make the D loss NaN on the calls for which `bad(call_index)` is true."""
    real, calls = Family.d_loss, []

    def d_loss(self, G, D, batch, gen):
        loss, stats = real(self, G, D, batch, gen)
        calls.append(len(calls))
        return (loss * float("nan"), stats) if bad(calls[-1]) else (loss, stats)

    monkeypatch.setattr(Family, "d_loss", d_loss)
    return calls


def test_nan_steps_are_skipped_and_training_finishes(tmp_path, monkeypatch) -> None:
    nan_d_loss(monkeypatch, lambda i: i % 3 == 1)
    out = tmp_path / "r"
    with no_guard_warning():
        gan = ganforge.train(
            data="ring8",
            model="mlp",
            out=out,
            steps=9,
            batch_size=16,
            progress=False,
            overrides=[*tiny_overrides("mlp"), "data.n_points=256", "train.ckpt_every=3"],
        )
    assert gan.step == 9
    records = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    assert [r["Guard/skipped"] for r in records] == [0.0, 1.0, 0.0] * 3
    for path in (out / "checkpoints").glob("step_*.safetensors"):
        assert not nonfinite_keys(load_file(str(path)))


@contextlib.contextmanager
def no_guard_warning():
    """Fails if a GuardWarning (a rollback, a refused checkpoint) is raised inside."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    assert not [w for w in caught if issubclass(w.category, GuardWarning)]


def test_a_skipped_step_changes_nothing(monkeypatch) -> None:
    from .test_engine import make_trainer

    tr = make_trainer(["train.ema_decay=0"])
    tr.train_step()
    d_before = {k: v.clone() for k, v in tr.D.state_dict().items()}
    adam_before = {k: v.clone() for k, v in tr.opt_D.state[next(tr.D.parameters())].items()}
    g_before = [p.clone() for p in tr.G.parameters()]
    nan_d_loss(monkeypatch, lambda i: True)
    stats = tr.train_step()
    assert stats["Guard/skipped"].item() == 1.0
    assert all(torch.equal(v, tr.D.state_dict()[k]) for k, v in d_before.items())
    adam_after = tr.opt_D.state[next(tr.D.parameters())]
    assert all(torch.equal(v, adam_after[k]) for k, v in adam_before.items())  # moments and step count
    assert not all(torch.equal(a, b) for a, b in zip(g_before, tr.G.parameters()))


def test_persistent_nan_rolls_back_then_stops_clearly(tmp_path, monkeypatch, capsys) -> None:
    nan_d_loss(monkeypatch, lambda i: i >= 5)  # from the 6th step on, for ever
    out = tmp_path / "r"
    args = train_args(out, 30, "train.ckpt_every=2", "train.max_bad_steps=3", "train.max_rollbacks=2")
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    rollbacks = [ln for ln in lines if "rolled back" in ln]
    assert len(rollbacks) == 2 and all(ln.startswith("ganforge: warning: ") for ln in rollbacks)
    # Steps 6, 7, 8 are bad (the checkpoint due at 6 waits for a clean step): back to 4, twice.
    assert "step 8: 3 consecutive steps" in rollbacks[0]
    assert "rolled back to step 4 with learning rates x0.5" in rollbacks[0]
    assert "step 7: 3 consecutive" in rollbacks[1] and "x0.25 (rollback 2 of at most 2)" in rollbacks[1]
    assert lines[-1].startswith("ganforge: error: training diverged at step 7: 3 consecutive steps")
    assert "; try " in lines[-1] and "Traceback" not in "\n".join(lines)
    for path in (out / "checkpoints").glob("step_*.safetensors"):
        assert not nonfinite_keys(load_file(str(path)))
    assert newest_step(out) == 4


def test_absurd_learning_rate_stops_clearly(tmp_path, capsys) -> None:
    out = tmp_path / "r"
    args = train_args(out, 200, "train.g_lr=1e30", "train.d_lr=1e30", "train.max_bad_steps=2")
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ganforge: error: training diverged at step")
    assert sum("rolled back" in line for line in err) == 3
    for path in (out / "checkpoints").glob("step_*.safetensors"):
        assert not nonfinite_keys(load_file(str(path)))


def test_a_nan_state_is_never_saved(tmp_path, monkeypatch) -> None:
    """A NaN that no loss sees (here in the EMA generator) is refused at checkpoint time and
    rolled back."""
    from ganforge.engine import Callback

    class Poison(Callback):
        def on_step_end(self, trainer):
            if trainer.step == 3 and trainer.guard.rollbacks == 0:
                with torch.no_grad():
                    next(trainer.G_ema.parameters()).fill_(float("nan"))

    # The user callback runs after the run writer: poison at step 3, refused at step 4's checkpoint.
    out = tmp_path / "r"
    with pytest.warns(GuardWarning) as record:
        gan = ganforge.train(
            data="ring8",
            model="mlp",
            out=out,
            steps=6,
            batch_size=16,
            progress=False,
            overrides=[*tiny_overrides("mlp"), "data.n_points=256", "train.ckpt_every=1"],
            callbacks=[Poison()],
        )
    messages = [str(w.message) for w in record]
    assert any("not saving a checkpoint: NaN/inf in the training state (G_ema/" in m for m in messages)
    assert any("rolled back to step 3" in m for m in messages)
    assert gan.step == 6 and not nonfinite_keys(gan.trainer.state()[0])
    for path in (out / "checkpoints").glob("step_*.safetensors"):
        assert not nonfinite_keys(load_file(str(path)))


@pytest.mark.parametrize("fused", [False, True])
def test_guard_skips_exactly_the_non_finite_steps(fused) -> None:
    """Guard.step steps the optimiser iff the loss and the gradient norm are both finite: NaN or
    +-inf in either (and inf - inf) is skipped, large finite values are not; with the fused Adam
    (found_inf on the device) and with the plain one (host check)."""
    from ganforge.config import TrainConfig
    from ganforge.engine.guard import Guard

    inf, nan = float("inf"), float("nan")
    cases = [
        (1.0, 2.0, False),
        (1e30, 1e30, False),
        (nan, 1.0, True),
        (1.0, nan, True),
        (inf, 1.0, True),
        (1.0, -inf, True),
        (-inf, inf, True),
    ]
    guard = Guard(TrainConfig())
    for loss, norm, bad in cases:
        p = torch.nn.Parameter(torch.ones(3))
        p.grad = torch.ones(3)
        opt = torch.optim.Adam([p], lr=0.1, fused=fused)
        skipped = guard.step(opt, torch.tensor(loss), torch.tensor(norm))
        assert skipped.item() == float(bad), (loss, norm)
        assert torch.equal(p.detach(), torch.ones(3)) == bad, (loss, norm)  # stepped iff finite
