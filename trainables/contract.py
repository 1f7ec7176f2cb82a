"""The contract every model in the registry keeps, built-in or a plugin's: what hpsearch's loop,
cost counting and checkpoints rely on. :func:`check_model` runs it. hpsearch's own tests run it
for every registered model (``tests/trainables/test_models.py``), and a plugin author runs it
in their own tests::

    import my_lab.models  # registers "deep_mlp"
    from hpsearch import check_model

    def test_deep_mlp_keeps_hpsearchs_contract():
        check_model("deep_mlp", mlp_depth=3)

A broken contract raises :class:`ContractError`, one line naming the model, the input and what
is wrong; a setting outside its bounds is the same :class:`UserError` a sweep would give.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from hpsearch.trainables.config import parse_trial_config
from hpsearch.trainables.cost import count_macs, count_params
from hpsearch.trainables.models import build_model

__all__ = ["SHAPES", "ContractError", "check_model"]

# Grey MNIST-sized and colour CIFAR-sized images: the two a model is checked on by default.
SHAPES: tuple[tuple[int, int, int], ...] = ((1, 28, 28), (3, 32, 32))


class ContractError(AssertionError):
    """A model breaks what hpsearch relies on (an AssertionError, so pytest shows it as such)."""


def check_model(name: str, *, shapes: tuple[tuple[int, int, int], ...] = SHAPES,
                num_classes: int = 10, **settings: Any) -> dict[str, int]:
    """Check model ``name`` (with ``settings``, validated as a sweep's ``fixed:`` would be) on
    each input shape: it builds for the shape and is returned in train mode; two images give
    finite ``[2, num_classes]`` logits and finite gradients for every trainable parameter; the
    cost counted without memory (meta device) equals the cost counted on real tensors; and a
    fresh build loaded from its ``state_dict`` gives the same outputs (what resume relies on).

    Returns:
        ``params`` and ``macs`` for the last shape.

    Raises:
        ContractError: On the first broken point.
        UserError: If a setting is unknown or outside its bounds.
    """
    config = parse_trial_config({"model": name, **settings})
    cost: dict[str, int] = {}
    for shape in shapes:
        where = f"model '{name}' on {shape[0]}x{shape[1]}x{shape[2]} images"

        def fail(what: str, where: str = where) -> ContractError:
            return ContractError(f"{where}: {what}")

        torch.manual_seed(0)
        model = build_model(config, shape[0], shape[1:], num_classes)
        if not model.training:
            raise fail("the model must be returned in train mode (hpsearch switches modes)")
        x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1))
        out = model(x)
        if tuple(out.shape) != (2, num_classes):
            raise fail(f"logits of shape {tuple(out.shape)}, expected (2, {num_classes})")
        if not torch.isfinite(out).all():
            raise fail("logits that are not finite")
        nn.functional.cross_entropy(out, torch.tensor([0, 1]) % num_classes).backward()
        for pname, p in model.named_parameters():
            if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all()):
                raise fail(f"parameter {pname} gets no finite gradient")
        with torch.device("meta"):
            meta = build_model(config, shape[0], shape[1:], num_classes)
        cost = {"params": count_params(meta), "macs": count_macs(meta, shape)}
        real = {"params": count_params(model), "macs": count_macs(model, shape)}
        if cost != real or cost["params"] <= 0 or cost["macs"] <= 0:
            raise fail(f"cost counted without memory {cost} differs from the real model's "
                       f"{real} (or is zero)")
        fresh = build_model(config, shape[0], shape[1:], num_classes)
        fresh.load_state_dict(copy.deepcopy(model.state_dict()))
        model.eval()
        fresh.eval()
        with torch.no_grad():
            if not torch.allclose(model(x), fresh(x)):
                raise fail("a build loaded from the model's state_dict gives other outputs "
                           "(state kept outside parameters and buffers is lost on resume)")
    return cost
