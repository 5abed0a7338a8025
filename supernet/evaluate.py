"""BatchNorm recalibration and evaluation of sub-networks."""
from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from typing import Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces import SubnetConfig
from supernet.extract import extract, supernet_key
from supernet.supernet import Supernet


def flush_denormals() -> None:
    """Treat denormal floats as zero in this process (CPU).

    Attention probabilities and their gradients underflow into denormals, which x86
    CPUs process orders of magnitude slower (measured here: a sandwich step went from
    1.3 s to 17 s). Flushing them to zero changes nothing that matters (< 1e-38).
    """
    torch.set_flush_denormal(True)


@dataclass(frozen=True)
class Evaluation:
    top1: float  # percent
    loss: float
    images: int


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
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average = the exact mean over the batches
    model.train()
    for images, *_ in islice(loader, num_batches):
        model(images.to(device))
    model.eval()
    for bn in norms:
        bn.momentum = 0.1
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


def evaluate_subnet(supernet: Supernet, config: SubnetConfig, calib_loader: Iterable, eval_loader: Iterable,
                    bn_batches: int) -> Evaluation:
    """Recalibrate ``config``'s BatchNorm on ``bn_batches`` batches, then evaluate it."""
    return evaluate(recalibrate_bn(supernet, config, calib_loader, bn_batches), eval_loader)
