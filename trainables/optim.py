"""Optimizer and learning-rate schedule registries.

Each entry is a small frozen spec saying which config keys it reads (so a report or an MLflow
params table can show only the settings that mattered) and how to build it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from hpsearch.trainables.config import OPTIMIZERS, SCHEDULES, TrialConfig
from hpsearch.trainables.errors import UserError

__all__ = ["OptimizerSpec", "ScheduleSpec", "build_optimizer", "build_schedule"]


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer entry: the config keys it reads and its factory."""

    uses: tuple[str, ...]
    make: Callable[[Iterable[torch.nn.Parameter], TrialConfig], Optimizer]


@dataclass(frozen=True)
class ScheduleSpec:
    """A schedule entry: the config keys it reads, whether it steps per batch, its factory."""

    uses: tuple[str, ...]
    per_batch: bool
    make: Callable[[Optimizer, TrialConfig, int], LRScheduler | None]


def _sgd(params: Iterable[torch.nn.Parameter], c: TrialConfig) -> Optimizer:
    if c.nesterov and c.momentum <= 0:
        raise UserError(
            f"nesterov: sgd with nesterov needs momentum > 0, but got momentum={c.momentum}")
    return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov,
                           weight_decay=c.weight_decay)


OPTIMIZERS.register("sgd")(
    OptimizerSpec(("lr", "momentum", "nesterov", "weight_decay"), _sgd))
OPTIMIZERS.register("adam")(OptimizerSpec(
    ("lr", "weight_decay"),
    lambda p, c: torch.optim.Adam(p, lr=c.lr, weight_decay=c.weight_decay)))
OPTIMIZERS.register("adamw")(OptimizerSpec(
    ("lr", "weight_decay"),
    lambda p, c: torch.optim.AdamW(p, lr=c.lr, weight_decay=c.weight_decay)))
OPTIMIZERS.register("rmsprop")(OptimizerSpec(
    ("lr", "momentum", "weight_decay"),
    lambda p, c: torch.optim.RMSprop(p, lr=c.lr, momentum=c.momentum,
                                     weight_decay=c.weight_decay)))

SCHEDULES.register("none")(ScheduleSpec((), False, lambda o, c, n: None))
SCHEDULES.register("step")(ScheduleSpec(
    ("step_size", "gamma"), False,
    lambda o, c, n: torch.optim.lr_scheduler.StepLR(o, step_size=c.step_size, gamma=c.gamma)))
SCHEDULES.register("exponential")(ScheduleSpec(
    ("gamma",), False, lambda o, c, n: torch.optim.lr_scheduler.ExponentialLR(o, gamma=c.gamma)))
SCHEDULES.register("cosine")(ScheduleSpec(
    (), True,
    lambda o, c, n: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=max(1, c.epochs * n))))
SCHEDULES.register("onecycle")(ScheduleSpec(
    ("pct_start",), True,
    lambda o, c, n: torch.optim.lr_scheduler.OneCycleLR(
        o, max_lr=c.lr, total_steps=max(2, c.epochs * n), pct_start=c.pct_start)))


def build_optimizer(params: Iterable[torch.nn.Parameter], config: TrialConfig) -> Optimizer:
    """The optimizer named by ``config.optimizer``."""
    spec: OptimizerSpec = OPTIMIZERS.get(config.optimizer, "optimizer")
    return spec.make(params, config)


def build_schedule(
    optimizer: Optimizer, config: TrialConfig, steps_per_epoch: int
) -> tuple[LRScheduler | None, bool]:
    """The schedule named by ``config.schedule`` and whether it steps after every batch."""
    spec: ScheduleSpec = SCHEDULES.get(config.schedule, "schedule")
    return spec.make(optimizer, config, steps_per_epoch), spec.per_batch
