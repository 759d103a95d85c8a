"""``score.match_imaging``: each plate zone read against the run's control cells imaged as that zone is.

Why. The affected fraction is read against a reference the run fitted on its own held-out control cells,
at its own plate's imaging. A zone of a plate imaged otherwise — another plate at half the gain, an outer
ring of wells dimmer still — shows its cells noisier once each is normalised; the network separates
them less, and the fraction, a lower bound where affected and unaffected cells overlap, reads low. It reads
lower the more cells are affected, so normalising a plate to its own controls does not undo it when the
controls sit in another zone (on the built-in screen trained on plate 1, plate 2's outer-ring wells at high
doses read 0.10–0.32 low as read and −0.03 to −0.16 after that normalisation; docs/score.md).

How, per zone — a plate's outer ring and its inner wells when its wells have plate positions, else the
plate:

1. **The zone's camera**, label free: the blur and pixel noise that give the run's held-out control cells
   the imaging up to ``ZONE_CELLS`` of the zone's cells show (``levelling.camera_match``: the optics blur
   from the radial spectra, the noise as a function of intensity). It can add blur and noise, never remove
   them: a zone imaged better than the run's cells is matched only in what it lacks (said per zone).
2. **The reference at that imaging**: up to ``HELD_CELLS`` held-out cells of each control condition re-imaged
   so and read by the network (in the run's orientations); the score → P(exposed) map is refitted on them
   (``fit_reference``), with the run's anchors ρ_Ref, ρ_Exp: which cells are affected does not change with
   the camera, only how they score. Every cell of the zone gets its likelihood ratio from that fit — its
   fraction, CI, call and its treatment's pooled fraction are then "as read at its own imaging".
3. **Virtual controls**: the same control cells read under that fit give the zone's reference and exposed
   levels (r_z, e_z), against what the run's own reading gives the cells as it imaged them (r, e); the
   zone's fractions are mapped r_z → r, e_z → e (``imaging_matched_fraction``), before each plate is
   normalised to its own controls. A zone whose re-imaged controls no longer separate (e_z − r_z below
   ``MIN_SPREAD``) is not mapped, and its wells say why.

Measured on the built-in two-plate screen, trained on plate 1 (seeds 0–2): docs/score.md.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from protocell.artifacts import RunFolder, positive_class
from protocell.data.levelling import camera_match, level, mean_power
from protocell.data.store import CropStore, well_key
from protocell.evaluate.fraction import fit_reference, mixture_fraction, reference_lr
from protocell.plate import outer_ring
from protocell.runs import Run
from protocell.score.infer import infer

log = logging.getLogger("protocell.score")

# held-out cells of a control condition re-imaged for each zone: every cell the run's reference was fitted on, up
# to this many — so a zone imaged as the run's cells gets the run's own reference back, not a resample of it (at
# 1,000 a condition, BBBC013's inner wells, read with no blur or noise added, moved the rank-4 wells by +0.014)
HELD_CELLS = 5000
# a zone's cells its camera is read from: as many as the control side of a typical run gives, so neither reading
# dominates the difference's sampling error (on the built-in screen, readings from 300 and from 400 cells put one
# seed's plate-2 wells within ±0.08 at 93 % and at 100 %: docs/score.md)
ZONE_CELLS = 2000
MIN_SPREAD = 0.05  # e_z − r_z below which a zone's virtual controls do not separate: the zone is not mapped


def zone_name(plate: str, ring: bool) -> str:
    """The zone of a plate's outer ring (``ring``) or of its inner wells."""
    return f"{plate} {'ring' if ring else 'inner'}"


def zone_names(wells: pd.DataFrame) -> pd.Series:
    """Per well (``plate_wells``): its zone — ``<plate> ring`` / ``<plate> inner`` when the plate's wells have
    plate positions and both kinds exist, else ``<plate>``."""
    out = pd.Series(wells["plate"].astype(str).to_numpy(), index=wells.index, dtype=object)
    grid = wells["row"].notna()
    for plate, w in wells[grid].groupby(wells.loc[grid, "plate"].astype(str)):
        ring = outer_ring(w)
        if ring.any() and (~ring).any():
            out.loc[w.index] = np.where(ring, zone_name(plate, True), zone_name(plate, False))
    return out


