"""Parameter and MAC counts checked by hand on layers small enough to count on paper."""

from __future__ import annotations

import torch
from torch import nn

from hpsearch.trainables.bundle import DataBundle
from hpsearch.trainables.config import TrialConfig
from hpsearch.trainables.cost import constraint_violation, count_macs, count_params, dry_forward
from hpsearch.trainables.models import build_model, trial_cost


def test_conv5x5() -> None:
    conv = nn.Conv2d(1, 1, 5, bias=False)
    assert count_params(conv) == 25
    assert count_macs(conv, (1, 32, 32)) == 28 * 28 * 25 == 19_600


def test_two_stacked_conv3x3() -> None:
    convs = nn.Sequential(nn.Conv2d(1, 1, 3, bias=False), nn.Conv2d(1, 1, 3, bias=False))
    assert count_params(convs) == 18
    assert count_macs(convs, (1, 32, 32)) == 30 * 30 * 9 + 28 * 28 * 9 == 15_156


def test_linear() -> None:
    linear = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    assert count_params(linear) == 7_850
    assert count_macs(linear, (1, 28, 28)) == 7_840


def test_norm_activation_and_pooling_cost_nothing() -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    block = nn.Sequential(conv, nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                          nn.AdaptiveAvgPool2d(1))
    assert count_macs(block, (3, 16, 16)) == count_macs(conv, (3, 16, 16)) == 16 * 16 * 8 * 27


def test_default_cnn_by_hand() -> None:
    model = build_model(TrialConfig(), 1, (28, 28), 10)
    conv1 = 28 * 28 * 32 * (1 * 3 * 3)
    conv2 = 14 * 14 * 64 * (32 * 3 * 3)
    fc1 = 64 * 7 * 7 * 128
    fc2 = 128 * 10
    assert count_macs(model, (1, 28, 28)) == conv1 + conv2 + fc1 + fc2 == 4_241_152
    # convs without bias (BatchNorm follows), hidden Linear without bias (BatchNorm1d follows)
    params = 32 * 9 + 2 * 32 + 32 * 64 * 9 + 2 * 64 + 3136 * 128 + 2 * 128 + 128 * 10 + 10
    assert count_params(model) == params


def test_only_trainable_parameters_count() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    model[0].requires_grad_(False)
    assert count_params(model) == 3 * 2 + 2


def test_counting_leaves_the_model_untouched() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5))
    model[2].eval()  # a mixed train/eval state must survive
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_macs(model, (1, 8, 8))
    assert [m.training for m in model] == [True, True, False]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_meta_models_are_counted_without_memory() -> None:
    with torch.device("meta"):
        model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 224 * 224, 4096))
    assert count_params(model) == 3 * 224 * 224 * 4096 + 4096
    assert count_macs(model, (3, 224, 224)) == 3 * 224 * 224 * 4096


def test_dry_forward_gives_the_output_shape() -> None:
    out = dry_forward(nn.Conv2d(3, 5, 3), (3, 10, 12))
    assert out.shape == (1, 5, 8, 10)
    assert out.device.type == "meta"


class NoMetaConv(nn.Conv2d):
    """A conv whose forward has no meta implementation (as some custom ops do)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "meta":
            raise NotImplementedError("no meta kernel")
        return super().forward(x)


def test_ops_without_meta_kernels_fall_back_to_a_real_forward() -> None:
    model = nn.Sequential(nn.Conv2d(1, 1, 3, bias=False), NoMetaConv(1, 1, 3, bias=False))
    assert count_macs(model, (1, 32, 32)) == 15_156  # the failed meta attempt is not counted
    assert dry_forward(model, (1, 32, 32)).shape == (1, 1, 28, 28)


def _bundle(channels: int, side: int, num_classes: int) -> DataBundle:
    x = torch.zeros(2, channels, side, side, dtype=torch.uint8)
    y = torch.zeros(2, dtype=torch.int64)
    return DataBundle(name="blank", classes=tuple(map(str, range(num_classes))), train_x=x,
                      train_y=y, val_x=x, val_y=y, test_x=x, test_y=y, mean=(0.5,) * channels,
                      std=(0.25,) * channels)


def test_trial_cost_is_the_model_the_config_builds_for_the_data() -> None:
    bundle = _bundle(1, 28, 10)
    assert trial_cost(TrialConfig(), bundle) == {  # the default CNN, as counted by hand above
        "params": count_params(build_model(TrialConfig(), 1, (28, 28), 10)), "macs": 4_241_152}
    resized = trial_cost(TrialConfig(resize=56), bundle)
    conv1, conv2 = 56 * 56 * 32 * 9, 28 * 28 * 64 * (32 * 9)
    assert resized["macs"] == conv1 + conv2 + 64 * 14 * 14 * 128 + 128 * 10


def test_trial_cost_of_a_model_too_big_to_allocate_costs_no_memory() -> None:
    config = TrialConfig(model="alexnet", stem="imagenet")
    assert trial_cost(config, _bundle(3, 224, 1000))["params"] == 61_100_840


def test_constraint_violation_names_the_first_limit_broken() -> None:
    cost = {"params": 1_500, "macs": 20_000}
    assert constraint_violation(cost, {"max_params": None, "max_macs": None}) is None
    assert constraint_violation(cost, {"max_params": 1_500, "max_macs": 20_000}) is None
    assert constraint_violation(cost, {"max_params": 1_000, "max_macs": 10_000}) == (
        "params 1,500 > max_params 1,000")
    assert constraint_violation(cost, {"max_macs": 19_999}) == "macs 20,000 > max_macs 19,999"
