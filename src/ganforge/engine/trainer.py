"""The one adversarial training loop, shared by every family.

Each step runs `n_dis` discriminator phases, then one generator phase (Goodfellow et al.
2014, Alg. 1). A phase: enable gradients on its side only -> the family computes the loss ->
zero grads -> backward -> optimiser step. Then the generator's weight average (EMA) is updated
and callbacks see the step. All state lives in :class:`Trainer` and is checkpointed whole
(weights, optimisers, EMA, RNG states, data position), so a resumed run is bit-identical on CPU.
Every optimiser step goes through the divergence guard (:mod:`.guard`), which skips it on NaN/inf
and rolls training back when that persists. The speed options (memory format, compilation, mixed
precision) are applied by :mod:`.speed`: at construction, and around each phase's loss and backward.
Under `torchrun` every rank runs this loop on its share of each batch; :mod:`.distributed` averages
the gradients after each backward and the logged stats, and agrees on stopping.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from .. import __version__
from ..config import Config, to_dict
from ..data import Dataset
from ..errors import CheckpointError
from ..families import FAMILIES, DataSpec, Family
from .callbacks import Callback
from .checkpoint import flatten_optimizer, prefixed, unflatten_optimizer, unprefixed
from .distributed import Distributed
from .guard import Guard
from .rng import global_rng_state, set_global_rng_state
from .speed import Precision, match_param_layouts, prepare_modules, to_memory_format


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; anything else as given (checked)."""
    from ..errors import ConfigError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available on this machine")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps' requested but MPS is not available on this machine")
    return device


def use_deterministic_cuda() -> None:
    """Deterministic cuDNN and cuBLAS kernels: CPU runs are bit-exact anyway; on CUDA the default
    autotuned, atomics-based kernels make two identical runs drift apart within a few steps."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by deterministic cuBLAS
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


def set_requires_grad(params: list[Tensor], flag: bool) -> None:
    for p in params:
        p.requires_grad_(flag)


def grad_norm(params: list[Tensor]) -> Tensor:
    """Global L2 norm of the gradients (a device tensor: no host synchronisation)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


@torch.no_grad()
def ema_update(
    ema: nn.Module, model: nn.Module, decay: float, params: tuple[list[Tensor], list[Tensor]] | None = None
) -> None:
    """ema <- decay * ema + (1 - decay) * model for parameters; buffers (e.g. batch-norm
    statistics) are copied, as in Karras et al. (2018, progressive GAN) and later work.
    `params` = (ema's, model's) parameter lists, when the caller keeps them (a per-step saving)."""
    ema_params, model_params = params or (list(ema.parameters()), list(model.parameters()))
    torch._foreach_lerp_(ema_params, model_params, 1.0 - decay)
    ema_buffers, buffers = list(ema.buffers()), list(model.buffers())
    if buffers:
        torch._foreach_copy_(ema_buffers, buffers)  # one kernel, not one per buffer


