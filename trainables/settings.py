"""Which settings a trial config reads: the rest are unused defaults (momentum under Adam).

Each registry entry declares the settings it reads (models in :mod:`trainables.models`,
optimizers and schedules in :mod:`trainables.optim`); :func:`used_keys` adds them to the few
every trial reads. A report reads configs back through this module, not the training loop.
"""

from __future__ import annotations

from hpsearch.trainables.config import (
    BUILTIN_TRAINABLE,
    MODELS,
    OPTIMIZERS,
    SCHEDULES,
    TRAINABLES,
    TrialConfig,
)

# Imported for their registrations, so that without torch this import fails (not a later call).
from hpsearch.trainables.models import ModelSpec
from hpsearch.trainables.optim import OptimizerSpec, ScheduleSpec
from hpsearch.trainables.plugins import TrainableSpec, settings_of

__all__ = ["ALWAYS", "used_keys"]

ALWAYS = ("dataset", "val_fraction", "split_seed", "resize", "model", "activation", "augment",
          "optimizer", "lr", "schedule", "epochs", "batch_size", "seed", "label_smoothing", "ema",
          "tta_flip")
"""Settings every trial reads, whatever its model, optimizer and schedule."""


def used_keys(config: TrialConfig) -> tuple[str, ...]:
    """The settings that matter for this config, in a fixed order, each once."""
    if config.trainable != BUILTIN_TRAINABLE:  # a whole training function reads its own
        trainable: TrainableSpec = TRAINABLES.get(config.trainable, "trainable")
        return tuple(dict.fromkeys(("trainable", "epochs", *trainable.uses)))
    optimizer: OptimizerSpec = OPTIMIZERS.get(config.optimizer, "optimizer")
    schedule: ScheduleSpec = SCHEDULES.get(config.schedule, "schedule")
    model: ModelSpec = MODELS.get(config.model, "model")
    plugins = settings_of("dataset", config.dataset) + tuple(
        k for name in config.augment for k in settings_of("augmentation", name))
    keys = ALWAYS + optimizer.uses + schedule.uses + model.reads(config) + plugins
    return tuple(dict.fromkeys(keys))
