"""Datasets, decoded once into uint8 tensors and split into train / val / test.

Every dataset is read through torchvision's own dataset classes (MNIST, FashionMNIST, CIFAR10)
or, for ``image_folder``, decoded with PIL once and cached; the result is a :class:`DataBundle`
of contiguous uint8 ``[N, C, H, W]`` tensors that a training loop moves to its device whole.
Nothing here resizes, normalises or augments (except ``image_folder``, which must decode at one
size): the training loop does that batched, on the device.

Where the files are found (:func:`resolve_root`): ``data_dir`` if given, else
``$HPSEARCH_DATA_DIR``, else ``./data``, else Debian's ``/usr/share/datasets/<name>`` (e.g.
``apt-get install dataset-fashion-mnist``), else a torchvision download when online. Files in
a flat or gzipped layout (as Debian ships them) are bridged once into the cache dir
(``$HPSEARCH_CACHE``, default ``~/.cache/hpsearch``) in the layout torchvision expects.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import socket
import threading
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlparse

import numpy as np
import torch
import torchvision

from trainables.config import DATASETS, TrialConfig
from trainables.errors import UserError

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = ["DataBundle", "cache_dir", "load_data", "resolve_root"]

log = logging.getLogger(__name__)

SYSTEM_DATASETS_DIR = Path("/usr/share/datasets")
"""Where Debian's ``dataset-*`` packages install (``/usr/share/datasets/fashion-mnist``)."""

_TENSORS = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp")
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_IMAGE_FOLDER_TEST_FRACTION = 0.2
# Fixed, not split_seed: the test set must not change when a sweep varies split_seed.
_IMAGE_FOLDER_TEST_SEED = 0
_IMAGE_FOLDER_CACHE_VERSION = 2  # 2: 16-bit, int and float read by _TO_8BIT
_CONNECT_TIMEOUT_S = 2.0


