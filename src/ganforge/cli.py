"""The `ganforge` command: a thin layer over the public API.

Errors a user can fix (GanforgeError, bad arguments) print one line on stderr and exit 2;
nothing is written before all inputs are checked. Under `torchrun` (docs/distributed.md) every
process that stops prints its error; warnings and the summary line come from rank 0 only.
"""

from __future__ import annotations

import argparse
import signal
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from . import __version__
from .engine import Callback
from .engine.checkpoint import USER_WRITE_ERRORS, write_error_reason
from .engine.distributed import is_main
from .errors import GanforgeError, GanforgeWarning

SAMPLE_FORMATS = (".png", ".npy", ".npz")
MAX_GRID_CLASSES = 32  # class-ordered sample grids: at most this many columns
JACOBIAN_LIMIT_HELP = (
    "redraw latents where ||dG/dz|| exceeds K x its median: drops samples in transit between modes "
    "(Jacobian-based truncation, Tanielian et al. 2020; default: the run's sample.jacobian_limit, 0 = off)"
)


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


class StopOnSignal(Callback):
    """SIGINT/SIGTERM ask the trainer to stop at the next step boundary; the run writer then
    saves a checkpoint, so `--resume` continues exactly where it stopped."""

    def on_train_start(self, trainer: Any) -> None:
        def handler(signum: int, frame: Any) -> None:
            if trainer.stop_requested:  # a second signal: stop now
                raise KeyboardInterrupt
            trainer.stop_requested = True
            try:  # stderr may be a pipe closed by the same Ctrl-C (`ganforge train ... | tee log`)
                print(
                    f"\nganforge: {signal.Signals(signum).name} received; stopping after the current step "
                    "with a checkpoint",
                    file=sys.stderr,
                )
            except (OSError, ValueError):
                pass

        self.previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}

    def on_train_end(self, trainer: Any) -> None:
        self.restore()

    def restore(self) -> None:
        """Put the previous handlers back (also when training ended with an error)."""
        for sig, old in getattr(self, "previous", {}).items():
            signal.signal(sig, old)
        self.previous = {}


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="ganforge", description="Train, sample and inspect generative adversarial networks."
    )
    p.add_argument("--version", action="version", version=f"ganforge {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)

    t = sub.add_parser("train", help="train a GAN and write a run folder")
    t.add_argument("--data", help="built-in dataset name (see `ganforge list`) or a path to your data")
    t.add_argument("--model", help="GAN family (default: mlp for 2-D points, dcgan for images)")
    t.add_argument("--loss", help="adversarial loss (default: ns)")
    t.add_argument("--steps", type=int, help="generator steps in total")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--seed", type=int)
    t.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    t.add_argument("--config", type=Path, help="YAML/JSON config file")
    t.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set train.n_dis=2 --set net.z_dim=64 (repeatable)",
    )
    t.add_argument("--out", type=Path, help="run folder to create (or to continue with --resume)")
    t.add_argument(
        "--resume",
        nargs="?",
        const="yes",
        metavar="RUN_DIR|auto",
        help="continue the run in RUN_DIR (or in --out); 'auto' continues when --out holds a checkpoint",
    )
    t.add_argument("--allow-config-change", action="store_true", help="accept a changed config when resuming")
    t.add_argument("--quiet", action="store_true", help="no progress display")

    s = sub.add_parser(
        "sample",
        help="draw samples from a trained run (conditional models: classes in turn, one column each)",
    )
    s.add_argument("run", type=Path, help="run folder")
    s.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", type=Path, required=True, help="output file: .png (grid), .npy or .npz")
    s.add_argument("--device", default="cpu")
    s.add_argument(
        "--truncation",
        type=float,
        metavar="PSI",
        help="truncation trick w_avg + psi (w - w_avg) for style-based models (default: the run's, 1 = off)",
    )
    s.add_argument("--jacobian-limit", type=float, metavar="K", help=JACOBIAN_LIMIT_HELP)

    sub.add_parser("list", help="list models, losses and datasets")

    e = sub.add_parser(
        "evaluate", help="measure a trained run (FID, KID, precision/recall, IS, modes, GAN-test accuracy)"
    )
    e.add_argument("run", type=Path, help="run folder, or a tabular model folder (with --against TABLE)")
    e.add_argument(
        "--metrics", default="fid,kid,pr,dc,is,modes", help="comma-separated (default: all that apply)"
    )
    e.add_argument(
        "--n",
        type=int,
        help="generated samples (default 10000; 2500 for 2-D toys; tables: the reference rows)",
    )
    e.add_argument(
        "--against",
        metavar="DATA",
        help="compare with this dataset or path (default: the run's data); a table for tabular model folders",
    )
    e.add_argument("--seed", type=int, default=0, help="noise seed of the samples")
    e.add_argument("--inception-weights", type=Path, metavar="PATH", help="FID Inception weights (RGB data)")
    e.add_argument(
        "--extractor",
        help="features: digits, points or inception; table for tabular models (default: by data)",
    )
    e.add_argument("--resize", choices=("legacy", "clean"), default="legacy", help="Inception resizing")
    e.add_argument("--device", default="cpu")
    e.add_argument("--jacobian-limit", type=float, metavar="K", help=JACOBIAN_LIMIT_HELP)
    e.add_argument("--json", action="store_true", help="print the result as JSON")

    w = sub.add_parser("sweep", help="train a grid of settings x seeds and compare them (heat maps)")
    w.add_argument("--data", required=True, help="dataset name or path")
    w.add_argument("--model")
    w.add_argument("--loss")
    w.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        required=True,
        help="a config key and the values to try (repeat for more axes; a+b=... ties two keys to one axis)",
    )
    w.add_argument("--seeds", type=int, default=3, help="seeds per cell (default 3)")
    w.add_argument("--steps", type=int)
    w.add_argument(
        "--metric",
        help="value to compare: rkl, modes, fid, kid, precision, recall, coverage, is "
        "(default: rkl for toy mixtures, else fid)",
    )
    w.add_argument("--n", type=int, help="samples per evaluation")
    w.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    w.add_argument("--out", type=Path, required=True, help="sweep folder (re-running continues it)")

    add_tabular_parser(sub)
    return p


