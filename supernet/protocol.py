"""How a subnet's accuracy is measured, without torch: the evaluation protocol and the scores.

:class:`EvalProtocol` is the one description of how a subnet is evaluated (which held-out
images, how many BatchNorm calibration batches, the batch size); :class:`Scores` are what
an evaluation gives. :mod:`supernet.evaluate` measures them; this module holds only the
values, so the command line can name their defaults without loading torch.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import islice
from typing import Optional

from search_spaces import InvalidInputError

CRITERIA = ("top1", "loss", "kl")  # what a search step ranks moves by (nas search --criterion)


# -- the protocol -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class EvalProtocol:
    """How a subnet is evaluated: held-out images ``[offset, offset + images)`` of ``split``
    (``images=None``: to the end of the split), after BatchNorm recalibration on the first
    ``bn_batches`` batches of ``batch_size`` training images in the recipe's seeded order."""

    images: Optional[int] = None
    offset: int = 0
    bn_batches: int = 2
    batch_size: int = 128
    split: str = "val"

    def __post_init__(self) -> None:
        if self.images is not None and self.images < 1:
            raise InvalidInputError(f"evaluation images {self.images}: expected a positive number")
        if self.offset < 0:
            raise InvalidInputError(f"evaluation slice offset {self.offset}: expected 0 or more")
        if self.bn_batches < 1 or self.batch_size < 1:
            raise InvalidInputError(f"BatchNorm batches {self.bn_batches} of {self.batch_size} images: expected "
                                    f"positive numbers")
        if self.split not in ("val", "test"):
            raise InvalidInputError(f"evaluation split {self.split!r}: expected val (held-out) or test")

    def replace(self, **changes) -> "EvalProtocol":
        return EvalProtocol(**{**asdict(self), **changes})

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def stop(self) -> Optional[int]:
        return None if self.images is None else self.offset + self.images

    def describe(self) -> str:
        where = "held-out" if self.split == "val" else "test"
        span = f"images {self.offset}-{self.stop}" if self.images else f"images {self.offset}-end"
        return f"{where} {span}, BatchNorm recalibrated on {self.bn_batches} batches of {self.batch_size}"

    def overlaps(self, other: "EvalProtocol") -> bool:
        """Whether the two protocols evaluate on any common image."""
        if self.split != other.split:
            return False
        end_a = float("inf") if self.stop is None else self.stop
        end_b = float("inf") if other.stop is None else other.stop
        return self.offset < end_b and other.offset < end_a

    def data(self, recipe, resolution: int, data_dir: Optional[str] = None) -> tuple[list, list]:
        """``(calibration batches, evaluation batches)`` in memory: every config sees the same images.

        A slice that does not fit in the split is refused before any evaluation.
        """
        from torch.utils.data import DataLoader, Subset

        from supernet.data import Splits

        splits = Splits(recipe.replace(eval_images=None), resolution, data_dir=data_dir)
        dataset = splits.dataset(self.split)
        stop = len(dataset) if self.stop is None else self.stop
        if stop > len(dataset) or self.offset >= len(dataset):
            raise InvalidInputError(f"evaluation slice: images {self.offset}-{stop} of the {self.split} split, which "
                                    f"has {len(dataset)} images; expected a slice within it")
        loader = DataLoader(Subset(dataset, range(self.offset, stop)), batch_size=self.batch_size,
                            num_workers=recipe.num_workers)
        eval_batches = [(images, labels) for images, labels, *_ in loader]
        return self.calibration(recipe, resolution, data_dir, splits), eval_batches

    def calibration(self, recipe, resolution: int, data_dir: Optional[str] = None, splits=None) -> list:
        """The BatchNorm calibration batches: training images (evaluation transform) in the recipe's
        seeded order."""
        from supernet.data import Splits

        splits = splits or Splits(recipe, resolution, data_dir=data_dir)
        calib = splits.eval_loader("calib", batch_size=self.batch_size, shuffle_seed=recipe.seed)
        return [images for images, *_ in islice(calib, self.bn_batches)]


@dataclass(frozen=True)
class Scores:
    """A config's scores on the protocol's images: top-1 (%), mean cross-entropy, and the mean
    KL divergence KL(largest || config) of its predicted class distribution from the largest
    subnet's (0 for the largest itself)."""

    top1: float
    loss: float
    kl: float
    images: int

    def value(self, criterion: str) -> float:
        """The criterion as a quantity to maximise: top-1, minus the loss, minus the KL."""
        if criterion == "top1":
            return self.top1
        if criterion == "loss":
            return -self.loss
        if criterion == "kl":
            return -self.kl
        raise InvalidInputError(f"unknown criterion {criterion!r}; expected one of {', '.join(CRITERIA)}")


def check_criterion(criterion: str) -> str:
    if criterion not in CRITERIA:
        raise InvalidInputError(f"--criterion {criterion!r}: expected one of {', '.join(CRITERIA)}")
    return criterion
