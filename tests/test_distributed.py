"""Distributed training under torchrun: two CPU processes on the gloo backend (docs/distributed.md).

Every launch costs seconds (torchrun and two interpreters importing torch), so the runs are tiny
(MLP on ring8, global batch 16, 12 steps) and the uninterrupted two-process run is shared. Runs
that need to see inside each rank start this module as the worker (`python -m
tests.test_distributed '<json>'`, see :func:`worker`): it trains through the Python API and writes
each rank's final weights next to the run folder. Weights of a 2-process run equal those of a
1-process run with the same global batch to TOL (sums in another order); a run resumed after a
killed worker equals the uninterrupted 2-process run exactly.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import ganforge
from ganforge.engine import Callback
from ganforge.engine.checkpoint import prefixed
from ganforge.engine.distributed import Distributed, ShardedDraws
from ganforge.errors import ConfigError
from ganforge.families.base import Family

from .conftest import tiny_overrides

ROOT = Path(__file__).resolve().parents[1]
STEPS = 12
OVERRIDES = [*tiny_overrides("mlp"), "data.n_points=256", "train.ckpt_every=4"]
TOL = 1e-6  # measured: at most 6e-8 apart after 20 steps
EXACT = ("rng/", "data/")  # the shared generators and data position: equal on every rank


def torchrun(*args: str, restarts: int = 0) -> subprocess.Popen:
    """`torchrun --standalone --nproc-per-node 2 ...` with one thread per process, and a fresh
    rendezvous store for each restart (docs/distributed.md: pytorch/pytorch#135712)."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += [f"--max-restarts={restarts}", *args]
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: `finish` can stop torchrun and its workers
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    """torchrun's output once it exits; on a timeout (or any error) the whole launch is killed, so
    no orphaned worker waits on a collective after the test."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except BaseException:
        for sig in (signal.SIGTERM, signal.SIGKILL):  # SIGTERM first: torchrun then stops its workers
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.communicate(timeout=10)
                break
        raise
    return out


def cli_args(out: Path, batch_size: int = 16) -> list[str]:
    """`-m ganforge train ...` as a user types it."""
    run = ["--data", "ring8", "--model", "mlp", "--steps", str(STEPS), "--batch-size", str(batch_size)]
    sets = [a for s in OVERRIDES for a in ("--set", s)]
    return ["-m", "ganforge", "train", *run, "--out", str(out), "--quiet", *sets]


def spawn_worker(out: Path, restarts: int = 0, **spec: Any) -> subprocess.Popen:
    return torchrun("-m", "tests.test_distributed", json.dumps({"out": str(out), **spec}), restarts=restarts)


def train_alone(out: Path) -> ganforge.GAN:
    return ganforge.train(
        data="ring8", model="mlp", out=out, steps=STEPS, batch_size=16, overrides=OVERRIDES, progress=False
    )


def final_checkpoint(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / f"step_{STEPS:06d}.safetensors"))


def assert_close_states(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Networks, optimiser moments and cached fakes within TOL; generators and data position equal."""
    assert a.keys() == b.keys()
    for key in a:
        if key.startswith(EXACT) or not a[key].is_floating_point():
            assert torch.equal(a[key], b[key]), key
        else:
            torch.testing.assert_close(a[key], b[key], atol=TOL, rtol=0, msg=key)


def records(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]


def rank_dumps(run: Path) -> list[tuple[dict[str, torch.Tensor], dict[str, str]]]:
    """Each rank's final G and D (and its step and attempt), written by :func:`worker`."""
    dumps = []
    for rank in (0, 1):
        path = run.parent / f"{run.name}.rank{rank}.safetensors"
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata()
        dumps.append((load_file(str(path)), meta))
    return dumps


def nan_on_call(call: int) -> Any:
    """A Family.d_loss that returns NaN at its `call`-th call (0-based): one D phase per step."""
    real, calls = Family.d_loss, []

    def d_loss(self, G, D, batch, gen):
        loss, stats = real(self, G, D, batch, gen)
        calls.append(None)
        return (loss * float("nan"), stats) if len(calls) - 1 == call else (loss, stats)

    return d_loss


# ---- the sharding itself: in this process ------------------------------------------------------


def test_sharded_draws_are_the_ranks_rows_of_the_global_draw() -> None:
    def draws(gen: torch.Generator, n: int) -> list[torch.Tensor]:
        return [
            torch.randn(n, 3, generator=gen),
            torch.rand((n, 1, 2), generator=gen),
            torch.randint(0, 5, (n,), generator=gen),
            torch.randn(size=(n, 2), generator=gen),
            torch.randn((), generator=gen),  # 0-d: the same on every rank, as in one process
        ]

    whole_gen = torch.Generator().manual_seed(0)
    whole = draws(whole_gen, 4)
    for rank in (0, 1):
        gen = torch.Generator().manual_seed(0)
        torch.manual_seed(1)
        with ShardedDraws(gen, rank, world=2):
            part = draws(gen, 2)
            other = torch.randn(2)  # the global generator: not split
        for w, p in zip(whole[:4], part[:4]):
            assert torch.equal(w[2 * rank : 2 * rank + 2], p)
        assert torch.equal(whole[4], part[4])
        assert torch.equal(gen.get_state(), whole_gen.get_state())  # the ranks' generators stay in step
        torch.manual_seed(1)
        assert torch.equal(other, torch.randn(2))


def test_a_draw_that_cannot_be_split_is_one_clear_error() -> None:
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ConfigError, match="cannot split randperm"), ShardedDraws(gen, 0, 2):
        torch.randperm(8, generator=gen)


