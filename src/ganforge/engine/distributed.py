"""Data-parallel training over the processes `torchrun` starts: the engine's distributed glue.

`torchrun --nproc-per-node W -m ganforge train ...` starts W copies of the same program, the ranks
of one process group (WORLD_SIZE, RANK, LOCAL_RANK in their environment). Every rank runs the one
training loop of :mod:`.trainer`; :class:`Distributed` supplies the few points where ranks meet.

- Sharding: every rank holds the same seeded data sampler and noise generator, draws the whole
  global batch of B examples and every random tensor of the global batch (z, DiffAugment and
  instance noise, the WGAN-GP mixing weights), and keeps its slice of B / W rows. So W processes
  take the steps one process takes with batch B, to float rounding (sums in another order), and
  the generators stay in step on every rank: rank 0's checkpoint is every rank's state.
- Gradients: after each backward (D phases, the lazy R1/R2 phase, the G phase) the gradients of the
  side being trained, with the phase's loss, are averaged over the ranks in ONE flat all-reduce, as
  StyleGAN2-ADA's training loop does. Not DistributedDataParallel: its backward hooks do not work
  with `torch.autograd.grad` (R1/R2, WGAN-GP), and the loop runs D several times per backward and
  toggles `requires_grad` between phases, which DDP's reducer assumes fixed.
- Decisions: the divergence guard judges the averaged loss and gradient norm, the same numbers on
  every rank, so a NaN on one rank skips the step on all and rollbacks happen together; a stop
  request (SIGTERM on any rank) is OR-reduced at every step. Logged stats are averaged over ranks.

Batch normalisation stays per rank (statistics of the rank's B / W examples): `nn.SyncBatchNorm`
raises on CPU tensors in torch 2.13, and one behaviour on every device is easier to reason about.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from ..errors import ConfigError, GanforgeError

# Draws that sharding can split: (batch, ...)-shaped factories, their size last or as `size=`.
SHARDABLE_DRAWS = (torch.rand, torch.randn, torch.randint)


def is_main() -> bool:
    """True on rank 0 of a torchrun launch, and in a process started without torchrun."""
    return os.environ.get("RANK", "0") == "0"


@dataclass
class Distributed:
    """This process's place in the group; with `world == 1` every method is a no-op."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    comm_device: torch.device = field(default=torch.device("cpu"), init=False)  # NCCL: CUDA tensors only

    @classmethod
    def from_env(cls) -> Distributed:
        """Read torchrun's WORLD_SIZE, RANK and LOCAL_RANK (a single process when unset)."""
        try:
            world = int(os.environ.get("WORLD_SIZE", "1"))
            rank = int(os.environ.get("RANK", "0"))
            local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
        except ValueError:
            raise ConfigError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (set by torchrun)") from None
        if not (world >= 1 and 0 <= rank < world and local_rank >= 0):
            raise ConfigError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world}")
        return cls(rank=rank, world=world, local_rank=local_rank)

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # --- set-up -----------------------------------------------------------------------------------

    def device_name(self, name: str) -> str:
        """`train.device` for this rank: auto/cuda mean this rank's GPU (cuda:LOCAL_RANK) when there is one."""
        if not (self.enabled and name in ("auto", "cuda") and torch.cuda.is_available()):
            return name
        if self.local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK {self.local_rank} has no GPU of its own: this machine has "
                f"{torch.cuda.device_count()}; start at most that many processes per node"
            )
        return f"cuda:{self.local_rank}"

    def check(self, batch_size: int, pac: int) -> None:
        """Each rank trains on batch_size / world examples, packed `pac` at a time by D."""
        if not self.enabled:
            return
        if batch_size % self.world:
            raise ConfigError(
                f"train.batch_size ({batch_size}) must be divisible by the number of processes ({self.world}); "
                "each trains on an equal share of the global batch"
            )
        if (batch_size // self.world) % pac:
            raise ConfigError(
                f"the per-process batch, train.batch_size / {self.world} = {batch_size // self.world}, "
                f"must be a multiple of stab.pac ({pac})"
            )

    @contextlib.contextmanager
    def session(self, device: torch.device) -> Iterator[None]:
        """Join the process group (gloo on CPU, NCCL on CUDA) for the block, then leave it. A group
        the caller already started is used and left running. The block ends at a barrier, so every
        rank returns once rank 0 has written the run folder."""
        self.comm_device = device
        if not self.enabled or dist.is_initialized():
            yield
            self.barrier()
            return
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
        try:
            yield
            self.barrier()
        finally:
            dist.destroy_process_group()

    # --- sharding ---------------------------------------------------------------------------------

    def shard_batch(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """This rank's rows of a global batch: every tensor with the batch's leading size is sliced."""
        if not self.enabled:
            return batch
        n = batch["x"].shape[0]
        if n % self.world:
            raise ConfigError(
                f"the batch has {n} examples (train.batch_size capped at the dataset's size), "
                f"not divisible by the number of processes ({self.world})"
            )
        return {k: self._rows(v) if v.dim() and v.shape[0] == n else v for k, v in batch.items()}

    def own_rows(self, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
        """This rank's rows of tensors that hold the whole global batch (inverse of :meth:`gather_rows`)."""
        return {k: self._rows(v) for k, v in tensors.items()} if self.enabled else tensors

    def _rows(self, v: Tensor) -> Tensor:
        n = v.shape[0] // self.world
        return v[self.rank * n : (self.rank + 1) * n]

    def sharded_draws(self, generator: torch.Generator) -> contextlib.AbstractContextManager[Any]:
        """Within the block, draws from `generator` are drawn for the global batch and sliced."""
        if not self.enabled:
            return contextlib.nullcontext()
        return ShardedDraws(generator, self.rank, self.world)

    # --- collectives ------------------------------------------------------------------------------

    def sync_grads(self, module: nn.Module, loss: Tensor) -> Tensor:
        """Average `module`'s gradients and `loss` over ranks (one all-reduce); returns the mean loss.

        The buffer has the same size on every rank: zeros stand in for a missing gradient, and a
        flag per parameter counts the ranks that had one, so that a parameter no rank reached keeps
        `grad=None` (Adam then leaves it alone, as it would in one process)."""
        if not self.enabled:
            return loss
        params = list(module.parameters())
        missing = [p.grad is None for p in params]
        flat = torch.cat(
            [p.new_zeros(p.numel()) if m else p.grad.reshape(-1) for p, m in zip(params, missing)]
            + [torch.tensor([not m for m in missing], dtype=torch.float32, device=loss.device)]
            + [loss.detach().float().reshape(1)]
        )  # (sum of numel + n_params + 1,)
        dist.all_reduce(flat)
        flat /= self.world
        reached = flat[-1 - len(params) : -1].tolist() if any(missing) else [1.0] * len(params)
        offset = 0
        for p, m, r in zip(params, missing, reached):
            chunk = flat[offset : offset + p.numel()].view(p.shape)
            offset += p.numel()
            if not m:
                p.grad.copy_(chunk)
            elif r:
                p.grad = torch.empty_like(p).copy_(chunk)  # in the parameter's layout, as fused Adam needs
        return flat[-1]

    def gather_rows(self, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
        """Every rank's rows of per-rank tensors (same keys and shapes on all), in rank order."""
        if not self.enabled:
            return tensors
        out = {}
        for key, v in sorted(tensors.items()):
            v = v.contiguous()  # (n, ...), in the default layout (channels-last images are not)
            parts = [torch.empty_like(v) for _ in range(self.world)]
            dist.all_gather(parts, v)
            out[key] = torch.cat(parts)
        return out

    def mean(self, values: Tensor) -> Tensor:
        """Element-wise mean of `values` over ranks."""
        if not self.enabled:
            return values
        values = values.to(self.comm_device, torch.float32)
        dist.all_reduce(values)
        return values / self.world

    def any(self, flag: bool) -> bool:
        """True when `flag` is true on some rank."""
        if not self.enabled:
            return flag
        t = torch.tensor([float(flag)], device=self.comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def broadcast_int(self, value: int) -> int:
        """Rank 0's `value` on every rank."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.int64, device=self.comm_device)
        dist.broadcast(t, src=0)
        return int(t.item())

    def agree(self, values: dict[str, int]) -> None:
        """Fail on every rank, with the same line, unless each named value is the same on all ranks."""
        if not self.enabled:
            return
        t = torch.tensor(
            [v for x in values.values() for v in (x, -x)], dtype=torch.int64, device=self.comm_device
        )
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        for i, what in enumerate(values):
            high, low = int(t[2 * i]), -int(t[2 * i + 1])
            if high != low:
                raise GanforgeError(
                    f"the {self.world} processes disagree on the {what} ({low} to {high}); every node must "
                    "see the same data and run folder (a shared file system)"
                )

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


class ShardedDraws(TorchFunctionMode):
    """Turns `torch.rand/randn/randint(n, ..., generator=g)` into this rank's rows of the same draw
    for the global batch, `(n * world, ...)[rank * n : (rank + 1) * n]`. Every draw a loss makes from
    the engine's noise generator has the batch as its leading dimension (z, DiffAugment's and
    instance noise's per-example values, WGAN-GP's eps); a 0-d draw is the same on every rank, as it
    is for a single process. Other ways of drawing from `g` cannot be split, and say so."""

    def __init__(self, generator: torch.Generator, rank: int, world: int) -> None:
        super().__init__()
        self.generator, self.rank, self.world = generator, rank, world

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = dict(kwargs or {})
        if kwargs.get("generator") is not self.generator:
            return func(*args, **kwargs)
        if func not in SHARDABLE_DRAWS:
            name = getattr(func, "__name__", str(func))
            raise ConfigError(
                f"distributed training cannot split {name}(..., generator=<noise>) over processes; "
                "draw batch-first noise with torch.rand, torch.randn or torch.randint, or train on one process"
            )
        args, size = split_size(func, args, kwargs)
        if not size:
            return func(*args, size=size, **kwargs)
        n = size[0]
        full = func(*args, size=(n * self.world, *size[1:]), **kwargs)  # (n * world, ...)
        return full[self.rank * n : (self.rank + 1) * n]


def split_size(func: Any, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, tuple[int, ...]]:
    """(the other positional arguments, the requested size) of a rand/randn/randint call."""
    if "size" in kwargs:
        return args, tuple(kwargs.pop("size"))
    if func is torch.randint:  # randint([low,] high, size)
        return args[:-1], tuple(args[-1])
    if len(args) == 1 and not isinstance(args[0], int):  # rand((B, ...)) rather than rand(B, ...)
        return (), tuple(args[0])
    return (), tuple(args)
