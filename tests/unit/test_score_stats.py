"""score's statistics against hand computations and brute force: the vectorised EM and its
bootstraps, CI coverage on a known binomial, the dose–response fit, prototype enrichment."""

import numpy as np
import pandas as pd
import pytest

from protocell.evaluate.fraction import bootstrap_wells, mixture_fraction, mixture_fractions, well_fractions


def test_weighted_em_equals_the_one_sample_em_on_the_repeated_cells():
    rng = np.random.default_rng(0)
    lr = np.exp(rng.normal(0, 2, 40))
    counts = rng.multinomial(40, np.full(40, 1 / 40), size=5)
    got = mixture_fractions(lr, counts)
    for b in range(5):
        assert got[b] == pytest.approx(mixture_fraction(np.repeat(lr, counts[b])), abs=1e-8)
    assert mixture_fractions(lr)[0] == pytest.approx(mixture_fraction(lr), abs=1e-12)
    assert np.isnan(mixture_fractions(lr, np.zeros((1, 40)))[0])


def test_well_bootstrap_pools_the_drawn_wells_cells_with_repetition():
    rng = np.random.default_rng(1)
    lr = np.exp(rng.normal(0, 2, 30))
    well = np.repeat(["a", "b", "c"], [5, 10, 15])
    boots = bootstrap_wells(lr, well, 6, np.random.default_rng(7))
    replay = np.random.default_rng(7).integers(0, 3, (6, 3))  # the wells each resample drew
    for b in range(6):
        pooled = np.concatenate([lr[well == "abc"[k]] for k in replay[b]])
        assert boots[b] == pytest.approx(mixture_fraction(pooled), abs=1e-8)


def test_bootstrap_ci_over_cells_covers_a_known_binomial_fraction():
    """Wells of 150 cells, each affected with probability p; scores ~ N(±1, 1), so the likelihood
    ratio is exactly exp(2s). The 95 % bootstrap-over-cells CI of the estimated fraction must cover
    p in about 95 % of 200 wells (binomial sampling and the classifier's overlap both inside it)."""
    rng = np.random.default_rng(0)
    rows, truth = [], {}
    for w in range(200):
        p = rng.uniform(0.05, 0.7)
        affected = rng.random(150) < p
        s = rng.normal(np.where(affected, 1.0, -1.0), 1.0)
        truth[f"w{w:03d}"] = p
        rows.append(pd.DataFrame({"well": f"w{w:03d}", "lr": np.exp(2 * s)}))
    wells = well_fractions(pd.concat(rows), n_boot=200, seed=1).set_index("well")
    p = pd.Series(truth)
    covered = ((wells["ci_low"] <= p) & (p <= wells["ci_high"])).mean()
    assert 0.89 <= covered <= 0.99, covered
    assert (wells["affected_fraction"] - p).abs().mean() < 0.08


def test_logistic_fit_recovers_the_ec50_of_noiseless_and_of_noisy_points():
    from protocell.score.dose import bootstrap_fit, fit_logistic, logistic4

    doses = np.array([0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30])
    y = logistic4(np.log10(doses), 0.05, 0.7, np.log10(0.5), 1.0)
    # by hand at the EC50: half way; one decade above it, hill 1: bottom + span · 10/11
    assert logistic4(np.log10(0.5), 0.05, 0.7, np.log10(0.5), 1.0) == pytest.approx(0.375)
    assert logistic4(np.log10(5.0), 0.05, 0.7, np.log10(0.5), 1.0) == pytest.approx(0.05 + 0.65 * 10 / 11)
    from protocell.score.dose import _jacobian  # the hand derivatives against finite differences

    p0, x0, h = np.array([0.1, 0.8, -0.2, 1.3]), np.log10(doses), 1e-6
    numeric = np.stack([(logistic4(x0, *(p0 + h * e)) - logistic4(x0, *(p0 - h * e))) / (2 * h) for e in np.eye(4)], 1)
    assert np.allclose(_jacobian(p0, x0), numeric, atol=1e-6)
    fit = fit_logistic(doses, y)
    assert fit["ok"] and fit["ec50"] == pytest.approx(0.5, rel=1e-4) and fit["hill"] == pytest.approx(1.0, rel=1e-3)
    assert fit["bottom"] == pytest.approx(0.05, abs=1e-4) and fit["r2"] == pytest.approx(1.0)
    falling = fit_logistic(doses, 1 - y)  # a falling curve: top below bottom, same EC50
    assert falling["ec50"] == pytest.approx(0.5, rel=1e-4) and falling["top"] < falling["bottom"]
    # 3 replicate wells per dose, noise of a well's estimated fraction (sd 0.04): the EC50 within 1.5×,
    # and its bootstrap-over-wells CI covers the truth
    rng = np.random.default_rng(0)
    hits = 0
    for _trial in range(8):
        d = np.repeat(doses, 3)
        yn = logistic4(np.log10(d), 0.05, 0.7, np.log10(0.5), 1.0) + rng.normal(0, 0.04, len(d))
        fit = fit_logistic(d, yn)
        assert fit["ok"] and 1 / 1.5 < fit["ec50"] / 0.5 < 1.5
        b = bootstrap_fit(d, yn, fit, 100, rng)
        assert b["ec50_ci_low"] <= fit["ec50"] <= b["ec50_ci_high"]
        hits += b["ec50_ci_low"] <= 0.5 <= b["ec50_ci_high"]
    assert hits >= 6
    assert not fit_logistic([1, 2, 3], [0, 1, 2])["ok"] and "≥ 4" in fit_logistic([1, 2, 3], [0, 1, 2])["message"]