@dataclass(frozen=True, eq=False)
class DataBundle:
    """One dataset's three splits as uint8 ``[N, C, H, W]`` / int64 ``[N]`` tensors.

    ``mean`` and ``std`` are per channel, in [0, 1] units, computed on the train split.
    """

    name: str
    classes: tuple[str, ...]
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        for split in ("train", "val", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if x.dtype != torch.uint8 or x.ndim != 4 or y.dtype != torch.int64 or y.ndim != 1:
                raise TypeError(f"{split}: want uint8 [N, C, H, W] and int64 [N], got "
                                f"{x.dtype} {list(x.shape)} and {y.dtype} {list(y.shape)}")
            if len(x) != len(y) or x.shape[1:] != self.train_x.shape[1:]:
                raise ValueError(f"{split}: {list(x.shape)} images, {len(y)} labels do not match "
                                 f"train images {list(self.train_x.shape)}")

    @property
    def num_classes(self) -> int:
        """How many classes the labels index."""
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        """1 for grayscale, 3 for RGB."""
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of every image."""
        return int(self.train_x.shape[2]), int(self.train_x.shape[3])

    def to_arrays(self) -> dict[str, Any]:
        """Plain numpy arrays (sharing memory with the tensors) and metadata, for Ray's store."""
        arrays = {key: getattr(self, key).numpy() for key in _TENSORS}
        return {"name": self.name, "classes": list(self.classes), "mean": list(self.mean),
                "std": list(self.std), **arrays}

    @classmethod
    def from_arrays(cls, d: dict[str, Any]) -> DataBundle:
        """Inverse of :meth:`to_arrays`, without copying.

        Arrays from Ray's object store are read-only; the tensors share their memory, so they
        must not be modified in place (torch's warning about that is silenced here).
        """
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*not writable.*")
            tensors = {key: torch.from_numpy(np.asarray(d[key])) for key in _TENSORS}
        return cls(name=d["name"], classes=tuple(d["classes"]), mean=tuple(d["mean"]),
                   std=tuple(d["std"]), **tensors)


class _Decoded(NamedTuple):
    """What a registered dataset returns: its own train and test sets, before any split."""

    classes: tuple[str, ...]
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def load_data(config: TrialConfig) -> DataBundle:
    """Decode ``config.dataset`` once and split it as ``config`` says.

    The dataset's train set is split into train / val by ``val_fraction`` with a
    ``torch.randperm`` seeded by ``split_seed``; its test set stays separate. ``train_limit``
    keeps the first N of the (shuffled) train split, ``eval_limit`` the first N of val and test.
    """
    decode: Callable[[Path, TrialConfig], _Decoded] = DATASETS.get(config.dataset, "dataset")
    full = decode(resolve_root(config.dataset, config.data_dir), config)
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


# --------------------------------------------------------------------------- where the files are


def cache_dir() -> Path:
    """``$HPSEARCH_CACHE``, else ``~/.cache/hpsearch``."""
    return Path(os.environ.get("HPSEARCH_CACHE") or "~/.cache/hpsearch").expanduser()


@dataclass(frozen=True)
class _Source:
    """How one torchvision dataset lies on disk and how a user gets it."""

    tv_class: type
    layout: str  # the folder under a root that torchvision reads the files from
    files: tuple[str, ...]
    debian: str
    how_to_get: str

    def found_in(self, root: Path) -> dict[str, Path] | None:
        """The dataset's files in ``root``: torchvision's layout, flat, or Debian-named."""
        for folder in (root / self.layout, root, root / self.debian,
                       root / self.debian / self.layout):
            found = _find_files(folder, self.files)
            if found is not None:
                return found
        return None


_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_CIFAR_FILES = tuple(f for f, _ in torchvision.datasets.CIFAR10.train_list
                     + torchvision.datasets.CIFAR10.test_list) + ("batches.meta",)
_SOURCES = {
    "mnist": _Source(torchvision.datasets.MNIST, "MNIST/raw", _MNIST_FILES, "mnist",
                     "put the four IDX files (optionally .gz) under ./data/MNIST/raw/"),
    "fashion_mnist": _Source(
        torchvision.datasets.FashionMNIST, "FashionMNIST/raw", _MNIST_FILES, "fashion-mnist",
        "run `apt-get install dataset-fashion-mnist`, or put the four IDX files (optionally .gz)"
        " under ./data/FashionMNIST/raw/"),
    "cifar10": _Source(
        torchvision.datasets.CIFAR10, "cifar-10-batches-py", _CIFAR_FILES, "cifar-10",
        "extract cifar-10-python.tar.gz so that ./data/cifar-10-batches-py/ exists"),
}


def resolve_root(name: str, data_dir: str | None) -> Path:
    """The absolute root to hand torchvision's class for dataset ``name``.

    An explicit ``data_dir`` is authoritative: if it lacks the files (and they cannot be
    downloaded into it) that is an error, never a silent fallback. Otherwise the first of
    ``$HPSEARCH_DATA_DIR``, ``./data`` and ``/usr/share/datasets/<debian-name>`` holding the files
    wins, then a torchvision download into ``$HPSEARCH_DATA_DIR`` or ``./data``. Flat or gzipped
    files are bridged into the cache dir (see :func:`_bridge`).
    """
    DATASETS.check(name, "dataset")
    if name == "image_folder":
        return _image_folder_root(data_dir)
    source = _SOURCES[name]
    if data_dir is not None:
        root = Path(data_dir).expanduser().absolute()
        found = _locate(name, source, root) or _download(name, source, root)
        if found is None:
            raise UserError(
                f"data_dir: {root} does not hold {name} (looked for {source.layout}/ or the files"
                f" {', '.join(source.files[:2])}, ... directly) and it could not be downloaded;"
                f" to get it: {source.how_to_get}, or fix data_dir")
        return found
    env = os.environ.get("HPSEARCH_DATA_DIR")
    candidates = [Path(env).expanduser()] if env else []
    candidates += [Path("data"), SYSTEM_DATASETS_DIR / source.debian]
    for root in candidates:
        found = _locate(name, source, root.absolute())
        if found is not None:
            return found
    found = _download(name, source, candidates[0].absolute())
    if found is None:
        looked = ", ".join(str(c.absolute()) for c in candidates)
        raise UserError(
            f"dataset: {name} not found (looked in {looked}) and could not be downloaded"
            f" (offline?); to get it: {source.how_to_get}, or set data_dir or HPSEARCH_DATA_DIR")
    return found


def _find_files(folder: Path, names: tuple[str, ...]) -> dict[str, Path] | None:
    """Each of ``names`` in ``folder``, plain or ``.gz``; None unless all are there."""
    found = {}
    for name in names:
        for path in (folder / name, folder / f"{name}.gz"):
            if path.is_file():
                found[name] = path
                break
        else:
            return None
    return found


def _locate(name: str, source: _Source, root: Path) -> Path | None:
    """A root holding ``source`` in torchvision's layout, bridging other layouts; else None."""
    found = source.found_in(root)
    if found is None:
        return None
    if all(path == root / source.layout / f for f, path in found.items()):
        return root
    return _bridge(name, source, found)


def _bridge(name: str, source: _Source, found: dict[str, Path]) -> Path:
    """A cache root in torchvision's layout over ``found``: gz files extracted, others linked.

    Done once per source folder and reused while each source file's size and mtime are
    unchanged; every file appears atomically (tmp file + rename), so concurrent trials never
    read half a file.
    """
    folder = next(iter(found.values())).parent.resolve()
    key = hashlib.sha1(str(folder).encode()).hexdigest()[:12]
    root = cache_dir() / "datasets" / f"{name}-{key}"
    target_dir = root / source.layout
    target_dir.mkdir(parents=True, exist_ok=True)
    for fname, src in found.items():
        target = target_dir / fname
        src = src.resolve()
        if src.suffix == ".gz":
            stat = src.stat()
            stamp = f"{src}\n{stat.st_size}\n{stat.st_mtime_ns}\n"
            stamp_path = target_dir / f".{fname}.source"
            if target.is_file() and _read_text(stamp_path) == stamp:
                continue
            log.info("extracting %s into %s (once)", src, target)
            _atomic(target, lambda tmp, src=src: _gunzip(src, tmp))
            _atomic(stamp_path, lambda tmp, stamp=stamp: tmp.write_text(stamp))
        elif not (target.is_symlink() and os.readlink(target) == str(src)):
            _atomic(target, lambda tmp, src=src: tmp.symlink_to(src))
    return root


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _gunzip(src: Path, dst: Path) -> None:
    with gzip.open(src, "rb") as fin, open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, length=1 << 20)


