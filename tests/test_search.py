"""The search, its baselines, the results store's resume, and bad input: real supernet, real table."""
import math
import re
import warnings
from pathlib import Path

import pandas as pd
import pytest

from conftest import nas_main, parse_nas_command, run_nas
from latency_lut import LatencyTable
from nas import store
from nas.mes import MesSpec
from nas.objectives import Objectives, SupernetAccuracy
from nas.search import (
    V1_MOVES,
    Budget,
    Evaluator,
    check_budgets,
    default_family,
    greedy_search,
    hidden_channel_scores,
    parse_family,
    prune_expansions,
    run_search,
    study_name,
)
from search_spaces import InvalidInputError, count_macs, count_params, get_space
from supernet.protocol import EvalProtocol


class ParamsAccuracy:
    """A stand-in accuracy that only the greedy logic tests use: smooth in params and MHSA."""

    def __call__(self, config):
        bonus = sum(stage.num_mhsa for stage in config.stages)
        return 50 + 10 * math.log(count_params(config)) + 0.5 * bonus


@pytest.fixture(scope="module")
def table(tiny_lut):
    return LatencyTable.load(tiny_lut)


@pytest.fixture(scope="module")
def accuracy(tiny_supernet_run):
    return SupernetAccuracy(tiny_supernet_run, EvalProtocol(images=64, bn_batches=1, batch_size=64))


class MacsLatency:
    """A stand-in latency model: milliseconds proportional to MACs, so every shrinking move gains MES."""

    space, backend, reference_latency_ms = "efficientformerv2-tiny@32", "stand-in", 1.0

    def predict(self, config):
        return count_macs(config) / 1e6


class TieredAccuracy:
    """A hand-made evaluator whose greedy answer is known without computing a ratio: a step down
    the expansion choices of a stage-1 block costs 1e-6 points, of a stage-2 block 1e-3, and any
    other change 50. With every move gaining MES (MacsLatency) and gains within 1000x of each
    other, the least drop per MES gain is every stage-1 expansion step first, then every stage-2
    one, then the rest."""

    COST = {0: 1e-6, 1: 1e-3}

    def __init__(self, space):
        self.space, self.largest = space, space.largest()

    def __call__(self, config):
        accuracy = 90.0
        for index, (stage, full) in enumerate(zip(config.stages, self.largest.stages)):
            choices = self.space.stages[index].expansions
            accuracy -= 50 * (stage.width != full.width)
            for block, top in zip(stage.blocks, full.blocks):
                if block is None or block.mhsa != top.mhsa:
                    accuracy -= 50
                elif block.expansion != top.expansion:
                    steps = choices.index(top.expansion) - choices.index(block.expansion)
                    accuracy -= self.COST.get(index, 50) * steps
        return accuracy


def test_greedy_takes_the_least_accuracy_drop_per_mes_gain():
    space = get_space("efficientformerv2-tiny@32")
    objectives = Objectives.from_table(space, MacsLatency(), TieredAccuracy(space), 1.0, 0.5)
    budget = Budget("params", count_params(space.largest()) * 0.5)
    trajectory, selected = greedy_search(space, Evaluator(objectives, None, "fine-grained"), [budget])
    assert budget.met(selected[budget][1])
    steps = {stage: sum(s.max_depth * (len(s.expansions) - 1) for s in space.stages[stage:stage + 1])
             for stage in (0, 1)}
    moves = [row["move"] for row in trajectory[1:]]
    assert len(moves) > steps[0] + steps[1]
    assert all(move.startswith("expansion s1.") for move in moves[:steps[0]]), moves
    assert all(move.startswith("expansion s2.") for move in moves[steps[0]:steps[0] + steps[1]]), moves
    assert not any(move.startswith(("expansion s1.", "expansion s2.")) for move in moves[steps[0] + steps[1]:])
    # each of them cost what the evaluator says
    drops = [trajectory[i]["accuracy"] - trajectory[i + 1]["accuracy"] for i in range(len(moves))]
    assert drops[:steps[0]] == pytest.approx([1e-6] * steps[0], abs=1e-9)
    assert drops[steps[0]:steps[0] + steps[1]] == pytest.approx([1e-3] * steps[1], abs=1e-9)
    params = [row["params"] for row in trajectory]
    assert params == sorted(params, reverse=True)
    before_last = trajectory[-2]
    assert not budget.met((before_last["params"], before_last["latency_ms"], before_last["mes"]))


