"""Fig. 3 of the supplement: does the supernet rank networks as training from scratch does?

Configs spread over the tiny space's size range (its smallest and largest, the family
search's four, and random ones over the family's latency range) are each evaluated from
the quickstart's supernet (BatchNorm recalibrated, the whole held-out val split) and
trained from scratch with one protocol; Pearson r^2, Spearman and Kendall tau between
the two. One config is also trained with more seeds: the seed-to-seed spread says how
much of the scatter is training noise.

    python experiments/reproduce/ranking_fidelity.py            # ~25 min on 2 cores, less when cached
"""
from __future__ import annotations

import statistics

import pandas as pd

from _common import Reproduction, config_text, family_and_random, parser, positive, rank_correlations, run
from supernet.protocol import EvalProtocol

PAPER = ("supernet-inherited and from-scratch accuracy correlate with r² = 0.91 (EagleEye: 0.63); every "
         "subnet's inherited accuracy is above 40%")


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--random", type=int, default=10, help="random configs besides the family and the extremes")
    p.add_argument("--noise-seeds", type=int, default=3, help="seeds of the seed-spread config (1: none)")
    args = p.parse_args()
    positive("--random", args.random)
    positive("--noise-seeds", args.noise_seeds)
    rep = Reproduction("ranking_fidelity", args)
    family, randoms = family_and_random(rep, args.random)
    space = rep.job().space
    configs = [("smallest", space.smallest()), *family, *[(f"random-{i + 1}", c) for i, c in enumerate(randoms)],
               ("largest", space.largest())]
    rows = []
    for name, config in configs:
        scratch = rep.scratch(config)
        rows.append({"config": name, "kind": name.split("-")[0] if name.startswith("random") else
                     ("searched" if name.startswith("params") else "extreme"),
                     **rep.costs(config), "supernet_val_top1": rep.supernet_top1(config),
                     "scratch_val_top1": scratch["val_top1"], "scratch_test_top1": scratch["test_top1"],
                     "train_seconds": scratch["train_seconds"], "blocks": config_text(config), "key": config.key})
    frame = pd.DataFrame(rows).sort_values("params_m", ignore_index=True)
    # seed spread of the median-size config
    median = frame.iloc[len(frame) // 2]
    median_config = dict(configs)[median["config"]]
    seeds = [args.seed + i for i in range(args.noise_seeds)]
    spread = [rep.scratch(median_config, seed)["val_top1"] for seed in seeds]
    noise = statistics.stdev(spread) if len(spread) > 1 else float("nan")

    val = rank_correlations(frame["supernet_val_top1"], frame["scratch_val_top1"])
    test = rank_correlations(frame["supernet_val_top1"], frame["scratch_test_top1"])
    ranges = {c: frame[c].max() - frame[c].min() for c in ("supernet_val_top1", "scratch_val_top1")}
    agree = val["r2"] >= 0.63
    finding = [
        f"{len(frame)} configs from {frame['params_m'].min():.3f}M to {frame['params_m'].max():.3f}M params: "
        f"supernet val top-1 against from-scratch val top-1: **Pearson r² = {val['r2']:.2f}** (r = "
        f"{val['pearson_r']:.2f}), Spearman ρ = {val['spearman']:.2f}, Kendall τ = {val['kendall_tau']:.2f}; "
        f"against from-scratch test top-1: r² = {test['r2']:.2f}, ρ = {test['spearman']:.2f}, "
        f"τ = {test['kendall_tau']:.2f}.",
        f"Lowest supernet accuracy: {frame['supernet_val_top1'].min():.1f}% (the paper's > 40%: "
        f"{'holds' if frame['supernet_val_top1'].min() > 40 else 'does not hold'}).",
        f"Spread of accuracies across configs: supernet {ranges['supernet_val_top1']:.2f} points, from scratch "
        f"{ranges['scratch_val_top1']:.2f} points; seed-to-seed standard deviation of one config "
        f"({median['config']}, seeds {', '.join(map(str, seeds))}: "
        f"{', '.join(f'{v:.2f}' for v in spread)}) {noise:.2f} points.",
    ]
    figure = _figure(frame, val)
    table = frame[["config", "params_m", "latency_ms", "supernet_val_top1", "scratch_val_top1",
                   "scratch_test_top1", "blocks"]]
    notes = [f"Supernet accuracy: every one of the {rep.recipe.val_split} held-out val images, BatchNorm "
             f"recalibrated on {EvalProtocol().bn_batches} batches of {EvalProtocol().batch_size} training images "
             f"(`nas eval-subnet`'s evaluation).",
             "Configs: the space's smallest and largest, the fine-grained family search's four (`params-*`), "
             f"{args.random} random configs spread evenly over the family's predicted latency range "
             f"(seed {args.seed}).",
             "`blocks`: per stage, width:expansions of its kept blocks (* = MHSA)."]
    ours = (f"r² = {val['r2']:.2f}, Spearman {val['spearman']:.2f}, Kendall {val['kendall_tau']:.2f} over "
            f"{len(frame)} configs; lowest supernet top-1 {frame['supernet_val_top1'].min():.1f}%")
    verdict = ("agrees" if val["r2"] >= 0.8 else "weaker than the paper's 0.91, above EagleEye's 0.63" if agree else
               "disagrees: below EagleEye's 0.63")
    rep.write(frame, figure, "Ranking fidelity of the supernet (supplement Fig. 3)", PAPER, finding, (ours, verdict),
              notes, table)


def _figure(frame: pd.DataFrame, stats: dict):
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(6, 5))
    for kind, marker in (("searched", "*"), ("random", "o"), ("extreme", "s")):
        part = frame[frame["kind"] == kind]
        ax.scatter(part["supernet_val_top1"], part["scratch_val_top1"], marker=marker, s=80 if marker == "*" else 40,
                   label=kind)
    ax.set_xlabel("supernet val top-1 (%, inherited weights, BN recalibrated)")
    ax.set_ylabel("from-scratch val top-1 (%)")
    ax.set_title(f"r² = {stats['r2']:.2f}, Spearman {stats['spearman']:.2f}, Kendall {stats['kendall_tau']:.2f} "
                 f"(n = {stats['n']})")
    ax.grid(alpha=0.3)
    ax.legend()
    figure.tight_layout()
    return figure


if __name__ == "__main__":
    run(main)
