"""Checkpoints as safetensors + JSON metadata: no pickle anywhere, written atomically.

A checkpoint is one `.safetensors` file holding every tensor of the training state under
path-like keys (`G/...`, `D/...`, `G_ema/...`, `opt_D/state/3/exp_avg`, `rng/noise`, ...)
and a JSON document in the file's metadata for everything that is not a tensor (step,
optimiser hyper-parameters, versions). Writes go to a temporary file in the same folder,
are fsync'ed, then renamed over the old file, so a crash never leaves a half-written one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..errors import CheckpointError

META_KEY = "ganforge"


def atomic_write(path: Path, write: Any) -> None:
    """Call write(tmp_path), fsync it, and rename it to `path` (same folder, so the rename is atomic).

    The temporary name ends in `path`'s suffix, so writers that pick a format by extension work."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(flat, tmp, metadata={META_KEY: json.dumps(meta)}))


def load_checkpoint(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(tensors, meta) from a checkpoint, or a CheckpointError naming the file and problem."""
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            raw_meta = (fh.metadata() or {}).get(META_KEY)
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path} is not a readable ganforge checkpoint (safetensors): {err}") from None
    if raw_meta is None:
        raise CheckpointError(f"{path} is a safetensors file but not a ganforge checkpoint (no metadata)")
    try:
        meta = json.loads(raw_meta)
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: checkpoint metadata is corrupt") from None
    return tensors, meta


def prefixed(prefix: str, state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {f"{prefix}/{k}": v for k, v in state.items()}


def unprefixed(prefix: str, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    head = f"{prefix}/"
    return {k[len(head) :]: v for k, v in tensors.items() if k.startswith(head)}


def flatten_optimizer(prefix: str, state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split `optimizer.state_dict()` into tensors (per-parameter state) and JSON (the rest)."""
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, param_state in state["state"].items():
        for key, value in param_state.items():
            if isinstance(value, Tensor):
                tensors[f"{prefix}/state/{idx}/{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(prefix: str, tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    head = f"{prefix}/state/"
    for key, value in tensors.items():
        if key.startswith(head):
            idx, name = key[len(head) :].split("/", 1)
            state.setdefault(int(idx), {})[name] = value
    for idx, values in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}
