"""score's screen statistics against hand computations and direct implementations: Z′, robust Z′,
SSMD and the signal window; the per-plate normalisation; the B-score against a direct median polish;
the trend and plate-effect checks; the hits' Welch test and Benjamini–Hochberg against by-hand values;
the per-well table written as Parquet and read back; the generator's plates and edge effect."""

import statistics

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from protocell.score.hits import hit_table, single_well, welch
from protocell.score.plates import (
    b_scores,
    control_stats,
    median_polish,
    normalise,
    plate_effects,
    plate_qc,
    scaled_mad,
    trends,
)


def test_z_prime_ssmd_and_signal_window_equal_the_hand_computed_values():
    pos, neg = [0.9, 1.0, 0.8], [0.1, 0.0, 0.2]
    s = control_stats(pos, neg)
    # means 0.9 and 0.1, SDs 0.1 and 0.1: Z′ = 1 − 3·0.2/0.8; SSMD = 0.8/√0.02; SW = (0.8 − 0.6)/0.1
    assert s["z_prime"] == pytest.approx(0.25)
    assert s["ssmd"] == pytest.approx(0.8 / np.sqrt(0.02))
    assert s["signal_window"] == pytest.approx(2.0)
    # medians 0.9 and 0.1, MAD 0.1 each, scaled by 1.4826
    assert s["robust_z_prime"] == pytest.approx(1 - 3 * 2 * 0.14826 / 0.8)
    assert s["verdict"] == "screenable" and (s["n_pos"], s["n_neg"]) == (3, 3)
    wide = control_stats([0.95, 1.0, 0.9, 0.97], [0.02, 0.0, 0.05, 0.01])
    assert wide["z_prime"] > 0.5 and wide["verdict"] == "excellent"
    # a falling readout (positive controls lower): the same |Z′|, SSMD negative, SW over the higher control's SD
    falling = control_stats(neg, pos)
    assert falling["z_prime"] == pytest.approx(0.25) and falling["ssmd"] == pytest.approx(-0.8 / np.sqrt(0.02))
    assert falling["signal_window"] == pytest.approx(2.0)
    overlap = control_stats([0.5, 0.7, 0.3], [0.4, 0.2, 0.6])
    assert overlap["z_prime"] < 0 and overlap["verdict"] == "not screenable"
    assert control_stats([1.0, 1.0], [0.0, 0.0])["z_prime"] == 1.0  # no spread: perfectly separated


def test_a_plate_without_controls_gets_no_controls_not_a_crash():
    controls = pd.DataFrame(
        {
            "plate": ["p1"] * 4 + ["p2"],
            "role": ["reference", "reference", "exposed", "exposed", "reference"],
            "f": [0.0, 0.1, 0.9, 1.0, 0.05],
        }
    )
    qc = plate_qc(controls, {"fraction": "f"}, ["p1", "p2", "p3"]).set_index("plate")
    assert qc.loc["p1", "verdict"] == "excellent" and qc.loc["p1", "z_prime"] == pytest.approx(
        1 - 3 * 2 * np.std([0.0, 0.1], ddof=1) / 0.9
    )
    assert qc.loc["p2", "verdict"] == "no controls" and np.isnan(qc.loc["p2", "z_prime"])
    assert qc.loc["p3", "verdict"] == "no controls" and qc.loc["p3", "n_pos"] == 0
    one = plate_qc(controls.iloc[[0, 2, 3]], {"fraction": "f"}, ["p1"]).iloc[0]
    assert one["verdict"].startswith("too few controls (1 reference, 2 exposed") and np.isnan(one["z_prime"])


