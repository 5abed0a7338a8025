"""BatchNorm recalibration and evaluation of sub-networks, under one evaluation protocol.

:class:`EvalProtocol` is the one description of how a subnet's accuracy is measured
(which held-out images, how many BatchNorm calibration batches, the batch size); the
search, ``nas eval-subnet``, the training log, ``nas export``'s supernet weights and the
reproductions all build their evaluation from it.

:class:`SubnetScorer` measures configs of one supernet under a protocol. In one pass per
config it gives top-1, mean cross-entropy and the KL divergence from the largest
subnet's predictions (:class:`Scores`), per image when asked. Configs that share their
stem and leading stages with a *prepared* config (the search's current state: every move
of a step changes one stage) reuse that prefix's activations and BatchNorm statistics:
only the stages from the first changed one onwards are recalibrated and run.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces import InvalidInputError, SubnetConfig
from supernet.checkpoint import load_supernet
from supernet.extract import extract, supernet_key
from supernet.protocol import EvalProtocol, Scores
from supernet.supernet import Supernet

# -- recalibration and plain evaluation -------------------------------------------------------------

@dataclass(frozen=True)
class Evaluation:
    top1: float  # percent
    loss: float
    images: int


def _batch_norms(module: nn.Module) -> list:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextmanager
def _exact_statistics(norms: list):
    """Inside: BatchNorm layers ``norms`` accumulate the exact mean statistics of what runs through
    them in train mode (a cumulative average from zero); after, their usual momentum."""
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
    try:
        yield
    finally:
        for bn in norms:
            bn.momentum = 0.1


@torch.no_grad()
def _calibrate(modules: list[nn.Module], norms: list, inputs: Iterable[torch.Tensor]) -> None:
    """Exact BatchNorm averages of ``norms`` over ``inputs`` run through ``modules`` in train mode."""
    with _exact_statistics(norms):
        for module in modules:
            module.train()
        for x in inputs:
            for module in modules:
                x = module(x)
        for module in modules:
            module.eval()


@torch.no_grad()
def recalibrate_bn(supernet: Supernet, config: SubnetConfig, loader: Iterable, num_batches: int,
                   write_back: bool = False) -> nn.Module:
    """The standalone network of ``config`` with BatchNorm statistics re-estimated on
    ``num_batches`` batches of ``loader`` (exact averages, not running estimates).

    The supernet's own statistics are untouched unless ``write_back`` is set, in which
    case the recalibrated statistics are copied into the supernet's leading channels.
    """
    device = next(supernet.parameters()).device
    model = extract(supernet, config).to(device)
    batches = (batch[0] if isinstance(batch, (tuple, list)) else batch for batch in islice(loader, num_batches))
    _calibrate([model], _batch_norms(model), (images.to(device) for images in batches))
    if write_back:
        source = supernet.state_dict()
        for key, value in model.state_dict().items():
            if key.endswith(("running_mean", "running_var")):
                target = source[supernet_key(config, key)]
                target[:value.shape[0]].copy_(value)
    return model


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, max_batches: Optional[int] = None) -> Evaluation:
    """Top-1 (percent) and mean cross-entropy of a standalone network on a loader."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct, loss_sum, count = 0, 0.0, 0
    for images, labels, *_ in islice(loader, max_batches):
        images, labels = images.to(device), labels.to(device)
        logits = model(images).float()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        correct += (logits.argmax(dim=1) == labels).sum().item()
        count += labels.numel()
    model.train(was_training)
    if count == 0:
        return Evaluation(float("nan"), float("nan"), 0)
    return Evaluation(100.0 * correct / count, loss_sum / count, count)


# -- scoring configs under a protocol --------------------------------------------------------------

@dataclass(frozen=True)
class PerImage:
    """Per-image results of one config: correct (bool), cross-entropy, KL from the largest."""

    correct: torch.Tensor
    loss: torch.Tensor
    kl: torch.Tensor

    def scores(self) -> Scores:
        """The means over the images."""
        return Scores(100.0 * self.correct.float().mean().item(), self.loss.double().mean().item(),
                      self.kl.double().mean().item(), self.correct.numel())


def shared_stages(a: SubnetConfig, b: SubnetConfig) -> int:
    """How many leading stages two configs share, stem included; -1 if even the stem differs."""
    if a.resolution != b.resolution or a.stem_width != b.stem_width:
        return -1
    count = 0
    for stage_a, stage_b in zip(a.stages, b.stages):
        if stage_a != stage_b:
            break
        count += 1
    return count