def cmd_sweep(args: argparse.Namespace) -> int:
    from .sweep import sweep

    sweep(
        args.data,
        args.grid,
        args.out,
        seeds=args.seeds,
        model=args.model,
        loss=args.loss,
        steps=args.steps,
        metric=args.metric,
        overrides=args.overrides,
        n=args.n,
    )
    print((args.out / "summary.md").read_text(encoding="utf-8"), end="")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .api import train

    resume: bool | str = False
    out = args.out
    if args.resume == "auto":
        resume = "auto"
    elif args.resume == "yes":
        resume = True
    elif args.resume is not None:
        if out is not None and Path(args.resume) != out:
            raise GanforgeError(f"--resume {args.resume} and --out {out} name different run folders")
        out, resume = Path(args.resume), True
    if out is None:
        raise GanforgeError("--out RUN_DIR is required (the run folder to write)")
    stop = StopOnSignal()
    try:
        gan = train(
            data=args.data,
            model=args.model,
            loss=args.loss,
            out=out,
            steps=args.steps,
            batch_size=args.batch_size,
            seed=args.seed,
            device=args.device,
            config=args.config,
            overrides=args.overrides,
            resume=resume,
            allow_config_change=args.allow_config_change,
            progress=not args.quiet,
            callbacks=[stop],
        )
    finally:
        stop.restore()
    if is_main():
        print(f"run folder: {out}  (step {gan.step}; samples in {out / 'samples'})", file=sys.stderr)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from .api import load
    from .engine.checkpoint import atomic_write
    from .report import save_grid, save_points

    suffix = args.out.suffix.lower()
    if suffix not in SAMPLE_FORMATS:
        raise GanforgeError(
            f"--out {args.out}: unsupported format {suffix or '(none)'}; use {', '.join(SAMPLE_FORMATS)}"
        )
    if args.n < 1:
        raise GanforgeError(f"--n must be at least 1, got {args.n}")
    gan = load(args.run, device=args.device)
    x = gan.sample(args.n, seed=args.seed, truncation=args.truncation, jacobian_limit=args.jacobian_limit)
    labels = (np.arange(args.n) % gan.spec.n_classes) if gan.trainer.family.conditional else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".png" and gan.spec.kind == "points":
        atomic_write(args.out, lambda tmp: save_points(x, tmp))
    elif suffix == ".png":
        # Conditional models: one column per class (labels cycle 0, 1, ..., K-1), when K fits a row.
        nrow = gan.spec.n_classes if labels is not None and gan.spec.n_classes <= MAX_GRID_CLASSES else None
        atomic_write(args.out, lambda tmp: save_grid(x, tmp, nrow=nrow))
    elif suffix == ".npy":  # through a file object: np.save would append ".npy" to "x.NPY"
        atomic_write(args.out, lambda tmp: _write_with(tmp, np.save, x.numpy()))
    else:
        arrays = {"x": x.numpy()} | ({"y": labels} if labels is not None else {})
        atomic_write(args.out, lambda tmp: _write_with(tmp, np.savez, **arrays))
    print(f"wrote {args.n} samples to {args.out}", file=sys.stderr)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from .api import list_components

    for section, rows in list_components().items():
        print(f"{section}:")
        width = max(len(name) for name, _ in rows)
        for name, text in rows:
            print(f"  {name:<{width}}  {text}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from .evaluate import evaluate, format_result

    result = evaluate(
        args.run,
        metrics=args.metrics,
        n=args.n,
        against=args.against,
        seed=args.seed,
        inception_weights=args.inception_weights,
        extractor=args.extractor,
        resize=args.resize,
        device=args.device,
        jacobian_limit=args.jacobian_limit,
    )
    print(json.dumps(result) if args.json else format_result(result))
    return 0


# --- `ganforge tabular ...`: synthetic tables (ganforge.tabular) ------------------------------------


def add_tabular_parser(sub: Any) -> None:
    tp = sub.add_parser("tabular", help="synthetic tables: fit a CTGAN-class model, sample, report")
    tsub = tp.add_subparsers(dest="tabular_command", required=True, parser_class=ArgumentParser)
    table_opts = ArgumentParser(add_help=False)
    table_opts.add_argument("--delimiter", help="CSV delimiter (default: detected among , ; tab |)")
    table_opts.add_argument("--encoding", default="utf-8", help="text encoding of CSV files (default utf-8)")
    table_opts.add_argument("--schema", type=Path, help="JSON/YAML file overriding inferred column kinds")

    f = tsub.add_parser(
        "fit", parents=[table_opts], help="learn a table (.csv/.tsv/.parquet), write a model folder"
    )
    f.add_argument("data", type=Path, help="the table")
    f.add_argument("--out", type=Path, required=True, help="model folder to create")
    f.add_argument("--epochs", type=int, default=300, help="passes over the data (default 300, as CTGAN)")
    f.add_argument("--steps", type=int, help="generator steps in total (overrides --epochs)")
    f.add_argument("--batch-size", type=int, default=500, help="a multiple of --pac (default 500)")
    f.add_argument("--pac", type=int, default=10, help="rows the critic judges together (default 10)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--device", default="cpu")
    f.add_argument(
        "--amp",
        default="off",
        choices=["off", "bf16", "fp16"],
        help="mixed-precision forward passes: bf16 (CPU, CUDA) or fp16 (CUDA); default off",
    )
    f.add_argument("--lr", type=float, default=5e-4, help="Adam's step for both networks (default 5e-4)")
    f.add_argument(
        "--ema-decay",
        type=float,
        default=0.999,
        help="sample from an average of the generator's weights with this decay (default 0.999; 0: "
        "its last weights, as CTGAN)",
    )
    f.add_argument(
        "--fresh-fakes",
        action="store_true",
        help="the generator step draws new rows, as CTGAN's code does, instead of back-propagating "
        "through the rows the critic step judged (the default; about 1.2x faster)",
    )
    f.add_argument(
        "--dp-epsilon",
        type=float,
        help="train the critic with DP-SGD to spend at most this epsilon (needs opacus)",
    )
    f.add_argument("--dp-delta", type=float, help="the delta of the DP guarantee (default 1 / rows^1.1)")
    f.add_argument(
        "--dp-max-grad-norm", type=float, default=1.0, help="DP-SGD clip C per pack of rows (default 1)"
    )
    f.add_argument("--quiet", action="store_true", help="no progress display")

    s = tsub.add_parser("sample", help="generate rows from a model folder")
    s.add_argument("run", type=Path, help="model folder written by `ganforge tabular fit`")
    s.add_argument("--n", type=int, default=1000, help="rows to generate (default 1000)")
    s.add_argument("--out", type=Path, required=True, help="output table: .csv, .tsv or .parquet")
    s.add_argument("--seed", type=int, help="noise seed (default: the model's)")
    s.add_argument(
        "--condition",
        action="append",
        default=[],
        metavar="COL=VALUE",
        help="fix a categorical column (repeatable)",
    )
    s.add_argument(
        "--cond-sampling",
        choices=["data", "log", "uniform"],
        default="data",
        help="categories of the unconditioned rows' conditional vectors: by their training frequency "
        "(data: the real marginals; default), ~log(1+count) as CTGAN samples (log: more rare "
        "categories) or all alike (uniform: balanced rows)",
    )
    s.add_argument(
        "--no-calibrate",
        dest="calibrate",
        action="store_false",
        help="return the generator's rows as they come instead of drawing them from a 3x pool "
        "weighted to the training table's category frequencies (the default with --cond-sampling data)",
    )

    r = tsub.add_parser(
        "report", parents=[table_opts], help="fidelity, utility and privacy of a synthetic table"
    )
    r.add_argument("real", type=Path, help="the training table")
    r.add_argument("synthetic", type=Path, help="the synthetic table")
    r.add_argument("--out", type=Path, required=True, help="report file: .html (with plots) or .json")
    r.add_argument(
        "--holdout", type=Path, help="real rows kept out of training (privacy baselines, utility test)"
    )
    r.add_argument("--target", help="column to predict for the utility score")
    r.add_argument("--json", type=Path, dest="json_out", help="also write the report as JSON here")
    r.add_argument(
        "--model", type=Path, help="model folder of the synthetic table: report its differential privacy"
    )
    r.add_argument("--seed", type=int, default=0)

    c = tsub.add_parser("schema", parents=[table_opts], help="print the inferred column kinds (YAML)")
    c.add_argument("data", type=Path, help="the table")


def cmd_tabular(args: argparse.Namespace) -> int:
    import warnings

    from .tabular.transformer import TabularWarning

    commands = {"fit": _tab_fit, "sample": _tab_sample, "report": _tab_report, "schema": _tab_schema}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TabularWarning)
        try:
            return commands[args.tabular_command](args)
        finally:
            for w in caught:
                if issubclass(w.category, TabularWarning):
                    print(f"ganforge: warning: {w.message}", file=sys.stderr)


