"""Table 5 of the supplement: the fine-grained joint search against EfficientFormer (V1)'s.

At the quickstart's parameter budget, three searches from the same supernet and table:
``fine-grained`` (width, depth, expansion and MHSA, MES-driven), ``v1-scale`` (depth and
width only, expansions fixed at the largest, latency-driven slimming) and
``v1-scale+prune`` (v1-scale, then expansions cut by weight magnitude). Each result is
evaluated from the supernet and trained from scratch.

    python experiments/reproduce/search_methods.py
"""
from __future__ import annotations

import pandas as pd

from _common import Reproduction, config_text, parser
from search_spaces.runtime import run_script
from nas.quickstart import BACKEND

PAPER = ("at 7.0M params the joint search reaches 79.4% top-1, V1-scale 79.2% and V1-scale + magnitude pruning "
         "79.2% (no gain from pruning)")
ALGORITHMS = ("fine-grained", "v1-scale", "v1-scale+prune")


def main() -> None:
    p = parser(__doc__.split("\n\n")[0], seeds=2)
    args = p.parse_args()
    rep = Reproduction("search_methods", args)
    budget = rep.params_budget()
    rows = []
    for algorithm in ALGORITHMS:
        result = rep.search([budget], algorithm)
        config, metrics = result.selected[budget]
        rows.append({"algorithm": algorithm, **rep.costs(config), "search_top1": metrics.accuracy,
                     "supernet_val_top1": rep.supernet_top1(config), **rep.scratch_seeds(config, args.seeds),
                     "evaluations": result.evaluations,
                     "blocks": config_text(config), "key": config.key})
    frame = pd.DataFrame(rows)
    by = frame.set_index("algorithm")
    joint = by.loc["fine-grained"]
    finding = [f"Budget {budget.label}: " + "; ".join(
        f"{a} {r.params_m:.3f}M, {r.latency_ms:.3f} ms, MES {r.mes:.0f}: supernet {r.supernet_val_top1:.2f}%, "
        f"from scratch {r.scratch_test_top1:.2f}% test (mean of seeds)" for a, r in by.iterrows()) + "."]
    for metric, what in (("scratch_test_top1", "from-scratch test top-1"), ("supernet_val_top1", "supernet top-1"),
                         ("mes", "MES")):
        others = by.drop(index="fine-grained")[metric]
        verdict = "above both" if (joint[metric] > others).all() else (
            "not above both" if (joint[metric] < others).any() else "tied with the best")
        finding.append(f"{what}: fine-grained {joint[metric]:.2f} vs v1-scale {by.loc['v1-scale', metric]:.2f}, "
                       f"v1-scale+prune {by.loc['v1-scale+prune', metric]:.2f}: the joint search is {verdict}.")
    wins = (joint["scratch_test_top1"] > by.drop(index="fine-grained")["scratch_test_top1"]).all()
    noise = frame["scratch_test_std"].mean()
    finding.append(f"From scratch, mean of seeds {', '.join(map(str, rep.seeds(args.seeds)))} ("
                   + "; ".join(f"{a}: {r.per_seed_test}" for a, r in by.iterrows())
                   + f"); mean seed-to-seed standard deviation {noise:.2f} points. The paper's differences are "
                   f"0.2 points.")
    ours = f"{budget.label}, from-scratch test top-1: " + ", ".join(
        f"{a} {r.scratch_test_top1:.2f}% ({r.latency_ms:.2f} ms)" for a, r in by.iterrows())
    ours += f" (seed std {noise:.2f})"
    gap = by["scratch_test_top1"].max() - joint["scratch_test_top1"]
    best_by_supernet = (joint["supernet_val_top1"] >= by["supernet_val_top1"]).all()
    supernet_note = ("the best by the supernet's accuracy" if best_by_supernet else
                     "and not the best by the supernet's accuracy either")
    verdict = ("agrees: the joint search is the most accurate from scratch" if wins else
               f"{'within the noise' if gap < noise else 'disagrees'}: the joint search is {gap:.2f} points below "
               f"the best from scratch ({gap / noise:.1f} seed std), {supernet_note}")
    notes = ["`search_top1`: what the search saw (supernet, first 500 val images, 2 BatchNorm batches); "
             "`supernet_val_top1`: the whole val split, 10 BatchNorm batches.",
             "MES at alpha_latency 1.0, alpha_size 0.5 (the quickstart's).",
             "`blocks`: per stage, width:expansions of its kept blocks (* = MHSA)."]
    table = frame[["algorithm", "params_m", "latency_ms", "mes", "search_top1", "supernet_val_top1",
                   "scratch_test_top1", "scratch_test_std", "blocks"]]
    rep.write(frame, _figure(frame, budget.label), "Search methods at one parameter budget (supplement Table 5)", PAPER,
              finding, (ours, verdict), notes, table)


def _figure(frame: pd.DataFrame, budget: str):
    import matplotlib.pyplot as plt

    from nas.plots import colour

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, column, label in ((axes[0], "scratch_test_top1", "from-scratch test top-1 (%)"),
                              (axes[1], "supernet_val_top1", "supernet val top-1 (%)")):
        for _, row in frame.iterrows():
            ax.scatter(row["latency_ms"], row[column], s=80, color=colour(row["algorithm"]), label=row["algorithm"])
        ax.set_xlabel(f"predicted latency (ms, {BACKEND} table)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    figure.suptitle(f"one budget: {budget}")
    figure.tight_layout()
    return figure


if __name__ == "__main__":
    run_script(main)