def test_batch_must_split_evenly_over_processes_and_packs() -> None:
    two = Distributed(rank=0, world=2)
    with pytest.raises(
        ConfigError, match=r"train.batch_size \(15\) must be divisible by the number of processes \(2\)"
    ):
        two.check(15, pac=1)
    with pytest.raises(ConfigError, match=r"per-process batch.*= 6, must be a multiple of stab.pac \(4\)"):
        two.check(12, pac=4)
    two.check(16, pac=4)
    batch = {"x": torch.arange(8).view(4, 2), "y": torch.arange(4), "w": torch.ones(3)}
    rows = Distributed(rank=1, world=2).shard_batch(batch)
    assert rows["x"].tolist() == [[4, 5], [6, 7]] and rows["y"].tolist() == [2, 3] and rows["w"].shape == (3,)


def test_one_process_is_untouched() -> None:
    alone = Distributed.from_env()
    assert not alone.enabled and alone.is_main
    batch = {"x": torch.ones(3, 2)}
    loss = torch.tensor(1.5)
    assert alone.shard_batch(batch) is batch and alone.sync_grads(torch.nn.Linear(2, 2), loss) is loss
    assert alone.any(True) and not alone.any(False) and alone.broadcast_int(7) == 7


# ---- two processes under torchrun --------------------------------------------------------------


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> tuple[Path, str]:
    """The uninterrupted 2-process run, launched like a user would: `torchrun -m ganforge train`."""
    out = tmp_path_factory.mktemp("dist") / "run"
    proc = torchrun(*cli_args(out))
    log = finish(proc)
    assert proc.returncode == 0, log
    return out, log


def test_two_processes_match_one_with_the_same_global_batch(two_ranks, tmp_path) -> None:
    run, log = two_ranks
    alone = tmp_path / "alone"
    train_alone(alone)
    assert_close_states(final_checkpoint(run), final_checkpoint(alone))
    # Stats are averaged over ranks: the logged losses are the global batch's.
    for r2, r1 in zip(records(run), records(alone), strict=True):
        assert r2["step"] == r1["step"]
        for key in ("Loss/D", "Loss/G", "D/real", "D/fake", "Grad/D", "Grad/G"):
            assert r2[key] == pytest.approx(r1[key], abs=1e-5), key
    # Rank 0 alone wrote, the same files as one process; one summary line, no traceback.
    files = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    assert files == sorted(str(p.relative_to(alone)) for p in alone.rglob("*"))
    assert log.count("run folder:") == 1 and "Traceback" not in log


def test_a_nan_on_one_rank_skips_the_step_on_every_rank(tmp_path, monkeypatch) -> None:
    run = tmp_path / "nan"
    proc = spawn_worker(run, nan_rank=1, nan_call=4)
    log = finish(proc)
    assert proc.returncode == 0, log
    (g0, m0), (g1, m1) = rank_dumps(run)
    assert m0["step"] == m1["step"] == str(STEPS)
    assert all(torch.equal(g0[k], g1[k]) for k in g0)  # the ranks never diverged
    assert [r["Guard/skipped"] for r in records(run)] == [0.0] * 4 + [1.0] + [0.0] * (STEPS - 5)
    monkeypatch.setattr(Family, "d_loss", nan_on_call(4))  # the same NaN in one process
    alone = tmp_path / "alone"
    train_alone(alone)
    assert_close_states(final_checkpoint(run), final_checkpoint(alone))


