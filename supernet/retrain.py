"""One network of the space trained from scratch (``nas train CONFIG``), optionally distilled.

The searched config's standalone timm network (:func:`search_spaces.build_model`) is
trained with a recipe by the same loop as the supernet (:func:`supernet.train.run_training`):
data, torchrun/DDP, checkpoints, resume and logs are the supernet's. With a teacher,
the network's distillation head learns from it (DeiT-style, as the paper's released
models): ``(1 - distill_alpha) * CE(head, targets) + distill_alpha * KD(head_dist, teacher)``,
hard (the teacher's argmax) or soft (its softmax at ``distill_tau``), per the recipe.

A teacher is a supernet run (its largest config, BatchNorm recalibrated) or another
network run. :func:`load_network` gives the weights of either kind as a standalone network.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces import InvalidInputError, SubnetConfig, get_space, parse_config_text
from search_spaces.model import build_model
from supernet.data import Splits
from supernet.evaluate import evaluate, recalibrate_bn
from supernet.protocol import EvalProtocol
from supernet.recipe import Recipe
from supernet.checkpoint import CHECKPOINT, load_checkpoint, load_weights, supernet_from_checkpoint
from supernet.train import TrainingDiverged, TrainingTask, TrainResult, run_training, soft_cross_entropy

NETWORK = "network"


def _base_space(name: str) -> str:
    return name.split("@", 1)[0]


class NetworkTask(TrainingTask):
    """A standalone network trained from scratch, with an optional teacher."""

    kind = NETWORK

    def __init__(self, recipe: Recipe, config: SubnetConfig, teacher: Optional[nn.Module] = None,
                 teacher_source: Optional[str] = None) -> None:
        super().__init__(recipe)
        self.config, self.teacher, self.teacher_source = config, teacher, teacher_source

    def identity(self) -> dict[str, Any]:
        return {"space": self.config.space, "config": self.config.to_json(), "teacher": self.teacher_source}

    def check_checkpoint(self, payload: dict[str, Any], out: Path) -> None:
        stored = parse_config_text(payload["config"], source=f"{out / CHECKPOINT} config")[0]
        if stored.key != self.config.key:
            raise InvalidInputError(f"the run in {str(out)!r} trains config {stored.key}; the command asks for "
                                    f"{self.config.key}")
        if payload.get("teacher") != self.teacher_source:
            raise InvalidInputError(f"the run in {str(out)!r} was started with teacher {payload.get('teacher')!r}; "
                                    f"resume it with the same --teacher (got {self.teacher_source!r})")

    def build(self, num_classes: int) -> nn.Module:
        model = build_model(self.config, num_classes=num_classes, drop_path_rate=self.recipe.drop_path,
                            layer_scale_init_value=self.recipe.layer_scale_init)
        if self.teacher is not None:
            model.set_distilled_training(True)  # training forward returns (head, head_dist)
            self.teacher.to(next(model.parameters()).device)
        return model

    def step(self, model, images, targets, autocast):
        with autocast():
            output = model(images)
        if self.teacher is None:
            loss = soft_cross_entropy(output, targets)
            losses = {"loss": loss}
        else:
            head, head_dist = output
            with torch.no_grad(), autocast():
                teacher_logits = self.teacher(images).float()
            if self.recipe.distillation == "hard":
                distill = F.cross_entropy(head_dist.float(), teacher_logits.argmax(dim=-1))
            else:
                tau = self.recipe.distill_tau
                distill = F.kl_div(F.log_softmax(head_dist.float() / tau, dim=-1),
                                   F.log_softmax(teacher_logits / tau, dim=-1),
                                   reduction="batchmean", log_target=True) * tau * tau
            alpha = self.recipe.distill_alpha
            classify = soft_cross_entropy(head, targets)
            loss = (1 - alpha) * classify + alpha * distill
            losses = {"loss": loss, "classify": classify, "distill": distill}
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"the loss became {loss.item()}; lower base_lr or raise clip_grad in the recipe "
                                   f"and resume from the last checkpoint")
        loss.backward()
        return {name: value.item() for name, value in losses.items()}

    def evaluate(self, module: nn.Module, splits: Splits) -> dict[str, float]:
        if self.recipe.val_split == 0:
            return {}
        return {"val_top1": round(evaluate(module, splits.eval_loader("val")).top1, 3)}


def network_recipe(recipe: Recipe, config: SubnetConfig) -> Recipe:
    """The recipe for ``config``: its data at the config's resolution (same space family)."""
    if _base_space(recipe.space) != _base_space(config.space):
        raise InvalidInputError(f"the config is of space {config.space!r} but the recipe trains space "
                                f"{recipe.space!r}; expected a recipe for the config's space")
    return recipe.replace(space=config.space)