def test_normalisation_to_each_plates_controls_by_hand():
    wells = pd.DataFrame(
        {
            "plate": ["a"] * 5 + ["b"] * 4 + ["c"],
            "role": [
                "reference",
                "reference",
                "exposed",
                "exposed",
                "scored",
                "reference",
                "reference",
                "exposed",
                "scored",
                "scored",
            ],
            "x": [0.1, 0.2, 0.6, 0.7, 0.4, 0.0, 0.2, 0.3, 0.5, 0.2],
        }
    )
    controls = wells[wells["role"] != "scored"]
    out = normalise(wells, controls, "x")
    # every plate's controls together: reference wells 0.1, 0.2, 0.0, 0.2 (median 0.15), exposed 0.6, 0.7, 0.3 (0.6)
    a = out.iloc[4]  # plate a: reference median 0.15, exposed 0.65, reference MAD 0.05 (×1.4826)
    assert a["percent_of_control"] == pytest.approx(100 * (0.4 - 0.15) / 0.5)
    assert a["robust_z"] == pytest.approx((0.4 - 0.15) / (1.4826 * 0.05))
    assert a["normalised_fraction"] == pytest.approx(0.15 + 0.5 * 0.45)
    b = out.iloc[8]  # plate b: reference median 0.1, exposed 0.3 (one well)
    assert b["percent_of_control"] == pytest.approx(200.0) and b["normalised_fraction"] == pytest.approx(
        0.15 + 2 * 0.45
    )
    # each plate's controls land on the common level: reference wells around 0.15, exposed around 0.6
    assert out.iloc[[0, 1]]["normalised_fraction"].mean() == pytest.approx(0.15)
    assert out.iloc[[2, 3]]["normalised_fraction"].mean() == pytest.approx(0.6)
    assert out.iloc[9][["percent_of_control", "robust_z", "normalised_fraction"]].isna().all()  # plate c: none
    # one plate: the normalised fraction is the value itself
    one = wells[wells["plate"] == "a"]
    assert np.allclose(normalise(one, one[one["role"] != "scored"], "x")["normalised_fraction"], one["x"])
    # anchored on the run's own plate a: plate a keeps its own scale (the fraction is defined there) and
    # plate b is put onto plate a's control levels (reference 0.15, exposed 0.65)
    anchored = normalise(wells, controls, "x", anchors=["a"])
    assert np.allclose(anchored.iloc[:5]["normalised_fraction"], wells.iloc[:5]["x"])
    assert anchored.iloc[8]["normalised_fraction"] == pytest.approx(0.15 + 2 * 0.5)
    assert anchored.iloc[[5, 6]]["normalised_fraction"].mean() == pytest.approx(0.15)
    assert np.allclose(
        normalise(wells, controls, "x", anchors=["c"])["normalised_fraction"],  # c has no controls
        out["normalised_fraction"],
        equal_nan=True,
    )


def _direct_median_polish(grid, max_iter=10, eps=0.01):
    """R's medpolish written out element by element (NaN: no well), for comparison."""
    z = [list(r) for r in grid]
    n_r, n_c = len(z), len(z[0])
    row, col, overall, old = [0.0] * n_r, [0.0] * n_c, 0.0, 0.0

    def med(values):
        v = [x for x in values if x == x]
        return statistics.median(v) if v else 0.0

    for _ in range(max_iter):
        for i in range(n_r):
            d = med(z[i])
            z[i] = [x - d for x in z[i]]
            row[i] += d
        d = med(col)
        col = [c - d for c in col]
        overall += d
        for j in range(n_c):
            d = med([z[i][j] for i in range(n_r)])
            for i in range(n_r):
                z[i][j] -= d
            col[j] += d
        d = med(row)
        row = [r - d for r in row]
        overall += d
        new = sum(abs(x) for r in z for x in r if x == x)
        if new == 0 or abs(new - old) < eps * new:
            break
        old = new
    return overall, np.array(row), np.array(col), np.array(z)