def test_dose_response_fits_each_compound_and_skips_wells_without_a_dose():
    from protocell.score.dose import dose_response, logistic4

    doses = [0.1, 1, 10, 100, 1000]
    rows = [
        {"compound": c, "dose": d, "y": logistic4(np.log10(d), 0, 1, np.log10(e), 1.5)}
        for c, e in (("A", 3.0), ("B", 300.0))
        for d in doses
        for _ in range(2)
    ]
    rows += [{"compound": "A", "dose": 0.0, "y": 0.0}, {"compound": "", "dose": np.nan, "y": 0.5}]
    out = dose_response(pd.DataFrame(rows), "y", n_boot=20).set_index("compound")
    assert list(out.index) == ["A", "B"] and out.loc["A", "n_vehicle"] == 1 and out.loc["A", "n_wells"] == 11
    assert out.loc["A", "ec50"] == pytest.approx(3.0, rel=1e-3) and out.loc["B", "ec50"] == pytest.approx(300, rel=1e-3)
    assert out["ec50_in_range"].all() and (out["n_boot"] == 20).all()


def _wells_and_cells(seed=0, P=3):
    """Two reference wells and two replicate wells of one treatment, plus a well of its own."""
    rng = np.random.default_rng(seed)
    spec = [
        ("A01", "Ref", "Ref", 0.0),
        ("A02", "Ref", "Ref", 0.0),
        ("C01", "", "C1 · 1", 0.4),
        ("C02", "", "C1 · 1", 0.4),
        ("C03", "", "C1 · 10", 0.9),
    ]
    wells = pd.DataFrame(
        [
            {
                "plate": "p1",
                "well": w,
                "condition": c,
                "treatment": t,
                "compound": "C1" if not c else "",
                "dose": np.nan,
            }
            for w, c, t, _ in spec
        ]
    )
    cells = []
    for w, c, _t, shift in spec:
        n = int(rng.integers(8, 20))
        sims = rng.normal(1.0, 0.3, (n, P))
        sims[:, 0] += shift
        cells.append(
            pd.DataFrame({"plate": "p1", "well": w, "condition": c, **{f"sim_p{j}": sims[:, j] for j in range(P)}})
        )
    return wells, pd.concat(cells, ignore_index=True)


def test_enrichment_equals_a_direct_loop_and_its_ci_brackets_the_difference():
    from protocell.score.tables import enrichment

    wells, cells = _wells_and_cells()
    reference = cells[cells["condition"] == "Ref"]
    out = enrichment(cells, wells, reference, ["Ref", "Exp", "Exp"], n_boot=300, seed=0)
    P = 3
    ref_mean = [sum(r[f"sim_p{j}"] for _, r in reference.iterrows()) / len(reference) for j in range(P)]
    for _, row in out.iterrows():
        if row["level"] == "well":
            members = [r for _, r in cells.iterrows() if r["well"] == row["well"]]
        else:
            names = set(wells.loc[wells["treatment"] == row["treatment"], "well"])
            members = [r for _, r in cells.iterrows() if r["well"] in names]
        j = row["prototype"]
        mean = sum(r[f"sim_p{j}"] for r in members) / len(members)
        assert row["n_cells"] == len(members)
        assert row["mean_similarity"] == pytest.approx(mean) and row["reference_mean"] == pytest.approx(ref_mean[j])
        assert row["difference"] == pytest.approx(mean - ref_mean[j])
        if np.isfinite(row["ci_low"]):
            assert row["ci_low"] <= row["difference"] <= row["ci_high"]
    t = out[(out["level"] == "treatment")].set_index(["treatment", "prototype"])
    assert t.loc[("C1 · 1", 0), "ci_low"] > 0 and t.loc[("C1 · 1", 0), "n_wells"] == 2  # the planted shift, over wells
    assert np.isnan(t.loc[("C1 · 10", 0), "ci_low"])  # one well: no CI over wells
    assert out.loc[(out["level"] == "well") & (out["well"] == "C03") & (out["prototype"] == 0), "ci_low"].iloc[0] > 0


