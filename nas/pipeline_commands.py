"""``nas quickstart`` (the whole pipeline on the embedded default) and ``nas export``."""
from __future__ import annotations

import argparse


def cmd_export(args: argparse.Namespace) -> None:
    from search_spaces import resolve_config

    from nas.export import FORMATS, check_format

    config = resolve_config(args.config)
    check_format(args.format, args.out)  # before loading any weights
    from nas.export import export_network
    from supernet.retrain import load_network

    model, config = load_network(args.weights, config, data_dir=args.data_dir)
    result = export_network(model, config, args.format, args.out)
    check = ("outputs equal PyTorch's (max |difference| " f"{result.max_abs_diff:.2g})"
             if result.max_abs_diff is not None else "not run here (Core ML runs on macOS)")
    print(f"exported {config.key} as {args.format} ({FORMATS[args.format]}) to {result.path}; check: {check}")


def cmd_quickstart(args: argparse.Namespace) -> None:
    from pathlib import Path

    from nas.quickstart import QuickstartSettings, run_quickstart

    settings = QuickstartSettings(out=Path(args.out), recipe=args.recipe, data_dir=args.data_dir, params=args.params,
                                  alpha_latency=args.alpha_lat, alpha_size=args.alpha_size,
                                  evaluations=args.evaluations, eval_images=args.eval_images,
                                  bn_batches=args.bn_batches, criterion=args.criterion, lut_runs=args.lut_runs,
                                  progress=not args.no_progress)
    run_quickstart(settings, echo=lambda line: print(line, flush=True))


def register(commands: argparse._SubParsersAction) -> None:
    from nas.export import FORMATS
    from nas.quickstart import QuickstartSettings

    defaults = QuickstartSettings()
    p = commands.add_parser("quickstart", help="the whole pipeline on the embedded default: supernet, latency "
                            "table, searches, export and a report (about 20 min on 2 cores; reruns reuse stages)")
    p.add_argument("--out", default="runs/quickstart", metavar="DIR", help="output folder (default runs/quickstart)")
    p.add_argument("--recipe", default="fashion-mnist-tiny", help="supernet recipe (default fashion-mnist-tiny)")
    p.add_argument("--data-dir")
    p.add_argument("--params", help="budget of the --params search, e.g. 0.4M (default: the geometric middle of "
                   "the space's smallest and largest configs)")
    p.add_argument("--alpha-lat", type=float, default=1.0)
    p.add_argument("--alpha-size", type=float, default=0.5)
    p.add_argument("--evaluations", type=int, default=100, help="configs evaluated by each baseline (random, nsga2)")
    p.add_argument("--eval-images", type=int, default=defaults.eval_images,
                   help=f"held-out images per evaluation (default {defaults.eval_images})")
    p.add_argument("--bn-batches", type=int, default=defaults.bn_batches,
                   help=f"batches of 128 for BatchNorm recalibration (default {defaults.bn_batches})")
    p.add_argument("--criterion", default=defaults.criterion,
                   help=f"what the searches rank configs by: top1, loss or kl (default {defaults.criterion})")
    p.add_argument("--lut-runs", type=int, default=100, help="timed runs per block and validation network")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or search steps")
    p.set_defaults(handler=cmd_quickstart)

    p = commands.add_parser("export", help="a config's network with trained weights as ONNX, Core ML or TorchScript")
    p.add_argument("config", metavar="CONFIG_OR_PRESET", help="a config YAML/JSON (nas search output) or a preset")
    p.add_argument("--weights", required=True, metavar="RUN_DIR_OR_CHECKPOINT",
                   help="a supernet run (the config's weights are sliced out, BatchNorm recalibrated) or a "
                        "network run (nas train), or its checkpoint.pt")
    p.add_argument("--format", required=True, choices=list(FORMATS), help="onnx (.onnx), coreml (.mlpackage, "
                   "iOS 16+ ML program) or torchscript (.pt)")
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument("--data-dir", help="training data of a supernet run, for BatchNorm recalibration")
    p.set_defaults(handler=cmd_export)