def test_median_polish_and_the_b_score_equal_a_direct_median_polish():
    rng = np.random.default_rng(0)
    grid = 0.3 + rng.normal(0, 0.05, (6, 10)) + np.linspace(-0.1, 0.1, 6)[:, None] + np.linspace(0, 0.2, 10)[None, :]
    grid[2, 3] = np.nan  # an empty position
    mine, direct = median_polish(grid), _direct_median_polish(grid)
    assert mine[0] == pytest.approx(direct[0], abs=1e-12)
    for a, b in zip(mine[1:], direct[1:]):
        assert np.allclose(a, b, atol=1e-12, equal_nan=True)
    additive = 1.0 + np.arange(4)[:, None] * 0.1 + np.arange(5)[None, :] * 0.01  # exactly row + column effects
    _, r, c, z = median_polish(additive)
    assert np.allclose(z, 0, atol=1e-12) and np.ptp(r) == pytest.approx(0.3) and np.ptp(c) == pytest.approx(0.04)
    # B-score of a plate: residuals of the polish of its scored wells over their scaled MAD (controls NaN)
    rows, cols = np.divmod(np.arange(60), 10)
    wells = pd.DataFrame({"plate": "p", "row": rows, "column": cols + 1, "role": "scored", "v": grid.ravel()})
    wells.loc[wells["column"] == 1, "role"] = "reference"
    b = b_scores(wells, "v")
    sub = grid[:, 1:].copy()
    _, _, _, resid = _direct_median_polish(sub)
    expect = resid / (
        1.4826
        * statistics.median(abs(x - statistics.median(resid[np.isfinite(resid)])) for x in resid[np.isfinite(resid)])
    )
    got = b[wells["role"] == "scored"].to_numpy().reshape(6, 9)
    assert np.allclose(got, expect, equal_nan=True, atol=1e-12)
    assert b[wells["role"] == "reference"].isna().all()


def _plate(edge_shift: float, seed: int = 0) -> pd.DataFrame:
    """An 8 × 12 plate: 16 treatments × 6 replicate wells laid out at random, values = treatment + noise,
    the outer ring shifted by ``edge_shift``."""
    rng = np.random.default_rng(seed)
    rows, cols = np.divmod(rng.permutation(96), 12)
    treatment = np.repeat(np.arange(16), 6)
    v = treatment * 0.05 + rng.normal(0, 0.02, 96)
    outer = (rows == 0) | (rows == 7) | (cols == 0) | (cols == 11)
    return pd.DataFrame(
        {
            "plate": "p",
            "well": [f"{chr(65 + r)}{c + 1:02d}" for r, c in zip(rows, cols)],
            "row": rows,
            "column": cols + 1,
            "treatment": treatment.astype(str),
            "n_cells": 100,
            "v": v + edge_shift * outer,
        }
    )


def test_the_trend_check_finds_an_edge_effect_and_passes_a_plate_without_one():
    dim = trends(_plate(-0.1), {"value": ("v", True)}).iloc[0]
    # residuals from the treatment median: a treatment with outer wells has its median pulled down too
    assert dim["flag"] and dim["p_value"] < 1e-6 and -0.1 < dim["outer_minus_inner"] < -0.04
    assert (dim["n_outer"], dim["n_inner"]) == (36, 60)
    flat = trends(_plate(0.0), {"value": ("v", True)}).iloc[0]
    assert not flat["flag"] and abs(flat["outer_minus_inner"]) < 0.02
    # against the plate's median instead (a measure that does not depend on the treatment: the brightness)
    plain = _plate(0.0).assign(v=1 + np.random.default_rng(1).normal(0, 0.02, 96))  # rows A and H dimmer
    ring = trends(plain.assign(v=plain["v"] - 0.1 * np.isin(plain["row"], [0, 7])), {"value": ("v", False)}).iloc[0]
    assert ring["flag"] and ring["row_effect_range"] == pytest.approx(0.1, abs=0.03)


