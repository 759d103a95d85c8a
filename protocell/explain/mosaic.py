"""Figure 2: for each prototype, the k training patches nearest to it, nearest first.

One patch per cell: the RF-sized box around the cell's maximum activation for that prototype
(its minimum masked distance). Found in **one** inference pass over the push set (the training
originals push searched), for all prototypes at once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from protocell.explain.boxes import rf_box
from protocell.explain.render import Look, add_legend, draw_crop
from protocell.model import search

N_NEAREST = 20


def nearest_patches(run, k: int = N_NEAREST) -> dict:
    """For every prototype, the k push-set cells whose best in-cell patch is nearest to it
    (``model.search``, the search push uses). Returns distance (k, P), cell_id (k, P), latent_yx (k, P, 2)."""
    batches = tqdm(run.dm.push_dataloader(), desc="explain: nearest patches (push set)", leave=False, disable=None)
    near = search.nearest_patches(run.net, batches, k=k, own_class=False)
    return {key: near[key] for key in ("distance", "cell_id", "latent_yx")}


def render_mosaic(run, j: int, near: dict, out: Path, look: Look) -> pd.DataFrame:
    """Figure 2 for prototype j; returns its tiles' provenance (written next to it as CSV)."""
    import matplotlib.pyplot as plt

    rf, S = run.net.rf, run.crop_size
    k = near["cell_id"].shape[0]
    cols = 5
    nrows = (k + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(cols * 1.7, nrows * 1.95 + 0.5))
    rows = []
    for i, ax in enumerate(np.atleast_1d(axes).flat):
        ax.axis("off")
        if i >= k:
            continue
        row, x, m = run.crop(int(near["cell_id"][i, j]))
        iy, ix = (int(v) for v in near["latent_yx"][i, j])
        box = rf_box(rf, iy, ix, S)
        draw_crop(ax, x.numpy(), m.numpy(), look, window=box)
        p = run.provenance(row, box)
        ax.set_title(
            f"{i + 1}. {p['condition']}  d={float(near['distance'][i, j]):.3f}\n"
            f"well {p['well']} f{p['field']} cell {p['cell_id']}",
            fontsize=6,
            color="tab:red" if p["condition"] == run.exp else "tab:blue",
        )
        rows.append(
            {
                "prototype": j,
                "rank": i + 1,
                "distance": float(near["distance"][i, j]),
                "latent_y": iy,
                "latent_x": ix,
                **p,
            }
        )
    cls = run.class_names[int(run.record["prototype_class"][j])]
    fig.suptitle(
        f"prototype {j} (class {cls}): the {k} nearest training patches, nearest first\n"
        f"RF-sized box around each cell's max activation · white: cell outline · "
        f"image, box coordinates: {out.with_suffix('.csv').name}",
        fontsize=7.5,
    )
    add_legend(fig, look)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(out, dpi=80)
    plt.close(fig)
    table = pd.DataFrame(rows)
    table.to_csv(out.with_suffix(".csv"), index=False)
    return table
