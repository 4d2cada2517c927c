"""Synthetic tabular data: a CTGAN-class model on ganforge's engine, with quality/privacy reports.

    >>> from ganforge.tabular import TabularGAN
    >>> from ganforge.tabular.report import evaluate
    >>> model = TabularGAN(epochs=100).fit("adult.csv")
    >>> synth = model.sample(10_000)
    >>> report = evaluate(real, synth, holdout=test, target="income")

Modules: `schema` (column kinds), `mixture` (the variational Gaussian mixture), `transformer`
(mode-specific normalisation), `sampling` (training-by-sampling; the uniform sampler of private
training), `model` (`TabularGAN`), `privacy` (DP-SGD on the critic and its accounting), `io`
(CSV/Parquet), `metrics` and `report` (fidelity, utility, privacy; JSON and HTML). The networks
live in `ganforge.families.tabular`; training is the shared engine.

Differential privacy: `TabularGAN(dp_epsilon=1.0)` trains the critic with DP-SGD (per-pack
clipping of the critic loss *including* its gradient penalty, Gaussian noise, uniform batches) and
records the spent (epsilon, delta) in the model folder; the column transformer is fitted without
privacy. See `privacy` and docs/tabular.md.
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