def test_the_wells_of_a_ring_imaged_dimmer_say_so_and_no_other_well_does():
    """Before: the plate's trend row said its ring was dimmer, but each ring well's own flag was silent — on
    the built-in screen the wells read 0.07–0.22 low were flagged only as 'plate read differently'."""
    from protocell.score.screen import ring_flags

    wells = _plate(0.0).assign(flag="", plate="p")
    outer = np.isin(wells["row"], [0, 7]) | np.isin(wells["column"], [1, 12])
    dim = wells.assign(log2_intensity=np.where(outer, np.log2(0.7), 0.0) + np.random.default_rng(2).normal(0, 0.05, 96))
    flagged = ring_flags(dim.copy(), trends(dim, {"log2 intensity": ("log2_intensity", False)}))
    assert (flagged["flag"] != "").to_numpy().tolist() == outer.tolist()
    assert flagged.loc[outer, "flag"].str.contains(r"outer ring imaged at 0\.\d\d× the inner wells' brightness").all()
    assert flagged.loc[outer, "flag"].str.contains("may read low").all()
    even = wells.assign(log2_intensity=np.random.default_rng(2).normal(0, 0.05, 96))
    assert (ring_flags(even.copy(), trends(even, {"log2 intensity": ("log2_intensity", False)}))["flag"] == "").all()
    # a well flagged already keeps its flag, the ring's note added after it
    dim.loc[outer.argmax(), "flag"] = "plate read differently"
    both = ring_flags(dim.copy(), trends(dim, {"log2 intensity": ("log2_intensity", False)}))
    assert both.loc[outer.argmax(), "flag"].startswith("plate read differently; outer ring imaged at")
    # the fix it names (docs/score.md measures it), and that it was applied when it was
    assert (
        flagged.loc[outer, "flag"]
        .str.endswith("match_imaging=true reads it against the run's control cells imaged as the ring is")
        .all()
    )
    t = trends(dim, {"log2 intensity": ("log2_intensity", False)})
    read = ring_flags(dim.copy(), t, zones={"p ring": {"mapped": True}, "p inner": {"mapped": True}})
    assert read.loc[outer, "flag"].str.endswith("imaged as the ring is (match_imaging)").all()
    not_read = ring_flags(dim.copy(), t, zones={"p ring": {"mapped": False}})
    assert not not_read.loc[outer, "flag"].str.contains("match_imaging").any()  # its own flag says why


def test_the_plate_effect_check_is_a_kruskal_wallis_test_of_the_controls_across_plates():
    controls = pd.DataFrame(
        {"plate": ["p1"] * 4 + ["p2"] * 4, "role": "reference", "f": [0.05, 0.06, 0.04, 0.05, 0.15, 0.16, 0.14, 0.17]}
    )
    table = plate_effects(controls, "f")
    assert table["kruskal_p"].iloc[0] == pytest.approx(stats.kruskal(controls["f"][:4], controls["f"][4:]).pvalue)
    assert table["range_of_plate_medians"].iloc[0] == pytest.approx(0.155 - 0.05)
    assert table.set_index("plate").loc["p2", "mad"] == pytest.approx(scaled_mad([0.15, 0.16, 0.14, 0.17]))


def test_hits_are_welch_tests_over_wells_with_benjamini_hochberg_by_hand():
    a, b = np.array([0.5, 0.55, 0.6]), np.array([0.05, 0.1, 0.02, 0.08, 0.06])
    t, p = welch(a, b)
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert t == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    # one well against the reference wells: the t of a new observation, n − 1 degrees of freedom
    t1, p1 = single_well(0.3, b)
    t_hand = (0.3 - b.mean()) / (b.std(ddof=1) * np.sqrt(1 + 1 / 5))
    assert t1 == pytest.approx(t_hand) and p1 == pytest.approx(2 * stats.t.sf(t_hand, 4))
    ref_wells = [0.05, 0.1, 0.02, 0.08, 0.06, 0.04]
    values = {"A": [0.5, 0.55, 0.6], "B": [0.12, 0.15, 0.1], "C": [0.06, 0.04, 0.08], "D": [0.3]}
    wells = pd.DataFrame(
        [
            {"treatment": "Ref", "role": "reference", "compound": "", "dose": np.nan, "norm": v, "raw": v}
            for v in ref_wells
        ]
        + [
            {"treatment": k, "role": "scored", "compound": "X", "dose": float(i), "norm": v, "raw": v}
            for i, (k, vs) in enumerate(values.items())
            for v in vs
        ]
    )
    wells.loc[wells["treatment"] == "D", "norm"] = np.nan  # a well whose plate has no controls: the raw value
    hits = hit_table(wells, "norm", "raw", fdr=0.05).set_index("treatment")
    p = {k: (welch(v, ref_wells) if len(v) > 1 else single_well(v[0], ref_wells))[1] for k, v in values.items()}
    order = sorted(p, key=p.get)  # BH by hand: p·m/rank, then the running minimum
    q, running = {}, 1.0
    for rank in range(len(order), 0, -1):
        running = min(running, p[order[rank - 1]] * len(order) / rank)
        q[order[rank - 1]] = running
    for k in values:
        assert hits.loc[k, "p_value"] == pytest.approx(p[k]) and hits.loc[k, "q_value"] == pytest.approx(q[k])
        assert hits.loc[k, "hit"] == (q[k] < 0.05)
    assert hits.loc["A", "hit"] and not hits.loc["C", "hit"]
    assert hits.loc["D", "basis"] == "raw" and hits.loc["A", "basis"] == "norm"
    assert "Ref" not in hits.index and list(hits.index[:2]) == sorted(hits.index[:2], key=lambda k: q[k])


