"""Where a dataset's files are, and getting them into the layout torchvision reads.

:func:`resolve_root` looks in ``data_dir`` if given, else ``$HPSEARCH_DATA_DIR``, else ``./data``,
else Debian's ``/usr/share/datasets/<name>`` (e.g. ``apt-get install dataset-fashion-mnist``),
else downloads with torchvision when online. Files in a flat or gzipped layout (as Debian ships
them) are bridged once into the cache dir (``$HPSEARCH_CACHE``, default ``~/.cache/hpsearch``)
in the layout torchvision expects.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import logging
import os
import shutil
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from hpsearch.trainables.config import DATASETS
from hpsearch.trainables.errors import UserError

__all__ = ["SYSTEM_DATASETS_DIR", "atomic_write", "cache_dir", "image_folder_root",
           "resolve_root"]

log = logging.getLogger(__name__)

SYSTEM_DATASETS_DIR = Path("/usr/share/datasets")
"""Where Debian's ``dataset-*`` packages install (``/usr/share/datasets/fashion-mnist``)."""

_CONNECT_TIMEOUT_S = 2.0


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


@functools.cache
def _sources() -> dict[str, _Source]:
    """Each torchvision dataset's source. Built on first use: importing torchvision costs more
    than torch itself (about 1.3 s of CPU here), which every new trial worker would pay."""
    import torchvision

    cifar_files = tuple(f for f, _ in torchvision.datasets.CIFAR10.train_list
                        + torchvision.datasets.CIFAR10.test_list) + ("batches.meta",)
    return {
        "mnist": _Source(torchvision.datasets.MNIST, "MNIST/raw", _MNIST_FILES, "mnist",
                         "put the four IDX files (optionally .gz) under ./data/MNIST/raw/"),
        "fashion_mnist": _Source(
            torchvision.datasets.FashionMNIST, "FashionMNIST/raw", _MNIST_FILES, "fashion-mnist",
            "run `apt-get install dataset-fashion-mnist`, or put the four IDX files (optionally"
            " .gz) under ./data/FashionMNIST/raw/"),
        "cifar10": _Source(
            torchvision.datasets.CIFAR10, "cifar-10-batches-py", cifar_files, "cifar-10",
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
        return image_folder_root(data_dir)
    source = _sources()[name]
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


def image_folder_root(data_dir: str | None) -> Path:
    """``data_dir`` as an absolute path, if it is a folder (image_folder has no default)."""
    if data_dir is None:
        raise UserError("data_dir: dataset image_folder needs data_dir, a folder with one "
                        "sub-folder of images per class (or train/ and test/ holding those)")
    root = Path(data_dir).expanduser().absolute()
    if not root.is_dir():
        raise UserError(f"data_dir: {root} is not a folder; image_folder needs one sub-folder "
                        "of images per class")
    return root


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
            atomic_write(target, lambda tmp, src=src: _gunzip(src, tmp))
            atomic_write(stamp_path, lambda tmp, stamp=stamp: tmp.write_text(stamp))
        elif not (target.is_symlink() and os.readlink(target) == str(src)):
            atomic_write(target, lambda tmp, src=src: tmp.symlink_to(src))
    return root


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _gunzip(src: Path, dst: Path) -> None:
    with gzip.open(src, "rb") as fin, open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, length=1 << 20)


def atomic_write(target: Path, write: Callable[[Path], None]) -> None:
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
