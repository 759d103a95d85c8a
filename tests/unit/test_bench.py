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
        for name, step in steps.items():  # every step really runs once (a broken step fails here)
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

    clock = itertools.chain([100.0, 104.0], itertools.repeat(104.0))  # the first epoch: 4 s
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(clock))
    fixed = iter([2.0, 0.5, 1.5])  # data pass, inference, push
    monkeypatch.setattr(bench, "timed", lambda fn, repeats: (fn(), next(fixed))[1])
    res = bench_data_push_inference(1, repeats=1)
    n_train, n_push = res["cells_epoch"], res["cells_push"]  # an epoch's cells: passes × training cells
    assert 0 < n_push <= res["cells_train"] <= n_train  # push: the training originals
    assert res["data_path_first_epoch_cells_per_s"] == n_train / 4.0
    assert res["data_path_cells_per_s"] == n_train / 2.0
    assert res["inference_cells_per_s"] == n_push / 0.5
    assert res["push_seconds"] == 1.5 and res["push_over_inference"] == 3.0


def test_score_bench_reports_both_rates_and_a_peak_rss_per_store_size():
    from protocell.bench.__main__ import bench_score

    res = bench_score(1)
    assert res["cells"] > 0 and res["store_mb"] > 0
    assert res["pass_cells_per_s"] > 0 and 0 < res["whole_cells_per_s"] <= res["pass_cells_per_s"]


def test_the_scale_figures_and_the_screen_arithmetic_follow_from_the_measured_times(tmp_path):
    """protocell.bench.scale: speedups, efficiencies and the screen's hours, memory and disk, from fixed
    measurements (a plate of 100 images, 1 MPix each, 30,000 cells)."""
    from protocell.bench.scale_figures import figures, screen

    (tmp_path / "fields").mkdir()
    (tmp_path / "fields" / "a.tif").write_bytes(b"x" * 2_000_000)  # 2 MB of raw images
    task = lambda s, rss: {"seconds": s, "peak_rss_mb": rss}  # noqa: E731
    merge = lambda s, rss, cells: {"merge": task(s, rss), "cells": cells}  # noqa: E731
    p = {
        "one_task": {
            "seconds": 200.0,
            "peak_rss_mb": 900.0,
            "cells": 30000,
            "augmented": 5000,
            "images": 100,
            "megapixels": 100.0,
            "store_mb": 1000.0,
        },
        "one_task_two_workers": task(110.0, 300.0),
        "two_tasks": {"seconds": 95.0, "tasks": [task(90.0, 250.0), task(94.0, 260.0)], **merge(10.0, 900.0, 30000)},
        "quarter_two_tasks": {
            "seconds": 25.0,
            "tasks": [task(22.0, 245.0), task(23.0, 250.0)],
            **merge(4.0, 840.0, 7500),
        },
        "identical_to_one_task": True,
    }
    s = {
        "one_task": {"seconds": 60.0, "peak_rss_mb": 1100.0, "cells": 30000},
        "two_tasks": {"seconds": 30.0, "tasks": [task(25.0, 1050.0), task(26.0, 1060.0)], **merge(15.0, 1200.0, 30000)},
        "quarter_two_tasks": {
            "seconds": 10.0,
            "tasks": [task(6.0, 1040.0), task(6.0, 1040.0)],
            **merge(11.0, 1100.0, 7500),
        },
        "identical_to_one_task": True,
    }
    f = figures(p, s, tmp_path)
    assert f["prepare_mpix_per_s_per_core"] == 0.5 and f["prepare_2tasks_mpix_per_s"] == 100 / 95
    assert f["prepare_2tasks_speedup"] == (200 - 10) / 95 and f["prepare_2tasks_scaling_efficiency"] == 1.0
    assert f["prepare_2tasks_with_merge_speedup"] == 200 / 105
    assert f["score_1task_cells_per_s"] == 500 and f["score_2tasks_speedup"] == (60 - 15) / 30
    assert f["prepare_task_peak_rss_mb_quarter_plate"] == [245.0, 250.0] and f["raw_mb"] == 2.0
    assert f["prepare_merge_seconds_line"] == pytest.approx((2.0, 6 / 22500))  # 4 s at 7,500 cells, 10 s at 30,000
    at = screen(f, plates=2, nodes=1, cores=10, wells=10, fields=10)  # 200 images, 60,000 cells
    assert at["prepare_tasks_hours"] == pytest.approx(200 * 1.0 / (100 / 95 / 2 * 10) / 3600)
    assert at["score_tasks_hours"] == pytest.approx(60000 / (30000 / 30 / 2 * 10) / 3600)
    assert at["prepare_merge_hours"] == pytest.approx(2 * (2.0 + 30000 * 6 / 22500) / 3600)  # 2 plates on 1 node
    assert at["node_gb_score"] == pytest.approx(10 * 1060 / 1024)
    assert at["raw_tb"] == pytest.approx(2.0 / 100 * 200 / 1e6) and at["stores_tb"] == pytest.approx(
        1000 / 30000 * 60000 / 1e6
    )


