import numpy as np
import pandas as pd

from protocell.explain.similarity import (benjamini_hochberg, population_means, rank_differences, replicate_unit,
                                          unit_ids)


def _cells(seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for cond, shift in (("Ref", 0.0), ("Exp", 0.5)):
        for w in range(4):
            well_effect = rng.normal(0, 0.1)
            for _ in range(rng.integers(5, 15)):
                rows.append({"well": f"{cond}{w}", "condition": cond,
                             "p0": rng.normal(1 + shift + well_effect, 0.2), "p1": rng.normal(1, 0.2)})
    return pd.DataFrame(rows)


def test_population_means_equal_a_direct_loop_and_ci_brackets_them():
    cells = _cells()
    pop = population_means(cells, ["p0", "p1"], "Ref", "Exp", n_boot=300)
    for j, name in enumerate(["p0", "p1"]):
        for cond in ("Ref", "Exp"):
            vals = [r[name] for _, r in cells.iterrows() if r["condition"] == cond]
            assert np.isclose(pop.loc[j, f"mean_{cond}"], sum(vals) / len(vals))
            assert pop.loc[j, f"ci_low_{cond}"] <= pop.loc[j, f"mean_{cond}"] <= pop.loc[j, f"ci_high_{cond}"]
    assert pop.loc[0, "diff_ci_low"] > 0            # the planted difference is detected ...
    assert pop.loc[1, "diff_ci_low"] < 0 < pop.loc[1, "diff_ci_high"]   # ... the null one is not


def test_benjamini_hochberg_matches_hand_values_and_ranking_uses_wells():
    q = benjamini_hochberg(np.array([0.01, 0.04, 0.03, 0.5]))
    # sorted p 0.01, 0.03, 0.04, 0.5 → p·n/rank 0.04, 0.06, 0.0533, 0.5 → running min from the top
    assert np.allclose(q, [0.04, 0.16 / 3, 0.16 / 3, 0.5])
    ranked = rank_differences(_cells(), ["p0", "p1"], "Ref", "Exp")
    assert ranked.loc[0, "prototype"] == "p0" and ranked.loc[0, "n_ref"] == 4
    assert ranked.loc[0, "p_value"] < 0.05 and ranked.loc[0, "cohens_d"] > 1


def _plate(ref_wells: int, exp_wells: int = 3, fields: int = 2, seed: int = 1):
    """Cells of ``ref_wells`` Ref and ``exp_wells`` Exp wells, ``fields`` images per well; p0 higher in Exp."""
    rng = np.random.default_rng(seed)
    rows = []
    for cond, n_wells, shift in (("Ref", ref_wells, 0.0), ("Exp", exp_wells, 0.5)):
        for w in range(n_wells):
            for f in range(fields):
                for _ in range(8):
                    rows.append({"plate": "P1", "well": f"{cond}{w}", "field": f, "image_id": f"{cond}{w}_f{f}",
                                 "condition": cond, "p0": rng.normal(1 + shift, 0.2), "p1": rng.normal(1, 0.2)})
    return pd.DataFrame(rows)


def test_replicate_unit_falls_back_from_wells_and_warns_below_three():
    three = replicate_unit(_plate(3), "Ref", "Exp")
    assert three["unit"] == "well" and not three["descriptive"] and three["counts"] == {"Ref": 3, "Exp": 3}
    one = replicate_unit(_plate(1), "Ref", "Exp")           # 1 Ref well, 2 images: no unit has 3 per condition
    assert one["unit"] == "image" and one["descriptive"] and one["counts"] == {"Ref": 2, "Exp": 6}
    assert "1 Ref and 3 Exp wells" in one["reason"] and "descriptive only" in one["reason"]
    images = replicate_unit(_plate(1, fields=4), "Ref", "Exp")      # 1 Ref well of 4 images: images, with a caveat
    assert images["unit"] == "image" and not images["descriptive"] and "optimistic" in images["reason"]
    forced = replicate_unit(_plate(3), "Ref", "Exp", requested="image")
    assert forced["unit"] == "image" and forced["counts"] == {"Ref": 6, "Exp": 6} and "report.unit" in forced["reason"]

    # one Ref well: no p-value, no q = 1, no zero-width CI; the ranking still puts the real effect first
    cells = _plate(1)
    cells["replicate"] = unit_ids(cells, "well")
    ranked = rank_differences(cells, ["p1", "p0"], "Ref", "Exp", by="replicate")
    assert ranked["p_value"].isna().all() and ranked["q_value"].isna().all() and ranked["cohens_d"].isna().all()
    assert ranked["prototype"].tolist() == ["p0", "p1"]          # by |difference| when d is undefined
    pop = population_means(cells, ["p0", "p1"], "Ref", "Exp", n_boot=50, by="replicate")
    assert pop["ci_low_Ref"].isna().all() and pop["diff_ci_low"].isna().all() and pop["ci_low_Exp"].notna().all()
    descriptive = rank_differences(_plate(3), ["p0", "p1"], "Ref", "Exp", descriptive=True)
    assert descriptive["p_value"].isna().all() and descriptive["cohens_d"].notna().all()


def test_benjamini_hochberg_leaves_missing_p_values_out():
    q = benjamini_hochberg(np.array([0.01, np.nan, 0.04]))
    assert np.isnan(q[1]) and np.allclose(q[[0, 2]], [0.02, 0.04])


def test_health_finds_duplicates_border_patches_and_purity():
    import torch

    from protocell.explain.health import border_share, duplicate_pairs, purity

    v = torch.tensor([[0.0, 0.0], [0.0, 0.01], [1.0, 1.0], [2.0, 2.0]])
    cells = torch.tensor([1, 2, 3, 3])
    yx = torch.tensor([[0, 0], [1, 1], [2, 2], [2, 2]])
    assert duplicate_pairs(v, cells, yx) == [(0, 1), (2, 3)]     # close vectors; same source patch
    masks = torch.zeros(2, 1, 8, 8)
    masks[:, :, :4, :4] = 1
    masks[1, :, 3, 3] = 0                                         # unit (1, 1) of cell 1 straddles the outline
    assert border_share(masks, torch.tensor([[0, 0], [1, 1]]), (4, 4)) == 0.5
    assert purity(np.array([1, 1, 0, 1]), 1) == 0.75


def test_localisation_metrics_on_a_hand_made_case():
    import torch

    from protocell.metrics.localisation import background_share, box_overlaps_mask, texture_share

    tex = np.zeros((16, 16), bool)
    tex[10:12, 10:12] = True                                       # the planted change, bottom right
    boxes = [(8, 8, 16, 16), (0, 0, 8, 8), (11, 0, 16, 11), (0, 11, 11, 16)]
    # overlaps: yes; no; touches column 10 of rows 11 → yes; rows 0–10 of column 11 → yes
    assert [box_overlaps_mask(b, tex) for b in boxes] == [True, False, True, True]
    assert texture_share(boxes, [tex] * 4) == 0.75
    masks = torch.zeros(3, 1, 8, 8)
    masks[:, :, :4, :4] = 1                                        # the cell covers latent unit (0, 0) of a 2x2 grid
    yx = torch.tensor([[0, 0], [1, 1], [0, 0]])
    assert abs(background_share(yx, masks, (2, 2)) - 1 / 3) < 1e-6     # float32 mean