def test_top_prototypes_rank_the_largest_treatment_difference():
    from protocell.score.tables import enrichment, top_prototypes

    wells, cells = _wells_and_cells(P=4)
    cells["sim_p2"] -= np.where(cells["well"] == "C03", 2.0, 0.0)  # p2 falls hard in one treatment
    out = enrichment(cells, wells, cells[cells["condition"] == "Ref"], ["Ref"] * 4, n_boot=10)
    assert top_prototypes(out, ["C1 · 1", "C1 · 10"], 2) == [2, 0]
    assert top_prototypes(out, ["nothing"], 2) == []


def test_well_names_parse_to_plate_positions_and_doses_must_be_numbers():
    from protocell.data.plate_map import PlateMapError, parse_doses
    from protocell.plate import parse_well, treatment_name

    assert parse_well("B07") == (1, 7) and parse_well("b7") == (1, 7) and parse_well("P24") == (15, 24)
    assert parse_well("AF48") == (31, 48) and parse_well("AA01") == (26, 1)
    assert parse_well("well 3") is None and parse_well("A") is None
    idx = pd.MultiIndex.from_tuples([("p", "A01"), ("p", "A02"), ("p", "A03"), ("p", "A04")])
    doses = parse_doses(pd.Series(["0.1", "", "1e-3", "nan"], index=idx), "plate_map.csv")
    assert doses.iloc[0] == 0.1 and np.isnan(doses.iloc[1]) and doses.iloc[2] == 1e-3 and np.isnan(doses.iloc[3])
    with pytest.raises(PlateMapError, match=r"plate_map.csv: dose must be a number.*well\(s\) p/A02 \('high'\)"):
        parse_doses(pd.Series(["1", "high", "2", "3"], index=idx), "plate_map.csv")
    with pytest.raises(PlateMapError, match="≥ 0"):
        parse_doses(pd.Series(["1", "-2", "2", "3"], index=idx), "plate_map.csv")
    assert treatment_name("", "C1", 0.3) == "C1 · 0.3" and treatment_name("Ref", "", np.nan) == "Ref"


def test_the_fraction_is_biased_when_a_wells_unaffected_cells_do_not_look_like_the_reference():
    """What the estimator assumes, shown. The reference is fitted on control wells (10 % of Ref, 50 %
    of Exp cells affected; logit scores ~ N(2.5, 1) affected, N(−0.5, 1) not). A scored well has 20 %
    affected cells; when its *unaffected* cells score δ higher in logit (a gain, focus or density
    change the network reads), the estimate moves with δ although no more cells are affected: up
    for δ > 0, down for δ < 0."""
    from protocell.evaluate.fraction import fit_reference, reference_lr

    rng = np.random.default_rng(0)

    def scores(n, rho, shift=0.0):
        aff = rng.random(n) < rho
        return 1 / (1 + np.exp(-np.where(aff, rng.normal(2.5, 1, n), rng.normal(-0.5 + shift, 1, n))))

    s = np.concatenate([scores(4000, 0.1), scores(4000, 0.5)])
    fit = fit_reference(s, np.arange(8000) >= 4000)
    assert fit["ok"]

    def estimate(shift):
        return mixture_fraction(reference_lr(scores(3000, 0.2, shift), fit))

    bias = {d: estimate(d) - 0.2 for d in (-1.0, 0.0, 0.5, 1.0)}
    assert abs(bias[0.0]) < 0.03  # the assumption holds: on target
    assert bias[0.5] > 0.04 and bias[1.0] > 0.1  # exposed-looking unaffected cells: over-estimated
    assert bias[-1.0] < -0.01  # the other way: under-estimated
    assert bias[-1.0] < bias[0.0] < bias[0.5] < bias[1.0]


def test_an_infinite_dose_is_refused_by_score_too():
    """Before, ``inf`` (and 1e400, which reads as inf) passed score's dose check (issue 25 / 23.7)."""
    from protocell.data.plate_map import PlateMapError, parse_doses

    idx = pd.MultiIndex.from_tuples([("p", "A01"), ("p", "A02")])
    for bad in ("inf", "1e400", "-inf", "Infinity"):
        with pytest.raises(PlateMapError, match=rf"finite .* p/A02 \('{bad}'\)"):
            parse_doses(pd.Series(["1", bad], index=idx), "manifest.csv")
