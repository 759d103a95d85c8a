"""``explain_run(run_dir)``: figures, tables and report.html for a trained, pushed run.

Reads only the run folder (``config.yaml``, ``prototypes.pt``, ``checkpoints/last.ckpt``,
``test_predictions.csv``, ``metrics.json``) and the crop store named in ``prototypes.pt``. Writes

    explain/prototypes/prototype_XX.png   1. source cell, RF box vs 95th-percentile box, heat map
    explain/prototypes.csv                   each prototype's source: image, well, field, cell, boxes
    explain/mosaics/mosaic_XX.png, .csv   2. the 20 nearest training patches and where they are
    explain/population_similarity.png, .csv   3. Ref, Exp and Exp − Ref with well-bootstrap CIs
    explain/cells/cell_<id>.png           4. "this looks like that" for sampled test cells
    explain/cell_scores.png               5. Exp scores per condition, affected fraction (+ CI)
    explain/prototype_differences.csv     6. ranked: Mann–Whitney on well means, BH q-values
    explain/prototype_health.csv          7. duplicates, border / background patches, purity
    explain/explain_metrics.json             ground-truth checks where the truth is known
    report.html                              one page with all of it

Passes over data: the prototypes' boxes come from push's provenance (one batched forward over their
P source crops for the heat maps); one inference pass over the push set finds every prototype's 20
nearest patches (mosaics, health, localisation); the population statistics use the per-cell
minimum distances train.py saved in ``test_predictions.csv`` — or, for an older predictions file
without them, one pass over the test set.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from protocell.artifacts import positive_class
from protocell.evaluate.localisation import background_share, texture_share
from protocell.evaluate.truth import true_label_metrics, well_cue
from protocell.explain.health import prototype_health
from protocell.explain.heatmap import prototype_maps, render_prototype
from protocell.explain.local import render_cell, sample_cells
from protocell.explain.mosaic import N_NEAREST, nearest_patches, render_mosaic
from protocell.explain.options import report_options
from protocell.explain.render import Look
from protocell.explain.scores import plot_scores
from protocell.explain.similarity import plot_population, population_means, rank_differences, replicate_unit, unit_ids
from protocell.fsutil import atomic_write_json
from protocell.model.prototypes import log_similarity
from protocell.model.views import averaged, of_network
from protocell.runs import Run, load_run
from protocell.tracking import log_to_saved_run

__all__ = ["Run", "explain_run", "load_run", "nearest_patches", "cell_similarities"]
log = logging.getLogger("protocell.explain")


@torch.no_grad()
def _test_min_distances(run: Run) -> pd.DataFrame:
    """One pass over the test set: each test cell's minimum masked distance to every prototype, over the
    run's ``views`` orientations as its predictions (``protocell.model.views``)."""
    out = []
    for x, m, _, cid in tqdm(run.dm.test_dataloader(), desc="explain: test set", leave=False, disable=None):
        d = averaged(of_network(run.net), x, m, run.views)[1]
        assert d is not None  # the prototype network reports its distances
        out.append(
            pd.DataFrame(d.numpy(), columns=[f"min_d_{j}" for j in range(d.shape[1])]).assign(cell_id=cid.numpy())
        )
    return pd.concat(out, ignore_index=True)


def cell_similarities(run: Run) -> pd.DataFrame:
    """One row per test cell: cell_id, plate, well, field, image_id, condition (the replicate units)
    and p0..p{P-1}, its max similarity to each prototype (log((d + 1) / (d + 1e-4)) of its minimum
    masked distance)."""
    P = len(run.record["cell_id"])
    cols = [f"min_d_{j}" for j in range(P)]
    preds = run.preds
    if not all(c in preds for c in cols):
        log.info("test_predictions.csv has no per-prototype distances: one pass over the test set")
        preds = preds.drop(columns=[c for c in preds if c.startswith("min_d_")]).merge(
            _test_min_distances(run), on="cell_id"
        )
    # torch.tensor copies: pandas hands out read-only arrays, which torch.as_tensor would share
    sim = log_similarity(torch.tensor(preds[cols].to_numpy(np.float64))).numpy()
    sims = pd.DataFrame(sim, columns=[f"p{j}" for j in range(P)])
    where = run.manifest.set_index("cell_id")[["plate", "image_id", "field"]]
    ids = preds[["cell_id", "well", "condition"]].reset_index(drop=True).join(where, on="cell_id")
    return pd.concat([ids, sims], axis=1)


