"""Synthetic tabular data: a CTGAN-class model on ganforge's engine, with quality/privacy reports.

    >>> from ganforge.tabular import TabularGAN, evaluate
    >>> model = TabularGAN(epochs=100).fit("adult.csv")
    >>> synth = model.sample(10_000)
    >>> report = evaluate(real, synth, holdout=test, target="income")

Modules: `schema` (column kinds), `mixture` (the variational Gaussian mixture), `transformer`
(mode-specific normalisation), `model` (`TabularGAN`), `io` (CSV/Parquet), `metrics` and
`report` (fidelity, utility, privacy; JSON and HTML). The networks live in
`ganforge.families.tabular`; training is the shared engine.

Not offered: differential privacy. Opacus installs beside torch 2.13 without changing it, but
DP-SGD does not fit CTGAN as is: Opacus's per-sample gradients do not support WGAN-GP's double
backward, training-by-sampling picks rows by their categories (no Poisson subsampling, so the
accountant's amplification bound does not hold), and the conditional vector G trains on is
drawn from the data's category frequencies outside the clipped gradients. A sound version needs
a penalty-free loss, uniform Poisson batches and noisy category counts; until then no epsilon
is reported rather than a wrong one.
"""

from .io import read_table, write_table
from .model import TabularGAN
from .schema import ColumnSchema, Schema, infer_schema
from .transformer import TableTransformer, TabularWarning

__all__ = [
    "ColumnSchema",
    "Schema",
    "TableTransformer",
    "TabularGAN",
    "TabularWarning",
    "infer_schema",
    "read_table",
    "write_table",
]
