"""Synthetic learning curves with a known optimum: a plugin training function for benchmarks
(``plugins: [synthetic_curves]``, ``fixed: {trainable: synthetic_curves}``).

A config's loss after ``e`` epochs is ``final + (2.3 - final) * exp(-rate * e)``, plus a little
Gaussian noise, seeded by the config and epoch:

* ``final`` (the asymptote) is smallest at ``syn_lr`` 1e-2 (shifted by width: wider nets like
  a smaller rate), ``syn_width`` 128, ``syn_dropout`` 0.2 and ``syn_act`` gelu;
* ``rate`` is ``syn_rate`` at ``syn_lr`` 1e-2 and grows with it (times
  ``2 ** (syn_cross * log10(syn_lr / 1e-2))``): a large learning rate learns fast and ends
  worse, so early epochs rank configs only roughly (what makes early stopping a gamble, as
  with real training). ``syn_rate`` sets how far one epoch gets (0.3: a quarter of the way),
  ``syn_cross`` how much the curves cross (0: not at all, every config learns at one rate).

The defaults (``syn_rate`` 0.3, ``syn_cross`` 1) are a hard case for early stopping: over random
configs, the loss after epoch 1 ranks them as after epoch 9 with a rank correlation of 0.75, and
of the best third at epoch 9 only 54 % are in the best third after epoch 1. Real curves of the
flagship space on Fashion-MNIST (``studies/fashion_mnist_curves.yaml``: 24 random configs x 9
epochs of 6,000 images, ``results/fashion_mnist_curves/``) are far tamer: 0.98 and 100 %, and
epoch 1 already gets a median config 87 % of the way (accuracy above chance, against epoch 9).
``syn_rate`` 2 and ``syn_cross`` 0.1 match those (0.98, 89 %, 86 %).

:func:`curve` is the same function on numpy arrays, noise-free: the benchmark finds the optimum
at the last epoch with it and reports each trial's true loss (``syn_true``) beside the noisy
one the searcher sees (``syn_loss``). An epoch costs nothing, so a sweep measures the search.
Every config has its own noise draw per epoch (the same config twice scores the same).
"""

from __future__ import annotations

import math
import random
import time
import zlib
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from hpsearch import register_trainable

__all__ = ["ACT_OFFSET", "SPACE", "curve"]

ACT_OFFSET = {"gelu": 0.0, "relu": 0.03, "tanh": 0.1}
# The search space every strategy of bench/search_quality.py gets.
SPACE: dict[str, Any] = {
    "syn_lr": {"type": "loguniform", "low": 1.0e-4, "high": 1.0},
    "syn_width": {"type": "int", "low": 8, "high": 512, "log": True},
    "syn_dropout": {"type": "uniform", "low": 0.0, "high": 0.8},
    "syn_act": {"type": "choice", "values": list(ACT_OFFSET)},
}


class Curves(BaseModel):
    syn_lr: float = Field(1e-3, gt=0.0, le=1.0)
    syn_width: int = Field(32, ge=8, le=512)
    syn_dropout: float = Field(0.5, ge=0.0, le=0.8)
    syn_act: Literal["gelu", "relu", "tanh"] = "relu"
    syn_noise: float = Field(0.005, ge=0.0, le=1.0, description="std of the reported noise")
    syn_rate: float = Field(0.3, gt=0.0, le=10.0, description="learning rate per epoch at lr 1e-2")
    syn_cross: float = Field(1.0, ge=0.0, le=2.0,
                             description="how much a larger lr learns faster: 0 none")


def curve(lr: Any, width: Any, dropout: Any, act_offset: Any, epoch: Any,
          cross: float = 1.0, rate: float = 0.3) -> Any:
    """The noise-free loss after ``epoch`` epochs (scalars or broadcasting numpy arrays)."""
    u = np.log10(lr) + 2.0  # 0 at lr 1e-2
    v = np.log2(width) - 7.0  # 0 at width 128
    final = (0.05 + 0.12 * (u + 0.25 * v) ** 2 + 0.02 * v ** 2 + 0.6 * (dropout - 0.2) ** 2
             + act_offset)
    speed = rate * 2.0 ** (cross * u)
    return final + (2.3 - final) * np.exp(-speed * epoch)


@register_trainable("synthetic_curves", metrics={"syn_loss": "min", "syn_true": "min"},
                    settings=Curves, uses=("seed",))
def synthetic_curves(config: Any, report: Any, state: dict[str, Any] | None) -> None:
    start = 0 if state is None else int(state["epoch"])
    key = f"{config.seed}|{config.syn_lr!r}|{config.syn_width}|{config.syn_dropout!r}|" \
          f"{config.syn_act}"
    for epoch in range(start + 1, config.epochs + 1):
        true = float(curve(config.syn_lr, config.syn_width, config.syn_dropout,
                           ACT_OFFSET[config.syn_act], epoch, config.syn_cross,
                           config.syn_rate))
        noise = random.Random(zlib.crc32(f"{key}|{epoch}".encode())).gauss(0.0, 1.0)
        loss = true + config.syn_noise * noise
        # syn_clock: when, so that the benchmark orders every trial's epochs as they came
        report({"syn_loss": loss if math.isfinite(loss) else true, "syn_true": true,
                "syn_clock": time.time()}, lambda epoch=epoch: {"epoch": epoch})
