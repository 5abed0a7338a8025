"""Training: the sandwich step and the resumable (optionally distributed) training loop.

One process: ``nas train-supernet --recipe R --out DIR``. Several processes or
machines: the same command under ``torchrun``; every rank trains the same sampled
configs each step (one seeded config sampler per rank, stepped in lockstep), data is
sharded by :class:`ResumableSampler`, rank 0 logs and checkpoints.

A run folder holds ``checkpoint.pt`` (atomic; written every
``checkpoint_every_steps`` steps and every epoch), ``recipe.yaml``,
``environment.json``, ``metrics.jsonl`` (one line per epoch) and ``steps.jsonl``
(one line per optimizer step).
"""
from __future__ import annotations

import json
import math
import os
import platform
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from search_spaces import InvalidInputError, NasError, SearchSpace, SubnetConfig, count_params, get_space
from search_spaces.io import atomic_write_text, check_output
from search_spaces.runtime import check_configured
from supernet.checkpoint import (
    CHECKPOINT,
    CHECKPOINT_FORMAT,
    load_checkpoint,
    restore_rng,
    rng_state,
    save_checkpoint,
)
from supernet.data import ResumableSampler, Splits
from supernet.evaluate import SubnetScorer
from supernet.protocol import EvalProtocol
from supernet.recipe import Recipe
from supernet.supernet import Supernet

import search_spaces.model  # noqa: E402,F401  (the project's first timm import: it repairs torchvision)
from timm.data import Mixup  # noqa: E402
from timm.data.mixup import mixup_target  # noqa: E402
from timm.optim import create_optimizer_v2  # noqa: E402
from timm.scheduler import create_scheduler_v2  # noqa: E402
from timm.utils import dispatch_clip_grad  # noqa: E402

class TrainingDiverged(NasError):
    """The loss became NaN or infinite."""


# -- the sandwich step ---------------------------------------------------------------------------

