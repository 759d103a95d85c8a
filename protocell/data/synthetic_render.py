"""The field renderer of the built-in wells (``protocell.data.synthetic``): one two-channel fluorescence
field, its cell instance labels and its planted-change mask, drawn from the field's random generator.

Per field it draws non-overlapping irregular cells, each with

- a nucleus (channel ``nuclei``: an ellipse with chromatin texture), and
- an actin-like cytoplasm (channel ``actin``: diffuse level, a bright cortical rim, a bundle of
  roughly parallel stress fibres, a few isolated puncta that every cell may have);
- in *affected* cells, a **planted local change**: a tight cluster of puncta in one part of the
  cytoplasm (about 12 px across, so a receptive field much smaller than the cell isolates it).
  The puncta look like the isolated ones; only their clustering differs: a subtle, local texture.

then the background confound at the well's level (debris specks and an illumination offset, outside
the cells) and the imaging: optics blur, the well's gain, Poisson and Gaussian noise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage as ndi

if TYPE_CHECKING:
    from protocell.data.synthetic import WellSpec


# ----------------------------------------------------------------------------- drawing helpers


def _gaussian_spots(shape, ys, xs, sigma, amps) -> np.ndarray:
    """Sum of isotropic Gaussian spots on an (H, W) grid."""
    out = np.zeros(shape, np.float32)
    if len(ys) == 0:
        return out
    r = int(np.ceil(3 * sigma))
    g = np.arange(-r, r + 1, dtype=np.float32)
    for y, x, a in zip(ys, xs, amps):
        iy, ix = int(round(y)), int(round(x))
        dy, dx = g[:, None] + iy - y, g[None, :] + ix - x
        spot = a * np.exp(-(dy**2 + dx**2) / (2 * sigma**2))
        y0, x0 = iy - r, ix - r
        ys0, xs0 = max(0, y0), max(0, x0)
        ys1, xs1 = min(shape[0], iy + r + 1), min(shape[1], ix + r + 1)
        if ys1 > ys0 and xs1 > xs0:
            out[ys0:ys1, xs0:xs1] += spot[ys0 - y0 : ys1 - y0, xs0 - x0 : xs1 - x0]
    return out


def _cell_shape(rng, radius, size):
    """Boolean (size, size) body of an irregular cell centred in the window, and its radius map."""
    c = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dy, dx = yy - c, xx - c
    theta = np.arctan2(dy, dx)
    # elongation along a random axis, plus low harmonics for an irregular outline
    phi = rng.uniform(0, np.pi)
    elong = rng.uniform(1.0, 1.35)
    u = dx * np.cos(phi) + dy * np.sin(phi)
    v = -dx * np.sin(phi) + dy * np.cos(phi)
    rho = np.sqrt((u / elong) ** 2 + (v * elong**0.5) ** 2)
    boundary = np.ones_like(theta)
    for k in range(2, 6):
        boundary += rng.normal(0, 0.07 / k**0.5) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    body = rho <= radius * boundary
    return body, rho / (radius * boundary)


def _fibres(rng, body, n, amp):
    """A bundle of roughly parallel straight fibres clipped to the body."""
    size = body.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    out = np.zeros(body.shape, np.float32)
    base = rng.uniform(0, np.pi)
    c = (size - 1) / 2
    for _ in range(n):
        ang = base + rng.normal(0, 0.15)
        off = rng.uniform(-0.6, 0.6) * size / 2.5
        d = np.abs((xx - c) * np.sin(ang) - (yy - c) * np.cos(ang) - off)
        out += amp * rng.uniform(0.6, 1.0) * np.exp(-(d**2) / (2 * 0.7**2))
    return out * body


def _render_cell(rng, radius, affected, p):
    """One cell in its own window: (actin, nuclei, body mask, texture mask), all (w, w)."""
    w = int(2 * radius * 1.5) | 1
    body, rel = _cell_shape(rng, radius, w)
    # cortical rim: bright within ~2 px of the outline
    dist_in = ndi.distance_transform_edt(body)
    rim = np.exp(-((dist_in - 1.0) ** 2) / (2 * 1.3**2)) * body
    # nucleus: ellipse, slightly off centre
    c = (w - 1) / 2
    yy, xx = np.mgrid[0:w, 0:w].astype(np.float32)
    ny, nx = c + rng.normal(0, radius * 0.08, 2)
    a, b = radius * rng.uniform(0.32, 0.42, 2)
    ang = rng.uniform(0, np.pi)
    u = (xx - nx) * np.cos(ang) + (yy - ny) * np.sin(ang)
    v = -(xx - nx) * np.sin(ang) + (yy - ny) * np.cos(ang)
    nucleus = ((u / a) ** 2 + (v / b) ** 2 <= 1) & body
    chromatin = ndi.gaussian_filter(rng.normal(0, 1, (w, w)).astype(np.float32), 1.2)
    nuclei = nucleus * (0.75 + 0.25 * chromatin / (chromatin.std() + 1e-6)).clip(0.3, 1.3)

    cyto = body & ~ndi.binary_dilation(nucleus, iterations=2)
    actin = (0.28 * body + 0.9 * rim + _fibres(rng, body, int(rng.integers(3, 7)), 0.45)).astype(np.float32)
    actin *= 1 + 0.15 * ndi.gaussian_filter(rng.normal(0, 1, (w, w)), 4).astype(np.float32)

    # isolated puncta that any cell may have: the planted change differs only by clustering
    cy_idx, cx_idx = np.nonzero(cyto)
    k = int(rng.poisson(p["isolated_puncta"]))
    texture = np.zeros((w, w), bool)
    if k and len(cy_idx):
        sel = rng.integers(0, len(cy_idx), k)
        actin += _gaussian_spots((w, w), cy_idx[sel], cx_idx[sel], 1.0, rng.uniform(0.5, 0.8, k))
    if affected and len(cy_idx):
        # cluster centre in the cytoplasm, at least 4 px inside the outline
        deep = cyto & (dist_in >= 5)
        ys, xs = np.nonzero(deep if deep.any() else cyto)
        j = rng.integers(0, len(ys))
        y0, x0 = ys[j], xs[j]
        n = int(rng.integers(7, 12))
        rr = p["cluster_radius"] * np.sqrt(rng.uniform(0, 1, n))
        th = rng.uniform(0, 2 * np.pi, n)
        py, px = y0 + rr * np.sin(th), x0 + rr * np.cos(th)
        actin += _gaussian_spots((w, w), py, px, 1.0, rng.uniform(0.5, 0.8, n)) * body
        # the mask covers every punctum out to 3 sigma of its Gaussian (sigma = 1 px)
        texture = ((yy - y0) ** 2 + (xx - x0) ** 2 <= (p["cluster_radius"] + 3) ** 2) & body
    return actin * body, nuclei.astype(np.float32), body, texture


# ----------------------------------------------------------------------------- fields


def render_field(
    rng: np.random.Generator,
    spec: WellSpec,
    condition: str,
    gain: float,
    affected: float | None = None,
    confound: float | None = None,
    cells_per_field: int | None = None,
    blur: float = 0.8,
    read_noise: float | None = None,
    offset: float = 0.0,
):
    """Render one field. Returns image (2, H, W) uint16, labels (H, W) uint16, texture (H, W)
    uint8, and a list of per-cell dicts (``label_id``, centroid, ``true_label``).

    ``condition`` sets the share of affected cells (``spec.affected_fraction``) and the background
    confound (1 in Exp, 0 in Ref); ``affected``, ``confound`` (a level in [0, 1]) and
    ``cells_per_field`` override them for wells without a condition (dose series); ``gain``, ``blur``
    (the optics' σ in px) and ``read_noise`` (default ``spec.read_noise``) are the well's imaging;
    ``offset`` adds uniform light to both channels before the gain and the shot noise (a plate effect)."""
    p_affected = spec.affected_fraction[condition] if affected is None else float(affected)
    level = (1.0 if condition == "Exp" else 0.0) if confound is None else float(confound)
    level = level if spec.confound else 0.0
    n_cells = spec.cells_per_field if cells_per_field is None else int(cells_per_field)
    H = W = spec.field_size
    p = {"isolated_puncta": 2.0, "cluster_radius": 5.0}
    actin = np.zeros((H, W), np.float32)
    nuclei = np.zeros((H, W), np.float32)
    labels = np.zeros((H, W), np.uint16)
    texture = np.zeros((H, W), np.uint8)
    cells: list[dict] = []
    centres: list[tuple[int, int, float]] = []  # (y, x, radius)
    lo, hi = spec.cell_radius
    for _ in range(n_cells * 4):
        if len(cells) >= n_cells:
            break
        r = rng.uniform(lo, hi)
        margin = int(r * 1.5) + 2
        cy, cx = rng.integers(margin, H - margin), rng.integers(margin, W - margin)
        if any((cy - y) ** 2 + (cx - x) ** 2 < (1.25 * (r + rr)) ** 2 for y, x, rr in centres):
            continue
        affected = bool(rng.random() < p_affected)
        a, n, body, tex = _render_cell(rng, r, affected, p)
        w = a.shape[0]
        y0, x0 = cy - w // 2, cx - w // 2
        win = (slice(y0, y0 + w), slice(x0, x0 + w))
        free = labels[win] == 0
        body = body & free
        if body.sum() < 50:
            continue
        label_id = len(cells) + 1
        labels[win][body] = label_id
        actin[win] += a * body
        nuclei[win] += n * body
        texture[win][tex & body] = 1
        ys, xs = np.nonzero(labels == label_id)
        cells.append(
            {
                "label_id": label_id,
                "centroid_y": float(ys.mean()),
                "centroid_x": float(xs.mean()),
                "true_label": int(affected),
            }
        )
        centres.append((cy, cx, r))

    # background: illumination offset and debris specks, both stronger in Exp when confounded
    # (written so that levels 0 and 1 give exactly the floats of the two-condition generator)
    background = 0.04 + 0.03 * level
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32) / H
    illum = 1 + 0.1 * np.sin(2 * np.pi * (yy * rng.uniform(0.3, 1) + xx * rng.uniform(0.3, 1)))
    n_debris = int(rng.poisson(H * W / 2500 * level + H * W / 12000 * (1 - level)))
    dy, dx = rng.uniform(0, H, n_debris), rng.uniform(0, W, n_debris)
    outside = labels[dy.astype(int), dx.astype(int)] == 0
    debris = _gaussian_spots((H, W), dy[outside], dx[outside], 1.0, rng.uniform(0.5, 0.8, outside.sum()))
    # the offset lies on the background; only with confound_under_cells does it reach into cells
    extra = background - 0.04
    where = np.ones((H, W), np.float32) if spec.confound_under_cells else (labels == 0).astype(np.float32)
    offset_map = 0.04 + extra * where
    actin = (actin + debris + offset_map) * illum
    nuclei = (nuclei + 0.3 * debris + 0.6 * offset_map) * illum

    out = np.empty((2, H, W), np.uint16)
    for c, img in enumerate((actin, nuclei)):
        img = ndi.gaussian_filter(img, blur)
        if offset:
            img = img + offset
        img = img * gain * spec.photons
        img = rng.poisson(np.clip(img, 0, None)).astype(np.float32) + rng.normal(
            100, spec.read_noise if read_noise is None else read_noise, img.shape
        )
        out[c] = np.clip(img, 0, 65535).astype(np.uint16)
    return out, labels, texture, cells