def _atomic(target: Path, write: Callable[[Path], None]) -> None:
    """Create ``target`` through ``write(tmp)`` and a rename, so readers see all of it or none."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        if tmp.is_file() or tmp.is_symlink():
            tmp.unlink()


def _online(url: str) -> bool:
    """Whether a download could work: not ``HPSEARCH_OFFLINE=1`` and the host answers in 2 s."""
    if os.environ.get("HPSEARCH_OFFLINE", "") not in ("", "0"):
        return False
    parts = urlparse(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    done, reachable = threading.Event(), []

    def connect() -> None:
        try:
            with socket.create_connection((parts.hostname, port), timeout=_CONNECT_TIMEOUT_S):
                reachable.append(True)
        except OSError:
            pass
        finally:
            done.set()

    # In a daemon thread because the connect timeout does not bound the DNS look-up.
    threading.Thread(target=connect, daemon=True).start()
    return done.wait(_CONNECT_TIMEOUT_S) and bool(reachable)


def _download(name: str, source: _Source, root: Path) -> Path | None:
    """Download with torchvision's class into ``root`` when online; the root, or None."""
    url = getattr(source.tv_class, "url", None) or source.tv_class.mirrors[0]
    if not _online(url):
        return None
    log.warning("downloading %s into %s", name, root)
    try:
        source.tv_class(root=str(root), train=True, download=True)
    except Exception as err:  # network errors come as URLError, RuntimeError, OSError ...
        log.warning("downloading %s failed: %s", name, err)
        return None
    return _locate(name, source, root)


# --------------------------------------------------------------------------- torchvision datasets


def _mnist_family(tv_class: type, root: Path) -> _Decoded:
    train = tv_class(root=str(root), train=True)
    test = tv_class(root=str(root), train=False)
    return _Decoded(tuple(train.classes), train.data.unsqueeze(1).contiguous(), train.targets,
                    test.data.unsqueeze(1).contiguous(), test.targets)


@DATASETS.register("mnist")
def _mnist(root: Path, config: TrialConfig) -> _Decoded:
    return _mnist_family(torchvision.datasets.MNIST, root)


@DATASETS.register("fashion_mnist")
def _fashion_mnist(root: Path, config: TrialConfig) -> _Decoded:
    return _mnist_family(torchvision.datasets.FashionMNIST, root)