def _held_controls(run: Run, rng: np.random.Generator) -> pd.DataFrame:
    """The held-out cells of each control condition (test and validation: the cells the run's reference was
    fitted on), up to ``HELD_CELLS`` a condition, with their store row, well label and score as the run read them."""
    folder = RunFolder(run.dir)
    parts = [run.preds] + (
        [pd.read_csv(folder.val_predictions, dtype={"well": str})] if folder.val_predictions.exists() else []
    )
    held = pd.concat([p[["cell_id", "condition", "score"]] for p in parts], ignore_index=True)
    held = held[held["condition"].isin([run.ref, run.exp])]
    picked = [
        g.iloc[np.sort(rng.choice(len(g), min(HELD_CELLS, len(g)), replace=False))]
        for _, g in held.groupby("condition", sort=True)
    ]
    held = pd.concat(picked, ignore_index=True)
    return held.assign(row=[run.row(c) for c in held["cell_id"]], exposed=(held["condition"] == run.exp).to_numpy())


def _reimaged_scores(run: Run, held: pd.DataFrame, camera: dict, batch_size: int) -> np.ndarray:
    """The scores of ``held``'s cells re-imaged with ``camera`` (``camera_match``), as the run reads cells."""
    sigma, add = camera["blur"], camera["add_var"]

    def reimage(crop, mask, cell_id):
        draw = np.random.default_rng(int(cell_id)).standard_normal(crop.shape).astype(np.float32)
        return level(crop, mask, sigma, add, draw)

    cells = run.dm.dataset_of(run.store, held["row"].to_numpy(), reimage=reimage)
    got = infer(run.net, cells, positive_class(run.class_names), batch_size, progress=False, views=run.views)
    if not np.array_equal(got["cell_id"], held["cell_id"].to_numpy()):
        raise RuntimeError("re-imaged control cells came back out of order")  # a bug, not an input problem
    return got["score"].astype(np.float64)


def _fraction(scores, fit: dict) -> float:
    return mixture_fraction(reference_lr(scores, fit))


