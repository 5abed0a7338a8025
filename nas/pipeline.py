"""A search job: a trained supernet and its latency table, checked, searched under budgets.

:class:`SearchJob` is what ``nas search`` runs and what ``nas quickstart`` (and a
notebook) calls the same way::

    from nas.pipeline import SearchJob
    from nas.search import Budget

    job = SearchJob("runs/tiny", "tiny.parquet", "runs/search")
    result = job.run([Budget("params", 0.6e6)])          # writes the configs, trajectory, summary
    job.run(job.default_family(), algorithm="random")     # shares evaluated configs with the first

Every check happens when the job is opened, before any evaluation: alphas, evaluation
settings, the table (readable, same space as the supernet, no missing block), the
supernet checkpoint and the storage URL.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from search_spaces import InvalidInputError
from search_spaces.io import file_digest

from nas.search import Budget, SearchResult, check_budgets, default_family, run_search

PathLike = Union[str, Path]


class SearchJob:
    def __init__(self, supernet_run: PathLike, lut: PathLike, out: PathLike, storage: Optional[str] = None,
                 alpha_latency: float = 1.0, alpha_size: float = 0.5, eval_images: int = 500, bn_batches: int = 2,
                 data_dir: Optional[str] = None) -> None:
        from latency_lut import LatencyTable, missing_parts

        from nas.mes import check_alpha
        from nas.objectives import Objectives, SupernetAccuracy
        from nas.store import check_storage, default_storage
        from supernet.train import CHECKPOINT, load_supernet

        check_alpha(alpha_latency, "--alpha-lat")
        check_alpha(alpha_size, "--alpha-size")
        if eval_images < 1 or bn_batches < 1:
            raise InvalidInputError(f"--eval-images {eval_images} / --bn-batches {bn_batches}: expected positive "
                                    f"numbers")
        self.supernet_run, self.lut, self.out = Path(supernet_run), Path(lut), Path(out)
        table = LatencyTable.load(self.lut)
        loaded = load_supernet(self.supernet_run)
        space = loaded[0].space
        if table.space != space.name:
            raise InvalidInputError(f"the supernet in {str(supernet_run)!r} is of space {space.name!r} but the "
                                    f"latency table {str(lut)!r} of space {table.space!r}; expected one space for both")
        missing = missing_parts(table, space)
        if missing:
            raise InvalidInputError(f"latency table {str(lut)!r} lacks {len(missing)} block(s) of space "
                                    f"{space.name!r} (first: {missing[0].key}); fill it with: nas build-lut --space "
                                    f"{space.name} --backend {table.backend} --out {lut}")
        self.storage = storage or default_storage(self.out)
        if storage is None:
            self.out.mkdir(parents=True, exist_ok=True)
        check_storage(self.storage)
        self.accuracy = SupernetAccuracy(self.supernet_run, eval_images=eval_images, bn_batches=bn_batches,
                                         data_dir=data_dir, loaded=loaded)
        self.space = space
        self.objectives = Objectives.from_table(space, table, self.accuracy, alpha_latency, alpha_size)
        # what a config's metrics depend on: the weights and the table themselves (a supernet retrained in the
        # same folder makes other studies), MES and the evaluation settings
        self.objectives_id = {
            "supernet": str(self.supernet_run.resolve()), "lut": str(self.lut.resolve()),
            "supernet_sha1": file_digest(self.supernet_run / CHECKPOINT), "lut_sha1": file_digest(self.lut),
            "alpha_latency": alpha_latency, "alpha_size": alpha_size, "eval_images": eval_images,
            "bn_batches": bn_batches, "data_dir": data_dir}

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
        arguments = {**self.objectives_id, "budgets": [b.label for b in budgets], "seed": seed,
                     "evaluations": evaluations}
        result = run_search(self.objectives, budgets, algorithm, self.storage, arguments, evaluations=evaluations,
                            seed=seed, supernet=self.accuracy.supernet, progress=progress,
                            objectives_id=self.objectives_id)
        result.written = write_search_outputs(result, self.out, command)
        return result


__all__ = ["SearchJob"]
