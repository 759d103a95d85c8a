"""Lazy TIFF reads, tiling and streamed statistics: exact against whole-image numpy."""

import numpy as np
import pytest
import tifffile

from protocell.prepare.io import ImageSource, file_channels, tile_grid
from protocell.prepare.preprocess import channel_stats, normalize

LAYOUTS = {
    "tiled_zlib": dict(tile=(64, 64), compression="zlib", metadata={"axes": "CYX"}),
    "pages_raw_memmap": dict(metadata={"axes": "CYX"}),
    "strips_contig_samples": dict(photometric="minisblack", planarconfig="contig", rowsperstrip=16, compression="zlib"),
    "strips_separate_samples": dict(
        photometric="minisblack", planarconfig="separate", rowsperstrip=16, compression="zlib"
    ),
    "ome_tiled": dict(tile=(64, 64), compression="zlib", metadata={"axes": "CYX"}, ome=True),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_region_reads_equal_the_full_image(tmp_path, layout):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 60000, (2, 150, 230)).astype(np.uint16)
    data = img.transpose(1, 2, 0) if layout == "strips_contig_samples" else img
    path = tmp_path / ("x.ome.tif" if layout.startswith("ome") else "x.tif")
    tifffile.imwrite(path, data, **LAYOUTS[layout])
    refs, shape, dtype = file_channels(path)
    assert len(refs) == 2 and shape == (150, 230) and dtype == np.uint16
    src = ImageSource("x", refs, shape, dtype)
    for y0, y1, x0, x1 in [(0, 150, 0, 230), (63, 130, 1, 129), (149, 150, 229, 230), (10, 11, 64, 128)]:
        np.testing.assert_array_equal(src.read(y0, y1, x0, x1), img[:, y0:y1, x0:x1])


@pytest.mark.parametrize("layout", ["pages_raw_memmap", "tiled_zlib"])
def test_reading_many_images_keeps_a_bounded_number_of_files_open(tmp_path, layout):
    """A plate of thousands of images: the process keeps at most OPEN_FILES files (and their memory maps)
    open, and an image read again after its file was closed reads the same pixels."""
    import os

    from protocell.prepare import io

    rng = np.random.default_rng(1)
    images, sources = [], []
    for i in range(io.OPEN_FILES + 9):
        img = rng.integers(0, 60000, (2, 40, 50)).astype(np.uint16)
        path = tmp_path / f"f{i}.tif"
        tifffile.imwrite(path, img, **LAYOUTS[layout])
        refs, shape, dtype = file_channels(path)
        images.append(img)
        sources.append(ImageSource(f"f{i}", refs, shape, dtype))
    fds = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    for img, src in zip(images, sources):
        np.testing.assert_array_equal(src.read(0, 40, 0, 50), img)
    mine = [k for k in io._HANDLES if k[0] == os.getpid()]
    assert len(mine) <= io.OPEN_FILES
    assert all(k[:4] in io._HANDLES for k in io._MEMMAPS)  # no map outlives its file
    if fds is not None:
        assert len(os.listdir("/proc/self/fd")) - fds <= io.OPEN_FILES * 3  # a handle, and a map a channel
    np.testing.assert_array_equal(sources[0].read(5, 30, 7, 44), images[0][:, 5:30, 7:44])  # reopened


def test_tile_cores_cover_every_pixel_once_and_halos_stay_inside():
    H, W, size, halo = 300, 470, 128, 40
    cover = np.zeros((H, W), int)
    for t in tile_grid((H, W), size, halo):
        y0, y1, x0, x1 = t.core
        cover[y0:y1, x0:x1] += 1
        py0, py1, px0, px1 = t.padded
        assert 0 <= py0 <= y0 and y1 <= py1 <= H and 0 <= px0 <= x0 and x1 <= px1 <= W
        assert py0 == max(0, y0 - halo) and px1 == min(W, x1 + halo)
    assert (cover == 1).all()


def test_streamed_percentiles_are_exact_for_uint16(tmp_path):
    rng = np.random.default_rng(1)
    img = rng.gamma(2.0, 300.0, (2, 300, 260)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "x.tif", img, tile=(64, 64), metadata={"axes": "CYX"})
    src = ImageSource("x", *file_channels(tmp_path / "x.tif"))
    stats = channel_stats(src, ["a", "b"], 1.0, 99.8, block=100)  # blocks unaligned with TIFF tiles
    for c in range(2):
        lo, hi = np.percentile(img[c], [1.0, 99.8], method="inverted_cdf")
        assert (stats[c].low, stats[c].high) == (lo, hi)
        assert stats[c].minimum == img[c].min() and stats[c].maximum == img[c].max()
    out = normalize(img[:, :5, :5], [s.low for s in stats], [s.high for s in stats])
    np.testing.assert_allclose(out[0], (img[0, :5, :5] - stats[0].low) / (stats[0].high - stats[0].low), rtol=1e-6)
