"""The trial config: one flat, JSON-able, frozen record of everything a single trial does.

The same key names flow unchanged from a sweep's search space to :func:`trainables.fit.fit`,
to MLflow params and to the report's columns. This module imports neither torch nor Ray, so
configs and sweep specs are validated instantly.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hpsearch.trainables.errors import MAX_SHOWN, UserError, closest, cut, shown
from hpsearch.trainables.registry import Registry

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "MODELS",
    "MUTABLE_SETTINGS",
    "OPTIMIZER_STEP_SETTINGS",
    "OPTIMIZERS",
    "SCHEDULES",
    "ACTIVATIONS",
    "BUILTIN_TRAINABLE",
    "TRAINABLES",
    "TrialConfig",
    "add_settings",
    "setting_owner",
    "format_validation_error",
    "parse_trial_config",
]

# Every registry's names are declared here, cheaply; implementations register against them.
DATASETS: Registry = Registry("dataset", ("mnist", "fashion_mnist", "cifar10", "image_folder"),
                              "hpsearch.trainables.data")
MODELS: Registry = Registry("model", ("mlp", "cnn", "resnet18", "squeezenet1_1", "alexnet"),
                            "hpsearch.trainables.models")
ACTIVATIONS: Registry = Registry(
    "activation",
    ("relu", "gelu", "sigmoid", "tanh", "elu", "leaky_relu", "silu", "softmax"),
    "hpsearch.trainables.models",
)
AUGMENTATIONS: Registry = Registry(
    "augmentation", ("hflip", "rotate", "affine", "color_jitter", "crop", "elastic"),
    "hpsearch.trainables.augment",
)
OPTIMIZERS: Registry = Registry("optimizer", ("sgd", "adam", "adamw", "rmsprop"),
                                "hpsearch.trainables.optim")
SCHEDULES: Registry = Registry("schedule", ("none", "step", "exponential", "cosine", "onecycle"),
                               "hpsearch.trainables.optim")
BUILTIN_TRAINABLE = "classifier"  # trainables.fit: the image classifier every setting below is for
# Whole training functions (plugins); the built-in one is run by the adapter itself.
TRAINABLES: Registry = Registry("trainable", (BUILTIN_TRAINABLE,), "hpsearch.trainables.fit")

# Settings that may change between two epochs of the same weights (population-based training
# continues a trial from another trial's checkpoint with some of them mutated): the optimizer's
# step settings, which fit writes into the optimizer it loads, and the built-in augmentations'
# strengths, read afresh whenever training (re)starts. Every other setting shapes the weights,
# the data or the schedule and stays fixed for the life of the weights.
OPTIMIZER_STEP_SETTINGS = ("lr", "momentum", "weight_decay")
MUTABLE_SETTINGS = OPTIMIZER_STEP_SETTINGS + (
    "flip_p", "rotate_degrees", "affine_shear", "affine_scale_min", "affine_scale_max",
    "jitter_brightness", "jitter_contrast", "jitter_saturation", "crop_padding", "elastic_alpha",
    "elastic_sigma")


class TrialConfig(BaseModel):
    """Everything one trial does. Unknown keys are rejected, never silently dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    # --- what a trial runs: the built-in classifier, or a plugin's training function
    trainable: str = BUILTIN_TRAINABLE

    # --- data
    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    split_seed: int = 23
    train_limit: int | None = Field(None, ge=1, description="use only the first N train images")
    eval_limit: int | None = Field(None, ge=1, description="use only the first N val/test images")
    resize: int | None = Field(None, ge=4, le=1024, description="resize every split to NxN")

    # --- model
    model: str = "cnn"
    activation: str = "relu"
    channels: tuple[int, ...] | None = Field(
        None, description="conv widths (cnn) or stem + 4 stage widths (resnet18); None: default")
    kernel_size: int = Field(3, ge=1, le=11)
    fc_depth: int = Field(1, ge=0, le=16, description="hidden fully connected layers")
    fc_width: int = Field(128, ge=1)
    fc_widths: tuple[int, ...] | None = Field(
        None, description="explicit hidden FC widths, e.g. [4096, 1024]; overrides fc_depth/width")
    batchnorm: bool = True
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    stem: Literal["cifar", "imagenet"] = "cifar"
    drop_stages: tuple[int, ...] = Field((), description="resnet18 stages (1-4) to remove")

    # --- augmentation (random per sample, batched on the trial's device)
    augment: tuple[str, ...] = ()
    flip_p: float = Field(0.5, ge=0.0, le=1.0)
    rotate_degrees: float = Field(15.0, ge=0.0, le=180.0)
    affine_shear: float = Field(10.0, ge=0.0, lt=90.0)
    affine_scale_min: float = Field(0.9, gt=0.0)
    affine_scale_max: float = Field(1.1, gt=0.0)
    jitter_brightness: float = Field(0.2, ge=0.0)
    jitter_contrast: float = Field(0.2, ge=0.0)
    jitter_saturation: float = Field(0.2, ge=0.0)
    crop_padding: int = Field(4, ge=0)
    elastic_alpha: float = Field(34.0, ge=0.0, description="displacement strength in pixels")
    elastic_sigma: float = Field(4.0, gt=0.0, description="smoothness of the displacement")

    # --- optimisation
    optimizer: str = "adam"
    lr: float = Field(1e-3, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0.0)
    schedule: str = "none"
    step_size: int = Field(1, ge=1, description="epochs between step-schedule decays")
    gamma: float = Field(0.5, gt=0.0, le=1.0, description="decay factor (step, exponential)")
    pct_start: float = Field(0.3, gt=0.0, lt=1.0, description="one-cycle warm-up fraction")
    label_smoothing: float = Field(
        0.0, ge=0.0, lt=1.0, description="of the training loss only; val/test loss stays plain")
    ema: float = Field(0.0, ge=0.0, lt=1.0,
                       description="decay of a weight EMA that val/test evaluate; 0: off")

    # --- evaluation (val and test alike)
    tta_flip: bool = Field(False, description="average the softmax of each image and its mirror")

    # --- loop
    epochs: int = Field(1, ge=1)
    batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(1024, ge=1)
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True

    @model_validator(mode="after")
    def _check_names_and_ranges(self) -> TrialConfig:
        TRAINABLES.check(self.trainable, "trainable")
        DATASETS.check(self.dataset, "dataset")
        MODELS.check(self.model, "model")
        ACTIVATIONS.check(self.activation, "activation")
        OPTIMIZERS.check(self.optimizer, "optimizer")
        SCHEDULES.check(self.schedule, "schedule")
        for i, name in enumerate(self.augment):
            AUGMENTATIONS.check(name, f"augment[{i}]")
        if self.affine_scale_min > self.affine_scale_max:
            raise UserError(
                "affine_scale: `affine_scale_min <= affine_scale_max` must hold, but got "
                f"(affine_scale_min={shown(self.affine_scale_min)}, "
                f"affine_scale_max={shown(self.affine_scale_max)})")
        if self.channels is not None and (not self.channels or min(self.channels) < 1):
            raise UserError(
                f"channels: every width must be >= 1, but got {shown(list(self.channels))}")
        if self.fc_widths is not None and any(w < 1 for w in self.fc_widths):
            raise UserError(
                f"fc_widths: every width must be >= 1, but got {shown(list(self.fc_widths))}")
        if self.model == "resnet18" and self.channels is not None and len(self.channels) != 5:
            raise UserError(
                "channels: resnet18 takes 5 widths (stem + 4 stages), e.g. [16, 16, 16, 32, 32],"
                f" but got {shown(list(self.channels))}")
        if any(s not in (1, 2, 3, 4) for s in self.drop_stages) or len(self.drop_stages) > 3:
            raise UserError(
                f"drop_stages: stages are numbered 1-4 and at least one must remain, but got "
                f"{shown(list(self.drop_stages))}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise UserError(
                f"device: allowed: auto, cpu, cuda, cuda:N; but got {shown(self.device)}")
        self._check_plugin_settings()
        return self

    def _check_plugin_settings(self) -> None:
        """Run the validators of the plugin entries this config names on their settings (each
        field's own type and bounds are checked as a trial setting already)."""
        named = [(TRAINABLES, self.trainable), (DATASETS, self.dataset), (MODELS, self.model),
                 *((AUGMENTATIONS, a) for a in self.augment)]
        for registry, name in named:
            model = _PLUGIN_SETTINGS.get((registry.kind, name))
            if model is None:
                continue
            try:
                model.model_validate({k: getattr(self, k) for k in model.model_fields})
            except ValidationError as err:
                first = err.errors()[0]
                loc = ".".join(str(p) for p in first["loc"]) or f"{registry.kind} {name}"
                raise UserError(f"{loc}: {first['msg'].lower()}") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return self.model_dump(mode="json")


