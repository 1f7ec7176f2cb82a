"""Image classifiers by name: ``build_model(config, ...)`` looks the model up in ``MODELS``.

Each entry is a small frozen :class:`ModelSpec`: the model settings it reads (so a report or an
MLflow params table can show only the settings that mattered) and its builder. Every builder
takes ``(config, in_channels, image_size, num_classes)`` and returns an ``nn.Module`` mapping
``[B, C, H, W]`` to ``[B, num_classes]`` logits. ``build_model`` then runs a shape-only forward
pass on the meta device, so an input too small for the model is a one-line
:class:`~trainables.errors.UserError` at build time rather than a crash mid-training.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from hpsearch.trainables.config import ACTIVATIONS, MODELS, TrialConfig
from hpsearch.trainables.cost import dry_forward, model_cost
from hpsearch.trainables.errors import UserError

if TYPE_CHECKING:
    from hpsearch.trainables.bundle import DataBundle

__all__ = ["Classifier", "ModelSpec", "build_model", "fc_widths", "make_activation",
           "min_image_size", "trial_cost"]

ACTIVATIONS.register("relu")(nn.ReLU)
ACTIVATIONS.register("gelu")(nn.GELU)
ACTIVATIONS.register("sigmoid")(nn.Sigmoid)
ACTIVATIONS.register("tanh")(nn.Tanh)
ACTIVATIONS.register("elu")(nn.ELU)
ACTIVATIONS.register("leaky_relu")(nn.LeakyReLU)
ACTIVATIONS.register("silu")(nn.SiLU)
# A softmax over channels as a hidden activation: odd, but people try it.
ACTIVATIONS.register("softmax")(functools.partial(nn.Softmax, dim=1))

_MAX_SIZE = 1024  # the largest `resize` TrialConfig accepts

Builder = Callable[[TrialConfig, int, tuple[int, int], int], nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    """A model entry: the model settings it reads and its builder.

    ``fc_fallback``: the hidden FC widths are :func:`fc_widths` -- ``fc_widths`` if set, else
    ``fc_depth`` x ``fc_width`` -- so which of those it reads depends on the config.
    """

    uses: tuple[str, ...]
    build: Builder
    fc_fallback: bool = False

    def reads(self, config: TrialConfig) -> tuple[str, ...]:
        """The model settings that matter for ``config`` (the rest are unused defaults)."""
        if self.fc_fallback and not config.fc_widths:
            return tuple(k for k in self.uses if k != "fc_widths") + ("fc_depth", "fc_width")
        return self.uses


def _model(name: str, uses: tuple[str, ...], *,
           fc_fallback: bool = False) -> Callable[[Builder], Builder]:
    """Decorator registering a builder as model ``name``, reading the settings ``uses``."""

    def decorate(build: Builder) -> Builder:
        MODELS.register(name)(ModelSpec(uses, build, fc_fallback))
        return build

    return decorate


def make_activation(name: str) -> nn.Module:
    """A fresh activation module by registry name (unknown names raise a UserError)."""
    return ACTIVATIONS.get(name, "activation")()


def fc_widths(config: TrialConfig) -> tuple[int, ...]:
    """Hidden fully connected widths: ``fc_widths`` if set, else ``fc_depth`` x ``fc_width``."""
    if config.fc_widths is not None:
        return tuple(config.fc_widths)
    return (config.fc_width,) * config.fc_depth


def build_model(
    config: TrialConfig, in_channels: int, image_size: tuple[int, int], num_classes: int
) -> nn.Module:
    """The model ``config.model`` for ``[B, in_channels, *image_size]`` inputs, checked by shape.

    Raises:
        UserError: If the images are too small for the model (names the size to ``resize`` to).
    """
    spec: ModelSpec = MODELS.get(config.model, "model")
    model = spec.build(config, in_channels, image_size, num_classes)
    shape = (in_channels, *image_size)
    try:
        out = dry_forward(model, shape)
    except RuntimeError:
        minimum = min_image_size(model, in_channels)
        if minimum is None:
            raise
        has_stem = "stem" in spec.uses
        stem = f" (stem {config.stem})" if has_stem else ""
        other = ", or stem: cifar" if has_stem and config.stem == "imagenet" else ""
        raise UserError(
            f"resize: model '{config.model}'{stem} needs images of at least "
            f"{minimum}x{minimum}, but got {image_size[0]}x{image_size[1]}; "
            f"set resize: {minimum} or larger{other}") from None
    if tuple(out.shape) != (1, num_classes):
        raise RuntimeError(f"model '{config.model}' returned shape {tuple(out.shape)} for input "
                           f"{shape}, expected (1, {num_classes})")
    return model


def trial_cost(config: TrialConfig, bundle: DataBundle) -> dict[str, int]:
    """Parameters and MACs of the model a trial config builds for this data, measured on the
    meta device (no memory, even for 60M-parameter models). UserError if it cannot be built."""
    size = (config.resize, config.resize) if config.resize else bundle.image_size
    with torch.device("meta"):
        model = build_model(config, bundle.in_channels, size, bundle.num_classes)
    return model_cost(model, (bundle.in_channels, *size))


def min_image_size(model: nn.Module, in_channels: int) -> int | None:
    """The smallest square input side the model accepts, or None if none up to 1024 works."""

    def fits(side: int) -> bool:
        try:
            dry_forward(model, (in_channels, side, side))
        except RuntimeError:
            return False
        return True

    if not fits(_MAX_SIZE):
        return None
    low, high = 1, _MAX_SIZE  # invariant: fits(high); the minimum is in [low, high]
    while low < high:
        mid = (low + high) // 2
        if fits(mid):
            high = mid
        else:
            low = mid + 1
    return high


class Classifier(nn.Module):
    """``features`` (image -> feature map or vector) followed by ``head`` (-> logits)."""

    def __init__(self, features: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The features before the head (a ``[B, C, H, W]`` map for convolutional models)."""
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _head(
    in_features: int,
    widths: Sequence[int],
    num_classes: int,
    activation: str,
    dropout: float,
    *,
    batchnorm: bool = False,
    dropout_first: bool = False,
) -> list[nn.Module]:
    """Hidden ``Linear -> [BatchNorm1d] -> activation -> [Dropout]`` layers, then the output."""
    layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout_first and dropout else []
    for width in widths:
        layers.append(nn.Linear(in_features, width, bias=not batchnorm))
        if batchnorm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(make_activation(activation))
        if dropout:
            layers.append(nn.Dropout(dropout))
        in_features = width
    layers.append(nn.Linear(in_features, num_classes))
    return layers


