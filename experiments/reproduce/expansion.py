"""Table 4 of the supplement: does the expansion ratio matter at equal parameters?

The fine-grained search's config at the quickstart's parameter budget gives the depths and
MHSA placement; every block then gets expansion 4, 2 or 1, and each variant's stage widths
(from the space's choices) are picked so that all three have the same parameter count
(within ``--tolerance``) and predicted latencies within ``--latency-spread`` of one another
(the paper's three networks share 13.4M params and 1.6 ms), at the largest such count (the
nearest to the base network's size). Each is trained from scratch with ``--seeds`` seeds.

    python experiments/reproduce/expansion.py
"""
from __future__ import annotations

import itertools
import statistics

import pandas as pd

from _common import Reproduction, config_text, parser, seed_bar_figure
from search_spaces.runtime import run_script
from search_spaces import BlockConfig, StageConfig, SubnetConfig, count_params

PAPER = "at 13.4M params and 1.6 ms, expansion 4 / 2 / 1 reach 81.8 / 81.6 / 81.1% top-1"
EXPANSIONS = (4, 2, 1)
PAPER_TOP1 = {4: 81.8, 2: 81.6, 1: 81.1}


def with_expansion(base: SubnetConfig, widths: tuple[int, ...], expansion: int) -> SubnetConfig:
    """``base``'s kept blocks and MHSA with every expansion set to ``expansion`` and the given stage widths."""
    stages = tuple(StageConfig(width, tuple(None if b is None else BlockConfig(expansion, b.mhsa) for b in s.blocks))
                   for width, s in zip(widths, base.stages))
    return SubnetConfig(base.space, base.resolution, widths[0], stages)


def equal_params_variants(space, base: SubnetConfig, latency, tolerance: float, latency_spread: float = 0.03
                          ) -> dict[int, SubnetConfig]:
    """Per expansion, a width choice: all three within ``tolerance`` (relative) of one parameter
    count and within ``latency_spread`` of one another in predicted latency, at the largest such
    count; the closest latencies among the triples there. Without any triple that close in
    latency: the closest overall."""
    combos = list(itertools.product(*[stage.widths for stage in space.stages]))
    variants = {e: [with_expansion(base, widths, e) for widths in combos] for e in EXPANSIONS}
    params = {e: [count_params(c) for c in variants[e]] for e in EXPANSIONS}
    latencies = {e: [latency(c) for c in variants[e]] for e in EXPANSIONS}
    candidates = []  # (latency spread, -target, params spread, triple)
    for target in sorted(set(params[2])):
        near = {e: [i for i, p in enumerate(params[e]) if abs(p - target) <= tolerance * target] for e in EXPANSIONS}
        if not all(near.values()):
            continue
        for triple in itertools.product(*(near[e] for e in EXPANSIONS)):
            values = [latencies[e][i] for e, i in zip(EXPANSIONS, triple)]
            counts = [params[e][i] for e, i in zip(EXPANSIONS, triple)]
            candidates.append(((max(values) - min(values)) / statistics.mean(values), -target,
                               (max(counts) - min(counts)) / target, triple))
    if not candidates:
        raise SystemExit(f"no widths give expansions {EXPANSIONS} parameter counts within {tolerance:.1%} of each "
                         f"other for {base.key}; raise --tolerance")
    close = [c for c in candidates if c[0] <= latency_spread]
    best = min(close, key=lambda c: (c[1], c[0], c[2])) if close else min(candidates)
    return {e: variants[e][i] for e, i in zip(EXPANSIONS, best[3])}


def main() -> None:
    p = parser(__doc__.split("\n\n")[0], seeds=2)
    p.add_argument("--tolerance", type=float, default=0.01, help="largest relative parameter difference allowed")
    p.add_argument("--latency-spread", type=float, default=0.03,
                   help="largest relative difference of predicted latency wanted between the three")
    args = p.parse_args()
    rep = Reproduction("expansion", args)
    budget = rep.params_budget()
    base = rep.search([budget]).selected[budget][0]
    variants = equal_params_variants(rep.job().space, base, lambda c: rep.costs(c)["latency_ms"], args.tolerance,
                                     args.latency_spread)
    seeds = rep.seeds(args.seeds)
    rows = [{"expansion": expansion, **rep.costs(config), "params": count_params(config),
             **rep.scratch_seeds(config, args.seeds), "supernet_val_top1": rep.supernet_top1(config),
             "paper_top1": PAPER_TOP1[expansion], "blocks": config_text(config), "key": config.key}
            for expansion, config in variants.items()]
    frame = pd.DataFrame(rows)
    order = list(frame.sort_values("scratch_test_top1", ascending=False)["expansion"])
    gap = frame["scratch_test_top1"].max() - frame["scratch_test_top1"].min()
    noise = frame["scratch_test_std"].mean()
    finding = [
        f"Base: the fine-grained search's config at {budget.label} ({config_text(base)}); every block's expansion "
        f"set to 4, 2, 1 with widths chosen for equal params: "
        + ", ".join(f"e={r.expansion}: {r.params / 1e6:.4f}M, {r.latency_ms:.3f} ms" for r in frame.itertuples())
        + ".",
        "From-scratch test top-1 (mean of seeds " + ", ".join(map(str, seeds)) + "): "
        + ", ".join(f"e={r.expansion}: {r.scratch_test_top1:.2f}% ({r.per_seed_test})" for r in frame.itertuples())
        + f"; order {' > '.join(f'e={e}' for e in order)} (paper: e=4 > e=2 > e=1).",
        f"Largest gap {gap:.2f} points against a mean seed-to-seed standard deviation of {noise:.2f} points.",
    ]
    within_noise = not gap > 2 * noise
    ours = (f"{frame['params_m'].mean():.3f}M: " + " / ".join(f"e={r.expansion} {r.scratch_test_top1:.2f}%"
                                                            for r in frame.itertuples())
            + f" (seed std {noise:.2f})")
    order_text = " > ".join(f"e={e}" for e in order)
    verdict = ("agrees on the order" if order == [4, 2, 1] else f"disagrees: order {order_text}") \
        + ("; within training noise" if within_noise else "")
    combinations = len(list(itertools.product(*[s.widths for s in rep.job().space.stages])))
    notes = [f"Widths: every combination of the space's stage widths ({combinations}) per expansion; among the "
             f"triples within {args.tolerance:.0%} params and {args.latency_spread:.0%} predicted latency of one "
             "another, the one with the most params.",
             "`blocks`: per stage, width:expansions of its kept blocks (* = MHSA)."]
    table = frame[["expansion", "params_m", "latency_ms", "scratch_test_top1", "scratch_test_std", "per_seed_test",
                   "supernet_val_top1", "paper_top1", "blocks"]]
    figure = seed_bar_figure(frame, [f"e={e}" for e in frame["expansion"]],
                             f"equal params ({frame['params_m'].mean():.3f}M)")
    rep.write(frame, figure, "Expansion ratio at equal parameters (supplement Table 4)", PAPER, finding,
              (ours, verdict), notes, table)


if __name__ == "__main__":
    run_script(main)