def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    return torch.sum(-target_probs * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


ALPHA_RANGE = (-1.0, 1.0)  # AlphaNet's alpha_min, alpha_max
ALPHA_CLIP = 5.0  # AlphaNet's clip of the importance weights (p / q) ** alpha


def alpha_divergence(logits: torch.Tensor, teacher_probs: torch.Tensor, alphas: tuple[float, float] = ALPHA_RANGE,
                     clip: float = ALPHA_CLIP) -> tuple[torch.Tensor, torch.Tensor]:
    """AlphaNet's adaptive alpha-divergence of the student (``logits``, q) from the teacher (p), per image the
    larger of D_alpha for the two alphas: ``(value, surrogate)``, both means over the batch. ``value`` is the
    divergence (for logs); ``surrogate`` has its gradient (``-sum q rho log q`` with q and rho held fixed,
    rho = f(r) - r f'(r) negated for f(r) = (r^alpha - 1) / (alpha (alpha - 1)), r = p / q, r^alpha clipped);
    alpha = 1 is KL(p || q), whose gradient is plain distillation's."""
    log_q = F.log_softmax(logits.float(), dim=-1)
    q = log_q.exp().detach()
    p = teacher_probs.float()
    log_ratio = p.clamp_min(1e-30).log() - log_q.detach()
    values, pulls = [], []  # per alpha: the divergence per image, and q x rho per class
    for alpha in alphas:
        if abs(alpha - 1.0) < 1e-3:  # KL(p || q); q x rho = p exactly (r itself may overflow)
            values.append(torch.sum(p * log_ratio, dim=-1))
            pulls.append(p)
        elif abs(alpha) < 1e-3:
            log_ratio_clipped = log_ratio.clamp(max=math.log(clip))
            values.append(torch.sum(-q * log_ratio_clipped, dim=-1))
            pulls.append(q * (log_ratio_clipped - 1.0))
        else:
            weight = torch.exp(alpha * log_ratio).clamp(max=clip)
            base = 1.0 / (alpha * (alpha - 1.0))
            values.append(torch.sum(q * (weight - 1.0), dim=-1) * base)
            pulls.append(q * (weight / alpha + base))
    first = values[0] > values[1]  # per image: the larger divergence
    value = torch.where(first, values[0], values[1])
    pull = torch.where(first.unsqueeze(-1), pulls[0], pulls[1])
    surrogate = -torch.sum(pull * log_q, dim=-1)
    return value.mean(), surrogate.mean()


def sandwich_configs(space: SearchSpace, rng: random.Random, num_random: int,
                     middle: str = "uniform") -> list[SubnetConfig]:
    """The sandwich rule: the largest, the smallest and ``num_random`` random configs, drawn with uniform
    choices (``uniform``) or one from each of ``num_random`` equal bands of log parameters between the
    smallest and the largest (``size-strata``: uniform choices bunch in the middle sizes)."""
    configs = [space.largest(), space.smallest()]
    if middle == "uniform":
        return configs + [space.sample(rng) for _ in range(num_random)]
    low, high = (math.log(count_params(c)) for c in configs[::-1])
    for band in range(num_random):
        lower, upper = (low + (high - low) * (band + f) / num_random for f in (0, 1))
        closest = None
        for _ in range(STRATA_TRIES):  # rejection: the first draw in the band, else the closest one
            config = space.sample(rng)
            size = math.log(count_params(config))
            if lower <= size <= upper:
                closest = (0.0, config)
                break
            distance = min(abs(size - lower), abs(size - upper))
            if closest is None or distance < closest[0]:
                closest = (distance, config)
        configs.append(closest[1])
    return configs


STRATA_TRIES = 200


def sandwich_step(model: nn.Module, configs: list[SubnetConfig], images: torch.Tensor, targets: torch.Tensor,
                  inplace_distill: bool, autocast: Callable, inplace_loss: str = "kl",
                  drop_path_scope: str = "all") -> dict[str, float]:
    """Forward and backward every config of one sandwich; gradients add up in ``.grad``.

    The largest config (first) learns from the (mixed, smoothed) targets; with
    in-place distillation the others learn from its detached soft predictions, by
    cross-entropy (``kl``) or AlphaNet's adaptive alpha-divergence. With
    ``drop_path_scope="largest"`` only the largest drops paths. Returns the loss of
    each role. The caller clips and steps the optimizer once.
    """
    losses: dict[str, float] = {}
    teacher = None
    supernet = getattr(model, "module", model)  # DistributedDataParallel's wrapped module
    try:
        for position, config in enumerate(configs):
            if drop_path_scope == "largest":
                supernet.drop_paths(position == 0)
            with autocast():
                logits = model(images, config)
            distilled = teacher is not None and inplace_distill
            if distilled and inplace_loss == "alpha-divergence":
                value, loss = alpha_divergence(logits, teacher)
            else:
                loss = soft_cross_entropy(logits, teacher if distilled else targets)
                value = loss
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"the loss of config {config.key} became {loss.item()}; lower base_lr "
                                       f"or raise clip_grad in the recipe and resume from the last checkpoint")
            loss.backward()
            if position == 0:
                teacher = logits.detach().float().softmax(dim=-1)
            role = "largest" if position == 0 else "smallest" if position == 1 else "random"
            losses[role] = losses.get(role, 0.0) + value.item() / (1 if role != "random" else len(configs) - 2)
    finally:
        if drop_path_scope == "largest":
            supernet.drop_paths(True)
    return losses


# -- distributed context -------------------------------------------------------------------------

@dataclass(frozen=True)
class Runtime:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def start_runtime(threads: Optional[int]) -> Runtime:
    """Join the torchrun process group if there is one (NCCL on GPU, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if device.type == "cpu":
        check_configured("supernet training")
    if threads:
        torch.set_num_threads(threads)
    elif world_size > 1 and device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Runtime(rank, world_size, device)


def stop_runtime(runtime: Runtime) -> None:
    if runtime.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def environment(runtime: Runtime) -> dict[str, Any]:
    import timm

    info = {"python": sys.version.split()[0], "torch": torch.__version__, "timm": timm.__version__,
            "platform": platform.platform(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "world_size": runtime.world_size, "device": str(runtime.device), "argv": sys.argv,
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    if runtime.device.type == "cuda":
        info["cuda_device"] = torch.cuda.get_device_name(runtime.device)
    return info


def _append_jsonl(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The complete lines of a log (none if it does not exist)."""
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # a line torn by a kill (or a blank one)
    return rows


def _truncate_jsonl(path: Path, keep: Callable[[dict], bool]) -> None:
    """Drop the log lines of work done after the checkpoint (it will be done again)."""
    if path.exists():
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in _read_jsonl(path) if keep(r)))


def logged_train_seconds(run: Path) -> float:
    """Seconds of training in run folder ``run``: its epochs' ``train_seconds`` in ``metrics.jsonl``, summed
    (an epoch resumed after an interruption counts from the resume only)."""
    return float(sum(row.get("train_seconds", 0.0) for row in _read_jsonl(run / "metrics.jsonl")))


# -- the training loop ---------------------------------------------------------------------------

