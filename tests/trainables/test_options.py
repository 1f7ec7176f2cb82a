"""The trainable options, each off by default: label smoothing (training loss only), a weight
EMA (what val/test evaluate, kept in the checkpoint) and flip TTA (val/test only)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from hpsearch.trainables.bundle import DataBundle
from hpsearch.trainables.config import TrialConfig, parse_trial_config
from hpsearch.trainables.errors import UserError
from hpsearch.trainables.fit import FitResult, fit, predict
from hpsearch.trainables.models import build_model
from tests.trainables.conftest import TINY


def _fit(mnist: dict[str, Any], **kw: Any) -> FitResult:
    config = TrialConfig(dataset="mnist", data_dir=mnist["data_dir"], **{**TINY, **kw})
    return fit(config, data=mnist["bundle"])


@pytest.fixture(scope="module")
def plain(mnist: dict[str, Any]) -> FitResult:
    """The tiny CNN trained with every option off, once: what each option is compared with
    (the tests only read it)."""
    return _fit(mnist)


def _val_logits(model: torch.nn.Module, bundle: DataBundle, mirrored: bool = False
                ) -> torch.Tensor:
    """``model``'s logits of the val images (left-right mirrored), normalised by hand."""
    mean, std = bundle.mean[0], bundle.std[0]
    x = (bundle.val_x.float() / 255 - mean) / std
    if mirrored:
        x = x[..., torch.arange(x.shape[-1] - 1, -1, -1)]
    model.eval()
    with torch.no_grad():
        return model(x)


def _losses(result: FitResult, key: str) -> list[float]:
    return [h[key] for h in result.history]


# ------------------------------------------------------------------ settings

def test_every_option_is_off_by_default() -> None:
    config = TrialConfig()
    assert (config.label_smoothing, config.ema, config.tta_flip) == (0.0, 0.0, False)


@pytest.mark.parametrize("values, line", [
    ({"label_smoothing": 1.0}, "label_smoothing: input should be less than 1 (got 1.0)"),
    ({"label_smoothing": -0.1},
     "label_smoothing: input should be greater than or equal to 0 (got -0.1)"),
    ({"ema": 1.0}, "ema: input should be less than 1 (got 1.0)"),
    ({"ema": -0.5}, "ema: input should be greater than or equal to 0 (got -0.5)"),
    ({"tta_flip": "sometimes"}, "tta_flip: input should be a valid boolean, unable to "
                                "interpret input (got 'sometimes')"),
], ids=["smoothing-1", "smoothing-negative", "ema-1", "ema-negative", "tta-not-bool"])
def test_a_bad_option_value_is_one_line(values: dict[str, Any], line: str) -> None:
    with pytest.raises(UserError) as info:
        parse_trial_config(values)
    assert str(info.value) == line


# ------------------------------------------------------------------ label smoothing

def test_label_smoothing_changes_the_training_loss_not_the_val_loss(
        mnist: dict[str, Any], plain: FitResult) -> None:
    eps = 0.3
    smoothed = _fit(mnist, label_smoothing=eps)
    assert _losses(smoothed, "train_loss") != _losses(plain, "train_loss")
    # The training loss is the smoothed one: never below the entropy of the smoothed target.
    k = mnist["bundle"].num_classes
    on, off = 1 - eps + eps / k, eps / k
    floor = -(on * math.log(on) + (k - 1) * off * math.log(off))
    assert min(_losses(smoothed, "train_loss")) > floor
    # The val loss is plain cross-entropy of the trained model, comparable across trials.
    logits, y = _val_logits(smoothed.model, mnist["bundle"]), mnist["bundle"].val_y
    assert smoothed.metrics["val_loss"] == pytest.approx(F.cross_entropy(logits, y).item(),
                                                         rel=1e-5)
    assert smoothed.metrics["val_loss"] != pytest.approx(
        F.cross_entropy(logits, y, label_smoothing=eps).item(), rel=1e-2)


# ------------------------------------------------------------------ weight EMA

def test_ema_is_what_val_and_test_evaluate_and_leaves_training_alone(
        mnist: dict[str, Any], plain: FitResult) -> None:
    raw, averaged = plain, _fit(mnist, ema=0.9)
    assert _losses(averaged, "train_loss") == _losses(raw, "train_loss")  # same training
    assert _losses(averaged, "val_loss") != _losses(raw, "val_loss")
    # result.model is the average (raw.model: the same training's own weights), BatchNorm
    # statistics included; the metrics reported are its own.
    avg, own = averaged.model.state_dict(), raw.model.state_dict()
    assert type(averaged.model) is type(raw.model) and avg.keys() == own.keys()
    for key in ("features.0.weight", "features.1.running_mean", "features.1.running_var"):
        assert not torch.allclose(avg[key], own[key]), key
    logits = _val_logits(averaged.model, mnist["bundle"])
    assert averaged.metrics["val_loss"] == pytest.approx(
        F.cross_entropy(logits, mnist["bundle"].val_y).item(), rel=1e-5)


