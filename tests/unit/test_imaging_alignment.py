"""``data.level_imaging=auto`` (protocell.data.imaging_alignment): the wells' optics blur tested against their
condition, and levelling kept only when it lines up — large enough and beyond the wells' own spread."""

from __future__ import annotations

import json

import numpy as np

from protocell.config import DataConfig, broken_rule
from protocell.data.imaging_alignment import ALPHA, BLUR_FLOOR, lines_up
from tests.conftest import tiny_data


def _wells(shift: float, n: int = 8, spread: float = 0.05, seed: int = 0, channels: int = 2):
    """n exposed and n reference wells, σ² readings with ``spread`` among wells, the exposed ``shift`` apart."""
    rng = np.random.default_rng(seed)
    offsets, exposed = {}, {}
    for i in range(2 * n):
        key = f"plate1/W{i:02d}"
        exposed[key] = i >= n
        offsets[key] = rng.normal(0.0, spread, channels) + (shift if i >= n else 0.0)
    return offsets, exposed, {k: "plate1" for k in offsets}


def _test(offsets, exposed, plates, seed=0):
    return lines_up(offsets, exposed, plates, ["actin", "nuclei"], ("Ref", "Exp"), seed)


def test_wells_whose_blur_lines_up_with_the_condition_fire_and_say_how_much():
    got = _test(*_wells(0.3))
    assert got["fires"] and got["p"] < ALPHA
    assert got["channels"]["actin"]["auroc"] == 1.0
    assert 0.25 < got["channels"]["nuclei"]["exposed_minus_reference_px2"] < 0.35
    assert "lines up with the condition" in got["why"] and "Exp − Ref" in got["why"]
    json.dumps(got)  # metrics.json takes it as it is
    flipped = _test(*_wells(-0.3))  # the exposed wells sharper: the same verdict
    assert flipped["fires"] and flipped["channels"]["actin"]["exposed_minus_reference_px2"] < -0.25


def test_a_difference_within_the_wells_spread_or_below_the_floor_does_not_fire():
    # imaging independent of the condition: the p-value is uniform, so at most about ALPHA of plates fire
    fired = [_test(*_wells(0.0, spread=0.2, seed=s), seed=s)["fires"] for s in range(40)]
    assert sum(fired) <= 4
    # a consistent difference far beyond the spread, but smaller than the floor (what biology does to the
    # reading on plates imaged alike): significant, not levelled, and the verdict says which of the two failed
    small = _test(*_wells(BLUR_FLOOR / 2, spread=0.005))
    assert small["p"] < ALPHA and not small["fires"] and "smallest difference" in small["why"]
    # a large difference in one channel only (a change of texture the biology makes, not the optics, which blur
    # every channel of a field), or in opposite directions: not the camera
    offsets, exposed, plates = _wells(0.0, spread=0.005)
    for shift in ((0.3, 0.0), (0.3, -0.3)):
        moved = {k: v + np.array(shift) * exposed[k] for k, v in offsets.items()}
        one = _test(moved, exposed, plates)
        assert one["p"] < ALPHA and not one["fires"] and "smallest difference over the channels" in one["why"]
    wide = _test(*_wells(0.2, n=3, spread=0.3))
    assert not wide["fires"] and f"≥ {ALPHA}" in wide["why"]


def test_the_permutation_stays_within_each_plate():
    """Two plates, the exposed wells all on the blurrier one: across plates the blur separates the conditions,
    within each plate it does not — a plate difference is no condition difference."""
    offsets, exposed, plates = {}, {}, {}
    rng = np.random.default_rng(3)
    for p, (share, base) in enumerate(((0.75, 0.3), (0.25, 0.0))):
        for i in range(8):
            key = f"plate{p}/W{i:02d}"
            exposed[key], plates[key] = i < 8 * share, f"plate{p}"
            offsets[key] = base + rng.normal(0.0, 0.05, 2)
    got = _test(offsets, exposed, plates)
    assert not got["fires"] and got["p"] > ALPHA


def test_one_condition_only_is_said_not_tested():
    offsets, exposed, plates = _wells(0.3)
    got = _test(offsets, {k: True for k in exposed}, plates)
    assert got == {"fires": False, "p": None, "why": got["why"]} and "one condition" in got["why"]


def test_the_schema_takes_true_false_and_auto_only():
    assert broken_rule(DataConfig, {"level_imaging": "auto"}) is None
    assert broken_rule(DataConfig, {"level_imaging": True}) is None
    broken = broken_rule(DataConfig, {"level_imaging": "yes"})
    assert broken is not None and broken[0] == "level_imaging" and "auto" in broken[2]
    assert broken_rule(DataConfig, {"level_imaging": 1}) is not None


def test_the_datamodule_levels_a_plate_whose_blur_lines_up_and_leaves_one_imaged_alike(blurry, tiny_store):
    dm = tiny_data(blurry[0], normalize="cell", level_imaging="auto", zero_background=True, seed=0)
    dm.setup()
    assert dm.imaging_alignment["fires"] and dm.levelling is not None
    assert set(dm.imaging_alignment["channels"]) == set(dm.store.channels)
    alike = tiny_data(tiny_store, normalize="cell", level_imaging="auto", zero_background=True, seed=0)
    alike.setup()
    assert alike.imaging_alignment is not None and not alike.imaging_alignment["fires"]
    assert alike.levelling is None  # the cells as stored: the same crops as data.level_imaging=false
    plain = tiny_data(tiny_store, normalize="cell", level_imaging=False, zero_background=True, seed=0)
    plain.setup()
    assert plain.imaging_alignment is None
    a, b = alike.dataset("test")[0][0], plain.dataset("test")[0][0]
    assert np.array_equal(a.numpy(), b.numpy())


def test_with_another_normalisation_a_test_that_fires_is_said_not_levelled_and_the_fix_levels(blurry):
    dm = tiny_data(blurry[0], normalize="dataset", level_imaging="auto", zero_background=True, seed=0)
    dm.setup()
    said = dm.imaging_alignment
    assert said["fires"] and said["levelled"] is False and dm.levelling is None
    assert "set data.normalize=cell" in said["why"] and "(this run: dataset)" in said["why"]
    fixed = tiny_data(blurry[0], normalize="cell", level_imaging="auto", zero_background=True, seed=0)
    fixed.setup()
    assert fixed.imaging_alignment["levelled"] is True and fixed.levelling is not None
