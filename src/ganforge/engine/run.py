"""The run folder: everything one `train` writes, and the callbacks that write it.

RUN/
  config.yaml              resolved config (what was actually trained)
  run.json                 ganforge/torch versions, data spec, dataset notes
  checkpoints/             the last `train.keep_last` full training states (safetensors + JSON
    step_XXXXXX.safetensors  metadata, no pickle) and manifest.json with their steps and sha256;
    manifest.json            resume and `load` take the newest that verifies (engine.checkpoint)
  stats.jsonl              one JSON line per `log_every` steps
  samples/step_XXXXXX.png  grids (or scatters, for 2-D data) from one fixed noise batch
  plots/training.png       losses, D outputs and gradient norms at the end

Under torchrun only rank 0 writes; the other ranks learn from it whether each checkpoint was
written, so that every rank can roll back to it (:mod:`.distributed`).
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import torch

from .. import __version__
from ..config import save_file
from ..errors import GanforgeError
from ..report import plot_training, save_grid, save_points
from .callbacks import Callback
from .checkpoint import CheckpointStore, atomic_write
from .guard import nonfinite_keys

if TYPE_CHECKING:
    from .trainer import Trainer

SAVED, REFUSED, FAILED = 0, 1, 2  # outcomes of a checkpoint write, sent from rank 0 to the others


class RunFolder:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.config = self.root / "config.yaml"
        self.info = self.root / "run.json"
        self.checkpoints = CheckpointStore(
            self.root / "checkpoints", legacy=self.root / "checkpoint.safetensors"
        )
        self.stats = self.root / "stats.jsonl"
        self.samples = self.root / "samples"
        self.plots = self.root / "plots"

    def has_checkpoint(self) -> bool:
        return self.checkpoints.exists()

    def is_empty(self) -> bool:
        return not self.root.exists() or (self.root.is_dir() and not any(self.root.iterdir()))

    def never_checkpointed(self) -> bool:
        """A run folder that a run killed before its first checkpoint left behind."""
        written = self.config.is_file() or self.info.is_file()  # the first files a run writes
        return self.root.is_dir() and written and not self.has_checkpoint()

    def write_config(self, trainer: Trainer, notes: list[str], data: dict[str, Any] | None = None) -> None:
        """config.yaml and run.json; `data` is the dataset's fingerprint (:func:`data_fingerprint`)."""
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write(self.config, lambda tmp: save_file(trainer.cfg, tmp))
        info = {
            "ganforge": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "device": str(trainer.device),
            "spec": trainer.spec.to_dict(),
            "data_notes": notes,
            "data": data,
        }
        atomic_write(
            self.info, lambda tmp: Path(tmp).write_text(json.dumps(info, indent=2), encoding="utf-8")
        )

    def data_fingerprint(self) -> dict[str, Any] | None:
        """The fingerprint of the data the run was started (or last resumed) on, if recorded."""
        try:
            return json.loads(self.info.read_text(encoding="utf-8")).get("data")
        except (OSError, ValueError, AttributeError):
            return None

    def truncate_stats(self, step: int) -> None:
        """Drop stats lines past `step` (written after the last checkpoint of a killed run)."""
        if not self.stats.is_file():
            return
        keep = [
            line
            for line in self.stats.read_text(encoding="utf-8", errors="replace").splitlines()
            if _step_of_line(line) <= step
        ]
        atomic_write(
            self.stats, lambda tmp: Path(tmp).write_text("".join(f"{ln}\n" for ln in keep), encoding="utf-8")
        )


def _step_of_line(line: str) -> float:
    """The step of a stats line; inf (dropped) for a torn or foreign one."""
    try:
        step = json.loads(line).get("step", 0)
    except (ValueError, AttributeError):
        return math.inf
    return step if isinstance(step, (int, float)) else math.inf


