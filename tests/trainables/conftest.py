"""Fixtures for the trainables tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from hpsearch.trainables.config import TrialConfig
from hpsearch.trainables.data import load_data

# A small CNN that trains on the tiny MNIST in a second or two.
TINY = {"model": "cnn", "channels": (8, 16), "fc_width": 32, "epochs": 2, "batch_size": 32,
        "eval_batch_size": 256, "device": "cpu"}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models run faster (and steadier on a busy machine) on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def mnist(tiny_mnist_dir: Path) -> dict[str, Any]:
    """The tiny MNIST folder and its decoded bundle, shared by a module's fits."""
    config = TrialConfig(dataset="mnist", data_dir=str(tiny_mnist_dir))
    return {"data_dir": str(tiny_mnist_dir), "bundle": load_data(config)}
