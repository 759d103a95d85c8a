"""Lazy, region-by-region reading of (OME-)TIFF microscopy images far larger than memory.

An image here is a set of channels of equal shape (H, W), each channel one plane of a TIFF page:
one file per channel, or one multi-channel file (pages ``CYX``, OME-TIFF, or samples ``YXS``/``SYX``).
``ImageSource.read(y0, y1, x0, x1)`` returns ``(C, y1-y0, x1-x0)`` and touches only the TIFF
segments (tiles or strips) that overlap the region: uncompressed contiguous pages are memory
mapped, compressed ones are decoded segment by segment with tifffile's own codecs. Nothing
else of the image is ever held in memory, so memory does not grow with image size.

File handles are cached per process (keyed by pid): a worker forked from a parent that already
opened the file gets its own handle, never a shared file offset. The cache holds the ``OPEN_FILES``
files used last and closes the rest (with their memory maps): a plate of thousands of images neither
runs out of file descriptors nor keeps every image it read mapped (the mapped pages counted in a task's
resident memory, which then grew with the plate: 0.56 GB for a quarter of the scale bench's plate,
1.53 GB for the whole).
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import tifffile

from protocell.errors import ProtocellError


class InputError(ProtocellError):
    """Bad input to ``prepare``: the message names the file, the value and the fix."""


@dataclass(frozen=True)
class ChannelRef:
    """One channel: a plane of a TIFF page (``sample`` indexes samples within the page)."""

    path: str
    page: int
    sample: int = 0


OPEN_FILES = 16  # files a process keeps open (an image is one file, or one a channel: up to 16 channels)
_HANDLES: OrderedDict[tuple, tifffile.TiffFile] = OrderedDict()  # least recently used first
_MEMMAPS: dict[tuple, np.ndarray] = {}


def _file_key(path: str) -> tuple:
    """(pid, path, size, mtime): a file rewritten in place (a long-lived process, a re-exported image)
    gets a new handle instead of the old file's page offsets."""
    st = os.stat(path)
    return os.getpid(), path, st.st_size, st.st_mtime_ns


def _close(key: tuple) -> None:
    """Close one cached file and drop its memory maps."""
    _HANDLES.pop(key).close()
    for mm in [k for k in _MEMMAPS if k[:4] == key]:
        del _MEMMAPS[mm]


def _open(path: str) -> tifffile.TiffFile:
    key = _file_key(path)
    tif = _HANDLES.get(key)
    if tif is None:
        for old in [k for k in _HANDLES if k[:2] == key[:2]]:
            _close(old)
        tif = tifffile.TiffFile(path)
        _HANDLES[key] = tif
        while len(_HANDLES) > OPEN_FILES:
            _close(next(iter(_HANDLES)))
    else:
        _HANDLES.move_to_end(key)
    return tif


def _page(tif: tifffile.TiffFile, index: int) -> tifffile.TiffPage:
    page = tif.pages[index]
    page = page.aspage() if hasattr(page, "aspage") and not isinstance(page, tifffile.TiffPage) else page
    return cast(tifffile.TiffPage, page)  # a TiffFrame's aspage() is a TiffPage


