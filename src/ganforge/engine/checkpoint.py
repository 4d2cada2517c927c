"""Checkpoints as safetensors + JSON metadata: no pickle anywhere, written atomically.

A checkpoint is one `.safetensors` file holding every tensor of the training state under
path-like keys (`G/...`, `D/...`, `G_ema/...`, `opt_D/state/3/exp_avg`, `rng/noise`, ...)
and a JSON document in the file's metadata for everything that is not a tensor (step,
optimiser hyper-parameters, versions). Writes go to a temporary file in the same folder,
are fsync'ed, then renamed over the old file, so a crash never leaves a half-written one.

A run keeps its last K checkpoints in a :class:`CheckpointStore`:

    RUN/checkpoints/step_000500.safetensors
    RUN/checkpoints/step_001000.safetensors
    RUN/checkpoints/manifest.json     {"checkpoints": [{"file", "step", "sha256", "bytes"}, ...]}

The manifest (oldest first, written atomically after the checkpoint it adds) is the source of
truth: a file it does not list is a leftover of a killed write and is deleted at the next save.
Loading takes the newest checkpoint whose sha256 matches, and warns when it had to skip a newer
one. A run folder from before the store, with a single `RUN/checkpoint.safetensors`, still loads.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..errors import CheckpointError, GanforgeWarning, WriteError

META_KEY = "ganforge"
MANIFEST_FORMAT = "ganforge-checkpoints/1"
STEP_FILE = re.compile(r"step_(\d+)\.safetensors")


class CheckpointWarning(GanforgeWarning):
    """A checkpoint was skipped (corrupt, unverifiable) and an older one used instead."""


def atomic_write(path: Path, write: Any) -> None:
    """Call write(tmp_path), fsync it, and rename it to `path` (same folder, so the rename is atomic).

    The temporary name ends in `path`'s suffix, so writers that pick a format by extension work.
    A full disk or a missing permission raises :class:`WriteError` (one line for the user); the
    old file, if any, is left as it was and no temporary file remains."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp (and safetensors' own temp file) make 0600
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno in USER_WRITE_ERRORS:
            raise WriteError(
                f"cannot write {path}: {write_error_reason(err.errno)}; files written before are intact"
            ) from None
        raise
    _fsync_dir(path.parent)


_UMASK = os.umask(0o022)  # read the process umask (the only way) ...
os.umask(_UMASK)  # ... and put it back

# Write failures a user can fix: disk full, quota exceeded, no permission, read-only file system.
USER_WRITE_ERRORS = {  # the user's disk or path, not a bug: one line, not a traceback
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.EISDIR,  # the output path is a folder
    errno.ENOTDIR,  # a part of its folder is a file
    errno.EEXIST,  # (mkdir of such a part)
    errno.ENOENT,  # a folder that cannot be created (e.g. under /proc)
}