def test_the_well_table_is_written_as_csv_and_parquet_and_reads_back(tmp_path):
    from protocell.score.export import feature_name, well_export, write_well_table

    wells = pd.DataFrame(
        {
            "plate": ["p1", "p1"],
            "well": ["B03", "C11"],
            "row": [1, 2],
            "column": [3, 11],
            "condition": ["", "Ref"],
            "compound": ["X", ""],
            "dose": [0.5, np.nan],
            "treatment": ["X · 0.5", "Ref"],
            "role": ["scored", "reference"],
            "n_cells": [40, 0],
            "n_images": [1, 1],
            "flag": ["", "no cells"],
            "affected_fraction": [0.3, np.nan],
            "mean_p_affected": [0.35, np.nan],
            "score_shift": [1.2, np.nan],
            "dose_rank": [3, "n/a"],
        }
    )
    features = pd.DataFrame({"intensity": [0.4], "area": [800.0], "mean_gfp": [0.2]}, index=["p1/B03"])
    enrich = pd.DataFrame(
        {"level": "well", "plate": "p1", "well": "B03", "prototype": [0, 1], "difference": [0.5, -0.1]}
    )
    table = well_export(wells, features, enrich, extra=["dose_rank"])
    write_well_table(table, tmp_path)
    back = pd.read_parquet(tmp_path / "well_table.parquet")
    csv = pd.read_csv(tmp_path / "well_table.csv", keep_default_na=False, na_values=[""])
    assert list(back.columns) == list(csv.columns) == list(table.columns)
    assert list(back.columns[:4]) == ["Metadata_Plate", "Metadata_Well", "Metadata_Row", "Metadata_Column"]
    assert back["Metadata_Row"].tolist() == ["B", "C"] and back["Metadata_Dose"].iloc[0] == 0.5
    assert back["Metadata_dose_rank"].tolist() == ["3", "n/a"]  # a mixed plate-map column: text
    assert back["Metadata_Count_Cells"].tolist() == [40, 0] and back["Metadata_Compound"].iloc[0] == "X"
    assert back["Protocell_AffectedFraction"].iloc[0] == 0.3 and np.isnan(back["Protocell_ScoreShift"].iloc[1])
    assert back["Protocell_SimilarityShift_p1"].iloc[0] == -0.1 and np.isnan(
        back["Protocell_SimilarityShift_p0"].iloc[1]
    )
    assert back["Cells_AreaShape_Area"].iloc[0] == 800.0 and back["Cells_Intensity_MeanIntensity_gfp"].iloc[0] == 0.2
    assert (
        feature_name("intensity") == "Cells_Intensity_MeanIntensity_Stored"
        and feature_name("solidity") == "Cells_AreaShape_Solidity"
    )
    for col in back.columns:  # the CSV says the same
        if back[col].dtype.kind == "f":
            assert np.allclose(back[col], csv[col], equal_nan=True), col


