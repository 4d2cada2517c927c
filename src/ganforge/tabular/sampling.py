"""Which real rows a tabular training step sees, and the conditional vectors that go with them.

:class:`TableSampler` is CTGAN's training-by-sampling (Xu et al. 2019, Sec. 4.3): rows are
chosen *because* they have a category, so rare categories are learned. :class:`UniformTableSampler`
is the sampler of private training: rows are chosen independently of their values, which is what
DP-SGD's privacy amplification by subsampling assumes (Abadi et al. 2016, Sec. 3.1). Both are the
engine's data source for the `tabular` family (:mod:`ganforge.families.tabular`), which builds them
in `make_sampler`; their state is one torch generator, saved in checkpoints.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..data import Dataset
from ..families.tabular import Layout


class TableSampler:
    """Training-by-sampling (Xu et al. 2019, Sec. 4.3), vectorised with torch.

    Each batch: a discrete column per row (uniform), a category (~ log(1 + count)), the
    conditional vector c for G, and real rows having those categories, shuffled against c as
    in the reference implementation (`c_real` goes with `x`). Without discrete columns, rows are
    drawn uniformly with replacement. State: one generator (saved in checkpoints).
    """

    def __init__(self, x: Tensor, layout: Layout, batch_size: int, seed: int, log_frequency: bool) -> None:
        self.n, self.batch_size, self.layout = x.shape[0], batch_size, layout
        self.generator = torch.Generator().manual_seed(seed)
        if not layout.cond_widths:
            return
        xc = x.detach().cpu()
        rows, starts, counts, cdf, codes = [], [], [], [], []
        kc = max(layout.cond_widths)
        base = 0
        for s, w in zip(layout.cond_starts, layout.cond_widths):
            code = xc[:, s : s + w].argmax(dim=1)
            count = torch.bincount(code, minlength=w)
            order = torch.argsort(code, stable=True)  # rows grouped by category
            rows.append(order.to(torch.int32))
            starts.append(base + torch.cumsum(count, 0) - count)
            counts.append(count)
            codes.append(code)
            freq = torch.log1p(count.double()) if log_frequency else count.double()
            row = torch.ones(kc, dtype=torch.float64)
            row[:w] = torch.cumsum(freq / freq.sum(), 0)
            cdf.append(row)
            base += self.n
        self.rows = torch.cat(rows)  # (n_cond * N,) row ids, grouped by column then category
        self.cat_start = torch.cat(starts)  # (cond_dim,) where each category's rows begin
        self.cat_count = torch.cat(counts)  # (cond_dim,)
        self.codes = torch.stack(codes, dim=1)  # (N, n_cond) each row's category in each column
        self.cdf = torch.stack(cdf).float()  # (n_cond, K_max) per-column category CDF
        self.offsets = torch.tensor(layout.cond_offsets)
        self.widths = torch.tensor(layout.cond_widths)

    def draw_condition(self) -> tuple[Tensor, Tensor, Tensor]:
        """(c, col, opt) for G: a column uniformly, then a category from the column's CDF."""
        B, g = self.batch_size, self.generator
        col = torch.randint(len(self.layout.cond_widths), (B,), generator=g)
        u = torch.rand(B, 1, generator=g)
        opt = torch.minimum((self.cdf[col] < u).sum(1), self.widths[col] - 1)
        c = torch.zeros(B, self.layout.cond_dim).scatter_(1, (self.offsets[col] + opt)[:, None], 1.0)
        return c, col, opt

    def next_batch(self, data: Dataset) -> dict[str, Tensor]:
        B, g, dev = self.batch_size, self.generator, data.x.device
        if not self.layout.cond_widths:
            return {"x": data.x[torch.randint(self.n, (B,), generator=g).to(dev)]}
        c, col, opt = self.draw_condition()
        perm = torch.randperm(B, generator=g)
        cat_real = (self.offsets[col] + opt)[perm]
        pick = (torch.rand(B, generator=g) * self.cat_count[cat_real]).long()
        rows = self.rows[self.cat_start[cat_real] + pick].long()
        return {
            "x": data.x[rows.to(dev)],
            "c": c.to(dev),
            "c_real": c[perm].to(dev),
            "col": col.to(dev),
            "opt": opt.to(dev),
        }

    def state_tensors(self) -> dict[str, Tensor]:
        return {"rng": self.generator.get_state()}

    def load_state_tensors(self, state: dict[str, Tensor]) -> None:
        self.generator.set_state(state["rng"])


class UniformTableSampler(TableSampler):
    """The sampler of private training: `batch_size` distinct rows drawn uniformly each step, so
    each row is in a batch with probability q = B / N whatever its values (the subsampling that
    DP-SGD's accounting assumes). A real row's c is its own category in a uniformly drawn column;
    G's c is drawn by category frequency (`log_frequency` off), so both follow the same law."""

    def next_batch(self, data: Dataset) -> dict[str, Tensor]:
        B, g, dev = self.batch_size, self.generator, data.x.device
        rows = torch.randperm(self.n, generator=g)[:B]
        if not self.layout.cond_widths:
            return {"x": data.x[rows.to(dev)]}
        c, col, opt = self.draw_condition()
        col_real = torch.randint(len(self.layout.cond_widths), (B,), generator=g)
        cat_real = self.offsets[col_real] + self.codes[rows, col_real]
        c_real = torch.zeros(B, self.layout.cond_dim).scatter_(1, cat_real[:, None], 1.0)
        return {
            "x": data.x[rows.to(dev)],
            "c": c.to(dev),
            "c_real": c_real.to(dev),
            "col": col.to(dev),
            "opt": opt.to(dev),
        }
