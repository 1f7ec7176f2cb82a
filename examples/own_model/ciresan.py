"""A Ciresan-style deep MLP ("Deep, big, simple neural nets for handwritten digit recognition",
Ciresan et al., 2010): plain fully connected tanh layers of shrinking width, no convolution.

Registered as model ``ciresan_mlp``; its one setting, ``ciresan_widths``, lists the hidden
layer widths. ``dropout`` is the built-in setting, read too.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field
from torch import nn

from hpsearch import register_model

Width = Annotated[int, Field(ge=8, le=8192)]


class CiresanSettings(BaseModel):
    """The model's own settings (defaults and bounds, like every trial setting)."""

    ciresan_widths: tuple[Width, ...] = Field(
        (2500, 2000, 1500, 1000, 500), min_length=1, max_length=9,
        description="hidden layer widths, input side first")


@register_model("ciresan_mlp", settings=CiresanSettings, uses=("dropout",))
def ciresan_mlp(config, in_channels: int, image_size: tuple[int, int],
                num_classes: int) -> nn.Module:
    """Flatten, then ``Linear -> tanh -> [Dropout]`` per width, then the output layer."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_channels * image_size[0] * image_size[1]
    for hidden in config.ciresan_widths:
        layers += [nn.Linear(width, hidden), nn.Tanh()]
        if config.dropout:
            layers.append(nn.Dropout(config.dropout))
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)
