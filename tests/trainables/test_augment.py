"""Contract tests generated from the AUGMENTATIONS registry, plus op-specific checks."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from hpsearch.trainables.augment import Augmenter, build_augmenter
from hpsearch.trainables.config import AUGMENTATIONS, TrialConfig

NAMES = AUGMENTATIONS.names()
CHANNELS = (1, 3)
# Non-square, so a mix-up of height and width shows.
H, W = 20, 24


def _config(*names: str, **settings: Any) -> TrialConfig:
    return TrialConfig(augment=names, **settings)


def _gen(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _batch(b: int, c: int, seed: int = 0, device: str | torch.device = "cpu") -> torch.Tensor:
    """Smooth-ish distinct images in [0, 1] (blurred noise, so resampling changes them)."""
    x = torch.rand(b, c, H // 4, W // 4, generator=_gen(seed))
    x = torch.nn.functional.interpolate(x, size=(H, W), mode="bilinear", align_corners=False)
    return x.to(device)


def _augment(x: torch.Tensor, names: tuple[str, ...], seed: int = 0,
             **settings: Any) -> torch.Tensor:
    augmenter = build_augmenter(_config(*names, **settings))
    assert augmenter is not None
    return augmenter(x, _gen(seed, x.device))


# --------------------------------------------------------------------------- registry


def test_every_declared_augmentation_has_an_implementation() -> None:
    for name in NAMES:
        assert callable(AUGMENTATIONS.get(name))


def test_build_augmenter_is_none_without_augmentations() -> None:
    assert build_augmenter(_config()) is None
    assert isinstance(build_augmenter(_config("hflip")), Augmenter)


def test_augmenter_rejects_non_batches() -> None:
    augmenter = Augmenter(_config("hflip"))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        augmenter(torch.rand(3, H, W), _gen(0))
    with pytest.raises(ValueError, match="float"):
        augmenter(torch.zeros(2, 1, H, W, dtype=torch.uint8), _gen(0))


# --------------------------------------------------------------------------- contract


@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("name", NAMES)
def test_preserves_shape_dtype_and_range(name: str, channels: int) -> None:
    x = _batch(16, channels)
    out = _augment(x, (name,))
    assert out.shape == x.shape
    assert out.dtype == x.dtype
    assert out.device == x.device
    assert not out.isnan().any()
    assert out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_result_other_seed_differs(name: str, channels: int) -> None:
    x = _batch(16, channels)
    first = _augment(x, (name,), seed=1)
    assert torch.equal(first, _augment(x, (name,), seed=1))
    assert not torch.equal(first, _augment(x, (name,), seed=2))


@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("name", NAMES)
def test_each_sample_draws_its_own_transform(name: str, channels: int) -> None:
    # Identical inputs: any difference between outputs comes from per-sample randomness.
    x = _batch(1, channels).expand(16, -1, -1, -1).contiguous()
    out = _augment(x, (name,)).flatten(1)
    distinct = {tuple(row.tolist()) for row in out}
    assert len(distinct) > 1


@pytest.mark.parametrize("name", NAMES)
def test_channels_last_input_gives_the_same_result(name: str) -> None:
    x = _batch(8, 3)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    out = _augment(x, (name,))
    out_cl = _augment(x_cl, (name,))
    assert out_cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out_cl, out, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_does_not_modify_its_input(name: str) -> None:
    x = _batch(8, 3)
    before = x.clone()
    _augment(x, (name,))
    assert torch.equal(x, before)


# --------------------------------------------------------------------------- composition


@pytest.mark.parametrize(
    "names", [("color_jitter", "crop", "hflip"), ("hflip", "crop", "color_jitter")])
def test_composition_applies_in_the_listed_order(names: tuple[str, ...]) -> None:
    x = _batch(16, 3)
    config = _config(*names)
    generator = _gen(5)
    expected = x
    for name in names:
        expected = AUGMENTATIONS.get(name)(expected, config, generator)
    torch.testing.assert_close(Augmenter(config)(x, _gen(5)), expected, atol=0, rtol=0)


def test_order_matters() -> None:
    x = _batch(16, 3)
    assert not torch.equal(_augment(x, ("crop", "color_jitter")),
                           _augment(x, ("color_jitter", "crop")))


# --------------------------------------------------------------------------- hflip


def test_hflip_always_equals_torch_flip() -> None:
    x = _batch(8, 3)
    assert torch.equal(_augment(x, ("hflip",), flip_p=1.0), torch.flip(x, dims=[-1]))
    assert torch.equal(_augment(x, ("hflip",), flip_p=0.0), x)


def test_hflip_flips_some_samples_and_not_others() -> None:
    x = _batch(64, 1)
    out = _augment(x, ("hflip",), flip_p=0.5)
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert (flipped ^ kept).all()
    assert 10 < int(flipped.sum()) < 54


# --------------------------------------------------------------------------- crop


def test_crop_without_padding_is_identity() -> None:
    x = _batch(8, 3)
    assert torch.equal(_augment(x, ("crop",), crop_padding=0), x)


def test_crop_shifts_content_by_at_most_the_padding() -> None:
    pad, row, col = 3, H // 2, W // 2
    x = torch.zeros(64, 1, H, W)
    x[:, :, row, col] = 1.0
    out = _augment(x, ("crop",), crop_padding=pad)
    assert torch.equal(out.flatten(1).sum(1), torch.ones(64))  # moved whole, not resampled
    where = out[:, 0].flatten(1).argmax(1)
    d_row, d_col = where // W - row, where % W - col
    assert d_row.abs().max() <= pad and d_col.abs().max() <= pad
    assert set(d_row.tolist()) == set(range(-pad, pad + 1))
    assert set(d_col.tolist()) == set(range(-pad, pad + 1))


def test_crop_fills_the_uncovered_border_with_zeros() -> None:
    x = torch.ones(32, 3, H, W)
    out = _augment(x, ("crop",), crop_padding=2)
    assert set(out.unique().tolist()) == {0.0, 1.0}
    assert (out == 0).flatten(1).any(1).any()


# --------------------------------------------------------------------------- rotate / affine


def test_rotate_by_zero_degrees_is_identity() -> None:
    x = _batch(8, 3)
    torch.testing.assert_close(_augment(x, ("rotate",), rotate_degrees=0.0), x,
                               atol=1e-5, rtol=0)


def test_rotation_maps_pixels_like_rot90() -> None:
    from hpsearch.trainables.augment import _rotation_inverse, _warp_affine

    x = torch.rand(4, 2, 16, 16, generator=_gen(0))
    quarter = _warp_affine(x, _rotation_inverse(torch.full((4,), math.pi / 2)))
    turned = [torch.rot90(x, k, dims=(-2, -1)) for k in (1, -1)]
    assert any(torch.allclose(quarter, t, atol=1e-5) for t in turned)


def test_rotate_keeps_a_centred_disc() -> None:
    ys, xs = torch.meshgrid(torch.arange(H) - (H - 1) / 2, torch.arange(W) - (W - 1) / 2,
                            indexing="ij")
    disc = ((ys**2 + xs**2) <= 36).float().expand(16, 1, H, W)
    out = _augment(disc, ("rotate",), rotate_degrees=180.0)
    # Only edge pixels of the disc are resampled; a height/width mix-up would squash it.
    assert (out - disc).abs().mean() < 0.03


def test_affine_without_shear_or_scale_is_identity() -> None:
    x = _batch(8, 3)
    out = _augment(x, ("affine",), affine_shear=0.0, affine_scale_min=1.0,
                   affine_scale_max=1.0)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_affine_scale_resizes_content() -> None:
    x = torch.zeros(4, 1, H, W)
    x[:, :, 6:14, 8:16] = 1.0  # an 8x8 square about the centre
    shrunk = _augment(x, ("affine",), affine_shear=0.0, affine_scale_min=0.5,
                      affine_scale_max=0.5)
    grown = _augment(x, ("affine",), affine_shear=0.0, affine_scale_min=1.5,
                     affine_scale_max=1.5)
    torch.testing.assert_close(shrunk.sum((1, 2, 3)), torch.full((4,), 16.0), atol=0.5, rtol=0)
    torch.testing.assert_close(grown.sum((1, 2, 3)), torch.full((4,), 144.0), atol=0.5, rtol=0)


# --------------------------------------------------------------------------- color_jitter


def test_color_jitter_with_zero_strength_is_identity() -> None:
    x = _batch(8, 3)
    out = _augment(x, ("color_jitter",), jitter_brightness=0.0, jitter_contrast=0.0,
                   jitter_saturation=0.0)
    assert torch.equal(out, x)


def test_saturation_is_a_no_op_on_grey_images() -> None:
    x = _batch(8, 1)
    out = _augment(x, ("color_jitter",), jitter_brightness=0.0, jitter_contrast=0.0,
                   jitter_saturation=0.5)
    assert torch.equal(out, x)


def test_saturation_changes_colour_images() -> None:
    x = _batch(8, 3)
    out = _augment(x, ("color_jitter",), jitter_brightness=0.0, jitter_contrast=0.0,
                   jitter_saturation=0.5)
    assert not torch.equal(out, x)


def test_brightness_scales_each_sample_by_its_own_factor() -> None:
    x = _batch(32, 1) * 0.5  # no clipping at 1 + 0.4
    out = _augment(x, ("color_jitter",), jitter_brightness=0.4, jitter_contrast=0.0)
    ratio = (out / x).flatten(1)
    torch.testing.assert_close(ratio, ratio[:, :1].expand_as(ratio))
    assert ratio.min() >= 0.6 - 1e-6 and ratio.max() <= 1.4 + 1e-6
    assert ratio[:, 0].std() > 0.1


# --------------------------------------------------------------------------- elastic


def test_elastic_with_zero_alpha_is_identity() -> None:
    x = _batch(8, 3)
    torch.testing.assert_close(_augment(x, ("elastic",), elastic_alpha=0.0), x,
                               atol=1e-5, rtol=0)


def test_elastic_blur_matches_scipy_gaussian_filter() -> None:
    ndimage = pytest.importorskip("scipy.ndimage")
    from hpsearch.trainables.augment import _blur_matrix

    noise = torch.rand(H, W, generator=_gen(0))
    for sigma in (1.5, 4.0, 30.0):  # 30: kernel much wider than the image
        ours = _blur_matrix(sigma, H, noise.device).T @ noise @ _blur_matrix(sigma, W, "cpu")
        ref = ndimage.gaussian_filter(noise.double().numpy(), sigma, mode="reflect")
        torch.testing.assert_close(ours.double(), torch.from_numpy(ref), atol=1e-5, rtol=0)


def test_elastic_displacement_grows_with_alpha() -> None:
    x = _batch(16, 1)
    small = (_augment(x, ("elastic",), elastic_alpha=2.0) - x).abs().mean()
    large = (_augment(x, ("elastic",), elastic_alpha=40.0) - x).abs().mean()
    assert 0 < small < large


# --------------------------------------------------------------------------- device


@pytest.mark.gpu
@pytest.mark.parametrize("name", NAMES)
def test_runs_on_cuda_with_a_cuda_generator(name: str) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    x = _batch(16, 3, device="cuda").contiguous(memory_format=torch.channels_last)
    out = _augment(x, (name,), seed=3)
    assert out.device == x.device and out.shape == x.shape
    assert out.min() >= 0.0 and out.max() <= 1.0
    torch.testing.assert_close(out, _augment(x, (name,), seed=3))