class SubnetScorer:
    """Scores of configs of one supernet on fixed in-memory batches (see the module's doc)."""

    def __init__(self, supernet: Supernet, calib_batches: list, eval_batches: list) -> None:
        self.supernet = supernet
        self.device = next(supernet.parameters()).device
        self.calib_batches = [images.to(self.device) for images in calib_batches]
        self.eval_batches = eval_batches
        self.labels = torch.cat([labels for _, labels in eval_batches]) if eval_batches else torch.empty(0)
        self._reference: Optional[list[torch.Tensor]] = None  # the largest subnet's log-probabilities
        self._prepared: Optional[tuple[SubnetConfig, list]] = None  # a config and its prefix activations

    @classmethod
    def from_protocol(cls, supernet: Supernet, recipe, protocol: EvalProtocol,
                      data_dir: Optional[str] = None) -> "SubnetScorer":
        calib, batches = protocol.data(recipe, supernet.space.resolution, data_dir=data_dir)
        return cls(supernet, calib, batches)

    @property
    def space(self):
        return self.supernet.space

    def __call__(self, config: SubnetConfig) -> Scores:
        return self.per_image(config).scores()

    @torch.no_grad()
    def per_image(self, config: SubnetConfig, reference: Optional[list[torch.Tensor]] = None) -> PerImage:
        """Per-image results; the KL is from ``reference`` log-probabilities (default: the largest subnet's)."""
        log_probs = self.log_probs(config)
        if self._reference is None and config == self.space.largest():
            self._reference = log_probs  # the largest is its own reference: not evaluated twice
        return self.compare(log_probs, reference)

    @torch.no_grad()
    def compare(self, log_probs: list[torch.Tensor], reference: Optional[list[torch.Tensor]] = None) -> PerImage:
        """Per-image results of log-probabilities (of :meth:`log_probs`) against the labels and ``reference``."""
        reference = self._reference_log_probs() if reference is None else reference
        correct, loss, kl = [], [], []
        for lp, ref, (_, labels) in zip(log_probs, reference, self.eval_batches):
            correct.append(lp.argmax(dim=1) == labels)
            loss.append(F.nll_loss(lp, labels, reduction="none"))
            kl.append(F.kl_div(lp, ref, log_target=True, reduction="none").sum(dim=1).clamp_min(0))
        return PerImage(torch.cat(correct), torch.cat(loss), torch.cat(kl))

    def _reference_log_probs(self) -> list[torch.Tensor]:
        if self._reference is None:
            self._reference = self.log_probs(self.space.largest(), use_prefix=False)
        return self._reference

    @torch.no_grad()
    def prepare(self, config: SubnetConfig) -> None:
        """Keep ``config``'s prefix activations (after the stem and after each stage) on the
        calibration and evaluation images, for configs that share leading stages with it (a config
        already prepared is not prepared again)."""
        if self._prepared is not None and self._prepared[0] == config:
            return
        model = extract(self.supernet, config).eval()
        norms = _batch_norms(model)
        with _exact_statistics(norms):  # the prefix recalibrates while its train-mode activations are recorded
            calib_outputs = self._boundary_outputs(model, self.calib_batches, train=True)
        boundaries = [calib_outputs, self._boundary_outputs(model, self._eval_images(), train=False)]
        self._prepared = (config, boundaries)

    def forget(self) -> None:
        self._prepared = None

    @staticmethod
    def _boundary_outputs(model: nn.Module, inputs: list[torch.Tensor], train: bool) -> list[list[torch.Tensor]]:
        """Per boundary (0: after the stem, k: after stage k), the activations of each batch."""
        outputs = [[] for _ in range(len(model.stages) + 1)]
        model.train(train)
        for x in inputs:
            x = model.stem(x)
            outputs[0].append(x)
            for k, stage in enumerate(model.stages):
                x = stage(x)
                outputs[k + 1].append(x)
        model.eval()
        return outputs

    @torch.no_grad()
    def log_probs(self, config: SubnetConfig, use_prefix: bool = True) -> list[torch.Tensor]:
        """Log-probabilities of every evaluation batch, after BatchNorm recalibration."""
        model = extract(self.supernet, config).eval()
        shared = shared_stages(config, self._prepared[0]) if (use_prefix and self._prepared) else -1
        if shared < 0:  # from the images
            body = [model.stem, *model.stages, model.norm]
            calib_inputs, eval_inputs = self.calib_batches, self._eval_images()
        else:  # from the prepared config's activations after the stem and ``shared`` stages
            body = [*model.stages[shared:], model.norm]
            calib_inputs, eval_inputs = (outputs[shared] for outputs in self._prepared[1])
        norms = [bn for module in body for bn in _batch_norms(module)]
        _calibrate(body, norms, calib_inputs)
        result = []
        for x in eval_inputs:
            for module in body:
                x = module(x)
            result.append(F.log_softmax(model.forward_head(x).float(), dim=1).cpu())
        return result

    def _eval_images(self):
        return (images.to(self.device) for images, _ in self.eval_batches)


def evaluate_config(run_dir: Path, config: SubnetConfig, protocol: EvalProtocol = EvalProtocol(),
                    data_dir: Optional[str] = None) -> Scores:
    """Top-1, loss and KL from the largest subnet of ``config`` from a trained supernet, under ``protocol``."""
    supernet, recipe = load_supernet(run_dir)
    if config.space != supernet.space.name:
        raise InvalidInputError(f"the config belongs to space {config.space!r}; the supernet in "
                                f"{str(run_dir)!r} is of space {supernet.space.name!r}")
    return SubnetScorer.from_protocol(supernet, recipe, protocol, data_dir=data_dir)(config)
