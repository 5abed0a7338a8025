"""Checkpoints: writing, loading (safely) and the supernet of a run folder.

A checkpoint is a ``torch.save`` file of tensors and plain Python values only, so it loads with
``torch.load(weights_only=True)`` and loading one runs no code (docs/architecture.md, Conventions). It
holds ``format`` (:data:`CHECKPOINT_FORMAT`), ``kind`` (``supernet`` or ``network``), the space,
the number of classes, the recipe, the weights and, for resuming, the optimiser, schedule,
position and every random generator's state.
"""
from __future__ import annotations

import pickle
import random
import zipfile
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import nn

from search_spaces import InvalidInputError, get_space
from search_spaces.io import atomic_path
from supernet.recipe import Recipe
from supernet.supernet import Supernet

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = 2  # 2: loadable with torch.load(weights_only=True)


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path, kind: Union[str, tuple[str, ...]] = "supernet") -> dict[str, Any]:
    """A checkpoint of this project of kind ``kind`` (or of one of several kinds)."""
    if not path.is_file():
        raise InvalidInputError(f"no checkpoint at {str(path)!r}")
    try:  # weights_only: a checkpoint holds tensors and plain Python values, so loading one runs no code
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        # a torch file (a zip) that weights_only refused holds other objects; anything else is damaged
        if isinstance(error, pickle.UnpicklingError) and zipfile.is_zipfile(path):
            raise InvalidInputError(f"checkpoint {str(path)!r} holds objects other than tensors and plain values, "
                                    f"so it was not loaded (loading it could run code); expected a checkpoint of "
                                    f"this project, format {CHECKPOINT_FORMAT} (checkpoints of earlier versions, "
                                    f"format 1, must be trained again)") from None
        raise InvalidInputError(f"checkpoint {str(path)!r} is corrupted or not a checkpoint of this project "
                                f"({type(error).__name__}: {str(error)[:120]})") from None
    kinds = (kind,) if isinstance(kind, str) else kind
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT or payload.get("kind") not in kinds:
        raise InvalidInputError(f"{str(path)!r} is not a {' or '.join(kinds)} checkpoint of this project (format "
                                f"{CHECKPOINT_FORMAT})")
    fields = {"space": str, "num_classes": int, "recipe": dict, "model": dict} | (
        {"config": str} if payload["kind"] == "network" else {})
    for name, expected in fields.items():
        if not isinstance(payload.get(name), expected) or isinstance(payload.get(name), bool):
            raise InvalidInputError(f"checkpoint {str(path)!r}: {name} is {type(payload.get(name)).__name__}; "
                                    f"expected a {expected.__name__} (a checkpoint written by this project)")
    get_space(payload["space"])
    return payload


def load_weights(module: nn.Module, payload: dict[str, Any], path: Path) -> None:
    """A checkpoint's weights into ``module``; weights of another shape (another space or config) are refused."""
    try:
        module.load_state_dict(payload["model"])
    except (RuntimeError, TypeError, AttributeError) as error:
        raise InvalidInputError(f"checkpoint {str(path)!r}: its weights do not fit a network of space "
                                f"{payload['space']!r} ({str(error).splitlines()[0][:160]}); expected the "
                                "checkpoint that training wrote") from None


def rng_state(sampler_rng: random.Random) -> dict[str, Any]:
    """Every random generator a run draws from (plain values and tensors: ``weights_only`` loads them)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [kind, keys.tolist(), position, has_gauss, cached],
             "torch": torch.get_rng_state(), "configs": sampler_rng.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], sampler_rng: random.Random) -> None:
    random.setstate(state["python"])
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    sampler_rng.setstate(state["configs"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def scoring_device() -> torch.device:
    """Where the search scores configs: the GPU when torch sees one, else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def load_supernet(run_dir: Path, device: Optional[torch.device] = None) -> tuple[Supernet, Recipe]:
    """The supernet of a run folder (``RUN_DIR/checkpoint.pt`` or the checkpoint file itself), on ``device``
    (default: the CPU)."""
    run_dir = Path(run_dir)
    path = run_dir / CHECKPOINT if run_dir.is_dir() else run_dir
    if not run_dir.exists():
        raise InvalidInputError(f"supernet run {str(run_dir)!r} does not exist")
    supernet, recipe = supernet_from_checkpoint(load_checkpoint(path), path)
    return supernet.to(device or torch.device("cpu")).eval(), recipe


def supernet_from_checkpoint(payload: dict[str, Any], path: Path) -> tuple[Supernet, Recipe]:
    """The supernet (eval mode, CPU) and recipe of a loaded supernet checkpoint."""
    recipe = Recipe.from_dict(payload["recipe"], source=f"{path} recipe")
    supernet = Supernet(payload["space"], num_classes=payload["num_classes"], drop_path_rate=recipe.drop_path)
    load_weights(supernet, payload, path)
    return supernet.eval(), recipe
