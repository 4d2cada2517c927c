"""The public Python API: `train`, `load`, and the `GAN` handle they return.

The CLI is a thin layer over these functions, so every operation is available from Python:

    >>> import ganforge
    >>> gan = ganforge.train(data="ring8", out="runs/ring", steps=2000)
    >>> points = ganforge.load("runs/ring").sample(2500)
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .config import Config, DataConfig, from_dict, load_file, merge, overrides_to_dict, to_dict
from .data import DATASETS, Dataset, load_dataset
from .diagnostics import Monitor
from .engine import Callback, Trainer
from .engine.distributed import Distributed
from .engine.rng import seed_global_rngs
from .engine.run import Progress, RunFolder, RunWriter, data_fingerprint
from .engine.sampling import sample_batches
from .errors import CheckpointError, ConfigError, GanforgeError, GanforgeWarning
from .families import FAMILIES, DataSpec, Family
from .losses import LOSSES

# Keys that may change when a run is resumed: how long, how often to log, and where to run.
RESUMABLE_CHANGES = {
    "train.steps",
    "train.log_every",
    "train.sample_every",
    "train.ckpt_every",
    "train.keep_last",
    "train.device",
    "train.channels_last",  # speed options: the same maths, float rounding aside
    "train.fuse_upsample",
    "train.compile",
    "train.amp",
    "net.truncation_psi",  # sampling only (stylegan): training never truncates
}
RESUMABLE_SECTIONS = {"monitor", "eval", "sample"}  # watching, measuring or sampling does not change training
# The Config fields that are mappings.
SECTIONS = {"data", "loss", "train", "stab", "eval", "monitor", "sample", "net"}


def default_model(spec: DataSpec) -> str:
    return "mlp" if spec.kind == "points" else "dcgan"


def build_config(user: dict[str, Any], spec: DataSpec) -> Config:
    """Defaults < the family's recipe for this data and loss < the user's settings."""
    user = dict(user)
    model = user.get("model") or default_model(spec)
    if not isinstance(model, str):
        raise ConfigError(f"model must be a name, got {model!r}")
    family = FAMILIES.get(model)
    if isinstance(user.get("loss"), str):  # `loss: hinge` as shorthand for `loss: {name: hinge}`
        user["loss"] = {"name": user["loss"]}
    loss = (user.get("loss") or {}).get("name", Config().loss.name)
    LOSSES.get(loss)
    settings = merge(family.recipe(spec, loss), user)
    settings["model"] = model
    net = settings.pop("net", {}) or {}
    cfg = from_dict(Config, settings)
    cfg.net = from_dict(family.Config, net, prefix="net.")
    return cfg


def user_settings(
    config: str | Path | None = None, overrides: Sequence[str] = (), **flags: Any
) -> dict[str, Any]:
    """Merge a config file, named flags (data, model, loss, steps, ...) and `key=value` overrides."""
    settings = load_file(config) if config else {}
    for key, value in settings.items():  # checked here: a named flag would otherwise replace it
        shorthand = key == "loss" and isinstance(value, str)  # `loss: hinge`
        if key in SECTIONS and not isinstance(value, (dict, type(None))) and not shorthand:
            raise ConfigError(f"config file {config}: {key}: expected a mapping of settings, got {value!r}")
    named = {
        "model": flags.pop("model", None),
        "data": {"name": flags.pop("data", None)},
        "loss": {"name": flags.pop("loss", None)},
        "train": {k: flags.pop(k, None) for k in ("steps", "batch_size", "seed", "device")},
    }
    if flags:
        raise ConfigError(f"unknown option(s): {', '.join(sorted(flags))}")
    named = prune_none(named)
    merged = merge(merge(settings, named), overrides_to_dict(list(overrides)))
    name = (merged.get("data") or {}).get("name")
    if isinstance(name, str) and name not in DATASETS:
        path = Path(name).expanduser()
        if path.exists():  # stored absolute: the run resumes and evaluates from any folder
            merged["data"]["name"] = str(path.resolve())
    return merged


def prune_none(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            value = prune_none(value)
            if value:
                out[key] = value
        elif value is not None:
            out[key] = value
    return out


def data_config(settings: dict[str, Any]) -> DataConfig:
    return from_dict(DataConfig, settings.get("data") or {}, prefix="data.")


def spec_of(ds: Dataset) -> DataSpec:
    variance = float(ds.x.double().var(dim=0).mean()) if ds.kind == "points" and len(ds) > 1 else 0.0
    return DataSpec(kind=ds.kind, shape=ds.shape, n_classes=ds.n_classes, variance=variance)


def diff_keys(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    keys = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += diff_keys(va, vb, f"{prefix}{key}.")
        elif va != vb:
            keys.append(f"{prefix}{key}")
    return keys


class GAN:
    """A trained (or training) model: sample from it, or reach its trainer."""

    def __init__(self, trainer: Trainer, run_dir: Path | None = None) -> None:
        self.trainer = trainer
        self.run_dir = run_dir

    @property
    def cfg(self) -> Config:
        return self.trainer.cfg

    @property
    def spec(self) -> DataSpec:
        return self.trainer.spec

    @property
    def step(self) -> int:
        return self.trainer.step

    def sample(
        self,
        n: int,
        seed: int = 0,
        labels: Sequence[int] | Tensor | None = None,
        batch_size: int = 1024,
        truncation: float | None = None,
        jacobian_limit: float | None = None,
    ) -> Tensor:
        """`n` samples on the CPU, in data space: images (n, C, H, W) in [0, 1]; points (n, D).

        `labels` (length n) picks classes for conditional models; otherwise classes cycle.
        `truncation` is psi of the truncation trick, w_avg + psi (w - w_avg), for models that have
        one (`net.truncation_psi`: stylegan); None keeps the run's setting.
        `jacobian_limit` K redraws latents where ||dG/dz||_F exceeds K x its median (Jacobian-based
        truncation, Tanielian et al. 2020: removes samples in transit between modes; 0 = off);
        None keeps the run's `sample.jacobian_limit`.
        """
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigError(f"n must be a whole number of at least 1, got {n!r}")
        fam = self.trainer.family
        y = None
        if fam.conditional:
            y = torch.as_tensor(labels if labels is not None else torch.arange(n) % self.spec.n_classes)
            k = self.spec.n_classes
            if (
                y.shape != (n,)
                or y.is_floating_point()
                or y.dtype == torch.bool
                or (y < 0).any()
                or (y >= k).any()
            ):
                raise ConfigError(f"labels must be {n} whole class numbers in [0, {k}), one per sample")
            y = y.long()
        elif labels is not None:
            raise ConfigError(f"model {self.cfg.model!r} is unconditional: it takes no labels")
        with truncated(fam, truncation):
            batches = sample_batches(self.trainer, n, seed, batch_size, y, jacobian_limit)
            x = torch.cat([xb for xb, _ in batches])
        return (x + 1) / 2 if self.spec.kind == "image" else x


@contextlib.contextmanager
def truncated(family: Family, psi: float | None) -> Iterator[None]:
    """Within the block the family samples with `net.truncation_psi = psi` (None: unchanged)."""
    if psi is None:
        yield
        return
    net = family.net
    if not hasattr(net, "truncation_psi"):
        raise ConfigError(
            f"model {family.name!r} has no truncation trick; truncation applies to models with "
            "net.truncation_psi (stylegan)"
        )
    family.net = dataclasses.replace(net, truncation_psi=psi)
    try:
        family.net.validate()
        yield
    finally:
        family.net = net


def train(
    data: str | None = None,
    model: str | None = None,
    loss: str | None = None,
    *,
    out: str | Path,
    steps: int | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    device: str | None = None,
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    resume: bool | str = False,
    allow_config_change: bool = False,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
) -> GAN:
    """Train a GAN and write its run folder at `out`; returns the trained model.

    `resume=True` continues the run in `out` (error when it has no checkpoint); `resume="auto"`
    continues it when a checkpoint exists and starts fresh otherwise. Resuming takes the newest
    checkpoint whose checksum verifies, with a warning when a newer one was corrupt. Everything
    is checked before anything is written, so a bad argument leaves `out` untouched. A fresh run
    seeds Python's, NumPy's and torch's global RNGs with `train.seed`; a resumed one restores them.

    Under `torchrun` each process is one rank of a data-parallel run (docs/distributed.md): all
    check and load the same run folder, train on their shares of each batch, and rank 0 alone writes;
    every rank returns the trained model once the run folder is complete.
    """
    dist = Distributed.from_env()
    folder = RunFolder(out)
    resuming = False
    if resume not in (False, True, "auto"):
        raise ConfigError(f"resume must be True, False or 'auto', got {resume!r}")
    if resume and folder.has_checkpoint():
        resuming = True
    elif resume is True:
        if not folder.root.exists():
            raise CheckpointError(f"cannot resume: no run folder at {folder.root}")
        if not folder.root.is_dir():
            raise CheckpointError(f"cannot resume: {folder.root} is a file, not a run folder")
        raise CheckpointError(f"cannot resume: {folder.root} holds no checkpoint")
    elif not folder.is_empty() and not (resume == "auto" and folder.never_checkpointed()):
        if folder.root.is_file():
            raise ConfigError(f"--out {folder.root} is a file, not a folder")
        raise ConfigError(
            f"run folder {folder.root} already exists and is not empty; "
            "use --resume to continue it, or choose another --out"
        )

    settings = user_settings(
        config,
        overrides,
        data=data,
        model=model,
        loss=loss,
        steps=steps,
        batch_size=batch_size,
        seed=seed,
        device=device,
    )
    if resuming:
        tensors, meta, ckpt_path = folder.checkpoints.load()
        if settings.get("model", meta["model"]) != meta["model"]:
            raise ConfigError(
                f"cannot resume {folder.root} as model {settings['model']!r}: it trains {meta['model']!r} "
                "(start a new run folder for another model)"
            )
        settings = merge(meta["config"], settings)
    ds = load_dataset(data_config(settings))
    spec = spec_of(ds)
    cfg = build_config(settings, spec)
    if resuming:
        before = to_dict(build_config(meta["config"], spec))  # keys added since then: their defaults
        changed = [
            k
            for k in diff_keys(before, to_dict(cfg))
            if k not in RESUMABLE_CHANGES and k.split(".")[0] not in RESUMABLE_SECTIONS
        ]
        if changed and not allow_config_change:
            raise ConfigError(
                f"resuming {folder.root} with a changed config ({', '.join(changed)}); "
                "pass --allow-config-change to accept"
            )
    writer = RunWriter(folder, real_points=ds.x[:2000].clone() if ds.kind == "points" else None)
    # The monitor adds Diag/* keys to each logged record, so it comes before the writer. It, the
    # evaluation and the progress display run on rank 0 only (they need no other rank).
    main = dist.is_main
    monitor = [Monitor(cfg.monitor, folder.root)] if cfg.monitor.enabled and main else []
    evaluation: list[Callback] = []  # adds Metrics/* to the records too, so it also comes before the writer
    if cfg.eval.every > 0 and main:
        from .engine.evaluation import EvalCallback

        evaluation.append(EvalCallback(folder, cfg, spec, ds))
    cbs: list[Callback] = [*monitor, *evaluation, writer, *callbacks]
    if progress and main:
        cbs.append(Progress())
    trainer = Trainer(cfg, spec, ds, callbacks=cbs, dist=dist)
    if resuming and DataSpec.from_dict(meta["spec"]) != spec:
        raise CheckpointError(
            f"the data no longer matches the run in {folder.root}: {meta['spec']} then, {spec.to_dict()} now"
        )
    with dist.session(trainer.device):
        # Every rank has checked the folder before rank 0 writes to it: this is their first meeting.
        dist.agree({"step to resume from (-1: none)": meta["step"] if resuming else -1, "data size": len(ds)})
        if resuming:
            try:
                trainer.load_state(tensors, meta)
            except CheckpointError as err:
                raise CheckpointError(f"{ckpt_path}: {err}") from None
        else:
            seed_global_rngs(cfg.train.seed)
        if main:
            fingerprint = data_fingerprint(ds.x, ds.y)
            before = folder.data_fingerprint() if resuming else None
            if before and before != fingerprint:
                warnings.warn(
                    f"the data changed since {folder.root} last trained ({before['items']} items then, "
                    f"{fingerprint['items']} now, different content): the run continues on the new data "
                    "and will not match an uninterrupted run",
                    GanforgeWarning,
                    stacklevel=2,
                )
            folder.write_config(trainer, ds.notes, fingerprint)
        trainer.fit()
    return GAN(trainer, folder.root)


def load(run_dir: str | Path, device: str = "cpu") -> GAN:
    """Load a run folder's model for sampling (EMA weights when the run kept them), from its
    newest checkpoint that verifies (a warning says when a newer one was skipped)."""
    folder = RunFolder(run_dir)
    if not folder.root.is_dir():
        raise CheckpointError(f"run folder not found: {folder.root}")
    tensors, meta, path = folder.checkpoints.load()
    try:
        spec = DataSpec.from_dict(meta["spec"])
        settings = dict(meta["config"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{path}: checkpoint metadata lacks the config or data spec") from None
    settings = merge(settings, {"train": {"device": device}})
    cfg = build_config(settings, spec)
    trainer = Trainer(cfg, spec, data=None)
    try:
        trainer.load_state(tensors, meta, weights_only=True)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    return GAN(trainer, folder.root)


def list_components() -> dict[str, list[tuple[str, str]]]:
    """Registered models, losses and datasets with one-line descriptions."""
    from .data import DATASETS
    from .losses import LOSSES

    return {
        "models": [(name, fam.description) for name, fam in FAMILIES.items()],
        "losses": [(name, loss.description) for name, loss in LOSSES.items()],
        "datasets": [(name, first_sentence(fn.__doc__ or "")) for name, fn in DATASETS.items()],
    }


def first_sentence(doc: str) -> str:
    """A docstring's first sentence on one line (its first paragraph up to ". "), for listings."""
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    end = re.search(r"(?<!\bal)(?<!\bSec)(?<!\bEq)\.\s+(?=[A-Z])", paragraph)  # not "et al. Smith"
    return paragraph if end is None else paragraph[: end.start() + 1]


__all__ = ["GAN", "GanforgeError", "list_components", "load", "train"]