# Plugin settings: each plugin entry's own pydantic model, and who declared each setting.
_PLUGIN_SETTINGS: dict[tuple[str, str], type[BaseModel]] = {}
_SETTING_OWNERS: dict[str, str] = {}
_BUILTIN_SETTINGS = tuple(TrialConfig.model_fields)


def add_settings(kind: str, name: str, settings: type[BaseModel], owner: str) -> tuple[str, ...]:
    """Make the fields of a plugin entry's settings model trial settings; their names.

    A setting may be shared by entries that declare it the same way (one settings class for
    two models); a built-in setting's name, or one declared differently elsewhere, is an error.
    """
    if not (isinstance(settings, type) and issubclass(settings, BaseModel)):
        raise UserError(f"{owner}: settings of {kind} '{name}' must be a pydantic BaseModel "
                        f"class, but got {shown(settings)}")
    fields = dict(settings.model_fields)
    for key, info in fields.items():
        if key in _BUILTIN_SETTINGS:
            raise UserError(f"{owner}: setting '{key}' of {kind} '{name}' is a built-in trial "
                            f"setting; read it with uses=('{key}',) or choose another name")
        if info.is_required():
            raise UserError(f"{owner}: setting '{key}' of {kind} '{name}' needs a default "
                            f"(every trial setting has one)")
        known = TrialConfig.model_fields.get(key)
        if known is not None and repr(known) != repr(info):
            raise UserError(f"{owner}: setting '{key}' of {kind} '{name}' is declared "
                            f"differently by {_SETTING_OWNERS[key]}; give it another name")
    for key, info in fields.items():
        # pydantic has no public way to add a field to a built class: a forced rebuild of
        # the one TrialConfig keeps every import of it, and its validators, in force.
        TrialConfig.__pydantic_fields__[key] = info
        _SETTING_OWNERS.setdefault(key, f"{kind} '{name}' ({owner})")
    TrialConfig.model_rebuild(force=True)
    _PLUGIN_SETTINGS[(kind, name)] = settings
    return tuple(fields)


