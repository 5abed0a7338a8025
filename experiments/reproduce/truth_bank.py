"""The truth bank: configs of the tiny space trained from scratch, kept to judge any supernet.

Ground truth does not depend on the supernet, so it is built once and grows: each run reads
``experiments/results/truth_bank.csv`` (the source of truth), plans what it still lacks and
trains it, one from-scratch run at a time, rewriting the CSV (atomically) after every run. A
killed run loses at most the network in training, which resumes from its checkpoint (the
from-scratch cache of ``experiments/reproduce/``, shared with the other scripts).

The configs:

* **anchors**: the space's largest and smallest, and the configs the searches selected
  (``--include``: config YAML files; default: those in the quickstart's search folder);
* **stratified**: the rest up to ``--configs``, picked from ``--pool`` seeded random draws by
  farthest-point sampling in (log params, log predicted latency), normalised to the space's
  range. Each pick is the draw farthest from every config already in the bank, so the bank
  covers the size and latency range evenly instead of bunching in the middle as uniform
  sampling does, and a partial bank is already spread;
* **a second seed** for ``--second-seed`` of them, evenly spaced by size, to measure seed noise.

Every network: the supernet's recipe and budget (``fashion-mnist-tiny``: one epoch on its
training images), one seed each; test and held-out val top-1. The recipe is the one the bank
started with, kept beside it (``truth_bank.recipe.yaml``), so a bank stays one protocol while
the supernet's recipe is tuned; a new bank (``--bank``) starts from ``--recipe``.

    python experiments/reproduce/truth_bank.py                     # 2-3 h on 2 cores for 48 + 10 runs
    python experiments/reproduce/truth_bank.py --max-runs 5        # add at most 5 rows, then stop
"""
from __future__ import annotations

import datetime
import hashlib
import math
import random
from pathlib import Path

import numpy as np
import pandas as pd

from _common import ROOT, Reproduction, parser, positive
from search_spaces.runtime import run_script
from search_spaces import InvalidInputError, SubnetConfig, count_params, load_configs
from search_spaces.io import atomic_path, atomic_write_text
from supernet.recipe import load_recipe

COLUMNS = ["key", "space", "source", "params", "latency_ms", "seed", "val_top1", "test_top1", "recipe_digest",
           "train_seconds", "date"]


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--bank", type=Path, default=ROOT / "experiments" / "results" / "truth_bank.csv")
    p.add_argument("--configs", type=int, default=48, help="distinct configs the bank should hold")
    p.add_argument("--second-seed", type=int, default=10, help="configs also trained with seed SEED+1")
    p.add_argument("--pool", type=int, default=4000, help="seeded random draws the stratified configs come from")
    p.add_argument("--include", type=Path, nargs="*", default=None,
                   help="config files of searched configs to include (default: the quickstart's search folder)")
    p.add_argument("--max-runs", type=int, default=None, help="stop after training this many networks")
    p.add_argument("--dry-run", action="store_true", help="print the plan, train nothing")
    args = p.parse_args()
    for name in ("configs", "pool"):
        positive(f"--{name.replace('_', '-')}", getattr(args, name))
    if args.second_seed < 0 or args.second_seed > args.configs:
        raise SystemExit(f"--second-seed {args.second_seed}: expected 0 to --configs ({args.configs})")
    rep = Reproduction("truth_bank", args)
    bank = load_bank(args.bank)
    pinned = recipe_file(args.bank)
    if pinned.exists():
        rep.scratch_base = load_recipe(pinned)
    digest = recipe_digest(rep)
    if not bank.empty and set(bank["recipe_digest"]) != {digest}:
        raise InvalidInputError(f"{args.bank} holds runs of recipe {sorted(set(bank['recipe_digest']))}; this "
                                f"recipe and image count make {digest}: expected one protocol per bank "
                                "(choose another --bank)")
    from latency_lut import LatencyTable

    table = LatencyTable.load(rep.lut)
    space = rep.job().space
    costs = {}

    def point(config: SubnetConfig) -> tuple[float, float]:
        if config.key not in costs:
            costs[config.key] = (count_params(config), table.predict(config))
        return costs[config.key]

    plan = planned_configs(space, bank, anchors(rep, space, args.include), args.configs, args.pool, args.seed, point)
    by_size = sorted(plan, key=lambda item: point(item[1])[0])
    step = len(by_size) / args.second_seed if args.second_seed else math.inf
    twice = {by_size[int(i * step + step / 2)][1].key for i in range(args.second_seed)}
    todo = [(source, config, args.seed) for source, config in plan]
    todo += [(source, config, args.seed + 1) for source, config in plan if config.key in twice]
    done = set(zip(bank["key"], bank["seed"]))
    todo = [item for item in todo if (item[1].key, item[2]) not in done]
    rep.echo(f"{args.bank}: {len(bank)} rows; {len(todo)} runs to go ({len(plan)} configs, {len(twice)} with a "
             "second seed)")
    if not bank.empty:
        top1 = bank["test_top1"]
        rep.echo(f"  test top-1 of its runs: {top1.min():.2f}-{top1.max():.2f}%, median {top1.median():.2f}, std "
                 f"{top1.std():.2f}; {bank['train_seconds'].sum() / 60:.0f} min of training")
    if args.dry_run:
        for source, config, seed in todo:
            params, latency = point(config)
            rep.echo(f"  {source:10s} seed {seed}  {params / 1e6:.3f}M  {latency:.3f} ms  {config.key}")
        return
    for count, (source, config, seed) in enumerate(todo):
        if args.max_runs is not None and count >= args.max_runs:
            break
        result = rep.scratch(config, seed)
        params, latency = point(config)
        row = {"key": config.key, "space": config.space, "source": source, "params": params,
               "latency_ms": round(latency, 4), "seed": seed, "val_top1": result["val_top1"],
               "test_top1": result["test_top1"], "recipe_digest": digest, "train_seconds": result["train_seconds"],
               "date": datetime.date.today().isoformat()}
        bank = pd.concat([bank, pd.DataFrame([row])], ignore_index=True)
        if not pinned.exists():
            pinned.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(pinned, rep.scratch_base.to_yaml())
        save_bank(bank, args.bank)
        rep.echo(f"bank: {len(bank)} rows, {bank['key'].nunique()} configs")


