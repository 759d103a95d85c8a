"""Built-in ground-truth cell wells: a seeded generator of two-channel fluorescence fields.

Real experiments never know which exposed cell reacted; these wells do, so every claim of the
paper can be measured. Per field the renderer (``protocell.data.synthetic_render``, whose docstring
says how) draws non-overlapping irregular cells, each with a nucleus and an actin-like cytoplasm; in
*affected* cells, a **planted local change**: a tight cluster of puncta in one part of the cytoplasm,
puncta like the isolated ones every cell may have, only clustered: a subtle, local texture.

Labels are per well and noisy: by default 50 % of Exp cells and 5 % of Ref cells are affected.
A **background confound** (debris specks of the same size and brightness as puncta, and an
illumination offset, both stronger in Exp wells) lives outside the cells, so a model that reads
the background can predict the well label without looking at any cell: the mask ablation has
something to show. Fields then get optics blur, per-well gain, Poisson and Gaussian noise.

**Well effects** (``well_effects``): every well is imaged a little differently. Its gain is
1 + ``gain``·u (u ∈ [−1, 1], drawn per well: ×0.8–1.2 by default, which after per-cell normalisation
still changes the shot-noise level a cell shows), its optics blur σ = 0.8·(1 + ``blur``·u′) px and its
camera read noise ``read_noise``·(1 + ``noise``·u″) (both spreads 0 by default). ``align`` is the
probability that a well's draws take the sign of its condition (Exp +, Ref −): 0 (default) leaves the
effects independent of the condition, as wells imaged in random order; 1 images every exposed well
brighter, blurrier and noisier than every reference well, as a condition imaged on another day or
in its own columns — the same spread, lined up with the label.

**Dose series** (``dose_series``, off by default): after the control wells, a compound at several
doses (0: vehicle, the fraction ``bottom``) × replicate wells whose affected fraction follows a known four-parameter logistic of the
dose, ``bottom + (top − bottom) / (1 + (ec50 / dose)^hill)``; these wells have no condition (label
−1: they are scored, never trained on) and the manifest records ``compound``, ``dose`` and the
design's ``true_fraction`` of every well. Their background confound grows with the response (0 at
``bottom``, the Exp level at ``top``). ``stress: true`` adds untreated wells (fraction ``bottom``) that
break the scoring's assumption on purpose: gain ×0.5, gain ×2, a quarter of the cell density.
Controls come first from the same random stream, so the controls of a dose-series plate are the
cells of the plate without it.

**Several plates** (``plates``, off by default: one plate ``plate1``): each entry is a plate with the
same layout, drawn from its own random stream (``seed``, default the spec's seed + its position), and
a plate effect: every field of it imaged at ``gain`` × (the wells' own gain) with ``offset`` extra
uniform light (in units of the brightest actin structure, before the shot noise), and its outer ring
of wells (row A, column 1, and the last row and column holding a well) at ``1 − edge`` of the gain.
A plate at gain 1, offset 0, edge 0 and the spec's seed is the single plate, cell for cell.

Outputs (``write_fields``): ``fields/<image_id>.tif`` (uint16 (2, H, W), channels [actin,
nuclei]), ``fields/<image_id>.labels.tif`` (uint16 cell instance ids), ``fields/<image_id>.texture.tif``
(uint8 planted-change mask), ``cells.csv`` (per-cell truth) and ``plate_map.csv``. ``build_store``
also writes the crop store (see ``protocell.data.store``) directly, cached by a hash of its
parameters.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from protocell.config import DoseSeriesConfig, PlateConfig, SyntheticConfig, WellEffectsConfig, check_fields
from protocell.data.store import CropStoreWriter, atomic_write_text
from protocell.data.synthetic_render import render_field

CHANNELS = ["actin", "nuclei"]
CONDITIONS = ["Ref", "Exp"]
# untreated wells that break the scoring's assumption (unaffected cells look like the reference)
STRESS_WELLS = (("gain x0.5", {"gain": 0.5}), ("gain x2", {"gain": 2.0}), ("density x0.25", {"density": 0.25}))


@dataclass
class DoseSeries(DoseSeriesConfig):
    """A compound at ``doses`` × ``replicates`` wells; affected fraction a 4-parameter logistic of dose
    (fields, defaults and ranges: ``protocell.config.DoseSeriesConfig``; ``stress`` adds STRESS_WELLS)."""

    def __post_init__(self):
        self.doses = [float(d) for d in self.doses]
        check_fields(self, DoseSeriesConfig, "data.synthetic.dose_series")

    def fraction(self, dose: float) -> float:
        if dose == 0:  # vehicle
            return self.bottom
        return self.bottom + (self.top - self.bottom) / (1 + (self.ec50 / dose) ** self.hill)


@dataclass
class WellEffects(WellEffectsConfig):
    """How each well's imaging differs (module doc, "Well effects"): gain = 1 + gain·u, optics σ =
    0.8·(1 + blur·u′) px, read noise = read_noise·(1 + noise·u″), ``align`` the probability that a well's
    u, u′, u″ take its condition's sign. Fields, defaults (the plain plate's) and ranges:
    ``protocell.config.WellEffectsConfig``."""

    def __post_init__(self):
        for key in ("gain", "blur", "noise", "align"):
            setattr(self, key, float(getattr(self, key)))
        check_fields(self, WellEffectsConfig, "data.synthetic.well_effects")


@dataclass
class Plate(PlateConfig):
    """One plate of ``WellSpec.plates``: its name and imaging effect (module doc); fields, defaults and
    ranges: ``protocell.config.PlateConfig``."""

    def __post_init__(self):
        check_fields(self, PlateConfig, "data.synthetic.plates[]")


@dataclass
class WellSpec:
    """Parameters of the synthetic plate. Defaults are ``data.synthetic``'s, read from its schema
    (``protocell.config.SyntheticConfig``): ``WellSpec()`` is the plate ``make run`` trains on."""

    wells_per_condition: int = SyntheticConfig.wells_per_condition
    fields_per_well: int = SyntheticConfig.fields_per_well
    field_size: int = SyntheticConfig.field_size
    cells_per_field: int = SyntheticConfig.cells_per_field  # attempted; fewer fit when the field is crowded
    cell_radius: tuple[float, float] = (15.0, 21.0)  # the generator's own: not a config key
    affected_fraction: dict = field(default_factory=lambda: dict(SyntheticConfig().affected_fraction))
    confound: bool = SyntheticConfig.confound  # background debris + illumination offset, stronger in Exp
    # the Exp offset also under cells (e.g. product autofluorescence): a confound no mask can remove, for
    # experiments only
    confound_under_cells: bool = SyntheticConfig.confound_under_cells
    crop_size: int = SyntheticConfig.crop_size
    photons: float = SyntheticConfig.photons  # expected counts at the brightest actin structure
    read_noise: float = SyntheticConfig.read_noise
    seed: int = SyntheticConfig.seed
    dose_series: dict | None = None  # DoseSeries fields: compound wells after the controls (module doc)
    well_effects: dict | None = None  # WellEffects fields: per-well imaging and how it lines up with the condition
    plates: list | None = None  # Plate fields, one dict a plate (module doc); None: one plate, plate1

    def __post_init__(self):
        if self.dose_series is not None:  # every field spelt out: one plate, one cache key
            self.dose_series = asdict(DoseSeries(**self.dose_series))
        effects = asdict(WellEffects(**(self.well_effects or {})))
        self.well_effects = None if effects == asdict(WellEffects()) else effects
        if self.plates is not None:
            self.plates = [
                asdict(Plate(**{"seed": self.seed + i, **{k: v for k, v in dict(p).items() if v is not None}}))
                for i, p in enumerate(self.plates)
            ]
            names = [p["name"] for p in self.plates]
            if not names or len(set(names)) < len(names):
                raise ValueError(f"plates need distinct names, got {names}")

    def as_dict(self) -> dict:
        """The parameters; ``dose_series`` and ``well_effects`` only when they differ from the plain
        plate, so that plates without them keep their cache key and their bytes (``store.json``,
        ``spec.json``) from before the options existed."""
        d = asdict(self)
        for key in ("dose_series", "well_effects", "plates"):
            if d[key] is None:
                del d[key]
        return d

    def key(self) -> str:
        blob = json.dumps(self.as_dict(), sort_keys=True).encode()
        return hashlib.sha1(blob).hexdigest()[:12]


def plate_wells(spec: WellSpec) -> list[dict]:
    """Every well of the plate in generation order: ``well``, ``condition`` ("" without one),
    ``label`` (−1 without one), the ``render`` overrides of ``render_field``, ``gain`` (× the drawn
    per-well gain) and ``meta`` (extra manifest columns: dose series only).

    Controls: Ref in row A, Exp in row B. Dose series: replicate r in row C + r, dose k in column
    k + 1; stress wells in the next row."""
    wells = [
        {
            "well": f"{'AB'[CONDITIONS.index(c)]}{w + 1:02d}",
            "condition": c,
            "label": CONDITIONS.index(c),
            "render": {},
            "gain": 1.0,
            "meta": {},
        }
        for c in CONDITIONS
        for w in range(spec.wells_per_condition)
    ]
    if spec.dose_series is None:
        return wells
    ds = DoseSeries(**spec.dose_series)
    span = max(ds.top - ds.bottom, 1e-9)
    for w in wells:
        w["meta"] = {"compound": "", "dose": "", "true_fraction": spec.affected_fraction[w["condition"]], "stress": ""}
    for r in range(ds.replicates):
        for k, dose in enumerate(ds.doses):
            p = ds.fraction(dose)
            wells.append(
                {
                    "well": f"{chr(ord('C') + r)}{k + 1:02d}",
                    "condition": "",
                    "label": -1,
                    "gain": 1.0,
                    "render": {"affected": p, "confound": float(np.clip((p - ds.bottom) / span, 0, 1))},
                    "meta": {"compound": ds.compound, "dose": dose, "true_fraction": p, "stress": ""},
                }
            )
    if ds.stress:
        row = chr(ord("C") + ds.replicates)
        for k, (name, change) in enumerate(STRESS_WELLS):
            render = {"affected": ds.bottom, "confound": 0.0}
            if "density" in change:
                render["cells_per_field"] = max(1, round(spec.cells_per_field * change["density"]))
            wells.append(
                {
                    "well": f"{row}{k + 1:02d}",
                    "condition": "",
                    "label": -1,
                    "render": render,
                    "gain": change.get("gain", 1.0),
                    "meta": {"compound": "", "dose": "", "true_fraction": ds.bottom, "stress": name},
                }
            )
    return wells


def well_imaging(spec: WellSpec, seed: int | None = None) -> list[dict]:
    """Each well's imaging in generation order: ``well``, ``condition``, ``gain`` (× the stress
    wells' factor), ``blur`` (optics σ, px) and ``read_noise`` (module doc, "Well effects"). The
    plain plate draws only the gain, from the plate's own random stream (its bytes are those from
    before well effects existed); the other draws and the alignment come from a stream of their own.
    ``seed``: the plate's random stream (default ``spec.seed``; ``spec.plates`` gives each its own)."""
    fx = WellEffects(**(spec.well_effects or {}))
    seed = spec.seed if seed is None else seed
    rng = np.random.default_rng(seed)
    side = np.random.default_rng([seed, 0x77E11])  # the effects' own stream
    out = []
    for w in plate_wells(spec):
        g = float(rng.uniform(0.8, 1.2))  # the plain plate's gain draw
        for _ in range(spec.fields_per_well):  # the fields' seeds follow in the plate's stream
            rng.integers(2**31)
        u = [(g - 1) / 0.2, float(side.uniform(-1, 1)), float(side.uniform(-1, 1))]
        sign = {"Exp": 1.0, "Ref": -1.0}.get(w["condition"], 0.0)
        aligned = bool(sign) and side.random() < fx.align
        if aligned:
            u = [sign * abs(v) for v in u]
        gain = g if (fx.gain == 0.2 and not aligned) else 1 + fx.gain * u[0]  # the plain plate's float
        out.append(
            {
                "well": w["well"],
                "condition": w["condition"],
                "gain": gain * w["gain"],
                "blur": 0.8 * (1 + fx.blur * u[1]),
                "read_noise": spec.read_noise * (1 + fx.noise * u[2]),
            }
        )
    return out