def test_batch_not_divisible_by_the_processes_is_one_line(tmp_path) -> None:
    out = tmp_path / "r"
    proc = torchrun(*cli_args(out, batch_size=15))
    log = finish(proc)
    assert proc.returncode != 0
    lines = [ln for ln in log.splitlines() if ln.startswith("ganforge: error:")]
    assert lines and set(lines) == {
        "ganforge: error: train.batch_size (15) must be divisible by the number of processes (2); "
        "each trains on an equal share of the global batch"
    }
    assert "exitcode  : 2" in log and "[rank" not in log  # each worker exited 2, no traceback
    assert not out.exists()


@pytest.mark.slow
def test_a_killed_worker_restarts_and_every_rank_resumes_the_same_step(two_ranks, tmp_path) -> None:
    """kill -9 rank 1 after the first checkpoint; torchrun restarts both workers, which resume
    (`--resume auto`) from rank 0's newest checkpoint and end exactly where the uninterrupted run did."""
    run = tmp_path / "killed"
    proc = spawn_worker(run, restarts=1, pace=0.1)  # 0.1 s a step before the restart: time to kill
    pid_file = run.parent / f"{run.name}.rank1.attempt0.pid"
    deadline = time.monotonic() + 240
    while newest_step(run) < 4 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert 4 <= newest_step(run) < STEPS, finish(proc)
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    log = finish(proc)
    assert proc.returncode == 0, log
    (g0, m0), (g1, m1) = rank_dumps(run)
    assert m0["attempt"] == m1["attempt"] == "1"  # both ranks are the restarted ones
    assert m0["step"] == m1["step"] == str(STEPS)
    assert all(torch.equal(g0[k], g1[k]) for k in g0)
    reference, ckpt = final_checkpoint(two_ranks[0]), final_checkpoint(run)
    assert all(torch.equal(ckpt[k], reference[k]) for k in reference)  # bitwise the uninterrupted run
    assert [r["step"] for r in records(run)] == list(range(1, STEPS + 1))


def newest_step(run: Path) -> int:
    try:
        return json.loads((run / "checkpoints" / "manifest.json").read_text())["checkpoints"][-1]["step"]
    except (OSError, ValueError, KeyError, IndexError):
        return -1


# ---- the worker: one rank of a torchrun launch ---------------------------------------------------


class Pace(Callback):
    """Sleeps after each step, so that a test can kill a worker mid-run (the maths is unchanged)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_step_end(self, trainer: Any) -> None:
        time.sleep(self.seconds)


def worker(spec: dict[str, Any]) -> None:
    """Train one rank through the API (`resume="auto"`, as after a torchrun restart), with the test's
    faults: `nan_rank`/`nan_call` make that rank's D loss NaN once; `pace` slows the first attempt.
    Writes this rank's pid first and its final G and D, step and attempt last, beside the run folder."""
    torch.set_num_threads(1)
    rank, attempt = os.environ["RANK"], os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    out = Path(spec["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    (out.parent / f"{out.name}.rank{rank}.attempt{attempt}.pid").write_text(str(os.getpid()))
    if str(spec.get("nan_rank")) == rank:
        Family.d_loss = nan_on_call(spec["nan_call"])
    pace = [Pace(spec["pace"])] if spec.get("pace") and attempt == "0" else []
    gan = ganforge.train(
        data="ring8",
        model="mlp",
        out=out,
        steps=STEPS,
        batch_size=16,
        overrides=OVERRIDES,
        resume="auto",
        progress=False,
        callbacks=pace,
    )
    tensors = {**prefixed("G", gan.trainer.G.state_dict()), **prefixed("D", gan.trainer.D.state_dict())}
    meta = {"step": str(gan.step), "attempt": attempt}
    save_file(tensors, str(out.parent / f"{out.name}.rank{rank}.safetensors"), metadata=meta)


if __name__ == "__main__":
    worker(json.loads(sys.argv[1]))