def test_nsga2_rounds_propose_what_one_proposal_at_a_time_would():
    """NSGA-II asks a generation's proposals together (so that workers can score them at once): the
    trials are those of asking and telling one at a time, duplicates and all, over three generations."""
    import optuna

    from nas.search import NSGA2_POPULATION, optuna_sampler, sampler_search

    space = get_space("efficientformerv2-tiny@32")
    objectives = Objectives.from_table(space, MacsLatency(), ParamsAccuracy(), 1.0, 0.5)
    budget = Budget("params", count_params(space.largest()) * 0.8)
    evaluations = NSGA2_POPULATION * 2 + 7
    directions = ["maximize", "maximize"]
    rounds = optuna.create_study(directions=directions)
    sampler_search(space, Evaluator(objectives, None, "nsga2"), [budget], evaluations, rounds, "nsga2", seed=5)
    # one at a time: each proposal told before the next is asked
    single, keys, asked = optuna.create_study(directions=directions), set(), 0
    while len(keys) < evaluations:
        single.sampler = optuna_sampler("nsga2", 5 * 1_000_003 + asked)
        trial = single.ask(store.distributions(space))
        asked += 1
        config = store.decode(space, trial.params)
        if config.key in keys:
            single.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        metrics = objectives(config)
        trial.set_constraint("budget", (metrics.params - budget.value) / 1e6)
        single.tell(trial, [metrics.accuracy, metrics.mes])
        keys.add(config.key)

    def proposals(study):
        return [(store.decode(space, t.params).key, t.state.name) for t in study.trials]

    def complete(study):
        return [key for key, state in proposals(study) if state == "COMPLETE"]

    assert len(complete(rounds)) == evaluations and len(set(complete(rounds))) == evaluations
    assert sorted(proposals(rounds)) == sorted(proposals(single))  # duplicates are told at the round's end
    assert complete(rounds) == complete(single)


@pytest.mark.parametrize("algorithm", ["nsga2", "tpe"])
@pytest.mark.parametrize("stop", ["scoring", "telling"])
def test_a_sampler_stopped_mid_round_resumes_to_the_uninterrupted_result(algorithm, stop):
    """A run stopped while a round is scored (nothing of it told: the round's proposals are kept and
    scored) or half told (the rest is scored and told), or inside a proposal (its trial has only some
    parameters: failed and asked again): run again, the trials are the uninterrupted run's."""
    import optuna

    from nas.search import sampler_search

    space = get_space("efficientformerv2-tiny@32")
    objectives = Objectives.from_table(space, MacsLatency(), ParamsAccuracy(), 1.0, 0.5)
    budget = Budget("params", count_params(space.largest()) * 0.8)

    def search(study):
        return sampler_search(space, Evaluator(objectives, None, algorithm), [budget], 35, study, algorithm, seed=1)

    whole = optuna.create_study(directions=["maximize", "maximize"])
    expected = search(whole)[0]
    stopped = optuna.create_study(directions=["maximize", "maximize"])
    told = []

    class Stop(Exception):
        pass

    def tell(trial, values=None, state=None):
        if values is not None and len(told) == 23:
            raise Stop
        told.append(trial)
        return optuna.Study.tell(stopped, trial, values, state)

    original = Evaluator.many

    def many(self, configs, record=True):
        if len(told) >= 20:
            raise Stop
        return original(self, configs, record)

    stopped.tell = tell
    with pytest.MonkeyPatch.context() as patch:
        if stop == "scoring":
            patch.setattr(Evaluator, "many", many)
        with pytest.raises(Stop):
            search(stopped)
    del stopped.tell
    states = [t.state for t in stopped.trials]
    assert optuna.trial.TrialState.RUNNING in states
    if stop == "scoring":  # and a proposal stopped after its first parameter: RUNNING, the rest missing
        name, distribution = next(iter(store.distributions(space).items()))
        stopped.ask({name: distribution})
    assert (states.count(optuna.trial.TrialState.COMPLETE) == 23) == (stop == "telling")
    assert [row["key"] for row in search(stopped)[0]] == [row["key"] for row in expected]
    assert optuna.trial.TrialState.RUNNING not in [t.state for t in stopped.trials]


