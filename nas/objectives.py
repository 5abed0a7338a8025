"""The search's objectives: parameters, latency, MES and supernet accuracy of a config.

* parameters: analytic, the project's (deploy) convention;
* latency: the latency table's calibrated prediction, in ms on the table's backend;
* MES: :class:`nas.mes.MesSpec` with the table's MobileNetV2 latency as the latency
  unit off Core ML (SPEC section 2; 1 ms for a Core ML table, the paper's unit);
* accuracy: the supernet's subnet after BatchNorm recalibration, top-1 on the first
  ``eval_images`` images of the held-out split. The calibration and evaluation
  batches are drawn once and kept in memory, so every config sees the same images.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Optional, Protocol

import torch

from nas.mes import MesSpec
from search_spaces import InvalidInputError, SearchSpace, SubnetConfig, count_params


class LatencyModel(Protocol):
    space: str
    backend: str

    def predict(self, config: SubnetConfig) -> float: ...

    @property
    def reference_latency_ms(self) -> float: ...


@dataclass(frozen=True)
class Metrics:
    """Everything the search knows of one config."""

    key: str
    accuracy: float  # top-1, percent, held-out split
    params: int
    latency_ms: float
    mes: float

    def as_dict(self) -> dict:
        return {"key": self.key, "accuracy": self.accuracy, "params": self.params,
                "latency_ms": self.latency_ms, "mes": self.mes}


class SupernetAccuracy:
    """Top-1 of configs from a trained supernet on fixed in-memory batches (cached by key)."""

    def __init__(self, supernet_run: Path, eval_images: int = 1000, bn_batches: int = 4, batch_size: int = 128,
                 data_dir: Optional[str] = None, split: str = "val", loaded: Optional[tuple] = None) -> None:
        """``loaded``: the run's ``(supernet, recipe)`` if the caller has already loaded it."""
        from latency_lut.profiling import keep_freed_memory
        from supernet.data import Splits
        from supernet.evaluate import flush_denormals
        from supernet.train import load_supernet

        flush_denormals()
        # every config has other activation shapes: with glibc's default, each evaluation pays fresh
        # page faults for them (benchmarks/evaluation_memory.py: 0.371 -> 0.301 s an evaluation, tiny space)
        keep_freed_memory()
        self.supernet, recipe = loaded or load_supernet(Path(supernet_run))
        if eval_images < 1:
            raise InvalidInputError(f"--eval-images {eval_images}: expected a positive number of images")
        splits = Splits(recipe.replace(eval_images=eval_images), self.supernet.space.resolution, data_dir=data_dir)
        calib = splits.eval_loader("calib", batch_size=batch_size, shuffle_seed=recipe.seed)
        self.calib_batches = [(images,) for images, *_ in islice(calib, bn_batches)]
        self.eval_batches = [(images, labels) for images, labels, *_ in splits.eval_loader(split, batch_size)]
        self.cache: dict[str, float] = {}

    @property
    def space(self) -> SearchSpace:
        return self.supernet.space

    @torch.no_grad()
    def __call__(self, config: SubnetConfig) -> float:
        if config.key not in self.cache:
            from supernet.evaluate import evaluate, recalibrate_bn

            model = recalibrate_bn(self.supernet, config, self.calib_batches, len(self.calib_batches))
            self.cache[config.key] = evaluate(model, self.eval_batches).top1
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

    def __call__(self, config: SubnetConfig) -> Metrics:
        params, latency_ms, mes = self.costs(config)
        return Metrics(config.key, self.accuracy(config), params, latency_ms, mes)
