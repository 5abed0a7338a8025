"""``nas search`` and ``nas results show``."""
from __future__ import annotations

import argparse
from pathlib import Path

from search_spaces import InvalidInputError, parse_latency_ms, parse_mes, parse_params


def _budgets(args: argparse.Namespace):
    """The budgets given on the command line; None for ``--family`` alone (the space's default family)."""
    from nas.search import Budget, parse_family

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
    return None if args.family == "default" else parse_family(args.family)


def cmd_search(args: argparse.Namespace) -> None:
    from nas.search_job import SEARCH_PROTOCOL, SearchJob
    from nas.results import selected_frame

    budgets = _budgets(args)
    protocol = SEARCH_PROTOCOL.replace(images=args.eval_images, offset=args.eval_offset, bn_batches=args.bn_batches)
    job = SearchJob(args.supernet, args.lut, args.out, storage=args.storage, alpha_latency=args.alpha_lat,
                    alpha_size=args.alpha_size, protocol=protocol, criterion=args.criterion, recheck=args.recheck,
                    data_dir=args.data_dir, workers=args.workers, stale_after=args.stale_after)
    budgets = job.check(budgets if budgets is not None else job.default_family())
    progress = None if args.quiet else (lambda line: print(line, flush=True))
    result = job.run(budgets, args.algorithm, seed=args.seed, evaluations=args.evaluations, progress=progress,
                     command=getattr(args, "command_line", ""))
    frame = selected_frame(result)
    print(f"\n{args.algorithm}: {result.evaluations} configs, {result.measured} of them evaluated now (the others "
          f"from the results store), in {result.seconds:.1f} s")
    if not frame.empty:
        frame = frame.assign(params_m=frame["params"] / 1e6).drop(columns=["params"])
        print(frame.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"written: {', '.join(p.name for p in result.written)} in {args.out}")


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


def cmd_search_worker(args: argparse.Namespace) -> None:
    from nas.workers import run_worker

    if args.idle_exit < 0:
        raise InvalidInputError(f"--idle-exit {args.idle_exit}: expected seconds (0 or more; 0: never)")
    run_worker(args.storage, args.queue, Path(args.supernet) if args.supernet else None, args.data_dir,
               idle_exit=args.idle_exit, log=lambda line: print(line, flush=True))


def register(commands: argparse._SubParsersAction) -> None:
    from nas.search_job import DEFAULT_CRITERION, SEARCH_PROTOCOL
    from nas.search import ALGORITHMS
    from supernet.protocol import CRITERIA

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
    p.add_argument("--evaluations", type=int, default=100, help="configs evaluated by random, nsga2 and tpe")
    p.add_argument("--criterion", default=DEFAULT_CRITERION, metavar="|".join(CRITERIA),
                   help=f"what configs are ranked by: held-out top-1, mean cross-entropy (loss) or KL divergence "
                        f"from the largest subnet (kl); all three are stored (default {DEFAULT_CRITERION})")
    p.add_argument("--recheck", type=int, default=0, metavar="K",
                   help="fine-grained: re-score each step's K best moves on the next slice of as many images "
                        "before committing (default 0: the paper's plain step)")
    p.add_argument("--eval-images", type=int, default=SEARCH_PROTOCOL.images,
                   help=f"held-out images per evaluation (default {SEARCH_PROTOCOL.images})")
    p.add_argument("--eval-offset", type=int, default=SEARCH_PROTOCOL.offset,
                   help="first held-out image of the search slice (default 0)")
    p.add_argument("--bn-batches", type=int, default=SEARCH_PROTOCOL.bn_batches,
                   help=f"batches of {SEARCH_PROTOCOL.batch_size} training images for BatchNorm recalibration "
                        f"(default {SEARCH_PROTOCOL.bn_batches})")
    p.add_argument("--data-dir")
    p.add_argument("--workers", action="store_true",
                   help="score batches of configs through --storage's queue, served by this process and any number "
                        "of nas search-worker processes (--storage journal:///FILE or postgresql://...)")
    p.add_argument("--stale-after", type=float, default=60.0, metavar="SECONDS",
                   help="with --workers: a worker silent this long has its config queued again; every worker "
                        "uses the search's value (default 60)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(handler=cmd_search)

    p = commands.add_parser("search-worker", help="score the configs a nas search --workers queues")
    p.add_argument("--storage", required=True, metavar="URL", help="the search's --storage")
    p.add_argument("--queue", help="one score queue of the storage (default: all of them)")
    p.add_argument("--supernet", metavar="RUN_DIR", help="this machine's copy of the search's supernet run "
                   "(default: the path the search recorded)")
    p.add_argument("--data-dir")
    p.add_argument("--idle-exit", type=float, default=60.0, metavar="SECONDS",
                   help="stop after this long without work (0: never; default 60)")
    p.set_defaults(handler=cmd_search_worker)

    results = commands.add_parser("results", help="read result stores")
    results_commands = results.add_subparsers(dest="results_command", metavar="SUBCOMMAND", required=True)
    p = results_commands.add_parser("show", help="the Pareto set of every study in a folder")
    p.add_argument("dir")
    p.set_defaults(handler=cmd_results_show, torch=False)
