"""One trial, read top to bottom: ``fit(config, report) -> FitResult``. No Ray, no MLflow.

Data stays in memory as uint8 tensors (on the GPU when there is one); every batch is gathered,
scaled, resized and augmented as tensor ops on the trial's device. Each epoch reseeds its
shuffling, augmentation and dropout from ``(seed, epoch)``, so a trial resumed from a checkpoint
draws exactly the batches an uninterrupted one would have.

Three options are off by default: ``label_smoothing`` (training loss only), ``ema`` (val and
test evaluate an exponential moving average of the weights, kept in the checkpoint) and
``tta_flip`` (val and test average the softmax of each image and its mirror image).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from hpsearch.trainables.augment import build_augmenter
from hpsearch.trainables.bundle import DataBundle
from hpsearch.trainables.config import OPTIMIZER_STEP_SETTINGS, TrialConfig
from hpsearch.trainables.cost import model_cost
from hpsearch.trainables.data import load_data
from hpsearch.trainables.errors import UserError
from hpsearch.trainables.metrics import Meter, confusion_matrix, macro_prf
from hpsearch.trainables.models import build_model
from hpsearch.trainables.optim import build_optimizer, build_schedule
from hpsearch.trainables.plugins import Reporter

__all__ = ["FitResult", "ImageClassifier", "Reporter", "console_reporter", "fit", "pick_device",
           "predict"]


@dataclass
class FitResult:
    """How a trial ended: ``completed`` or ``diverged``, its last metrics and every epoch's;
    ``model`` is the model evaluated (the weight average when ``ema`` is on)."""

    status: str
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    model: nn.Module | None = None


def pick_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; an explicit CUDA device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device: '{name}' was asked for but no CUDA GPU is visible; use auto/cpu")
    return torch.device(name)


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919) % (2**63)


class _Batches:
    """Turns uint8 image tensors into normalised float batches on the trial's device."""

    def __init__(self, data: DataBundle, config: TrialConfig, device: torch.device) -> None:
        self.device = device
        self.size = (config.resize, config.resize) if config.resize else None
        c = data.in_channels
        self.mean = torch.tensor(data.mean, device=device).view(1, c, 1, 1)
        self.std = torch.tensor(data.std, device=device).view(1, c, 1, 1)
        self.augment = build_augmenter(config)
        self.channels_last = device.type == "cuda" and config.channels_last

    def __call__(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True).float().div_(255)
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", antialias=True,
                              align_corners=False)
        if gen is not None and self.augment is not None:
            x = self.augment(x, gen)
        x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


class ImageClassifier(nn.Module):
    """A trained model that classifies images on its own, e.g. as an MLflow model: float
    ``[N, C, H, W]`` pixels in ``[0, 1]`` in (uint8 images / 255), logits out; the resize and
    the normalisation :class:`_Batches` applies in training are inside, with the training
    split's mean and std, and so is the trial's ``tta_flip`` (:func:`predict`): it predicts
    what the trial was scored on."""

    def __init__(self, model: nn.Module, data: DataBundle, config: TrialConfig) -> None:
        super().__init__()
        # a weight average holds its averaged copy as .module: export that, not the wrapper
        self.model = model.module if isinstance(model, AveragedModel) else model
        c = data.in_channels
        self.register_buffer("mean", torch.tensor(data.mean).view(1, c, 1, 1))
        self.register_buffer("std", torch.tensor(data.std).view(1, c, 1, 1))
        self.size = (config.resize, config.resize) if config.resize else None
        self.tta_flip = config.tta_flip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", antialias=True,
                              align_corners=False)
        return predict(self.model, (x - self.mean) / self.std, self.tta_flip)


def _autocast(device: torch.device, config: TrialConfig) -> contextlib.AbstractContextManager:
    if device.type == "cuda" and config.amp:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def predict(model: nn.Module, x: torch.Tensor, tta_flip: bool = False) -> torch.Tensor:
    """Evaluation logits (float32) of the batch ``x``.

    With ``tta_flip`` the softmax of each image and of its left-right mirror are averaged; the
    log of that mean is returned, valid logits whose softmax is the mean.
    """
    logits = model(x).float()
    if not tta_flip:
        return logits
    both = torch.stack((logits.log_softmax(1), model(x.flip(-1)).float().log_softmax(1)))
    return both.logsumexp(0) - math.log(2)