def test_free_moves_take_the_largest_mes_gain(table):
    """Moves that cost no accuracy (an evaluator that cannot tell configs apart) win outright,
    the largest MES gain first: the search takes big free strides, not the first small one."""
    space = get_space("efficientformerv2-tiny@32")
    objectives = Objectives.from_table(space, table, lambda config: 50.0, 1.0, 0.5)
    budget = Budget("params", count_params(space.largest()) * 0.5)
    trajectory, _ = greedy_search(space, Evaluator(objectives, None, "fine-grained"), [budget])
    state = space.largest()
    for row in trajectory[1:]:
        before = objectives.costs(state)[2]
        gains = {str(move): objectives.costs(config)[2] - before for move, config in space.moves(state)}
        assert gains[row["move"]] == pytest.approx(max(gains.values()))
        state = next(config for move, config in space.moves(state) if str(move) == row["move"])


def test_family_is_one_trajectory_recording_each_crossing(table):
    space = get_space("efficientformerv2-tiny@32")
    objectives = Objectives.from_table(space, table, ParamsAccuracy(), 1.0, 0.5)
    family = check_budgets(objectives, default_family(space))
    assert [b.kind for b in family] == ["params"] * 4
    assert [b.value for b in family] == sorted((b.value for b in family), reverse=True)
    trajectory, selected = greedy_search(space, Evaluator(objectives, None, "fine-grained"), family)
    assert set(selected) == set(family)
    keys = [row["key"] for row in trajectory]
    for budget in family:
        config, metrics = selected[budget]
        index = keys.index(config.key)
        assert budget.met(metrics) and not budget.met(
            (trajectory[index - 1]["params"], trajectory[index - 1]["latency_ms"], trajectory[index - 1]["mes"]))


def test_v1_moves_keep_expansions_and_pruning_decides_them(table, tiny_supernet_run):
    from supernet.checkpoint import load_supernet

    space = get_space("efficientformerv2-tiny@32")
    objectives = Objectives.from_table(space, table, ParamsAccuracy(), 1.0, 0.5)
    budget = Budget("params", count_params(space.largest()) * 0.5)
    trajectory, selected = greedy_search(space, Evaluator(objectives, None, "v1-scale"), [budget], V1_MOVES)
    config = selected[budget][0]
    assert {b.expansion for s in config.stages for _, b in s.kept} == {4}
    assert all(row["move"].split()[0] in V1_MOVES for row in trajectory[1:])
    supernet, _ = load_supernet(tiny_supernet_run)
    scores = hidden_channel_scores(supernet)
    loose = space.largest()
    reachable = Budget("params", count_params(loose) * 0.85)  # by expansions alone
    pruned = prune_expansions(space, loose, scores, reachable, objectives.costs)
    assert reachable.met(objectives.costs(pruned))
    assert pruned.widths == loose.widths and pruned.depths == loose.depths
    assert {b.expansion for s in pruned.stages for _, b in s.kept} != {4}


def _search(tiny_supernet_run, tiny_lut, out, *extra, runner=run_nas):
    return runner("search", "--supernet", tiny_supernet_run, "--lut", tiny_lut, "--out", out,
                   "--eval-images", "64", "--bn-batches", "1", "--quiet", *extra)