def _tab_fit(args: argparse.Namespace) -> int:
    if args.out.exists() and (args.out.is_file() or any(args.out.iterdir())):
        raise GanforgeError(f"--out {args.out} already exists and is not empty; choose another folder")
    created = not args.out.exists()
    try:  # before the fit: an unwritable --out fails now, not after training
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise GanforgeError(f"cannot create --out {args.out}: {(err.strerror or str(err)).lower()}") from None
    try:
        _tab_fit_into(args)
    except BaseException:
        if created and args.out.is_dir() and not any(args.out.iterdir()):
            args.out.rmdir()  # nothing half-made left behind
        raise
    return 0


def _tab_fit_into(args: argparse.Namespace) -> None:
    """Fit the table and save the model folder into the (created, empty) --out."""
    from .tabular import TabularGAN

    model = TabularGAN(
        epochs=args.epochs,
        batch_size=args.batch_size,
        steps=args.steps,
        seed=args.seed,
        pac=args.pac,
        schema=args.schema,
        device=args.device,
        amp=args.amp,
        g_lr=args.lr,
        d_lr=args.lr,
        ema_decay=args.ema_decay,
        share_fakes=not args.fresh_fakes,
        dp_epsilon=args.dp_epsilon,
        dp_delta=args.dp_delta,
        dp_max_grad_norm=args.dp_max_grad_norm,
        verbose=not args.quiet,
    )
    model.fit(args.data, delimiter=args.delimiter, encoding=args.encoding)
    model.save(args.out)
    info = model.info
    print(
        f"model folder: {args.out}  ({info['rows']} rows, {info.get('steps', 0)} steps, "
        f"{info.get('fit_seconds', 0):.1f} s)",
        file=sys.stderr,
    )
    if model.privacy:
        from .tabular.report import privacy_summary

        print(f"differential privacy: {privacy_summary(model.privacy)}", file=sys.stderr)


