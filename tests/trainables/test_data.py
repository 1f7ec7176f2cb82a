"""Datasets: real files in the real formats, read through torchvision's own classes."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from hpsearch.trainables import datadir
from hpsearch.trainables.config import DATASETS, TrialConfig
from hpsearch.trainables.data import DataBundle, load_data, resolve_root
from hpsearch.trainables.errors import UserError
from tests.fakedata import CIFAR10_CLASSES, write_image_folder, write_mnist

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def _load(dataset: str, root: Path, **kw: object) -> DataBundle:
    return load_data(TrialConfig(dataset=dataset, data_dir=str(root), **kw))


def _rows(x: torch.Tensor) -> set[bytes]:
    return {img.numpy().tobytes() for img in x}


def _check_bundle(b: DataBundle, channels: int, size: tuple[int, int], num_classes: int) -> None:
    for split in ("train", "val", "test"):
        x, y = getattr(b, f"{split}_x"), getattr(b, f"{split}_y")
        assert x.dtype == torch.uint8 and x.is_contiguous()
        assert tuple(x.shape[1:]) == (channels, *size)
        assert y.dtype == torch.int64 and y.shape == (len(x),)
        assert set(y.tolist()) <= set(range(num_classes))
    assert (b.in_channels, b.image_size, b.num_classes) == (channels, size, num_classes)
    assert len(b.mean) == len(b.std) == channels
    assert all(0.0 < m < 1.0 for m in b.mean) and all(0.0 < s < 1.0 for s in b.std)


def test_every_declared_dataset_has_an_implementation() -> None:
    for name in DATASETS.names():
        assert callable(DATASETS.get(name))


def test_mnist_torchvision_layout(tiny_mnist_dir: Path) -> None:
    b = _load("mnist", tiny_mnist_dir)
    _check_bundle(b, 1, (28, 28), 10)
    assert (len(b.train_y), len(b.val_y), len(b.test_y)) == (540, 60, 200)
    assert b.classes == tuple(torchvision.datasets.MNIST.classes)
    assert resolve_root("mnist", str(tiny_mnist_dir)) == tiny_mnist_dir


def test_cifar10(tiny_cifar_dir: Path) -> None:
    b = _load("cifar10", tiny_cifar_dir, val_fraction=0.2)
    _check_bundle(b, 3, (32, 32), 10)
    assert (len(b.train_y), len(b.val_y), len(b.test_y)) == (400, 100, 100)
    assert b.classes == CIFAR10_CLASSES


def test_cifar_files_read_like_the_real_python2_pickles(tiny_cifar_dir: Path) -> None:
    with open(tiny_cifar_dir / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape == (100, 3072)
    assert len(batch[b"labels"]) == 100


def test_image_folder_auto_split_rgb(tiny_image_folder_dir: Path) -> None:
    b = _load("image_folder", tiny_image_folder_dir, val_fraction=0.25)
    _check_bundle(b, 3, (16, 16), 3)
    assert b.classes == ("a", "b", "c")
    assert (len(b.train_y) + len(b.val_y), len(b.test_y)) == (192, 48)  # 20 % of 80 per class
    assert torch.bincount(b.test_y).tolist() == [16, 16, 16]


def test_image_folder_split_dirs_grayscale_and_resize(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path, classes=("x", "y"), per_class=12, size=(10, 14),
                              mode="L", split_dirs=True, test_per_class=5)
    b = _load("image_folder", root, val_fraction=0.0)
    _check_bundle(b, 1, (10, 14), 2)
    assert (len(b.train_y), len(b.val_y), len(b.test_y)) == (24, 0, 10)
    assert _load("image_folder", root, resize=8).image_size == (8, 8)


def test_image_folder_is_rgb_if_any_image_is(tmp_path: Path) -> None:
    write_image_folder(tmp_path, classes=("x",), per_class=4, mode="L")
    write_image_folder(tmp_path, classes=("y",), per_class=4, mode="RGB")
    assert _load("image_folder", tmp_path, val_fraction=0.0).in_channels == 3


def test_image_folder_of_mixed_sizes_needs_resize(tmp_path: Path) -> None:
    write_image_folder(tmp_path, classes=("x",), per_class=4, size=(16, 16))
    write_image_folder(tmp_path, classes=("y",), per_class=4, size=(12, 16))
    with pytest.raises(UserError, match=r"resize: images differ in size .*set resize"):
        _load("image_folder", tmp_path)
    assert _load("image_folder", tmp_path, resize=16).image_size == (16, 16)


def test_image_folder_needs_data_dir() -> None:
    with pytest.raises(UserError, match="data_dir: dataset image_folder needs data_dir"):
        load_data(TrialConfig(dataset="image_folder"))


def test_image_folder_second_load_reads_the_cache(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "imgs", per_class=8)
    first = _load("image_folder", root)
    caches = list((datadir.cache_dir() / "image_folder").glob("*.pt"))
    assert caches
    # Spoil one image but keep its size and mtime: only the cache can still give the same data.
    image = next(root.glob("a/*.png"))
    stat = image.stat()
    image.write_bytes(b"\0" * stat.st_size)
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = _load("image_folder", root)
    assert torch.equal(first.train_x, second.train_x) and torch.equal(first.test_x, second.test_x)
    # A changed file list is a new cache entry, decoded afresh (and here: unreadable).
    (root / "a" / "new.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match=r"image_folder: .*png: cannot read image \(not a format"):
        _load("image_folder", root)


# --------------------------------------------------------------------------- image_folder modes

_GRADIENT = np.arange(64).reshape(8, 8)
_PALETTE = np.stack([np.arange(256) % 64 * 4, 255 - np.arange(256) % 64 * 4,
                     np.arange(256) * 7 % 256], axis=1).astype(np.uint8)


def _palette_image(i: int, palette: np.ndarray, **info: object) -> tuple[Image.Image, np.ndarray]:
    index = ((_GRADIENT + i) % 64).astype(np.uint8)
    im = Image.frombytes("P", (8, 8), index.tobytes())
    im.putpalette(palette.tobytes())
    im.info.update(info)
    return im, palette[index]


def _cmyk(i: int) -> tuple[Image.Image, np.ndarray]:
    cmyk = np.stack([_GRADIENT * 4, 255 - _GRADIENT * 4, _GRADIENT + i, _GRADIENT % 8 * 9],
                    axis=-1).astype(np.uint8)
    im = Image.frombytes("CMYK", (8, 8), cmyk.tobytes())
    return im, np.asarray(im.convert("RGB"))  # "as PIL does": its own CMYK -> RGB formula


def _wide(a: np.ndarray, expected: np.ndarray) -> tuple[Image.Image, np.ndarray]:
    return Image.fromarray(a), expected.astype(np.uint8)


_RGB = np.stack([_GRADIENT * 3, 200 - _GRADIENT * 3, _GRADIENT], axis=-1)
_16BIT = _GRADIENT * 1000  # 0 .. 63_000: the low byte varies, the high byte is the pixel

# mode -> (file extension, image i -> (PIL image to save, decoded uint8 [H, W] or [H, W, 3]))
_MODES: dict[str, tuple[str, Callable[[int], tuple[Image.Image, np.ndarray]]]] = {
    "L": ("png", lambda i: _wide((_GRADIENT * 3 + i).astype(np.uint8), _GRADIENT * 3 + i)),
    "I;16": ("png", lambda i: _wide((_16BIT + i * 97).astype(np.uint16),
                                    (_16BIT + i * 97) >> 8)),
    "I;16B": ("tif", lambda i: _wide((_16BIT + i * 97).astype(">u2"), (_16BIT + i * 97) >> 8)),
    "I": ("tif", lambda i: _wide((_16BIT + i * 41).astype(np.int32), (_16BIT + i * 41) >> 8)),
    "F": ("tif", lambda i: _wide(((_GRADIENT * 3 + i) / 255).astype(np.float32),
                                 _GRADIENT * 3 + i)),
    "1": ("png", lambda i: _wide((_GRADIENT + i) % 3 == 0, ((_GRADIENT + i) % 3 == 0) * 255)),
    "LA": ("png", lambda i: (Image.merge("LA", [
        Image.fromarray((_GRADIENT * 3 + i).astype(np.uint8)),
        Image.fromarray((255 - _GRADIENT * 4).astype(np.uint8))]),
        (_GRADIENT * 3 + i).astype(np.uint8))),
    "P": ("png", lambda i: _palette_image(i, _PALETTE)),
    "P+transparency": ("png", lambda i: _palette_image(i, _PALETTE, transparency=0)),
    "P+gray": ("png", lambda i: (lambda im, rgb: (im, rgb[..., 0]))(
        *_palette_image(i, np.repeat(_PALETTE[:, :1], 3, axis=1)))),
    "RGB": ("png", lambda i: _wide((_RGB + i).astype(np.uint8), _RGB + i)),
    "RGBA": ("png", lambda i: _wide(np.dstack([_RGB + i, _GRADIENT * 4]).astype(np.uint8),
                                    _RGB + i)),
    "CMYK": ("tif", _cmyk),
}


def _write_mode(root: Path, mode: str, label: int, n: int = 3) -> list[tuple[int, np.ndarray]]:
    """``n`` images of ``mode`` in ``root/c<label>/``; their (label, decoded [H, W, C]) pairs."""
    ext, make = _MODES[mode]
    (root / f"c{label}").mkdir(parents=True)
    expected = []
    for j in range(n):
        im, pixels = make(label * n + j)
        path = root / f"c{label}" / f"{j}.{ext}"
        im.save(path, **({"transparency": im.info["transparency"]}
                         if "transparency" in im.info else {}))
        with Image.open(path) as back:  # the file really is in the mode under test
            assert back.mode == mode.split("+")[0]
            assert ("transparency" in back.info) == ("transparency" in mode)
        expected.append((label, pixels.reshape(8, 8, -1).astype(np.uint8)))
    return expected


def _decoded(b: DataBundle) -> list[tuple[int, bytes]]:
    """Every (label, HWC image bytes) of all three splits, sorted."""
    x = torch.cat([b.train_x, b.val_x, b.test_x]).permute(0, 2, 3, 1)
    y = torch.cat([b.train_y, b.val_y, b.test_y])
    return sorted((int(k), img.numpy().tobytes()) for k, img in zip(y, x, strict=True))


def _as(expected: list[tuple[int, np.ndarray]], channels: int) -> list[tuple[int, bytes]]:
    return sorted((k, np.broadcast_to(img, (8, 8, channels)).tobytes()) for k, img in expected)


@pytest.mark.parametrize("mode", list(_MODES))
def test_image_folder_decodes_every_mode_to_its_pixels(tmp_path: Path, mode: str) -> None:
    expected = _write_mode(tmp_path, mode, 0) + _write_mode(tmp_path, mode, 1)
    channels = expected[0][1].shape[-1]
    assert channels == (1 if mode in ("L", "I;16", "I;16B", "I", "F", "1", "LA", "P+gray")
                        else 3)
    b = _load("image_folder", tmp_path, val_fraction=0.0)
    assert b.in_channels == channels
    assert _decoded(b) == _as(expected, channels)


def test_image_folder_of_mixed_modes_is_gray_unless_one_has_colour(tmp_path: Path) -> None:
    gray = [e for label, mode in enumerate(("L", "I;16", "F", "1", "LA", "P+gray"))
            for e in _write_mode(tmp_path, mode, label, n=2)]
    assert _decoded(_load("image_folder", tmp_path, val_fraction=0.0)) == _as(gray, 1)
    colour = _write_mode(tmp_path, "P", 6, n=2)
    b = _load("image_folder", tmp_path, val_fraction=0.0)
    assert b.in_channels == 3 and _decoded(b) == _as(gray + colour, 3)  # gray copied to R, G, B


def _noise_png(path: Path, mode: str) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    im = Image.fromarray(pixels)
    path.parent.mkdir(parents=True, exist_ok=True)
    (im if mode == "RGB" else im.convert("P")).save(path)
    return path.read_bytes()


def _truncate(raw: bytes) -> bytes:
    start = raw.index(b"IDAT") + 4
    return raw[:start + int.from_bytes(raw[start - 8:start - 4], "big") // 2]


def _garble(raw: bytes) -> bytes:
    start = raw.index(b"IDAT") + 4
    return raw[:start] + bytes(b ^ 0x5A for b in raw[start:start + 40]) + raw[start + 40:]


def _raises_one_line(root: Path, path: Path, pattern: str) -> str:
    with pytest.raises(UserError, match=pattern) as err:
        _load("image_folder", root, val_fraction=0.0)
    message = str(err.value)
    assert "\n" not in message and f"image_folder: {path}: " in message
    return message


@pytest.mark.parametrize("mode", ["RGB", "P"])
@pytest.mark.parametrize("damage", [_truncate, _garble])
def test_image_folder_names_a_broken_file_in_one_line(tmp_path: Path, mode: str,
                                                      damage: Callable[[bytes], bytes]) -> None:
    write_image_folder(tmp_path, classes=("a", "b"), per_class=3, size=(8, 8))
    bad = tmp_path / "b" / "broken.png"
    bad.write_bytes(damage(_noise_png(bad, mode)))
    with Image.open(bad) as im:
        assert im.size == (8, 8)  # the header still reads: only decoding finds the damage
    _raises_one_line(tmp_path, bad,
                     r"cannot decode image \(truncated or corrupt: (image file is truncated|"
                     r"broken data stream|unrecognized data stream)")


@pytest.mark.parametrize(("mode", "value", "pattern"), [
    ("I", 70_000, r"PIL mode I values must lie in \[0, 65535\], but got \[0, 70000\]"),
    ("I", -1, r"PIL mode I values must lie in \[0, 65535\], but got \[-1, 0\]"),
    ("F", 1.5, r"PIL mode F values must lie in \[0.0, 1.0\], but got \[0.0, 1.5\]"),
    ("F", -0.25, r"PIL mode F values must lie in \[0.0, 1.0\], but got \[-0.25, 0.0\]"),
    ("F", float("nan"), r"PIL mode F holds NaN or inf; allowed: values in \[0.0, 1.0\]"),
    ("F", float("inf"), r"PIL mode F holds NaN or inf"),
])
def test_image_folder_rejects_values_it_cannot_scale(tmp_path: Path, mode: str, value: float,
                                                     pattern: str) -> None:
    _write_mode(tmp_path, mode, 0)
    a = np.zeros((8, 8), dtype=np.int32 if mode == "I" else np.float32)
    a[3, 4] = value
    bad = tmp_path / "c0" / "bad.tif"
    Image.fromarray(a).save(bad)
    _raises_one_line(tmp_path, bad, pattern)


def test_image_folder_decodes_lab_as_pil_does_or_names_the_mode(tmp_path: Path) -> None:
    lab = Image.frombytes("LAB", (8, 8), (_RGB + 20).astype(np.uint8).tobytes())
    expected = _write_mode(tmp_path, "RGB", 0)
    bad = tmp_path / "c0" / "lab.tif"
    lab.save(bad)
    try:
        expected.append((0, np.asarray(lab.convert("RGB"))))
    except ValueError:  # older Pillow has no LAB -> RGB
        _raises_one_line(tmp_path, bad, r"cannot decode PIL mode LAB as RGB \(conversion ")
    else:
        assert _decoded(_load("image_folder", tmp_path, val_fraction=0.0)) == _as(expected, 3)


def test_split_is_seeded_disjoint_and_complete(tiny_mnist_dir: Path) -> None:
    a = _load("mnist", tiny_mnist_dir, split_seed=1)
    again = _load("mnist", tiny_mnist_dir, split_seed=1)
    other = _load("mnist", tiny_mnist_dir, split_seed=2)
    assert torch.equal(a.val_x, again.val_x) and torch.equal(a.train_y, again.train_y)
    assert not torch.equal(a.val_x, other.val_x)
    full = torchvision.datasets.MNIST(str(tiny_mnist_dir), train=True).data.unsqueeze(1)
    train, val = _rows(a.train_x), _rows(a.val_x)
    assert not train & val
    assert train | val == _rows(full) and len(train) + len(val) == len(full)
    assert torch.equal(a.test_x, other.test_x)  # the test set never depends on the split


def test_limits(tiny_mnist_dir: Path) -> None:
    full = _load("mnist", tiny_mnist_dir)
    b = _load("mnist", tiny_mnist_dir, train_limit=100, eval_limit=20)
    assert (len(b.train_x), len(b.val_x), len(b.test_x)) == (100, 20, 20)
    assert torch.equal(b.train_x, full.train_x[:100]) and torch.equal(b.test_y, full.test_y[:20])
    big = _load("mnist", tiny_mnist_dir, train_limit=10_000, eval_limit=10_000)
    assert (len(big.train_x), len(big.val_x), len(big.test_x)) == (540, 60, 200)


def test_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = write_mnist(tmp_path / "explicit", 20, 10)
    env = write_mnist(tmp_path / "env", 20, 10)
    cwd = tmp_path / "cwd"
    write_mnist(cwd / "data", 20, 10)
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(datadir, "SYSTEM_DATASETS_DIR", tmp_path / "no-system-datasets")
    monkeypatch.setenv("HPSEARCH_DATA_DIR", str(env))
    assert resolve_root("mnist", str(explicit)) == explicit
    assert resolve_root("mnist", None) == env
    monkeypatch.delenv("HPSEARCH_DATA_DIR")
    assert resolve_root("mnist", None) == cwd / "data"


def test_system_datasets_dir_is_the_last_resort(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               tiny_fashion_flat_dir: Path) -> None:
    system = tmp_path / "usr-share-datasets"
    system.mkdir()
    (system / "fashion-mnist").symlink_to(tiny_fashion_flat_dir, target_is_directory=True)
    monkeypatch.setattr(datadir, "SYSTEM_DATASETS_DIR", system)
    monkeypatch.chdir(tmp_path)
    b = load_data(TrialConfig(dataset="fashion_mnist", val_fraction=0.0))
    assert len(b.train_x) == 600
    write_mnist(tmp_path / "data", 20, 10, variant="FashionMNIST")
    assert resolve_root("fashion_mnist", None) == tmp_path / "data"


def test_flat_gz_is_bridged_once_via_the_cache(tiny_fashion_flat_dir: Path) -> None:
    b = _load("fashion_mnist", tiny_fashion_flat_dir)
    _check_bundle(b, 1, (28, 28), 10)
    assert b.classes == tuple(torchvision.datasets.FashionMNIST.classes)
    root = resolve_root("fashion_mnist", str(tiny_fashion_flat_dir))
    assert root.is_relative_to(datadir.cache_dir())
    raw = sorted((root / "FashionMNIST" / "raw").iterdir())
    assert {p.name for p in raw} >= set(datadir._MNIST_FILES)
    stamps = {p: p.stat().st_mtime_ns for p in raw}
    again = _load("fashion_mnist", tiny_fashion_flat_dir)
    assert {p: p.stat().st_mtime_ns for p in raw} == stamps
    assert torch.equal(b.train_x, again.train_x)


def test_bridge_follows_a_changed_source(tmp_path: Path) -> None:
    src = write_mnist(tmp_path, 30, 10, variant="FashionMNIST", layout="flat_gz", seed=1)
    first = _load("fashion_mnist", src, val_fraction=0.0)
    write_mnist(src, 30, 10, variant="FashionMNIST", layout="flat_gz", seed=2)
    second = _load("fashion_mnist", src, val_fraction=0.0)
    assert not torch.equal(first.train_x, second.train_x)
    assert not list((resolve_root("fashion_mnist", str(src)) / "FashionMNIST/raw").glob("*.tmp"))


def test_missing_data_offline_says_how_to_get_it(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datadir, "SYSTEM_DATASETS_DIR", tmp_path / "no-system-datasets")
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist") as err:
        load_data(TrialConfig(dataset="fashion_mnist"))
    assert "\n" not in str(err.value) and "HPSEARCH_DATA_DIR" in str(err.value)
    with pytest.raises(UserError, match=r"cifar-10-batches-py"):
        load_data(TrialConfig(dataset="cifar10"))
    with pytest.raises(UserError, match=r"data_dir: .*empty does not hold mnist.*MNIST/raw"):
        resolve_root("mnist", str(tmp_path / "empty"))


def test_arrays_round_trip_without_copies(tiny_mnist_dir: Path) -> None:
    b = _load("mnist", tiny_mnist_dir, train_limit=50)
    arrays = b.to_arrays()
    assert isinstance(arrays["train_x"], np.ndarray) and arrays["classes"] == list(b.classes)
    for value in arrays.values():
        if isinstance(value, np.ndarray):
            value.flags.writeable = False  # as Ray's object store hands them back
    back = DataBundle.from_arrays(arrays)
    assert back.train_x.data_ptr() == b.train_x.data_ptr()
    for key in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        assert torch.equal(getattr(back, key), getattr(b, key))
    assert (back.name, back.classes, back.mean, back.std) == (b.name, b.classes, b.mean, b.std)


def test_tiny_datasets_are_learnable(tiny_cifar_dir: Path, tiny_image_folder_dir: Path) -> None:
    for b in (_load("cifar10", tiny_cifar_dir), _load("image_folder", tiny_image_folder_dir)):
        x = b.train_x.flatten(1).float()
        centroids = torch.stack([x[b.train_y == k].mean(0) for k in range(b.num_classes)])
        pred = torch.cdist(b.test_x.flatten(1).float(), centroids).argmin(1)
        assert (pred == b.test_y).float().mean() > 0.9


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="needs apt-get install "
                    "dataset-fashion-mnist")
def test_real_fashion_mnist_from_debian(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # so that no ./data shadows the system copy
    b = load_data(TrialConfig(dataset="fashion_mnist"))
    _check_bundle(b, 1, (28, 28), 10)
    assert (len(b.train_x), len(b.val_x), len(b.test_x)) == (54_000, 6_000, 10_000)
    assert torch.bincount(b.test_y).tolist() == [1000] * 10
    assert abs(b.mean[0] - 0.2860) < 2e-3 and abs(b.std[0] - 0.3530) < 2e-3
