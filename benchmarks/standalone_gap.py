"""The gap to standalone at equal wall time (issue 15): the largest config trained alone for as long
as the supernet trains, against the supernet's largest subnet.

The supernet's recipe gives every one of its configs one epoch; the largest config alone takes about
half the supernet's time for that epoch, so at equal wall time it gets more epochs. This trains it
alone with the truth bank's recipe (the supernet variants' baseline) for ``--epochs`` epochs (the
cosine schedule spread over them, as a user training it for that long would), one run per epoch
count, and prints its training seconds and test top-1 beside the supernet variants' (from
``benchmarks/results/supernet-variants.csv``: the baseline and its second seed) and the bank's
one-epoch run of the same config. A finished run in ``--work`` is reused, an interrupted one resumed.

    python benchmarks/standalone_gap.py [--epochs 2] [--work runs/standalone]   # runs: WORK/largest-Nep-DIGEST
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from search_spaces import InvalidInputError, get_space  # noqa: E402
from search_spaces.runtime import run_script  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, nargs="+", default=[2], help="epoch counts to train alone")
    parser.add_argument("--recipe", default=str(ROOT / "experiments" / "results" / "truth_bank.recipe.yaml"))
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "standalone")
    parser.add_argument("--bank", type=Path, default=ROOT / "experiments" / "results" / "truth_bank.csv")
    parser.add_argument("--variants", type=Path, default=ROOT / "benchmarks" / "results" / "supernet-variants.csv")
    args = parser.parse_args()
    if any(epochs < 1 for epochs in args.epochs):
        raise InvalidInputError(f"--epochs {args.epochs}: expected whole numbers of epochs >= 1")
    from supernet.checkpoint import CHECKPOINT, load_checkpoint
    from supernet.data import Splits
    from supernet.evaluate import evaluate
    from supernet.recipe import load_recipe
    from supernet.retrain import load_network, train_network
    from supernet.train import logged_train_seconds

    recipe = load_recipe(args.recipe)
    config = get_space(recipe.space).largest()
    print(f"largest config {config.key}, recipe {args.recipe}")
    if args.bank.exists():
        bank = pd.read_csv(args.bank)
        alone = bank[bank["key"] == config.key]
        for row in alone.itertuples():
            print(f"  alone, 1 epoch (truth bank, seed {row.seed}): test top-1 {row.test_top1:.2f}% in "
                  f"{row.train_seconds:.0f} s")
    protocol = hashlib.sha1(recipe.scratch_yaml().encode()).hexdigest()[:10]  # another recipe, another run
    for epochs in args.epochs:
        run = args.work / f"largest-{epochs}ep-{protocol}"
        checkpoint = run / CHECKPOINT
        if not (checkpoint.exists() and load_checkpoint(checkpoint, "network").get("finished", False)):
            train_network(config, recipe, run, resume=checkpoint.exists(), epochs=epochs, progress=False)
        model, _ = load_network(run, config)
        top1 = evaluate(model, Splits(recipe, config.resolution).eval_loader("test")).top1
        print(f"  alone, {epochs} epochs: test top-1 {top1:.2f}% in {logged_train_seconds(run):.0f} s")
    if args.variants.exists():
        variants = pd.read_csv(args.variants).set_index("variant")
        for name in ("baseline", "seed-1"):
            if name in variants.index:
                row = variants.loc[name]
                print(f"  supernet ({name}), 1 epoch: largest test top-1 {row['largest_test_top1']:.2f}% in "
                      f"{row['train_seconds']:.0f} s")


if __name__ == "__main__":
    run_script(main)