def _tab_sample(args: argparse.Namespace) -> int:
    from .tabular import TabularGAN, write_table
    from .tabular.io import table_format

    out_format = table_format(args.out)  # an unsupported suffix fails before any work
    if args.n < 1:
        raise GanforgeError(f"--n must be at least 1, got {args.n}")
    conditions = {}
    for text in args.condition:
        col, sep, value = text.partition("=")
        if not sep or not col:
            raise GanforgeError(f"--condition {text!r} is not of the form COLUMN=VALUE")
        conditions[col] = value
    model = TabularGAN.load(args.run)
    df = model.sample(
        args.n,
        conditions=conditions or None,
        seed=args.seed,
        cond_sampling=args.cond_sampling,
        calibrate=args.calibrate,
    )
    if out_format == "csv":  # whole numbers with blanks: "48", not pandas' float "48.0"
        ints = [c.name for c in model.transformer.schema.columns if c.kind == "integer"]
        df = df.astype({name: "Int64" for name in ints if df[name].dtype.kind == "f"})
    write_table(df, args.out, model.source)
    print(f"wrote {len(df)} rows to {args.out}", file=sys.stderr)
    return 0


def _tab_report(args: argparse.Namespace) -> int:
    from .tabular import read_table
    from .tabular.report import evaluate, write_report

    for path in (args.out, args.json_out):
        if path is not None and path.suffix.lower() not in (".html", ".htm", ".json"):
            raise GanforgeError(
                f"{path}: report format {path.suffix or '(none)'} unknown; use .html or .json"
            )

    def read(path: Path) -> Any:
        return read_table(path, delimiter=args.delimiter, encoding=args.encoding)[0]

    real, synth = read(args.real), read(args.synthetic)
    holdout = read(args.holdout) if args.holdout else None
    from .tabular import infer_schema

    schema = infer_schema(real, args.schema)
    training = None
    if args.model is not None:
        from .tabular import TabularGAN

        training = {"differential_privacy": TabularGAN.load(args.model).privacy}
    report = evaluate(
        real, synth, holdout=holdout, target=args.target, schema=schema, seed=args.seed, training=training
    )
    write_report(report, args.out, real, synth, schema)
    if args.json_out:
        write_report(report, args.json_out)
    s = report["summary"]
    ratio = "" if s["utility_ratio"] is None else f", utility ratio {s['utility_ratio']:.3f}"
    dp = "" if s.get("dp_epsilon") is None else f", DP epsilon {s['dp_epsilon']:.3g}"
    print(
        f"fidelity {s['fidelity']:.3f}{ratio}, exact copies {s['exact_copies']:.3f}{dp}; report: {args.out}",
        file=sys.stderr,
    )
    return 0