def load_bank(path: Path) -> pd.DataFrame:
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    bank = pd.read_csv(path)
    missing = set(COLUMNS) - set(bank.columns)
    if missing:
        raise InvalidInputError(f"{path}: missing column(s) {sorted(missing)}; expected a truth bank with columns "
                                f"{', '.join(COLUMNS)}")
    return bank[COLUMNS]


def save_bank(bank: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        bank.sort_values(["params", "key", "seed"]).to_csv(tmp, index=False)


def recipe_file(bank: Path) -> Path:
    """The recipe the bank's runs were trained with (``truth_bank.recipe.yaml`` beside ``truth_bank.csv``),
    written with its first row: the bank keeps its protocol when the supernet's recipe moves on."""
    return bank.with_name(f"{bank.stem}.recipe.yaml")


def recipe_digest(rep: Reproduction) -> str:
    """The from-scratch protocol, seed aside: recipe, epochs and training images."""
    return hashlib.sha1(rep.scratch_recipe(0).scratch_yaml().encode()).hexdigest()[:10]


def anchors(rep: Reproduction, space, include) -> list[tuple[str, SubnetConfig]]:
    files = include if include is not None else sorted((rep.args.quickstart / "search").glob("*.yaml"))
    found = [("largest", space.largest()), ("smallest", space.smallest())]
    for file in files:
        for config in load_configs(file):
            if config.space != space.name:
                raise InvalidInputError(f"{file}: a config of space {config.space!r}; expected {space.name!r}")
            found.append(("searched", config))
    return found


def planned_configs(space, bank: pd.DataFrame, anchor_configs, count: int, pool: int, seed: int, point
                    ) -> list[tuple[str, SubnetConfig]]:
    """The bank's configs: those it holds, the anchors, then farthest-point picks up to ``count``."""
    plan: dict[str, tuple[str, SubnetConfig]] = {}
    for key, source in zip(bank["key"], bank["source"]):
        plan.setdefault(key, (source, SubnetConfig.from_key(space.name, key)))
    for source, config in anchor_configs:
        plan.setdefault(config.key, (source, config))
    rng = random.Random(seed)
    drawn = {}
    for _ in range(pool):
        config = space.sample(rng)
        drawn.setdefault(config.key, config)
    candidates = [c for k, c in drawn.items() if k not in plan]
    coordinates = np.log(np.array([point(c) for c in [*(c for _, c in plan.values()), *candidates]], float))
    low, high = np.log(point(space.smallest())), np.log(point(space.largest()))
    coordinates = (coordinates - low) / np.maximum(high - low, 1e-12)
    chosen, rest = coordinates[:len(plan)], coordinates[len(plan):]
    nearest = np.full(len(rest), np.inf)
    for c in chosen:
        nearest = np.minimum(nearest, np.linalg.norm(rest - c, axis=1))
    picks = []
    while len(plan) + len(picks) < count and len(picks) < len(candidates):
        best = int(np.argmax(nearest))
        picks.append(candidates[best])
        nearest = np.minimum(nearest, np.linalg.norm(rest - rest[best], axis=1))
        nearest[best] = -np.inf
    return list(plan.values()) + [("stratified", c) for c in picks]


if __name__ == "__main__":
    run_script(main)
