"""A plugin package as a user writes one, written by a test into a folder outside the repo:
``my_lab.models`` (a deep MLP), ``my_lab.data`` (synthetic images), ``my_lab.augment`` (an
inversion) and ``my_lab.loops`` (a training loop that fits a line, no image classifier)."""

from __future__ import annotations

import textwrap
from pathlib import Path

__all__ = ["PLUGINS", "write_module", "write_plugin"]

PLUGINS = ["my_lab.models", "my_lab.data", "my_lab.augment", "my_lab.loops"]

_FILES = {
    "__init__.py": "",
    "models.py": '''
        from pydantic import BaseModel, Field
        from torch import nn

        from hpsearch import register_model


        class DeepMLP(BaseModel):
            mlp_depth: int = Field(2, ge=1, le=8, description="hidden layers")
            mlp_width: int = Field(32, ge=4, le=4096)


        @register_model("deep_mlp", settings=DeepMLP, uses=("dropout",))
        def deep_mlp(config, in_channels, image_size, num_classes):
            layers = [nn.Flatten()]
            width = in_channels * image_size[0] * image_size[1]
            for _ in range(config.mlp_depth):
                layers += [nn.Linear(width, config.mlp_width), nn.Tanh(),
                           nn.Dropout(config.dropout)]
                width = config.mlp_width
            return nn.Sequential(*layers, nn.Linear(width, num_classes))


        @register_model("broken_net")
        def broken_net(config, in_channels, image_size, num_classes):
            raise RuntimeError("broken_net cannot be built")
    ''',
    "data.py": '''
        import torch
        from pydantic import BaseModel, Field

        from hpsearch import ImageSets, register_dataset


        class Blobs(BaseModel):
            blob_train: int = Field(240, ge=10, le=100_000, description="train images")


        def _images(n, seed):
            g = torch.Generator().manual_seed(seed)
            y = torch.arange(n) % 3
            x = torch.randint(0, 60, (n, 1, 12, 12), generator=g)
            for c in range(3):  # class c: a bright band at rows 4c..4c+3
                x[y == c, :, 4 * c:4 * c + 4, :] += 180
            return x.to(torch.uint8), y.to(torch.int64)


        @register_dataset("blobs", settings=Blobs)
        def blobs(config):
            train_x, train_y = _images(config.blob_train, 1)
            test_x, test_y = _images(60, 2)
            return ImageSets(("top", "middle", "bottom"), train_x, train_y, test_x, test_y)
    ''',
    "augment.py": '''
        import torch
        from pydantic import BaseModel, Field

        from hpsearch import register_augmentation


        class Invert(BaseModel):
            invert_p: float = Field(0.5, ge=0.0, le=1.0)


        @register_augmentation("invert", settings=Invert)
        def invert(x, config, generator):
            flip = torch.rand(x.shape[0], generator=generator, device=x.device) < config.invert_p
            return torch.where(flip.view(-1, 1, 1, 1), 1.0 - x, x)
    ''',
    "loops.py": '''
        import time

        import torch
        from pydantic import BaseModel, Field

        from hpsearch import register_trainable


        class LineFit(BaseModel):
            line_lr: float = Field(0.1, gt=0.0, le=10.0)
            line_points: int = Field(64, ge=2, le=10_000)
            line_fail: bool = False
            line_sleep: float = Field(0.0, ge=0.0, le=60.0)


        @register_trainable("line_fit", metrics={"mse": "min"}, settings=LineFit,
                            uses=("seed",))
        def line_fit(config, report, state):
            if config.line_fail:
                raise ValueError("line_fit was told to fail")
            g = torch.Generator().manual_seed(config.seed)
            x = torch.linspace(-1, 1, config.line_points)
            y = 3.0 * x + 0.5 + 0.01 * torch.randn(config.line_points, generator=g)
            w = torch.zeros(2) if state is None else state["w"]
            start = 0 if state is None else state["epoch"]
            for epoch in range(start + 1, config.epochs + 1):
                for _ in range(5):
                    pred = w[0] * x + w[1]
                    grad = torch.stack([((pred - y) * x).mean(), (pred - y).mean()]) * 2
                    w = w - config.line_lr * grad
                mse = float(((w[0] * x + w[1] - y) ** 2).mean())
                time.sleep(config.line_sleep)
                report({"mse": mse, "slope": float(w[0])},
                       lambda w=w, epoch=epoch: {"w": w, "epoch": epoch})
    ''',
}


def write_plugin(root: Path) -> Path:
    """Write ``my_lab/`` under ``root``; ``root``, the folder to run hpsearch from."""
    package = root / "my_lab"
    package.mkdir(parents=True, exist_ok=True)
    for name, text in _FILES.items():
        (package / name).write_text(textwrap.dedent(text).lstrip())
    return root


def write_module(root: Path, dotted: str, text: str) -> Path:
    """Write module ``dotted`` (``pkg.mod``: a package with an empty ``__init__``) under
    ``root``; its file."""
    *packages, leaf = dotted.split(".")
    folder = root
    for name in packages:
        folder = folder / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "__init__.py").touch()
    path = folder / f"{leaf}.py"
    path.write_text(textwrap.dedent(text).lstrip())
    return path