def setting_owner(key: str) -> str | None:
    """Which plugin entry declared the setting ``key`` (None for a built-in setting)."""
    return _SETTING_OWNERS.get(key)


def format_validation_error(err: ValidationError, prefix: str = "") -> list[str]:
    """One line per problem: ``field: what is wrong (got value)``, with typo suggestions."""
    fields = list(TrialConfig.model_fields)
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        where = cut(f"{prefix}{loc}") if loc else prefix.rstrip(".") or "config"
        if e["type"] == "extra_forbidden":
            key = str(e["loc"][-1])
            hint = closest(key, fields) if len(key) <= MAX_SHOWN else None
            extra = f" (did you mean '{hint}'?)" if hint else ""
            lines.append(f"{where}: unknown setting{extra}")
            continue
        ctx_err = (e.get("ctx") or {}).get("error")
        if isinstance(ctx_err, UserError):
            lines.append(f"{prefix}{ctx_err}")
            continue
        lines.append(f"{where}: {e['msg'].lower()} (got {shown(e.get('input'))})")
    return lines


def parse_trial_config(values: dict[str, Any], prefix: str = "") -> TrialConfig:
    """Build a TrialConfig, turning every validation problem into one UserError line each."""
    try:
        return TrialConfig(**values)
    except ValidationError as err:
        raise UserError("\n".join(format_validation_error(err, prefix))) from None
