"""The reproductions of experiments/reproduce/: their statistics and config sets, and two scripts
run end to end on the test-size quickstart (real supernet, table, searches and training)."""
import csv
import random
import subprocess
import sys
from pathlib import Path

import pytest

from search_spaces import count_params, get_space

REPRODUCE = Path(__file__).resolve().parent.parent / "experiments" / "reproduce"
sys.path.insert(0, str(REPRODUCE))

from _common import config_text, rank_correlations, spread_configs  # noqa: E402
from attention_bias import with_mhsa  # noqa: E402
from expansion import EXPANSIONS, equal_params_variants  # noqa: E402


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


def test_spread_configs_cover_the_range_evenly():
    space = get_space("efficientformerv2-tiny")
    configs = spread_configs(space, count_params, 6, 200_000, 600_000, seed=0, pool=500)
    params = [count_params(c) for c in configs]
    assert len({c.key for c in configs}) == 6
    assert all(200_000 <= p <= 600_000 for p in params)
    assert params == sorted(params) and params[0] < 250_000 and params[-1] > 550_000
    assert configs == spread_configs(space, count_params, 6, 200_000, 600_000, seed=0, pool=500)  # seeded
    with pytest.raises(SystemExit, match="expected at least 6"):
        spread_configs(space, count_params, 6, 1, 2, seed=0, pool=50)


def test_equal_params_variants_change_only_expansions_and_widths():
    space = get_space("efficientformerv2-tiny")
    base = space.sample(random.Random(5))
    variants = equal_params_variants(space, base, lambda c: float(count_params(c)), tolerance=0.01)
    assert sorted(variants) == sorted(EXPANSIONS)
    params = [count_params(c) for c in variants.values()]
    assert max(params) - min(params) <= 0.02 * min(params)
    for expansion, config in variants.items():
        space.validate(config)
        assert config.stem_width == config.stages[0].width
        for stage, base_stage in zip(config.stages, base.stages):
            assert [b is None for b in stage.blocks] == [b is None for b in base_stage.blocks]
            assert all(b.expansion == expansion and b.mhsa == bb.mhsa for b, bb in
                       zip(stage.blocks, base_stage.blocks) if b is not None)


def test_with_mhsa_and_config_text():
    config = with_mhsa(get_space("efficientformerv2-tiny").smallest())
    assert config_text(config) == "16:1 24:1 48:1* 64:1*"


def _run(script: str, quickstart: Path, recipe: Path, tmp_path: Path, *extra: str):
    command = [sys.executable, str(REPRODUCE / f"{script}.py"), "--quickstart", str(quickstart), "--recipe",
               str(recipe), "--eval-images", "64", "--bn-batches", "1", "--train-images", "128", "--work",
               str(tmp_path / "work"), "--results", str(tmp_path / "results"), *extra]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_attention_bias_and_ranking_fidelity_run_on_the_quickstart(quickstart_run, tmp_path):
    out, recipe, _ = quickstart_run
    first = _run("attention_bias", out, recipe, tmp_path, "--seeds", "1")
    results = tmp_path / "results"
    rows = _rows(results / "attention_bias.csv")
    assert [r["attention_bias"] for r in rows] == ["Y", "N"]
    assert rows[1]["space"] == "efficientformerv2-tiny-nobias@32"
    assert int(rows[0]["params"]) > int(rows[1]["params"])
    assert all(0 <= float(r["scratch_test_top1"]) <= 100 for r in rows)
    text = (results / "attention_bias.md").read_text()
    for expected in ("**Paper**", "**Ours**", "Machine:", "Wall time:", "first 128 of its 320 training images"):
        assert expected in text
    assert (results / "attention_bias.png").stat().st_size > 1000
    assert first.stdout.count("training from scratch") == 2
    again = _run("attention_bias", out, recipe, tmp_path, "--seeds", "1")  # every run is reused
    assert "training from scratch" not in again.stdout
    assert _rows(results / "attention_bias.csv") == rows

    _run("ranking_fidelity", out, recipe, tmp_path, "--random", "3", "--noise-seeds", "2")
    rows = _rows(results / "ranking_fidelity.csv")
    assert len(rows) == 1 + 4 + 3 + 1  # smallest, the family, random, largest
    assert {r["kind"] for r in rows} == {"extreme", "searched", "random"}
    text = (results / "ranking_fidelity.md").read_text()
    assert "Pearson r²" in text and "Kendall τ" in text and "seed-to-seed" in text


def test_bad_input_is_refused(tmp_path):
    result = subprocess.run([sys.executable, str(REPRODUCE / "expansion.py"), "--seeds", "0", "--results",
                             str(tmp_path)], capture_output=True, text=True)
    assert result.returncode != 0 and "--seeds 0: expected a positive number" in result.stderr
    result = subprocess.run([sys.executable, str(REPRODUCE / "attention_bias.py"), "--recipe", "no-such-recipe",
                             "--results", str(tmp_path), "--work", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.startswith("error: ") and "no-such-recipe" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())