def outer_ring(wells: list[str]) -> set[str]:
    """The wells of a plate's outer ring (``protocell.plate.outer_ring``: row A, column 1, and the last row
    and column holding a well)."""
    from protocell import plate

    pos = pd.DataFrame([plate.parse_well(w) for w in wells], columns=["row", "column"])
    return {w for w, on in zip(wells, plate.outer_ring(pos)) if on}


def _iter_fields(spec: WellSpec):
    """(plate, well, field, gain, the field's random generator) for every field, plate by plate; the
    well's ``render`` carries its optics and read noise (``well_imaging``)."""
    layout = plate_wells(spec)
    edge = outer_ring([w["well"] for w in layout])
    for plate in spec.plates or [{"name": "plate1", "gain": 1.0, "offset": 0.0, "edge": 0.0, "seed": spec.seed}]:
        rng = np.random.default_rng(plate["seed"])
        for w, im in zip(layout, well_imaging(spec, plate["seed"])):
            rng.uniform(0.8, 1.2)  # the well's gain draw (well_imaging turned it into u)
            gain = im["gain"]
            if spec.plates is not None:
                gain *= plate["gain"] * (1 - plate["edge"] if w["well"] in edge else 1.0)
            render = {**w["render"], "blur": im["blur"], "read_noise": im["read_noise"]}
            for f in range(spec.fields_per_well):
                seed = int(rng.integers(2**31))
                yield plate, {**w, "render": render}, f, gain, np.random.default_rng(seed)


