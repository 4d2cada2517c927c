"""Drawing samples from a trained generator, optionally with Jacobian-based truncation.

A generator that is continuous in a connected latent space cannot map it onto disconnected
modes without also producing samples *between* them (Tanielian et al. 2020, "Learning
disconnected manifolds: a no GAN's land", Thm. 3). Where it crosses from one mode to the next,
G is steep: the Frobenius norm of its Jacobian dG/dz is large exactly on those transit samples.
Their Jacobian-based truncation sampling (JBTS, Sec. 4) rejects latent draws whose norm is too
large. Here the threshold is relative: `limit` times the median norm over a fixed set of
calibration draws, so it depends on the model alone, rejects nothing where G is nowhere
unusually steep, and at most half of the draws (`limit` > 1).

Norms are exact for latents of up to 16 dimensions (one forward-mode JVP per axis); beyond that
they are Hutchinson estimates, E_v ||J v||^2 = ||J||_F^2 for v ~ N(0, I), from 4 probes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..config import SampleConfig
from ..errors import GanforgeError

if TYPE_CHECKING:
    from .trainer import Trainer

EXACT_MAX_DIM = 16  # latent sizes up to this get the exact norm (one JVP per axis)
PROBES = 4  # random directions of the Hutchinson estimate above that size
CALIBRATION = 2048  # latent draws whose median norm scales the threshold
CALIBRATION_SEED = 20200713  # fixed: the threshold is the model's, not the request's
MAX_ROUNDS = 64  # each round at least halves the draws still to accept (limit > 1)


def jacobian_norm(
    fn: Callable[[Tensor], Tensor], z: Tensor, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """(fn(z), ||d fn / dz||_F per row): outputs (N, ...) and norms (N,), by forward-mode JVPs.

    Exact when z has at most EXACT_MAX_DIM columns; otherwise a Hutchinson estimate from PROBES
    Gaussian directions drawn with `generator`. `fn` must map rows independently (eval mode)."""
    n, dim = z.shape
    if dim <= EXACT_MAX_DIM:
        directions = [axis.expand(n, dim) for axis in torch.eye(dim, dtype=z.dtype, device=z.device)]
    else:  # drawn on the CPU, where the generator lives, then moved
        directions = [
            torch.randn(z.shape, generator=generator, dtype=z.dtype).to(z.device) for _ in range(PROBES)
        ]
    out: Tensor | None = None
    acc = torch.promote_types(z.dtype, torch.float32)  # at least float32; float64 only if z is (MPS has none)
    sq = torch.zeros(n, device=z.device, dtype=acc)
    for v in directions:
        y, jv = torch.func.jvp(fn, (z,), (v,))
        out = y if out is None else out
        sq += jv.reshape(n, -1).to(acc).pow(2).sum(1)
    if dim > EXACT_MAX_DIM:
        sq /= PROBES
    assert out is not None
    return out, sq.sqrt()


@torch.no_grad()
def jbts_threshold(trainer: Trainer, limit: float, batch_size: int) -> float:
    """The norm above which draws are rejected: `limit` x the median over CALIBRATION draws."""
    fam = trainer.family
    gen = torch.Generator().manual_seed(CALIBRATION_SEED)
    z = fam.sample_z(CALIBRATION, torch.device("cpu"), gen)
    y = torch.arange(CALIBRATION) % trainer.spec.n_classes if fam.conditional else None
    norms = [
        steep(trainer, z[i : i + batch_size], None if y is None else y[i : i + batch_size], gen)[1]
        for i in range(0, CALIBRATION, batch_size)
    ]
    return limit * float(torch.cat(norms).median())


def steep(trainer: Trainer, z: Tensor, y: Tensor | None, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Samples of the sampling generator (eval mode) for z (and labels y), and their Jacobian norms."""
    G, fam, dev = trainer.G_sample, trainer.family, trainer.device
    was_training = G.training
    G.eval()
    try:
        yd = None if y is None else y.to(dev)
        x, norm = jacobian_norm(lambda zz: fam.generate(G, zz, yd), z.to(dev), generator=gen)
    finally:
        G.train(was_training)
    return x.float().cpu(), norm.cpu()


def sample_batches(
    trainer: Trainer,
    n: int,
    seed: int,
    batch_size: int,
    labels: Tensor | None = None,
    jacobian_limit: float | None = None,
) -> Iterator[tuple[Tensor, Tensor | None]]:
    """(samples, labels or None) in batches, as the generator makes them ([-1, 1] for images).

    z for all n samples is drawn at once from `seed` (noise is small), so a seed gives the same
    samples whatever the batch size. With `jacobian_limit` > 0 (None: the run's
    `sample.jacobian_limit`), draws steeper than the JBTS threshold are replaced by fresh draws
    from the same stream (same labels), until all n pass."""
    if jacobian_limit is None:
        jacobian_limit = trainer.cfg.sample.jacobian_limit
    else:
        SampleConfig(jacobian_limit=jacobian_limit).validate()
    fam = trainer.family
    gen = torch.Generator().manual_seed(seed)
    z = fam.sample_z(n, torch.device("cpu"), gen)  # (n, z_dim)
    if not jacobian_limit:
        for i in range(0, n, batch_size):
            yb = None if labels is None else labels[i : i + batch_size]
            yield trainer.generate(z[i : i + batch_size], yb).float().cpu(), yb
        return
    tau = jbts_threshold(trainer, jacobian_limit, batch_size)
    if not math.isfinite(tau):
        raise GanforgeError(
            "Jacobian truncation: the generator's Jacobian is not finite (NaN/inf outputs?); "
            "sample without it (jacobian_limit 0)"
        )
    out: Tensor | None = None
    todo = torch.arange(n)  # positions still without an accepted sample
    for _ in range(MAX_ROUNDS):
        if not len(todo):
            break
        rejected = []
        for idx in todo.split(batch_size):
            with torch.no_grad():
                x, norm = steep(trainer, z[idx], None if labels is None else labels[idx], gen)
            if out is None:
                out = x.new_empty((n, *x.shape[1:]))
            ok = norm <= tau
            out[idx[ok]] = x[ok]
            rejected.append(idx[~ok])
        todo = torch.cat(rejected)
        z[todo] = fam.sample_z(len(todo), torch.device("cpu"), gen)
    if len(todo):  # each round keeps about half the draws or more while limit > 1
        raise GanforgeError(
            f"Jacobian truncation: {len(todo)} of {n} draws still rejected after {MAX_ROUNDS} rounds "
            "(NaN/inf outputs?); sample without it (jacobian_limit 0)"
        )
    assert out is not None
    for i in range(0, n, batch_size):
        yield out[i : i + batch_size], None if labels is None else labels[i : i + batch_size]
