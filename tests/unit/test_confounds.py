"""The confound report: per-well features, AUROC over wells against a direct count, flags only for
features that are not biology."""

import numpy as np
import pandas as pd
import pytest

from protocell.prepare.confounds import FLAG_AUROC, auroc, confound_table, separation, summary_lines, well_features


def _manifest(area_ref, area_exp, gfp_ref, gfp_exp, cells=5, seed=0):
    """Wells of ``cells`` cells each; one value per well of area and mean_gfp (cells scattered ±1 around it)."""
    rng = np.random.default_rng(seed)
    rows = []
    for cond, areas, gfps in (("untreated", area_ref, gfp_ref), ("treated", area_exp, gfp_exp)):
        for w, (a, g) in enumerate(zip(areas, gfps)):
            for _i in range(cells):
                rows.append(
                    {
                        "plate": "P",
                        "well": f"{cond[0]}{w}",
                        "image_id": f"{cond}{w}",
                        "condition": cond,
                        "aug_of": -1,
                        "area": a + rng.uniform(-1, 1),
                        "eccentricity": 0.5,
                        "solidity": 0.9,
                        "mean_gfp": g + rng.uniform(-0.01, 0.01),
                    }
                )
    return pd.DataFrame(rows)


def test_auroc_counts_pairs_and_ties():
    assert auroc([1, 2], [3, 4]) == 1.0 and auroc([3, 4], [1, 2]) == 0.0
    assert auroc([1, 2], [2, 3]) == pytest.approx((3 + 0.5) / 4)  # 2>1, 3>1, 3>2, one tie
    assert np.isnan(auroc([], [1]))


def test_separation_strength_and_ci():
    s = separation([1, 2, 3], [4, 5, 6], n_boot=200)
    assert s["auroc"] == 1.0 and s["strength"] == 1.0 and s["ci_low"] <= 1.0
    s = separation([4, 5, 6], [1, 2, 3], n_boot=200)  # direction kept, strength symmetric
    assert s["auroc"] == 0.0 and s["strength"] == 1.0
    s = separation([1.0], [2.0])  # one well a side: no CI
    assert np.isnan(s["ci_low"]) and np.isnan(s["ci_high"])


def test_well_features_average_cells_per_well_and_skip_augmented_and_unlabelled_cells():
    m = _manifest([100, 110], [50, 60], [0.2, 0.3], [0.8, 0.9])
    extra = m.iloc[:3].assign(aug_of=0, area=1e6)  # augmented copies: not counted
    unlabelled = m.iloc[:3].assign(condition="", well="X9", area=1e6)  # scoring-only wells: not counted
    w = well_features(pd.concat([m, extra, unlabelled], ignore_index=True))
    assert len(w) == 4 and "P/X9" not in w.index
    direct = m.groupby(m["plate"] + "/" + m["well"])["area"].mean()
    assert np.allclose(w.loc[direct.index, "area"], direct)
    assert (w["cells_per_field"] == 5).all()


def test_a_mask_that_follows_the_condition_is_flagged_and_the_biology_is_not():
    m = _manifest(
        area_ref=[500, 520, 540], area_exp=[250, 260, 270], gfp_ref=[0.2, 0.25, 0.3], gfp_exp=[0.8, 0.85, 0.9]
    )
    images = pd.DataFrame(
        {
            "plate": "P",
            "well": ["u0", "u1", "u2", "t0", "t1", "t2"],
            "background_gfp": [0.01, 0.02, 0.03, 0.015, 0.025, 0.02],
        }
    )
    t = confound_table(m, images, ["untreated", "treated"], n_boot=200).set_index("feature")
    assert t.loc["area", "auroc"] == 0.0 and t.loc["area", "strength"] == 1.0 and t.loc["area", "flag"]
    assert t.loc["mean_gfp", "auroc"] == 1.0 and t.loc["mean_gfp", "biology"] and not t.loc["mean_gfp", "flag"]
    # background: per-well means 0.01–0.03 against 0.015–0.025 — overlapping, not flagged
    bg = t.loc["background_gfp"]
    assert not bg["biology"] and bg["strength"] <= FLAG_AUROC and not bg["flag"]
    assert t.loc["area", "mean_untreated"] == pytest.approx(520, abs=1)
    text = "\n".join(summary_lines(t.reset_index()))
    assert "area" in text and "FLAG" in text.split("area")[1].split("\n")[0]


def test_one_condition_gives_no_table():
    m = _manifest([1, 2], [3, 4], [0.1, 0.2], [0.3, 0.4])
    assert confound_table(m[m["condition"] == "treated"]).empty
