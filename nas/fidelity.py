"""How truthfully a supernet ranks networks: its scores against from-scratch truth, with intervals.

The truth is a bank of configs trained from scratch (``experiments/results/truth_bank.csv``,
built by ``experiments/reproduce/truth_bank.py``). Pearson r², Spearman's rho and Kendall's
tau-b between a supernet's top-1 and the bank's, each with a percentile bootstrap interval
over configs, for the whole bank and for its top third (the configs a search has to tell
apart). ``benchmarks/supernet_fidelity.py`` scores any supernet checkpoint this way.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from latency_lut.validation import kendall_tau

STATISTICS = ("r2", "spearman", "kendall_tau")


def rank_correlations(x: Sequence[float], y: Sequence[float]) -> dict:
    """Pearson r and r^2, Spearman rho and Kendall tau-b between two paired series."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    pearson = float(np.corrcoef(x, y)[0, 1])
    ranks = [pd.Series(v).rank().to_numpy() for v in (x, y)]
    return {"pearson_r": pearson, "r2": pearson ** 2, "spearman": float(np.corrcoef(*ranks)[0, 1]),
            "kendall_tau": kendall_tau(x, y), "n": int(x.size)}


def with_intervals(x: Sequence[float], y: Sequence[float], resamples: int = 2000, seed: int = 0,
                   level: float = 0.95) -> dict:
    """:func:`rank_correlations` plus ``STAT_low`` / ``STAT_high``: the percentile bootstrap interval
    of each statistic over ``resamples`` resamplings of the pairs (seeded)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    return _bootstrap((x, y), lambda pick: rank_correlations(x[pick], y[pick]), resamples, seed, level)


def paired_difference(truth: Sequence[float], before: Sequence[float], after: Sequence[float],
                      resamples: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """How much ``after`` (one supernet's scores) ranks the truth better than ``before`` (another's, of
    the same configs): ``{STAT: after's minus before's, STAT_low, STAT_high}`` for each of
    ``STATISTICS``, the interval a percentile bootstrap over configs where both are resampled
    together. Pairing removes the spread that comes from which configs the bank holds, so a
    difference can be told from zero where the two statistics' own intervals overlap."""
    truth, before, after = (np.asarray(v, float) for v in (truth, before, after))
    if not truth.size == before.size == after.size:
        raise ValueError(f"expected paired series; got {truth.size}, {before.size} and {after.size} values")

    def difference(pick) -> dict:
        a, b = rank_correlations(before[pick], truth[pick]), rank_correlations(after[pick], truth[pick])
        return {name: b[name] - a[name] for name in STATISTICS}

    return _bootstrap((truth, before, after), difference, resamples, seed, level)


def _bootstrap(series: tuple, statistic, resamples: int, seed: int, level: float) -> dict:
    """``statistic`` (index array -> ``{STAT: value}``) on every config, plus the percentile bootstrap
    interval of each of ``STATISTICS`` over ``resamples`` seeded resamplings of the configs; a
    resample in which any of ``series`` is constant has no ranking to judge and is skipped."""
    size = series[0].size
    result = dict(statistic(np.arange(size)))
    rng = np.random.default_rng(seed)
    draws = []
    with np.errstate(invalid="ignore", divide="ignore"):
        for _ in range(resamples):
            pick = rng.integers(0, size, size)
            if min(np.ptp(values[pick]) for values in series) > 0:
                draws.append(statistic(pick))
    tail = (1 - level) / 2 * 100
    for name in STATISTICS:
        values = np.asarray([draw[name] for draw in draws], float)
        low, high = np.nanpercentile(values, [tail, 100 - tail]) if values.size else (np.nan, np.nan)
        result[f"{name}_low"], result[f"{name}_high"] = float(low), float(high)
    return result


def bank_truth(bank: pd.DataFrame) -> pd.DataFrame:
    """One row per config of the bank: its test and val top-1, averaged over its seeds."""
    grouped = bank.groupby("key", sort=False)
    return pd.DataFrame({"params": grouped["params"].first(), "latency_ms": grouped["latency_ms"].first(),
                         "source": grouped["source"].first(), "seeds": grouped["seed"].nunique(),
                         "test_top1": grouped["test_top1"].mean(), "val_top1": grouped["val_top1"].mean()}
                        ).reset_index()


def seed_noise(bank: pd.DataFrame) -> tuple[float, int]:
    """The standard deviation of one run's test top-1 across seeds, pooled over the configs trained
    more than once (``nan`` if none), and how many configs that is."""
    spread = bank.groupby("key")["test_top1"].agg(["var", "count"])
    spread = spread[spread["count"] > 1]
    if spread.empty:
        return float("nan"), 0
    pooled = float(np.sqrt((spread["var"] * (spread["count"] - 1)).sum() / (spread["count"] - 1).sum()))
    return pooled, len(spread)


def fidelity(truth: Sequence[float], supernet: Sequence[float], resamples: int = 2000, seed: int = 0) -> dict:
    """``{"all": ..., "top_third": ...}``: :func:`with_intervals` over every config and over the
    third with the best truth."""
    truth, supernet = np.asarray(truth, float), np.asarray(supernet, float)
    top = np.argsort(-truth)[: max(3, len(truth) // 3)]
    return {"all": with_intervals(supernet, truth, resamples, seed),
            "top_third": with_intervals(supernet[top], truth[top], resamples, seed)}


def describe(stats: dict) -> str:
    """``r² 0.73 [0.55, 0.86], Spearman 0.88 [...], Kendall 0.73 [...] (n = 48)``."""
    names = {"r2": "r²", "spearman": "Spearman", "kendall_tau": "Kendall"}
    return ", ".join(f"{names[s]} {stats[s]:.2f} [{stats[s + '_low']:.2f}, {stats[s + '_high']:.2f}]"
                     for s in STATISTICS) + f" (n = {stats['n']})"


def scatter(frame: pd.DataFrame, stats: dict, supernet_label: str = "supernet top-1 (%)"):
    """Supernet against from-scratch top-1 (``frame``: ``supernet_top1``, ``test_top1``, ``params``), the top
    third marked; a matplotlib Figure (no pyplot)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 5.2), dpi=110)
    axes = figure.add_subplot()
    top = frame["test_top1"] >= frame["test_top1"].nlargest(max(3, len(frame) // 3)).min()
    for part, label, marker in ((frame[~top], "rest of the bank", "o"), (frame[top], "top third", "*")):
        points = axes.scatter(part["supernet_top1"], part["test_top1"], c=part["params"] / 1e6, cmap="viridis",
                              vmin=frame["params"].min() / 1e6, vmax=frame["params"].max() / 1e6, marker=marker,
                              s=90 if marker == "*" else 30, label=label, edgecolors="black", linewidths=0.3)
    figure.colorbar(points, ax=axes, label="params (M)")
    axes.set_xlabel(supernet_label)
    axes.set_ylabel("from-scratch test top-1 (%, mean over seeds)")
    axes.set_title(describe(stats["all"]).replace(", Kendall", "\nKendall"), fontsize=8)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure
