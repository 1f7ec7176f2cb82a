"""The CUDA paths on a real GPU: AMP (bf16 where the device has it), channels_last, the data
kept on the device, checkpoints that move between a GPU and the CPU. Marked ``gpu`` and skipped
without CUDA; on a machine with one: ``python -m pytest -m gpu -n 0 tests/trainables``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from hpsearch.trainables.config import TrialConfig
from hpsearch.trainables.fit import fit
from tests.trainables.conftest import TINY
from tests.trainables.test_fit import _first_epoch, _round_trip

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

_SEEN: dict[str, Any] = {}  # what the probe model saw in its last forward pass


class _Probe(nn.Module):
    """A small CNN that records the dtype its convolution computes in and the memory format
    of its input."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 8, 3, padding=1)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        _SEEN.update(dtype=y.dtype, device=x.device.type,
                     channels_last=x.is_contiguous(memory_format=torch.channels_last))
        return self.head(y.float().mean((2, 3)))


def _register_probe() -> None:
    from hpsearch import register_model
    from hpsearch.trainables.config import MODELS

    if "cuda_probe" not in MODELS:
        register_model("cuda_probe")(
            lambda config, in_channels, image_size, num_classes: _Probe(in_channels,
                                                                        num_classes))


def _config(mnist: dict[str, Any], **kw: Any) -> TrialConfig:
    return TrialConfig(dataset="mnist", data_dir=mnist["data_dir"],
                       **{**TINY, "device": "cuda", **kw})


@pytest.mark.parametrize("model", ["cnn", "resnet18"])
def test_a_trial_learns_on_cuda_with_the_defaults(mnist: dict[str, Any], model: str) -> None:
    seen: list[dict[str, Any]] = []
    result = fit(_config(mnist, model=model, channels=None, epochs=3),
                 lambda m, _s: seen.append(m), data=mnist["bundle"])
    assert result.status == "completed"
    assert [m["device"] for m in seen] == ["cuda"] * 3
    assert all(math.isfinite(m["train_loss"]) and m["images_per_second"] > 0 for m in seen)
    assert seen[-1]["val_top1"] > 0.5  # 10 classes: chance is 0.1


@pytest.mark.parametrize("amp", [True, False])
def test_amp_computes_in_bf16_where_the_device_has_it_and_channels_last_reaches_the_model(
        tiny_cifar_dir: Path, amp: bool) -> None:
    """On 3-channel images, where a channels_last tensor differs from a contiguous one."""
    _register_probe()
    _SEEN.clear()
    fit(TrialConfig(dataset="cifar10", data_dir=str(tiny_cifar_dir), model="cuda_probe",
                    epochs=1, batch_size=32, device="cuda", amp=amp, channels_last=True))
    half = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert _SEEN["device"] == "cuda"
    assert _SEEN["dtype"] == (half if amp else torch.float32)
    assert _SEEN["channels_last"]


@pytest.mark.parametrize(("first", "then"), [("cuda", "cpu"), ("cpu", "cuda")])
def test_a_checkpoint_moves_between_the_gpu_and_the_cpu(mnist: dict[str, Any], first: str,
                                                        then: str) -> None:
    """A trial restored on another node may land on another device (a PBT copy, a resume
    where no GPU is free): the checkpoint, saved and loaded as the adapter does, carries on."""
    states: list[dict[str, Any]] = []
    _first_epoch(_config(mnist, device=first, epochs=3), mnist["bundle"],
                 lambda _m, make_state: states.append(_round_trip(make_state())))
    seen: list[dict[str, Any]] = []
    result = fit(_config(mnist, device=then, epochs=3), lambda m, _s: seen.append(m),
                 data=mnist["bundle"], state=states[0])
    assert result.status == "completed"
    assert [m["epoch"] for m in seen] == [2, 3]
    assert [m["device"] for m in seen] == [then] * 2
    assert all(math.isfinite(m["train_loss"]) for m in seen)
    assert seen[-1]["val_top1"] > 0.5


def test_the_training_split_is_kept_on_the_device(mnist: dict[str, Any]) -> None:
    """The uint8 training images move to the GPU once, whole (the README's memory per trial):
    a trial on more images peaks higher on the device by their bytes; the same model and
    batches otherwise."""
    peaks, images = [], []
    for limit in (200, None):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        result = fit(_config(mnist, epochs=1, train_limit=limit))
        peaks.append(torch.cuda.max_memory_allocated())
        images.append(result.history[0]["train_samples"])
    extra = (images[1] - images[0]) * 28 * 28  # uint8 MNIST images
    assert extra > 0
    assert peaks[1] - peaks[0] >= 0.9 * extra, (peaks, images)