def test_search_cli_writes_outputs_and_resumes_without_reevaluating(tiny_supernet_run, tiny_lut, tmp_path):
    budget = f"{count_params(get_space('efficientformerv2-tiny@32').largest()) * 0.96 / 1e6:.3f}M"
    out = tmp_path / "search"
    first = _search(tiny_supernet_run, tiny_lut, out, "--params", budget)
    assert first.returncode == 0, first.stderr
    label = f"params-{float(budget[:-1]):.3g}M"
    import optuna

    summaries = optuna.study.get_all_study_summaries(store.default_storage(out))
    assert len(summaries) == 1
    name = f"fine-grained-{label}-{summaries[0].study_name.rsplit('-', 1)[1]}"  # ALGO-LABEL-DIGEST of the study
    assert (out / f"{name}.yaml").exists()
    trajectory = pd.read_csv(out / f"{name}-trajectory.csv")
    assert list(trajectory.columns) == ["step", "move", "accuracy", "loss", "kl", "params", "latency_ms", "mes",
                                        "utility", "key"]
    assert trajectory["params"].iloc[-1] <= float(budget[:-1]) * 1e6
    summary = (out / f"{name}-summary.md").read_text()
    assert "| budget | top-1 (%)" in summary and "Configs evaluated:" in summary
    # the store: one trial per evaluated config, with metrics and key as attributes
    study = store.open_study(store.default_storage(out), summaries[0].study_name)
    frame = study.trials_dataframe()
    assert {"user_attrs_key", "user_attrs_accuracy", "user_attrs_loss", "user_attrs_kl", "user_attrs_mes",
            "user_attrs_params"} <= set(frame.columns)
    assert (frame["user_attrs_loss"] > 0).all() and (frame["user_attrs_kl"] >= 0).all()
    assert frame["user_attrs_key"].is_unique
    evaluated = len(frame)
    # Optuna's own tools: the name says what the search was, the objectives are named
    loaded = optuna.load_study(study_name=summaries[0].study_name, storage=store.default_storage(out))
    assert re.fullmatch(rf"fine-grained-{re.escape(label)}-kl-lat1-size0\.5-[0-9a-f]{{10}}", loaded.study_name)
    assert loaded.metric_names == ["-kl", "mes"]
    values = loaded.trials_dataframe()[["values_-kl", "values_mes"]]
    assert len(values) == evaluated and (values["values_-kl"] <= 0).all() and (values["values_mes"] > 0).all()
    assert set(frame["user_attrs_key"]) == set(loaded.trials_dataframe()["user_attrs_key"])
    from optuna.visualization.matplotlib import plot_pareto_front

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        axes = plot_pareto_front(loaded)
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("-kl", "mes")
    assert sum(len(c.get_offsets()) for c in axes.collections) == evaluated  # every trial is a point
    import matplotlib.pyplot

    matplotlib.pyplot.close("all")
    # again, same arguments: nothing is evaluated again, the result is the same
    second = _search(tiny_supernet_run, tiny_lut, out, "--params", budget)
    assert second.returncode == 0, second.stderr
    assert len(study.trials) == evaluated
    assert pd.read_csv(out / f"{name}-trajectory.csv").equals(trajectory)
    assert f"{evaluated} configs, 0 of them evaluated now" in second.stdout
    # another search in the same folder, over the same supernet and table: a looser budget's trajectory
    # is a prefix of the first one, so it is a new study whose configs all come from the first
    looser = f"{float(budget[:-1]) * 1.02:.3f}M"
    third = _search(tiny_supernet_run, tiny_lut, out, "--params", looser)
    assert third.returncode == 0, third.stderr
    assert " 0 of them evaluated now" in third.stdout
    assert len(optuna.study.get_all_study_summaries(store.default_storage(out))) == 2
    shown = run_nas("results", "show", out)
    assert shown.returncode == 0, shown.stderr
    assert "Pareto configs of" in shown.stdout and "fine-grained" in shown.stdout


def test_interrupted_search_resumes_from_the_store(table, accuracy, tmp_path):
    space = accuracy.space
    objectives = Objectives.from_table(space, table, accuracy, 1.0, 0.5)
    budget = Budget("params", count_params(space.largest()) * 0.6)
    storage = store.default_storage(tmp_path)
    arguments = {"test": "interrupt"}

    class Stop(Exception):
        pass

    def stop_after_two(line):
        if line.startswith("step 2:"):
            raise Stop

    with pytest.raises(Stop):
        run_search(objectives, [budget], "fine-grained", storage, arguments, progress=stop_after_two)
    study = store.open_study(storage, study_name("fine-grained", arguments))
    stored_before = set(store.stored_metrics(study))
    stored = len(stored_before)
    assert stored > 0
    accuracy.cache.clear()  # forget in memory: only the store remembers
    calls = []
    original = objectives.accuracy
    objectives.accuracy = lambda config: calls.append(config.key) or original(config)
    result = run_search(objectives, [budget], "fine-grained", storage, arguments)
    assert budget in result.selected
    stored_keys = set(store.stored_metrics(study))
    assert len(calls) == len(set(calls))  # nothing evaluated twice
    assert not set(calls) & stored_before  # what the store held was not evaluated again
    assert result.evaluations == len(stored_keys) and len(calls) == len(stored_keys) - stored
    objectives.accuracy = original