def look_of(run: Run, opts, n: int = 64, seed: int = 0) -> Look:
    """How this run's crops are drawn: ``opts.display`` (or colours from the channel names) and
    per-channel contrast over a seeded sample of ``n`` training cells, as the network sees them."""
    rows = run.dm.rows["push"]
    pick = np.random.default_rng(seed).choice(rows, size=min(n, len(rows)), replace=False)
    ids = run.manifest["cell_id"].to_numpy()[pick]
    crops = [run.crop(int(c)) for c in ids]
    images = torch.stack([x for _, x, _ in crops]).numpy()
    masks = torch.stack([m for _, _, m in crops]).numpy()
    channels = [run.store.channels[i] for i in run.dm.channel_index]
    return Look.from_sample(
        channels, dict(opts.display), images, masks, opts.contrast, opts.heatmap, opts.channel_panels
    )


def _at_crop_size(run: Run, arr: np.ndarray) -> np.ndarray:
    """A store-resolution (S0, S0) mask at the network's crop size (nearest neighbour)."""
    S = run.crop_size
    if arr.shape[-1] == S:
        return np.asarray(arr) > 0
    t = torch.as_tensor(np.asarray(arr, np.float32))[None, None]
    return torch.nn.functional.interpolate(t, size=S, mode="nearest")[0, 0].numpy() > 0


def localisation(run: Run, near: dict) -> dict:
    """Ground truth on data with planted-change masks: for each prototype of the Exp class, the
    share of its nearest patches whose RF box overlaps the planted texture; and the share of all
    prototypes whose source patch (max activation) lies in background."""
    store, rec, rf, S = run.store, run.record, run.net.rf, run.crop_size
    out: dict[str, Any] = {}
    if store.has_texture:
        exp_class = positive_class(rec["class_names"])
        shares = {}
        for j in np.flatnonzero(rec["prototype_class"].numpy() == exp_class):
            rows = [run.row(int(c)) for c in near["cell_id"][:, j]]
            boxes = [rf.box(int(y), int(x), clip=S) for y, x in near["latent_yx"][:, j].tolist()]
            # has_texture: every shard has its texture
            shares[int(j)] = texture_share(
                boxes, [_at_crop_size(run, cast(np.ndarray, store.texture(r))) for r in rows]
            )
        out["exp_prototype_texture_share"] = shares
        out["exp_prototype_texture_share_mean"] = float(np.mean(list(shares.values()))) if shares else None
    masks = torch.stack(
        [
            torch.tensor(_at_crop_size(run, store.mask(run.row(int(c)))), dtype=torch.float32)[None]
            for c in rec["cell_id"]
        ]
    )
    out["background_prototype_share"] = background_share(rec["latent_yx"], masks, rec["latent_size"])
    return out


def prototype_quality(rec: dict, near: dict, ranked: pd.DataFrame, exp: str) -> dict:
    """Distinct source patches and cells (push provenance), prototypes whose nearest patches tie
    (equal distances: a saturated latent), and the exposed prototypes more similar in exposed cells."""
    src = list(zip(rec["cell_id"].tolist(), map(tuple, rec["latent_yx"].tolist())))
    d = near["distance"].double()  # (k, P), sorted
    ties = ((d[1:] - d[:-1]).abs() <= 1e-6 * d[1:].abs().clamp_min(1e-3)).any(dim=0)
    up = ranked[(ranked["class"] == exp) & (ranked["q_value"] < 0.05) & (ranked["difference"] > 0)]
    return {
        "distinct_source_patches": len(set(src)),
        "distinct_source_cells": len({c for c, _ in src}),
        "prototypes_with_tied_nearest": int(ties.sum()),
        "exp_prototypes_up_in_exp": [int(p[1:]) for p in up["prototype"]],
    }


def planted_change_prototypes(em: dict, ranked: pd.DataFrame) -> dict:
    """Ground truth: exposed prototypes significantly more similar in exposed cells whose nearest
    patches lie on the planted change (≥ 80 % of them)."""
    shares = {int(j): v for j, v in em["exp_prototype_texture_share"].items()}
    good = [j for j in em["exp_prototypes_up_in_exp"] if shares.get(j, 0) >= 0.8]
    return {"exp_prototypes_up_and_on_change": good, "has_exp_prototype_up_and_on_change": bool(good)}


