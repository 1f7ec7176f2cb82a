"""Tiny, learnable datasets written in the real on-disk formats, for torchvision's own readers.

Class ``k`` of ``K`` is a bright square at a position set by ``k`` (a different colour per class
for RGB) on a dark noisy background, with a pixel of positional jitter: a small model learns it
well above chance in an epoch or two on a few hundred images, yet no two images are equal.
"""

from __future__ import annotations

import gzip
import math
import pickle
import struct
from pathlib import Path

import numpy as np

__all__ = ["CIFAR10_CLASSES", "pattern_images", "write_cifar10", "write_image_folder",
           "write_mnist"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
_IDX_IMAGES_MAGIC = 2051  # 0x0803: unsigned bytes, 3 dimensions
_IDX_LABELS_MAGIC = 2049  # 0x0801: unsigned bytes, 1 dimension


def pattern_images(labels: np.ndarray, num_classes: int, size: tuple[int, int], channels: int,
                   rng: np.random.Generator) -> np.ndarray:
    """uint8 ``[N, H, W, C]`` images: class ``k`` is a bright square at a ``k``-given place."""
    h, w = size
    cols = math.ceil(math.sqrt(num_classes))
    rows = math.ceil(num_classes / cols)
    side = max(2, min(h // (rows + 1), w // (cols + 1)))
    colours = rng.integers(150, 256, size=(num_classes, channels))
    # Every class colour has one full-bright channel, so squares stand out in any channel mix.
    colours[np.arange(num_classes), rng.integers(channels, size=num_classes)] = 255
    images = rng.integers(0, 60, size=(len(labels), h, w, channels), dtype=np.uint8)
    for i, k in enumerate(labels):
        r, c = divmod(int(k), cols)
        top = (r + 1) * h // (rows + 1) - side // 2 + int(rng.integers(-1, 2))
        left = (c + 1) * w // (cols + 1) - side // 2 + int(rng.integers(-1, 2))
        top, left = min(max(top, 0), h - side), min(max(left, 0), w - side)
        images[i, top:top + side, left:left + side] = colours[k]
    return images


def _labels(n: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Balanced labels in random order."""
    return rng.permutation(np.arange(n) % num_classes).astype(np.uint8)


def write_mnist(root: str | Path, n_train: int = 600, n_test: int = 200, variant: str = "MNIST",
                layout: str = "torchvision", seed: int = 0) -> Path:
    """Write 28x28 IDX files for 10 classes; return ``root`` (the data_dir to use).

    Args:
        root: The data dir.
        n_train: Images in the train files.
        n_test: Images in the t10k files.
        variant: "MNIST" or "FashionMNIST": the torchvision class (and folder) to read them.
        layout: "torchvision" writes plain files under ``<root>/<variant>/raw/``; "flat_gz"
            writes gzipped files directly in ``root``, as Debian's dataset packages do.
        seed: Makes the images; different seeds give different images.
    """
    if variant not in ("MNIST", "FashionMNIST") or layout not in ("torchvision", "flat_gz"):
        raise ValueError(f"unknown variant {variant!r} or layout {layout!r}")
    root = Path(root)
    folder = root / variant / "raw" if layout == "torchvision" else root
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = _labels(n, 10, rng)
        images = pattern_images(labels, 10, (28, 28), 1, rng)[..., 0]
        files = {
            f"{prefix}-images-idx3-ubyte": struct.pack(">IIII", _IDX_IMAGES_MAGIC, n, 28, 28)
            + images.tobytes(),
            f"{prefix}-labels-idx1-ubyte": struct.pack(">II", _IDX_LABELS_MAGIC, n)
            + labels.tobytes(),
        }
        for name, data in files.items():
            if layout == "flat_gz":
                (folder / f"{name}.gz").write_bytes(gzip.compress(data, compresslevel=1))
            else:
                (folder / name).write_bytes(data)
    return root


class _Py2Str(bytes):
    """Bytes pickled as a Python 2 ``str``, as in the real CIFAR pickles.

    Those load as ``str`` under ``encoding="latin1"`` (what torchvision uses) and as ``bytes``
    under ``encoding="bytes"`` (``b"data"``, as CIFAR's own page shows).
    """


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler: its dispatch can be extended
    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj: _Py2Str) -> None:
        n = len(obj)
        header = pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else (
            pickle.BINSTRING + struct.pack("<i", n))
        self.write(header + bytes(obj))

    dispatch[_Py2Str] = _save_py2_str


def _dump_py2(obj: object, path: Path) -> None:
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def write_cifar10(root: str | Path, n_train: int = 500, n_test: int = 100, seed: int = 0) -> Path:
    """Write ``<root>/cifar-10-batches-py/`` (5 data batches, test batch, meta); return ``root``.

    Batches are dicts with ``data`` (uint8 ``[N, 3072]``: the red, green, blue 32x32 planes of
    each image, row-major), ``labels``, ``batch_label`` and ``filenames``.
    """
    root = Path(root)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    s = _Py2Str

    def batch(name: str, label: str, n: int) -> None:
        labels = _labels(n, 10, rng)
        images = pattern_images(labels, 10, (32, 32), 3, rng)
        data = np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(n, 3072))
        filenames = [s(f"{CIFAR10_CLASSES[k]}_s_{i:06d}.png".encode()) for i, k in
                     enumerate(labels)]
        _dump_py2({s(b"batch_label"): s(label.encode()), s(b"labels"): labels.tolist(),
                   s(b"data"): data, s(b"filenames"): filenames}, folder / name)

    for i, part in enumerate(np.array_split(np.arange(n_train), 5), start=1):
        batch(f"data_batch_{i}", f"training batch {i} of 5", len(part))
    batch("test_batch", "testing batch 1 of 1", n_test)
    _dump_py2({s(b"num_cases_per_batch"): max(1, n_train // 5),
               s(b"label_names"): [s(c.encode()) for c in CIFAR10_CLASSES],
               s(b"num_vis"): 3072}, folder / "batches.meta")
    return root


def write_image_folder(root: str | Path, classes: tuple[str, ...] = ("a", "b", "c"),
                       per_class: int = 40, size: tuple[int, int] = (16, 16), mode: str = "RGB",
                       split_dirs: bool = False, test_per_class: int | None = None,
                       seed: int = 0) -> Path:
    """Write ``<root>/<class>/<i>.png`` (or under ``train/`` and ``test/``); return ``root``.

    Args:
        root: The data dir.
        classes: Class folder names.
        per_class: PNGs per class (per class in ``train/`` with ``split_dirs``).
        size: ``(H, W)`` of every image.
        mode: "RGB" or "L".
        split_dirs: Write ``train/`` and ``test/`` trees instead of one.
        test_per_class: PNGs per class in ``test/``; default ``per_class // 4``.
        seed: Makes the images.
    """
    from PIL import Image

    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be RGB or L, got {mode!r}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    trees = [(root, per_class)]
    if split_dirs:
        trees = [(root / "train", per_class),
                 (root / "test", test_per_class or max(1, per_class // 4))]
    channels = 3 if mode == "RGB" else 1
    for folder, n in trees:
        labels = np.repeat(np.arange(len(classes)), n)
        images = pattern_images(labels, len(classes), size, channels, rng)
        for i, (k, image) in enumerate(zip(labels, images, strict=True)):
            (folder / classes[k]).mkdir(parents=True, exist_ok=True)
            pixels = image if mode == "RGB" else image[..., 0]
            Image.fromarray(pixels).save(folder / classes[k] / f"{i:05d}.png")
    return root
