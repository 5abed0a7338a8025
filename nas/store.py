"""The results store: every search is an Optuna study, every evaluated config a trial.

A trial's values are (the search criterion's score, MES), both maximised, so Optuna's Pareto tools work
on every study; its user attributes hold the config key, the config itself (JSON),
top-1 (``accuracy``), mean cross-entropy (``loss``), the KL divergence from the largest
subnet (``kl``), the parameters, the latency and the algorithm that evaluated it. A
study's ``evaluation`` attribute names what its scores depend on (the supernet's weights
and the evaluation protocol): studies with the same one share their scores, whatever
their latency table or alphas. Its params encode
the config's choices (a width per stage, a block token per supernet block), which
is also the search space NSGA-II samples.

The embedded default storage is a SQLite file in the output folder; any database
URL Optuna accepts works for several machines sharing one study.
"""
from __future__ import annotations

import contextlib
import math
import time
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

from search_spaces import BlockConfig, InvalidInputError, NasError, SearchSpace, StageConfig, SubnetConfig
from supernet.protocol import Scores

from nas.objectives import Metrics

DIRECTIONS = ("maximize", "maximize")  # accuracy, MES


def _optuna():
    import optuna

    return optuna


def distributions(space: SearchSpace) -> dict[str, Any]:
    """Optuna distributions of a space's choices: a width per stage, a token per block."""
    optuna = _optuna()
    result = {}
    for i, stage in enumerate(space.stages):
        result[f"s{i + 1}.width"] = optuna.distributions.CategoricalDistribution(list(stage.widths))
        tokens = ["-"] + [f"F{e}" for e in stage.expansions] + ([f"A{e}" for e in stage.expansions]
                                                                if stage.mhsa else [])
        for j in range(stage.max_depth):
            result[f"s{i + 1}.b{j + 1}"] = optuna.distributions.CategoricalDistribution(tokens)
    return result


def encode(config: SubnetConfig) -> dict[str, Any]:
    params = {}
    for i, stage in enumerate(config.stages):
        params[f"s{i + 1}.width"] = stage.width
        for j, block in enumerate(stage.blocks):
            params[f"s{i + 1}.b{j + 1}"] = "-" if block is None else block.token
    return params


def decode(space: SearchSpace, params: dict[str, Any]) -> SubnetConfig:
    """The config of encoded choices; a stage left with too few blocks keeps its first
    blocks (smallest FFN), so every point of Optuna's space is a valid network."""
    stages = []
    for i, choices in enumerate(space.stages):
        blocks = []
        for j in range(choices.max_depth):
            token = params[f"s{i + 1}.b{j + 1}"]
            blocks.append(None if token == "-" else BlockConfig(int(token[1:]), token[0] == "A"))
        missing = choices.min_depth - sum(b is not None for b in blocks)
        for j in range(choices.max_depth):
            if missing > 0 and blocks[j] is None:
                blocks[j] = BlockConfig(choices.expansions[0])
                missing -= 1
        stages.append(StageConfig(params[f"s{i + 1}.width"], tuple(blocks)))
    return space.validate(SubnetConfig(space.name, space.resolution, stages[0].width, tuple(stages)))


def default_storage(out: Path) -> str:
    return f"sqlite:///{(Path(out) / 'study.db').resolve()}"


#: what a process sees when another one creates the same new store at the same moment (SQLite)
_CREATION_RACES = ("already exists", "UNIQUE constraint failed: alembic_version", "database is locked")


QUEUE_KIND = "score queue"  # the user attribute "kind" of a search's score queue (nas.workers)
JOURNAL = "journal://"  # journal:///PATH: Optuna's JournalStorage on a file (several processes, one machine)


