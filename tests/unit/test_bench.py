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