def write_error_reason(code: int) -> str:
    """What a USER_WRITE_ERRORS errno means for an output path, in words."""
    return {
        errno.EEXIST: "a part of its folder path is a file",
        errno.ENOTDIR: "a part of its folder path is a file",
        errno.ENOENT: "its folder cannot be created there",
    }.get(code, os.strerror(code).lower())


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(path: Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> str:
    """Write a checkpoint atomically; returns the sha256 of the file written."""
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    digest: list[str] = []

    def write(tmp: str) -> None:
        try:
            save_file(flat, tmp, metadata={META_KEY: json.dumps(meta)})
        except SafetensorError as err:  # its I/O errors, e.g. "... (os error 28)", as OSError
            code = re.search(r"os error (\d+)", str(err))
            if code is None:
                raise
            raise OSError(int(code.group(1)), str(err)) from None
        digest.append(sha256_file(Path(tmp)))  # hashed before the rename: the manifest never lies

    atomic_write(path, write)
    return digest[0]


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


# ---- the last K checkpoints of a run ---------------------------------------------------------


class CheckpointStore:
    """RUN/checkpoints/: the last `keep_last` checkpoints and their manifest (module docstring)."""

    def __init__(self, folder: Path, legacy: Path | None = None) -> None:
        self.folder = Path(folder)
        self.manifest = self.folder / "manifest.json"
        self.legacy = legacy  # RUN/checkpoint.safetensors of older run folders, read-only

    def exists(self) -> bool:
        """Whether there is anything to resume from (it may still turn out to be corrupt)."""
        return (
            self.manifest.is_file()
            or bool(self._step_files())
            or (self.legacy is not None and self.legacy.is_file())
        )

    # --- writing -------------------------------------------------------------------------------

    def save(self, tensors: dict[str, Tensor], meta: dict[str, Any], step: int, keep_last: int) -> Path:
        """Write step_XXXXXX.safetensors, then the manifest, then delete what fell out of it.

        Entries at or past `step` are dropped first: after a resume or a rollback they belong
        to an abandoned trajectory. The checkpoint just written is always kept, so rotation
        never deletes the newest good one; a failure leaves the previous manifest and files."""
        path = self.path(step)
        entries = self._read_manifest() or []
        kept = [e for e in entries if e["step"] < step]
        if len(kept) < len(entries):  # unlist first: the manifest never lists a file being replaced
            self._write_manifest(kept)
        digest = save_checkpoint(path, tensors, meta)
        kept.append({"file": path.name, "step": step, "sha256": digest, "bytes": path.stat().st_size})
        kept = kept[-max(1, keep_last) :]
        self._write_manifest(kept)
        listed = {e["file"] for e in kept}
        for old in self.folder.iterdir():
            if (STEP_FILE.fullmatch(old.name) and old.name not in listed) or _is_stale_tmp(old.name):
                old.unlink(missing_ok=True)
        return path

    def path(self, step: int) -> Path:
        """Where the checkpoint of `step` is (or would be) written."""
        return self.folder / f"step_{step:06d}.safetensors"

    def _write_manifest(self, entries: list[dict[str, Any]]) -> None:
        text = json.dumps({"format": MANIFEST_FORMAT, "checkpoints": entries}, indent=1)
        atomic_write(self.manifest, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

    # --- reading -------------------------------------------------------------------------------

    def load(self) -> tuple[dict[str, Tensor], dict[str, Any], Path]:
        """(tensors, meta, path) of the newest checkpoint that verifies, warning about any skipped."""
        problems: list[str] = []
        for path, sha in self.candidates(problems):
            try:
                if sha is not None and sha256_file(path) != sha:
                    raise CheckpointError("checksum mismatch (the file is corrupt or was changed)")
                tensors, meta = load_checkpoint(path)
                check_run_meta(meta, path)
            except (CheckpointError, OSError) as err:
                problems.append(_reason(err, path))
                continue
            if problems:
                warnings.warn(
                    f"{'; '.join(problems)}; falling back to {path} (step {meta['step']})",
                    CheckpointWarning,
                    stacklevel=2,
                )
            return tensors, meta, path
        where = self.folder if self.folder.exists() or self.legacy is None else self.legacy.parent
        if not problems:
            raise CheckpointError(f"no checkpoint in {where}")
        raise CheckpointError(f"no usable checkpoint in {where}: {'; '.join(problems)}")

    def loader(self, path: Path) -> Callable[[], tuple[dict[str, Tensor], dict[str, Any]]]:
        """A function that reloads `path` (for the divergence guard's rollback)."""
        return lambda: load_checkpoint(path)

    def candidates(self, problems: list[str]) -> list[tuple[Path, str | None]]:
        """(path, expected sha256 or None) newest first: the manifest's entries, else the step
        files by name (unverified, with a note in `problems`), then the legacy single file."""
        entries = self._read_manifest(problems)
        if entries is not None:
            out = [(self.folder / e["file"], e["sha256"]) for e in reversed(entries)]
        else:
            out = [(p, None) for p in sorted(self._step_files(), key=_step_of, reverse=True)]
            if out:
                problems.append("checkpoint files not verified by checksum")
        if self.legacy is not None and self.legacy.is_file():
            out.append((self.legacy, None))
        return out

    def _step_files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return [p for p in self.folder.iterdir() if STEP_FILE.fullmatch(p.name)]

    def _read_manifest(self, problems: list[str] | None = None) -> list[dict[str, Any]] | None:
        """The manifest's entries, oldest first; None when it is missing or unreadable."""
        if not self.manifest.is_file():
            return None
        try:
            doc = json.loads(self.manifest.read_text(encoding="utf-8"))
            entries = doc["checkpoints"]
            for e in entries:
                if not (
                    STEP_FILE.fullmatch(e["file"])
                    and isinstance(e["step"], int)
                    and isinstance(e["sha256"], str)
                ):
                    raise ValueError(e)
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
            if problems is not None:
                problems.append(f"{self.manifest.name} is corrupt")
            return None
        return sorted(entries, key=lambda e: e["step"])


def _is_stale_tmp(name: str) -> bool:
    """A temporary file of a write that was killed: ours (.step_*.tmp*, .manifest.json.*.tmp*) or
    the safetensors writer's own (.tmpXXXXXX). Only this store writes in its folder."""
    return name.startswith(".tmp") or (name.startswith((".step_", ".manifest.")) and ".tmp" in name)


def _step_of(path: Path) -> int:
    m = STEP_FILE.fullmatch(path.name)
    return int(m.group(1)) if m else -1


def _reason(err: Exception, path: Path) -> str:
    """An error's first line, naming the file by its name only (the folder is said once)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    text = text.replace(str(path), path.name)
    return text if path.name in text else f"{path.name}: {text}"


def check_run_meta(meta: Any, path: Path) -> None:
    """A training checkpoint's metadata has what resuming and sampling read."""
    ok = (
        isinstance(meta, dict)
        and isinstance(meta.get("model"), str)
        and isinstance(meta.get("step"), int)
        and isinstance(meta.get("config"), dict)
        and isinstance(meta.get("spec"), dict)
        and isinstance(meta.get("opt_G"), dict)
        and isinstance(meta.get("opt_D"), dict)
    )
    if not ok:
        raise CheckpointError(
            f"{path}: not a ganforge training checkpoint (its metadata lacks the model, step, config or data spec)"
        )
