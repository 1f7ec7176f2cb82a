"""Datasets by name, decoded once into uint8 tensors and split into train / val / test.

Every dataset is read through torchvision's own dataset classes (MNIST, FashionMNIST, CIFAR10)
or, for ``image_folder``, decoded with PIL once (:mod:`trainables.images`) and cached; the
result is a :class:`~trainables.bundle.DataBundle` of contiguous uint8 ``[N, C, H, W]`` tensors
that a training loop moves to its device whole. Nothing here resizes, normalises or augments
(except ``image_folder``, which must decode at one size): the training loop does that batched,
on the device. Where the files are found is :func:`~trainables.datadir.resolve_root`'s job.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from hpsearch.trainables.bundle import DataBundle, ImageSets
from hpsearch.trainables.config import DATASETS, TrialConfig
from hpsearch.trainables.datadir import atomic_write, cache_dir, resolve_root
from hpsearch.trainables.errors import UserError
from hpsearch.trainables.images import IMAGE_EXTENSIONS, common_format, decode_images

__all__ = ["DataBundle", "cache_dir", "load_data", "resolve_root"]

log = logging.getLogger(__name__)

_IMAGE_FOLDER_TEST_FRACTION = 0.2
# Fixed, not split_seed: the test set must not change when a sweep varies split_seed.
_IMAGE_FOLDER_TEST_SEED = 0
_IMAGE_FOLDER_CACHE_VERSION = 2  # 2: 16-bit, int and float read as trainables.images says


_Decoded = ImageSets  # what a registered dataset returns, before any split


def load_data(config: TrialConfig) -> DataBundle:
    """Decode ``config.dataset`` once and split it as ``config`` says.

    The dataset's train set is split into train / val by ``val_fraction`` with a
    ``torch.randperm`` seeded by ``split_seed``; its test set stays separate. ``train_limit``
    keeps the first N of the (shuffled) train split, ``eval_limit`` the first N of val and test.
    """
    decode: Callable[[Path | None, TrialConfig], _Decoded] = DATASETS.get(config.dataset,
                                                                          "dataset")
    # A plugin dataset finds its own files; the built-in ones are found by resolve_root.
    root = None if DATASETS.is_plugin(config.dataset) else resolve_root(config.dataset,
                                                                          config.data_dir)
    full = decode(root, config)
    n = len(full.train_y)
    n_val = round(n * config.val_fraction)
    if n - n_val < 1:
        raise UserError(f"val_fraction: {config.val_fraction} of {n} train images leaves none "
                        "to train on; allowed: a fraction that leaves at least one")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(config.split_seed))
    train_idx, val_idx = perm[n_val:], perm[:n_val]
    train_idx = train_idx[:config.train_limit]
    val_idx = val_idx[:config.eval_limit]
    train_x = full.train_x[train_idx]
    mean, std = _channel_stats(train_x)
    return DataBundle(
        name=config.dataset,
        classes=full.classes,
        train_x=train_x,
        train_y=full.train_y[train_idx],
        val_x=full.train_x[val_idx],
        val_y=full.train_y[val_idx],
        test_x=_head(full.test_x, config.eval_limit),
        test_y=_head(full.test_y, config.eval_limit),
        mean=mean,
        std=std,
    )


def _head(t: torch.Tensor, n: int | None) -> torch.Tensor:
    """The first ``n`` rows as their own tensor (not a view pinning all of ``t``)."""
    return t if n is None or n >= len(t) else t[:n].clone()


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and std in [0, 1] units, from a 256-bin histogram per channel."""
    levels = torch.arange(256, dtype=torch.float64)
    means, stds = [], []
    for c in range(x.shape[1]):
        counts = torch.bincount(x[:, c].reshape(-1), minlength=256).to(torch.float64)
        total = counts.sum()
        mean = (counts * levels).sum() / total
        var = (counts * (levels - mean) ** 2).sum() / total
        means.append(float(mean) / 255.0)
        stds.append(float(var.sqrt()) / 255.0)
    return tuple(means), tuple(stds)


# --------------------------------------------------------------------------- torchvision datasets


def _mnist_family(tv_class: type, root: Path) -> _Decoded:
    train = tv_class(root=str(root), train=True)
    test = tv_class(root=str(root), train=False)
    return _Decoded(tuple(train.classes), train.data.unsqueeze(1).contiguous(), train.targets,
                    test.data.unsqueeze(1).contiguous(), test.targets)


@DATASETS.register("mnist")
def _mnist(root: Path, config: TrialConfig) -> _Decoded:
    import torchvision  # here: a trial worker that gets its data as arrays never needs it

    return _mnist_family(torchvision.datasets.MNIST, root)


@DATASETS.register("fashion_mnist")
def _fashion_mnist(root: Path, config: TrialConfig) -> _Decoded:
    import torchvision

    return _mnist_family(torchvision.datasets.FashionMNIST, root)


