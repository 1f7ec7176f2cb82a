"""Batched, per-sample-random data augmentation as tensor ops on the trial's device.

Every entry of :data:`trainables.config.AUGMENTATIONS` is a function ``(x, config, generator)
-> x`` on a float batch ``[B, C, H, W]`` with values in ``[0, 1]``; each sample draws its own
random parameters from ``generator``, so a seeded generator reproduces a batch exactly.
:class:`Augmenter` applies the entries named in ``config.augment`` in the listed order.

Geometric ops map output pixels back to input pixels (``grid_sample`` with zero padding,
``align_corners=False``) in pixel units about the image centre, so non-square images are not
distorted.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from hpsearch.trainables.config import AUGMENTATIONS, TrialConfig

__all__ = ["AugmentFn", "Augmenter", "build_augmenter"]

AugmentFn = Callable[[torch.Tensor, TrialConfig, torch.Generator], torch.Tensor]

# ITU-R 601 luma, as torchvision's rgb_to_grayscale.
_LUMA = (0.299, 0.587, 0.114)


class Augmenter:
    """Applies the augmentations named in ``config.augment``, in order, to whole batches.

    Args:
        config: The trial config; its ``augment`` names and augmentation settings are used.
    """

    def __init__(self, config: TrialConfig) -> None:
        self.config = config
        self.names = tuple(config.augment)
        self._fns: tuple[AugmentFn, ...] = tuple(
            AUGMENTATIONS.get(name, f"augment[{i}]") for i, name in enumerate(self.names))

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment ``x`` (float ``[B, C, H, W]`` in ``[0, 1]``); same shape, dtype and device."""
        if x.dim() != 4 or not x.is_floating_point():
            raise ValueError(
                f"augmentation input: a float [B, C, H, W] batch is required, but got "
                f"dtype={x.dtype}, shape={tuple(x.shape)}")
        channels_last = x.is_contiguous(memory_format=torch.channels_last)
        out = x
        for fn in self._fns:
            out = fn(out, self.config, generator)
        # Bilinear resampling may overshoot [0, 1] by rounding; keep the contract exact.
        out = out.clamp(0.0, 1.0)
        if channels_last:
            out = out.contiguous(memory_format=torch.channels_last)
        return out

    def __repr__(self) -> str:
        return f"Augmenter({', '.join(self.names)})"


def build_augmenter(config: TrialConfig) -> Augmenter | None:
    """The augmenter for ``config.augment``, or None when it names nothing."""
    return Augmenter(config) if config.augment else None


# --------------------------------------------------------------------------- random draws


def _uniform(n: int, low: float, high: float, like: torch.Tensor,
             generator: torch.Generator) -> torch.Tensor:
    """``n`` float32 draws, uniform in ``[low, high]``, on ``like``'s device."""
    u = torch.rand(n, generator=generator, device=like.device)
    return low + (high - low) * u


# --------------------------------------------------------------------------- geometry


