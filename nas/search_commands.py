"""``nas search`` and ``nas results show``."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from search_spaces import InvalidInputError, parse_latency_ms, parse_mes, parse_params


def _budgets(args: argparse.Namespace, space):
    from nas.search import Budget, default_family, parse_family

    given = [name for name in ("params", "latency", "mes", "family") if getattr(args, name) is not None]
    if len(given) != 1:
        raise InvalidInputError("give exactly one budget: --params (e.g. 7M), --latency (e.g. 1.1ms), --mes "
                                f"(e.g. 60) or --family [B1,B2,...]; got {len(given)}")
    if args.params is not None:
        return [Budget("params", parse_params(args.params))]
    if args.latency is not None:
        return [Budget("latency", parse_latency_ms(args.latency))]
    if args.mes is not None:
        return [Budget("mes", parse_mes(args.mes))]
    return default_family(space) if args.family == "default" else parse_family(args.family)


def prepare_search(args: argparse.Namespace):
    """Every check that can fail, before any work: alphas, table, storage, supernet, budgets."""
    from latency_lut import LatencyTable, missing_parts

    from nas.mes import check_alpha
    from nas.store import default_storage
    from supernet.train import load_supernet

    check_alpha(args.alpha_lat, "--alpha-lat")
    check_alpha(args.alpha_size, "--alpha-size")
    if args.eval_images < 1 or args.bn_batches < 1:
        raise InvalidInputError(f"--eval-images {args.eval_images} / --bn-batches {args.bn_batches}: expected "
                                f"positive numbers")
    table = LatencyTable.load(args.lut)
    supernet, _ = load_supernet(Path(args.supernet))
    space = supernet.space
    if table.space != space.name:
        raise InvalidInputError(f"the supernet in {args.supernet!r} is of space {space.name!r} but the latency "
                                f"table {args.lut!r} of space {table.space!r}; expected one space for both")
    missing = missing_parts(table, space)
    if missing:
        raise InvalidInputError(f"latency table {args.lut!r} lacks {len(missing)} block(s) of space {space.name!r} "
                                f"(first: {missing[0].key}); fill it with: nas build-lut --space {space.name} "
                                f"--backend {table.backend} --out {args.lut}")
    budgets = _budgets(args, space)
    storage = args.storage or default_storage(Path(args.out))
    if args.storage is None:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    from nas.store import check_storage

    check_storage(storage)
    return table, supernet, space, budgets, storage


def cmd_search(args: argparse.Namespace) -> None:
    from nas.objectives import Objectives, SupernetAccuracy
    from nas.results import selected_frame, write_search_outputs
    from nas.search import check_budgets, run_search
    from search_spaces.io import file_digest
    from supernet.train import CHECKPOINT

    table, supernet, space, budgets, storage = prepare_search(args)
    accuracy = SupernetAccuracy(Path(args.supernet), eval_images=args.eval_images, bn_batches=args.bn_batches,
                                data_dir=args.data_dir)
    objectives = Objectives.from_table(space, table, accuracy, args.alpha_lat, args.alpha_size)
    check_budgets(objectives, budgets)
    # what a config's metrics depend on: the weights and the table themselves (a retrained supernet in the
    # same folder is another study), MES and the evaluation settings
    objectives_id = {"supernet": str(Path(args.supernet).resolve()), "lut": str(Path(args.lut).resolve()),
                     "supernet_sha1": file_digest(Path(args.supernet) / CHECKPOINT),
                     "lut_sha1": file_digest(Path(args.lut)), "alpha_latency": args.alpha_lat,
                     "alpha_size": args.alpha_size, "eval_images": args.eval_images, "bn_batches": args.bn_batches,
                     "data_dir": args.data_dir}
    arguments = {**objectives_id, "budgets": [b.label for b in budgets], "seed": args.seed,
                 "evaluations": args.evaluations}
    progress = None if args.quiet else (lambda line: print(line, flush=True))
    result = run_search(objectives, budgets, args.algorithm, storage, arguments, evaluations=args.evaluations,
                        seed=args.seed, supernet=accuracy.supernet, progress=progress, objectives_id=objectives_id)
    command = "nas " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["search"] else ""
    written = write_search_outputs(result, Path(args.out), command)
    frame = selected_frame(result)
    print(f"\n{args.algorithm}: {result.evaluations} configs, {result.measured} of them evaluated now (the others "
          f"from the results store), in {result.seconds:.1f} s")
    if not frame.empty:
        frame = frame.assign(params_m=frame["params"] / 1e6).drop(columns=["params"])
        print(frame.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"written: {', '.join(p.name for p in written)} in {args.out}")


def cmd_results_show(args: argparse.Namespace) -> None:
    import pandas as pd

    from nas.results import load_results, pareto_table

    frame = load_results(Path(args.dir))
    front = pareto_table(frame)
    columns = ["study", "algorithm", "accuracy", "mes", "latency_ms", "params", "key"]
    with pd.option_context("display.width", 200, "display.max_colwidth", 80, "display.max_rows", 500):
        for study, group in front.groupby("study", sort=True):
            count = int((frame["study"] == study).sum())
            print(f"{study}: {len(group)} Pareto configs of {count} evaluated (accuracy vs MES)")
            shown = group[columns[1:]].assign(params=group["params"] / 1e6).rename(columns={"params": "params_m"})
            print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}") + "\n")


def register(commands: argparse._SubParsersAction) -> None:
    from nas.search import ALGORITHMS

    p = commands.add_parser("search", help="MES-driven search of a trained supernet under a budget")
    p.add_argument("--supernet", required=True, metavar="RUN_DIR")
    p.add_argument("--lut", required=True, metavar="FILE", help="latency table (nas build-lut)")
    p.add_argument("--params", help="parameter budget, e.g. 7M")
    p.add_argument("--latency", help="latency budget, e.g. 1.1ms")
    p.add_argument("--mes", help="MES budget (at least), e.g. 60")
    p.add_argument("--family", nargs="?", const="default", metavar="B1,B2,...",
                   help="several budgets of one kind, one trajectory (alone: S0-L's params on efficientformerv2)")
    p.add_argument("--alpha-lat", type=float, default=1.0, help="alpha_latency of MES, in [0, 1] (default 1.0)")
    p.add_argument("--alpha-size", type=float, default=0.5, help="alpha_size of MES, in [0, 1] (default 0.5)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--algorithm", choices=ALGORITHMS, default="fine-grained")
    p.add_argument("--storage", metavar="URL", help="Optuna storage URL (default: sqlite in --out)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--evaluations", type=int, default=100, help="configs evaluated by random and nsga2")
    p.add_argument("--eval-images", type=int, default=500, help="held-out images per accuracy (default 500)")
    p.add_argument("--bn-batches", type=int, default=2, help="batches of 128 for BatchNorm recalibration (default 2)")
    p.add_argument("--data-dir")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(handler=cmd_search)

    results = commands.add_parser("results", help="read result stores")
    results_commands = results.add_subparsers(dest="results_command", metavar="SUBCOMMAND", required=True)
    p = results_commands.add_parser("show", help="the Pareto set of every study in a folder")
    p.add_argument("dir")
    p.set_defaults(handler=cmd_results_show)