@functools.cache
def _local_cifar10() -> type:
    """torchvision's CIFAR10, with a local copy checked only for existence.

    The stock class md5-checks every batch file on every construction: that re-reads 170 MB per
    load and rejects any other faithful copy (the tiny ones tests write). Downloads still go
    through the stock class, whose archive md5 check is kept.
    """
    import torchvision

    class LocalCIFAR10(torchvision.datasets.CIFAR10):
        meta = {**torchvision.datasets.CIFAR10.meta, "md5": None}

        def _check_integrity(self) -> bool:
            folder = Path(self.root) / self.base_folder
            return all((folder / f).is_file() for f, _ in self.train_list + self.test_list)

    return LocalCIFAR10


@DATASETS.register("cifar10")
def _cifar10(root: Path, config: TrialConfig) -> _Decoded:
    train = _local_cifar10()(root=str(root), train=True)
    test = _local_cifar10()(root=str(root), train=False)

    def nchw(data: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(data).permute(0, 3, 1, 2).contiguous()

    return _Decoded(tuple(train.classes), nchw(train.data),
                    torch.tensor(train.targets, dtype=torch.int64), nchw(test.data),
                    torch.tensor(test.targets, dtype=torch.int64))


# --------------------------------------------------------------------------- image_folder


def _list_classes(folder: Path) -> dict[str, list[Path]]:
    """``{class: sorted image paths}`` for each non-hidden sub-folder of ``folder``."""
    classes = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in sub.rglob("*")
                       if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not files:
            raise UserError(f"data_dir: class folder {sub} holds no images; allowed extensions: "
                            f"{', '.join(IMAGE_EXTENSIONS)}")
        classes[sub.name] = files
    if not classes:
        raise UserError(f"data_dir: {folder} holds no class folders; image_folder wants "
                        "<data_dir>/<class>/<image> or <data_dir>/{train,test}/<class>/<image>")
    return classes


def _image_folder_files(root: Path) -> tuple[tuple[str, ...], list[tuple[Path, int]],
                                             list[tuple[Path, int]]]:
    """Classes and (path, label) lists for train and test, from dirs or a fixed-seed split."""
    if (root / "train").is_dir() and (root / "test").is_dir():
        train, test = _list_classes(root / "train"), _list_classes(root / "test")
        unknown = sorted(set(test) - set(train))
        if unknown:
            raise UserError(f"data_dir: {root / 'test'} has classes missing from train/: "
                            f"{', '.join(unknown)}; allowed: {', '.join(train)}")
        classes = tuple(train)
        return (classes, [(p, classes.index(c)) for c in train for p in train[c]],
                [(p, classes.index(c)) for c in test for p in test[c]])
    per_class = _list_classes(root)
    classes = tuple(per_class)
    rng = np.random.default_rng(_IMAGE_FOLDER_TEST_SEED)
    train_files, test_files = [], []
    for label, c in enumerate(classes):
        files = [per_class[c][i] for i in rng.permutation(len(per_class[c]))]
        n_test = int(len(files) * _IMAGE_FOLDER_TEST_FRACTION)
        test_files += [(p, label) for p in sorted(files[:n_test])]
        train_files += [(p, label) for p in sorted(files[n_test:])]
    return classes, train_files, test_files


@DATASETS.register("image_folder")
def _image_folder(root: Path, config: TrialConfig) -> _Decoded:
    """A class-per-folder tree of images, decoded with PIL once and cached as a ``.pt`` file.

    With ``train/`` and ``test/`` sub-folders those are the splits; else 20 % of each class is
    held out as the test set by a fixed seed. All images must share one size unless ``resize``.
    The folder is RGB if any image has colour, else gray; each mode is read as
    :mod:`trainables.images` says.
    """
    classes, train_files, test_files = _image_folder_files(root)
    files = [p for p, _ in train_files + test_files]
    digest = hashlib.sha256(f"{_IMAGE_FOLDER_CACHE_VERSION}|{root}|{config.resize}".encode())
    for p in files:
        stat = p.stat()
        digest.update(f"|{p.relative_to(root)}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    cache = cache_dir() / "image_folder" / f"{digest.hexdigest()[:24]}.pt"
    if cache.is_file():
        try:
            saved = torch.load(cache, weights_only=True)
            return _Decoded(tuple(saved["classes"]), saved["train_x"], saved["train_y"],
                            saved["test_x"], saved["test_y"])
        except Exception as err:  # a damaged cache is rebuilt, never fatal
            log.warning("ignoring unreadable cache %s: %s", cache, err)
    mode, size = common_format(files, config.resize)
    log.info("decoding %d images from %s at %s %s (once)", len(files), root, mode, size)
    decoded = _Decoded(classes, *decode_images(train_files, mode, size),
                       *decode_images(test_files, mode, size))
    cache.parent.mkdir(parents=True, exist_ok=True)
    saved = {**decoded._asdict(), "classes": list(classes)}
    atomic_write(cache, lambda tmp: torch.save(saved, tmp))
    return decoded
