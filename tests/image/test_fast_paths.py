"""The faster paths of the calibration and ingest code give what the plain ones give (the figures are outputs)."""

from __future__ import annotations

import dataclasses
import io

import bottleneck as bn
import numpy as np
import pytest
from astropy.io import fits

from awe.image import flat as F
from awe.image.combine import _sort_frames, _sorting_network
from awe.image.stats import imstat, sigma_clipped_stats, subwin_stats
from awe.model._io import FitsFormatError, read_image
from awe.tasks.ingest import _histogram16, _histogram_stats


@pytest.mark.parametrize("depth", [1, 2, 3, 5, 8, 10, 16, 17])
def test_sorting_network_sorts_like_numpy_nan_last(depth):
    rng = np.random.default_rng(depth)
    stack = rng.normal(size=(depth, 4000)).astype(np.float32)
    stack[rng.random(stack.shape) < 0.1] = np.nan
    stack[rng.random(stack.shape) < 0.02] = np.inf
    stack[rng.random(stack.shape) < 0.02] = -np.inf
    stack[:, :5] = np.nan
    nvalid = depth - np.isnan(stack).sum(axis=0)
    expected = np.sort(stack, axis=0)
    _sort_frames(stack, nvalid)
    np.testing.assert_array_equal(stack, expected)
    pairs = _sorting_network(depth)
    assert all(0 <= a < b < depth for a, b in pairs)


@pytest.mark.parametrize("kind", ["gauss", "outliers", "heavy", "ties"])
def test_clipped_stats_are_astropys(kind):
    rng = np.random.default_rng(3)
    values = rng.normal(size=300_000)
    if kind == "outliers":
        values[:3000] += rng.uniform(5, 500, 3000)
    elif kind == "heavy":
        values[:100_000] = rng.uniform(-30, 30, 100_000)
    elif kind == "ties":
        values = np.round(values * 3)
    values = values.astype(np.float32)
    values[7] = np.nan
    reference = sigma_clipped_stats(values, sigma=5.0, maxiters=10)
    for centre, spread, n in (F._clipped_stats(values), F._clipped_sorted(values)):
        assert n == reference.n_used
        assert centre == reference.median
        assert spread == pytest.approx(reference.stdev, rel=1e-12)


def test_gain_with_a_bias_pair_measured_once_is_the_same():
    rng = np.random.default_rng(5)
    shape = (600, 500)
    flats = [rng.poisson(10000, shape).astype(np.float32) / 2.0 + 200 for _ in range(2)]
    biases = [(200 + rng.normal(0, 2, shape)).astype(np.float32) for _ in range(2)]
    section = (slice(100, 500), slice(50, 450))
    pair = F.BiasPair.of(*biases, section)
    once = F.gain_from_pairs(flats[0], flats[1], None, None, section, biases=pair)
    assert once == F.gain_from_pairs(flats[0], flats[1], biases[0], biases[1], section)
    assert once == pytest.approx(2.0, rel=0.02)


