"""A dataset in memory: three splits as uint8 image and int64 label tensors, ready to move whole
to a trial's device, and their round trip through plain arrays (Ray's object store)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

__all__ = ["DataBundle", "ImageSets"]

class ImageSets(NamedTuple):
    """What a dataset returns before any split: its class names and its own train and test
    sets, uint8 ``[N, C, H, W]`` images and int64 ``[N]`` labels indexing ``classes``."""

    classes: tuple[str, ...]
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


_TENSORS = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")


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
