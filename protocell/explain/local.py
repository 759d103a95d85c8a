"""Figure 4: "this looks like that" for single test cells.

For a cell, ProtoPNet's logit of class c is Σ_j sim_j · w_cj (w: last layer). The figure shows
the prototypes with the largest contributions sim_j · w_cj to the predicted class: where in this
cell each matched (RF box at the max activation, heat map) beside the prototype's own source patch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from protocell.explain.boxes import rf_box, upsample
from protocell.explain.heatmap import draw_box
from protocell.explain.render import Look, add_legend, draw_crop, draw_heat
from protocell.model.prototypes import log_similarity
from protocell.runs import fmt_box


def contributions(similarities: torch.Tensor, weights: torch.Tensor, cls: int) -> torch.Tensor:
    """similarities: (P,), weights: (K, P) last layer → (P,) contribution of each prototype to class
    ``cls``'s logit; they sum to that logit (the last layer has no bias)."""
    return similarities * weights[cls]


def sample_cells(preds: pd.DataFrame, conditions: list[str], n: int, seed: int = 0) -> list[int]:
    """A fixed, seeded sample of test cells, n // len(conditions) from each condition."""
    rng = np.random.default_rng(seed)
    out = []
    for cond in conditions:
        ids = preds.loc[preds["condition"] == cond, "cell_id"].to_numpy()
        out += rng.choice(ids, size=min(max(1, n // len(conditions)), len(ids)), replace=False).tolist()
    return [int(c) for c in out]


@torch.no_grad()
def render_cell(run, cell_id: int, maps: dict, out: Path, look: Look, top: int = 3) -> dict:
    """Figure 4 for one test cell; returns the cell's prediction and its top prototypes. With
    ``look.heatmap == "panel"`` each match gets its heat map in a row of its own."""
    import matplotlib.pyplot as plt

    rec, net, S = run.record, run.net, run.crop_size
    row, x, m = run.crop(cell_id)
    o = net(x[None], m[None])
    sims, dist = o["similarities"][0], o["distances"][0]
    pred = int(o["logits"][0].argmax())
    prob = float(torch.softmax(o["logits"][0], 0)[-1])
    w = net.last_layer.weight.detach()
    contrib = contributions(sims, w, pred)
    order = contrib.argsort(descending=True)[:top].tolist()
    panel = look.heatmap == "panel"
    fig, axes = plt.subplots(
        3 if panel else 2, top + 1, figsize=(2.3 * (top + 1), 9.0 if panel else 6.2), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    xn, mn = x.numpy(), m.numpy()
    draw_crop(axes[0, 0], xn, mn, look)
    axes[0, 0].set_title(f"this cell → {run.class_names[pred]}\n({run.exp} score {prob:.2f})", fontsize=8)
    axes[1, 0].axis("off")
    axes[1, 0].text(0, 0.5, run.where(row).replace(" · ", "\n"), fontsize=6.5, va="center")
    matched = []
    for k, j in enumerate(order, start=1):
        d = dist[j]
        iy, ix = divmod(int(d.argmin()), d.shape[1])
        box = rf_box(net.rf, iy, ix, S)
        heat = upsample(log_similarity(d), S)
        draw_crop(axes[0, k], xn, mn, look, heat)
        draw_box(axes[0, k], box, lw=1.2)
        if panel:
            draw_heat(axes[2, k], heat, mn)
            axes[2, k].set_title(f"similarity to prototype {j}", fontsize=6.5)
        axes[0, k].set_title(
            f"looks like prototype {j}\nsim {float(sims[j]):.2f} × w {float(w[pred, j]):.2f} = {float(contrib[j]):.2f}",
            fontsize=7,
        )
        pb = [int(v) for v in rec["box_clipped"][j]]
        draw_crop(axes[1, k], maps["images"][j].numpy(), maps["masks"][j].numpy(), look, window=pb)
        src = run.provenance(maps["rows"][j])
        axes[1, k].set_title(
            f"that: prototype {j} ({run.class_names[int(rec['prototype_class'][j])]})\n"
            f"well {src['well']} f{src['field']} cell {src['cell_id']}",
            fontsize=6.5,
        )
        matched.append(
            {
                "prototype": j,
                "similarity": float(sims[j]),
                "weight": float(w[pred, j]),
                "contribution": float(contrib[j]),
                "box_crop": "{},{},{},{}".format(*box),
                "box_image": fmt_box(run.raw_box(row, box)),
            }
        )
    fig.suptitle(
        f"this looks like that: top {top} prototypes by contribution (similarity × last-layer weight) "
        f"to the predicted class",
        fontsize=8,
    )
    add_legend(fig, look, "yellow contours: similarity" if not panel else "")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return {
        **run.provenance(row),
        "predicted": run.class_names[pred],
        "exp_score": prob,
        "top": matched,
        "figure": f"cells/{out.name}",
    }