class RunWriter(Callback):
    """Writes stats.jsonl, sample grids, checkpoints and the final plot into a RunFolder (rank 0)."""

    def __init__(self, folder: RunFolder, real_points: torch.Tensor | None = None) -> None:
        self.folder = folder
        self.real_points = real_points  # a subsample of the real 2-D data, drawn under the scatters
        self.fixed_z: torch.Tensor | None = None
        self.fixed_y: torch.Tensor | None = None
        self.saved_step: int | None = None  # step of the last checkpoint written
        self.ckpt_due = False  # a checkpoint is due, waiting for a step without NaN/inf

    def on_train_start(self, trainer: Trainer) -> None:
        t = trainer.cfg.train
        gen = torch.Generator().manual_seed(t.seed + 3)  # CPU: the same grid noise on any device
        self.fixed_z = trainer.family.sample_z(t.n_grid, torch.device("cpu"), gen)
        if trainer.spec.n_classes and trainer.family.conditional:
            self.fixed_y = torch.arange(t.n_grid) % trainer.spec.n_classes
        if trainer.dist.is_main:
            self.folder.truncate_stats(trainer.step)

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if not trainer.dist.is_main:
            return
        with self.folder.stats.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    def on_step_end(self, trainer: Trainer) -> None:
        t = trainer.cfg.train
        if t.sample_every and trainer.step % t.sample_every == 0 and trainer.dist.is_main:
            self.write_samples(trainer)
        if t.ckpt_every and trainer.step % t.ckpt_every == 0:
            self.ckpt_due = True
        # Not in a streak of skipped (NaN/inf) steps: so the newest checkpoint is always one the
        # divergence guard can roll back to; a due checkpoint waits for the next clean step.
        if self.ckpt_due and trainer.guard.bad_steps == 0:
            self.write_checkpoint(trainer)

    def on_train_end(self, trainer: Trainer) -> None:
        if trainer.dist.is_main:
            self.write_samples(trainer)
        if self.saved_step != trainer.step:
            self.write_checkpoint(trainer)
        if not trainer.dist.is_main:
            return
        plot_training(
            self.folder.stats,
            self.folder.plots / "training.png",
            title=f"{trainer.cfg.model} / {trainer.cfg.loss.name} on {trainer.cfg.data.name}",
        )

    def write_samples(self, trainer: Trainer) -> Path:
        assert self.fixed_z is not None
        x = trainer.generate(self.fixed_z, self.fixed_y).float().cpu()
        path = self.folder.samples / f"step_{trainer.step:06d}.png"
        if trainer.spec.kind == "points":
            save_points(x, path, self.real_points, title=f"step {trainer.step}")
        else:
            save_grid((x + 1) / 2, path, nrow=max(1, round(math.sqrt(len(x)))))
        return path

    def write_checkpoint(self, trainer: Trainer) -> None:
        """Rank 0 saves; every rank learns the outcome, so all roll back to the same state later."""
        dist, store = trainer.dist, self.folder.checkpoints
        tensors, meta = trainer.shared_state()
        outcome, error = SAVED, None
        if dist.is_main:
            try:
                outcome = self.save(trainer, tensors, meta)
            except Exception as err:  # the other ranks must hear of it, not wait for ever
                outcome, error = FAILED, err
        outcome = dist.broadcast_int(outcome)
        if error is not None:
            raise error
        if outcome == FAILED:
            raise GanforgeError(
                f"step {trainer.step}: rank 0 could not write the checkpoint (its error says why)"
            )
        if outcome == REFUSED:
            if not dist.is_main:
                trainer.guard.poison("NaN/inf in the training state (found by rank 0)")
            return
        trainer.guard.restore = store.loader(store.path(trainer.step))
        self.saved_step, self.ckpt_due = trainer.step, False

    def save(self, trainer: Trainer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> int:
        """Write the training state: SAVED, or REFUSED when it holds NaN/inf (the guard rolls back
        to the last good checkpoint instead)."""
        bad = nonfinite_keys(tensors)
        if bad:
            trainer.guard.refuse_checkpoint(trainer, bad)
            return REFUSED
        self.folder.checkpoints.save(tensors, meta, trainer.step, keep_last=trainer.cfg.train.keep_last)
        return SAVED


def data_fingerprint(x: torch.Tensor, y: torch.Tensor | None) -> dict[str, Any]:
    """Item count and a BLAKE2 digest of the training tensors: a resume on changed data (images
    added to the folder, a file replaced) is then noticed instead of silently not reproducible."""
    digest = hashlib.blake2b(digest_size=12)
    digest.update(x.detach().cpu().contiguous().numpy().tobytes())
    if y is not None:
        digest.update(y.detach().cpu().contiguous().numpy().tobytes())
    return {"items": int(x.shape[0]), "digest": digest.hexdigest()}


class Progress(Callback):
    """A one-line progress bar on a terminal (step, losses, rate, ETA); plain lines otherwise."""

    def __init__(self, stream: TextIO | None = None, interactive: bool | None = None) -> None:
        self.stream: TextIO | None = stream or sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.t0 = 0.0
        self.step0 = 0

    def on_train_start(self, trainer: Trainer) -> None:
        self.t0, self.step0 = time.perf_counter(), trainer.step

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        total = trainer.cfg.train.steps
        rate = (trainer.step - self.step0) / max(time.perf_counter() - self.t0, 1e-9)
        eta = (total - trainer.step) / rate if rate > 0 else float("inf")
        losses = "  ".join(
            f"{k.split('/', 1)[1]}={v:.3f}" for k, v in record.items() if k.startswith(("Loss/", "D/"))
        )
        text = f"step {trainer.step}/{total}  {losses}  {rate:.1f} it/s  ETA {format_seconds(eta)}"
        if self.interactive:
            width = 24
            done = int(width * trainer.step / total)
            self.write(f"\r[{'#' * done}{'.' * (width - done)}] {text}\033[K")
        else:
            self.write(text + "\n")

    def on_train_end(self, trainer: Trainer) -> None:
        self.write("\n" if self.interactive else "")

    def write(self, text: str) -> None:
        """Write and flush; a closed or broken stream (`| tee` ended by the same Ctrl-C) ends the
        display, never the training."""
        if self.stream is None:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            self.stream = None


def format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, sec = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{sec:02d}" if hours else f"{minutes}:{sec:02d}"