def _tab_schema(args: argparse.Namespace) -> int:
    import yaml

    from .tabular import infer_schema, read_table

    df, _ = read_table(args.data, delimiter=args.delimiter, encoding=args.encoding)
    schema = infer_schema(df, args.schema)
    cols = {}
    for c in schema.columns:
        entry = {"kind": c.kind}
        if c.kind in ("continuous", "integer") and c.min is not None:
            entry.update(min=c.min, max=c.max)
        cols[c.name] = entry
    print(yaml.safe_dump({"columns": cols}, sort_keys=False), end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {
        "train": cmd_train,
        "sample": cmd_sample,
        "list": cmd_list,
        "evaluate": cmd_evaluate,
        "tabular": cmd_tabular,
        "sweep": cmd_sweep,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("always", GanforgeWarning)
        warnings.showwarning = _one_line_warnings(warnings.showwarning)
        try:
            return commands[args.command](args)
        except GanforgeError as err:
            print(f"ganforge: error: {err}", file=sys.stderr)
            return 2
        except BrokenPipeError:  # stdout/stderr closed under us (`| head`): nothing left to tell
            return 1
        except OSError as err:  # the user's disk or paths outside the atomic writers (a full disk, a folder
            if err.errno not in USER_WRITE_ERRORS:  # that cannot be made, a file where a folder must be)
                raise
            where = f"cannot write {err.filename}: " if err.filename else ""
            print(f"ganforge: error: {where}{write_error_reason(err.errno)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("ganforge: interrupted", file=sys.stderr)
            return 130


def _write_with(path: str, save: Any, *args: Any, **kwargs: Any) -> None:
    with open(path, "wb") as fh:
        save(fh, *args, **kwargs)


def _one_line_warnings(show: Any) -> Any:
    """showwarning that prints ganforge's own warnings as one line, others as before. Under
    torchrun they come from rank 0 alone: they concern the state all ranks share."""

    def showwarning(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, GanforgeWarning):
            if is_main():
                print(f"ganforge: warning: {message}", file=sys.stderr)
        else:
            show(message, category, *args, **kwargs)

    return showwarning