@_model("mlp", ("fc_widths", "batchnorm", "dropout"), fc_fallback=True)
def mlp(
    config: TrialConfig, in_channels: int, image_size: tuple[int, int], num_classes: int
) -> nn.Module:
    """Flatten, then hidden FC layers (BatchNorm1d if ``batchnorm``), then the output layer."""
    in_features = in_channels * image_size[0] * image_size[1]
    head = _head(in_features, fc_widths(config), num_classes, config.activation, config.dropout,
                 batchnorm=config.batchnorm)
    return Classifier(nn.Flatten(), nn.Sequential(*head))


@_model("cnn", ("channels", "kernel_size", "fc_widths", "batchnorm", "dropout"),
        fc_fallback=True)
def cnn(
    config: TrialConfig, in_channels: int, image_size: tuple[int, int], num_classes: int
) -> nn.Module:
    """Small CNN: ``Conv -> [BN] -> act -> MaxPool(2)`` per width in ``channels``, then FC.

    The default, ``channels`` (32, 64) and one hidden layer of 128, reaches ~90% test accuracy
    on Fashion-MNIST after one epoch (Adam, lr 1e-3, batch 64). Pooling stops once the map is
    1 pixel wide; BatchNorm (if ``batchnorm``) follows every conv and hidden FC layer.
    """
    k = config.kernel_size
    height, width = image_size
    features: list[nn.Module] = []
    for out_channels in config.channels or (32, 64):
        features.append(nn.Conv2d(in_channels, out_channels, k, padding=k // 2,
                                  bias=not config.batchnorm))
        height, width = height + 2 * (k // 2) - k + 1, width + 2 * (k // 2) - k + 1
        if config.batchnorm:
            features.append(nn.BatchNorm2d(out_channels))
        features.append(make_activation(config.activation))
        if min(height, width) >= 2:  # pool while the map still has something to pool
            features.append(nn.MaxPool2d(2))
            height, width = height // 2, width // 2
        in_channels = out_channels
    # BatchNorm1d in the hidden FC layers too: +1.5 points on Fashion-MNIST after one epoch.
    head = _head(in_channels * height * width, fc_widths(config), num_classes,
                 config.activation, config.dropout, batchnorm=config.batchnorm)
    return Classifier(nn.Sequential(*features), nn.Sequential(nn.Flatten(), *head))


class BasicBlock(nn.Module):
    """The ResNet-18 residual block: two 3x3 convs, a 1x1 projection when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, activation: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.act1 = make_activation(activation)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.act2 = make_activation(activation)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.downsample(x))


@_model("resnet18", ("channels", "stem", "drop_stages", "fc_widths", "dropout"))
def resnet18(
    config: TrialConfig, in_channels: int, image_size: tuple[int, int], num_classes: int
) -> nn.Module:
    """ResNet-18 with per-stage widths ``channels`` = (stem, stage1..4) and ``drop_stages``.

    ``stem="cifar"`` is a stride-1 3x3 conv; ``stem="imagenet"`` a stride-2 7x7 conv and a
    stride-2 max-pool. Stages 2-4 downsample by 2. Hidden FC layers only if ``fc_widths`` is set.
    """
    stem_width, *stage_widths = config.channels or (64, 64, 128, 256, 512)
    act = config.activation
    if config.stem == "imagenet":
        stem = nn.Sequential(nn.Conv2d(in_channels, stem_width, 7, 2, 3, bias=False),
                             nn.BatchNorm2d(stem_width), make_activation(act),
                             nn.MaxPool2d(3, 2, 1))
    else:
        stem = nn.Sequential(nn.Conv2d(in_channels, stem_width, 3, 1, 1, bias=False),
                             nn.BatchNorm2d(stem_width), make_activation(act))
    layers: OrderedDict[str, nn.Module] = OrderedDict(stem=stem)
    width = stem_width
    for stage, out_width in enumerate(stage_widths, start=1):
        if stage in config.drop_stages:
            continue
        stride = 1 if stage == 1 else 2
        layers[f"stage{stage}"] = nn.Sequential(BasicBlock(width, out_width, stride, act),
                                                BasicBlock(out_width, out_width, 1, act))
        width = out_width
    head = _head(width, config.fc_widths or (), num_classes, act, config.dropout,
                 dropout_first=True)
    model = Classifier(nn.Sequential(layers),
                       nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), *head))
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return model


@_model("squeezenet1_1", ("dropout",))
def squeezenet1_1(
    config: TrialConfig, in_channels: int, image_size: tuple[int, int], num_classes: int
) -> nn.Module:
    """torchvision's SqueezeNet 1.1 (untrained), first conv adapted to ``in_channels``.

    ``activation`` replaces the ReLUs inside ``features``; the classifier keeps its ReLU (it acts
    on the logits). Needs images of at least 17x17.
    """
    import torchvision  # here: importing it takes longer than torch (torch._dynamo, via ops)

    model = torchvision.models.squeezenet1_1(weights=None, num_classes=num_classes,
                                             dropout=config.dropout)
    if in_channels != 3:
        conv = nn.Conv2d(in_channels, 64, kernel_size=3, stride=2)
        nn.init.kaiming_uniform_(conv.weight)
        nn.init.zeros_(conv.bias)
        model.features[0] = conv
    if config.activation != "relu":
        for parent in model.features.modules():
            for name, child in parent.named_children():
                if isinstance(child, nn.ReLU):
                    setattr(parent, name, make_activation(config.activation))
    return model


@_model("alexnet", ("channels", "stem", "fc_widths", "dropout"))
def alexnet(
    config: TrialConfig, in_channels: int, image_size: tuple[int, int], num_classes: int
) -> nn.Module:
    """AlexNet: 5 convs of widths ``channels``, then FC (default hidden widths 4096, 4096).

    ``stem="imagenet"`` is torchvision's layout (11x11 stride 4, needs >= 63 px);
    ``stem="cifar"`` uses stride-1 3x3 convs with 2x2 max-pools after conv 1, 2 and 5 and pools
    to 2x2, for 28-32 px images. No BatchNorm (as the original), so ``batchnorm`` is unused.
    """
    widths = config.channels or (64, 192, 384, 256, 256)
    if len(widths) != 5:
        raise UserError(f"channels: alexnet takes 5 conv widths, e.g. [64, 192, 384, 256, 256], "
                        f"but got {list(widths)}")
    act = config.activation
    if config.stem == "imagenet":
        kernels, strides, paddings = (11, 5, 3, 3, 3), (4, 1, 1, 1, 1), (2, 2, 1, 1, 1)
        pool, pooled = functools.partial(nn.MaxPool2d, 3, 2), 6
    else:
        kernels, strides, paddings = (3,) * 5, (1,) * 5, (1,) * 5
        pool, pooled = functools.partial(nn.MaxPool2d, 2), 2
    features: list[nn.Module] = []
    for i, out_channels in enumerate(widths):
        features += [nn.Conv2d(in_channels, out_channels, kernels[i], strides[i], paddings[i]),
                     make_activation(act)]
        if i in (0, 1, 4):
            features.append(pool())
        in_channels = out_channels
    hidden = config.fc_widths if config.fc_widths is not None else (4096, 4096)
    head = _head(in_channels * pooled * pooled, hidden, num_classes, act, config.dropout,
                 dropout_first=True)
    return Classifier(nn.Sequential(*features),
                      nn.Sequential(nn.AdaptiveAvgPool2d(pooled), nn.Flatten(), *head))