def get_storage(storage: str, attempts: int = 10):
    """Optuna's storage for a URL: ``sqlite:///...``, ``postgresql://...`` (any SQLAlchemy URL) or
    ``journal:///PATH``. Several processes started at once on a new store race to create its tables;
    a loser retries and finds the tables the winner made."""
    optuna = _optuna()
    if storage.startswith(JOURNAL):
        from optuna.storages.journal import JournalFileBackend

        path = storage[len(JOURNAL):]
        if not path or Path(path).is_dir():
            raise InvalidInputError(f"--storage {storage!r}: expected journal:///PATH naming a journal file")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(path))
    for attempt in range(attempts):
        try:
            return optuna.storages.get_storage(storage)
        except Exception as error:
            if attempt == attempts - 1 or not any(race in str(error) for race in _CREATION_RACES):
                raise
            time.sleep(0.05 * (attempt + 1))


def check_storage(storage: str) -> None:
    """Open the storage once (creating a SQLite file if needed); fail with one clear message."""
    try:
        get_storage(storage)
    except Exception as error:  # bad URL, missing driver, unreachable server, unwritable file
        raise InvalidInputError(f"cannot open the results storage {storage!r}: {type(error).__name__}: "
                                f"{str(error).splitlines()[0][:200]}") from None


def open_study(storage: str, study_name: str, metric_names: Optional[list[str]] = None, sampler=None,
               metadata: Optional[dict[str, Any]] = None, directions: Sequence[str] = DIRECTIONS):
    """Create or load a study (its objectives named ``metric_names`` for Optuna's own tools); a storage
    that cannot be opened is one clear error."""
    optuna = _optuna()
    try:
        study = optuna.create_study(storage=get_storage(storage), study_name=study_name,
                                    directions=list(directions),
                                    sampler=sampler, load_if_exists=True)
    except Exception as error:  # bad URL, missing driver, unreachable server, unwritable file
        raise InvalidInputError(f"cannot open the results storage {storage!r}: {type(error).__name__}: "
                                f"{str(error).splitlines()[0][:200]}") from None
    if metric_names and study.metric_names != metric_names:
        with warnings.catch_warnings():  # experimental in Optuna since 3.2, and stable in use
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(metric_names)
    for key, value in (metadata or {}).items():
        if key not in study.user_attrs:
            study.set_user_attr(key, value)
    return study


def elapsed_seconds(study) -> float:
    """From the first stored trial's start to the last one's end: the wall time that earlier runs of a
    resumed search spent (0 for a new study)."""
    spans = [(t.datetime_start, t.datetime_complete) for t in study.get_trials(deepcopy=False)
             if t.datetime_start is not None and t.datetime_complete is not None]
    if not spans:
        return 0.0
    return (max(end for _, end in spans) - min(start for start, _ in spans)).total_seconds()


def trial_metrics(trial) -> Optional[Metrics]:
    attrs = trial.user_attrs
    if trial.state.name != "COMPLETE" or "key" not in attrs:
        return None
    return Metrics(attrs["key"], attrs["accuracy"], attrs["params"], attrs["latency_ms"], attrs["mes"],
                   attrs.get("loss", math.nan), attrs.get("kl", math.nan))


def stored_metrics(study) -> dict[str, Metrics]:
    """Every evaluated config of a study, by key."""
    result = {}
    for trial in study.get_trials(deepcopy=False):
        metrics = trial_metrics(trial)
        if metrics is not None:
            result[metrics.key] = metrics
    return result


def shared_scores(storage: str, evaluation_id: Any, exclude: str = "") -> dict[str, Scores]:
    """The scores (top-1, loss, KL) of the configs evaluated by every other study in ``storage``
    whose ``evaluation`` attribute equals ``evaluation_id``: the same supernet weights and
    evaluation protocol, whatever their latency table, backend, alphas or criterion."""
    optuna = _optuna()
    result: dict[str, Scores] = {}
    with _readable(storage):
        opened = get_storage(storage)
        for summary in optuna.study.get_all_study_summaries(opened):
            if summary.study_name != exclude and summary.user_attrs.get("evaluation") == evaluation_id \
                    and summary.user_attrs.get("kind") != QUEUE_KIND:
                study = optuna.load_study(study_name=summary.study_name, storage=opened)
                result.update((key, m.scores) for key, m in stored_metrics(study).items())
    return result