@pytest.mark.parametrize("algorithm", ["random", pytest.param("nsga2", marks=pytest.mark.slow),
                                       pytest.param("tpe", marks=pytest.mark.slow),
                                       pytest.param("v1-scale+prune", marks=pytest.mark.slow)])
def test_baselines_through_the_cli(algorithm, tiny_supernet_run, tiny_lut, tmp_path):
    budget = f"{count_params(get_space('efficientformerv2-tiny@32').largest()) * 0.6 / 1e6:.3f}M"
    out = tmp_path / algorithm
    result = _search(tiny_supernet_run, tiny_lut, out, "--params", budget, "--algorithm", algorithm,
                     "--evaluations", "12", "--seed", "1")
    assert result.returncode == 0, result.stderr
    config_files = list(out.glob(f"{algorithm}-params-*.yaml"))
    assert len(config_files) == 1
    trajectory = config_files[0].with_name(f"{config_files[0].stem}-trajectory.csv")  # ALGO-LABEL-DIGEST
    frame = pd.read_csv(trajectory)
    assert (frame["params"].min() <= float(budget[:-1]) * 1e6)
    if algorithm in ("random", "nsga2", "tpe"):
        assert len(frame) == 12
    again = _search(tiny_supernet_run, tiny_lut, out, "--params", budget, "--algorithm", algorithm,
                    "--evaluations", "12", "--seed", "1")
    assert again.returncode == 0 and pd.read_csv(trajectory).equals(frame)