def crop_cell(image: np.ndarray, labels: np.ndarray, label_id: int, cy: float, cx: float, size: int):
    """Fixed-size crop centred on (cy, cx), zero padded past the image border.

    Returns crop (C, size, size), mask (size, size) of this cell only, and the bbox (y0, x0, y1, x1)."""
    y0, x0 = int(round(cy)) - size // 2, int(round(cx)) - size // 2
    y1, x1 = y0 + size, x0 + size
    C, H, W = image.shape
    crop = np.zeros((C, size, size), image.dtype)
    mask = np.zeros((size, size), np.uint8)
    sy0, sx0, sy1, sx1 = max(0, y0), max(0, x0), min(H, y1), min(W, x1)
    crop[:, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[:, sy0:sy1, sx0:sx1]
    mask[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = labels[sy0:sy1, sx0:sx1] == label_id
    return crop, mask, (y0, x0, y1, x1)


def write_fields(out_dir: str | Path, spec: WellSpec | None = None, **overrides) -> Path:
    """Write the synthetic plate as TIFF fields + ground truth + plate map; returns ``out_dir``."""
    import tifffile

    spec = spec or WellSpec(**overrides)
    out = Path(out_dir)
    (out / "fields").mkdir(parents=True, exist_ok=True)
    plate_rows, cell_rows = [], []
    for plate, w, f, gain, rng in _iter_fields(spec):
        well = w["well"]
        image_id = f"{plate['name']}_{well}_f{f}"
        img, labels, tex, cells = render_field(rng, spec, w["condition"], gain, offset=plate["offset"], **w["render"])
        tifffile.imwrite(out / "fields" / f"{image_id}.tif", img, metadata={"axes": "CYX", "channels": CHANNELS})
        tifffile.imwrite(out / "fields" / f"{image_id}.labels.tif", labels)
        tifffile.imwrite(out / "fields" / f"{image_id}.texture.tif", tex)
        plate_rows.append(
            {
                "image": f"fields/{image_id}.tif",
                "plate": plate["name"],
                "well": well,
                "field": f,
                "condition": w["condition"],
                **w["meta"],
            }
        )
        cell_rows += [{"image_id": image_id, **c} for c in cells]
    pd.DataFrame(plate_rows).to_csv(out / "plate_map.csv", index=False)
    pd.DataFrame(cell_rows).to_csv(out / "cells.csv", index=False)
    return out


def build_store(root: str | Path, spec: WellSpec | None = None, **overrides) -> Path:
    """Generate the synthetic wells straight into a crop store at ``root/<hash>``; cached.

    Returns the store folder. A finished store with the same parameters is reused as it is.
    """
    spec = spec or WellSpec(**overrides)
    store_dir = Path(root) / f"synthetic-{spec.key()}"
    if (store_dir / "store.json").exists():
        return store_dir
    # a private folder per builder: parallel runs (Hydra multirun) may build the same store at once
    tmp_dir = store_dir.with_name(f"{store_dir.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    writer = CropStoreWriter(
        tmp_dir,
        CHANNELS,
        spec.crop_size,
        source="synthetic",
        extra={"synthetic": spec.as_dict(), "conditions": CONDITIONS, "normalization": {"method": "raw"}},
    )
    next_id = 0
    for plate, w, f, gain, rng in _iter_fields(spec):
        well, cond = w["well"], w["condition"]
        image_id = f"{plate['name']}_{well}_f{f}"
        img, labels, tex, cells = render_field(rng, spec, cond, gain, offset=plate["offset"], **w["render"])
        crops, masks, texs, rows = [], [], [], []
        for c in cells:
            crop, mask, (y0, x0, y1, x1) = crop_cell(
                img, labels, c["label_id"], c["centroid_y"], c["centroid_x"], spec.crop_size
            )
            t, _, _ = crop_cell(tex[None], labels, c["label_id"], c["centroid_y"], c["centroid_x"], spec.crop_size)
            crops.append(crop)
            masks.append(mask)
            texs.append(t[0] * mask)
            rows.append(
                {
                    "cell_id": next_id,
                    "image_id": image_id,
                    "plate": plate["name"],
                    "well": well,
                    "field": f,
                    "condition": cond,
                    "label": w["label"],
                    "bbox_y0": y0,
                    "bbox_x0": x0,
                    "bbox_y1": y1,
                    "bbox_x1": x1,
                    "centroid_y": round(c["centroid_y"], 2),
                    "centroid_x": round(c["centroid_x"], 2),
                    "true_label": c["true_label"],
                    "label_id": c["label_id"],
                    **w["meta"],
                }
            )
            next_id += 1
        if rows:
            writer.write_shard(image_id, np.stack(crops), np.stack(masks), rows, texture=np.stack(texs))
    writer.finish()
    atomic_write_text(tmp_dir / "spec.json", json.dumps(spec.as_dict(), indent=2))
    try:
        tmp_dir.rename(store_dir)  # atomic; fails if another builder finished first
    except OSError:
        if not (store_dir / "store.json").exists():
            raise
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return store_dir