def read_plane_region(ref: ChannelRef, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Pixels [y0:y1, x0:x1] of one channel, reading only the segments that overlap."""
    tif = _open(ref.path)
    page = _page(tif, ref.page)
    separate = page.planarconfig == 2 and page.samplesperpixel > 1
    if page.is_memmappable:
        key = (*_file_key(ref.path), ref.page)
        mm = _MEMMAPS.get(key)
        if mm is None:
            mm = _MEMMAPS[key] = tifffile.memmap(ref.path, page=ref.page, mode="r")
        if mm.ndim == 2:
            return np.array(mm[y0:y1, x0:x1])
        return np.array(mm[ref.sample, y0:y1, x0:x1] if separate else mm[y0:y1, x0:x1, ref.sample])

    H, W = page.imagelength, page.imagewidth
    if page.is_tiled:
        th, tw = page.tilelength, page.tilewidth
    else:
        th, tw = min(page.rowsperstrip or H, H), W
    ny, nx = math.ceil(H / th), math.ceil(W / tw)
    plane = ref.sample * ny * nx if separate else 0
    out = np.zeros((y1 - y0, x1 - x0), page.dtype)
    fh = tif.filehandle
    for i in range(y0 // th, (y1 - 1) // th + 1):
        for j in range(x0 // tw, (x1 - 1) // tw + 1):
            k = plane + i * nx + j
            if page.databytecounts[k] == 0:  # sparse segment: all zero
                continue
            fh.seek(page.dataoffsets[k])
            data = fh.read(page.databytecounts[k])
            seg, _, _ = page.decode(data, k, jpegtables=page.jpegtables)
            assert seg is not None  # None only for data=None (an empty segment)
            seg = seg[0, :, :, 0 if separate else ref.sample]
            ty, tx = i * th, j * tw
            ay0, ay1 = max(y0, ty), min(y1, ty + seg.shape[0], H)
            ax0, ax1 = max(x0, tx), min(x1, tx + seg.shape[1], W)
            out[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0] = seg[ay0 - ty : ay1 - ty, ax0 - tx : ax1 - tx]
    return out


def file_channels(path: str | Path) -> tuple[list[ChannelRef], tuple[int, int], np.dtype]:
    """The channels of one TIFF file (its first series, full resolution) as plane references.

    Raises InputError for a file that is missing, not a TIFF, or a Z/time stack."""
    path = str(path)
    if not os.path.exists(path):
        raise InputError(f"image file {path} does not exist: check the plate map / input folder")
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            series = series.levels[0] if getattr(series, "levels", None) else series
            pages = [p for p in series.pages if p is not None]
            first = _page(tif, pages[0].index)
            page_axes = first.axes
            lead_axes = series.axes[: len(series.axes) - len(page_axes)]
            lead_shape = series.shape[: len(lead_axes)]
            big = [(a, n) for a, n in zip(lead_axes, lead_shape) if n > 1]
            if any(a in "ZT" for a, _ in big) or len(big) > 1:
                raise InputError(
                    f"{path}: series axes {series.axes} shape {series.shape} hold a Z or time stack; "
                    "prepare reads 2-D fields: export a projection or one plane per file"
                )
            n_samples = first.samplesperpixel
            if big and n_samples > 1:
                raise InputError(
                    f"{path}: both several pages ({series.axes}) and several samples per "
                    "page; write one channel per page or per file"
                )
            H, W = first.imagelength, first.imagewidth
            if n_samples > 1:
                refs = [ChannelRef(path, first.index, s) for s in range(n_samples)]
            else:
                refs = [ChannelRef(path, p.index, 0) for p in pages]
            for p in pages[1:]:
                shape = getattr(p, "shape", None)
                if shape is not None and tuple(shape[-2:]) != (H, W) and "S" not in page_axes:
                    raise InputError(
                        f"{path}: page {p.index} has shape {shape}, page 0 has {(H, W)}; "
                        "every channel must have the same height and width"
                    )
            dtype = np.dtype(first.dtype)
    except InputError:
        raise
    except (tifffile.TiffFileError, OSError, ValueError, IndexError, KeyError) as err:
        # tifffile's messages quote the file's first bytes: say what the file is, never its content
        raise InputError(
            f"{path} cannot be read as a TIFF ({type(err).__name__}; the file looks like "
            f"{file_kind(path)}): it is corrupt, truncated or not a TIFF: re-export it or remove it "
            "from the input"
        ) from None
    if dtype.kind not in "uif":
        raise InputError(f"{path}: pixel type {dtype} is not a number type (uint/int/float); re-export as uint16")
    return refs, (H, W), dtype


MAGIC = (
    (b"II*\x00", "a TIFF"),
    (b"MM\x00*", "a TIFF"),
    (b"II+\x00", "a BigTIFF"),
    (b"MM\x00+", "a BigTIFF"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x89HDF", "an HDF5 file"),
    (b"\x93NUMPY", "a NumPy array"),
)


def file_kind(path: str | Path) -> str:
    """What a file is, from its first bytes, in words ("a PNG image", "text", …) — never its bytes,
    which may be anything (a plate map, a key file)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError as err:
        return f"an unreadable file ({type(err).__name__})"
    if not head:
        return "an empty file"
    for magic, kind in MAGIC:
        if head.startswith(magic):
            return f"{kind} with a damaged header or data" if "TIFF" in kind else kind
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 3:  # not merely a character cut at the 512th byte
            return "binary data of an unknown kind"
    return "text (a CSV or a list, not an image)"


@dataclass
class ImageSource:
    """A (C, H, W) image assembled from channel references; pickles cheaply (paths only)."""

    image_id: str
    channels: list[ChannelRef]
    shape: tuple[int, int]
    dtype: np.dtype

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """(C, y1-y0, x1-x0) pixels of the region (must lie inside the image)."""
        try:
            return np.stack([read_plane_region(ref, y0, y1, x0, x1) for ref in self.channels])
        except InputError:
            raise
        except Exception as err:  # noqa: BLE001 - any codec/IO failure is a corrupt file to the user
            files = sorted({r.path for r in self.channels})
            raise InputError(
                f"image {self.image_id} ({', '.join(files)}): reading pixels [{y0}:{y1}, {x0}:{x1}] "
                f"failed ({type(err).__name__}: {err}); the file is truncated or corrupt: "
                "re-export it or remove it from the input"
            ) from None


@dataclass(frozen=True)
class Tile:
    """A core window (each pixel in exactly one tile's core) and its halo-padded read window."""

    index: int
    core: tuple[int, int, int, int]  # y0, y1, x0, x1
    padded: tuple[int, int, int, int]  # clipped to the image


def tile_grid(shape: tuple[int, int], size: int, halo: int) -> list[Tile]:
    """Tiles of ``size`` covering an (H, W) image, each read with ``halo`` pixels of context."""
    H, W = shape
    tiles: list[Tile] = []
    for y0 in range(0, H, size):
        for x0 in range(0, W, size):
            y1, x1 = min(H, y0 + size), min(W, x0 + size)
            padded = (max(0, y0 - halo), min(H, y1 + halo), max(0, x0 - halo), min(W, x1 + halo))
            tiles.append(Tile(len(tiles), (y0, y1, x0, x1), padded))
    return tiles
