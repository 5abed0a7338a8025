"""nas.fidelity (the statistics of a supernet against the truth bank) and the bank's plan."""
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nas.fidelity import bank_truth, fidelity, paired_difference, rank_correlations, seed_noise, with_intervals
from search_spaces import count_params, get_space

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "experiments" / "reproduce"))

from truth_bank import planned_configs  # noqa: E402


def test_rank_correlations():
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    monotone = rank_correlations(x, [v ** 3 for v in x])
    assert monotone["spearman"] == pytest.approx(1) and monotone["kendall_tau"] == pytest.approx(1)
    assert 0.8 < monotone["r2"] < 1
    reversed_ = rank_correlations(x, [-v for v in x])
    assert reversed_["pearson_r"] == pytest.approx(-1) and reversed_["r2"] == pytest.approx(1)
    assert reversed_["kendall_tau"] == pytest.approx(-1)
    one_swap = rank_correlations(x, [1.0, 3.0, 2.0, 4.0, 5.0])
    assert one_swap["kendall_tau"] == pytest.approx(0.8)  # 9 concordant, 1 discordant of 10 pairs


def test_intervals_hold_the_truth_and_narrow_with_more_configs():
    """Pairs with a known correlation (rho = 0.8, so r² = 0.64): the 95% intervals of 30 samples of
    16 configs hold it nearly always, and intervals are about half as wide with four times the configs."""
    rng = np.random.default_rng(1)

    def sample(n):
        x = rng.standard_normal(n)
        return with_intervals(x, 0.8 * x + 0.6 * rng.standard_normal(n), resamples=300, seed=0)

    small = [sample(16) for _ in range(30)]
    assert all(s["r2_low"] <= s["r2"] <= s["r2_high"] and s["kendall_tau_low"] <= s["kendall_tau_high"]
               for s in small)
    assert sum(s["r2_low"] < 0.64 < s["r2_high"] for s in small) >= 24
    width = {n: np.mean([s["r2_high"] - s["r2_low"] for s in samples])
             for n, samples in ((16, small[:6]), (64, [sample(64) for _ in range(6)]))}
    assert 0.3 < width[64] / width[16] < 0.75
    exact = with_intervals([1, 2, 3, 4, 5, 6], [2, 4, 6, 8, 10, 12], resamples=200)
    assert exact["r2_low"] == pytest.approx(1) and exact["kendall_tau_high"] == pytest.approx(1)
    assert with_intervals([1, 2, 3, 4], [4, 1, 3, 2], resamples=200, seed=3) == with_intervals(
        [1, 2, 3, 4], [4, 1, 3, 2], resamples=200, seed=3)  # seeded


def test_the_bank_averages_seeds_and_measures_their_noise():
    bank = pd.DataFrame({"key": ["a", "a", "b", "b", "c"], "params": [1, 1, 2, 2, 3], "latency_ms": [1.0] * 5,
                         "source": ["x"] * 5, "seed": [0, 1, 0, 1, 0],
                         "test_top1": [80.0, 82.0, 70.0, 71.0, 60.0], "val_top1": [79.0, 81.0, 69.0, 70.0, 61.0]})
    truth = bank_truth(bank).set_index("key")
    assert truth.loc["a", "test_top1"] == 81.0 and truth.loc["b", "seeds"] == 2 and truth.loc["c", "seeds"] == 1
    noise, repeated = seed_noise(bank)
    assert repeated == 2 and noise == pytest.approx(math.sqrt((2.0 + 0.5) / 2))  # pooled sample variances
    assert math.isnan(seed_noise(bank[bank.seed == 0])[0])
    split = fidelity([90, 89, 88, 50, 40, 30, 20, 10, 0], [9, 8, 7, 1, 2, 3, 4, 5, 6], resamples=100)
    assert split["top_third"]["n"] == 3 and split["top_third"]["kendall_tau"] == pytest.approx(1)
    assert split["all"]["kendall_tau"] < 0.5  # the rest of the bank is ranked backwards


def test_a_paired_difference_is_narrower_than_an_unpaired_one():
    rng = np.random.default_rng(1)
    truth = rng.standard_normal(48)
    shared = rng.standard_normal(48)  # the configs a supernet misranks, common to both
    before = truth + 0.8 * shared + 0.3 * rng.standard_normal(48)
    after = truth + 0.4 * shared + 0.3 * rng.standard_normal(48)
    diff = paired_difference(truth, before, after, resamples=500)
    for name in ("r2", "kendall_tau"):
        a, b = (with_intervals(x, truth, resamples=500) for x in (before, after))
        assert diff[name] == pytest.approx(b[name] - a[name])
        assert diff[name + "_low"] <= diff[name] <= diff[name + "_high"]
        width = diff[name + "_high"] - diff[name + "_low"]
        unpaired = np.hypot(*(s[name + "_high"] - s[name + "_low"] for s in (a, b)))  # independent intervals
        assert width < unpaired
    assert diff["kendall_tau_low"] > 0  # after ranks better, and the pairing can tell
    same = paired_difference(truth, before, before, resamples=100)
    assert same["r2"] == 0 and same["r2_low"] == same["r2_high"] == 0
    with pytest.raises(ValueError, match="paired"):
        paired_difference(truth, before, after[:10])


def test_the_plan_keeps_the_bank_and_spreads_new_configs():
    space = get_space("efficientformerv2-tiny")

    def point(config):  # a stand-in latency: MACs-like, not monotone in params
        return count_params(config), 1.0 + sum(s.width * s.depth for s in config.stages)

    anchors = [("largest", space.largest()), ("smallest", space.smallest())]
    empty = pd.DataFrame(columns=["key", "source"])
    plan = planned_configs(space, empty, anchors, 12, 400, 0, point)
    assert [s for s, _ in plan[:2]] == ["largest", "smallest"] and len({c.key for _, c in plan}) == 12
    assert plan == planned_configs(space, empty, anchors, 12, 400, 0, point)  # seeded
    # spread: the picks are farther apart than the same number of uniform draws from the pool
    unit = np.log([point(c) for _, c in plan])
    low, high = np.log(point(space.smallest())), np.log(point(space.largest()))
    unit = (unit - low) / (high - low)
    spacing = min(np.linalg.norm(a - b) for i, a in enumerate(unit) for b in unit[i + 1:])
    draws = [space.sample(seed) for seed in range(100, 112)]
    drawn = (np.log([point(c) for c in draws]) - low) / (high - low)
    assert spacing > min(np.linalg.norm(a - b) for i, a in enumerate(drawn) for b in drawn[i + 1:])
    # a bank that holds some rows keeps them and adds others
    held = pd.DataFrame({"key": [c.key for _, c in plan[2:6]], "source": ["stratified"] * 4})
    grown = planned_configs(space, held, anchors, 14, 400, 1, point)
    assert [c.key for _, c in grown[:4]] == list(held["key"]) and len({c.key for _, c in grown}) == 14
