"""``nas train-supernet`` and ``nas eval-subnet``."""
from __future__ import annotations

import argparse
from pathlib import Path

from search_spaces import InvalidInputError, resolve_config


def cmd_train_supernet(args: argparse.Namespace) -> None:
    from supernet.recipe import load_recipe
    from supernet.train import train_supernet

    recipe = load_recipe(args.recipe)
    _check_epochs(args.epochs)
    result = train_supernet(recipe, Path(args.out), resume=args.resume, epochs=args.epochs,
                            data_dir=args.data_dir, download=args.download, progress=not args.no_progress)
    _print_result(result)
    print(f"supernet: {result.run_dir}")


def _check_epochs(epochs) -> None:
    if epochs is not None and epochs < 1:
        raise InvalidInputError(f"--epochs {epochs}: expected a positive number of epochs")


def _print_result(result) -> None:
    if result.metrics:
        last = result.metrics[-1]
        summary = ", ".join(f"{k} {v}" for k, v in last.items() if k.startswith("val_top1"))
        print(f"trained {result.global_step} steps in {result.seconds:.0f} s; {summary}")


def cmd_train(args: argparse.Namespace) -> None:
    from supernet.recipe import load_recipe
    from supernet.retrain import train_network

    config = resolve_config(args.config)
    recipe = load_recipe(args.recipe)
    _check_epochs(args.epochs)
    result = train_network(config, recipe, Path(args.out), teacher=args.teacher, resume=args.resume,
                           epochs=args.epochs, data_dir=args.data_dir, download=args.download,
                           progress=not args.no_progress)
    _print_result(result)
    print(f"network: {result.run_dir}  ({config.key})")


def cmd_eval_subnet(args: argparse.Namespace) -> None:
    from supernet.protocol import EvalProtocol
    from supernet.evaluate import evaluate_config

    config = resolve_config(args.config)
    protocol = EvalProtocol(images=args.images, offset=args.offset, bn_batches=args.bn_batches, split=args.split)
    scores = evaluate_config(Path(args.supernet), config, protocol, data_dir=args.data_dir)
    print(f"{config.key}  split {args.split}  top-1 {scores.top1:.2f}%  loss {scores.loss:.4f}  KL from the largest "
          f"{scores.kl:.4f}  ({scores.images} images from {args.offset}, BatchNorm recalibrated on {args.bn_batches} "
          f"batches)")


def _training_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", required=True, help="a recipe YAML, or the name of a shipped one "
                   "(fashion-mnist-tiny, imagenet)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder (checkpoint, logs)")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its checkpoint")
    p.add_argument("--epochs", type=int, help="override the recipe's number of epochs")
    p.add_argument("--data-dir", help="data folder (default: the recipe's, then Debian's Fashion-MNIST)")
    p.add_argument("--download", action="store_true", help="download the data set into --data-dir if absent")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(commands: argparse._SubParsersAction) -> None:
    from supernet.protocol import EvalProtocol

    defaults = EvalProtocol()
    p = commands.add_parser("train-supernet", help="train a weight-sharing supernet (sandwich rule)")
    _training_arguments(p)
    p.set_defaults(handler=cmd_train_supernet)

    p = commands.add_parser("train", help="train one network of the space from scratch (e.g. a searched config)")
    p.add_argument("config", metavar="CONFIG_OR_PRESET", help="a config YAML/JSON (nas search output) or a preset")
    _training_arguments(p)
    p.add_argument("--teacher", metavar="RUN_DIR", help="distil from a trained network or supernet run (its largest "
                   "config), through the distillation head; the recipe's distillation settings apply")
    p.set_defaults(handler=cmd_train)

    p = commands.add_parser("eval-subnet", help="top-1 of a config from a trained supernet")
    p.add_argument("--supernet", required=True, metavar="RUN_DIR")
    p.add_argument("config", metavar="CONFIG_OR_PRESET")
    p.add_argument("--split", choices=("val", "test"), default="val")
    p.add_argument("--data-dir")
    p.add_argument("--bn-batches", type=int, default=defaults.bn_batches,
                   help=f"batches of {defaults.batch_size} for BatchNorm recalibration (default {defaults.bn_batches}, "
                        f"as the search)")
    p.add_argument("--images", type=int, help="evaluate on N images of the split (default: all)")
    p.add_argument("--offset", type=int, default=0, help="first image of the split (default 0)")
    p.set_defaults(handler=cmd_eval_subnet)
