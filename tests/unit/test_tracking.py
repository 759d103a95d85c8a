"""The run's final numbers reach W&B as table columns: ``log_summary`` on a real offline run, and its calls."""

from __future__ import annotations

import json
import time

import pytest

from protocell.tracking import log_summary, run_summary


def test_run_summary_flattens_the_numbers_of_metrics_and_explain(tmp_path):
    (tmp_path / "explain").mkdir()
    (tmp_path / "metrics.json").write_text(json.dumps({"a": 1, "b": {"c": 0.5, "s": "text", "t": True}}))
    (tmp_path / "explain" / "explain_metrics.json").write_text(json.dumps({"share": 0.25}))
    assert run_summary(tmp_path) == {"final/a": 1, "final/b/c": 0.5, "explain/share": 0.25}


class Recorder:
    """A W&B run that records what it is asked to do."""

    def __init__(self):
        self.defined, self.rows, self.summary = [], [], {}

    def define_metric(self, name, **options):
        self.defined.append((name, options))

    def log(self, row):
        self.rows.append(row)


def test_log_summary_writes_one_hidden_history_row_and_the_summary():
    run = Recorder()
    log_summary(run, {"final/x": 0.9, "explain/y": 2})
    assert run.defined == [("final/x", {"hidden": True}), ("explain/y", {"hidden": True})]  # columns, not charts
    assert run.rows == [{"final/x": 0.9, "explain/y": 2}]  # in the transaction log in order, before the exit
    assert run.summary == {"final/x": 0.9, "explain/y": 2}


def test_an_offline_run_keeps_the_final_numbers_in_its_transaction_log(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    run = wandb.init(project="protocell-test", dir=str(tmp_path), mode="offline")
    try:
        log_summary(run, {f"final/k{i}": i / 10 for i in range(50)})
        assert run.summary["final/k49"] == 4.9
    finally:
        run.finish()
    (record,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    # wandb's service process writes the log: on a loaded machine (the suite's two workers) it was seen still
    # at its 7-byte header right after finish() returned; late is not lost, so wait for it (not forever)
    deadline = time.monotonic() + 60
    while b"final/k49" not in record.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert b"final/k49" in record.read_bytes()
