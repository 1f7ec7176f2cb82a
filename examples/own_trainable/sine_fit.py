"""A training loop of your own that is not an image classifier: a small MLP regresses
``sin(x)`` on noisy samples. Registered as trainable ``sine_fit``; it reports ``val_mse``
(the objective) and ``train_mse`` every epoch, and checkpoints its weights and optimizer so a
trial resumes where it stopped.
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, Field
from torch import nn

from hpsearch import register_trainable


class SineSettings(BaseModel):
    """The loop's own settings; ``lr``, ``batch_size`` and ``seed`` are built-in ones."""

    sine_hidden: int = Field(32, ge=1, le=1024, description="units per hidden layer")
    sine_layers: int = Field(2, ge=1, le=8, description="hidden layers")
    sine_noise: float = Field(0.1, ge=0.0, le=1.0, description="label noise std")
    sine_points: int = Field(2048, ge=64, le=1_000_000, description="training samples")


def _data(n: int, noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=g) * 4 * math.pi - 2 * math.pi
    return x, torch.sin(x) + noise * torch.randn(n, 1, generator=g)


@register_trainable("sine_fit", metrics={"val_mse": "min", "train_mse": "min"},
                    settings=SineSettings, uses=("lr", "batch_size", "seed"))
def sine_fit(config, report, state):
    """Train ``config.epochs`` epochs (from ``state`` when resumed), one report per epoch."""
    torch.manual_seed(config.seed)
    layers: list[nn.Module] = []
    width = 1
    for _ in range(config.sine_layers):
        layers += [nn.Linear(width, config.sine_hidden), nn.Tanh()]
        width = config.sine_hidden
    model = nn.Sequential(*layers, nn.Linear(width, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    start = 1
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["epoch"] + 1
    train_x, train_y = _data(config.sine_points, config.sine_noise, seed=1)
    val_x, val_y = _data(512, 0.0, seed=2)
    for epoch in range(start, config.epochs + 1):
        model.train()
        perm = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(epoch))
        total = 0.0
        for i in range(0, len(perm), config.batch_size):
            idx = perm[i:i + config.batch_size]
            loss = nn.functional.mse_loss(model(train_x[idx]), train_y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss) * len(idx)
        model.eval()
        with torch.no_grad():
            val = float(nn.functional.mse_loss(model(val_x), val_y))

        def make_state(epoch: int = epoch) -> dict:
            return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "epoch": epoch}

        report({"train_mse": total / len(perm), "val_mse": val}, make_state)
