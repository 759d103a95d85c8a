import numpy as np
import pandas as pd

from protocell.explain.similarity import (
    population_means,
    rank_differences,
    replicate_unit,
    unit_ids,
)
from protocell.stats import benjamini_hochberg


def _cells(seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for cond, shift in (("Ref", 0.0), ("Exp", 0.5)):
        for w in range(4):
            well_effect = rng.normal(0, 0.1)
            for _ in range(rng.integers(5, 15)):
                rows.append(
                    {
                        "well": f"{cond}{w}",
                        "condition": cond,
                        "p0": rng.normal(1 + shift + well_effect, 0.2),
                        "p1": rng.normal(1, 0.2),
                    }
                )
    return pd.DataFrame(rows)


def test_population_means_equal_a_direct_loop_and_ci_brackets_them():
    cells = _cells()
    pop = population_means(cells, ["p0", "p1"], "Ref", "Exp", n_boot=300)
    for j, name in enumerate(["p0", "p1"]):
        for cond in ("Ref", "Exp"):
            vals = [r[name] for _, r in cells.iterrows() if r["condition"] == cond]
            assert np.isclose(pop.loc[j, f"mean_{cond}"], sum(vals) / len(vals))
            assert pop.loc[j, f"ci_low_{cond}"] <= pop.loc[j, f"mean_{cond}"] <= pop.loc[j, f"ci_high_{cond}"]
    assert pop.loc[0, "diff_ci_low"] > 0  # the planted difference is detected ...
    assert pop.loc[1, "diff_ci_low"] < 0 < pop.loc[1, "diff_ci_high"]  # ... the null one is not


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
                    rows.append(
                        {
                            "plate": "P1",
                            "well": f"{cond}{w}",
                            "field": f,
                            "image_id": f"{cond}{w}_f{f}",
                            "condition": cond,
                            "p0": rng.normal(1 + shift, 0.2),
                            "p1": rng.normal(1, 0.2),
                        }
                    )
    return pd.DataFrame(rows)


def test_replicate_unit_falls_back_from_wells_and_warns_below_three():
    three = replicate_unit(_plate(3), "Ref", "Exp")
    assert three["unit"] == "well" and not three["descriptive"] and three["counts"] == {"Ref": 3, "Exp": 3}
    one = replicate_unit(_plate(1), "Ref", "Exp")  # 1 Ref well, 2 images: no unit has 3 per condition
    assert one["unit"] == "image" and one["descriptive"] and one["counts"] == {"Ref": 2, "Exp": 6}
    assert "1 Ref and 3 Exp wells" in one["reason"] and "descriptive only" in one["reason"]
    images = replicate_unit(_plate(1, fields=4), "Ref", "Exp")  # 1 Ref well of 4 images: images, with a caveat
    assert images["unit"] == "image" and not images["descriptive"] and "optimistic" in images["reason"]
    forced = replicate_unit(_plate(3), "Ref", "Exp", requested="image")
    assert forced["unit"] == "image" and forced["counts"] == {"Ref": 6, "Exp": 6} and "report.unit" in forced["reason"]

    # one Ref well: no p-value, no q = 1, no zero-width CI; the ranking still puts the real effect first
    cells = _plate(1)
    cells["replicate"] = unit_ids(cells, "well")
    ranked = rank_differences(cells, ["p1", "p0"], "Ref", "Exp", by="replicate")
    assert ranked["p_value"].isna().all() and ranked["q_value"].isna().all() and ranked["cohens_d"].isna().all()
    assert ranked["prototype"].tolist() == ["p0", "p1"]  # by |difference| when d is undefined
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
    assert duplicate_pairs(v, cells, yx) == [(0, 1), (2, 3)]  # close vectors; same source patch
    masks = torch.zeros(2, 1, 8, 8)
    masks[:, :, :4, :4] = 1
    masks[1, :, 3, 3] = 0  # unit (1, 1) of cell 1 straddles the outline
    assert border_share(masks, torch.tensor([[0, 0], [1, 1]]), (4, 4)) == 0.5
    assert purity(np.array([1, 1, 0, 1]), 1) == 0.75


def test_localisation_metrics_on_a_hand_made_case():
    import torch

    from protocell.evaluate.localisation import background_share, box_overlaps_mask, texture_share

    tex = np.zeros((16, 16), bool)
    tex[10:12, 10:12] = True  # the planted change, bottom right
    boxes = [(8, 8, 16, 16), (0, 0, 8, 8), (11, 0, 16, 11), (0, 11, 11, 16)]
    # overlaps: yes; no; touches column 10 of rows 11 → yes; rows 0–10 of column 11 → yes
    assert [box_overlaps_mask(b, tex) for b in boxes] == [True, False, True, True]
    assert texture_share(boxes, [tex] * 4) == 0.75
    masks = torch.zeros(3, 1, 8, 8)
    masks[:, :, :4, :4] = 1  # the cell covers latent unit (0, 0) of a 2x2 grid
    yx = torch.tensor([[0, 0], [1, 1], [0, 0]])
    assert abs(background_share(yx, masks, (2, 2)) - 1 / 3) < 1e-6  # float32 mean


def test_population_means_cis_equal_a_direct_well_bootstrap():
    """The CIs are the 2.5/97.5 percentiles of a bootstrap over wells (wells of each condition drawn
    with replacement, cells pooled), reproduced here draw by draw with the same generator."""
    cells = _cells(1)
    protos = ["p0", "p1"]
    pop = population_means(cells, protos, "Ref", "Exp", n_boot=200, seed=7)
    assert pop.columns.tolist() == [
        "prototype",
        "mean_Ref",
        "mean_Exp",
        "ci_low_Ref",
        "ci_high_Ref",
        "ci_low_Exp",
        "ci_high_Exp",
        "difference",
        "diff_ci_low",
        "diff_ci_high",
    ]
    assert pop["prototype"].tolist() == protos
    rng = np.random.default_rng(7)
    wells = {
        c: [g[protos].to_numpy() for _, g in cells[cells["condition"] == c].groupby("well")] for c in ("Ref", "Exp")
    }
    boots = {}
    for c, w in wells.items():
        draws = []
        for _ in range(200):
            pick = rng.integers(0, len(w), len(w))
            pooled = [row for i in pick for row in w[i]]
            draws.append(np.mean(pooled, axis=0))
        boots[c] = np.array(draws)
    for j in range(2):
        for c in ("Ref", "Exp"):
            assert np.isclose(pop.loc[j, f"ci_low_{c}"], np.percentile(boots[c][:, j], 2.5))
            assert np.isclose(pop.loc[j, f"ci_high_{c}"], np.percentile(boots[c][:, j], 97.5))
        d = boots["Exp"][:, j] - boots["Ref"][:, j]
        assert np.isclose(pop.loc[j, "difference"], pop.loc[j, "mean_Exp"] - pop.loc[j, "mean_Ref"])
        assert np.isclose(pop.loc[j, "diff_ci_low"], np.percentile(d, 2.5))
        assert np.isclose(pop.loc[j, "diff_ci_high"], np.percentile(d, 97.5))
    again = population_means(cells, protos, "Ref", "Exp", n_boot=200, seed=7)
    pd.testing.assert_frame_equal(pop, again)  # seeded: reproducible
    assert not np.allclose(
        population_means(cells, protos, "Ref", "Exp", n_boot=200, seed=8)["ci_low_Ref"], pop["ci_low_Ref"]
    )


def test_rank_differences_equal_well_means_mann_whitney_cohens_d_and_bh_by_hand():
    from scipy.stats import mannwhitneyu

    cells = _cells(2)
    cells["p2"] = cells["p0"] * -1.0  # a decrease as large as p0's increase
    cells.loc[cells["well"] == "Exp3", "p1"] += 5.0  # one outlying well: a large mean, a small rank effect
    protos = ["p0", "p1", "p2"]
    ranked = rank_differences(cells, protos, "Ref", "Exp")
    assert ranked.columns.tolist() == [
        "prototype",
        "mean_ref",
        "mean_exp",
        "difference",
        "cohens_d",
        "p_value",
        "n_ref",
        "n_exp",
        "q_value",
    ]
    rows = {}
    for j in protos:
        means = {c: [g[j].mean() for _, g in cells[cells["condition"] == c].groupby("well")] for c in ("Ref", "Exp")}
        x, y = np.array(means["Ref"]), np.array(means["Exp"])
        sd = np.sqrt((np.var(x, ddof=1) + np.var(y, ddof=1)) / 2)
        rows[j] = {
            "mean_ref": x.mean(),
            "mean_exp": y.mean(),
            "difference": y.mean() - x.mean(),
            "cohens_d": (y.mean() - x.mean()) / sd,
            "p_value": mannwhitneyu(y, x, alternative="two-sided").pvalue,
            "n_ref": 4,
            "n_exp": 4,
        }
    p = np.array([rows[j]["p_value"] for j in protos])
    order = np.argsort(p)
    q = np.empty(3)
    for rank, i in enumerate(order, start=1):  # BH by its definition: min over ranks ≥ this one
        q[i] = min(1.0, min(p[order[k]] * 3 / (k + 1) for k in range(rank - 1, 3)))
    for j, qj in zip(protos, q):
        rows[j]["q_value"] = qj
    for _, r in ranked.iterrows():
        for k, v in rows[r["prototype"]].items():
            assert np.isclose(r[k], v), (r["prototype"], k, r[k], v)
    # sorted by q, then by |d|: p0 and p2 tie on q (and |d|), p1 follows
    assert ranked["prototype"].tolist()[2] == "p1" and set(ranked["prototype"][:2]) == {"p0", "p2"}
    assert ranked.index.tolist() == [0, 1, 2]


def test_rank_differences_with_a_single_well_per_condition_has_no_test():
    cells = pd.DataFrame(
        {"well": ["R", "R", "E", "E"], "condition": ["Ref", "Ref", "Exp", "Exp"], "p0": [1.0, 2.0, 3.0, 4.0]}
    )
    r = rank_differences(cells, ["p0"], "Ref", "Exp").iloc[0]
    assert np.isnan(r["p_value"]) and np.isnan(r["cohens_d"]) and np.isnan(r["q_value"]) and r["difference"] == 2.0
    two = pd.DataFrame({"well": ["R1", "R2", "E1"], "condition": ["Ref", "Ref", "Exp"], "p0": [1.0, 2.0, 3.0]})
    assert np.isnan(rank_differences(two, ["p0"], "Ref", "Exp").iloc[0]["p_value"])  # one exposed well


def test_benjamini_hochberg_accepts_integers_and_takes_the_running_minimum():
    q = benjamini_hochberg([1, 1, 0])
    assert q.dtype == np.float64 and q.tolist() == [1.0, 1.0, 0.0]
    assert benjamini_hochberg(np.array([0.6, 0.9])).tolist() == [0.9, 0.9]  # 0.6·2/1 = 1.2 → min with 0.9


def test_rank_differences_orders_ties_in_q_by_the_size_of_the_effect_whatever_its_sign():
    """Prototypes with perfectly separated well means (equal p and q): the larger |d| first, whatever
    its sign — here a large increase, then a decrease, then a small increase (sorting by the signed
    d, or by |d| ascending, orders them otherwise)."""
    rows = []
    for cond, k in (("Ref", 0), ("Exp", 1)):
        for w in range(3):
            rows.append(
                {
                    "well": f"{cond}{w}",
                    "condition": cond,
                    "up": 1.0 + k + 0.001 * w,
                    "down": 5.0 - 4 * k + 0.1 * w,
                    "small": 1.0 + k + 0.4 * w,
                }
            )
    ranked = rank_differences(pd.DataFrame(rows), ["small", "down", "up"], "Ref", "Exp")
    assert ranked["q_value"].nunique() == 1
    assert ranked["prototype"].tolist() == ["up", "down", "small"], ranked
    d = ranked["cohens_d"].to_numpy()
    assert d[0] > 0 > d[1] and d[2] > 0 and abs(d[0]) > abs(d[1]) > abs(d[2])


def test_rank_differences_tests_from_three_wells_a_side_and_no_spread_means_no_effect_size():
    def table(n_ref, n_exp, spread=True):
        return pd.DataFrame(
            [
                {"well": f"{c}{w}", "condition": c, "p0": (1.0 if c == "Ref" else 2.0) + (0.1 * w if spread else 0)}
                for c, n in (("Ref", n_ref), ("Exp", n_exp))
                for w in range(n)
            ]
        )

    assert np.isnan(rank_differences(table(1, 2), ["p0"], "Ref", "Exp").loc[0, "p_value"])
    assert np.isnan(rank_differences(table(2, 1), ["p0"], "Ref", "Exp").loc[0, "cohens_d"])
    two = rank_differences(table(2, 2), ["p0"], "Ref", "Exp").loc[0]  # an effect size, no test (< 3 a side)
    assert np.isnan(two["p_value"]) and np.isnan(two["q_value"]) and not np.isnan(two["cohens_d"])
    three = rank_differences(table(3, 3), ["p0"], "Ref", "Exp").loc[0]
    assert not np.isnan(three["p_value"]) and not np.isnan(three["cohens_d"])
    flat = rank_differences(table(3, 3, spread=False), ["p0"], "Ref", "Exp").loc[0]
    assert np.isnan(flat["cohens_d"]) and flat["difference"] == 1.0  # sd = 0: no effect size, not inf


def test_population_means_defaults_are_1000_resamples_with_seed_0():
    cells = _cells(3)
    default = population_means(cells, ["p0"], "Ref", "Exp")
    pd.testing.assert_frame_equal(default, population_means(cells, ["p0"], "Ref", "Exp", n_boot=1000, seed=0))
    assert not default.equals(population_means(cells, ["p0"], "Ref", "Exp", n_boot=1001, seed=0))