def _error(result):
    assert result.returncode == 2, (result.stdout[-800:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    return result.stderr


def test_bad_search_inputs_fail_before_any_work(tiny_supernet_run, tiny_lut, tmp_path):
    out = tmp_path / "out"

    def _search(*args):  # in-process: the same parser and handlers, no interpreter start-up per case
        return globals()["_search"](*args, runner=nas_main)

    assert "unreachable" in _error(_search(tiny_supernet_run, tiny_lut, out, "--params", "1K"))
    assert "--alpha-lat = 1.5 is outside [0, 1]" in _error(
        _search(tiny_supernet_run, tiny_lut, out, "--params", "1M", "--alpha-lat", "1.5"))
    assert "has no unit" in _error(_search(tiny_supernet_run, tiny_lut, out, "--params", "7"))
    assert "give exactly one budget" in _error(_search(tiny_supernet_run, tiny_lut, out))
    assert "cannot open the results storage" in _error(
        _search(tiny_supernet_run, tiny_lut, out, "--params", "1M", "--storage", "sqlite:////no/such/dir/x.db"))
    # a table lacking blocks of the space
    partial = tmp_path / "partial.parquet"
    full = LatencyTable.load(tiny_lut)
    LatencyTable(full.frame.iloc[: len(full.frame) // 2], full.space, full.backend, full.threads).save(partial)
    message = _error(_search(tiny_supernet_run, partial, out, "--params", "1M"))
    assert "lacks" in message
    fill = parse_nas_command(message.split("fill it with: ", 1)[1].strip())  # the hint, as the parser reads it
    assert (fill.command, fill.space, fill.backend, Path(fill.out)) == (
        "build-lut", "efficientformerv2-tiny@32", full.backend, partial)
    # a table of another space than the supernet's
    other = tmp_path / "other.parquet"
    LatencyTable(full.frame, "efficientformerv2-tiny", full.backend, full.threads).save(other)
    assert "expected one space for both" in _error(_search(tiny_supernet_run, other, out, "--params", "1M"))
    assert not list(out.glob("*.yaml")) and not list(out.glob("*.csv"))


def test_budget_parsing():
    assert [b.kind for b in parse_family("3.5M,6.1M")] == ["params", "params"]
    assert parse_family("0.9ms,1.1ms")[1].value == pytest.approx(1.1)
    assert parse_family("60,80")[0] == Budget("mes", 60.0)
    with pytest.raises(InvalidInputError, match="mixes budget kinds"):
        parse_family("3.5M,1ms")
    assert [b.label for b in default_family(get_space("efficientformerv2"))] == [
        "params-26.1M", "params-12.6M", "params-6.1M", "params-3.5M"]
    assert Budget("mes", 60).met((1e6, 1.0, 61.0)) and not Budget("latency", 1.0).met((1e6, 1.2, 50.0))


def test_mes_units_off_coreml(table):
    space = get_space("efficientformerv2-tiny@32")
    objectives = Objectives.from_table(space, table, ParamsAccuracy(), 1.0, 0.5)
    assert objectives.mes.latency_unit_ms == pytest.approx(table.reference_latency_ms)
    assert objectives.mes == MesSpec(1.0, 0.5, latency_unit_ms=table.reference_latency_ms)


@pytest.mark.slow  # 2 min: make test-slow
def test_scores_are_shared_across_alphas_tables_and_criteria(tiny_supernet_run, tiny_lut, tmp_path):
    """A stored score depends on the supernet and the evaluation protocol only: an alpha sweep, a search
    with another device's table and one with another criterion evaluate exactly the configs no earlier
    search of the storage evaluated."""
    import numpy as np

    from nas.search_job import SearchJob

    protocol = EvalProtocol(images=64, bn_batches=1, batch_size=64)
    space = get_space("efficientformerv2-tiny@32")
    budgets = [Budget("params", count_params(space.largest()) * 0.75)]
    original = LatencyTable.load(tiny_lut)
    other_device = tmp_path / "other-device.parquet"  # latencies that grow with width: other MES, other path
    frame = original.frame.copy()
    frame["latency_ms"] = frame["latency_ms"] * (1 + np.arange(len(frame)) % 7)
    LatencyTable(frame, original.space, original.backend, original.threads).save(other_device)
    out = tmp_path / "sweep"
    storage = store.default_storage(out)  # every job of the folder: its default storage
    seen: set[str] = set()
    runs = [(tiny_lut, 1.0, 0.5, "top1"), (tiny_lut, 0.5, 1.0, "top1"), (other_device, 1.0, 0.5, "top1"),
            (tiny_lut, 1.0, 0.5, "loss")]
    for lut, alpha_latency, alpha_size, criterion in runs:
        job = SearchJob(tiny_supernet_run, lut, out, alpha_latency=alpha_latency, alpha_size=alpha_size,
                        protocol=protocol, criterion=criterion)
        result = job.run(budgets)
        keys = set(store.stored_metrics(store.open_study(storage, result.study)))
        assert result.measured == len(keys - seen)
        seen |= keys
    assert len(store._optuna().study.get_all_study_summaries(storage)) == len(runs)
    # the same search on another slice of images is another protocol: evaluated anew
    job = SearchJob(tiny_supernet_run, tiny_lut, out, protocol=protocol.replace(offset=64))
    result = job.run(budgets)
    assert result.measured == result.evaluations


def test_bad_criterion_and_slices_fail_before_any_evaluation(tiny_supernet_run, tiny_lut, tmp_path):
    out = tmp_path / "out"
    assert "--criterion 'accuracy': expected one of top1, loss, kl" in _error(
        _search(tiny_supernet_run, tiny_lut, out, "--params", "1M", "--criterion", "accuracy", runner=nas_main))
    assert "which has 256 images; expected a slice within it" in _error(
        _search(tiny_supernet_run, tiny_lut, out, "--params", "1M", "--eval-offset", "200", runner=nas_main))
    assert "--recheck -1" in _error(
        _search(tiny_supernet_run, tiny_lut, out, "--params", "1M", "--recheck", "-1", runner=nas_main))
    assert not list(out.glob("*.yaml")) and not list(out.glob("*.csv"))


def test_recheck_scores_the_best_moves_on_the_next_slice(tiny_supernet_run, tiny_lut, tmp_path):
    budget = f"{count_params(get_space('efficientformerv2-tiny@32').largest()) * 0.9 / 1e6:.3f}M"
    result = _search(tiny_supernet_run, tiny_lut, tmp_path / "r", "--params", budget, "--recheck", "3",
                     "--criterion", "kl")
    assert result.returncode == 0, result.stderr
    trajectory = pd.read_csv(next((tmp_path / "r").glob("*-trajectory.csv")))
    assert trajectory["params"].iloc[-1] <= float(budget[:-1]) * 1e6 and (trajectory["kl"].iloc[1:] > 0).all()


def _complete_trials(db) -> int:
    import sqlite3

    if not db.exists():
        return 0
    try:
        connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return connection.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
        finally:
            connection.close()
    except sqlite3.Error:  # tables not created yet
        return 0


@pytest.mark.slow  # 40 s each; the resume logic is tested in process (test_a_sampler_stopped_mid_round_...)
@pytest.mark.parametrize("algorithm", ["nsga2", "tpe"])
def test_a_sampler_killed_mid_search_resumes_to_the_uninterrupted_result(algorithm, tiny_supernet_run, tiny_lut,
                                                                         tmp_path):
    """SIGKILL at 13 of 30 configs, then the same command again: the same configs in the same order as a run
    never interrupted, and no config stored twice (a sampler's repeated proposal is no new evaluation)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    budget = f"{count_params(get_space('efficientformerv2-tiny@32').largest()) * 0.6 / 1e6:.3f}M"
    arguments = ["--params", budget, "--algorithm", algorithm, "--evaluations", "30", "--seed", "3"]
    whole = _search(tiny_supernet_run, tiny_lut, tmp_path / "whole", *arguments)
    assert whole.returncode == 0, whole.stderr
    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "nas.cli", "search", "--supernet", str(tiny_supernet_run), "--lut",
               str(tiny_lut), "--out", str(killed), "--eval-images", "64", "--bn-batches", "1", "--quiet", *arguments]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while _complete_trials(killed / "study.db") < 13 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the search ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert 13 <= _complete_trials(killed / "study.db") < 30
    resumed = _search(tiny_supernet_run, tiny_lut, killed, *arguments)
    assert resumed.returncode == 0, resumed.stderr
    (trajectory,) = (tmp_path / "whole").glob(f"{algorithm}-*-trajectory.csv")
    expected, got = pd.read_csv(trajectory), pd.read_csv(killed / trajectory.name)
    assert len(expected) == 30 and expected["key"].is_unique
    assert list(got["key"]) == list(expected["key"])


def test_several_processes_starting_at_once_on_a_new_store(tmp_path):
    """Six processes open studies in one new SQLite store at the same instant: none fails."""
    import subprocess
    import sys
    import time

    start = time.time() + 15  # after every interpreter has imported Optuna and torch
    code = ("import sys, time; from nas import store; time.sleep(max(0, {start} - time.time())); "
            "store.open_study(store.default_storage(sys.argv[1]), 'study-' + sys.argv[2])")
    processes = [subprocess.Popen([sys.executable, "-c", code.format(start=start), str(tmp_path), str(i % 3)],
                                  stderr=subprocess.PIPE, text=True) for i in range(6)]
    failures = [p.communicate(timeout=120)[1] for p in processes if p.wait(timeout=120) != 0]
    assert not failures, failures[0][-1500:]
    assert {s.study_name for s in __import__("optuna").study.get_all_study_summaries(
        store.default_storage(tmp_path))} == {"study-0", "study-1", "study-2"}


def test_two_searches_of_one_folder_keep_their_own_files(tiny_supernet_run, tiny_lut, tmp_path):
    """Two alpha settings into one folder: each search's config, trajectory and summary survive the other's,
    and the store and `nas results show` hold both."""
    budget = f"{count_params(get_space('efficientformerv2-tiny@32').largest()) * 0.9 / 1e6:.3f}M"
    out = tmp_path / "sweep"
    for alpha_size in ("0.5", "1.0"):
        result = _search(tiny_supernet_run, tiny_lut, out, "--params", budget, "--alpha-size", alpha_size)
        assert result.returncode == 0, result.stderr
    assert len(list(out.glob("fine-grained-params-*-trajectory.csv"))) == 2
    assert len(list(out.glob("fine-grained-params-*-summary.md"))) == 2
    configs = [p for p in out.glob("fine-grained-params-*.yaml")]
    assert len(configs) == 2
    shown = run_nas("results", "show", out)
    assert shown.returncode == 0 and shown.stdout.count("Pareto configs of") == 2
    # budgets that would share a file name are refused
    twice = _search(tiny_supernet_run, tiny_lut, out, "--family", "0.5001M,0.5002M")
    assert twice.returncode == 2 and "params-0.5M is given twice" in twice.stderr
