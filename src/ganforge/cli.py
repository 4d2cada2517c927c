"""The `ganforge` command: a thin layer over the public API.

Errors a user can fix (GanforgeError, bad arguments) print one line on stderr and exit 2;
nothing is written before all inputs are checked.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from . import __version__
from .engine import Callback
from .errors import GanforgeError

SAMPLE_FORMATS = (".png", ".npy", ".npz")


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
            print(
                f"\nganforge: {signal.Signals(signum).name} received; saving a checkpoint at step "
                f"{trainer.step + 1} and stopping",
                file=sys.stderr,
            )

        self.previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}

    def on_train_end(self, trainer: Any) -> None:
        for sig, old in self.previous.items():
            signal.signal(sig, old)


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

    s = sub.add_parser("sample", help="draw samples from a trained run")
    s.add_argument("run", type=Path, help="run folder")
    s.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", type=Path, required=True, help="output file: .png (grid), .npy or .npz")
    s.add_argument("--device", default="cpu")

    sub.add_parser("list", help="list models, losses and datasets")
    return p


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
        callbacks=[StopOnSignal()],
    )
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
    x = gan.sample(args.n, seed=args.seed)
    labels = (np.arange(args.n) % gan.spec.n_classes) if gan.trainer.family.conditional else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".png":
        save_png = save_points if gan.spec.kind == "points" else save_grid
        atomic_write(args.out, lambda tmp: save_png(x, tmp))
    elif suffix == ".npy":
        atomic_write(args.out, lambda tmp: np.save(tmp, x.numpy()))
    else:
        arrays = {"x": x.numpy()} | ({"y": labels} if labels is not None else {})
        atomic_write(args.out, lambda tmp: np.savez(tmp, **arrays))
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands = {"train": cmd_train, "sample": cmd_sample, "list": cmd_list}
    try:
        return commands[args.command](args)
    except GanforgeError as err:
        print(f"ganforge: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ganforge: interrupted", file=sys.stderr)
        return 130
