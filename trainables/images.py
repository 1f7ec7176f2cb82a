"""Image files decoded by PIL mode into uint8 arrays, one common mode and size for a folder.

Every PIL mode decodes to the right pixels: 16-bit and 32-bit int keep the high byte, float in
``[0, 1]`` is scaled to 0..255, palettes go through their colours, alpha is dropped; a file
that cannot be read, is truncated or holds values that cannot be scaled is a one-line
:class:`~trainables.errors.UserError` naming the file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from hpsearch.trainables.errors import UserError

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = ["IMAGE_EXTENSIONS", "common_format", "decode_images"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp")
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def common_format(files: list[Path], resize: int | None) -> tuple[str, tuple[int, int]]:
    """``("L" | "RGB", (W, H))`` to decode every file at: RGB if any image has colour."""
    from PIL import Image, UnidentifiedImageError

    sizes: dict[tuple[int, int], Path] = {}
    rgb = False
    for p in files:
        try:
            with Image.open(p) as im:
                sizes.setdefault(im.size, p)
                rgb = rgb or _has_colour(im, p)
        except UnidentifiedImageError:
            raise UserError(f"image_folder: {p}: cannot read image (not a format PIL knows; "
                            f"allowed: {', '.join(IMAGE_EXTENSIONS)})") from None
        except OSError as err:
            raise UserError(f"image_folder: {p}: cannot read image ({_one_line(err)})") from None
    if resize is not None:
        return ("RGB" if rgb else "L"), (resize, resize)
    if len(sizes) > 1:
        (s1, p1), (s2, p2) = list(sizes.items())[:2]
        raise UserError(
            f"resize: images differ in size ({p1} is {s1[0]}x{s1[1]}, {p2} is {s2[0]}x{s2[1]});"
            " allowed: one size for all images, or set resize to decode every image at NxN")
    return ("RGB" if rgb else "L"), next(iter(sizes))


def _has_colour(im: PILImage, path: Path) -> bool:
    """Whether a PIL image needs RGB: its mode is not a gray one, or its palette is not gray."""
    if im.mode in ("P", "PA"):
        _load(im, path)  # the palette of some formats is read only with the pixels
        palette = np.asarray(im.getpalette("RGB") or [0, 0, 0]).reshape(-1, 3)
        return bool((palette != palette[:, :1]).any())
    return im.mode not in _GRAY_MODES


def decode_images(files: list[tuple[Path, int]], mode: str,
                   size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 ``[N, C, H, W]`` images and int64 labels."""
    channels = 3 if mode == "RGB" else 1
    out = np.empty((len(files), size[1], size[0], channels), dtype=np.uint8)
    for i, (p, _) in enumerate(files):
        out[i] = _decode_image(p, mode, size).reshape(size[1], size[0], channels)
    x = torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor([label for _, label in files], dtype=torch.int64)


def _decode_image(path: Path, mode: str, size: tuple[int, int]) -> np.ndarray:
    """One image file as a uint8 array in ``mode`` ("L" or "RGB") at ``size`` ``(W, H)``.

    Each PIL mode is read by the rule in :data:`_TO_8BIT`, then PIL converts it: gray to RGB
    by copying, a gray palette to L exactly, alpha (RGBA, LA, transparent palettes) dropped as
    torchvision's own loader does, CMYK, YCbCr and LAB by PIL's formulas. Bad data, values
    that cannot be scaled or a mode PIL cannot convert is a one-line :class:`UserError` naming
    the file.
    """
    from PIL import Image

    with Image.open(path) as im:
        _load(im, path)
        eight_bit = _TO_8BIT.get(im.mode, lambda im, path: im)(im, path)
        try:
            eight_bit = eight_bit.convert(mode)
        except ValueError as err:
            raise UserError(f"image_folder: {path}: cannot decode PIL mode {im.mode} as {mode} "
                            f"({_one_line(err)}); save it as RGB, RGBA, L or 16-bit gray"
                            ) from None
    if eight_bit.size != size:
        eight_bit = eight_bit.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(eight_bit)


def _load(im: PILImage, path: Path) -> None:
    """Decode the pixels of an opened PIL image, or say in one line which file is broken."""
    try:
        im.load()
    except Exception as err:  # PIL reports bad data as OSError, SyntaxError, ValueError, ...
        raise UserError(f"image_folder: {path}: cannot decode image (truncated or corrupt: "
                        f"{_one_line(err)})") from None


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _in_range(im: PILImage, path: Path, low: float, high: float) -> np.ndarray:
    """The pixels of ``im`` as an array, if all are finite and in ``[low, high]``."""
    a = np.asarray(im)
    if not np.isfinite(a).all():
        raise UserError(f"image_folder: {path}: PIL mode {im.mode} holds NaN or inf; allowed: "
                        f"values in [{low}, {high}]")
    if a.min() < low or a.max() > high:
        raise UserError(f"image_folder: {path}: PIL mode {im.mode} values must lie in "
                        f"[{low}, {high}], but got [{a.min()}, {a.max()}]; save it as 8- or "
                        "16-bit gray, or scale it into that range")
    return a


def _high_byte(im: PILImage, path: Path) -> PILImage:
    from PIL import Image

    return Image.fromarray((_in_range(im, path, 0, 65535) >> 8).astype(np.uint8))


def _unit_float(im: PILImage, path: Path) -> PILImage:
    from PIL import Image

    return Image.fromarray(np.rint(_in_range(im, path, 0.0, 1.0) * 255).astype(np.uint8))


def _through_palette(im: PILImage, path: Path) -> PILImage:
    # Via RGBA: PIL warns on a straight P -> RGB of a palette with transparency.
    return im.convert("RGBA")


# The modes PIL's own convert to "L" / "RGB" would get wrong (it clips 16-bit, int and float
# to 0..255) or warn on (palettes with transparency). 16-bit gray, and 32-bit int, which must
# hold 0..65535, keep the high byte, v >> 8, as PIL itself reads 16-bit RGB, RGBA and LA PNGs;
# float must hold [0, 1] and becomes round(v * 255). Values outside, NaN or inf are an error.
_TO_8BIT: dict[str, Callable[[PILImage, Path], PILImage]] = {
    "I;16": _high_byte, "I;16L": _high_byte, "I;16B": _high_byte, "I;16N": _high_byte,
    "I": _high_byte, "F": _unit_float, "P": _through_palette, "PA": _through_palette,
}
