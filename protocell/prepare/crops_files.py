"""The crop files of a crops import (``protocell.prepare.crops_import``): found under ``input``, their
headers read before any pixel, their arrays brought to (C, S, S).

Crops are ``.npy`` or ``.tif``/``.tiff``, one cell per file, all of one size (C, S, S) — (S, S, C)
and (S, S) are read too; ``channels`` names the C channels in file order. A ``<name>.mask.npy`` /
``.mask.tif`` file is a crop's mask, not a crop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from protocell.prepare.io import InputError

CROP_SUFFIXES = (".npy", ".tif", ".tiff")
STORE_DTYPES = ("uint8", "uint16", "float32")


def _is_mask(path: Path) -> bool:
    return path.suffix.lower() in CROP_SUFFIXES and path.stem.lower().endswith(".mask")


def list_crops(root: Path, skip: tuple[Path, ...] = ()) -> tuple[list[str], set[str]]:
    """(crop files, mask files) under ``root`` as posix paths relative to it, sorted. Hidden files
    and ``skip`` (the metadata CSV, the store's own folder when it lies inside ``root``, and whatever
    is in it) are ignored; any other file that is not a crop is refused."""
    crops: list[str] = []
    masks: set[str] = set()
    skipped = {p.resolve() for p in skip}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if (
            p.is_dir()
            or any(part.startswith(".") for part in rel.parts)
            or any(q == p.resolve() or q in p.resolve().parents for q in skipped)
        ):
            continue
        if _is_mask(p):
            masks.add(rel.as_posix())
        elif p.suffix.lower() in CROP_SUFFIXES:
            crops.append(rel.as_posix())
        else:
            raise InputError(
                f"{p} is not a crop ({', '.join(CROP_SUFFIXES)}): remove it from input={root}, or "
                "move the crops into a folder of their own"
            )
    if not crops:
        raise InputError(f"input={root} holds no crops ({', '.join(CROP_SUFFIXES)} files, one cell per file)")
    return crops, masks


def read_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a crop file without reading its pixels."""
    try:
        if path.suffix.lower() == ".npy":
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            return tuple(arr.shape), arr.dtype
        import tifffile

        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            return tuple(series.shape), np.dtype(series.dtype)
    except Exception as err:  # noqa: BLE001 - any reader failure is a bad file to the user
        raise InputError(
            f"{path} cannot be read as a crop ({type(err).__name__}: {str(err)[:200]}); re-export it "
            "as .npy or .tif, or remove it"
        ) from None


def read_array(path: Path) -> np.ndarray:
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False)
        import tifffile

        return tifffile.imread(path)
    except Exception as err:  # noqa: BLE001
        raise InputError(
            f"{path} cannot be read as a crop ({type(err).__name__}: {str(err)[:200]}); re-export it "
            "as .npy or .tif, or remove it"
        ) from None


def crop_shape(shape: tuple[int, ...], n_channels: int, path) -> tuple[tuple[int, int, int], str]:
    """(C, H, W) of a crop file's array shape, and its layout (``CYX``, ``YXC`` or ``YX``)."""
    if len(shape) == 2 and n_channels == 1:
        return (1, *shape), "YX"
    if len(shape) == 3 and shape[0] == n_channels:
        return (shape[0], shape[1], shape[2]), "CYX"
    if len(shape) == 3 and shape[-1] == n_channels:
        return (shape[2], shape[0], shape[1]), "YXC"
    raise InputError(
        f"{path} has shape {tuple(shape)}, which does not hold the {n_channels} channels that "
        f"channels.names lists: give one name per channel (C, H, W or H, W, C), e.g. "
        "channels.names=[DNA,tubulin,actin]"
    )


def to_cyx(arr: np.ndarray, layout: str) -> np.ndarray:
    return arr[None] if layout == "YX" else np.moveaxis(arr, -1, 0) if layout == "YXC" else arr


def store_dtype(dtypes: set) -> str:
    """The store's pixel type: the crops' own when they share uint8, uint16 or float32, else float32."""
    names = {np.dtype(d).name for d in dtypes}
    return names.pop() if len(names) == 1 and next(iter(names)) in STORE_DTYPES else "float32"