def test_dose_response_fits_each_plate_on_its_own():
    from protocell.score.dose import dose_response, logistic4

    doses = np.repeat([0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30], 2)
    y = logistic4(np.log10(doses), 0.05, 0.7, np.log10(0.5), 1.0)
    wells = pd.concat(
        [
            pd.DataFrame({"plate": "p1", "compound": "C", "dose": doses, "y": y, "n_cells": 50}),
            pd.DataFrame({"plate": "p2", "compound": "C", "dose": doses, "y": y * 0.5, "n_cells": 50}),
        ]
    )
    fits = dose_response(wells, "y", n_boot=20, by_plate=True).set_index("plate")
    assert list(fits.index) == ["p1", "p2"] and fits["ec50"].to_numpy() == pytest.approx([0.5, 0.5], rel=1e-3)
    assert fits.loc["p2", "top"] == pytest.approx(0.35, abs=1e-3)
    assert dose_response(wells, "y", n_boot=5)["plate"].tolist() == [""]


# ----------------------------------------------------------------------------- the generator's plates

SMALL = dict(
    wells_per_condition=2,
    fields_per_well=1,
    field_size=160,
    cells_per_field=8,
    seed=4,
    dose_series={"doses": [0, 0.1, 10], "replicates": 1},
)


def test_plates_are_off_by_default_and_a_plate_at_no_effect_is_the_single_plate(tmp_path):
    from protocell.data.store import CropStore
    from protocell.data.synthetic import WellSpec, build_store

    plain = WellSpec(**SMALL)
    assert "plates" not in plain.as_dict() and plain.plates is None
    one = WellSpec(**SMALL, plates=[{"name": "plate1"}])
    assert one.plates == [{"name": "plate1", "gain": 1.0, "offset": 0.0, "edge": 0.0, "seed": 4}]
    assert one.key() != plain.key()
    a, b = CropStore(build_store(tmp_path, plain)), CropStore(build_store(tmp_path, one))
    assert a.manifest.drop(columns=["shard"]).equals(b.manifest.drop(columns=["shard"]))
    assert all(np.array_equal(a.crop(i), b.crop(i)) for i in range(len(a.manifest)))
    vehicle = a.manifest[a.manifest["dose"].astype(str) == "0.0"]
    assert len(vehicle) and (vehicle["true_fraction"] == 0.05).all()  # dose 0: the vehicle, fraction bottom
    with pytest.raises(ValueError, match="distinct names"):
        WellSpec(**SMALL, plates=[{"name": "p"}, {"name": "p"}])
    with pytest.raises(ValueError, match="gain > 0"):
        WellSpec(**SMALL, plates=[{"name": "p", "gain": 0}])


def test_a_second_plate_carries_its_gain_offset_and_edge_and_stands_alone(tmp_path):
    from dataclasses import replace

    from protocell.data.store import CropStore
    from protocell.data.synthetic import WellSpec, build_store

    spec = WellSpec(
        **SMALL,
        plates=[
            {"name": "plate1"},
            {"name": "dim", "gain": 0.5, "offset": 0.05, "edge": 0.4},
            {"name": "same", "seed": 5},
        ],
    )
    both = CropStore(build_store(tmp_path, spec))
    m = both.manifest
    assert (
        sorted(m["plate"].unique()) == ["dim", "plate1", "same"]
        and m["image_id"].str.startswith(tuple(m["plate"])).all()
    )
    # the plate "same" is plate "dim" without its effects (same seed 5): the same cells, dimmer with the effect
    d, s = m[m["plate"] == "dim"], m[m["plate"] == "same"]
    assert (
        d[["well", "centroid_y", "centroid_x", "true_label"]]
        .reset_index(drop=True)
        .equals(s[["well", "centroid_y", "centroid_x", "true_label"]].reset_index(drop=True))
    )

    def light(rows, well):
        r = rows[rows["well"] == well]
        return np.mean([float(both.crop(int(i))[0][both.mask(int(i)) > 0].mean()) for i in r.index]) - 100

    inner, outer = "B02", "A01"  # layout rows A..E, columns 1..3: B02 is the only inner control well
    assert light(d, inner) / light(s, inner) == pytest.approx(0.5 * (1 + 0.05 / 0.6), rel=0.25)
    assert (light(d, outer) / light(s, outer)) / (light(d, inner) / light(s, inner)) == pytest.approx(0.6, rel=0.25)
    # one plate of a multi-plate spec on its own is that plate, cell for cell (its seed spelt out)
    alone = CropStore(build_store(tmp_path, replace(spec, plates=[spec.plates[1]])))
    assert alone.manifest["centroid_x"].tolist() == d["centroid_x"].tolist()
    assert all(np.array_equal(alone.crop(i), both.crop(int(j))) for i, j in enumerate(d.index))


