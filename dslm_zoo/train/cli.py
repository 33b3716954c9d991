"""``dslm-zoo train`` / ``python -m dslm_zoo.train`` and ``dslm-zoo plot``.

    dslm-zoo train recipes/tiny_mlm.yaml --out runs/tiny [--set optim.lr=3e-3 ...]
    dslm-zoo train --resume runs/tiny [--set train.steps=400 --force]
    torchrun --nproc_per_node 2 -m dslm_zoo.train recipes/tiny_mlm.yaml --out runs/ddp --set train.strategy=ddp

Exit codes: 0 done, 2 a recipe, data or run-directory error (one line, no traceback), 3 non-finite loss or
gradients (the message names the first sub-layer; the last good checkpoint stays).
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

__all__ = ["add_train_parser", "add_plot_parser", "cmd_train", "cmd_plot", "main"]


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", nargs="?", help="recipe file (.yaml, .toml, .json); with --resume, optional")
    p.add_argument("--out", help="run directory of a new run")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its newest checkpoint")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a recipe key (repeatable), e.g. --set optim.lr=3e-3 --set model.kwargs.depth=8")
    p.add_argument("--force", action="store_true", help="with --resume: accept a recipe that differs from the stored one")


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a zoo model from a recipe (single process, or DDP/FSDP2 under torchrun)")
    _train_args(p)
    p.set_defaults(fn=cmd_train)


def add_plot_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="draw RUN_DIR/loss.png from a run's metrics.jsonl")
    p.add_argument("run_dir")
    p.add_argument("--out", help="PNG path (default RUN_DIR/loss.png)")
    p.set_defaults(fn=cmd_plot)


def _error(cmd: str, e: BaseException) -> int:
    print(f"dslm-zoo {cmd}: error: {e}", file=sys.stderr)
    return 2


def cmd_train(args: argparse.Namespace) -> int:
    from ..data import DataNotFoundError
    from .config import RecipeError, load_recipe
    from .trainer import NonFiniteError, RunDirError, Trainer

    trainer = None
    try:
        if args.resume:
            if args.out and args.out != args.resume:
                raise RecipeError("--resume continues RUN_DIR in place: drop --out")
            recipe = load_recipe(args.recipe) if args.recipe else None
            trainer = Trainer(recipe, args.resume, resume=True, overrides=args.overrides, force=args.force)
        else:
            if not args.recipe or not args.out:
                raise RecipeError("a new run needs RECIPE and --out RUN_DIR (or --resume RUN_DIR)")
            if args.force:
                raise RecipeError("--force only applies with --resume")
            trainer = Trainer(load_recipe(args.recipe, args.overrides), args.out)
        trainer.run()
        return 0
    except NonFiniteError as e:
        print(f"dslm-zoo train: non-finite values: {e}", file=sys.stderr)
        return 3
    except (RecipeError, RunDirError, DataNotFoundError, FileNotFoundError, ValueError, TypeError) as e:
        return _error("train", e)
    finally:
        if trainer is not None:
            trainer.close()


def cmd_plot(args: argparse.Namespace) -> int:
    from .plot import plot_run

    try:
        print(plot_run(args.run_dir, args.out))
    except (FileNotFoundError, ValueError) as e:
        return _error("plot", e)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dslm_zoo.train", description=__doc__.splitlines()[0])
    _train_args(parser)
    args = parser.parse_args(argv)
    return cmd_train(args)