def _evaluate(model: nn.Module, x_all: torch.Tensor, y_all: torch.Tensor, batches: _Batches,
              config: TrialConfig, keep_preds: bool = False) -> Meter:
    """Plain (unsmoothed) cross-entropy and top-k of ``model`` on a split, so that val loss is
    comparable across trials whatever their ``label_smoothing``."""
    model.eval()
    meter = Meter(keep_preds=keep_preds)
    with torch.inference_mode(), _autocast(batches.device, config):
        for i in range(0, len(y_all), config.eval_batch_size):
            x = batches(x_all[i:i + config.eval_batch_size])
            y = y_all[i:i + config.eval_batch_size].to(batches.device)
            logits = predict(model, x, config.tta_flip)
            meter.update(logits, y, F.cross_entropy(logits, y))
    return meter


def _ema_warmup(decay: float, average: AveragedModel) -> Callable[..., None]:
    """torch's EMA update (:func:`~torch.optim.swa_utils.get_ema_multi_avg_fn`) with the decay
    warmed up as timm's ``ModelEmaV3`` does: ``min(decay, (1 + n) / (10 + n))`` at update n, so
    the average of a short trial is not dominated by its untrained first weights (without it,
    0.999 over 316 steps kept 73 % of the initial weights: README, "Trainable options").

    n is read from ``average.n_averaged``, the update counter that :func:`_weight_average`
    leaves on the CPU (restored with the average's state), not from the copy torch hands the
    function on the weights' device: reading that one would wait for the GPU at every step."""
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor],
               num_averaged: torch.Tensor | int) -> None:
        n = int(average.n_averaged)
        get_ema_multi_avg_fn(min(decay, (1 + n) / (10 + n)))(averaged, current, num_averaged)
    return update


def _weight_average(model: nn.Module, config: TrialConfig) -> AveragedModel | None:
    """An exponential moving average of ``model``'s weights and BatchNorm buffers with decay
    ``ema`` (warmed up: :func:`_ema_warmup`), or None when ``ema`` is 0. Its first update copies
    the weights."""
    if not config.ema:
        return None
    ema = AveragedModel(model, use_buffers=True)  # its n_averaged counter on the CPU
    ema.multi_avg_fn = _ema_warmup(config.ema, ema)
    return ema


def _take_step_settings(optimizer: torch.optim.Optimizer, saved: dict[str, Any] | None,
                        config: TrialConfig) -> None:
    """Train on with ``config``'s lr, momentum and weight decay where the checkpoint was saved
    under others (population-based training mutated them): loading the optimizer's state
    brought back the saved ones. Settings an optimizer does not have (Adam's momentum) are
    left alone; a plain resume (same config) changes nothing."""
    for key in OPTIMIZER_STEP_SETTINGS:
        new = getattr(config, key)
        if saved is None or saved.get(key) == new:
            continue
        for group in optimizer.param_groups:
            if key in group:
                group[key] = new
            if key == "lr" and "initial_lr" in group:
                group["initial_lr"] = new


