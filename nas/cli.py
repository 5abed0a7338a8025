"""The ``nas`` command line: argument parsing and printing around library functions.

Bad input raises :class:`InvalidInputError` anywhere below; it is printed as one
line ``nas: error: ...`` and the command exits with status 2.
"""
from __future__ import annotations

import argparse
import re
import shlex
import sys
from typing import Callable, Optional, Sequence

from search_spaces import (
    PAPER_FIGURES,
    PRESETS,
    InvalidInputError,
    NasError,
    dump_yaml,
    get_space,
    list_spaces,
    load_configs,
    network_costs,
    network_parts,
    part_costs,
    resolve_config,
    validate,
)
from search_spaces.units import format_params
from nas.mes import mobile_efficiency_score

Handler = Callable[[argparse.Namespace], Optional[int]]


def _print_table(rows: list[dict], float_format: str = "{:.3f}") -> None:
    """Plain aligned columns; floats formatted with ``float_format``."""
    if not rows:
        return
    columns = list(rows[0])
    cells = [[float_format.format(v) if isinstance(v, float) else str(v) for v in row.values()] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip())
    for r in cells:
        print("  ".join(v.rjust(w) if _is_number(v) else v.ljust(w) for v, w in zip(r, widths)).rstrip())


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


# -- nas space ---------------------------------------------------------------------------------

def cmd_space_presets(args: argparse.Namespace) -> None:
    rows = []
    for name, config in PRESETS.items():
        costs = network_costs(config)
        paper = PAPER_FIGURES[name]
        rows.append({
            "preset": name,
            "params_m": costs.params_m,
            "paper_params_m": paper["params_m"],
            "all_params_m": costs.params / 1e6,
            "macs_g": costs.macs_g,
            "paper_macs_g": paper["macs_g"],
            "paper_latency_ms": paper["latency_ms"],
            "mes": mobile_efficiency_score(costs.params_deploy, paper["latency_ms"]),
            "paper_mes": mobile_efficiency_score(paper["params_m"] * 1e6, paper["latency_ms"]),
            "paper_top1": paper["top1"],
        })
    _print_table(rows)
    print("\nparams_m: BatchNorm and LayerScale folded (the paper's convention); all_params_m: every "
          "nn.Parameter of the timm model.\nmes: alpha_latency 1.0, alpha_size 0.5, units 3M params and 1 ms, "
          "at the paper's iPhone 12 latency (paper_mes: with the paper's rounded params).")


def cmd_space_show(args: argparse.Namespace) -> None:
    print(dump_yaml(get_space(args.space).describe()), end="")


def cmd_space_sample(args: argparse.Namespace) -> None:
    import random

    if args.n < 1:
        raise InvalidInputError(f"-n {args.n}: expected a positive number of configs")
    space = get_space(args.space)
    rng = random.Random(args.seed)
    documents = [space.sample(rng).to_yaml() for _ in range(args.n)]
    print("---\n".join(documents), end="")


def cmd_space_validate(args: argparse.Namespace) -> None:
    for config in load_configs(args.file):
        validate(config)
        costs = network_costs(config)
        print(f"ok  {config.space}  {config.key}  params {format_params(costs.params_deploy)}  "
              f"MACs {costs.macs_g:.3f}G")


# -- nas model ---------------------------------------------------------------------------------

def cmd_model_summary(args: argparse.Namespace) -> None:
    config = resolve_config(args.config)
    costs = network_costs(config)
    print(f"space       {config.space}")
    print(f"key         {config.key}")
    print(f"resolution  {config.resolution}")
    print(f"widths      {', '.join(map(str, config.widths))}")
    print(f"depths      {', '.join(map(str, config.depths))}  (MHSA: "
          f"{', '.join(str(s.num_mhsa) for s in config.stages)})")
    print(f"params      {costs.params_m:.3f} M (BatchNorm and LayerScale folded), {costs.params / 1e6:.3f} M all")
    print(f"MACs        {costs.macs_g:.3f} G\n")
    rows = []
    for part in network_parts(config):
        part_cost = part_costs(part)
        rows.append({"part": part.kind, "channels": f"{part.in_channels}->{part.out_channels}",
                     "input": f"{part.resolution}x{part.resolution}",
                     "expansion": part.expansion or "", "params_k": part_cost.params_deploy / 1e3,
                     "macs_m": part_cost.macs / 1e6})
    _print_table(rows, "{:.1f}")


# -- parser ------------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse's own errors in the project's form: the usage, then one line ``nas: error: ...`` (exit 2)."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(2, f"nas: error: {message} (see {self.prog} --help)\n")


_NEGATIVE_WITH_UNIT = re.compile(r"-[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?[a-zA-Zµ]+")


def _join_negative_values(argv: Sequence[str]) -> list[str]:
    """``--latency -1ms`` as ``--latency=-1ms``: argparse takes any token starting with ``-`` and a letter
    for an option, so the value would never reach its own check (which names it)."""
    joined: list[str] = []
    for token in argv:
        if (joined and joined[-1].startswith("--") and "=" not in joined[-1]
                and _NEGATIVE_WITH_UNIT.fullmatch(token)):
            joined[-1] = f"{joined[-1]}={token}"
        else:
            joined.append(token)
    return joined


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nas", description="EfficientFormerV2 architecture search.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    space = commands.add_parser("space", help="inspect search spaces and presets")
    space_commands = space.add_subparsers(dest="space_command", metavar="SUBCOMMAND", required=True)
    p = space_commands.add_parser("presets", help="S0, S1, S2, L: params, MACs, MES at the paper's latency")
    p.set_defaults(handler=cmd_space_presets, torch=False)
    p = space_commands.add_parser("show", help="the choices of a space")
    p.add_argument("--space", default="efficientformerv2", help=f"one of {', '.join(list_spaces())} "
                   "(NAME@RESOLUTION for another input size); default: efficientformerv2")
    p.set_defaults(handler=cmd_space_show, torch=False)
    p = space_commands.add_parser("sample", help="random configs of a space, as YAML documents")
    p.add_argument("--space", default="efficientformerv2")
    p.add_argument("-n", type=int, default=5, help="number of configs (default 5)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=cmd_space_sample, torch=False)
    p = space_commands.add_parser("validate", help="check every config of a YAML/JSON file against its space")
    p.add_argument("file")
    p.set_defaults(handler=cmd_space_validate, torch=False)

    model = commands.add_parser("model", help="inspect a network")
    model_commands = model.add_subparsers(dest="model_command", metavar="SUBCOMMAND", required=True)
    p = model_commands.add_parser("summary", help="params, MACs and parts of a config file or preset")
    p.add_argument("config", metavar="FILE_OR_PRESET")
    p.set_defaults(handler=cmd_model_summary, torch=False)

    from nas import lut_commands, pipeline_commands, search_commands, train_commands

    pipeline_commands.register(commands)  # quickstart first: what a new user runs
    train_commands.register(commands)
    lut_commands.register(commands)
    search_commands.register(commands)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(_join_negative_values(argv))
    args.command_line = "nas " + shlex.join(argv)  # what the user typed, for the outputs that record it
    try:
        if getattr(args, "torch", True):  # commands that only read files (torch=False) start faster without
            from search_spaces.runtime import configure_process

            configure_process()  # the process's settings: here, and nowhere in the library
        return args.handler(args) or 0
    except NasError as error:
        print(f"nas: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nas: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