@pytest.mark.parametrize("holes", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_normalise_flat_qc_is_normalise_then_flat_qc(holes, masked):
    rng = np.random.default_rng(7)
    flat = (1000 * (1 + rng.normal(0, 0.02, (400, 300)))).astype(np.float32)
    if holes:
        flat[3, 3], flat[5, 5], flat[9, 9] = np.nan, np.inf, -1.0
    mask = rng.random(flat.shape) < 0.01 if masked else None
    normalised, qc = F.normalise_flat_qc(flat, mask, (4, 4), 64)
    reference = F.normalise_flat(flat, mask)
    np.testing.assert_array_equal(normalised, reference)
    plain = F.flat_qc(reference, mask, (4, 4), 64)
    assert dataclasses.astuple(qc)[:6] == dataclasses.astuple(plain)[:6]
    if qc.imstat is not None:
        assert not holes and not masked
        assert qc.imstat == imstat(reference)


def test_smooth_block_medians_by_partition_are_bottlenecks():
    rng = np.random.default_rng(9)
    for shape, scale in (((333, 517), 7), ((256, 192), 64), ((999, 501), 33)):
        image = rng.normal(10, 1, shape).astype(np.float32)
        fast = F.smooth_large_scale(image, scale)
        with_nan = image.copy()
        with_nan[0, 0] = np.nan  # takes the nanmedian path; block (0, 0) then differs, others must not
        slow = F.smooth_large_scale(with_nan, scale, min_fraction=1e-9)
        blocks = F._block_medians(image[:scale * (shape[0] // scale), :scale * (shape[1] // scale)]
                                  .reshape(shape[0] // scale, scale, shape[1] // scale, scale)
                                  .transpose(0, 2, 1, 3).reshape(shape[0] // scale, shape[1] // scale, -1).copy())
        reference = bn.median(image[:scale * (shape[0] // scale), :scale * (shape[1] // scale)]
                              .reshape(shape[0] // scale, scale, shape[1] // scale, scale)
                              .transpose(0, 2, 1, 3).reshape(shape[0] // scale, shape[1] // scale, -1), axis=-1)
        np.testing.assert_array_equal(blocks, reference)
        assert fast.shape == slow.shape == shape


def test_subwin_and_imstat_without_copies_are_the_same():
    rng = np.random.default_rng(11)
    image = rng.normal(5, 2, (201, 333)).astype(np.float32)
    values = image.ravel().astype(np.float64)
    stat = imstat(image)
    assert stat.median == float(bn.median(image)) and stat.mean == float(np.mean(values))
    assert stat.stdev == float(np.std(image, dtype=np.float64))
    sub = subwin_stats(image, (4, 4))
    edges_y, edges_x = np.linspace(0, 201, 5).astype(int), np.linspace(0, 333, 5).astype(int)
    assert sub.medians[1, 2] == float(bn.median(image[edges_y[1]:edges_y[2], edges_x[2]:edges_x[3]]))


@pytest.mark.parametrize("dtype,bzero,bscale", [(np.int16, 32768, 1), (np.int16, 0, 1), (np.uint8, 0, 1),
                                                (np.float32, 0, 1), (np.float64, 0, 1), (np.int16, 100, 2.5),
                                                (np.int32, 0, 1)])
def test_read_image_reads_what_astropy_reads(tmp_path, dtype, bzero, bscale):
    rng = np.random.default_rng(13)
    data = (rng.normal(100, 30, (37, 51)) if np.dtype(dtype).kind == "f"
            else rng.integers(0, 120, (37, 51))).astype(dtype)
    hdu = fits.PrimaryHDU(data)
    if (bzero, bscale) != (0, 1):
        hdu.header["BZERO"], hdu.header["BSCALE"] = bzero, bscale
    path = tmp_path / "image.fits"
    hdu.writeto(path)
    with fits.open(path) as hdul:
        expected = np.asarray(hdul[0].data, dtype=np.float32)
    got = read_image(path)
    assert got.dtype == np.float32 and got.dtype.isnative
    np.testing.assert_array_equal(got, expected)


def test_read_image_of_an_extension_and_of_a_short_file(tmp_path):
    data = np.arange(20 * 30, dtype=np.int16).reshape(20, 30)
    path = tmp_path / "mef.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, name="SCI")]).writeto(path)
    np.testing.assert_array_equal(read_image(path), data.astype(np.float32))
    np.testing.assert_array_equal(read_image(path, "SCI"), data.astype(np.float32))
    short = tmp_path / "short.fits"
    short.write_bytes(path.read_bytes()[:-2880])
    with pytest.warns(Warning, match="truncated"), pytest.raises(FitsFormatError, match="truncated"):
        read_image(short)  # not read straight (too short): astropy's error, as before


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.uint8])
def test_histogram_stats_are_exact(dtype):
    rng = np.random.default_rng(17)
    low = -100 if np.dtype(dtype).kind == "i" else 0
    data = rng.integers(low, 200 if dtype is np.uint8 else 30000, (300, 200)).astype(dtype)
    stat = _histogram_stats(*_histogram16(data))
    values = data.astype(np.float64)
    assert stat.mean == pytest.approx(values.mean(), rel=1e-15)
    assert stat.stdev == pytest.approx(values.std(), rel=1e-14)
    assert stat.median == float(np.median(values)) and stat.min == values.min() and stat.max == values.max()


def test_chip_bytes_are_astropys_file(tmp_path):
    from awe.tasks.ingest import RawChip
    data = np.arange(100 * 70, dtype=">i2").reshape(100, 70)
    header = fits.Header()
    header["OBJECT"] = "DOME"
    chip = RawChip(index=1, extension=1, spec=None, geometry=None, header=header, data=data.astype(np.uint16),
                   stored=data, scaling=(1, 32768))
    buffer = io.BytesIO()
    chip.write(buffer)
    assert bytes(chip.to_bytes()) == buffer.getvalue()


def test_blas_threads_gives_the_same_products_and_nests():
    from awe._threads import blas_threads
    rng = np.random.default_rng(19)
    a, b = rng.normal(size=(300, 31)), rng.normal(size=(31, 400))
    expected = a @ b
    with blas_threads(1):
        with blas_threads(1):  # the inner block runs as it is
            inner = a @ b
        outer = a @ b
    np.testing.assert_array_equal(inner, expected)
    np.testing.assert_array_equal(outer, expected)


def test_storage_reads_a_buffer_in_place():
    from awe.storage._storage import _MemoryReader
    data = memoryview(bytearray(b"0123456789" * 1000))
    reader = _MemoryReader(data)
    chunks = []
    while chunk := reader.read(4096):
        chunks.append(bytes(chunk))
    assert b"".join(chunks) == bytes(data) and reader.read() == b""
