"""The reproductions of experiments/reproduce/: their statistics and config sets, and two scripts
run end to end on the test-size quickstart (real supernet, table, searches and training)."""
import csv
import random
import subprocess
import sys
from pathlib import Path

import pytest

from search_spaces import count_params, get_space
from supernet.recipe import load_recipe

REPRODUCE = Path(__file__).resolve().parent.parent / "experiments" / "reproduce"
sys.path.insert(0, str(REPRODUCE))

from _common import config_text, spread_configs  # noqa: E402
from attention_bias import with_mhsa  # noqa: E402
from expansion import EXPANSIONS, equal_params_variants  # noqa: E402


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


@pytest.mark.slow  # 9 min with the quickstart it builds: make test-slow
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

    # the truth bank: anchors, then stratified configs, a second seed for some; rows after every run
    bank = tmp_path / "bank.csv"
    built = _run("truth_bank", out, recipe, tmp_path, "--bank", str(bank), "--configs", "6", "--second-seed", "2",
                 "--pool", "300", "--include", *map(str, sorted((out / "search").glob("*.yaml"))[:1]),
                 "--max-runs", "5")
    rows = _rows(bank)
    assert len(rows) == 5 and built.stdout.count("bank: ") == 5
    assert sorted(r["source"] for r in rows) == ["largest", "searched", "smallest", "stratified", "stratified"]
    assert len({r["recipe_digest"] for r in rows}) == 1 and all(0 <= float(r["test_top1"]) <= 100 for r in rows)
    assert load_recipe(tmp_path / "bank.recipe.yaml") == load_recipe(recipe)  # the bank pins its protocol
    _run("truth_bank", out, recipe, tmp_path, "--bank", str(bank), "--configs", "6", "--second-seed", "2",
         "--pool", "300", "--include", *map(str, sorted((out / "search").glob("*.yaml"))[:1]))
    rows = _rows(bank)  # resumed: the 5 rows kept, the rest added
    assert len(rows) == 6 + 2 and len({r["key"] for r in rows}) == 6
    assert sorted(r["seed"] for r in rows).count("1") == 2
    again = _run("truth_bank", out, recipe, tmp_path, "--bank", str(bank), "--configs", "6", "--second-seed", "2",
                 "--pool", "300", "--include", *map(str, sorted((out / "search").glob("*.yaml"))[:1]))
    assert "0 runs to go" in again.stdout and _rows(bank) == rows

    _run("ranking_fidelity", out, recipe, tmp_path, "--bank", str(bank), "--resamples", "200")
    rows = _rows(results / "ranking_fidelity.csv")
    assert len(rows) == 6 and {r["source"] for r in rows} >= {"largest", "smallest", "searched"}
    text = (results / "ranking_fidelity.md").read_text()
    assert "r² " in text and "Kendall" in text and "top third" in text and "seed-to-seed" in text

    benchmark = subprocess.run([sys.executable, str(REPRODUCE.parent.parent / "benchmarks" / "supernet_fidelity.py"),
                                "--supernet", str(out / "supernet"), "--bank", str(bank), "--png",
                                str(tmp_path / "f.png"), "--resamples", "200"],
                               capture_output=True, text=True, timeout=600)
    assert benchmark.returncode == 0, benchmark.stderr[-3000:]
    assert "all configs:  r² " in benchmark.stdout and "top third:" in benchmark.stdout
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"

    # the training variants, judged on the same bank: scores kept per run, paired against the baseline
    command = [sys.executable, str(REPRODUCE.parent.parent / "benchmarks" / "supernet_variants.py"), "--recipe",
               str(recipe), "--bank", str(bank), "--work", str(tmp_path / "variants"), "--csv",
               str(tmp_path / "variants.csv"), "--resamples", "100", "--variants", "baseline", "no-clip"]
    variants = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert variants.returncode == 0, variants.stdout[-3000:] + variants.stderr[-3000:]
    rows = {r["variant"]: r for r in _rows(tmp_path / "variants.csv")}
    assert set(rows) == {"baseline", "no-clip"} and rows["no-clip"]["changes"] == "clip_grad=None"
    assert float(rows["baseline"]["delta_kendall"]) == 0 and rows["no-clip"]["delta_kendall_low"] != ""
    assert all(int(r["configs"]) == 6 and 0 <= float(r["largest_test_top1"]) <= 100 for r in rows.values())
    scores = (tmp_path / "variants" / "no-clip" / "bank_scores.csv").stat().st_mtime
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)  # judged again, not retrained
    assert again.returncode == 0 and (tmp_path / "variants" / "no-clip" / "bank_scores.csv").stat().st_mtime == scores
    assert "time_ratio" in again.stdout


def test_bad_input_is_refused(tmp_path):
    result = subprocess.run([sys.executable, str(REPRODUCE / "expansion.py"), "--seeds", "0", "--results",
                             str(tmp_path)], capture_output=True, text=True)
    assert result.returncode != 0 and "--seeds 0: expected a positive number" in result.stderr
    result = subprocess.run([sys.executable, str(REPRODUCE / "attention_bias.py"), "--recipe", "no-such-recipe",
                             "--results", str(tmp_path), "--work", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 1 and result.stderr.startswith("error: ") and "no-such-recipe" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())