@dataclass
class TrainResult:
    run_dir: Path
    epochs: int
    global_step: int
    metrics: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def _prepare_run_dir(out: Path, resume: bool, kind: str) -> Optional[dict[str, Any]]:
    checkpoint = out / CHECKPOINT
    if resume:
        if not checkpoint.exists():
            raise InvalidInputError(f"--resume: {str(out)!r} holds no checkpoint to resume")
        return load_checkpoint(checkpoint, kind)
    if checkpoint.exists():
        raise InvalidInputError(f"{str(out)!r} already holds a run; pass --resume to continue it or choose "
                                f"another --out")
    return None


class TrainingTask:
    """What a training run trains: the trainer's loop calls these; subclasses fill them in.

    :class:`SupernetTask` (sandwich rule) and :class:`supernet.retrain.NetworkTask` (one
    network from scratch) share everything else: data, DDP, optimiser and schedule,
    mixup, checkpoints with RNG and sampler state, resume, logs and the progress bar.
    """

    kind: str = ""
    find_unused_parameters = False  # DDP: parameters that may get no gradient in a step

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self.rng = random.Random(recipe.seed)  # identical on every rank; part of the checkpoint

    def check_checkpoint(self, payload: dict[str, Any], out: Path) -> None:
        """Refuse to resume a checkpoint of something else."""

    def identity(self) -> dict[str, Any]:
        """Checkpoint fields naming what is trained (checked on resume, read by loaders)."""
        return {}

    def build(self, num_classes: int) -> nn.Module:
        raise NotImplementedError

    def step(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
             autocast: Callable) -> dict[str, float]:
        """Forward and backward one batch; returns the losses to log (first: the headline)."""
        raise NotImplementedError

    def evaluate(self, module: nn.Module, splits: Splits) -> dict[str, float]:
        """Metrics at the end of an epoch (main process only)."""
        return {}


class SupernetTask(TrainingTask):
    kind = "supernet"
    find_unused_parameters = True  # dropped blocks and MHSA get no gradient in a pass

    def __init__(self, recipe: Recipe) -> None:
        super().__init__(recipe)
        self.space = get_space(recipe.space)

    def check_checkpoint(self, payload: dict[str, Any], out: Path) -> None:
        if payload["space"] != self.space.name:
            raise InvalidInputError(f"the checkpoint in {str(out)!r} is a supernet of space {payload['space']!r}; "
                                    f"the recipe asks for {self.recipe.space!r}")

    def identity(self) -> dict[str, Any]:
        return {"space": self.space.name}

    def build(self, num_classes: int) -> nn.Module:
        return Supernet(self.space, num_classes=num_classes, drop_path_rate=self.recipe.drop_path,
                        layer_scale_init=self.recipe.layer_scale_init)

    def step(self, model, images, targets, autocast):
        recipe = self.recipe
        configs = sandwich_configs(self.space, self.rng, recipe.num_random, recipe.middle_sampling)
        return sandwich_step(model, configs, images, targets, recipe.inplace_distill, autocast, recipe.inplace_loss,
                             recipe.drop_path_scope)

    def evaluate(self, module: nn.Module, splits: Splits) -> dict[str, float]:
        """Top-1 of the largest and smallest configs on the held-out split, after recalibration."""
        if self.recipe.val_split == 0:
            return {}
        cap = self.recipe.eval_images
        protocol = EvalProtocol(images=min(cap, self.recipe.val_split) if cap else None)  # a cap, not a slice
        scorer = SubnetScorer.from_protocol(module, self.recipe, protocol, data_dir=splits.data_dir)
        return {f"val_top1_{name}": round(scorer(config).top1, 3)
                for name, config in (("largest", self.space.largest()), ("smallest", self.space.smallest()))}


def train_supernet(recipe: Recipe, out: Path, resume: bool = False, epochs: Optional[int] = None,
                   data_dir: Optional[str] = None, download: bool = False, progress: bool = True) -> TrainResult:
    """Train (or resume training) the supernet of ``recipe.space`` into run folder ``out``.

    On resume the recipe stored in the checkpoint is used (``epochs`` may extend it).
    """
    return run_training(SupernetTask, recipe, out, resume, epochs, data_dir, download, progress)


def run_training(task_factory: Callable[[Recipe], TrainingTask], recipe: Recipe, out: Path, resume: bool = False,
                 epochs: Optional[int] = None, data_dir: Optional[str] = None, download: bool = False,
                 progress: bool = True) -> TrainResult:
    """The resumable (optionally distributed) training loop around one task."""
    out = check_output(out, "--out", folder=True)
    runtime = start_runtime(recipe.threads)
    try:
        return _train(task_factory, recipe, out, resume, epochs, data_dir, download, progress, runtime)
    finally:
        stop_runtime(runtime)


