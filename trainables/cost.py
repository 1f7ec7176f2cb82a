"""What a model costs: trainable parameters and multiply-accumulates (MACs) per image.

MACs come from torch's own ``FlopCounterMode`` (conv, linear and matmul count ``2 x MACs`` FLOPs;
normalisation, activations and pooling count 0), measured on one image in eval mode on the meta
device, so even large models cost no memory and no compute to measure. This module knows no
model by name: :func:`trainables.models.trial_cost` builds a trial's model and measures it here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["constraint_violation", "count_macs", "count_params", "dry_forward", "model_cost"]


def count_params(model: nn.Module) -> int:
    """The number of trainable parameters (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """Multiply-accumulates for one ``input_shape`` = ``(C, H, W)`` image, in eval mode."""
    try:
        return _macs(model, input_shape, meta=True)
    except NotImplementedError:  # an op with no meta implementation: measure for real
        return _macs(model, input_shape, meta=False)


def model_cost(model: nn.Module, input_shape: tuple[int, int, int]) -> dict[str, int]:
    """``params`` and ``macs`` (per ``(C, H, W)`` image): the cost a trial reports."""
    return {"params": count_params(model), "macs": count_macs(model, input_shape)}


def dry_forward(model: nn.Module, input_shape: tuple[int, int, int]) -> torch.Tensor:
    """The output for one zero image of ``input_shape``, in eval mode, without gradients.

    Runs on the meta device (shapes only: nothing allocated, nothing computed) with meta
    stand-ins for the parameters and buffers; falls back to the model's own device for an op
    that has no meta implementation. The model itself is left unchanged.

    Raises:
        RuntimeError: If the model cannot take the input (e.g. an image too small for it).
    """
    try:
        return _forward(model, input_shape, meta=True)
    except NotImplementedError:
        return _forward(model, input_shape, meta=False)


def _macs(model: nn.Module, input_shape: tuple[int, int, int], meta: bool) -> int:
    with FlopCounterMode(display=False) as counter:
        _forward(model, input_shape, meta)
    return counter.get_total_flops() // 2


def _forward(model: nn.Module, input_shape: tuple[int, int, int], meta: bool) -> torch.Tensor:
    with _eval_mode(model), torch.no_grad():
        if meta:
            state = {name: torch.empty_like(t, device="meta")
                     for name, t in _named_tensors(model)}
            x = torch.zeros(1, *input_shape, device="meta")
            return torch.func.functional_call(model, state, (x,))
        device = next((t.device for _, t in _named_tensors(model)), torch.device("cpu"))
        return model(torch.zeros(1, *input_shape, device=device))


def _named_tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    yield from model.named_parameters()
    yield from model.named_buffers()


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode inside the block; every submodule's own train/eval flag restored after."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def constraint_violation(cost: dict[str, int], limits: dict[str, int | None]) -> str | None:
    """Why ``cost`` (``params``, ``macs``) breaks ``limits`` (``max_params``, ``max_macs``;
    None: no limit), or None when it fits."""
    for key in ("params", "macs"):
        limit = limits.get(f"max_{key}")
        if limit is not None and cost[key] > limit:
            return f"{key} {cost[key]:,} > max_{key} {limit:,}"
    return None
