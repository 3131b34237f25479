"""The pure resampling and combination (awe.image.regrid, awe.image.coadd) on synthetic frames, and a smoke
run of benchmarks/bench_coadd.py at a tiny scale."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.wcs import WCS

from awe.image.coadd import CoaddInput, aperture_noise, coadd
from awe.image.fitsbands import ImageBandWriter
from awe.image.regrid import TangentGrid, pixel_map, regrid, regrid_stream, resample

STARS = [(50.3, 60.7, 1000.0), (130.2, 280.1, 5000.0), (200.8, 450.4, 2000.0)]


def _frame(seed: int = 1, noise: float = 0.0):
    ny, nx = 512, 256
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [187.3, 2.05]
    w.wcs.crpix = [100, 200]
    s, th = 1.9 / 3600, np.radians(0.3)
    w.wcs.cd = [[-s * np.cos(th), s * np.sin(th)], [s * np.sin(th), s * np.cos(th)]]
    yy, xx = np.mgrid[0:ny, 0:nx]
    data = np.zeros((ny, nx), np.float64)
    for x, y, f in STARS:
        data += f / (2 * np.pi * 1.2 ** 2) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.2 ** 2))
    if noise:
        data += np.random.default_rng(seed).normal(0.0, noise, data.shape)
    return data.astype(np.float32), np.ones((ny, nx), np.float32), w


# stars of sigma 1.2 input pixels resampled at 0.84 input pixels: the output's sum samples the interpolant, whose
# integral is the input's sum; the sampling error is (measured) LANCZOS3 0.1 %, LANCZOS2 0.6 %, BILINEAR 1.7 %
# (the same grid: 0 for all; well-sampled frames: negligible)
@pytest.mark.parametrize("kernel,tolerance", [("LANCZOS3", 0.003), ("LANCZOS2", 0.012), ("BILINEAR", 0.035)])
def test_flux_conserved_and_positions(kernel, tolerance):
    data, weight, w = _frame()
    grid = TangentGrid(187.3, 2.05, 1.6, 2000, 2000)  # another pixel scale: 0.71 input pixels per output pixel
    r = regrid(data, weight, w, grid, kernel=kernel)
    assert r.area == pytest.approx((1.6 / 1.9) ** 2, rel=1e-3)
    assert float(r.data.sum()) == pytest.approx(float(data.sum()), rel=tolerance)
    for x, y, f in STARS:
        ra, dec = w.all_pix2world(x, y, 0)
        gx, gy = grid.to_pixel(ra, dec)
        gx, gy = float(gx) - r.x0, float(gy) - r.y0
        ix, iy = int(round(gx)), int(round(gy))
        cut = r.data[iy - 7:iy + 8, ix - 7:ix + 8]
        yy, xx = np.mgrid[iy - 7:iy + 8, ix - 7:ix + 8]
        assert cut.sum() == pytest.approx(f, rel=max(0.01, tolerance))
        assert abs((cut * xx).sum() / cut.sum() - gx) < 0.03 and abs((cut * yy).sum() / cut.sum() - gy) < 0.03


def test_bad_pixels_do_not_leak():
    data, weight, w = _frame()
    data[300:303, 100:103] = np.nan  # bad pixels (NaN) of weight 0
    weight[300:303, 100:103] = 0.0
    flags = np.zeros(data.shape, np.uint8)
    flags[300:303, 100:103] = 4
    grid = TangentGrid(187.3, 2.05, 1.9, 2000, 2000)
    r = regrid(data, weight, w, grid, flags=flags)
    assert np.all(np.isfinite(r.data)) and np.all(np.isfinite(r.weight))
    assert np.count_nonzero(r.weight[r.flags > 0] == 0) >= 4  # the bad pixels: weight 0 and flagged
    assert np.all(r.data[r.weight == 0] == 0)


@pytest.mark.parametrize("kernel", ["LANCZOS3", "LANCZOS2", "BILINEAR", "NEAREST"])
def test_one_pass_equals_the_mapping_then_the_kernel_and_threads_do_not_matter(kernel):
    """regrid's compiled pass (the splines evaluated per row inside the loop) gives what the pixel map and
    resample() give, with bad pixels and flags, and the same on 2 threads as on 1."""
    data, weight, w = _frame(noise=3.0)
    data[300:303, 100:103] = np.nan
    weight[300:303, 100:103] = 0.0
    weight[40:44, 0:5] = 0.0  # at the frame's edge
    flags = np.zeros(data.shape, np.uint8)
    flags[200:206, 30:33] = 4
    grid = TangentGrid(187.3, 2.05, 1.6, 2000, 2000)
    r = regrid(data, weight, w, grid, kernel=kernel, flags=flags, flux_scale=1.7, variance=4.0)
    px, py, area = pixel_map(w, grid, r.x0, r.y0, r.shape[1], r.shape[0])
    values, wts, fl = resample(data, weight, px, py, area, kernel=kernel, flags=flags)
    np.testing.assert_allclose(r.data, values * np.float32(1.7), rtol=2e-6, atol=1e-6)
    expected = np.where(wts > 0, wts / (4.0 * 1.7 ** 2 * area), 0.0)
    np.testing.assert_allclose(r.weight, expected, rtol=2e-6, atol=0)
    np.testing.assert_array_equal(r.flags, fl)
    r2 = regrid(data, weight, w, grid, kernel=kernel, flags=flags, flux_scale=1.7, variance=4.0, threads=2)
    for a, b in ((r.data, r2.data), (r.weight, r2.weight), (r.flags, r2.flags)):
        np.testing.assert_array_equal(a, b)
    # a frame converted on the way in (float64, big-endian) is cleaned in the converted copy, never in place
    wide, before = data.astype(">f8"), data.astype(">f8")
    r3 = regrid(wide, weight.astype(np.float64), w, grid, kernel=kernel, flags=flags, flux_scale=1.7, variance=4.0)
    np.testing.assert_array_equal(r3.data, r.data)
    np.testing.assert_array_equal(wide, before)
    with pytest.raises(ValueError, match="threads"):
        regrid(data, weight, w, grid, kernel=kernel, threads=-1)


@pytest.mark.parametrize("kernel", ["LANCZOS3", "NEAREST"])
def test_bands_give_the_same_pixels_streamed_from_a_file_into_a_file(kernel, tmp_path):
    """The output made in bands of any size (each from only the input rows it reaches) is bit-identical to the
    output made in one band, also from rows read through an ImageHDU.section and written band by band into a
    FITS file (ImageBandWriter)."""
    from astropy.io import fits
    data, weight, w = _frame(noise=3.0)
    weight[300:303, 100:103] = 0.0
    weight[0:3, :] = 0.0  # at the frame's first rows
    flags = np.zeros(data.shape, np.uint8)
    flags[200:206, 30:33] = 4
    grid = TangentGrid(187.3, 2.05, 1.6, 2000, 2000)
    args = dict(kernel=kernel, flags=flags, flux_scale=1.3, variance=2.0)
    whole = regrid(data, weight, w, grid, band_pixels=10 ** 9, **args)
    for band in (1, 777, 20_000):
        r = regrid(data, weight, w, grid, band_pixels=band, **args)
        for a, b in ((r.data, whole.data), (r.weight, whole.weight), (r.flags, whole.flags)):
            np.testing.assert_array_equal(a, b)
        assert (r.x0, r.y0, r.area) == (whole.x0, whole.y0, whole.area)
    fits.HDUList([fits.PrimaryHDU(data), fits.ImageHDU(weight, name="WEIGHT"),
                  fits.ImageHDU(flags, name="FLAGS")]).writeto(tmp_path / "in.fits")
    out = tmp_path / "out.fits"
    with fits.open(tmp_path / "in.fits", memmap=False) as hdul:
        ny, nx = whole.shape
        planes = ((None, np.float32), ("WEIGHT", np.float32), ("FLAGS", np.uint8))
        with ImageBandWriter(out, ny, nx, {"OBJECT": "test", "GRIDX0": (whole.x0, "column")}, planes) as writer:
            box = regrid_stream(hdul[0].section, hdul["WEIGHT"].section, w, grid,
                                lambda r0, r1, v, wt, f: writer.write(r0, v, wt, f), kernel=kernel,
                                flags=hdul["FLAGS"].section, flux_scale=1.3, variance=2.0, band_pixels=5000)
    assert (box.x0, box.y0, box.nx, box.ny, box.area) == (whole.x0, whole.y0, nx, ny, whole.area)
    with fits.open(out) as hdul:
        hdul.verify("exception")
        assert hdul[0].header["OBJECT"] == "test" and hdul[0].header["GRIDX0"] == whole.x0
        np.testing.assert_array_equal(hdul[0].data, whole.data)
        np.testing.assert_array_equal(hdul["WEIGHT"].data, whole.weight)
        np.testing.assert_array_equal(hdul["FLAGS"].data, whole.flags)
    # a writer left on an error leaves nothing behind
    with pytest.raises(RuntimeError):
        with ImageBandWriter(tmp_path / "failed.fits", 4, 4) as writer:
            writer.write(0, np.zeros((2, 4), np.float32))
            raise RuntimeError("stop")
    assert not (tmp_path / "failed.fits").exists() and not list(tmp_path.glob(".tmp-*"))
    small = ImageBandWriter(tmp_path / "x.fits", 4, 4)
    with pytest.raises(ValueError, match="does not fit"):
        small.write(3, np.zeros((2, 4), np.float32))
    small.abort()


def test_coadd_streams_in_tiles():
    rng = np.random.default_rng(3)
    inputs, arrays = [], []
    for k in range(5):
        d = rng.normal(100.0, 1.0, (60, 40)).astype(np.float32)
        wgt = rng.uniform(0.5, 1.5, (60, 40)).astype(np.float32)
        if k == 1:
            d[10, 5] = 1e4  # a cosmic ray in one input (grid pixel 12, 8)
        arrays.append((d, wgt))
    reads: list[int] = []

    def make(x0, y0, d, wgt):
        def read(r0, r1):
            reads.append(r1 - r0)
            return d[r0:r1], wgt[r0:r1], np.zeros(d.shape, np.uint8)[r0:r1]
        return CoaddInput(x0, y0, 40, 60, read)
    inputs = [make(3 * k, 2 * k, d, wgt) for k, (d, wgt) in enumerate(arrays)]
    outputs = {}
    for tile in (10_000_000, 400):
        for method in ("WEIGHTED", "CLIPPED", "MEDIAN"):
            parts = []
            reads.clear()
            stats = coadd(inputs, lambda r0, r1, d, w, f: parts.append((r0, d.copy(), w.copy())), method=method,
                          tile_pixels=tile, sky=100.0)
            data = np.concatenate([p[1] for p in sorted(parts, key=lambda p: p[0])])
            outputs[(tile, method)] = data
            assert data.shape == (60 + 8, 40 + 12) and max(reads) <= stats.tile_rows
    for method in ("WEIGHTED", "CLIPPED", "MEDIAN"):
        assert np.allclose(outputs[(400, method)], outputs[(10_000_000, method)])
    # the cosmic ray: in the weighted mean, rejected by the clipped mean and the median
    assert outputs[(400, "WEIGHTED")][12, 8] > 500
    assert abs(outputs[(400, "CLIPPED")][12, 8] - 100) < 5 and abs(outputs[(400, "MEDIAN")][12, 8] - 100) < 5


def test_aperture_noise_of_white_noise():
    rng = np.random.default_rng(5)
    data = rng.normal(10.0, 2.0, (400, 400)).astype(np.float32)
    weight = np.full(data.shape, 1 / 4.0, np.float32)
    measured, predicted = aperture_noise(data, weight, 6.0)
    assert measured == pytest.approx(predicted, rel=0.08)


def test_benchmark_smoke(tmp_path):
    """benchmarks/bench_coadd.py at a tiny scale, awe and reproject_and_coadd only."""
    bench = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_coadd.py"
    out = subprocess.run([sys.executable, str(bench), "--scale", "0.0625", "--chips", "1", "--peers", "reproject",
                          "--workdir", str(tmp_path)], capture_output=True, text=True, env=dict(os.environ),
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "awe / reproject: wall" in out.stdout
