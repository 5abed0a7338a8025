"""The search's objectives: parameters, latency, MES and supernet accuracy of a config.

* parameters: analytic, the project's (deploy) convention;
* latency: the latency table's calibrated prediction, in ms on the table's backend;
* MES: :class:`nas.mes.MesSpec` with the table's MobileNetV2 latency as the latency
  unit off Core ML (docs/architecture.md §2; 1 ms for a Core ML table, the paper's unit);
* accuracy: the supernet's subnet after BatchNorm recalibration, under one
  :class:`supernet.evaluate.EvalProtocol` (a slice of the held-out split): top-1, mean
  cross-entropy and KL divergence from the largest subnet, in one pass. The calibration
  and evaluation batches are drawn once and kept in memory, so every config sees the
  same images.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol

from nas.mes import MesSpec
from search_spaces import InvalidInputError, SearchSpace, SubnetConfig, count_params
from supernet.protocol import EvalProtocol, Scores


class LatencyModel(Protocol):
    space: str
    backend: str

    def predict(self, config: SubnetConfig) -> float: ...

    @property
    def reference_latency_ms(self) -> float: ...


@dataclass(frozen=True)
class Metrics:
    """Everything the search knows of one config: top-1 (``accuracy``), mean cross-entropy
    (``loss``) and the KL divergence from the largest subnet (``kl``) on the evaluation
    protocol's images, and its costs."""

    key: str
    accuracy: float  # top-1, percent, held-out split
    params: int
    latency_ms: float
    mes: float
    loss: float = math.nan
    kl: float = math.nan

    def as_dict(self) -> dict:
        return {"key": self.key, "accuracy": self.accuracy, "params": self.params,
                "latency_ms": self.latency_ms, "mes": self.mes, "loss": self.loss, "kl": self.kl}

    @property
    def scores(self) -> Scores:
        return Scores(self.accuracy, self.loss, self.kl, 0)

    def score(self, criterion: str) -> float:
        """The search criterion as a quantity to maximise (top-1, -loss or -KL)."""
        return self.scores.value(criterion)


SEARCH_PROTOCOL = EvalProtocol(images=500)  # the search's default slice: held-out images 0-500


class SupernetAccuracy:
    """Scores of configs from a trained supernet under one :class:`EvalProtocol` (cached by key)."""

    def __init__(self, supernet_run: Path, protocol: EvalProtocol = SEARCH_PROTOCOL,
                 data_dir: Optional[str] = None, loaded: Optional[tuple] = None) -> None:
        """``loaded``: the run's ``(supernet, recipe)`` if the caller has already loaded it."""
        from search_spaces.runtime import check_configured
        from supernet.evaluate import SubnetScorer
        from supernet.checkpoint import load_supernet, scoring_device

        check_configured("the search's scorer")
        self.supernet, recipe = loaded or load_supernet(Path(supernet_run), scoring_device())
        self.protocol = protocol
        self.scorer = SubnetScorer.from_protocol(self.supernet, recipe, protocol, data_dir=data_dir)
        self.cache: dict[str, Scores] = {}

    @property
    def space(self) -> SearchSpace:
        return self.supernet.space

    def prepare(self, config: SubnetConfig) -> None:
        """Configs evaluated next share leading stages with ``config``: reuse its prefix."""
        self.scorer.prepare(config)

    def __call__(self, config: SubnetConfig) -> Scores:
        if config.key not in self.cache:
            self.cache[config.key] = self.scorer(config)
        return self.cache[config.key]


class Objectives:
    """Parameters, latency, MES and accuracy of configs of one space."""

    def __init__(self, space: SearchSpace, latency: LatencyModel, accuracy, mes: MesSpec) -> None:
        if latency.space != space.name:
            raise InvalidInputError(f"the latency table is of space {latency.space!r}, the supernet of "
                                    f"{space.name!r}; expected one space for both")
        self.space, self.latency, self.accuracy, self.mes = space, latency, accuracy, mes

    @classmethod
    def from_table(cls, space: SearchSpace, table: LatencyModel, accuracy, alpha_latency: float,
                   alpha_size: float) -> "Objectives":
        """MES with the paper's units: 3M params; 1 ms on Core ML, else the table's MobileNetV2 latency."""
        unit = 1.0 if table.backend == "coreml" else table.reference_latency_ms
        return cls(space, table, accuracy, MesSpec(alpha_latency, alpha_size, latency_unit_ms=unit))

    def costs(self, config: SubnetConfig) -> tuple[int, float, float]:
        """(params, latency_ms, MES): cheap, no accuracy."""
        params = count_params(config)
        latency_ms = self.latency.predict(config)
        return params, latency_ms, self.mes(params, latency_ms)

    def with_scores(self, config: SubnetConfig, scores: Scores) -> Metrics:
        """The metrics of ``config`` from already measured scores (this table's and alphas' costs)."""
        params, latency_ms, mes = self.costs(config)
        return Metrics(config.key, scores.top1, params, latency_ms, mes, scores.loss, scores.kl)

    def prepare(self, config: SubnetConfig) -> None:
        """Let the accuracy reuse ``config``'s prefix for the configs that follow (if it can)."""
        if hasattr(self.accuracy, "prepare"):
            self.accuracy.prepare(config)

    def __call__(self, config: SubnetConfig) -> Metrics:
        scores = self.accuracy(config)
        if not isinstance(scores, Scores):  # a plain top-1 (stand-in accuracies)
            scores = Scores(float(scores), math.nan, math.nan, 0)
        return self.with_scores(config, scores)
