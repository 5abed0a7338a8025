"""Data: Fashion-MNIST, CIFAR-10/100 and ImageNet-style folders, with a seeded held-out split.

Splits:

* ``train``: the training set minus the held-out images (training transform);
* ``val``: ``recipe.val_split`` training images held out with ``recipe.split_seed``,
  the search's validation set (evaluation transform), so test sets stay unseen;
* ``calib``: the ``train`` images with the evaluation transform (BatchNorm recalibration);
* ``test``: the official test set (for an ImageNet folder, its ``val`` folder).

Nothing is downloaded unless asked: Fashion-MNIST comes from ``data_dir`` or Debian's
``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``); ``download=True``
fetches it (and CIFAR) through torchvision into ``data_dir``.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from search_spaces import InvalidInputError
from supernet.recipe import Recipe

import search_spaces.model  # noqa: E402,F401  (the project's first timm import: it repairs torchvision)
from timm.data import create_transform  # noqa: E402

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SPLITS = ("train", "val", "calib", "test")
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


class ArrayImages(Dataset):
    """Images held as a uint8 array (N, H, W) or (N, H, W, 3), served as RGB PIL images."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, num_classes: int) -> None:
        self.images, self.labels, self.num_classes = images, labels.astype(np.int64), num_classes

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        image = Image.fromarray(self.images[index])
        return image.convert("RGB"), int(self.labels[index])  # grey images fed as 3 channels


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion_mnist_dir(data_dir: Optional[str], download: bool = False) -> Path:
    """The folder holding Fashion-MNIST's four gzipped IDX files."""
    # an explicit data_dir is the only place looked at: silently using another copy would surprise
    candidates = [Path(data_dir), Path(data_dir) / "FashionMNIST" / "raw"] if data_dir else [DEBIAN_FASHION_MNIST]
    for folder in candidates:
        if all((folder / name).is_file() for pair in _FASHION_FILES.values() for name in pair):
            return folder
    if download:
        if not data_dir:
            raise InvalidInputError("--download needs --data-dir: the folder to download Fashion-MNIST into")
        from torchvision.datasets import FashionMNIST

        FashionMNIST(data_dir, train=True, download=True)
        FashionMNIST(data_dir, train=False, download=True)
        return Path(data_dir) / "FashionMNIST" / "raw"
    looked = ", ".join(str(c) for c in candidates)
    raise InvalidInputError(
        f"Fashion-MNIST not found (looked in {looked}). Install Debian's package "
        f"('apt-get install dataset-fashion-mnist'), pass --data-dir DIR holding its four .gz files, "
        f"or pass --data-dir DIR --download to download it")


def _base_dataset(recipe: Recipe, train: bool, data_dir: Optional[str], download: bool) -> Dataset:
    """The raw training or test set (no transform) with ``num_classes``."""
    if recipe.dataset == "fashion-mnist":
        folder = fashion_mnist_dir(data_dir, download)
        images, labels = (_read_idx(folder / name) for name in _FASHION_FILES["train" if train else "test"])
        return ArrayImages(images, labels, 10)
    if recipe.dataset in ("cifar10", "cifar100"):
        from torchvision import datasets

        cls = datasets.CIFAR10 if recipe.dataset == "cifar10" else datasets.CIFAR100
        if not data_dir:
            raise InvalidInputError(f"{recipe.dataset} needs --data-dir: the folder holding a local copy "
                                    f"(as torchvision lays it out), or add --download")
        try:
            source = cls(data_dir, train=train, download=download)
        except RuntimeError as error:
            raise InvalidInputError(f"{recipe.dataset} not found in {data_dir!r} ({error}); pass --download "
                                    f"to download it there") from None
        return ArrayImages(source.data, np.array(source.targets), 10 if recipe.dataset == "cifar10" else 100)
    # an ImageNet-style folder: DIR/train/<class>/*.jpg and DIR/val/<class>/*.jpg
    from timm.data import create_dataset

    if not data_dir:
        raise InvalidInputError("imagenet-folder needs --data-dir DIR with DIR/train/<class>/ and "
                                "DIR/val/<class>/ image folders")
    root = Path(data_dir) / ("train" if train else "val")
    if not root.is_dir():
        raise InvalidInputError(f"image folder {str(root)!r} does not exist; expected DIR/train/<class>/ "
                                f"and DIR/val/<class>/")
    dataset = create_dataset("", root=str(root), is_training=train)
    dataset.num_classes = len(dataset.reader.class_to_idx)
    return dataset