def explain_run(
    run_dir: str | Path,
    n_boot: int = 1000,
    n_cells: int = 6,
    k: int = N_NEAREST,
    log_wandb: bool = True,
    options: dict | None = None,
) -> Path:
    """Explain a finished run folder; returns its ``explain/`` folder (``report.html`` beside it).

    ``options``: the ``report`` settings (``protocell.explain.options``: display colours, contrast,
    heat-map style, per-channel panels, replicate unit); keys that are None or absent come from the
    run's own ``config.yaml`` (``report:``), then the defaults."""
    import matplotlib

    matplotlib.use("Agg")
    t0 = time.time()
    run = load_run(run_dir)
    opts = report_options(run.cfg.get("report"), options)
    look = look_of(run, opts)
    out = run.dir / "explain"
    for sub in ("prototypes", "mosaics", "cells"):
        (out / sub).mkdir(parents=True, exist_ok=True)
        for old in (out / sub).glob("*"):  # a re-run must not leave figures of an older explain
            old.unlink()
    rec = run.record
    P = len(rec["cell_id"])
    steps = tqdm(total=P * 2 + n_cells + 4, desc="explain", unit="fig", disable=None)  # None: off when not a terminal

    # 1. prototypes on their source cells (from push's provenance; one batched forward)
    maps = prototype_maps(run)
    protos = []
    for j in range(P):
        protos.append(render_prototype(run, j, maps, out / "prototypes" / f"prototype_{j:02d}.png", look))
        steps.update()
    pd.DataFrame(protos).to_csv(out / "prototypes.csv", index=False)

    # 2. mosaics: one pass over the push set
    near = nearest_patches(run, k=k)
    for j in range(P):
        render_mosaic(run, j, near, out / "mosaics" / f"mosaic_{j:02d}.png", look)
        steps.update()

    # 3. and 6. population similarity and ranked differences (test cells; replicates: wells, or the
    # coarsest unit with ≥ 3 per condition, see similarity.replicate_unit)
    cells = cell_similarities(run)
    names = [f"p{j}" for j in range(P)]
    classes = [run.class_names[int(c)] for c in rec["prototype_class"]]
    unit = replicate_unit(cells, run.ref, run.exp, opts.unit)
    (log.warning if unit["descriptive"] else log.info)("explain: replicate unit %s: %s", unit["unit"], unit["reason"])
    cells["replicate"] = unit_ids(cells, unit["unit"])
    pop = population_means(cells, names, run.ref, run.exp, n_boot=n_boot, by="replicate")
    pop.insert(1, "class", classes)
    pop.to_csv(out / "population_similarity.csv", index=False)
    plot_population(
        pop,
        rec["prototype_class"].numpy(),
        run.class_names,
        run.ref,
        run.exp,
        out / "population_similarity.png",
        unit=unit["unit"],
        descriptive=unit["descriptive"],
    )
    ranked = rank_differences(cells, names, run.ref, run.exp, by="replicate", descriptive=unit["descriptive"])
    ranked.insert(1, "class", [classes[int(p[1:])] for p in ranked["prototype"]])
    ranked.to_csv(out / "prototype_differences.csv", index=False)
    steps.update()

    # 5. cell scores and the affected fraction (the estimate training's evaluation stored)
    preds = run.preds
    metrics = json.loads((run.dir / "metrics.json").read_text()) if (run.dir / "metrics.json").exists() else {}
    frac = metrics.get("affected_fraction") or {"available": False, "reason": "metrics.json has none"}
    plot_scores(preds, run.class_names, frac, out / "cell_scores.png")
    steps.update()

    # 7. prototype health
    health = prototype_health(run, near)
    health.to_csv(out / "prototype_health.csv", index=False)
    steps.update()

    # 4. this looks like that, for a seeded sample of test cells of each condition
    local = []
    for cid in sample_cells(preds, [run.ref, run.exp], n_cells):
        local.append(render_cell(run, cid, maps, out / "cells" / f"cell_{cid}.png", look))
        steps.update()

    # prototype quality, and ground truth where it exists
    em = {"run": run.dir.name, "prototypes": P, "pushes": int(rec["pushes"]), "nearest": int(k), "replicate_unit": unit}
    if (frac.get("conditions") or {}).get(run.exp):  # the estimate evaluation stored, for the record
        em["affected_fraction"] = frac["conditions"][run.exp]
    em.update(prototype_quality(rec, near, ranked, run.exp))
    if "true_label" in preds and (preds["true_label"] >= 0).all():
        pos = positive_class(run.class_names)
        calls = preds["call"] if "call" in preds else (preds["pred"] == pos).astype(int)
        em.update(true_label_metrics(preds["score"], calls, preds["true_label"]))
        em["true_label_call"] = "calibrated call" if "call" in preds else "argmax"
        em["well_cue_auroc"] = well_cue(preds["score"], preds["condition"] == run.exp, preds["true_label"])
    em.update(localisation(run, near))
    if "exp_prototype_texture_share" in em:
        em.update(planted_change_prototypes(em, ranked))
    atomic_write_json(out / "explain_metrics.json", em)
    steps.update()
    steps.close()

    from protocell.explain.report import write_report

    write_report(run, protos, pop, ranked, em, metrics, health=health, cells=local, look=look)
    if log_wandb:
        log_to_saved_run(run.cfg, run.dir, keys=("explain/",))
    log.info("explain: %s and %s (%.1f s)", out, run.dir / "report.html", time.time() - t0)
    return out