def fit(config: TrialConfig, report: Reporter | None = None, *, data: DataBundle | None = None,
        state: dict[str, Any] | None = None) -> FitResult:
    """Train and evaluate one config; ``report`` is called once per epoch.

    Args:
        config: The trial's settings.
        report: Called as ``report(metrics, make_state)`` after every epoch.
        data: Already-decoded data (e.g. from Ray's object store); loaded here if None.
        state: A checkpoint dict from an earlier ``make_state()`` to resume from. One saved
            without a weight average (before ``ema`` existed) starts the average afresh.

    Returns:
        How the trial ended, with its last metrics and per-epoch history.
    """
    device = pick_device(config.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(config.seed)
    data = data if data is not None else load_data(config)
    size = (config.resize, config.resize) if config.resize else data.image_size
    model = build_model(config, data.in_channels, size, data.num_classes)
    cost = model_cost(model, (data.in_channels, *size))
    model.to(device)
    batches = _Batches(data, config, device)
    if batches.channels_last:
        model.to(memory_format=torch.channels_last)
    ema = _weight_average(model, config)
    evaluated = ema.module if ema is not None else model

    n_train = len(data.train_y)
    bs = min(config.batch_size, n_train)
    steps = math.ceil(n_train / bs)
    optimizer = build_optimizer(model.parameters(), config)
    schedule, per_batch = build_schedule(optimizer, config, steps)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and config.amp
                                  and not torch.cuda.is_bf16_supported())
    history: list[dict[str, Any]] = []
    start = 1
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        _take_step_settings(optimizer, state.get("config"), config)
        if schedule is not None and state.get("schedule") is not None:
            schedule.load_state_dict(state["schedule"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        history = list(state["history"])
        start = int(state["epoch"]) + 1

    train_x, train_y = data.train_x.to(device), data.train_y.to(device)
    check_every = 1 if device.type == "cpu" else 25
    metrics: dict[str, Any] = history[-1] if history else {}
    status = "completed"

    for epoch in range(start, config.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        seed = _epoch_seed(config.seed, epoch)
        torch.manual_seed(seed)
        perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))
        gen = torch.Generator(device=device).manual_seed(seed + 1)
        meter = Meter()
        lr = optimizer.param_groups[0]["lr"]
        for step, i in enumerate(range(0, n_train, bs)):
            idx = perm[i:i + bs].to(device)
            if len(idx) == 1 < bs:  # a lone last sample would break BatchNorm; skip it
                continue
            x, y = batches(train_x[idx], gen), train_y[idx]
            with _autocast(device, config):
                logits = model(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.update_parameters(model)
            lr = optimizer.param_groups[0]["lr"]
            if schedule is not None and per_batch:
                schedule.step()
            meter.update(logits, y, loss)
            if step % check_every == 0 and not math.isfinite(loss.item()):
                status = "diverged"
                break
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_seconds = time.perf_counter() - t0
        if schedule is not None and not per_batch:
            schedule.step()
        if status != "diverged" and not math.isfinite(float(meter.loss_sum)):
            status = "diverged"

        metrics = {"epoch": epoch, "train_samples": meter.samples, **meter.result("train")}
        if len(data.val_y):
            metrics["val_samples"] = len(data.val_y)
            metrics.update(_evaluate(evaluated, data.val_x, data.val_y, batches, config)
                           .result("val"))
        metrics.update(lr=lr, device=str(device),
                       images_per_second=meter.samples / max(train_seconds, 1e-9), **cost)
        last = epoch == config.epochs
        if last and status != "diverged":
            metrics.update(_test_metrics(evaluated, data, batches, config))
        metrics["epoch_seconds"] = time.perf_counter() - t0
        metrics["status"] = status if (last or status == "diverged") else "running"
        history.append(metrics)

        def make_state(epoch: int = epoch) -> dict[str, Any]:
            return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict() if schedule is not None else None,
                    "ema": ema.state_dict() if ema is not None else None,
                    "epoch": epoch, "history": history, "rng": torch.get_rng_state(),
                    "config": config.to_dict()}

        if report is not None:
            report(metrics, make_state)
        if status == "diverged":
            break
    return FitResult(status=status, metrics=metrics, history=history, model=evaluated)


def _test_metrics(model: nn.Module, data: DataBundle, batches: _Batches,
                  config: TrialConfig) -> dict[str, Any]:
    meter = _evaluate(model, data.test_x, data.test_y, batches, config, keep_preds=True)
    preds = torch.cat(meter.preds) if meter.preds else torch.zeros(0, dtype=torch.long)
    cm = confusion_matrix(preds, data.test_y, data.num_classes)
    prf = macro_prf(cm)
    return {**meter.result("test"), "test_precision": prf["precision"],
            "test_recall": prf["recall"], "test_f1": prf["f1"],
            "test_confusion": cm.tolist(), "test_classes": list(data.classes)}


def console_reporter(total_epochs: int, echo: Callable[[str], None] = print) -> Reporter:
    """A reporter printing one line per epoch and phase, like
    ``Epoch [2/10] train  samples 54000  loss 0.3120  top1 88.61%  top3 98.70%  1850 img/s``."""

    def line(epoch: int, phase: str, samples: int, m: dict[str, Any], tail: str = "") -> str:
        return (f"Epoch [{epoch}/{total_epochs}] {phase:<5}  samples {samples:<6d} "
                f"loss {m[f'{phase}_loss']:.4f}  top1 {100 * m[f'{phase}_top1']:.2f}%  "
                f"top3 {100 * m[f'{phase}_top3']:.2f}%{tail}")

    def report(m: dict[str, Any], make_state: Callable[[], dict[str, Any]] | None) -> None:
        e = m["epoch"]
        echo(line(e, "train", m["train_samples"], m,
                  f"  {m['images_per_second']:.0f} img/s  lr {m['lr']:.3g}"))
        if "val_loss" in m:
            echo(line(e, "val", m["val_samples"], m))
        if "test_loss" in m:
            echo(line(e, "test", sum(map(sum, m["test_confusion"])), m,
                      f"  macro-F1 {100 * m['test_f1']:.2f}%"))
        if m["status"] == "diverged":
            echo(f"Epoch [{e}/{total_epochs}] diverged: loss is not finite; trial stopped")

    return report