def test_a_bench_stopped_mid_way_keeps_the_stages_it_finished(monkeypatch, tmp_path):
    """bench.json/bench.md are written after every stage: a bench that fails (or is killed) at prepare
    still holds the training, data, push and score figures, marked incomplete; a finished one is complete."""
    import json

    import torch

    threads = torch.get_num_threads()  # main sets them; the test's worker keeps its own
    monkeypatch.setattr(bench, "OUT", tmp_path)
    monkeypatch.setattr(bench, "bench_train_step", lambda *a, **k: {"joint_cells_per_s": 10.0})
    monkeypatch.setattr(bench, "bench_data_push_inference", lambda *a: {"push_seconds": 1.5})
    monkeypatch.setattr(bench, "push_peak_rss", lambda n: 100.0 * n)
    one = {"cells": 5, "store_mb": 1.0, "pass_cells_per_s": 9.0, "whole_cells_per_s": 8.0, "peak_rss_mb": 50.0}
    monkeypatch.setattr(bench, "score_peak_rss", lambda n: one)

    def stopped(quick):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "prepare_run", stopped)
    with pytest.raises(KeyboardInterrupt):
        bench.main(["--quick", "--threads", "1"])
    partial = json.loads((tmp_path / "bench.json").read_text())
    assert partial["complete"] is False and "prepare" not in partial
    assert (
        partial["train_default"] == {"joint_cells_per_s": 10.0} and partial["push_memory"]["peak_rss_mb_large"] == 800.0
    )
    md = (tmp_path / "bench.md").read_text()
    assert md.startswith("Partial") and "| score | whole_cells_per_s | 8 |" in md
    monkeypatch.setattr(bench, "prepare_run", lambda quick: {"seconds": 3.0})
    one_task = {"seconds": 40.0, "peak_rss_mb": 700.0, "tasks": [{"seconds": 20.0}], "merge": {"seconds": 2.0}}

    def scale_stopped(quick, step):  # scale's runs are recorded one by one: a bench stopped in scale keeps them
        step("prepare_one_task", one_task)
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "scale_run", scale_stopped)
    with pytest.raises(KeyboardInterrupt):
        bench.main(["--quick", "--threads", "1"])
    partial = json.loads((tmp_path / "bench.json").read_text())
    assert partial["complete"] is False and partial["prepare"] == {"seconds": 3.0}
    assert partial["scale_steps"] == {
        "prepare_one_task.seconds": 40.0,
        "prepare_one_task.peak_rss_mb": 700.0,
        "prepare_one_task.tasks.0.seconds": 20.0,
        "prepare_one_task.merge.seconds": 2.0,
    }
    assert "| scale_steps | prepare_one_task.merge.seconds | 2 |" in (tmp_path / "bench.md").read_text()

    def scale_done(quick, step):
        step("prepare_one_task", one_task)
        return {"scale": {"x": 1.0}, "at_scale": {"hours": 2.0}}

    monkeypatch.setattr(bench, "scale_run", scale_done)
    done = bench.main(["--quick", "--threads", "1"])
    assert done["complete"] is True and json.loads((tmp_path / "bench.json").read_text()) == json.loads(
        json.dumps(done)
    )
    assert not (tmp_path / "bench.md").read_text().startswith("Partial")
    torch.set_num_threads(threads)
