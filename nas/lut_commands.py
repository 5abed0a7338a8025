"""``nas build-lut`` and ``nas lut ...``: latency tables from the command line.

Thin handlers: parse, call :mod:`latency_lut`, print. ``register(commands)`` adds the
commands to the top-level subparsers of :func:`nas.cli.build_parser`.
"""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from search_spaces import get_space, list_spaces

from nas import nas_command

BACKEND_CHOICES = ("torch-cpu", "onnxruntime", "torch-cuda")


def cmd_build_lut(args: argparse.Namespace) -> None:
    import time

    space = get_space(args.space)  # before torch loads: bad input is answered at once
    from latency_lut import Backend, Protocol, build_table

    backend = Backend(args.backend, args.threads)
    started = time.perf_counter()
    protocol = _protocol(args)
    table = build_table(space, backend, args.out, protocol, progress=not args.quiet)
    print(f"{args.out}: {len(table.frame)} blocks of {space.name} on {backend.name} ({backend.threads} thread(s), "
          f"{protocol.describe()}) in {time.perf_counter() - started:.1f} s")
    slowdown = table.frame["slowdown"]
    if slowdown.max() / slowdown.min() > 1.01:
        print(f"the machine's speed drifted between chunks: slowdowns {slowdown.min():.2f}x-{slowdown.max():.2f}x of "
              "the first chunk's, divided out (the slowdown column)")
    print(f"mobilenetv2_100 (MES latency unit until nas lut validate): {table.reference_latency_ms:.3f} ms")


def cmd_lut_show(args: argparse.Namespace) -> None:
    from latency_lut import LatencyTable

    table = LatencyTable.load(args.file)
    first = table.frame.iloc[0] if len(table.frame) else None
    print(f"table        {args.file}")
    print(f"space        {table.space}")
    print(f"backend      {table.backend}" + (f", {table.threads} thread(s)" if table.threads else ""))
    if first is not None:
        print(f"device       {first['device']}")
        print(f"versions     {first['versions']}")
        print(f"measured     {table.frame['measured_at'].min()} .. {table.frame['measured_at'].max()}")
    print(f"blocks       {len(table.frame)}")
    reference = table.frame[table.frame["kind"] == "reference"]
    if not reference.empty:
        print(f"reference    {reference['key'].iloc[0]}: {reference['latency_ms'].iloc[0]:.3f} ms "
              "(MES latency unit)")
    c = table.calibration
    print("calibration  " + (f"{c.formula()} ({c.networks} networks, {c.fitted_at})" if c else
                             "none (run nas lut validate)"))
    print()
    print(table.summary().to_string(index=False, float_format=lambda v: f"{v:.4f}"))


