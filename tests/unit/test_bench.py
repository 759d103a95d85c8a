"""The benchmark harness runs and reports consistent figures (no timing assertions: speed targets
live in `make bench`, never in tests)."""

from protocell.bench.__main__ import bench_train_step, table


def test_train_step_bench_reports_every_phase_and_the_overhead_ratio():
    res = bench_train_step("vgg11_narrow", 64, 8, repeats=1)
    for phase in ("joint", "warm", "last_layer", "pretrain"):
        assert res[f"{phase}_cells_per_s"] > 0
    assert res["joint_over_bare"] == res["joint_cells_per_s"] / res["bare_cells_per_s"]
    assert 0 < res["prototype_head_share_of_joint_step"] < 1
    md = table({"machine": {"cpu": "x", "cores": 2, "threads": 1, "torch": "t"}, "train": res})
    assert "| train | joint_over_bare |" in md


def test_data_push_inference_bench_uses_the_default_data_handling_and_reports_both_epochs():
    from protocell.bench.__main__ import bench_data_push_inference

    res = bench_data_push_inference(1, repeats=1)
    assert res["cells_train"] > 0 and res["cells_push"] > 0
    for k in ("data_path_cells_per_s", "data_path_first_epoch_cells_per_s", "inference_cells_per_s"):
        assert res[k] > 0
    assert res["push_over_inference"] > 0


def test_score_bench_reports_both_rates_and_a_peak_rss_per_store_size():
    from protocell.bench.__main__ import bench_score

    res = bench_score(1)
    assert res["cells"] > 0 and res["store_mb"] > 0
    assert res["pass_cells_per_s"] > 0 and 0 < res["whole_cells_per_s"] <= res["pass_cells_per_s"]
