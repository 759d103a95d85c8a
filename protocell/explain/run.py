"""``explain_run(run_dir)``: figures, tables and report.html for a trained, pushed run.

Reads only the run folder: ``config.yaml``, ``prototypes.pt`` (push provenance),
``checkpoints/last.ckpt``, ``test_predictions.csv``, ``metrics.json``, and the crop store named in
``prototypes.pt``. Writes ``explain/`` (PNG, CSV, ``explain_metrics.json``) and ``report.html``.

Passes over data: one inference pass over the push set (the 20 nearest patches of each prototype,
for mosaics and localisation); the prototypes' own boxes come from the stored provenance; the
population statistics come from the test predictions train.py saved.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from tqdm import tqdm

from protocell.data.datamodule import CellDataModule
from protocell.explain.boxes import percentile_box, upsample
from protocell.explain.health import border_share, duplicate_pairs, purity
from protocell.explain.scores import affected_fraction_ci
from protocell.metrics.localisation import background_share, texture_share
from protocell.explain.similarity import population_means, rank_differences, similarity_from_distance
from protocell.model.prototypes import log_similarity
from protocell.training.push import PROTOTYPES_FORMAT, PROTOTYPES_VERSION

log = logging.getLogger("protocell.explain")
N_NEAREST = 20


class ExplainError(ValueError):
    """A run folder explain cannot read; the message names the file and the fix."""


@dataclass
class Run:
    dir: Path
    cfg: object
    record: dict
    net: torch.nn.Module
    dm: CellDataModule
    datasets: dict | None = None      # push / test datasets, built on first use by _crop
    position: dict | None = None      # manifest row → (dataset, index)
    row_of_cell: dict | None = None   # cell id → manifest row


def load_run(run_dir: str | Path) -> Run:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ExplainError(f"run folder {run_dir} does not exist; pass run=outputs/train/<date_time>")
    proto_path, cfg_path, ckpt = run_dir / "prototypes.pt", run_dir / "config.yaml", run_dir / "checkpoints" / "last.ckpt"
    for p in (cfg_path, proto_path, ckpt):
        if not p.exists():
            raise ExplainError(f"{p} is missing: {run_dir} is not a finished protocell training run "
                               "(train.py writes it; a run killed before its first push has no prototypes.pt)")
    record = torch.load(proto_path, weights_only=True)
    if record.get("format") != PROTOTYPES_FORMAT or int(record.get("version", -1)) != PROTOTYPES_VERSION:
        raise ExplainError(f"{proto_path} is format {record.get('format')} v{record.get('version')}, this protocell "
                           f"reads {PROTOTYPES_FORMAT} v{PROTOTYPES_VERSION}: explain it with the version that trained it")
    if int(record.get("pushes", 0)) < 1 or (record["cell_id"] < 0).any():
        raise ExplainError(f"{proto_path}: the prototypes were never pushed, so they are not cell patches yet; "
                           "train until the first push (schedule.push_every)")
    cfg = OmegaConf.load(cfg_path)
    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    data_cfg.pop("synthetic", None)
    data_cfg["path"] = record["store"]
    dm = instantiate(data_cfg)
    dm.setup()
    backbone = instantiate(cfg.backbone, in_channels=dm.in_channels)
    net = instantiate(cfg.model, _partial_=True)(backbone=backbone, num_classes=len(record["class_names"]))
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    net.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
    net.eval()
    return Run(run_dir, cfg, record, net, dm)


@torch.no_grad()
def nearest_patches(run: Run, k: int = N_NEAREST) -> dict:
    """For every prototype, the k push-set cells whose best in-cell patch is nearest to it (one
    patch per cell, at the cell's max activation): cell ids, latent positions, distances."""
    net, P = run.net, run.net.prototypes.shape[0]
    dists, ids, yx = [], [], []
    for x, mask, y, cid in tqdm(run.dm.push_dataloader(), desc="nearest patches", leave=False):
        d = net.distances(net.latent(x), mask)                                 # (B, P, H, W) masked
        B, _, H, W = d.shape
        v, i = d.flatten(2).min(2)                                             # (B, P)
        dists.append(v)
        ids.append(cid[:, None].expand(B, P))
        yx.append(torch.stack([i // W, i % W], -1))                            # (B, P, 2)
    dists, ids, yx = torch.cat(dists), torch.cat(ids), torch.cat(yx)
    order = dists.argsort(0)[:k]                                               # (k, P)
    ar = torch.arange(P)
    return {"distance": dists[order, ar], "cell_id": ids[order, ar], "latent_yx": yx[order, ar]}


def _crop(run: Run, cell_id: int):
    """(manifest row, image (C, S, S), mask (1, S, S)) of one cell, preprocessed as in training."""
    if run.datasets is None:   # built once: explain fetches hundreds of crops
        run.datasets = {"push": run.dm.dataset("push"), "test": run.dm.dataset("test")}
        run.position = {int(r): (name, i) for name, ds in run.datasets.items() for i, r in enumerate(ds.rows)}
        run.row_of_cell = dict(zip(run.dm.store.manifest["cell_id"].tolist(), range(len(run.dm.store.manifest))))
    row = run.row_of_cell[int(cell_id)]
    name, i = run.position[row]
    x, m, _, _ = run.datasets[name][i]
    return row, x, m


def _where(run: Run, row: int) -> str:
    r = run.dm.store.manifest.iloc[row]
    return (f"{r['condition']} · image {r['image_id']} · well {r['well']} · field {r['field']} · cell {r['cell_id']}"
            f" · centre (y={r['centroid_y']:.0f}, x={r['centroid_x']:.0f})")


def render_prototype(run: Run, j: int, out: Path) -> dict:
    """Figure 1: the prototype's source crop, RF box at max activation vs the 95th-percentile box."""
    import matplotlib.pyplot as plt

    rec, net = run.record, run.net
    row, x, m = _crop(run, int(rec["cell_id"][j]))
    with torch.no_grad():
        d = net.distances(net.latent(x[None]), m[None])[0, j]
    sim = log_similarity(d).numpy()
    S = x.shape[-1]
    up = upsample(sim, S)
    rf_box = [int(v) for v in rec["box_clipped"][j]]
    pct_box = percentile_box(up)
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.8))
    for ax, box, title in ((axes[0], rf_box, f"receptive-field box ({int(rec['rf']['size'])} px)"),
                           (axes[1], pct_box, "95th-percentile box (ProtoPNet)")):
        ax.imshow(x[0], cmap="gray")
        if ax is axes[1]:
            ax.imshow(up, cmap="jet", alpha=0.35)
        ax.contour(m[0], [0.5], colors="lime", linewidths=0.8)
        y0, x0, y1, x1 = box
        ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="yellow", lw=1.5))
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    cls = rec["class_names"][int(rec["prototype_class"][j])]
    fig.suptitle(f"prototype {j} (class {cls})\n{_where(run, row)}", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return {"prototype": j, "rf_box": rf_box, "percentile_box": list(pct_box), "row": row}


def render_mosaic(run: Run, j: int, near: dict, out: Path) -> list[int]:
    """Figure 2: the 20 nearest training patches (RF-sized, around each cell's max activation)."""
    import matplotlib.pyplot as plt

    rf = run.net.rf
    k = near["cell_id"].shape[0]
    cols = 5
    fig, axes = plt.subplots((k + cols - 1) // cols, cols, figsize=(cols * 1.6, ((k + cols - 1) // cols) * 1.8))
    rows = []
    for i, ax in enumerate(np.atleast_1d(axes).flat):
        ax.axis("off")
        if i >= k:
            continue
        row, x, m = _crop(run, int(near["cell_id"][i, j]))
        rows.append(row)
        y0, x0, y1, x1 = rf.box(int(near["latent_yx"][i, j, 0]), int(near["latent_yx"][i, j, 1]), clip=x.shape[-1])
        ax.imshow(x[0, y0:y1, x0:x1], cmap="gray")
        ax.contour(m[0, y0:y1, x0:x1], [0.5], colors="lime", linewidths=0.5)
        r = run.dm.store.manifest.iloc[row]
        ax.set_title(f"{r['condition']} d={float(near['distance'][i, j]):.2f}\nwell {r['well']} f{r['field']} "
                     f"cell {r['cell_id']}", fontsize=6)
    fig.suptitle(f"prototype {j}: {k} nearest training patches (nearest first)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return rows


def localisation(run: Run, near: dict) -> dict:
    """Ground-truth checks on data with planted-change masks: for each prototype of the exposed
    class, the share of its nearest patches whose RF box overlaps the planted texture; and the share
    of all prototypes whose source patch (max activation) lies in background."""
    store, rec, rf = run.dm.store, run.record, run.net.rf
    row_of = dict(zip(store.manifest["cell_id"], range(len(store.manifest))))
    S = store.crop_size
    out = {}
    if store.has_texture:
        exp_class = len(rec["class_names"]) - 1
        shares = {}
        for j in np.flatnonzero(rec["prototype_class"].numpy() == exp_class):
            cells = [row_of[int(c)] for c in near["cell_id"][:, j]]
            boxes = [rf.box(int(y), int(x), clip=S) for y, x in near["latent_yx"][:, j].tolist()]
            shares[int(j)] = texture_share(boxes, [store.texture(r) for r in cells])
        out["exp_prototype_texture_share"] = shares
        out["exp_prototype_texture_share_mean"] = float(np.mean(list(shares.values()))) if shares else None
    masks = torch.stack([torch.tensor(store.mask(row_of[int(c)]), dtype=torch.float32)[None] for c in rec["cell_id"]])
    if masks.shape[-1] != run.dm.crop_size:
        masks = torch.nn.functional.interpolate(masks, size=run.dm.crop_size, mode="nearest")
    out["background_prototype_share"] = background_share(rec["latent_yx"], masks, rec["latent_size"])
    return out


def render_scores(run: Run, preds: pd.DataFrame, n_boot: int, out: Path) -> dict:
    """Figure 5: Exp score per population, and the estimated affected fraction of Exp."""
    import matplotlib.pyplot as plt

    ref, exp = run.record["class_names"][0], run.record["class_names"][-1]
    frac = affected_fraction_ci(preds[["well", "condition", "score"]], ref, exp, n_boot=n_boot)
    known = preds[(preds["condition"] == exp) & (preds["true_label"] >= 0)]
    if len(known):
        frac["true"] = float((known["true_label"] == 1).mean())
        frac["error"] = frac["estimate"] - frac["true"]
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    bins = np.linspace(0, 1, 41)
    for cond, colour in ((ref, "tab:blue"), (exp, "tab:red")):
        ax.hist(preds.loc[preds["condition"] == cond, "score"], bins, alpha=0.5, density=True, color=colour, label=cond)
    ax.axvline(np.median(preds.loc[preds["condition"] == ref, "score"]), color="k", ls="--", lw=0.8,
               label=f"{ref} median (threshold)")
    title = f"affected fraction of {exp}: {frac['estimate']:.2f} (95 % CI {frac['ci_low']:.2f}–{frac['ci_high']:.2f})"
    if "true" in frac:
        title += f"; true {frac['true']:.2f}"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(f"{exp} score of a test cell")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return frac


def prototype_health(run: Run, near: dict) -> pd.DataFrame:
    """Figure 7 as a table: duplicates, border-straddling nearest patches, purity."""
    rec, store = run.record, run.dm.store
    row_of = dict(zip(store.manifest["cell_id"], range(len(store.manifest))))
    labels = store.manifest["label"].to_numpy()
    dups = duplicate_pairs(rec["vectors"], rec["cell_id"], rec["latent_yx"])
    rows = []
    for j in range(len(rec["cell_id"])):
        cells = [row_of[int(c)] for c in near["cell_id"][:, j]]
        masks = torch.stack([torch.tensor(store.mask(r), dtype=torch.float32)[None] for r in cells])
        if masks.shape[-1] != run.dm.crop_size:
            masks = torch.nn.functional.interpolate(masks, size=run.dm.crop_size, mode="nearest")
        cls = int(rec["prototype_class"][j])
        rows.append({"prototype": j, "class": rec["class_names"][cls],
                     "duplicate_of": ",".join(str(a if b == j else b) for a, b in dups if j in (a, b)),
                     "border_share": border_share(masks, near["latent_yx"][:, j], rec["latent_size"]),
                     "purity": purity(labels[cells], cls)})
    df = pd.DataFrame(rows)
    df["flag"] = [", ".join(f for f, on in (("duplicate", bool(r.duplicate_of)), ("on border", r.border_share > 0.5),
                                             ("impure", r.purity < 0.5)) if on) for r in df.itertuples()]
    return df


def render_cell(run: Run, cell_id: int, out: Path, top: int = 3) -> None:
    """Figure 4: "this looks like that" for one test cell: its top prototypes by contribution
    (similarity × last-layer weight to the predicted class) and where each matched."""
    import matplotlib.pyplot as plt

    rec, net, rf = run.record, run.net, run.net.rf
    row, x, m = _crop(run, cell_id)
    with torch.no_grad():
        outd = net(x[None], m[None])
    sims = outd["similarities"][0]
    pred = int(outd["logits"][0].argmax())
    contrib = sims * net.last_layer.weight[pred]
    order = contrib.argsort(descending=True)[:top].tolist()
    fig, axes = plt.subplots(2, top + 1, figsize=(2.2 * (top + 1), 4.6))
    axes[0, 0].imshow(x[0], cmap="gray")
    axes[0, 0].contour(m[0], [0.5], colors="lime", linewidths=0.6)
    axes[0, 0].set_title(f"this cell → {rec['class_names'][pred]}", fontsize=8)
    axes[1, 0].axis("off")
    axes[1, 0].text(0, 0.5, _where(run, row).replace(" · ", "\n"), fontsize=6.5, va="center")
    for k, j in enumerate(order, start=1):
        d = outd["distances"][0, j]
        iy, ix = divmod(int(d.argmin()), d.shape[1])
        y0, x0, y1, x1 = rf.box(iy, ix, clip=x.shape[-1])
        axes[0, k].imshow(x[0], cmap="gray")
        axes[0, k].add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="yellow", lw=1.2))
        w = float(net.last_layer.weight[pred, j].detach())
        axes[0, k].set_title(f"looks like p{j}: {float(sims[j]):.2f}×{w:.1f}"
                             f"={float(contrib[j]):.2f}", fontsize=7)
        _, px, pm = _crop(run, int(rec["cell_id"][j]))
        b = [int(v) for v in rec["box_clipped"][j]]
        axes[1, k].imshow(px[0, b[0]:b[2], b[1]:b[3]], cmap="gray")
        axes[1, k].set_title(f"that: prototype {j} ({rec['class_names'][int(rec['prototype_class'][j])]})", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)


def explain_run(run_dir: str | Path, n_boot: int = 1000, n_cells: int = 6) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = load_run(run_dir)
    out = run.dir / "explain"
    (out / "prototypes").mkdir(parents=True, exist_ok=True)
    (out / "mosaics").mkdir(exist_ok=True)
    rec = run.record
    P = len(rec["cell_id"])
    near = nearest_patches(run)
    protos = []
    for j in tqdm(range(P), desc="prototypes", leave=False):
        info = render_prototype(run, j, out / "prototypes" / f"prototype_{j:02d}.png")
        render_mosaic(run, j, near, out / "mosaics" / f"mosaic_{j:02d}.png")
        protos.append(info)

    preds = pd.read_csv(run.dir / "test_predictions.csv", dtype={"well": str})
    cols = [f"min_d_{j}" for j in range(P)]
    sims = pd.DataFrame(similarity_from_distance(preds[cols].to_numpy()), columns=[f"p{j}" for j in range(P)])
    cells = pd.concat([preds[["cell_id", "well", "condition"]], sims], axis=1)
    ref, exp = rec["class_names"][0], rec["class_names"][-1]
    names = list(sims.columns)
    pop = population_means(cells, names, ref, exp, n_boot=n_boot)
    pop.insert(1, "class", [rec["class_names"][int(c)] for c in rec["prototype_class"]])
    pop.to_csv(out / "population_similarity.csv", index=False)
    ranked = rank_differences(cells, names, ref, exp)
    ranked.to_csv(out / "prototype_differences.csv", index=False)

    fig, axes = plt.subplots(2, 1, figsize=(max(6, P * 0.45), 6), sharex=True)
    xs = np.arange(P)
    for off, cond, colour in ((-0.2, ref, "tab:blue"), (0.2, exp, "tab:red")):
        m = pop[f"mean_{cond}"].to_numpy()
        err = np.stack([m - pop[f"ci_low_{cond}"], pop[f"ci_high_{cond}"] - m])
        axes[0].bar(xs + off, m, 0.4, yerr=err, color=colour, label=cond, capsize=2)
    axes[0].set_ylabel("mean max-similarity")
    axes[0].legend(fontsize=8)
    d = pop["difference"].to_numpy()
    axes[1].bar(xs, d, 0.6, yerr=np.stack([d - pop["diff_ci_low"], pop["diff_ci_high"] - d]),
                color=["tab:red" if v > 0 else "tab:blue" for v in d], capsize=2)
    axes[1].axhline(0, color="k", lw=0.5)
    axes[1].set_ylabel(f"{exp} − {ref}")
    axes[1].set_xticks(xs, [f"{j}\n{pop['class'][j]}" for j in range(P)], fontsize=7)
    fig.suptitle("prototype similarity by population (test cells; 95 % CI: bootstrap over wells)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "population_similarity.png", dpi=80)
    plt.close(fig)

    frac = render_scores(run, preds, n_boot, out / "cell_scores.png")
    health = prototype_health(run, near)
    health.to_csv(out / "prototype_health.csv", index=False)
    (out / "cells").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    sample = []
    for cond in (ref, exp):   # a fixed, seeded sample of test cells from each population
        ids = preds.loc[preds["condition"] == cond, "cell_id"].to_numpy()
        sample += rng.choice(ids, size=min(n_cells // 2, len(ids)), replace=False).tolist()
    for cid in sample:
        render_cell(run, int(cid), out / "cells" / f"cell_{int(cid)}.png")

    metrics = json.loads((run.dir / "metrics.json").read_text()) if (run.dir / "metrics.json").exists() else {}
    em = {k: metrics.get(k) for k in ("true_label_accuracy", "true_label_auroc", "well_label_accuracy")}
    em.update(localisation(run, near))
    em["affected_fraction"] = frac
    (out / "explain_metrics.json").write_text(json.dumps(em, indent=2))
    from protocell.explain.report import write_report
    write_report(run, protos, pop, ranked, em, metrics, health=health, cells=[int(c) for c in sample])
    log.info("explain: %s", out)
    return out
