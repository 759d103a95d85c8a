"""score's statistics against hand computations and brute force: the vectorised EM and its
bootstraps, CI coverage on a known binomial, the dose–response fit, prototype enrichment."""

import numpy as np
import pandas as pd
import pytest

from protocell.fraction import (bootstrap_cells, bootstrap_wells, likelihood_ratio, mixture_fraction,
                                mixture_fractions, well_fractions)


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
    replay = np.random.default_rng(7).integers(0, 3, (6, 3))      # the wells each resample drew
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
    # the likelihood ratio from a calibrated posterior divides out its prior
    assert likelihood_ratio([0.5], 0.2)[0] == pytest.approx(4.0)
