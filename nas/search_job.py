"""A search job: a trained supernet and its latency table, checked, searched under budgets.

:class:`SearchJob` is what ``nas search`` runs and what ``nas quickstart`` (and a
notebook) calls the same way::

    from nas.search_job import SearchJob
    from nas.search import Budget

    job = SearchJob("runs/tiny", "tiny.parquet", "runs/search")
    result = job.run([Budget("params", 0.6e6)])          # writes the configs, trajectory, summary
    job.run(job.default_family(), algorithm="random")     # shares evaluated configs with the first

Every check happens when the job is opened, before any evaluation: alphas, the
criterion, the evaluation protocol (a slice that fits in the held-out split), the table
(readable, same space as the supernet, no missing block), the supernet checkpoint and
the storage URL.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from search_spaces import InvalidInputError
from search_spaces.io import check_output, file_digest

from supernet.protocol import EvalProtocol

from nas import nas_command
from nas.objectives import SEARCH_PROTOCOL
from nas.search import (SAMPLING, Budget, SearchResult, check_budgets, check_evaluations, default_family,
                        run_search)

PathLike = Union[str, Path]


DEFAULT_CRITERION = "kl"  # benchmarks/RESULTS-search.md: 19x top-1's signal-to-noise at the largest config


class SearchJob:
    def __init__(self, supernet_run: PathLike, lut: PathLike, out: PathLike, storage: Optional[str] = None,
                 alpha_latency: float = 1.0, alpha_size: float = 0.5, protocol: EvalProtocol = SEARCH_PROTOCOL,
                 criterion: str = DEFAULT_CRITERION, recheck: int = 0, data_dir: Optional[str] = None,
                 workers: bool = False, stale_after: float = 60.0) -> None:
        """``protocol``: the search slice and BatchNorm batches; ``criterion``: what a step ranks moves by;
        ``recheck``: the fine-grained step re-scores its best ``recheck`` moves on the next slice of as
        many images before committing (0: the paper's plain step); ``workers``: batches of configs go
        through the storage's score queue, served by ``nas search-worker`` processes (nas.workers; the
        storage must be JournalStorage or PostgreSQL); ``stale_after``: seconds of silence after which
        a worker's config is queued again."""
        from latency_lut import LatencyTable, missing_parts

        from nas.mes import check_alpha
        from nas.objectives import Objectives, SupernetAccuracy
        from nas.store import check_storage, default_storage
        from supernet.protocol import check_criterion
        from supernet.checkpoint import CHECKPOINT, load_supernet, scoring_device

        check_alpha(alpha_latency, "--alpha-lat")
        check_alpha(alpha_size, "--alpha-size")
        check_criterion(criterion)
        if recheck < 0:
            raise InvalidInputError(f"--recheck {recheck}: expected 0 (off) or a positive number of moves")
        if protocol.images is None:
            raise InvalidInputError("the search's evaluation needs a number of images (--eval-images)")
        if storage is not None and not storage.strip():
            raise InvalidInputError(f"--storage {storage!r}: expected an Optuna storage URL (e.g. "
                                    "sqlite:///study.db), or no --storage for DIR/study.db")
        self.supernet_run, self.lut, self.out = Path(supernet_run), Path(lut), check_output(out, "--out", folder=True)
        table = LatencyTable.load(self.lut)
        loaded = load_supernet(self.supernet_run, scoring_device())
        space = loaded[0].space
        if table.space != space.name:
            raise InvalidInputError(f"the supernet in {str(supernet_run)!r} is of space {space.name!r} but the "
                                    f"latency table {str(lut)!r} of space {table.space!r}; expected one space for both")
        missing = missing_parts(table, space)
        if missing:
            raise InvalidInputError(f"latency table {str(lut)!r} lacks {len(missing)} block(s) of space "
                                    f"{space.name!r} (first: {missing[0].key}); fill it with: "
                                    + nas_command("build-lut", "--space", space.name, "--backend", table.backend,
                                                  "--out", lut))
        self.storage = storage or default_storage(self.out)
        if workers:
            from nas.workers import check_shared_storage

            check_shared_storage(self.storage)
            if not stale_after > 0:
                raise InvalidInputError(f"--stale-after {stale_after}: expected a positive number of seconds")
        if storage is not None:  # the default, DIR/study.db, is created by the first search that runs
            check_storage(self.storage)
        self.workers, self.stale_after = workers, stale_after
        self.protocol, self.criterion, self.recheck = protocol, criterion, recheck
        self.accuracy = SupernetAccuracy(self.supernet_run, protocol, data_dir=data_dir, loaded=loaded)
        self.space = space
        self.objectives = Objectives.from_table(space, table, self.accuracy, alpha_latency, alpha_size)
        # what a config's scores depend on: the weights themselves (a supernet retrained in the same folder
        # makes other studies) and the evaluation protocol; studies with the same one share their scores
        weights = file_digest(self.supernet_run / CHECKPOINT)
        self.evaluation_id = {"supernet_sha1": weights, "protocol": protocol.as_dict(), "data_dir": data_dir}
        self.recheck_with = None
        if recheck:
            second = protocol.replace(offset=protocol.offset + protocol.images)
            objectives = Objectives.from_table(
                space, table, SupernetAccuracy(self.supernet_run, second, data_dir=data_dir, loaded=loaded),
                alpha_latency, alpha_size)
            self.recheck_with = (objectives, recheck,
                                 {"supernet_sha1": weights, "protocol": second.as_dict(), "data_dir": data_dir})
        self.objectives_id = {**self.evaluation_id, "supernet": str(self.supernet_run.resolve()),
                              "lut": str(self.lut.resolve()), "lut_sha1": file_digest(self.lut),
                              "alpha_latency": alpha_latency, "alpha_size": alpha_size, "criterion": criterion,
                              "recheck": recheck}

    def default_family(self) -> list[Budget]:
        return default_family(self.space)

    def check(self, budgets: Sequence[Budget]) -> list[Budget]:
        """Budgets sorted loosest first; an unreachable one is refused."""
        return check_budgets(self.objectives, budgets)

    def run(self, budgets: Sequence[Budget], algorithm: str = "fine-grained", seed: int = 0, evaluations: int = 100,
            progress: Optional[Callable[[str], None]] = None, command: str = "") -> SearchResult:
        """Run (or resume) one search and write its outputs to the job's folder."""
        from nas.results import write_search_outputs

        budgets = self.check(budgets)
        check_evaluations(evaluations)
        self.out.mkdir(parents=True, exist_ok=True)
        arguments = {**self.objectives_id, "budgets": [b.label for b in budgets]}
        if algorithm in SAMPLING:  # the greedy searches use neither
            arguments.update(seed=seed, evaluations=evaluations)
        queue = recheck_queue = None
        if self.workers:
            from nas.workers import ScoreQueue

            queue = ScoreQueue.create(self.storage, self.evaluation_id, self.space.name, self.supernet_run,
                                      self.stale_after)
            if self.recheck_with is not None and algorithm in ("fine-grained", "v1-scale"):
                recheck_queue = ScoreQueue.create(self.storage, self.recheck_with[2], self.space.name,
                                                  self.supernet_run, self.stale_after)
        result = run_search(self.objectives, budgets, algorithm, self.storage, arguments, evaluations=evaluations,
                            seed=seed, supernet=self.accuracy.supernet, progress=progress,
                            evaluation_id=self.evaluation_id, criterion=self.criterion, recheck=self.recheck_with,
                            queue=queue, recheck_queue=recheck_queue)
        result.written = write_search_outputs(result, self.out, command)
        return result


__all__ = ["DEFAULT_CRITERION", "SEARCH_PROTOCOL", "SearchJob"]