@contextlib.contextmanager
def _readable(storage: str):
    """A store whose pages or attributes are damaged is one clear error, not a database traceback."""
    try:
        yield
    except NasError:
        raise
    except Exception as error:  # sqlite's "database disk image is malformed", bad attribute JSON, wrong types
        raise InvalidInputError(f"the results store {storage!r} cannot be read ({type(error).__name__}: "
                                f"{str(error).splitlines()[0][:160] if str(error) else ''}); expected a store "
                                "written by nas search (remove it, or choose another --out or --storage)") from None


def is_optuna_sqlite(db: Path) -> bool:
    """Whether a SQLite file holds Optuna's tables, read without writing to it (an empty file: no)."""
    import sqlite3

    try:
        connection = sqlite3.connect(f"file:{Path(db).resolve()}?mode=ro", uri=True)
        try:
            names = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            connection.close()
    except sqlite3.Error:
        return False
    return {"studies", "trials", "alembic_version"} <= names


def user_attrs(config: SubnetConfig, metrics: Metrics, algorithm: str) -> dict[str, Any]:
    return {**metrics.as_dict(), "config": config.to_json(), "algorithm": algorithm}


def record(study, space: SearchSpace, config: SubnetConfig, metrics: Metrics, algorithm: str,
           criterion: str = "top1") -> None:
    """Add an evaluated config to the study as a finished trial: values (criterion score, MES)."""
    optuna = _optuna()
    study.add_trial(optuna.trial.create_trial(
        params=encode(config), distributions=distributions(space), values=[metrics.score(criterion), metrics.mes],
        user_attrs=user_attrs(config, metrics, algorithm)))


def studies_dataframe(folder: Path):
    """Every trial of every study in the SQLite files of a folder, as one DataFrame."""
    import pandas as pd

    optuna = _optuna()
    folder = Path(folder)
    if not folder.exists():
        raise InvalidInputError(f"results folder {str(folder)!r} does not exist")
    if folder.is_file():  # one store, named directly
        if not is_optuna_sqlite(folder):
            raise InvalidInputError(f"{str(folder)!r} is not a results store; expected a study.db written by nas "
                                    "search, or a folder holding some")
        stores, root = [folder], folder.parent
    else:  # only SQLite files holding Optuna's tables: another program's .db is neither read nor written
        stores, root = [db for db in sorted(folder.rglob("*.db")) if is_optuna_sqlite(db)], folder
    frames = []
    for db in stores:
        storage = f"sqlite:///{db.resolve()}"
        with _readable(storage):
            for summary in optuna.study.get_all_study_summaries(storage):
                if summary.user_attrs.get("kind") == QUEUE_KIND:
                    continue  # the scores of a search with workers, not a search
                study = optuna.load_study(study_name=summary.study_name, storage=storage)
                rows = [dict(trial.user_attrs, trial=trial.number) for trial in study.get_trials(deepcopy=False)
                        if trial_metrics(trial) is not None]
                if rows:
                    frame = pd.DataFrame(rows)
                    frame["study"] = summary.study_name
                    frame["store"] = str(db.relative_to(root))
                    frames.append(frame)
    if not frames:
        raise InvalidInputError(f"no results store (*.db with evaluated configs) under {str(folder)!r}")
    return pd.concat(frames, ignore_index=True)


def pareto_front(frame, objectives=(("accuracy", True), ("mes", True))):
    """Rows of ``frame`` not dominated on ``objectives`` ((column, maximise), ...)."""
    import numpy as np

    values = np.stack([frame[c].to_numpy(dtype=float) * (1 if up else -1) for c, up in objectives], axis=1)
    keep = [not np.any(np.all(values >= row, axis=1) & np.any(values > row, axis=1)) for row in values]
    return frame[np.array(keep, dtype=bool)]