class _LocalCIFAR10(torchvision.datasets.CIFAR10):
    """torchvision's CIFAR10, with a local copy checked only for existence.

    The stock class md5-checks every batch file on every construction: that re-reads 170 MB per
    load and rejects any other faithful copy (the tiny ones tests write). Downloads still go
    through the stock class, whose archive md5 check is kept.
    """

    meta = {**torchvision.datasets.CIFAR10.meta, "md5": None}

    def _check_integrity(self) -> bool:
        folder = Path(self.root) / self.base_folder
        return all((folder / f).is_file() for f, _ in self.train_list + self.test_list)


@DATASETS.register("cifar10")
def _cifar10(root: Path, config: TrialConfig) -> _Decoded:
    train = _LocalCIFAR10(root=str(root), train=True)
    test = _LocalCIFAR10(root=str(root), train=False)

    def nchw(data: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(data).permute(0, 3, 1, 2).contiguous()

    return _Decoded(tuple(train.classes), nchw(train.data),
                    torch.tensor(train.targets, dtype=torch.int64), nchw(test.data),
                    torch.tensor(test.targets, dtype=torch.int64))


# --------------------------------------------------------------------------- image_folder


def _image_folder_root(data_dir: str | None) -> Path:
    if data_dir is None:
        raise UserError("data_dir: dataset image_folder needs data_dir, a folder with one "
                        "sub-folder of images per class (or train/ and test/ holding those)")
    root = Path(data_dir).expanduser().absolute()
    if not root.is_dir():
        raise UserError(f"data_dir: {root} is not a folder; image_folder needs one sub-folder "
                        "of images per class")
    return root


def _list_classes(folder: Path) -> dict[str, list[Path]]:
    """``{class: sorted image paths}`` for each non-hidden sub-folder of ``folder``."""
    classes = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in sub.rglob("*")
                       if p.suffix.lower() in _IMAGE_EXTENSIONS and p.is_file())
        if not files:
            raise UserError(f"data_dir: class folder {sub} holds no images; allowed extensions: "
                            f"{', '.join(_IMAGE_EXTENSIONS)}")
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
    :func:`_decode_image` says.
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
    mode, size = _common_format(files, config.resize)
    log.info("decoding %d images from %s at %s %s (once)", len(files), root, mode, size)
    decoded = _Decoded(classes, *_decode_images(train_files, mode, size),
                       *_decode_images(test_files, mode, size))
    cache.parent.mkdir(parents=True, exist_ok=True)
    _atomic(cache, lambda tmp: torch.save({**decoded._asdict(), "classes": list(classes)}, tmp))
    return decoded


def _common_format(files: list[Path], resize: int | None) -> tuple[str, tuple[int, int]]:
    """``("L" | "RGB", (W, H))`` to decode every file at: RGB if any image has colour."""
    from PIL import Image, UnidentifiedImageError

    sizes: dict[tuple[int, int], Path] = {}
    rgb = False
    for p in files:
        try:
            with Image.open(p) as im:
                sizes.setdefault(im.size, p)
                rgb = rgb or _has_colour(im, p)
        except UnidentifiedImageError:
            raise UserError(f"image_folder: {p}: cannot read image (not a format PIL knows; "
                            f"allowed: {', '.join(_IMAGE_EXTENSIONS)})") from None
        except OSError as err:
            raise UserError(f"image_folder: {p}: cannot read image ({_one_line(err)})") from None
    if resize is not None:
        return ("RGB" if rgb else "L"), (resize, resize)
    if len(sizes) > 1:
        (s1, p1), (s2, p2) = list(sizes.items())[:2]
        raise UserError(
            f"resize: images differ in size ({p1} is {s1[0]}x{s1[1]}, {p2} is {s2[0]}x{s2[1]});"
            " allowed: one size for all images, or set resize to decode every image at NxN")
    return ("RGB" if rgb else "L"), next(iter(sizes))


def _has_colour(im: PILImage, path: Path) -> bool:
    """Whether a PIL image needs RGB: its mode is not a gray one, or its palette is not gray."""
    if im.mode in ("P", "PA"):
        _load(im, path)  # the palette of some formats is read only with the pixels
        palette = np.asarray(im.getpalette("RGB") or [0, 0, 0]).reshape(-1, 3)
        return bool((palette != palette[:, :1]).any())
    return im.mode not in _GRAY_MODES