def cmd_lut_validate(args: argparse.Namespace) -> None:
    from latency_lut import LatencyTable

    LatencyTable.load(args.file)  # before torch loads: a bad file is answered at once
    from latency_lut import Protocol, validate_and_calibrate

    path = Path(args.file)
    report, csv_path, png_path = validate_and_calibrate(
        path, samples=args.samples, seed=args.seed, fit_samples=args.fit_samples, protocol=_protocol(args),
        out_dir=args.out_dir, progress=not args.quiet)
    c = report.calibration
    print(f"calibration: {c.formula()} (fitted on {c.networks} networks, stored in {path}); MES latency unit "
          f"mobilenetv2_100 {c.reference_ms:.3f} ms")
    print(f"held-out networks: {report.calibrated.networks} (seed {args.seed}); {report.noise.describe()}")
    print(report.metrics().to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for warning in report.noise.warnings():
        print(f"warning: {warning}")
    print(f"wrote {csv_path} and {png_path}")


def cmd_lut_export_coreml(args: argparse.Namespace) -> None:
    get_space(args.space)  # before torch loads
    from latency_lut import export_coreml

    manifest = export_coreml(args.space, args.out, include_reference=True, networks=args.networks, seed=args.seed,
                             progress=not args.quiet)
    print(f"wrote {manifest}; measure on a Mac with: python3 coreml_measure.py {shlex.quote(str(manifest))} --out "
          "measurements.csv (latency_lut/coreml_measure.py), then: "
          + nas_command("lut", "import", "--manifest", manifest, "--measurements", "measurements.csv", "--out",
                        "TABLE.parquet"))


def cmd_lut_import(args: argparse.Namespace) -> None:
    from latency_lut import import_measurements

    result = import_measurements(args.manifest, args.measurements, args.out, min_runs=args.min_runs,
                                 allow_partial=args.allow_partial)
    table = result.table
    print(f"{args.out}: {len(table.frame)} Core ML blocks of {table.space} imported"
          + (f" ({len(result.missing)} of the space's blocks missing: a partial table)" if result.missing else ""))
    c, heldout = table.calibration, result.heldout
    print(f"calibration: {c.formula()} (fitted on {c.networks} measured networks; each left out in turn: MAPE "
          f"{heldout.mape_pct:.1f}%, {heldout.within_10_pct:.0f}% within ±10%, Kendall tau {heldout.kendall_tau:.3f})"
          if c else "calibration: none (export with --networks 8 or more to calibrate on whole networks)")


def _protocol(args: argparse.Namespace):
    from latency_lut import Protocol

    return Protocol(runs=args.runs, warmup=args.warmup, rounds=args.rounds, tolerance=args.tolerance)


def _add_protocol_options(parser: argparse.ArgumentParser, what: str) -> None:
    """The measuring protocol's options (latency_lut.profiling), shared by build-lut and lut validate."""
    defaults = {"runs": 100, "warmup": 2, "rounds": 20, "tolerance": 0.05}  # = latency_lut.Protocol()'s
    parser.add_argument("--runs", type=_positive, default=defaults["runs"],
                        help=f"timed runs per {what} (default {defaults['runs']})")
    parser.add_argument("--warmup", type=int, default=defaults["warmup"],
                        help=f"untimed runs per {what} and pass (default {defaults['warmup']})")
    parser.add_argument("--rounds", type=_positive, default=defaults["rounds"],
                        help=f"interleaved passes; up to 3x as many while the machine is busy (default "
                             f"{defaults['rounds']})")
    parser.add_argument("--tolerance", type=float, default=defaults["tolerance"],
                        help="a pass this much slower than a quiet one is left out and measured again (default "
                             f"{defaults['tolerance']})")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive integer")
    return value


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``build-lut`` and ``lut`` to the top-level subparsers of the ``nas`` command line."""
    p = commands.add_parser("build-lut", help="measure every block of a space into a latency table")
    p.add_argument("--space", required=True, help=f"one of {', '.join(list_spaces())} (or NAME@RESOLUTION)")
    p.add_argument("--backend", default="torch-cpu", help=f"one of {', '.join(BACKEND_CHOICES)} (default "
                   "torch-cpu; Core ML: nas lut export-coreml)")
    p.add_argument("--out", required=True, help="table file (.parquet or .csv); an existing one is resumed")
    p.add_argument("--threads", type=_positive, default=1, help="intra-op threads (default 1)")
    _add_protocol_options(p, "block")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_build_lut)

    lut = commands.add_parser("lut", help="inspect, validate, export and import latency tables")
    lut_commands = lut.add_subparsers(dest="lut_command", metavar="SUBCOMMAND", required=True)
    p = lut_commands.add_parser("show", help="context, calibration and per-kind latencies of a table")
    p.add_argument("file")
    p.set_defaults(handler=cmd_lut_show, torch=False)

    p = lut_commands.add_parser("validate", help="calibrate and validate a table against measured networks")
    p.add_argument("file")
    p.add_argument("--samples", type=int, default=50, help="held-out random networks (default 50)")
    p.add_argument("--fit-samples", type=int, default=20, help="networks the calibration is fitted on (default 20)")
    p.add_argument("--seed", type=int, default=0)
    _add_protocol_options(p, "network")
    p.add_argument("--out-dir", help="where the CSV and PNG go (default: beside the table)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_lut_validate)

    p = lut_commands.add_parser("export-coreml", help="every block of a space as .mlpackage + manifest.csv")
    p.add_argument("--space", required=True)
    p.add_argument("--out", required=True, help="folder for blocks/*.mlpackage and manifest.csv")
    p.add_argument("--networks", type=int, default=0,
                   help="also export N whole random networks (stratified by size) to calibrate on (default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the networks (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_lut_export_coreml)

    p = lut_commands.add_parser("import", help="a Core ML table from a Mac's measurements")
    p.add_argument("--manifest", required=True, help="DIR/manifest.csv of nas lut export-coreml")
    p.add_argument("--measurements", required=True, help="results CSV of coreml_measure.py")
    p.add_argument("--out", required=True, help="table file to write (.parquet or .csv)")
    p.add_argument("--min-runs", type=_positive, default=200, help="fewest timed runs accepted (default 200)")
    p.add_argument("--allow-partial", action="store_true", help="write a table that lacks blocks of the space")
    p.set_defaults(handler=cmd_lut_import)