class Trainer:
    """Holds G, D, G_ema, both optimisers, the RNGs and the data position; runs the loop.

    `dist` places it in a torchrun process group (:mod:`.distributed`); by default it trains alone."""

    def __init__(
        self,
        cfg: Config,
        spec: DataSpec,
        data: Dataset | None = None,
        callbacks: Iterable[Callback] = (),
        dist: Distributed | None = None,
    ) -> None:
        self.cfg = cfg
        self.spec = spec
        t = cfg.train
        self.dist = dist or Distributed()
        self.dist.check(t.batch_size, cfg.stab.pac)
        self.device = resolve_device(self.dist.device_name(t.device))
        if t.deterministic and self.device.type == "cuda":
            use_deterministic_cuda()
        self.family: Family = FAMILIES.get(cfg.model)(cfg, spec)
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
            torch.manual_seed(t.seed)
            G, D = self.family.networks()
        self.G, self.D = G.to(self.device), D.to(self.device)
        self.channels_last = prepare_modules(
            self.G, self.D, t, image_data=spec.kind == "image", second_order=self.family.second_order()
        )
        self.precision = Precision(t.amp, self.device)
        self.G_ema = copy.deepcopy(self.G).requires_grad_(False) if t.ema_decay > 0 else None
        # Parameter lists, kept: walking the module tree each phase costs more than a small step's maths.
        self.g_params, self.d_params = list(self.G.parameters()), list(self.D.parameters())
        self.ema_params = list(self.G_ema.parameters()) if self.G_ema is not None else []
        # Fused Adam: faster, and it can skip a non-finite step on the device (see .guard).
        fused = self.device.type in ("cpu", "cuda", "mps", "xpu")
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=t.g_lr, betas=(t.beta1, t.beta2), fused=fused)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=t.d_lr, betas=(t.beta1, t.beta2), fused=fused)
        self.family.d_optimizer = self.opt_D
        self.guard = Guard(t)
        self.noise = torch.Generator(device=self.device).manual_seed(t.seed + 1)
        self.data = data.to(self.device) if data is not None else None
        self.sampler = (
            self.family.make_sampler(data, t.batch_size, seed=t.seed + 2) if data is not None else None
        )
        self.callbacks = list(callbacks)
        self.step = 0
        self.elapsed = 0.0  # seconds of training, carried across resumes
        self.stop_requested = False  # set by a signal handler; honoured at the next step boundary
        self._acc: dict[str, Tensor] = {}  # sums of stats since the last log line
        self._acc_n: dict[str, int] = {}  # and how many steps reported each

    # --- sampling -------------------------------------------------------------------------------

    @property
    def G_sample(self) -> nn.Module:
        """The generator used for samples: the EMA copy when enabled."""
        return self.G_ema if self.G_ema is not None else self.G

    @torch.inference_mode()
    def generate(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        G = self.G_sample
        was_training = G.training
        G.eval()
        try:
            return self.family.generate(G, z.to(self.device), None if y is None else y.to(self.device))
        finally:
            G.train(was_training)

    # --- one step -----------------------------------------------------------------------------

    def next_batch(self) -> dict[str, Tensor]:
        assert self.data is not None and self.sampler is not None, "Trainer was built without data"
        batch = self.dist.shard_batch(self.sampler.next_batch(self.data))
        return to_memory_format(batch, self.channels_last)

    def phase_loss(
        self,
        loss_fn: Callable[..., tuple[Tensor, dict[str, Tensor]]],
        batch: dict[str, Tensor],
        regulariser: bool = False,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """A family's loss under the precision policy (the regulariser's, for the lazy R1/R2 phase);
        noise drawn for the global batch when sharded."""
        amp = self.precision.regulariser_autocast() if regulariser else self.precision.autocast()
        with amp, self.dist.sharded_draws(self.noise):
            return loss_fn(self.G, self.D, batch, self.noise)

    def train_step(self) -> dict[str, Tensor]:
        """One generator step preceded by `n_dis` discriminator steps; returns device-tensor stats."""
        t = self.cfg.train
        G, D, family, amp = self.G, self.D, self.family, self.precision
        G.train()
        D.train()
        stats: dict[str, Tensor] = {}
        skipped = torch.zeros((), device=self.device)  # optimiser steps the guard skipped (NaN/inf)
        self.set_learning_rates()
        family.progress = self.step / (self.cfg.stab.noise_steps or t.steps)

        # D phase(s): only D's parameters take gradients.
        set_requires_grad(self.g_params, False)
        set_requires_grad(self.d_params, True)
        for _ in range(t.n_dis):
            batch = self.next_batch()
            d_loss, d_stats = self.phase_loss(family.d_loss, batch)
            self.opt_D.zero_grad(set_to_none=True)
            amp.backward(d_loss, self.opt_D)
            d_loss = self.dist.sync_grads(D, d_loss)
            d_stats["Grad/D"] = grad_norm(self.d_params)
            skipped += self.guard.step(self.opt_D, d_loss, d_stats["Grad/D"])
            d_stats["Grad/D"] = amp.stat(d_stats["Grad/D"])
            amp.update()
            if family.loss.weight_clip:
                with torch.no_grad():
                    torch._foreach_clamp_min_(self.d_params, -self.cfg.loss.clip)
                    torch._foreach_clamp_max_(self.d_params, self.cfg.loss.clip)
            if t.n_dis == 1:
                stats.update(d_stats)
            else:
                for key, value in d_stats.items():
                    stats[key] = stats.get(key, 0.0) + value / t.n_dis

        # Lazy regularisation phase (R1/R2 every `reg_every` steps, scaled by it: Karras et al. 2020).
        stab = self.cfg.stab
        if (stab.r1_gamma or stab.r2_gamma) and self.step % stab.reg_every == 0:
            reg_loss, reg_stats = self.phase_loss(family.d_reg_loss, batch, regulariser=True)
            self.opt_D.zero_grad(set_to_none=True)
            amp.backward(reg_loss * stab.reg_every, self.opt_D, scaled=amp.regulariser_scaled)
            reg_loss = self.dist.sync_grads(D, reg_loss)
            skipped += self.guard.step(self.opt_D, reg_loss, grad_norm(self.d_params))
            amp.update(scaled=amp.regulariser_scaled)
            stats.update(reg_stats)

        # G phase: gradients flow through D to G, but only G is updated.
        set_requires_grad(self.d_params, False)
        set_requires_grad(self.g_params, True)
        g_loss, g_stats = self.phase_loss(family.g_loss, batch)
        self.opt_G.zero_grad(set_to_none=True)
        amp.backward(g_loss, self.opt_G)
        g_loss = self.dist.sync_grads(G, g_loss)
        g_stats["Grad/G"] = grad_norm(self.g_params)
        skipped += self.guard.step(self.opt_G, g_loss, g_stats["Grad/G"])
        g_stats["Grad/G"] = amp.stat(g_stats["Grad/G"])
        amp.update()
        set_requires_grad(self.d_params, True)
        stats.update(g_stats)
        stats["Guard/skipped"] = skipped

        if self.G_ema is not None:
            # Warm-up: early on, average over the few steps taken so far (TF's num_updates rule).
            decay = min(t.ema_decay, (1 + self.step) / (10 + self.step))
            ema_update(self.G_ema, G, decay, (self.ema_params, self.g_params))
        self.step += 1
        return stats

    def set_learning_rates(self) -> None:
        """Learning rates for this step: a function of the step and the guard's rollbacks."""
        t = self.cfg.train
        factor = self.guard.lr_scale
        if t.lr_decay != "none":
            frac = self.step / t.steps
            factor *= 1.0 - frac if t.lr_decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * frac))
        for opt, base in ((self.opt_G, t.g_lr), (self.opt_D, t.d_lr)):
            for group in opt.param_groups:
                group["lr"] = base * factor

    # --- the loop ---------------------------------------------------------------------------------

    def fit(self) -> None:
        """Train until `train.steps`, calling the callbacks; stops early (cleanly) on request."""
        t = self.cfg.train
        for cb in self.callbacks:
            cb.on_train_start(self)
        self.guard.start(self)
        start, start_elapsed = time.perf_counter(), self.elapsed
        while self.step < t.steps and not self.dist.any(self.stop_requested):  # a stop on any rank
            stats = self.train_step()
            if self.guard.after_step(self, stats["Guard/skipped"]):  # rolled back to a good state
                self._acc, self._acc_n = {}, {}
                continue
            for key, value in stats.items():
                self._acc[key] = self._acc.get(key, 0.0) + value.detach().float()
                self._acc_n[key] = self._acc_n.get(key, 0) + 1
            self.elapsed = start_elapsed + time.perf_counter() - start
            if self.step % t.log_every == 0 or self.step == t.steps:
                record = self.flush_stats()
                for cb in self.callbacks:
                    cb.on_log(self, record)
            for cb in self.callbacks:
                cb.on_step_end(self)
        for cb in self.callbacks:
            cb.on_train_end(self)

    def flush_stats(self) -> dict[str, Any]:
        """Means of the stats since the last flush (over ranks too), read from the device in one
        synchronisation."""
        keys = sorted(self._acc)
        values = (
            self.dist.mean(torch.stack([self._acc[k] / self._acc_n[k] for k in keys])).tolist()
            if keys
            else []
        )
        self._acc, self._acc_n = {}, {}
        return {"step": self.step, **dict(zip(keys, values)), "time": round(self.elapsed, 3)}

    # --- state -------------------------------------------------------------------------------------

    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Every tensor of this process's training state, and the JSON rest (under torchrun,
        :meth:`shared_state` is the whole run's)."""
        tensors = {**prefixed("G", self.G.state_dict()), **prefixed("D", self.D.state_dict())}
        if self.G_ema is not None:
            tensors.update(prefixed("G_ema", self.G_ema.state_dict()))
        opt_g, opt_g_meta = flatten_optimizer("opt_G", self.opt_G.state_dict())
        opt_d, opt_d_meta = flatten_optimizer("opt_D", self.opt_D.state_dict())
        tensors.update(opt_g)
        tensors.update(opt_d)
        tensors["rng/noise"] = self.noise.get_state()
        rng_tensors, rng_meta = global_rng_state()  # python, numpy, torch CPU/CUDA global RNGs
        tensors.update(rng_tensors)
        if self.sampler is not None:
            tensors.update(prefixed("data", self.sampler.state_tensors()))
        tensors.update(prefixed("fakes", self.family.cached_fakes))  # D's next fakes (train.reuse_fakes)
        meta = {
            "format": "ganforge-checkpoint/1",
            "version": __version__,
            "model": self.cfg.model,
            "step": self.step,
            "elapsed": self.elapsed,
            "config": to_dict(self.cfg),
            "spec": self.spec.to_dict(),
            "opt_G": opt_g_meta,
            "opt_D": opt_d_meta,
            "rng": rng_meta,
            "guard": self.guard.state(),
        }
        return tensors, meta

    def shared_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """`state()` of the whole run: under torchrun, D's cached fakes (the one per-rank part) are
        gathered from every rank in rank order, as one process with the global batch holds them. A
        collective: every rank calls it; :meth:`load_state` takes this rank's rows back."""
        tensors, meta = self.state()
        fakes = self.dist.gather_rows(unprefixed("fakes", tensors))
        return {**tensors, **prefixed("fakes", fakes)}, meta

    def load_state(
        self, tensors: dict[str, Tensor], meta: dict[str, Any], weights_only: bool = False
    ) -> None:
        """Restore from `state()` output; `weights_only` restores just the networks (for sampling)."""
        if meta.get("model") != self.cfg.model:
            raise CheckpointError(f"checkpoint is of model {meta.get('model')!r}, not {self.cfg.model!r}")
        try:
            self.G.load_state_dict(unprefixed("G", tensors))
            self.D.load_state_dict(unprefixed("D", tensors))
            if self.G_ema is not None:
                self.G_ema.load_state_dict(unprefixed("G_ema", tensors) or unprefixed("G", tensors))
        except RuntimeError as err:
            lines = [ln.strip() for ln in str(err).strip().splitlines()]
            detail = next((ln for ln in lines[1:] if ln), lines[0])  # torch's first line only names the class
            raise CheckpointError(
                f"checkpoint weights do not fit the configured networks: {detail}"
            ) from None
        self.step = int(meta["step"])
        self.elapsed = float(meta.get("elapsed", 0.0))
        if weights_only:
            return
        try:
            self.opt_G.load_state_dict(unflatten_optimizer("opt_G", tensors, meta["opt_G"]))
            self.opt_D.load_state_dict(unflatten_optimizer("opt_D", tensors, meta["opt_D"]))
            match_param_layouts(self.opt_G)
            match_param_layouts(self.opt_D)
            self.noise.set_state(tensors["rng/noise"])
            if self.sampler is not None:
                self.sampler.load_state_tensors(unprefixed("data", tensors))
            fakes = self.dist.own_rows(
                {k: v.to(self.device) for k, v in unprefixed("fakes", tensors).items()}
            )
            self.family.cached_fakes = to_memory_format(fakes, self.channels_last) if fakes else {}
        except (KeyError, ValueError, TypeError, RuntimeError, IndexError) as err:
            raise CheckpointError(f"checkpoint training state is incomplete or corrupt: {err!r}") from None
        set_global_rng_state(tensors, meta.get("rng", {}))
        self.guard.load_state(meta.get("guard", {}))