def _decode_images(files: list[tuple[Path, int]], mode: str,
                   size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 ``[N, C, H, W]`` images and int64 labels."""
    channels = 3 if mode == "RGB" else 1
    out = np.empty((len(files), size[1], size[0], channels), dtype=np.uint8)
    for i, (p, _) in enumerate(files):
        out[i] = _decode_image(p, mode, size).reshape(size[1], size[0], channels)
    x = torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor([label for _, label in files], dtype=torch.int64)


def _decode_image(path: Path, mode: str, size: tuple[int, int]) -> np.ndarray:
    """One image file as a uint8 array in ``mode`` ("L" or "RGB") at ``size`` ``(W, H)``.

    Each PIL mode is read by the rule in :data:`_TO_8BIT`, then PIL converts it: gray to RGB
    by copying, a gray palette to L exactly, alpha (RGBA, LA, transparent palettes) dropped as
    torchvision's own loader does, CMYK, YCbCr and LAB by PIL's formulas. Bad data, values
    that cannot be scaled or a mode PIL cannot convert is a one-line :class:`UserError` naming
    the file.
    """
    from PIL import Image

    with Image.open(path) as im:
        _load(im, path)
        eight_bit = _TO_8BIT.get(im.mode, lambda im, path: im)(im, path)
        try:
            eight_bit = eight_bit.convert(mode)
        except ValueError as err:
            raise UserError(f"image_folder: {path}: cannot decode PIL mode {im.mode} as {mode} "
                            f"({_one_line(err)}); save it as RGB, RGBA, L or 16-bit gray"
                            ) from None
    if eight_bit.size != size:
        eight_bit = eight_bit.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(eight_bit)


def _load(im: PILImage, path: Path) -> None:
    """Decode the pixels of an opened PIL image, or say in one line which file is broken."""
    try:
        im.load()
    except Exception as err:  # PIL reports bad data as OSError, SyntaxError, ValueError, ...
        raise UserError(f"image_folder: {path}: cannot decode image (truncated or corrupt: "
                        f"{_one_line(err)})") from None


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _in_range(im: PILImage, path: Path, low: float, high: float) -> np.ndarray:
    """The pixels of ``im`` as an array, if all are finite and in ``[low, high]``."""
    a = np.asarray(im)
    if not np.isfinite(a).all():
        raise UserError(f"image_folder: {path}: PIL mode {im.mode} holds NaN or inf; allowed: "
                        f"values in [{low}, {high}]")
    if a.min() < low or a.max() > high:
        raise UserError(f"image_folder: {path}: PIL mode {im.mode} values must lie in "
                        f"[{low}, {high}], but got [{a.min()}, {a.max()}]; save it as 8- or "
                        "16-bit gray, or scale it into that range")
    return a


def _high_byte(im: PILImage, path: Path) -> PILImage:
    from PIL import Image

    return Image.fromarray((_in_range(im, path, 0, 65535) >> 8).astype(np.uint8))


def _unit_float(im: PILImage, path: Path) -> PILImage:
    from PIL import Image

    return Image.fromarray(np.rint(_in_range(im, path, 0.0, 1.0) * 255).astype(np.uint8))


def _through_palette(im: PILImage, path: Path) -> PILImage:
    # Via RGBA: PIL warns on a straight P -> RGB of a palette with transparency.
    return im.convert("RGBA")


# The modes PIL's own convert to "L" / "RGB" would get wrong (it clips 16-bit, int and float
# to 0..255) or warn on (palettes with transparency). 16-bit gray, and 32-bit int, which must
# hold 0..65535, keep the high byte, v >> 8, as PIL itself reads 16-bit RGB, RGBA and LA PNGs;
# float must hold [0, 1] and becomes round(v * 255). Values outside, NaN or inf are an error.
_TO_8BIT: dict[str, Callable[[PILImage, Path], PILImage]] = {
    "I;16": _high_byte, "I;16L": _high_byte, "I;16B": _high_byte, "I;16N": _high_byte,
    "I": _high_byte, "F": _unit_float, "P": _through_palette, "PA": _through_palette,
}
