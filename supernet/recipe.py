"""Training recipes: every setting of a supernet (or subnet) training run, from one YAML file.

Unknown keys and wrong types are refused with a message naming the key, the value
and what was expected. The recipes shipped with the project live in
``supernet/recipes/`` (package data, so a wheel install has them).
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from search_spaces import InvalidInputError, get_space
from search_spaces.config import dump_yaml

DATASETS = ("fashion-mnist", "cifar10", "cifar100", "imagenet-folder")
DISTILLATIONS = ("hard", "soft")
INPLACE_LOSSES = ("kl", "alpha-divergence")  # what the sandwich's other subnets learn from the largest by
DROP_PATH_SCOPES = ("all", "largest")  # which subnets of a sandwich drop paths (BigNAS, AlphaNet: the largest)
MIDDLE_SAMPLINGS = ("uniform", "size-strata")  # how the sandwich's num_random subnets are drawn
# settings that only a supernet's sandwich reads: a network trained alone is the same whatever they are, so
# scratch_yaml() (what from-scratch results are keyed by) leaves them out
SANDWICH_ONLY = ("inplace_loss", "drop_path_scope", "middle_sampling")
# how a run executes, not what it learns (tensor layout changes float rounding only): left out of the
# from-scratch digest and of nas quickstart's check that a stored supernet is of the recipe asked for
LAYOUT_ONLY = ("channels_last",)
RECIPES_DIR = Path(__file__).resolve().parent / "recipes"  # package data: shipped in the wheel


@dataclass(frozen=True)
class Recipe:
    """Settings of a training run (docs/architecture.md §6 for the paper's values)."""

    # what is trained, on what
    space: str = "efficientformerv2-tiny"
    dataset: str = "fashion-mnist"
    data_dir: Optional[str] = None
    val_split: int = 5000  # training images held out (seeded) for the search's validation split
    split_seed: int = 0
    max_train_images: Optional[int] = None  # use only the first N training images (quick runs, tests)
    num_workers: int = 0
    # schedule and optimiser
    epochs: int = 300
    batch_size: int = 128  # per process
    base_lr: float = 1e-3  # scaled by global batch / 1024
    min_lr: float = 1e-5
    warmup_epochs: float = 5
    warmup_lr: float = 1e-6
    weight_decay: float = 0.025
    opt: str = "adamw"
    clip_grad: Optional[float] = 0.01
    clip_mode: str = "norm"
    # augmentation and regularisation (timm's pieces)
    crop_scale: tuple[float, float] = (0.08, 1.0)
    hflip: float = 0.5
    auto_augment: Optional[str] = "rand-m9-mstd0.5"
    color_jitter: float = 0.4
    reprob: float = 0.25
    mixup: float = 0.8
    cutmix: float = 1.0
    smoothing: float = 0.1
    drop_path: float = 0.0
    layer_scale_init: float = 1e-5  # timm's and the paper's initial LayerScale
    interpolation: str = "bicubic"
    crop_pct: float = 0.95
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    # sandwich rule
    num_random: int = 2  # random subnets per step besides the largest and the smallest
    inplace_distill: bool = True
    inplace_loss: str = "kl"  # kl: cross-entropy to the largest's predictions; alpha-divergence: AlphaNet's
    drop_path_scope: str = "all"  # largest: drop_path on the largest subnet only, the others none
    middle_sampling: str = "uniform"  # uniform choices, or size-strata: one random subnet per band of log params
    # knowledge distillation of a network trained from scratch (nas train --teacher)
    distillation: str = "hard"  # hard: the teacher's argmax (DeiT, the paper); soft: its tempered softmax
    distill_alpha: float = 0.5  # weight of the distillation head's loss
    distill_tau: float = 1.0  # temperature of soft distillation
    # evaluation, checkpoints, runtime
    eval_images: Optional[int] = None  # the training log's evaluation: the first N held-out images (None: all)
    checkpoint_every_steps: int = 200
    seed: int = 0
    amp: bool = True  # bfloat16 autocast on CUDA (ignored on CPU)
    threads: Optional[int] = None  # torch CPU threads per process (None: torch's default)
    channels_last: bool = False  # train in channels-last memory format (measured on CPU only: RESULTS-supernet)

    def __post_init__(self) -> None:
        get_space(self.space)
        if self.dataset not in DATASETS:
            raise InvalidInputError(f"recipe: dataset {self.dataset!r} is unknown; expected one of "
                                    f"{', '.join(DATASETS)}")
        for name in ("epochs", "batch_size", "checkpoint_every_steps"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"recipe: {name} = {getattr(self, name)!r}; expected a positive integer")
        for name in ("val_split", "num_workers", "num_random"):
            if getattr(self, name) < 0:
                raise InvalidInputError(f"recipe: {name} = {getattr(self, name)!r}; expected 0 or more")
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise InvalidInputError(f"recipe: crop_scale = {list(self.crop_scale)}; expected 0 < low <= high <= 1")
        for name, choices in (("inplace_loss", INPLACE_LOSSES), ("drop_path_scope", DROP_PATH_SCOPES),
                              ("middle_sampling", MIDDLE_SAMPLINGS)):
            if getattr(self, name) not in choices:
                raise InvalidInputError(f"recipe: {name} = {getattr(self, name)!r}; expected one of "
                                        f"{', '.join(choices)}")
        if self.distillation not in DISTILLATIONS:
            raise InvalidInputError(f"recipe: distillation = {self.distillation!r}; expected one of "
                                    f"{', '.join(DISTILLATIONS)}")
        if not 0 <= self.distill_alpha <= 1 or self.distill_tau <= 0:
            raise InvalidInputError(f"recipe: distill_alpha = {self.distill_alpha}, distill_tau = "
                                    f"{self.distill_tau}; expected 0 <= distill_alpha <= 1 and distill_tau > 0")
        if self.base_lr <= 0:
            raise InvalidInputError(f"recipe: base_lr = {self.base_lr}; expected a positive learning rate")
        for name in ("max_train_images", "eval_images", "threads"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InvalidInputError(f"recipe: {name} = {getattr(self, name)!r}; expected a positive integer "
                                        f"or null (null: {_NULL_MEANS[name]})")
        for name in ("min_lr", "warmup_epochs", "warmup_lr", "weight_decay", "color_jitter", "mixup", "cutmix",
                     "layer_scale_init"):
            _check_range(name, getattr(self, name), low=0.0)
        for name in ("hflip", "reprob"):
            _check_range(name, getattr(self, name), low=0.0, high=1.0)
        for name in ("smoothing", "drop_path"):
            _check_range(name, getattr(self, name), low=0.0, high=1.0, high_open=True)
        _check_range("crop_pct", self.crop_pct, low=0.0, high=1.0, low_open=True)
        if self.clip_grad is not None:
            _check_range("clip_grad", self.clip_grad, low=0.0, low_open=True)
        if self.clip_mode not in CLIP_MODES:
            raise InvalidInputError(f"recipe: clip_mode = {self.clip_mode!r}; expected one of {', '.join(CLIP_MODES)} "
                                    "(timm's dispatch_clip_grad)")
        if not all(math.isfinite(v) for v in self.mean) or not all(math.isfinite(v) and v > 0 for v in self.std):
            raise InvalidInputError(f"recipe: mean = {list(self.mean)}, std = {list(self.std)}; expected finite "
                                    "numbers and a positive std per channel")
        _check_timm_choices(self)

    def lr(self, world_size: int = 1) -> float:
        """The peak learning rate: base_lr x global batch / 1024 (the paper's scaling)."""
        return self.base_lr * self.batch_size * world_size / 1024

    def replace(self, **changes: Any) -> "Recipe":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    def to_yaml(self) -> str:
        return dump_yaml(self.to_dict())

    def scratch_yaml(self) -> str:
        """The settings a network trained alone depends on, as YAML: the recipe without ``SANDWICH_ONLY``
        and ``LAYOUT_ONLY`` (from-scratch results and the truth bank are keyed by its digest)."""
        return dump_yaml({k: v for k, v in self.to_dict().items() if k not in SANDWICH_ONLY + LAYOUT_ONLY})

    @classmethod
    def from_dict(cls, data: Any, source: str = "recipe") -> "Recipe":
        if not isinstance(data, dict):
            raise InvalidInputError(f"{source}: expected a mapping of settings, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)}
        # recipes of earlier versions (checkpoints keep theirs): BatchNorm batches are now the evaluation
        # protocol's (supernet.evaluate.EvalProtocol), one value for every evaluation
        data = {k: v for k, v in data.items() if k not in LEGACY_KEYS}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidInputError(f"{source}: unknown key(s) {', '.join(map(repr, unknown))}; expected keys "
                                    f"among {', '.join(sorted(known))}")
        values = {name: _coerce(value, hints[name], f"{source}: {name}") for name, value in data.items()}
        try:
            return cls(**values)
        except InvalidInputError as error:
            raise InvalidInputError(str(error).replace("recipe:", f"{source}:", 1)) from None


LEGACY_KEYS = ("bn_batches",)
CLIP_MODES = ("norm", "value", "agc")  # timm.utils.dispatch_clip_grad's modes
_NULL_MEANS = {"max_train_images": "every training image", "eval_images": "every held-out image",
               "threads": "torch's default"}


def _check_range(name: str, value: float, low: float, high: float = math.inf, low_open: bool = False,
                 high_open: bool = False) -> None:
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if not math.isfinite(value) or below or above:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open or high == math.inf else ']'}"
        raise InvalidInputError(f"recipe: {name} = {value!r}; expected a number in {interval}")


def _check_timm_choices(recipe: Recipe) -> None:
    """The optimiser and interpolation are timm's: check them against timm's own lists."""
    import search_spaces.model  # noqa: F401  (the project's first timm import: it repairs torchvision)
    from timm.data.transforms import str_to_interp_mode
    from timm.optim import list_optimizers

    optimizers = list_optimizers()
    name = recipe.opt.lower()
    if name.split("_")[-1] not in optimizers or (name.count("_") and not name.startswith("lookahead_")):
        raise InvalidInputError(f"recipe: opt = {recipe.opt!r}; expected one of timm's optimisers "
                                f"({', '.join(optimizers[:12])}, ...: timm.optim.list_optimizers()), "
                                "optionally as lookahead_NAME")
    if recipe.interpolation != "random":
        try:
            str_to_interp_mode(recipe.interpolation)
        except KeyError:
            raise InvalidInputError(f"recipe: interpolation = {recipe.interpolation!r}; expected one of timm's: "
                                    "bilinear, bicubic, nearest, box, hamming, lanczos, random") from None


def _coerce(value: Any, hint: Any, what: str) -> Any:
    """``value`` checked against (and converted to) the annotated type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:  # Optional[X]
        if value is None:
            return None
        return _coerce(value, next(a for a in args if a is not type(None)), what)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise InvalidInputError(f"{what} = {value!r}; expected a list of {len(args)} numbers")
        return tuple(_coerce(v, a, what) for v, a in zip(value, args))
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInputError(f"{what} = {value!r}; expected a number")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInputError(f"{what} = {value!r}; expected an integer")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise InvalidInputError(f"{what} = {value!r}; expected true or false")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise InvalidInputError(f"{what} = {value!r}; expected a string")
        return value
    raise TypeError(f"unsupported recipe field type {hint!r}")


def load_recipe(path: Union[str, Path]) -> Recipe:
    """A recipe from a YAML file; a bare name (``fashion-mnist-tiny``) means a shipped recipe."""
    path = Path(path)
    if not path.is_file() and not path.suffix and (RECIPES_DIR / f"{path}.yaml").is_file():
        path = RECIPES_DIR / f"{path}.yaml"
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")))
        raise InvalidInputError(f"recipe {str(path)!r} does not exist (shipped recipes: {shipped})")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise InvalidInputError(f"{path}: malformed YAML: {error}".replace("\n", " ")) from None
    except UnicodeDecodeError:
        raise InvalidInputError(f"recipe {str(path)!r} is not a text file; expected a YAML recipe") from None
    return Recipe.from_dict(data or {}, source=str(path))