def _warp_affine(x: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """Resample ``x`` through per-sample 2x2 maps from output to input pixel offsets.

    Args:
        x: Batch ``[B, C, H, W]``.
        inverse: ``[B, 2, 2]`` float32 maps taking an output pixel's (x, y) offset from the
            image centre to the input pixel's offset (y points down).

    Returns:
        The bilinearly resampled batch, zeros where the source lies outside the image.
    """
    b, c, h, w = x.shape
    # affine_grid works in [-1, 1] per axis: conjugate by diag(w/2, h/2) to stay in pixels.
    aspect = inverse.new_tensor([[1.0, h / w], [w / h, 1.0]])
    theta = torch.cat([inverse * aspect, inverse.new_zeros(b, 2, 1)], dim=2)
    grid = F.affine_grid(theta.to(x.dtype), [b, c, h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _rotation_inverse(radians: torch.Tensor) -> torch.Tensor:
    """``[B, 2, 2]`` output-to-input maps of rotations by ``radians``."""
    cos, sin = torch.cos(radians), torch.sin(radians)
    return torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)


@AUGMENTATIONS.register("hflip")
def hflip(x: torch.Tensor, config: TrialConfig, generator: torch.Generator) -> torch.Tensor:
    """Mirror each sample left-right with probability ``flip_p``."""
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < config.flip_p
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


@AUGMENTATIONS.register("rotate")
def rotate(x: torch.Tensor, config: TrialConfig, generator: torch.Generator) -> torch.Tensor:
    """Rotate each sample about its centre by an angle uniform in ``±rotate_degrees``."""
    limit = math.radians(config.rotate_degrees)
    angles = _uniform(x.shape[0], -limit, limit, x, generator)
    return _warp_affine(x, _rotation_inverse(angles))


@AUGMENTATIONS.register("affine")
def affine(x: torch.Tensor, config: TrialConfig, generator: torch.Generator) -> torch.Tensor:
    """Shear along x by ``±affine_shear`` degrees and scale by ``[affine_scale_min, max]``."""
    b = x.shape[0]
    limit = math.radians(config.affine_shear)
    shear = torch.tan(_uniform(b, -limit, limit, x, generator))
    scale = _uniform(b, config.affine_scale_min, config.affine_scale_max, x, generator)
    # Forward map is scale * [[1, tan], [0, 1]]; sample through its inverse.
    ones, zeros = torch.ones_like(shear), torch.zeros_like(shear)
    unsheared = torch.stack([torch.stack([ones, -shear], -1), torch.stack([zeros, ones], -1)], -2)
    return _warp_affine(x, unsheared / scale.view(-1, 1, 1))


@AUGMENTATIONS.register("crop")
def crop(x: torch.Tensor, config: TrialConfig, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``crop_padding`` and crop back to ``H x W`` at a random offset per sample.

    Equivalent to an integer translation by up to ``crop_padding`` pixels per axis; done with two
    gathers on the padded batch rather than a loop over samples.
    """
    pad = config.crop_padding
    if pad == 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    offsets = torch.randint(0, 2 * pad + 1, (2, b, 1), generator=generator, device=x.device)
    rows = offsets[0] + torch.arange(h, device=x.device)  # [B, H]
    cols = offsets[1] + torch.arange(w, device=x.device)  # [B, W]
    padded = padded.gather(2, rows.view(b, 1, h, 1).expand(b, c, h, w + 2 * pad))
    return padded.gather(3, cols.view(b, 1, 1, w).expand(b, c, h, w))


# --------------------------------------------------------------------------- photometric


def _gray(x: torch.Tensor) -> torch.Tensor:
    """Luma ``[B, 1, H, W]`` of an RGB batch, or the batch itself when it has one channel."""
    if x.shape[1] != 3:
        return x
    r, g, b = x.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def _factors(strength: float, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per-sample ``[B, 1, 1, 1]`` factors uniform in ``[max(0, 1 - strength), 1 + strength]``."""
    f = _uniform(x.shape[0], max(0.0, 1.0 - strength), 1.0 + strength, x, generator)
    return f.to(x.dtype).view(-1, 1, 1, 1)


def _blend(x: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    return (ratio * x + (1.0 - ratio) * other).clamp(0.0, 1.0)


@AUGMENTATIONS.register("color_jitter")
def color_jitter(x: torch.Tensor, config: TrialConfig,
                 generator: torch.Generator) -> torch.Tensor:
    """Brightness, contrast, then saturation (RGB only) factors uniform in ``[1 - j, 1 + j]``.

    A strength of 0 skips that component (and draws nothing), so all-zero strengths are an
    exact identity.
    """
    if config.jitter_brightness > 0:
        x = (x * _factors(config.jitter_brightness, x, generator)).clamp(0.0, 1.0)
    if config.jitter_contrast > 0:
        mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
        x = _blend(x, mean, _factors(config.jitter_contrast, x, generator))
    if config.jitter_saturation > 0 and x.shape[1] == 3:
        x = _blend(x, _gray(x), _factors(config.jitter_saturation, x, generator))
    return x


# --------------------------------------------------------------------------- elastic


@functools.lru_cache(maxsize=16)
def _blur_matrix(sigma: float, size: int, device: torch.device | str) -> torch.Tensor:
    """``[size, size]`` matrix of a 1-D Gaussian blur with mirrored borders (cached; read-only).

    Matches scipy's ``gaussian_filter`` (truncated at 4 sigma, ``mode="reflect"``) for any sigma,
    even wider than the image; a matmul is far faster on CPU than a one-channel ``conv2d``.
    Built on the CPU, where accumulating the folded taps is deterministic.
    """
    radius = max(1, int(4.0 * sigma + 0.5))
    taps = torch.arange(-radius, radius + 1)
    kernel = torch.exp(-0.5 * (taps.float() / sigma) ** 2)
    kernel = kernel / kernel.sum()
    cols = torch.arange(size)
    src = (cols.unsqueeze(0) + taps.unsqueeze(1)) % (2 * size)  # [taps, size]
    src = torch.where(src >= size, 2 * size - 1 - src, src)
    band = torch.zeros(size, size)
    band.index_put_((src, cols.expand_as(src)), kernel.unsqueeze(1).expand_as(src),
                    accumulate=True)
    return band.to(device)


@AUGMENTATIONS.register("elastic")
def elastic(x: torch.Tensor, config: TrialConfig, generator: torch.Generator) -> torch.Tensor:
    """Warp each sample by its own smooth random displacement field (Simard et al., 2003).

    Uniform noise in ``[-1, 1]`` per pixel and axis is Gaussian-smoothed with ``elastic_sigma``
    and scaled by ``elastic_alpha`` pixels (torchvision's ``ElasticTransform`` moves ``alpha / 2``
    pixels for the same value). The field matches the reference recipe with scipy's
    ``gaussian_filter``.
    """
    b, c, h, w = x.shape
    noise = torch.rand(2 * b, h, w, generator=generator, device=x.device) * 2.0 - 1.0
    blur_h = _blur_matrix(config.elastic_sigma, h, x.device)
    blur_w = _blur_matrix(config.elastic_sigma, w, x.device)
    field = blur_h.T @ noise @ blur_w  # [2B, H, W]
    # Pixels to grid_sample's [-1, 1] units: one pixel is 2 / W across and 2 / H down.
    to_grid = field.new_tensor([2.0 / w, 2.0 / h]) * config.elastic_alpha
    displacement = field.view(b, 2, h, w).permute(0, 2, 3, 1) * to_grid  # [B, H, W, 2]
    identity = torch.eye(2, 3, device=x.device).unsqueeze(0)
    base = F.affine_grid(identity, [1, c, h, w], align_corners=False)
    grid = (base + displacement).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
