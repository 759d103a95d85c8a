"""Figure 1: each prototype on its source cell — the crop as a colour composite of its channels
(``explain.render``), the activation heat map as contours (or a panel beside it), the cell outline,
and two boxes: the receptive-field box centred on the maximum activation (the cell paper) beside
the original ProtoPNet box around the 95th-percentile activation region.

The source cell and latent position come from ``prototypes.pt`` (push provenance); the heat maps
of all prototypes come from one batched forward pass over their source crops.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from protocell.explain.boxes import percentile_box, rf_box, upsample
from protocell.explain.render import BOX, Look, add_legend, draw_crop, draw_heat
from protocell.model.prototypes import log_similarity
from protocell.runs import fmt_box

log = logging.getLogger("protocell.explain")


@torch.no_grad()
def prototype_maps(run) -> dict:
    """Source crops and similarity maps of every prototype on its own source cell.

    Returns rows (P,), images (P, C, S, S), masks (P, 1, S, S), sim (P, H, W) latent similarity of
    prototype j on its source crop, heat (P, S, S) the same upsampled to the crop."""
    rec, net = run.record, run.net
    rows, xs, ms = zip(*(run.crop(int(c)) for c in rec["cell_id"]))
    x, m = torch.stack(xs), torch.stack(ms)
    d = net.distances(net.latent(x), m)  # (P, P, H, W)
    ar = torch.arange(len(rows))
    sim = log_similarity(d[ar, ar]).numpy()  # prototype j on its own crop
    heat = np.stack([upsample(s, x.shape[-1]) for s in sim])
    return {"rows": list(rows), "images": x, "masks": m, "sim": sim, "heat": heat}


def draw_box(ax, box, colour=BOX, lw=1.5) -> None:
    import matplotlib.pyplot as plt

    y0, x0, y1, x1 = box
    ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec=colour, lw=lw))


def render_prototype(run, j: int, maps: dict, out: Path, look: Look) -> dict:
    """Figure 1 for prototype j; returns its boxes and provenance (a row of prototypes.csv).

    Panels: the composite with the receptive-field box, the composite with the percentile box, the
    heat map alone when ``look.heatmap == "panel"``; with ``look.channel_panels`` a second row of
    each channel alone in grey (with the RF box)."""
    import matplotlib.pyplot as plt

    rec = run.record
    row, x, m, heat = maps["rows"][j], maps["images"][j], maps["masks"][j], maps["heat"][j]
    x, m = x.numpy(), m.numpy()
    S = x.shape[-1]
    iy, ix = (int(v) for v in rec["latent_yx"][j])
    box_rf = tuple(int(v) for v in rec["box_clipped"][j])  # the provenance push stored
    if box_rf != rf_box(run.net.rf, iy, ix, S):
        log.warning(
            "prototype %d: prototypes.pt box %s differs from the network's receptive-field box %s; "
            "showing the stored one",
            j,
            box_rf,
            rf_box(run.net.rf, iy, ix, S),
        )
    box_pct = percentile_box(heat)
    cy, cx = run.net.rf.centre(iy), run.net.rf.centre(ix)
    cls = rec["class_names"][int(rec["prototype_class"][j])]
    top = 2 + (look.heatmap == "panel")
    C = len(look.channels) if look.channel_panels else 0
    ncols = max(top, C)
    fig, axes = plt.subplots(2 if C else 1, ncols, figsize=(3.5 * ncols, 4.3 if not C else 7.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, box, title in (
        (axes[0, 0], box_rf, f"receptive-field box ({rec['rf']['size']:.0f} px) at max activation"),
        (axes[0, 1], box_pct, "ProtoPNet box: ≥ 95th percentile of activation"),
    ):
        draw_crop(ax, x, m, look, heat)
        draw_box(ax, box)
        ax.plot([cx], [cy], "w+", ms=8, mew=1.5)
        ax.set_title(title, fontsize=8)
    if look.heatmap == "panel":
        draw_heat(axes[0, 2], heat, m)
        axes[0, 2].set_title("similarity to the prototype (bright: high)", fontsize=8)
    for c in range(C):
        draw_crop(axes[1, c], x, m, look.only(c), heat)
        draw_box(axes[1, c], box_rf, lw=1.0)
        axes[1, c].text(
            0.02, 0.98, look.channels[c], color="white", fontsize=9, va="top", transform=axes[1, c].transAxes
        )
    fig.suptitle(f"prototype {j} (class {cls}) on its source cell\n{run.where(row, box_rf)}", fontsize=7.5)
    heat_says = (
        "yellow contours: similarity to the prototype (80th, 95th pct in the cell)" if look.heatmap == "contour" else ""
    )
    add_legend(
        fig, look, " · ".join(filter(None, [heat_says, "white: cell outline", "cyan: box", "+: max activation"]))
    )
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return {
        "prototype": j,
        "class": cls,
        **run.provenance(row, box_rf),
        "latent_y": iy,
        "latent_x": ix,
        "box_percentile_crop": "{},{},{},{}".format(*box_pct),
        "box_percentile_image": fmt_box(run.raw_box(row, box_pct)),
        "figure": f"prototypes/{out.name}",
    }