def test_a_plate_whose_reference_wells_read_differently_is_flagged():
    """Two-plate truth, trained on plate 1, seed 1: plate 2's reference wells read 0.24 against plate 1's
    0.09, and its dose wells' fractions were off by 0.11 on average with nothing on the page saying so."""
    from protocell.score.screen import plates_read_differently

    ctrl = pd.DataFrame(
        {
            "plate": ["p1"] * 8 + ["p2"] * 8 + ["p3"] * 8,
            "role": "reference",
            "untrained_fraction": [0.08, 0.09, 0.10, 0.07, 0.09, 0.11, 0.08, 0.10]
            + [0.22, 0.25, 0.24, 0.23, 0.26, 0.21, 0.24, 0.25]
            + [0.09, 0.10, 0.08, 0.12, 0.07, 0.09, 0.10, 0.11],
        }
    )
    wells = pd.DataFrame(
        {"plate": ["p1", "p2", "p2", "p3"], "well": ["C01", "C01", "C02", "C01"], "flag": ["", "", "few cells", ""]}
    )
    out, table = plates_read_differently(wells.copy(), ctrl, ["p1"])
    t = table.set_index("plate")
    assert list(t.index) == ["p2", "p3"] and bool(t.loc["p2", "flag"]) and not bool(t.loc["p3", "flag"])
    assert t.loc["p2", "difference"] == pytest.approx(0.24 - 0.09)
    assert out.loc[1, "flag"].startswith("plate read differently: its reference wells 0.24 vs 0.09")
    assert out.loc[2, "flag"].startswith("few cells; plate read differently")
    assert out.loc[0, "flag"] == "" and out.loc[3, "flag"] == ""
    assert plates_read_differently(wells.copy(), ctrl[ctrl["plate"] == "p1"], ["p1"])[1].empty  # one plate


def test_each_compounds_per_plate_curves_are_its_normalised_fraction_fits():
    """With several plates, every dosed compound's figure gets the per-plate fits of the normalised fraction
    — the second compound's once took the first compound's prototype fit (the list's last entry)."""
    from protocell.score.compute import dose_fits

    rng = np.random.default_rng(0)
    rows = []
    for plate in ("p1", "p2"):
        for compound, ec50 in (("A", 1.0), ("B", 3.0)):
            for dose in (0.1, 0.3, 1, 3, 10, 30):
                for rep in range(2):
                    f = 0.05 + 0.8 / (1 + (ec50 / dose) ** 2) + rng.normal(0, 0.01)
                    rows.append(
                        {
                            "plate": plate,
                            "well": f"{compound}{dose}{rep}",
                            "compound": compound,
                            "dose": dose,
                            "treatment": f"{compound}@{dose}",
                            "n_cells": 100,
                            "affected_fraction": f,
                            "normalised_fraction": f,
                        }
                    )
    wells = pd.DataFrame(rows)
    enrich = pd.DataFrame(
        [
            {"level": lvl, "treatment": t, "prototype": 0, "plate": p, "well": w, "difference": 0.1, "n_cells": 100}
            for lvl in ("treatment", "well")
            for t, p, w in wells[["treatment", "plate", "well"]].itertuples(index=False)
        ]
    )
    fits, curves = dose_fits(wells, enrich, ["Ref", "Exp"], n_boot=20, seed=0, min_cells=0, top=1)
    assert [c.label for c in curves] == ["A", "B"]
    for c in curves:
        assert set(c.plates) == {"p1", "p2"}
        assert all(v["measure"] == "normalised_fraction" and v["compound"] == c.label for v in c.plates.values())
    assert curves[1].plates["p1"]["ec50"] == pytest.approx(3.0, rel=0.3)