def test_ema_with_a_tiny_decay_follows_the_weights(mnist: dict[str, Any],
                                                  plain: FitResult) -> None:
    raw, follower = plain, _fit(mnist, ema=1e-9)
    own = raw.model.state_dict()
    for key, value in follower.model.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(value, own[key], atol=1e-6), key
    assert follower.metrics["val_top1"] == raw.metrics["val_top1"]


# ------------------------------------------------------------------ flip TTA

def test_flip_tta_averages_the_softmax_of_an_image_and_its_mirror() -> None:
    torch.manual_seed(0)
    model = build_model(TrialConfig(**TINY), 1, (12, 12), 10).eval()
    x = torch.randn(5, 1, 12, 12)
    mirror = x[..., torch.arange(11, -1, -1)]
    with torch.no_grad():
        expected = (model(x).softmax(1) + model(mirror).softmax(1)) / 2
        assert torch.equal(predict(model, x), model(x))
        tta = predict(model, x, tta_flip=True)
    assert torch.allclose(tta.softmax(1), expected, atol=1e-6)
    assert torch.allclose(tta.exp().sum(1), torch.ones(5), atol=1e-6)  # log-probabilities
    assert not torch.allclose(tta.softmax(1), model(x).softmax(1), atol=1e-3)


def test_flip_tta_changes_evaluation_only(mnist: dict[str, Any], plain: FitResult) -> None:
    tta = _fit(mnist, tta_flip=True)
    assert _losses(tta, "train_loss") == _losses(plain, "train_loss")  # same training
    bundle = mnist["bundle"]
    probs = (_val_logits(tta.model, bundle).softmax(1)
             + _val_logits(tta.model, bundle, mirrored=True).softmax(1)) / 2
    hand = F.nll_loss(probs.log(), bundle.val_y).item()
    assert tta.metrics["val_loss"] == pytest.approx(hand, rel=1e-5)
    assert tta.metrics["val_loss"] != pytest.approx(plain.metrics["val_loss"], rel=1e-4)
    hits = (probs.argmax(1) == bundle.val_y).float().mean().item()
    assert tta.metrics["val_top1"] == pytest.approx(hits)


def test_the_standalone_classifier_predicts_what_the_trial_was_tested_on(
        mnist: dict[str, Any]) -> None:
    """``hpsearch finalize`` logs :class:`ImageClassifier`: with EMA and flip TTA on, it scores
    the test set as the trial did (the averaged weights, the mirrored images)."""
    from hpsearch.trainables.fit import ImageClassifier

    result = _fit(mnist, ema=0.5, tta_flip=True)
    bundle = mnist["bundle"]
    config = TrialConfig(dataset="mnist", data_dir=mnist["data_dir"], **TINY, tta_flip=True)
    standalone = ImageClassifier(result.model, bundle, config).eval()
    assert not isinstance(standalone.model, torch.optim.swa_utils.AveragedModel)
    with torch.inference_mode():
        top1 = (standalone(bundle.test_x.float() / 255).argmax(1) == bundle.test_y).float().mean()
    assert float(top1) == pytest.approx(result.metrics["test_top1"], abs=1 / len(bundle.test_y))


def test_ema_warms_up_so_a_short_trial_is_not_its_first_weights() -> None:
    """Decay min(ema, (1+n)/(10+n)) at update n: after 10 updates towards weights of 1 from 0,
    the average is 1 - prod(decays) (~0.9), where a fixed 0.999 would still be ~0.01."""
    from hpsearch.trainables.fit import _weight_average

    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    average = _weight_average(model, TrialConfig(ema=0.999))
    average.update_parameters(model)  # the first update copies
    with torch.no_grad():
        model.weight.fill_(1.0)
    kept = 1.0
    for n in range(1, 11):
        average.update_parameters(model)
        kept *= min(0.999, (1 + n) / (10 + n))
    assert average.module.weight.item() == pytest.approx(1 - kept, rel=1e-5)
    assert average.module.weight.item() > 0.8


def test_ema_warm_up_continues_from_a_restored_average() -> None:
    """A resumed trial's average counts on from its checkpoint: the same decay at the next
    update as the uninterrupted one (the counter lives in the average's own state)."""
    from hpsearch.trainables.fit import _weight_average

    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    config = TrialConfig(ema=0.999)
    running = _weight_average(model, config)
    for step in range(6):
        with torch.no_grad():
            model.weight.fill_(float(step))
        running.update_parameters(model)
    restored = _weight_average(model, config)
    restored.load_state_dict(running.state_dict())
    with torch.no_grad():
        model.weight.fill_(10.0)
    running.update_parameters(model)
    restored.update_parameters(model)
    assert int(restored.n_averaged) == int(running.n_averaged) == 7
    assert restored.module.weight.item() == pytest.approx(running.module.weight.item())
