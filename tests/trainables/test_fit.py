"""The training loop on tiny real-format data: every optimizer, schedule, dataset; divergence,
determinism and resume."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from hpsearch.trainables.config import AUGMENTATIONS, DATASETS, OPTIMIZERS, SCHEDULES, TrialConfig
from hpsearch.trainables.cost import count_macs, count_params
from hpsearch.trainables.errors import UserError
from hpsearch.trainables.fit import console_reporter, fit
from hpsearch.trainables.models import build_model
from hpsearch.trainables.optim import build_optimizer, build_schedule
from tests.trainables.conftest import TINY


def _config(mnist: dict[str, Any], **kw: Any) -> TrialConfig:
    return TrialConfig(dataset="mnist", data_dir=mnist["data_dir"], **{**TINY, **kw})


def test_fit_learns_and_reports_every_epoch(mnist: dict[str, Any]) -> None:
    seen: list[dict[str, Any]] = []
    result = fit(_config(mnist, epochs=3), lambda m, s: seen.append(m), data=mnist["bundle"])
    assert result.status == "completed"
    assert [m["epoch"] for m in seen] == [1, 2, 3]
    for m in seen:
        for key in ("train_loss", "train_top1", "train_top3", "val_loss", "val_top1", "val_top3",
                    "lr", "epoch_seconds", "images_per_second", "params", "macs"):
            assert key in m and math.isfinite(m[key]), key
        assert 0 <= m["val_top1"] <= m["val_top3"] <= 1
    last = seen[-1]
    assert last["status"] == "completed" and seen[0]["status"] == "running"
    assert last["val_top1"] > 0.5  # 10 classes: chance is 0.1
    cm = torch.tensor(last["test_confusion"])
    assert cm.shape == (10, 10) and cm.sum() == len(mnist["bundle"].test_y)
    assert last["test_classes"] == list(mnist["bundle"].classes)  # the matrix's row names
    assert abs(cm.diag().sum().item() / cm.sum().item() - last["test_top1"]) < 1e-6
    assert (last["test_precision"], last["test_recall"], last["test_f1"]) == pytest.approx(
        _macro_scores(last["test_confusion"]))


def _macro_scores(cm: list[list[int]]) -> tuple[float, float, float]:
    """Macro precision, recall and F1 from ``cm[true][predicted]``, the textbook way."""
    k = len(cm)
    precision, recall, f1 = [], [], []
    for c in range(k):
        hits = cm[c][c]
        predicted = sum(cm[t][c] for t in range(k))
        actual = sum(cm[c])
        p = hits / predicted if predicted else 0.0
        r = hits / actual if actual else 0.0
        precision.append(p)
        recall.append(r)
        f1.append(2 * p * r / (p + r) if p + r else 0.0)
    return sum(precision) / k, sum(recall) / k, sum(f1) / k


@pytest.mark.parametrize("optimizer", OPTIMIZERS.names())
def test_every_optimizer_trains(mnist: dict[str, Any], optimizer: str) -> None:
    lr = 0.05 if optimizer == "sgd" else 1e-3
    result = fit(_config(mnist, optimizer=optimizer, lr=lr, epochs=1), data=mnist["bundle"])
    assert result.status == "completed"
    assert result.metrics["train_loss"] < math.log(10)  # below a uniform guess


@pytest.mark.parametrize("schedule", SCHEDULES.names())
def test_every_schedule_moves_the_lr_as_named(mnist: dict[str, Any], schedule: str) -> None:
    seen: list[float] = []
    fit(_config(mnist, schedule=schedule, epochs=3, gamma=0.5, step_size=1),
        lambda m, s: seen.append(m["lr"]), data=mnist["bundle"])
    if schedule == "none":
        assert seen == [1e-3] * 3
    elif schedule in ("step", "exponential"):  # per-epoch decay by gamma
        assert seen == pytest.approx([1e-3, 5e-4, 2.5e-4])
    elif schedule == "cosine":  # per batch, from lr to 0 over all steps
        steps = math.ceil(len(mnist["bundle"].train_y) / TINY["batch_size"])
        total = 3 * steps  # the lr reported is the one the epoch's last batch used
        assert seen == pytest.approx(
            [0.5e-3 * (1 + math.cos(math.pi * (e * steps - 1) / total)) for e in (1, 2, 3)])
    else:  # one-cycle: warm-up to lr over the first 30 %, then annealing to ~0
        assert 0.9e-3 < seen[0] <= 1e-3 and seen[0] > seen[1] > seen[2] and seen[2] < 1e-6


def test_exponential_schedule_matches_the_classroom_gamma(mnist: dict[str, Any]) -> None:
    config = _config(mnist, schedule="exponential", gamma=0.911)
    opt = build_optimizer(torch.nn.Linear(2, 2).parameters(), config)
    sched, per_batch = build_schedule(opt, config, steps_per_epoch=10)
    for _ in range(3):
        sched.step()
    assert not per_batch and opt.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.911**3)


def test_sgd_nesterov_without_momentum_is_a_user_error(mnist: dict[str, Any]) -> None:
    with pytest.raises(UserError, match="nesterov"):
        fit(_config(mnist, optimizer="sgd", nesterov=True, momentum=0.0), data=mnist["bundle"])


def test_diverging_trial_ends_as_diverged_not_a_crash(mnist: dict[str, Any]) -> None:
    seen: list[dict[str, Any]] = []
    result = fit(_config(mnist, optimizer="sgd", lr=1e6, momentum=0.9, batchnorm=False,
                         epochs=3), lambda m, s: seen.append(m), data=mnist["bundle"])
    assert result.status == "diverged"
    assert seen[-1]["status"] == "diverged" and len(seen) == 1  # stops at once
    assert not math.isfinite(seen[-1]["train_loss"])
    assert "test_top1" not in seen[-1]


class _Killed(Exception):
    """Raised by a reporter to end a fit after an epoch, as a killed trial ends."""


def _first_epoch(config: TrialConfig, data: Any, keep: Any = None) -> dict[str, Any]:
    """Epoch 1 of ``fit(config)`` (``keep(metrics, make_state)`` sees it), the rest not run."""
    seen: list[dict[str, Any]] = []

    def report(m: dict[str, Any], make_state: Any) -> None:
        seen.append(m)
        if keep is not None:
            keep(m, make_state)
        raise _Killed

    with pytest.raises(_Killed):
        fit(config, report, data=data)
    return seen[0]


def test_deterministic_under_a_seed_on_cpu(mnist: dict[str, Any]) -> None:
    config = _config(mnist, augment=("hflip", "crop"), dropout=0.2)
    a = fit(config, data=mnist["bundle"]).history
    b = fit(config, data=mnist["bundle"]).history
    c = _first_epoch(_config(mnist, augment=("hflip", "crop"), dropout=0.2, seed=1),
                     mnist["bundle"])
    keys = ("train_loss", "val_loss", "test_loss")
    assert [[h.get(k) for k in keys] for h in a] == [[h.get(k) for k in keys] for h in b]
    assert a[0]["train_loss"] != c["train_loss"]  # another seed trains otherwise


@pytest.mark.parametrize("option", [{}, {"ema": 0.9}], ids=["plain", "ema"])
def test_resumed_trial_equals_an_uninterrupted_one(mnist: dict[str, Any],
                                                   option: dict[str, Any]) -> None:
    # With `ema`, val and test evaluate the weight average: the checkpoint carries it on.
    config = _config(mnist, epochs=3, schedule="onecycle", augment=("rotate",), **option)
    full = fit(config, data=mnist["bundle"]).history
    states: list[dict[str, Any]] = []

    def keep_epoch_1(m: dict[str, Any], make_state: Any) -> None:
        # A round trip through torch.save/load(weights_only=True), as the adapter does.
        states.append(_round_trip(make_state()))

    _first_epoch(config, mnist["bundle"], keep_epoch_1)  # then the trial is killed
    resumed = fit(config, data=mnist["bundle"], state=states[0]).history
    assert [h["epoch"] for h in resumed] == [1, 2, 3]
    for a, b in zip(full[1:], resumed[1:], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-6)
        assert a["val_top1"] == b["val_top1"]


def test_a_checkpoint_without_ema_state_still_loads(mnist: dict[str, Any]) -> None:
    config = _config(mnist, ema=0.9)
    states: list[dict[str, Any]] = []
    full = fit(config, lambda m, make_state: states.append(_round_trip(make_state())),
               data=mnist["bundle"])
    assert states[0]["ema"]["n_averaged"].item() > 0
    old = {k: v for k, v in states[0].items() if k != "ema"}  # saved before `ema` existed
    resumed = fit(config, data=mnist["bundle"], state=old).history
    assert [h["epoch"] for h in resumed] == [1, 2] and resumed[-1]["status"] == "completed"
    assert resumed[1]["train_loss"] == pytest.approx(full.history[1]["train_loss"], rel=1e-6)
    # The average restarts from the resumed weights, so it is not the uninterrupted one.
    assert resumed[1]["val_loss"] != pytest.approx(full.history[1]["val_loss"], rel=1e-6)


def _round_trip(state: dict[str, Any]) -> dict[str, Any]:
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("dataset", DATASETS.names())
def test_every_dataset_trains_through_fit(dataset: str, request: pytest.FixtureRequest) -> None:
    fixture = {"mnist": "tiny_mnist_dir", "fashion_mnist": "tiny_fashion_flat_dir",
               "cifar10": "tiny_cifar_dir", "image_folder": "tiny_image_folder_dir"}[dataset]
    root = request.getfixturevalue(fixture)
    result = fit(TrialConfig(dataset=dataset, data_dir=str(root), **{**TINY, "epochs": 2}))
    assert result.status == "completed"
    assert result.metrics["test_top1"] > 0.4  # learnable patterns; chance is <= 1/3


def test_resize_runs_every_split_at_the_new_size(mnist: dict[str, Any]) -> None:
    config = _config(mnist, epochs=1, resize=40)
    result = fit(config, data=mnist["bundle"])
    # The CNN's first Linear takes 16 maps of 10x10 (40 -> 20 -> 10), so a batch of any other
    # size fails: completing train, val and test means all three ran at 40x40.
    linear = next(m for m in result.model.modules() if isinstance(m, torch.nn.Linear))
    assert linear.in_features == 16 * 10 * 10
    assert result.status == "completed" and "test_top1" in result.metrics
    assert result.metrics["val_samples"] == len(mnist["bundle"].val_y)
    assert result.metrics["macs"] == count_macs(build_model(config, 1, (40, 40), 10), (1, 40, 40))


def test_console_lines_follow_the_documented_format(mnist: dict[str, Any]) -> None:
    lines: list[str] = []
    fit(_config(mnist, epochs=1), console_reporter(1, lines.append), data=mnist["bundle"])
    assert lines[0].startswith("Epoch [1/1] train  samples ")
    assert "img/s" in lines[0] and "%" in lines[0]
    assert lines[1].startswith("Epoch [1/1] val ") and lines[2].startswith("Epoch [1/1] test ")


@pytest.mark.parametrize("augmentation", AUGMENTATIONS.names())
def test_every_augmentation_trains_on_real_format_data(mnist: dict[str, Any],
                                                       augmentation: str) -> None:
    result = fit(_config(mnist, epochs=1, augment=(augmentation,)), data=mnist["bundle"])
    assert result.status == "completed" and result.metrics["val_top1"] > 0.2


@pytest.mark.parametrize("model, extra", [
    ("mlp", {"fc_depth": 2, "fc_width": 32}),
    ("cnn", {}),
    ("resnet18", {"channels": (8, 8, 8, 16, 16)}),
    ("squeezenet1_1", {}),
    ("alexnet", {"channels": (16, 32, 32, 32, 16), "fc_widths": (64,)}),
])
def test_every_model_trains_on_tiny_cifar(tiny_cifar_dir: Path, model: str,
                                          extra: dict[str, Any]) -> None:
    config = TrialConfig(dataset="cifar10", data_dir=str(tiny_cifar_dir),
                         **{**TINY, "channels": None, "epochs": 1, "model": model, **extra})
    result = fit(config)
    assert result.status == "completed" and math.isfinite(result.metrics["train_loss"])
    # The cost reported is the cost of the model trained.
    assert result.metrics["params"] == count_params(result.model)
    assert result.metrics["macs"] == count_macs(result.model, (3, 32, 32))
    assert sum(map(sum, result.metrics["test_confusion"])) == 100  # every test image scored
