"""Many processes, one search (nas.workers): the score queue on real storages, and a search whose
worker is killed mid-evaluation ending as a single-process search does."""
import os
import signal
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest

from conftest import ROOT, nas_main
from nas import store
from nas.workers import MAX_RETRY, DriverLease, ScoreQueue, check_shared_storage
from search_spaces import InvalidInputError, count_params, get_space
from supernet.protocol import Scores

SPACE = "efficientformerv2-tiny@32"
EVALUATION = {"supernet_sha1": "ab" * 20, "protocol": {"images": 64}, "data_dir": None}


def _configs(count, seed=0):
    space = get_space(SPACE)
    return list({c.key: c for c in (space.sample(seed * 1000 + i) for i in range(count * 2))}.values())[:count]


def _scores(claim):
    return Scores(float(len(claim.config.key) % 7), 1.0, 0.5, 64)


def _queue_mechanics(storage, tmp_path):
    """Two processes' views of one queue: each config taken once, scores read back, a silent taker's
    config failed and queued again, a config that fails every time given up after MAX_RETRY retries."""
    first = ScoreQueue.create(storage, EVALUATION, SPACE, tmp_path, stale_after=0.5)
    second = ScoreQueue.find(storage)[0]  # the driver's stale_after, read from the queue
    assert second.name == first.name and second.evaluation == EVALUATION and second.stale_after == 0.5
    configs = _configs(6)
    space = get_space(SPACE)
    first.submit(configs[:4], prefix=space.largest())
    first.submit(configs, prefix=space.largest())  # the first four are not queued twice
    claims = []
    for queue in (first, second, first, second, first, second):
        claims.append(queue.claim())
    assert sorted(c.config.key for c in claims) == sorted(c.key for c in configs)
    assert all(c.prefix == space.largest() for c in claims) and (first.claim(), second.claim()) == (None, None)
    for claim in claims[:5]:
        first.score(claim, _scores)
    assert set(second.scores([c.key for c in configs])) == {c.config.key for c in claims[:5]}
    # the sixth claim's taker goes silent: failed, queued again, taken and scored by the other process
    time.sleep(0.7)
    assert second.fail_stale() == 1 and first.fail_stale() == 0
    retried = second.claim()
    assert retried.config == claims[5].config
    second.score(retried, _scores)
    assert len(first.scores([c.key for c in configs])) == 6
    # a config whose every taker dies: given up after MAX_RETRY retries, not queued forever
    doomed = _configs(1, seed=9)[0]
    first.submit([doomed])
    for _ in range(MAX_RETRY + 1):
        assert first.claim().config == doomed
        time.sleep(0.6)
        first.fail_stale()
    assert first.claim() is None and first.gave_up([doomed.key]) == [doomed.key]
    states = [t.state for t in optuna.load_study(study_name=first.name, storage=store.get_storage(storage)).trials]
    assert states.count(optuna.trial.TrialState.RUNNING) == 0  # nothing left RUNNING


def test_queue_on_a_journal_file(tmp_path):
    _queue_mechanics(f"journal:///{tmp_path}/journal.log", tmp_path)


def test_queue_on_postgresql(postgres_url, tmp_path):
    _queue_mechanics(postgres_url, tmp_path)


def test_one_driver_per_study(tmp_path):
    storage = f"journal:///{tmp_path}/journal.log"
    study = store.open_study(storage, "search-a")
    with DriverLease(study, stale_after=30):
        with pytest.raises(InvalidInputError, match="driven by another nas search"):
            with DriverLease(optuna.load_study(study_name="search-a", storage=store.get_storage(storage))):
                pass
    with DriverLease(study, stale_after=30):  # released: the next driver may start
        pass


def test_a_running_worker_finds_new_queues_and_skips_the_ones_it_cannot_serve(tiny_supernet_run, tmp_path):
    """Queues created while a worker runs (another search, a recheck slice) are found; one whose supernet
    is not this machine's is skipped with a message, and the worker goes on."""
    import threading

    from nas.workers import run_worker
    from search_spaces.io import file_digest
    from supernet.checkpoint import CHECKPOINT

    storage = f"journal:///{tmp_path}/journal.log"
    ours = {**EVALUATION, "supernet_sha1": file_digest(tiny_supernet_run / CHECKPOINT)}
    ScoreQueue.create(storage, ours, SPACE, tiny_supernet_run)
    lines, scored = [], []
    worker = threading.Thread(target=lambda: scored.append(run_worker(storage, idle_exit=3, poll=0.1, rescan=0.2,
                                                                      log=lines.append)))
    worker.start()
    foreign = ScoreQueue.create(storage, EVALUATION, SPACE, tiny_supernet_run)  # another machine's supernet
    later = ScoreQueue.create(storage, {**ours, "protocol": {"images": 32}}, SPACE, tiny_supernet_run)
    config = _configs(1)[0]
    later.submit([config])
    deadline = time.time() + 120
    while not later.scores([config.key]) and time.time() < deadline:
        time.sleep(0.1)
    worker.join(timeout=120)
    assert scored == [1] and later.scores([config.key])[config.key].images == 32
    assert any(line.startswith(f"worker: skipping score queue {foreign.name}: ") and "is not the one" in line
               for line in lines), lines
    assert f"worker: new score queue {later.name}" in lines


