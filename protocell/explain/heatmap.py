"""Figure 1: each prototype on its source cell — activation heat map, cell outline, and two boxes:
the receptive-field box centred on the maximum activation (the cell paper) beside the original
ProtoPNet box around the 95th-percentile activation region.

The source cell and latent position come from ``prototypes.pt`` (push provenance); the heat maps
of all prototypes come from one batched forward pass over their source crops.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from protocell.explain.boxes import percentile_box, rf_box, upsample
from protocell.model.prototypes import log_similarity

log = logging.getLogger("protocell.explain")


@torch.no_grad()
def prototype_maps(run) -> dict:
    """Source crops and similarity maps of every prototype on its own source cell.

    Returns rows (P,), images (P, C, S, S), masks (P, 1, S, S), sim (P, H, W) latent similarity of
    prototype j on its source crop, heat (P, S, S) the same upsampled to the crop."""
    rec, net = run.record, run.net
    rows, xs, ms = zip(*(run.crop(int(c)) for c in rec["cell_id"]))
    x, m = torch.stack(xs), torch.stack(ms)
    d = net.distances(net.latent(x), m)                                   # (P, P, H, W)
    ar = torch.arange(len(rows))
    sim = log_similarity(d[ar, ar]).numpy()                               # prototype j on its own crop
    heat = np.stack([upsample(s, x.shape[-1]) for s in sim])
    return {"rows": list(rows), "images": x, "masks": m, "sim": sim, "heat": heat}


def draw_box(ax, box, colour="yellow", lw=1.5) -> None:
    import matplotlib.pyplot as plt

    y0, x0, y1, x1 = box
    ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec=colour, lw=lw))


def show_cell(ax, image: torch.Tensor, mask: torch.Tensor, heat: np.ndarray | None = None) -> None:
    """First channel in grey, the activation heat map over it, the cell outline in green."""
    ax.imshow(image[0], cmap="gray")
    if heat is not None:
        ax.imshow(heat, cmap="jet", alpha=0.35)
    if mask.any():
        ax.contour(mask[0], [0.5], colors="lime", linewidths=0.8)
    ax.set_xticks([])
    ax.set_yticks([])


def render_prototype(run, j: int, maps: dict, out: Path) -> dict:
    """Figure 1 for prototype j; returns its boxes and provenance (a row of prototypes.csv)."""
    import matplotlib.pyplot as plt

    rec = run.record
    row, x, m, heat = maps["rows"][j], maps["images"][j], maps["masks"][j], maps["heat"][j]
    S = x.shape[-1]
    iy, ix = (int(v) for v in rec["latent_yx"][j])
    box_rf = tuple(int(v) for v in rec["box_clipped"][j])       # the provenance push stored
    if box_rf != rf_box(run.net.rf, iy, ix, S):
        log.warning("prototype %d: prototypes.pt box %s differs from the network's receptive-field box %s; "
                    "showing the stored one", j, box_rf, rf_box(run.net.rf, iy, ix, S))
    box_pct = percentile_box(heat)
    cy, cx = run.net.rf.centre(iy), run.net.rf.centre(ix)
    cls = rec["class_names"][int(rec["prototype_class"][j])]
    fig, axes = plt.subplots(1, 2, figsize=(7, 4.1))
    for ax, box, title in ((axes[0], box_rf, f"receptive-field box ({rec['rf']['size']:.0f} px) at max activation"),
                           (axes[1], box_pct, "ProtoPNet box: ≥ 95th percentile of activation")):
        show_cell(ax, x, m, heat)
        draw_box(ax, box)
        ax.plot([cx], [cy], "w+", ms=8, mew=1.5)
        ax.set_title(title, fontsize=8)
    fig.suptitle(f"prototype {j} (class {cls}) on its source cell\n{run.where(row, box_rf)}", fontsize=7.5)
    fig.text(0.5, 0.01, "heat: similarity to the prototype (red high) · green: cell outline · +: max activation",
             ha="center", fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return {"prototype": j, "class": cls, **run.provenance(row, box_rf),
            "latent_y": iy, "latent_x": ix, "box_percentile_crop": "{},{},{},{}".format(*box_pct),
            "box_percentile_image": "{},{},{},{}".format(*run.raw_box(row, box_pct)),
            "figure": f"prototypes/{out.name}"}