def train_network(config: SubnetConfig, recipe: Recipe, out: Path, teacher: Optional[Union[str, Path]] = None,
                  resume: bool = False, epochs: Optional[int] = None, data_dir: Optional[str] = None,
                  download: bool = False, progress: bool = True) -> TrainResult:
    """Train (or resume training) ``config``'s network from scratch into run folder ``out``."""
    recipe = network_recipe(recipe, config)
    teacher_model, teacher_source = None, None
    if teacher is not None:
        teacher_model, teacher_config = load_network(teacher, data_dir=data_dir)
        if teacher_config.resolution != config.resolution:
            raise InvalidInputError(f"teacher {str(teacher)!r} takes {teacher_config.resolution} px images; the "
                                    f"config {config.resolution} px: expected one resolution for both")
        teacher_model.requires_grad_(False).eval()
        teacher_source = str(Path(teacher).resolve())
        teacher_classes = teacher_model.num_classes
        classes = Splits(recipe, config.resolution, data_dir=data_dir, download=download).num_classes
        if teacher_classes != classes:
            raise InvalidInputError(f"teacher {str(teacher)!r} predicts {teacher_classes} classes; the recipe's "
                                    f"data set has {classes}")
    return run_training(lambda r: NetworkTask(r, config, teacher_model, teacher_source), recipe, out, resume,
                        epochs, data_dir, download, progress)


def _checkpoint_path(weights: Union[str, Path]) -> Path:
    weights = Path(weights)
    if not weights.exists():
        raise InvalidInputError(f"weights {str(weights)!r} do not exist; expected a run folder or its "
                                f"{CHECKPOINT}")
    return weights / CHECKPOINT if weights.is_dir() else weights


def load_network(weights: Union[str, Path], config: Optional[SubnetConfig] = None,
                 data_dir: Optional[str] = None) -> tuple[nn.Module, SubnetConfig]:
    """The standalone network (eval mode, CPU) and config of trained weights.

    ``weights`` is a run folder or its checkpoint: of a network (``nas train``), whose config
    ``config`` must be if given; or of a supernet, from which ``config`` (default: the
    largest) is extracted and its BatchNorm statistics recalibrated on the supernet's
    training data (:class:`supernet.evaluate.EvalProtocol`'s batches, as the search evaluates it).
    """
    path = _checkpoint_path(weights)
    payload = load_checkpoint(path, ("supernet", NETWORK))
    kind = payload["kind"]
    if config is not None and get_space(config.space).name != payload["space"]:
        raise InvalidInputError(f"the config is of space {config.space!r} but the weights {str(weights)!r} are of "
                                f"space {payload['space']!r}; expected weights trained on the config's space")
    if kind == NETWORK:
        stored = parse_config_text(payload["config"], source=f"{path} config")[0]
        if config is not None and config.key != stored.key:
            raise InvalidInputError(f"the weights {str(weights)!r} are of config {stored.key}, not {config.key}")
        model = build_model(stored, num_classes=payload["num_classes"])
        load_weights(model, payload, path)
        return model.eval(), stored
    supernet, recipe = supernet_from_checkpoint(payload, path)
    config = config or supernet.space.largest()
    protocol = EvalProtocol()
    calib = protocol.calibration(recipe, supernet.space.resolution, data_dir=data_dir)
    model = recalibrate_bn(supernet, config, calib, protocol.bn_batches)
    return model.eval(), config


__all__ = ["NetworkTask", "load_network", "network_recipe", "train_network"]