def test_bad_worker_input_is_one_clear_error(tmp_path, tiny_supernet_run, tiny_lut):
    storage = f"journal:///{tmp_path}/journal.log"
    store.open_study(storage, "a-search")
    result = nas_main("search-worker", "--storage", storage, "--idle-exit", "1")
    assert result.returncode == 2 and "holds no score queue" in result.stderr
    queue = ScoreQueue.create(storage, EVALUATION, SPACE, tiny_supernet_run)
    result = nas_main("search-worker", "--storage", storage, "--queue", queue.name, "--idle-exit", "1")
    assert result.returncode == 2 and "is not the one the search scores with" in result.stderr
    result = nas_main("search-worker", "--storage", storage, "--queue", "scores-0000000000")
    assert result.returncode == 2 and "has no score queue 'scores-0000000000'" in result.stderr
    result = nas_main("search-worker", "--storage", "postgresql://nobody@127.0.0.1:1/none")
    assert result.returncode == 2 and "cannot open the results storage" in result.stderr
    with pytest.raises(InvalidInputError, match="journal:///PATH .* postgresql://"):
        check_shared_storage("sqlite:///x.db")
    result = nas_main("search", "--supernet", tiny_supernet_run, "--lut", tiny_lut, "--out", tmp_path / "s",
                      "--params", "1M", "--workers")
    assert result.returncode == 2 and "SQLite serves one process" in result.stderr
    assert not (tmp_path / "s").exists()


def _search(supernet, lut, out, *extra):
    budget = f"{count_params(get_space(SPACE).largest()) * 0.9 / 1e6:.3f}M"  # a few steps
    return [sys.executable, "-m", "nas.cli", "search", "--supernet", str(supernet), "--lut", str(lut), "--out",
            str(out), "--eval-images", "64", "--bn-batches", "1", "--params", budget, "--quiet", *extra]


def _trajectory(out):
    (path,) = out.glob("fine-grained-*-trajectory.csv")
    return pd.read_csv(path).drop(columns=["utility"])


def _queues(storage, count):
    """The storage's score queues once the driver has created ``count`` of them."""
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            queues = ScoreQueue.find(storage)
            if len(queues) == count:
                return queues
        except InvalidInputError:  # none yet
            pass
        time.sleep(0.5)
    raise AssertionError(f"the driver did not create {count} score queue(s) in 120 s")


def test_a_worker_killed_mid_evaluation_costs_only_its_config(tiny_supernet_run, tiny_lut, tmp_path):
    """One driver and two workers on a journal file, a search with a recheck slice (two score queues);
    one worker is killed with SIGKILL while it scores a config. The config is queued again, and the
    search ends as the same search in one process."""
    alone = subprocess.run(_search(tiny_supernet_run, tiny_lut, tmp_path / "alone", "--recheck", "2"),
                           capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert alone.returncode == 0, alone.stderr
    storage = f"journal:///{tmp_path}/journal.log"
    driver = subprocess.Popen(_search(tiny_supernet_run, tiny_lut, tmp_path / "shared", "--recheck", "2", "--storage",
                                      storage, "--workers", "--stale-after", "3"), cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    worker = [sys.executable, "-m", "nas.cli", "search-worker", "--storage", storage, "--idle-exit", "5"]
    queue, recheck = sorted(_queues(storage, 2), key=lambda q: q.evaluation["protocol"].get("offset", 0))
    deadline = time.time() + 120
    workers = [subprocess.Popen(worker, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    victim, killed = workers[0], False
    while time.time() < deadline and not killed:  # kill the first worker while it holds a config
        for trial in [t for q in (queue, recheck) for t in q.study.get_trials(
                deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))]:
            if trial.system_attrs.get("taker", "").endswith(f":{victim.pid}"):
                os.kill(victim.pid, signal.SIGKILL)
                killed = True
                break
        time.sleep(0.05)
    assert killed, "the worker never took a config"
    out, err = driver.communicate(timeout=900)
    assert driver.returncode == 0, err
    survivor = workers[1].communicate(timeout=120)
    assert workers[1].returncode == 0, survivor[1]
    victim.wait(timeout=30)
    trials = queue.study.get_trials(deepcopy=False) + recheck.study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    assert optuna.trial.TrialState.FAIL in states and optuna.trial.TrialState.RUNNING not in states
    takers = {t.system_attrs.get("taker", "").rsplit(":", 1)[-1] for t in trials
              if t.state == optuna.trial.TrialState.COMPLETE}
    assert str(workers[1].pid) in takers  # the surviving worker scored some
    assert len(recheck.scores([t.user_attrs["key"] for t in recheck.study.trials])) > 0  # the recheck slice too
    pd.testing.assert_frame_equal(_trajectory(tmp_path / "shared"), _trajectory(tmp_path / "alone"))


def test_sampler_rounds_are_served_by_workers(tiny_supernet_run, tiny_lut, tmp_path):
    """NSGA-II with a worker: its generations are scored by both processes, and the search's trials are
    the single-process search's."""
    arguments = ["--algorithm", "nsga2", "--evaluations", "30", "--seed", "2"]
    alone = subprocess.run(_search(tiny_supernet_run, tiny_lut, tmp_path / "alone", *arguments), capture_output=True,
                           text=True, timeout=900, cwd=ROOT)
    assert alone.returncode == 0, alone.stderr
    storage = f"journal:///{tmp_path}/journal.log"
    driver = subprocess.Popen(_search(tiny_supernet_run, tiny_lut, tmp_path / "shared", *arguments, "--storage",
                                      storage, "--workers"), cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    _queues(storage, 1)
    worker = subprocess.Popen([sys.executable, "-m", "nas.cli", "search-worker", "--storage", storage,
                               "--idle-exit", "5"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    _, err = driver.communicate(timeout=900)
    assert driver.returncode == 0, err
    out, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err
    assert int(out.strip().splitlines()[-1].split("; ")[1].split()[0]) > 0, out  # "...; N configs scored"
    (path,) = (tmp_path / "alone").glob("nsga2-*-trajectory.csv")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "shared" / path.name), pd.read_csv(path))
