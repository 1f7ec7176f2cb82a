"""Contract tests generated from the MODELS and ACTIVATIONS registries, plus hand-checked sizes."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from hpsearch.trainables.config import ACTIVATIONS, MODELS, TrialConfig, parse_trial_config
from hpsearch.trainables.contract import check_model
from hpsearch.trainables.cost import count_params, dry_forward
from hpsearch.trainables.errors import UserError
from hpsearch.trainables.models import BasicBlock, ModelSpec, build_model, make_activation

# Small widths per model, so every contract test stays fast on CPU.
SMALL: dict[str, dict[str, Any]] = {
    "mlp": {"fc_widths": (16,)},
    "cnn": {"channels": (4, 8), "fc_width": 16},
    "resnet18": {"channels": (4, 4, 8, 8, 8)},
    "squeezenet1_1": {},
    "alexnet": {"channels": (4, 8, 8, 8, 8), "fc_widths": (16,)},
}
SHAPES = [(1, 28, 28), (3, 32, 32)]
CASES = [(name, "cifar", shape) for name in MODELS.names() for shape in SHAPES] + [
    ("resnet18", "imagenet", (3, 32, 32)),
    ("alexnet", "imagenet", (3, 64, 64)),
]


def small_config(model: str, **overrides: Any) -> TrialConfig:
    return TrialConfig(model=model, **{**SMALL[model], **overrides})


def check_trains(model: nn.Module, shape: tuple[int, int, int], num_classes: int = 10) -> None:
    """Forward gives [B, num_classes] finite logits; backward gives finite grads everywhere."""
    torch.manual_seed(0)
    out = model(torch.randn(2, *shape))
    assert out.shape == (2, num_classes)
    assert torch.isfinite(out).all()
    nn.functional.cross_entropy(out, torch.tensor([0, 1])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("name", MODELS.names())
def test_every_declared_model_has_an_implementation(name: str) -> None:
    spec = MODELS.get(name)
    assert isinstance(spec, ModelSpec) and callable(spec.build)
    assert set(spec.uses) <= set(TrialConfig.model_fields)


@pytest.mark.parametrize("name", MODELS.names())
def test_every_registered_model_keeps_the_contract(name: str) -> None:
    """The contract a plugin author runs on their own model (``hpsearch.check_model``)."""
    cost = check_model(name, **SMALL[name])
    assert cost["params"] > 0 and cost["macs"] > 0


@pytest.mark.parametrize("name", ACTIVATIONS.names())
def test_every_declared_activation_has_an_implementation(name: str) -> None:
    assert isinstance(make_activation(name), nn.Module)


@pytest.mark.parametrize(("name", "stem", "shape"), CASES,
                         ids=[f"{n}-{s}-{'x'.join(map(str, sh))}" for n, s, sh in CASES])
def test_forward_backward(name: str, stem: str, shape: tuple[int, int, int]) -> None:
    model = build_model(small_config(name, stem=stem), shape[0], shape[1:], 10)
    check_trains(model, shape)


@pytest.mark.parametrize("model", ["cnn", "resnet18"])
@pytest.mark.parametrize("activation", ACTIVATIONS.names())
def test_every_activation_builds_and_trains(model: str, activation: str) -> None:
    net = build_model(small_config(model, activation=activation), 1, (28, 28), 10)
    kind = type(make_activation(activation))
    assert any(isinstance(m, kind) for m in net.modules())
    check_trains(net, (1, 28, 28))


def test_softmax_activation_is_over_channels() -> None:
    assert make_activation("softmax").dim == 1


def test_squeezenet_takes_the_activation() -> None:
    net = build_model(small_config("squeezenet1_1", activation="gelu"), 1, (28, 28), 10)
    assert not any(isinstance(m, nn.ReLU) for m in net.features.modules())
    assert any(isinstance(m, nn.GELU) for m in net.features.modules())


def test_unknown_activation_is_a_user_error() -> None:
    with pytest.raises(UserError, match="did you mean 'relu'"):
        make_activation("relux")
    with pytest.raises(UserError, match="unknown activation"):
        parse_trial_config({"activation": "swish"})


def test_build_model_leaves_the_model_in_train_mode() -> None:
    model = build_model(small_config("cnn"), 1, (28, 28), 10)
    assert all(m.training for m in model.modules())
    assert all(p.device.type == "cpu" for p in model.parameters())


@pytest.mark.parametrize("batchnorm", [True, False])
def test_mlp_params_by_hand(batchnorm: bool) -> None:
    config = TrialConfig(model="mlp", fc_depth=2, fc_width=32, batchnorm=batchnorm)
    model = build_model(config, 1, (28, 28), 10)
    per_unit = 2 if batchnorm else 1  # BatchNorm1d: weight + bias replace the Linear bias
    expected = 784 * 32 + per_unit * 32 + 32 * 32 + per_unit * 32 + 32 * 10 + 10
    assert count_params(model) == expected


def test_fc_widths_override_depth_and_width() -> None:
    config = TrialConfig(model="mlp", fc_widths=(20, 7), fc_depth=5, fc_width=99, batchnorm=False)
    model = build_model(config, 3, (8, 8), 4)
    assert count_params(model) == 192 * 20 + 20 + 20 * 7 + 7 + 7 * 4 + 4


def test_mlp_without_hidden_layers_is_linear() -> None:
    model = build_model(TrialConfig(model="mlp", fc_depth=0), 1, (28, 28), 10)
    assert count_params(model) == 784 * 10 + 10


@pytest.mark.parametrize(("c1", "c2"), [(4, 8), (16, 32)])
def test_cnn_params_by_hand(c1: int, c2: int) -> None:
    config = TrialConfig(model="cnn", channels=(c1, c2), fc_width=16, batchnorm=False)
    model = build_model(config, 1, (28, 28), 10)
    convs = (1 * c1 * 9 + c1) + (c1 * c2 * 9 + c2)
    fcs = (c2 * 7 * 7 * 16 + 16) + (16 * 10 + 10)  # 28 -> 14 -> 7
    assert count_params(model) == convs + fcs


def test_default_cnn_layout() -> None:
    model = build_model(TrialConfig(), 1, (28, 28), 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (1, 32, (3, 3)), (32, 64, (3, 3))]
    assert model.forward_features(torch.zeros(2, 1, 28, 28)).shape == (2, 64, 7, 7)


def test_cnn_stops_pooling_at_one_pixel() -> None:
    config = TrialConfig(model="cnn", channels=(4, 4, 4, 4, 4, 4), kernel_size=5)
    model = build_model(config, 1, (28, 28), 10)  # 28 -> 14 -> 7 -> 3 -> 1 -> 1 -> 1
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 4
    check_trains(model, (1, 28, 28))


def test_resnet18_has_eight_blocks_and_drop_stages_removes_them() -> None:
    full = build_model(small_config("resnet18"), 3, (32, 32), 10)
    assert sum(isinstance(m, BasicBlock) for m in full.modules()) == 8
    config = small_config("resnet18", channels=(4, 4, 8, 16, 16), drop_stages=(2, 3))
    dropped = build_model(config, 3, (32, 32), 10)
    assert sum(isinstance(m, BasicBlock) for m in dropped.modules()) == 4
    stages = dict(dropped.features.named_children())
    assert list(stages) == ["stem", "stage1", "stage4"]
    assert stages["stage4"][0].conv1.in_channels == 4  # takes stage 1's width
    check_trains(dropped, (3, 32, 32))


def test_resnet18_stem_changes_the_spatial_path() -> None:
    x = torch.zeros(2, 3, 32, 32)
    cifar = build_model(small_config("resnet18", stem="cifar"), 3, (32, 32), 10)
    imagenet = build_model(small_config("resnet18", stem="imagenet"), 3, (32, 32), 10)
    assert cifar.forward_features(x).shape == (2, 8, 4, 4)  # 32 / 8
    assert imagenet.forward_features(x).shape == (2, 8, 1, 1)  # 32 / 4 / 8
    assert cifar.features.stem[0].kernel_size == (3, 3)
    assert imagenet.features.stem[0].kernel_size == (7, 7)


def test_resnet18_fc_layers_only_from_fc_widths() -> None:
    plain = build_model(small_config("resnet18"), 3, (32, 32), 10)
    assert sum(isinstance(m, nn.Linear) for m in plain.modules()) == 1
    hidden = build_model(small_config("resnet18", fc_widths=(32, 16)), 3, (32, 32), 10)
    assert sum(isinstance(m, nn.Linear) for m in hidden.modules()) == 3


def test_resnet18_default_widths() -> None:
    with torch.device("meta"):
        model = build_model(TrialConfig(model="resnet18", stem="imagenet"), 3, (224, 224), 1000)
    assert count_params(model) == 11_689_512  # torchvision's resnet18


def test_alexnet_stem_changes_the_spatial_path() -> None:
    cifar = build_model(small_config("alexnet", stem="cifar"), 3, (32, 32), 10)
    assert cifar.forward_features(torch.zeros(2, 3, 32, 32)).shape == (2, 8, 4, 4)
    imagenet = build_model(small_config("alexnet", stem="imagenet"), 3, (64, 64), 10)
    assert imagenet.forward_features(torch.zeros(2, 3, 64, 64)).shape == (2, 8, 1, 1)


def test_alexnet_params_by_hand() -> None:
    config = TrialConfig(model="alexnet", stem="imagenet", channels=(64, 196, 384, 256, 256),
                         fc_widths=(4096, 1024))
    with torch.device("meta"):
        model = build_model(config, 3, (224, 224), 1000)
    assert count_params(model) == 45_463_084


def test_alexnet_default_widths_match_torchvision() -> None:
    with torch.device("meta"):
        model = build_model(TrialConfig(model="alexnet", stem="imagenet"), 3, (224, 224), 1000)
    assert count_params(model) == 61_100_840  # torchvision's alexnet


def test_alexnet_needs_five_widths() -> None:
    with pytest.raises(UserError, match="alexnet takes 5 conv widths"):
        build_model(TrialConfig(model="alexnet", channels=(8, 8)), 3, (32, 32), 10)


@pytest.mark.parametrize(("config", "shape", "minimum"), [
    (small_config("alexnet", stem="imagenet"), (1, 28, 28), 63),
    (small_config("alexnet", stem="cifar"), (3, 6, 6), 8),
    (small_config("squeezenet1_1"), (3, 16, 16), 17),
    (small_config("squeezenet1_1"), (3, 64, 12), 17),
])
def test_too_small_input_is_a_one_line_user_error(
    config: TrialConfig, shape: tuple[int, int, int], minimum: int
) -> None:
    with pytest.raises(UserError) as info:
        build_model(config, shape[0], shape[1:], 10)
    message = str(info.value)
    assert "\n" not in message
    assert f"{config.model}" in message and f"{shape[1]}x{shape[2]}" in message
    assert f"at least {minimum}x{minimum}" in message and f"set resize: {minimum}" in message
    build_model(config, shape[0], (minimum, minimum), 10)  # the suggestion works


@pytest.mark.parametrize("name", MODELS.names())
def test_default_models_take_28x28_images(name: str) -> None:
    """Every model at its default widths and (cifar) stem gives 10 logits for a 28x28
    grayscale image: what the sweeps start from."""
    with torch.device("meta"):
        model = build_model(TrialConfig(model=name), 1, (28, 28), 10)
    assert dry_forward(model, (1, 28, 28)).shape == (1, 10)
