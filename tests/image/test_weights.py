"""Weight maps, saturation masks, mask bits, and the QA plot helpers."""

from __future__ import annotations

import numpy as np
import pytest

from awe.image import _testing as T
from awe.image.inspect import new_figure, save_figure, show_histogram, show_image
from awe.image.weights import (COLD, COSMIC, HOT, SATELLITE, SATURATED, combine_masks, grow_mask, mask_bits,
                               saturation_mask, weight_map)


def _masks(shape=(40, 50)):
    masks = {name: np.zeros(shape, bool) for name in ("hot", "cold", "saturated", "cosmics", "satellites")}
    masks["hot"][3, 4] = True
    masks["cold"][:, 7] = True
    masks["saturated"][10:14, 20] = True
    masks["cosmics"][30, 30] = masks["cosmics"][3, 4] = True        # one pixel also hot
    masks["satellites"][25, :] = True
    return masks


def test_mask_bits():
    assert dict(mask_bits) == {"hot": 1, "cold": 2, "saturated": 4, "cosmic": 8, "satellite": 16}
    assert (HOT, COLD, SATURATED, COSMIC, SATELLITE) == (1, 2, 4, 8, 16)
    with pytest.raises(TypeError):
        mask_bits["hot"] = 3                                          # read-only


def test_combine_masks_sets_one_bit_per_reason():
    masks = _masks()
    flags = combine_masks(**masks)
    assert flags.dtype == np.uint8
    assert flags[3, 4] == HOT | COSMIC
    assert flags[0, 7] == COLD and flags[25, 7] == COLD | SATELLITE
    assert flags[11, 20] == SATURATED and flags[30, 30] == COSMIC
    assert flags[0, 0] == 0
    assert np.count_nonzero(flags) == np.count_nonzero(np.logical_or.reduce(list(masks.values())))
    assert not combine_masks(shape=(5, 6)).any()
    with pytest.raises(ValueError):
        combine_masks()
    with pytest.raises(ValueError):
        combine_masks(hot=np.zeros((3, 3), bool), cold=np.zeros((4, 4), bool))


def test_weight_map_is_normalised_flat_with_zeros_on_masks():
    rng = np.random.default_rng(1)
    flat = rng.normal(17000.0, 300.0, (40, 50))
    flat[0, 0] = np.nan
    flat[1, 1] = -5.0
    masks = _masks()
    weight = weight_map(flat, **masks)
    assert weight.dtype == np.float32
    bad = np.logical_or.reduce(list(masks.values()))
    good = ~bad & np.isfinite(flat) & (flat > 0)
    assert np.all(weight[~good] == 0.0)
    assert np.median(weight[good]) == pytest.approx(1.0, abs=0.01)
    np.testing.assert_allclose(weight[good], (flat / np.median(flat[np.isfinite(flat) & (flat > 0)]))[good],
                               rtol=1e-6)
    # The same from a flag image.
    np.testing.assert_array_equal(weight_map(flat, flags=combine_masks(**masks)), weight)
    with pytest.raises(ValueError):
        weight_map(flat, hot=np.zeros((4, 4), bool))
    with pytest.raises(ValueError):
        weight_map(np.zeros((4, 4)))


def test_saturation_mask_grows_bleed_trails():
    image = np.full((30, 20), 100.0)
    image[5:20, 10] = 65535.0                                         # a bleed trail
    image[12, 9:12] = 65535.0                                         # the star's core
    image[25, 3] = 60000.0                                            # bright, not saturated
    mask = saturation_mask(image, 65000.0)
    assert mask[4:21, 9:12].all()                                     # trail + 1 pixel all round
    assert mask.sum() == (21 - 4) * 3 + 3 * 2                         # + both sides of the core, grown
    assert not mask[25, 3]
    assert saturation_mask(image, 65000.0, grow=0).sum() == 15 + 2
    assert saturation_mask(image, 65000.0, grow=2)[2:23, 7:14].sum() == saturation_mask(image, 65000.0,
                                                                                        grow=2).sum()
    with pytest.raises(ValueError):
        saturation_mask(image, 65000.0, grow=-1)


@pytest.mark.parametrize("fraction", [0.0, 0.002, 0.02, 0.3])
def test_grow_mask_is_the_binary_dilation(fraction):
    from scipy import ndimage as ndi
    rng = np.random.default_rng(7)
    for shape in ((1, 9), (23, 41), (120, 77)):
        mask = rng.random(shape) < fraction
        mask[0, 0] = mask[-1, -1] = True                     # the edges: nothing grows off the frame
        for pixels in (0, 1, 2):
            expected = ndi.binary_dilation(mask, structure=np.ones((3, 3), bool), iterations=pixels) \
                if pixels else mask
            np.testing.assert_array_equal(grow_mask(mask, pixels), expected)


def test_qa_figure_is_written(tmp_path):
    field = T.moffat_star_field((64, 80), 10, fwhm=2.0, seed=3)
    image = T.add_noise(field.image, 1.5, 5.0, seed=4)
    masks = _masks((64, 80))
    fig, axes = new_figure(ncols=2, size=(8, 4))
    show_image(axes[0], image, "frame", masks={"cosmics": masks["cosmics"], "satellites": masks["satellites"]})
    show_histogram(axes[1], image, title="pixels")
    path = tmp_path / "qa.png"
    save_figure(fig, path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    # ax=None makes its own figure.
    ax = show_image(None, image, "alone")
    save_figure(ax.figure, tmp_path / "alone.png")
    assert (tmp_path / "alone.png").stat().st_size > 1000
    with pytest.raises(ValueError):
        show_image(None, image, masks={"bad": np.zeros((3, 3), bool)})
