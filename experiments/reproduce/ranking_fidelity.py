"""Fig. 3 of the supplement: does the supernet rank networks as training from scratch does?

Every config of the truth bank (``experiments/results/truth_bank.csv``: configs spread evenly
over the tiny space's size and latency range, the largest, the smallest and the searches'
picks, each trained from scratch; built by ``truth_bank.py``) is evaluated from the
quickstart's supernet (BatchNorm recalibrated, the whole held-out val split) and compared with
its from-scratch test top-1: Pearson r², Spearman and Kendall tau with bootstrap 95% intervals,
over the bank and over its top third; the bank's seed noise says how much of the scatter is
training noise. ``benchmarks/supernet_fidelity.py`` computes the same for any checkpoint.

    python experiments/reproduce/ranking_fidelity.py            # minutes, once the bank exists
"""
from __future__ import annotations

from pathlib import Path

from _common import ROOT, Reproduction, config_text, parser, positive
from search_spaces.runtime import run_script
from nas.fidelity import bank_truth, describe, fidelity, scatter, seed_noise
from search_spaces import InvalidInputError, SubnetConfig
from supernet.protocol import EvalProtocol
from truth_bank import load_bank

PAPER = ("supernet-inherited and from-scratch accuracy correlate with r² = 0.91 (EagleEye: 0.63); every "
         "subnet's inherited accuracy is above 40%")


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--bank", type=Path, default=ROOT / "experiments" / "results" / "truth_bank.csv")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples of the intervals")
    args = p.parse_args()
    positive("--resamples", args.resamples)
    rep = Reproduction("ranking_fidelity", args)
    bank = load_bank(args.bank)
    frame = bank_truth(bank)
    if len(frame) < 5:
        raise InvalidInputError(f"{args.bank} holds {len(frame)} configs; expected at least 5 (build the bank with "
                                "experiments/reproduce/truth_bank.py)")
    space = rep.job().space
    configs = [SubnetConfig.from_key(space.name, key) for key in frame["key"]]
    frame["supernet_top1"] = [rep.supernet_top1(config) for config in configs]
    frame["blocks"] = [config_text(config) for config in configs]
    frame["params_m"] = frame["params"] / 1e6
    frame = frame.sort_values("params", ignore_index=True)
    stats = fidelity(frame["test_top1"], frame["supernet_top1"], args.resamples, args.seed)
    noise, repeated = seed_noise(bank)
    r2 = stats["all"]
    finding = [
        f"{len(frame)} configs from {frame['params_m'].min():.3f}M to {frame['params_m'].max():.3f}M params, "
        f"supernet val top-1 against from-scratch test top-1 (95% bootstrap intervals): "
        f"**{describe(stats['all'])}**.",
        f"Within the top third of the bank (what a search has to rank): {describe(stats['top_third'])}.",
        f"Lowest supernet accuracy: {frame['supernet_top1'].min():.1f}% (the paper's > 40%: "
        f"{'holds' if frame['supernet_top1'].min() > 40 else 'does not hold'}).",
        f"Spread of accuracies across configs: supernet "
        f"{frame['supernet_top1'].max() - frame['supernet_top1'].min():.2f} points, from scratch "
        f"{frame['test_top1'].max() - frame['test_top1'].min():.2f} points; seed-to-seed standard deviation of "
        f"one from-scratch run {noise:.2f} points ({repeated} configs trained with two seeds).",
    ]
    table = frame[["source", "params_m", "latency_ms", "supernet_top1", "test_top1", "seeds", "blocks"]]
    notes = [f"Supernet accuracy: every one of the {rep.recipe.val_split} held-out val images, BatchNorm "
             f"recalibrated on {EvalProtocol().bn_batches} batches of {EvalProtocol().batch_size} training images "
             f"(`nas eval-subnet`'s evaluation).",
             f"From scratch: the truth bank `{_shown(args.bank)}` ({len(bank)} runs, "
             f"{bank['train_seconds'].sum() / 60:.0f} min of training, recipe digest "
             f"{', '.join(sorted(set(bank['recipe_digest'])))}); test top-1, mean over each config's seeds.",
             "Intervals: percentile bootstrap over configs, "
             f"{args.resamples} resamples (seed {args.seed}).",
             "`blocks`: per stage, width:expansions of its kept blocks (* = MHSA)."]
    ours = (f"r² = {r2['r2']:.2f} [{r2['r2_low']:.2f}, {r2['r2_high']:.2f}], Spearman {r2['spearman']:.2f}, "
            f"Kendall {r2['kendall_tau']:.2f} over {len(frame)} configs; lowest supernet top-1 "
            f"{frame['supernet_top1'].min():.1f}%")
    if r2["r2_high"] < 0.63:
        verdict = "disagrees: below EagleEye's 0.63, intervals included"
    elif r2["r2_high"] < 0.91:
        verdict = "weaker than the paper's 0.91 (outside the interval)" + (
            ", above EagleEye's 0.63" if r2["r2_low"] > 0.63 else "")
    else:
        verdict = "agrees: the paper's 0.91 is inside or below the interval"
    rep.write(frame, scatter(frame, stats, "supernet val top-1 (%, inherited weights, BN recalibrated)"),
              "Ranking fidelity of the supernet (supplement Fig. 3)", PAPER, finding, (ours, verdict), notes, table)


def _shown(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    run_script(main)