def imaging_zones(
    run: Run, stores: list[CropStore], wells: pd.DataFrame, fit: dict, seed: int, batch_size: int
) -> dict[str, dict]:
    """Per zone (``zone_names``): its camera against the run's control cells, its reference ``fit`` (the run's
    ``fit`` refitted at the zone's imaging) and its virtual-control levels (module doc). ``wells``: every scored
    well (with ``store`` when there are several stores)."""
    rng = np.random.default_rng(seed)
    held = _held_controls(run, rng)
    source = (run.store, held["row"].to_numpy(), list(run.dm.channel_index))
    source_power = mean_power(*source)  # the control cells' spectrum: one read for every zone
    r0, e0 = (_fraction(held.loc[held["exposed"] == flag, "score"].to_numpy(), fit) for flag in (False, True))
    zone = zone_names(wells)
    by_root = {str(s.root): s for s in stores}
    out: dict[str, dict] = {}
    for name in sorted(zone.unique()):
        mine = wells[zone == name]
        entry: dict = {"wells": int(len(mine)), "levels_as_run_imaged": [r0, e0], "fit": fit, "mapped": False}
        out[name] = entry
        parts = []  # the zone's cells in each store holding its wells (one plate may span stores)
        for root, w in mine.groupby("store", sort=True) if "store" in mine else [("", mine)]:
            store = by_root[str(root)] if root else stores[0]
            m = store.manifest
            rows = np.flatnonzero((m["aug_of"].to_numpy() < 0) & well_key(m).isin(set(well_key(w))).to_numpy())
            parts.append((store, rows, [store.channels.index(c) for c in run.dm.channels]))
        total = sum(len(rows) for _, rows, _ in parts)
        if not total:
            entry["note"] = "no cells"
            continue
        # up to ZONE_CELLS of the zone's cells, each store in proportion to the cells it holds
        parts = [
            (store, np.sort(rng.choice(rows, min(len(rows), round(ZONE_CELLS * len(rows) / total)), replace=False)), ch)
            for store, rows, ch in parts
            if len(rows)
        ]
        camera = camera_match(source, parts, source_power)
        if camera is None:
            entry["note"] = "no cell large enough to read its optics: read with the run's reference"
            continue
        scores = _reimaged_scores(run, held, camera, batch_size)
        refit = fit_reference(scores, held["exposed"].to_numpy())
        entry.update(
            blur_px=[round(float(v), 4) for v in camera["blur"]],
            noise_var=[[round(float(v), 6) for v in ab] for ab in camera["add_var"]],
            sharper_px2=[round(float(v), 4) for v in camera["sharper_px2"]],
        )
        if not refit["ok"]:
            entry["note"] = (
                "the run's control cells imaged as this zone is give no evidence of affected cells "
                f"({refit['reason']}): its fractions are read with the run's reference, not mapped"
            )
            continue
        zfit = {**refit, "rho_exp": fit["rho_exp"], "rho_ref": fit["rho_ref"]}
        rz, ez = (_fraction(scores[held["exposed"].to_numpy() == flag], zfit) for flag in (False, True))
        entry.update(fit=zfit, levels_at_zone_imaging=[rz, ez])
        if ez - rz < MIN_SPREAD:
            entry["note"] = (
                f"the run's control cells imaged as this zone is read {rz:.2f} (reference) and {ez:.2f} (exposed): "
                "too close to map its fractions onto the run's imaging"
            )
            continue
        entry["mapped"] = True
        entry["note"] = ""
    log.info("score: imaging matched per zone: %s", "; ".join(f"{k}: {said(v)}" for k, v in out.items()))
    return out


def said(zone: dict) -> str:
    """One zone of ``imaging_zones`` in words."""
    if "levels_at_zone_imaging" not in zone:
        return zone["note"]
    (r0, e0), (rz, ez) = zone["levels_as_run_imaged"], zone["levels_at_zone_imaging"]
    each = lambda v: "/".join(f"{x:.2f}" for x in v)  # noqa: E731
    camera = (
        f"the run's control cells given blur +{each(zone['blur_px'])} px and this zone's noise read {rz:.2f} / {ez:.2f}"
    )
    if not zone["mapped"]:
        return f"{camera}; {zone['note']}"
    return f"{camera} (reference / exposed) against {r0:.2f} / {e0:.2f} as the run imaged them: mapped"


def summary(zones: dict[str, dict]) -> dict[str, dict]:
    """``imaging_zones`` for score.json: each zone's camera, levels, note and the reference its cells were read
    with (``fit``: the run's, refitted at the zone's imaging — as metrics.json → affected_fraction.fit), so a
    reader recomputes every cell's likelihood ratio (``evaluate.fraction.reference_lr``) by hand."""
    return {k: {**z, "said": said(z)} for k, z in zones.items()}


def zone_of_cells(cells: pd.DataFrame, wells: pd.DataFrame) -> np.ndarray:
    """Each cell's zone (rows of ``cells``: plate, well)."""
    return well_key(cells).map(dict(zip(well_key(wells), zone_names(wells)))).to_numpy()


def matched(values: pd.Series, zone: pd.Series, zones: dict[str, dict]) -> pd.Series:
    """``values`` (fractions of wells in ``zone``) mapped onto the run's imaging by their zone's virtual
    controls (module doc, step 3); unchanged in a zone that is not mapped."""
    out = values.astype(float).copy()
    for name, z in zones.items():
        if not z["mapped"]:
            continue
        on = (zone == name).to_numpy()
        (r0, e0), (rz, ez) = z["levels_as_run_imaged"], z["levels_at_zone_imaging"]
        out[on] = r0 + (values[on].astype(float) - rz) * (e0 - r0) / (ez - rz)
    return out
