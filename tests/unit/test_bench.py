"""The benchmark harness reports the figures its timings imply (no timing assertions: speed targets
live in `make bench`, never in tests). The clocks are replaced by fixed times, so every reported
figure is checked exactly against the counts and times it is made of."""

import itertools

import pytest

import protocell.bench.__main__ as bench
from protocell.bench.__main__ import bench_train_step, table


def test_train_step_bench_reports_every_phase_and_the_overhead_ratio(monkeypatch):
    times = {"bare": 0.5, "joint": 2.0, "warm": 1.0, "last_layer": 0.25, "pretrain": 0.8}
    ran = {}

    def interleaved(steps, repeats):
        for name, step in steps.items():       # every step really runs once (a broken step fails here)
            step()
            ran[name] = True
        return {k: times[k] for k in steps}

    monkeypatch.setattr(bench, "timed_interleaved", interleaved)
    monkeypatch.setattr(bench, "timed", lambda fn, repeats: (fn(), 0.1)[1])
    res = bench_train_step("vgg11_narrow", 64, 8, repeats=1)
    assert set(ran) == set(times)
    for phase, t in times.items():
        assert res[f"{phase}_cells_per_s"] == 8 / t
    assert res["joint_over_bare"] == (8 / 2.0) / (8 / 0.5) == 0.25
    assert res["prototype_head_share_of_joint_step"] == pytest.approx(0.1 / 2.0)
    md = table({"machine": {"cpu": "x", "cores": 2, "threads": 1, "torch": "t"}, "train": res})
    assert "| train | joint_over_bare |" in md and "0.25" in md


def test_data_push_inference_bench_uses_the_default_data_handling_and_reports_both_epochs(monkeypatch):
    from protocell.bench.__main__ import bench_data_push_inference

    clock = itertools.chain([100.0, 104.0], itertools.repeat(104.0))    # the first epoch: 4 s
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(clock))
    fixed = iter([2.0, 0.5, 1.5])                      # data pass, inference, push
    monkeypatch.setattr(bench, "timed", lambda fn, repeats: (fn(), next(fixed))[1])
    res = bench_data_push_inference(1, repeats=1)
    n_train, n_push = res["cells_train"], res["cells_push"]
    assert 0 < n_push <= n_train                       # push: the training originals
    assert res["data_path_first_epoch_cells_per_s"] == n_train / 4.0
    assert res["data_path_cells_per_s"] == n_train / 2.0
    assert res["inference_cells_per_s"] == n_push / 0.5
    assert res["push_seconds"] == 1.5 and res["push_over_inference"] == 3.0


def test_score_bench_reports_both_rates_and_a_peak_rss_per_store_size():
    from protocell.bench.__main__ import bench_score

    res = bench_score(1)
    assert res["cells"] > 0 and res["store_mb"] > 0
    assert res["pass_cells_per_s"] > 0 and 0 < res["whole_cells_per_s"] <= res["pass_cells_per_s"]
