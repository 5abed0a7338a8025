"""``nas export``: a config's network with trained weights as ONNX, Core ML or TorchScript."""
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


def register(commands: argparse._SubParsersAction) -> None:
    from nas.export import FORMATS

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