class _Transformed(Dataset):
    """A view of ``base`` at ``indices`` with a transform; items are (image, label, index)."""

    def __init__(self, base: Dataset, indices: Sequence[int], transform) -> None:
        self.base, self.indices, self.transform = base, list(indices), transform
        self.num_classes = base.num_classes

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int, int]:
        index = self.indices[position]
        image, label = self.base[index]
        return self.transform(image), int(label), index


def transforms(recipe: Recipe, resolution: int) -> tuple:
    """(training transform, evaluation transform) from timm's ``create_transform``."""
    train = create_transform(
        resolution, is_training=True, scale=recipe.crop_scale, hflip=recipe.hflip,
        color_jitter=recipe.color_jitter, auto_augment=recipe.auto_augment, interpolation=recipe.interpolation,
        mean=recipe.mean, std=recipe.std, re_prob=recipe.reprob, re_mode="pixel")
    evaluation = create_transform(resolution, is_training=False, interpolation=recipe.interpolation,
                                  crop_pct=recipe.crop_pct, mean=recipe.mean, std=recipe.std)
    return train, evaluation


@dataclass
class Splits:
    """The datasets of a run, built lazily per split."""

    recipe: Recipe
    resolution: int
    data_dir: Optional[str] = None
    download: bool = False

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir or self.recipe.data_dir
        self._cache: dict[bool, Dataset] = {}
        self.train_transform, self.eval_transform = transforms(self.recipe, self.resolution)

    def _base(self, train: bool) -> Dataset:
        if train not in self._cache:
            self._cache[train] = _base_dataset(self.recipe, train, self.data_dir, self.download)
        return self._cache[train]

    @property
    def num_classes(self) -> int:
        return self._base(True).num_classes

    def held_out(self) -> tuple[list[int], list[int]]:
        """(train indices, val indices) of the seeded held-out split."""
        n = len(self._base(True))
        if self.recipe.val_split >= n:
            raise InvalidInputError(f"val_split = {self.recipe.val_split} holds out every training image "
                                    f"({n}); expected fewer")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.recipe.split_seed)).tolist()
        val, train = order[:self.recipe.val_split], sorted(order[self.recipe.val_split:])
        if self.recipe.max_train_images:
            train = train[:self.recipe.max_train_images]
        return train, sorted(val)

    def dataset(self, split: str) -> Dataset:
        if split not in SPLITS:
            raise InvalidInputError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        if split == "test":
            base = self._base(False)
            indices = range(len(base))
        else:
            base = self._base(True)
            train, val = self.held_out()
            indices = val if split == "val" else train
        if self.recipe.eval_images and split in ("val", "test"):
            indices = list(indices)[:self.recipe.eval_images]
        transform = self.train_transform if split == "train" else self.eval_transform
        return _Transformed(base, indices, transform)

    def eval_loader(self, split: str, batch_size: Optional[int] = None, shuffle_seed: Optional[int] = None
                    ) -> DataLoader:
        """An evaluation-transform loader; ``shuffle_seed`` draws a fixed random order (for BN batches)."""
        dataset = self.dataset(split)
        sampler = None
        if shuffle_seed is not None:
            sampler = ResumableSampler(len(dataset), seed=shuffle_seed, batch_size=1)  # every image, seeded order
        return DataLoader(dataset, batch_size=batch_size or self.recipe.batch_size, sampler=sampler,
                          num_workers=self.recipe.num_workers, drop_last=False)


class ResumableSampler(Sampler[int]):
    """A seeded per-epoch permutation, sharded over ranks, that can start mid-epoch.

    Every rank sees ``len(self)`` indices per epoch (a multiple of ``batch_size``; the
    tail of the permutation that does not fill a global batch is dropped), so all
    ranks take the same number of steps. ``start_batch`` skips the batches a resumed
    run has already trained on.
    """

    def __init__(self, size: int, seed: int, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        self.size, self.seed, self.batch_size = size, seed, batch_size
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start_batch = 0, 0
        self.batches_per_epoch = size // (batch_size * world_size)
        if self.batches_per_epoch == 0:
            raise InvalidInputError(f"{size} images are fewer than one global batch of "
                                    f"{batch_size * world_size}; lower batch_size")

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator)
        used = order[:self.batches_per_epoch * self.batch_size * self.world_size]
        mine = used[self.rank::self.world_size].tolist()
        return iter(mine[self.start_batch * self.batch_size:])