def _train(task_factory: Callable[[Recipe], TrainingTask], recipe: Recipe, out: Path, resume: bool,
           epochs: Optional[int], data_dir: Optional[str], download: bool, progress: bool,
           runtime: Runtime) -> TrainResult:
    started = time.perf_counter()
    task = task_factory(recipe)
    checkpoint = _prepare_run_dir(out, resume, task.kind)
    if checkpoint is not None:
        task.check_checkpoint(checkpoint, out)
        recipe = Recipe.from_dict(checkpoint["recipe"], source=f"{out / CHECKPOINT} recipe")
    if epochs is not None:
        recipe = recipe.replace(epochs=epochs)
    task.recipe = recipe
    torch.manual_seed(recipe.seed + runtime.rank)
    random.seed(recipe.seed + runtime.rank)
    np.random.seed(recipe.seed + runtime.rank)
    loop = TrainingLoop(task, out, runtime, data_dir, download)
    if checkpoint is not None:
        loop.restore(checkpoint)
    if runtime.is_main:
        _write_run_files(out, recipe, runtime, loop)
    while loop.epoch < recipe.epochs:
        row = loop.train_epoch(progress and runtime.is_main)
        if runtime.is_main:
            row.update(task.evaluate(loop.module, loop.splits))
            loop.metrics.append(row)
            _append_jsonl(out / "metrics.jsonl", row)
            print(_format_epoch(row), flush=True)
        loop.epoch += 1
        loop.batch_in_epoch = 0
        loop.save(finished=loop.epoch >= recipe.epochs)
    return TrainResult(out, recipe.epochs, loop.global_step, loop.metrics, time.perf_counter() - started)


