"""Fig. 2 of the supplement: do the searched networks beat random ones at every latency?

The fine-grained family search's configs (the quickstart's four parameter budgets) and
random configs spread evenly over the same predicted-latency range are all trained from
scratch with one protocol. A random config *beats* a searched one when it is more accurate
and no slower, up to ``--latency-slack`` above the searched one's latency (predicted
latencies carry a few percent of error, so a near tie counts as a match).

    python experiments/reproduce/searched_vs_random.py     # shares its trained runs with ranking_fidelity.py
"""
from __future__ import annotations

import pandas as pd

from _common import Reproduction, config_text, family_and_random, parser, positive
from search_spaces.runtime import run_script
from nas.quickstart import BACKEND

PAPER = "the searched models beat random subnetworks of the same budgets at every latency"


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--random", type=int, default=10, help="random configs over the family's latency range")
    p.add_argument("--latency-slack", type=float, default=0.05,
                   help="a random config counts as no slower up to this fraction above a searched one's latency")
    args = p.parse_args()
    if not 0 <= args.latency_slack < 1:
        raise SystemExit(f"--latency-slack {args.latency_slack}: expected a fraction in [0, 1)")
    positive("--random", args.random)
    rep = Reproduction("searched_vs_random", args)
    family, randoms = family_and_random(rep, args.random)
    rows = []
    for kind, items in (("searched", family), ("random", [(f"random-{i + 1}", c) for i, c in enumerate(randoms)])):
        for name, config in items:
            scratch = rep.scratch(config)
            rows.append({"config": name, "kind": kind, **rep.costs(config),
                         "supernet_val_top1": rep.supernet_top1(config), "scratch_test_top1": scratch["test_top1"],
                         "scratch_val_top1": scratch["val_top1"], "blocks": config_text(config), "key": config.key})
    frame = pd.DataFrame(rows).sort_values("latency_ms", ignore_index=True)
    searched, random_ = frame[frame["kind"] == "searched"], frame[frame["kind"] == "random"]
    beaten, margins = [], []
    for _, row in searched.iterrows():
        faster = random_[random_["latency_ms"] <= row["latency_ms"] * (1 + args.latency_slack)]
        best = faster["scratch_test_top1"].max() if len(faster) else float("nan")
        margins.append(row["scratch_test_top1"] - best)
        if len(faster) and best > row["scratch_test_top1"]:
            beaten.append(f"{row['config']} ({row['scratch_test_top1']:.2f}% at {row['latency_ms']:.3f} ms) by "
                          f"{faster.loc[faster['scratch_test_top1'].idxmax(), 'config']} ({best:.2f}%)")
    frame["margin_over_best_no_slower_random"] = float("nan")
    frame.loc[searched.index, "margin_over_best_no_slower_random"] = margins
    finding = [
        f"{len(searched)} searched and {len(random_)} random configs between {frame['latency_ms'].min():.3f} and "
        f"{frame['latency_ms'].max():.3f} ms (predicted, {BACKEND}), trained from scratch.",
        (f"**Every searched config beats every random config that is no slower** (within "
         f"{args.latency_slack:.0%}; margins over the best such random config: "
         f"{', '.join(f'{m:+.2f}' if m == m else 'none that fast' for m in margins)} points)." if not beaten else
         f"**{len(beaten)} of {len(searched)} searched configs are beaten** by a random config that is no slower: "
         + "; ".join(beaten) + "."),
        f"Mean test top-1: searched {searched['scratch_test_top1'].mean():.2f}%, random "
        f"{random_['scratch_test_top1'].mean():.2f}% (random mean latency {random_['latency_ms'].mean():.3f} ms, "
        f"searched {searched['latency_ms'].mean():.3f} ms).",
    ]
    table = frame[["config", "kind", "params_m", "latency_ms", "supernet_val_top1", "scratch_test_top1",
                   "margin_over_best_no_slower_random", "blocks"]]
    notes = [f"Random configs: {args.random} drawn (seed {args.seed}) from 3000 uniform samples of the space, the one "
             "nearest each of evenly spaced latencies over the family's range.",
             "`margin_over_best_no_slower_random`: a searched config's test top-1 minus the best test top-1 of the "
             f"random configs with at most {1 + args.latency_slack:g}x its predicted latency (blank when none is "
             "that fast).",
             "`blocks`: per stage, width:expansions of its kept blocks (* = MHSA)."]
    ours = (f"{len(beaten)} of {len(searched)} searched configs beaten by a no-slower random one (of "
            f"{len(random_)}); mean test top-1 searched {searched['scratch_test_top1'].mean():.2f}%, random "
            f"{random_['scratch_test_top1'].mean():.2f}%")
    verdict = "agrees" if not beaten else f"disagrees at {len(beaten)} of {len(searched)} latencies"
    rep.write(frame, _figure(frame), "Searched vs random networks (supplement Fig. 2)", PAPER, finding, (ours, verdict),
              notes, table)


def _figure(frame: pd.DataFrame):
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, column, label in ((axes[0], "scratch_test_top1", "from-scratch test top-1 (%)"),
                              (axes[1], "supernet_val_top1", "supernet val top-1 (%)")):
        for kind, style in (("random", dict(marker="o", linestyle="none")), ("searched", dict(marker="*",
                                                                                              markersize=12))):
            part = frame[frame["kind"] == kind]
            ax.plot(part["latency_ms"], part[column], label=kind, **style)
        ax.set_xlabel(f"predicted latency (ms, {BACKEND} table)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_title("trained from scratch")
    axes[1].set_title("inherited from the supernet")
    figure.tight_layout()
    return figure


if __name__ == "__main__":
    run_script(main)