def _write_run_files(out: Path, recipe: Recipe, runtime: Runtime, loop: "TrainingLoop") -> None:
    """The run folder's recipe and environment; the logs cut back to the checkpoint's position."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "recipe.yaml", recipe.to_yaml())
    atomic_write_text(out / "environment.json", json.dumps(environment(runtime), indent=2) + "\n")
    _truncate_jsonl(out / "steps.jsonl", lambda r: r["global_step"] <= loop.global_step)
    _truncate_jsonl(out / "metrics.jsonl", lambda r: r["epoch"] < loop.epoch)


class TrainingLoop:
    """One run's training state: data, model (DDP-wrapped on several ranks), optimiser, schedule,
    mixup and position (epoch, batch, step, metrics), saved to and restored from its checkpoint."""

    def __init__(self, task: TrainingTask, out: Path, runtime: Runtime, data_dir: Optional[str],
                 download: bool) -> None:
        recipe = task.recipe
        self.task, self.recipe, self.out, self.runtime = task, recipe, out, runtime
        self.splits = Splits(recipe, get_space(recipe.space).resolution, data_dir=data_dir, download=download)
        train_set = self.splits.dataset("train")
        self.sampler = ResumableSampler(len(train_set), recipe.seed, recipe.batch_size, runtime.rank,
                                        runtime.world_size)
        self.loader = torch.utils.data.DataLoader(train_set, batch_size=recipe.batch_size, sampler=self.sampler,
                                                  num_workers=recipe.num_workers, drop_last=True,
                                                  pin_memory=runtime.device.type == "cuda",
                                                  persistent_workers=recipe.num_workers > 0)
        self.num_classes = self.splits.num_classes
        self.memory_format = torch.channels_last if recipe.channels_last else torch.contiguous_format
        self.module = task.build(self.num_classes).to(runtime.device, memory_format=self.memory_format)
        self.model: nn.Module = self.module
        if runtime.world_size > 1:
            self.model = nn.parallel.DistributedDataParallel(
                self.module, device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None,
                find_unused_parameters=task.find_unused_parameters)
        self.optimizer = create_optimizer_v2(self.module, opt=recipe.opt, lr=recipe.lr(runtime.world_size),
                                             weight_decay=recipe.weight_decay)
        self.scheduler, _ = create_scheduler_v2(self.optimizer, sched="cosine", num_epochs=recipe.epochs,
                                                warmup_epochs=recipe.warmup_epochs, warmup_lr=recipe.warmup_lr,
                                                min_lr=recipe.min_lr, step_on_epochs=False,
                                                updates_per_epoch=self.sampler.batches_per_epoch)
        self.mixup = None
        if recipe.mixup > 0 or recipe.cutmix > 0:
            self.mixup = Mixup(mixup_alpha=recipe.mixup, cutmix_alpha=recipe.cutmix,
                               label_smoothing=recipe.smoothing, num_classes=self.num_classes)
        self.amp = recipe.amp and runtime.device.type == "cuda"
        self.epoch, self.batch_in_epoch, self.global_step = 0, 0, 0
        self.metrics: list[dict[str, Any]] = []

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp)

    def restore(self, checkpoint: dict[str, Any]) -> None:
        self.module.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.epoch, self.batch_in_epoch = checkpoint["epoch"], checkpoint["batch"]
        self.global_step, self.metrics = checkpoint["global_step"], checkpoint["metrics"]
        restore_rng(checkpoint["rng"][min(self.runtime.rank, len(checkpoint["rng"]) - 1)], self.task.rng)

    def save(self, finished: bool = False) -> None:
        """The checkpoint (rank 0 writes it, with every rank's random state)."""
        states = [None] * self.runtime.world_size
        local = rng_state(self.task.rng)
        if self.runtime.world_size > 1:
            dist.all_gather_object(states, local)
        else:
            states = [local]
        if self.runtime.is_main:
            save_checkpoint(self.out / CHECKPOINT, {
                "format": CHECKPOINT_FORMAT, "kind": self.task.kind, **self.task.identity(),
                "num_classes": self.num_classes, "recipe": self.recipe.to_dict(), "model": self.module.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "epoch": self.epoch, "batch": self.batch_in_epoch, "global_step": self.global_step,
                "rng": states, "metrics": self.metrics, "finished": finished})
        self.runtime.barrier()

    def _targets(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mixup is not None:
            return self.mixup(images, labels)
        return images, mixup_target(labels, self.num_classes, smoothing=self.recipe.smoothing)

    def train_epoch(self, progress: bool) -> dict[str, Any]:
        """The rest of the current epoch, checkpointing every ``checkpoint_every_steps``; its log row."""
        recipe, runtime, updates = self.recipe, self.runtime, self.sampler.batches_per_epoch
        self.sampler.set_epoch(self.epoch, start_batch=self.batch_in_epoch)
        self.module.train()
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=updates, initial=self.batch_in_epoch, desc=f"epoch {self.epoch + 1}/{recipe.epochs}",
                       unit="step", dynamic_ncols=True, leave=False)
        sums: dict[str, float] = {}
        epoch_started = time.perf_counter()
        for images, labels, indices in self.loader:
            images = images.to(runtime.device, non_blocking=True, memory_format=self.memory_format)
            labels = labels.to(runtime.device)
            images, targets = self._targets(images, labels)
            self.optimizer.zero_grad(set_to_none=True)
            losses = self.task.step(self.model, images, targets, self.autocast)
            if recipe.clip_grad:
                dispatch_clip_grad(self.module.parameters(), recipe.clip_grad, mode=recipe.clip_mode)
            self.optimizer.step()
            self.global_step += 1
            self.batch_in_epoch += 1
            self.scheduler.step_update(num_updates=self.global_step)
            for role, value in losses.items():
                sums[role] = sums.get(role, 0.0) + value
            if runtime.is_main:
                _append_jsonl(self.out / "steps.jsonl", {
                    "global_step": self.global_step, "epoch": self.epoch, "batch": self.batch_in_epoch,
                    "first_index": int(indices[0]), "lr": self.optimizer.param_groups[0]["lr"], **losses})
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{next(iter(losses.values())):.3f}")
            if self.global_step % recipe.checkpoint_every_steps == 0 and self.batch_in_epoch < updates:
                self.save()
        if bar is not None:
            bar.close()
        steps_done = max(1, self.batch_in_epoch)
        return {"epoch": self.epoch, "global_step": self.global_step, "lr": self.optimizer.param_groups[0]["lr"],
                **{role if role == "loss" else f"loss_{role}": value / steps_done for role, value in sums.items()},
                "train_seconds": round(time.perf_counter() - epoch_started, 2)}


def _format_epoch(row: dict[str, Any]) -> str:
    parts = [f"epoch {row['epoch'] + 1}"]
    parts += [f"{k} {v:.4g}" for k, v in row.items() if k not in ("epoch", "global_step")]
    return "  ".join(parts)


__all__ = ["SupernetTask", "TrainResult", "TrainingDiverged", "TrainingLoop", "TrainingTask", "run_training",
           "sandwich_step", "train_supernet"]
