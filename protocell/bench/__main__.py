"""``make bench``: speed and memory of every stage, written to outputs/bench/bench.{json,md}.

Ratios are taken within one run (the machines here are noisy); each figure is the median over
repeats; threads are set explicitly. ``python -m protocell.bench --quick`` is a smaller pass.
``score``: cells/s of score's streaming pass and of the whole scoring with its tables, and the peak
RSS of a fresh scoring process at two store sizes (memory must not grow with the store).
``scale``: a plate of ≥ 10⁵ cells prepared and scored in one task and in two share tasks + merge
(``protocell.bench.scale``; ``--quick``: a 16-image plate), and ``scale_screen`` the arithmetic of a
20-plate screen on 50 nodes from those figures. Both files are rewritten after every stage
(``complete: false`` until the last): a bench stopped mid-way keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from protocell.bench.prepare_bench import run as prepare_run
from protocell.bench.record import flat, record, table
from protocell.bench.scale import run as scale_run
from protocell.training.callbacks import apply_phase
from protocell.training.schedule import Phase, trainable_groups

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "outputs" / "bench"


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.is_available(),
    }


def timed(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def timed_interleaved(fns: dict, repeats: int, warmup: int = 1) -> dict:
    """Median time of each function, measured round-robin so that drifting machine load hits all
    of them alike (ratios between them are then meaningful on a noisy machine)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def _default_dm(store, **data):
    """The embedded default run's DataModule (``python train.py``'s composed data and mask settings, with
    ``data`` keys replaced) on ``store``, set up."""
    from hydra import compose, initialize_config_dir

    from protocell.build import build_datamodule
    from protocell.config import register

    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose(config_name="train", overrides=[f"data.{k}={v}" for k, v in data.items()])
    return build_datamodule(cfg, path=store)


def _module(backbone: str, crop: int, width: float = 0.125, max_rf=46):
    from dataclasses import asdict

    from protocell.config import (
        LastLayerConfig,
        LossConfig,
        OptimConfig,
        ProtoPNetConfig,
        ScheduleConfig,
        TrainConfig,
    )
    from protocell.model.module import ProtoPNetModule

    spec = {
        "backbone": {"name": backbone, "width": width, "max_rf": max_rf, "pretrained": False, "batch_norm": True},
        "head": {**asdict(ProtoPNetConfig()), "use_mask": True},  # the default run's head (mask=on)
        "in_channels": 2,
    }
    optim = OptimConfig()  # the default run's settings (bags of one cell: the step measured per cell)
    return ProtoPNetModule(
        spec,
        class_names=["Ref", "Exp"],
        last_layer=LastLayerConfig().mode,
        lr=optim.lr,
        weight_decay=optim.weight_decay,
        ramp_epochs=ScheduleConfig().loss_ramp_epochs,
        bag_size=1,
        head=TrainConfig.head,
        channels_last=False,
        **asdict(LossConfig()),
    )


def bench_train_step(backbone: str, crop: int, batch: int, repeats: int, **kw) -> dict:
    """protocell's training step per phase vs the bare backbone's forward + backward."""
    torch.manual_seed(0)
    module = _module(backbone, crop, **kw)
    x = torch.rand(batch, 2, crop, crop)
    mask = torch.zeros(batch, 1, crop, crop)
    mask[:, :, crop // 8 : -crop // 8, crop // 8 : -crop // 8] = 1
    y = torch.arange(batch) % 2
    batch_t = (x, mask, y, torch.arange(batch))
    opt = torch.optim.Adam(module.parameters(), 1e-4)
    module.log = module.log_dict = lambda *a, **k: None  # Lightning logging is not what we measure

    bare = module.net.features
    head = nn.Conv2d(module.probe.in_channels, 2, 1)
    bare_opt = torch.optim.Adam(list(bare.parameters()) + list(head.parameters()), 1e-4)

    def bare_step():
        for p in bare.parameters():
            p.requires_grad_(True)
        bare.train()
        out = head(bare(x)).mean((2, 3))
        loss = F.cross_entropy(out, y)
        bare_opt.zero_grad(set_to_none=True)
        loss.backward()
        bare_opt.step()

    def step_in(phase):
        state = Phase(phase, trainable_groups(phase, train_last_layer=True))

        def step():
            if module.phase != phase:  # a phase change happens once per epoch in training
                module.train()
                apply_phase(module, state)
            loss = module.training_step(batch_t, 0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return step

    phases = ("joint", "warm", "last_layer", "pretrain")
    t = timed_interleaved({"bare": bare_step, **{p: step_in(p) for p in phases}}, repeats)
    res = {"backbone": backbone, "crop": crop, "batch": batch, "bare_cells_per_s": batch / t["bare"]}
    for phase in phases:
        res[f"{phase}_cells_per_s"] = batch / t[phase]
    apply_phase(module, Phase("joint", trainable_groups("joint", True)))
    res["joint_over_bare"] = res["joint_cells_per_s"] / res["bare_cells_per_s"]
    # share of a joint step spent in the prototype layer, losses and masking
    with torch.no_grad():
        module.eval()
        z = module.net.latent(x)

    def head_only():
        zz = z.detach().requires_grad_(True)
        d = module.net.distances(zz, mask)
        min_d = d.flatten(2).amin(2)
        from protocell.model.losses import protopnet_loss
        from protocell.model.prototypes import log_similarity

        logits = module.net.last_layer(log_similarity(min_d))
        protopnet_loss(logits, min_d, y, module.net.prototype_class, module.net.last_layer.weight, 0.8, 0.08, 1e-4)[
            "loss"
        ].backward()

    res["prototype_head_share_of_joint_step"] = timed(head_only, repeats) / (batch / res["joint_cells_per_s"])
    return res


def bench_data_push_inference(n_wells: int, repeats: int) -> dict:
    from protocell.data.synthetic import WellSpec, build_store
    from protocell.model.search import nearest_patches

    store = build_store(ROOT / "outputs" / "cache", WellSpec(wells_per_condition=n_wells, fields_per_well=4))
    dm = _default_dm(store, batch_size=64, eval_batch_size=256)
    module = _module("vgg11_narrow", 64)
    net = module.net.eval()
    n_push = len(dm.rows["push"])
    train_loader = dm.train_dataloader()  # one loader for the whole fit, as Lightning does

    def data_pass():
        for _ in train_loader:
            pass

    def inference():
        with torch.no_grad():
            for x, m, _y, _c in dm.push_dataloader():
                net(x, m)

    def push():
        nearest_patches(net, dm.push_dataloader(), k=1, own_class=True)

    t = time.perf_counter()
    data_pass()  # first epoch: per-cell ranges computed (then cached)
    t_first = time.perf_counter() - t
    t_data = timed(data_pass, repeats)
    t_inf = timed(inference, repeats)
    t_push = timed(push, repeats)
    epoch = len(dm.rows["train"]) * dm.epoch_repeats  # the cells an epoch reads (data.min_epoch_cells)
    return {
        "cells_train": len(dm.rows["train"]),
        "cells_epoch": epoch,
        "cells_push": n_push,
        "data_path_cells_per_s": epoch / t_data,
        "data_path_first_epoch_cells_per_s": epoch / t_first,
        "inference_cells_per_s": n_push / t_inf,
        "push_seconds": t_push,
        "push_over_inference": t_push / t_inf,
    }


def push_peak_rss(n_wells: int) -> float:
    """Peak RSS (MB) of a fresh process that builds the store and runs one push."""
    code = (
        f"import resource, torch; torch.set_num_threads({torch.get_num_threads()});"
        f"from protocell.bench.__main__ import bench_data_push_inference as b; b({n_wells}, 1);"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def bench_score(n_wells: int, tables: bool = True) -> dict:
    """score on a store of ``n_wells`` wells per condition (4 fields each), the default's data handling and
    network (untrained: the same cost): cells/s of the streaming pass (network, similarities) and of the
    whole scoring with its tables (per-cell calls, well fractions, treatments, enrichment, 200 bootstraps)."""
    import numpy as np

    from protocell.config import DEFAULT_VIEWS
    from protocell.data.plate_map import plate_wells
    from protocell.data.synthetic import WellSpec, build_store
    from protocell.evaluate.fraction import fit_reference
    from protocell.score.infer import infer
    from protocell.score.tables import cell_table, enrichment, treatment_table, well_table

    store = build_store(ROOT / "outputs" / "cache", WellSpec(wells_per_condition=n_wells, fields_per_well=4))
    dm = _default_dm(store, eval_batch_size=256)
    net = _module("vgg11_narrow", 64).net.eval()
    rows = np.flatnonzero(dm.store.manifest["aug_of"].to_numpy() < 0)
    t = time.perf_counter()
    result = infer(net, dm.dataset_of(dm.store, rows), 1, 256, 0, progress=False, views=DEFAULT_VIEWS)
    t_pass = time.perf_counter() - t
    out = {
        "cells": len(rows),
        "store_mb": sum(f.stat().st_size for f in (store / "shards").glob("*")) / 1e6,
        "pass_cells_per_s": len(rows) / t_pass,
    }
    if tables:
        t = time.perf_counter()
        wells = plate_wells(dm.store, "Ref", "Exp")
        exposed = dm.store.manifest["condition"].iloc[rows].to_numpy() == "Exp"
        models = {"call": {"a": 1.0, "b": 0.0}, "fraction": fit_reference(result["score"], exposed)}
        cells = cell_table(dm.store.manifest.iloc[rows], wells, result, models)
        wells = well_table(cells, wells)
        treatment_table(cells, wells)
        enrichment(cells, wells, cells[cells["condition"] == "Ref"], ["Ref"] * 10 + ["Exp"] * 10)
        out["whole_cells_per_s"] = len(rows) / (t_pass + time.perf_counter() - t)
    return out


def score_peak_rss(n_wells: int) -> dict:
    """Peak RSS (MB) of a fresh process that scores a store of ``n_wells`` wells per condition."""
    code = (
        f"import resource, json, torch; torch.set_num_threads({torch.get_num_threads()});"
        f"from protocell.bench.__main__ import bench_score as b; r = b({n_wells});"
        "r['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024; print(json.dumps(r))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_make_run() -> dict:
    run_dir = OUT / "make_run"
    t = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "train.py",
            f"hydra.run.dir={run_dir}",
            "trainer.enable_progress_bar=false",
            f"threads={torch.get_num_threads()}",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    wall = time.perf_counter() - t
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "explain.py", f"run={run_dir}", f"threads={torch.get_num_threads()}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    explain_wall = time.perf_counter() - t
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "score.py", f"run={run_dir}", f"threads={torch.get_num_threads()}", "progress=false"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    score_wall = time.perf_counter() - t
    m = json.loads((run_dir / "metrics.json").read_text())
    return {
        "wall_seconds": wall,
        "explain_wall_seconds": explain_wall,
        "score_wall_seconds": score_wall,
        "true_label_accuracy": m.get("true_label_accuracy"),
        "true_label_auroc": m.get("true_label_auroc"),
        "well_label_accuracy": m.get("well_label_accuracy"),
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer repeats, no full VGG-11, no make run")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    OUT.mkdir(parents=True, exist_ok=True)
    reps = 3 if args.quick else 7
    results: dict[str, Any] = {"machine": machine(), "complete": False}

    def stage(name: str, measure) -> None:
        t0 = time.perf_counter()
        results[name] = measure()
        record(results, OUT)
        took = f"{time.perf_counter() - t0:.0f} s"
        print(f"bench: {name} done in {took} ({OUT / 'bench.json'})", file=sys.stderr, flush=True)

    def score() -> dict:
        small, large = (score_peak_rss(n) for n in ((2, 4) if args.quick else (4, 16)))
        return {
            "cells_small": small["cells"],
            "cells_large": large["cells"],
            "store_mb_small": small["store_mb"],
            "store_mb_large": large["store_mb"],
            "pass_cells_per_s": large["pass_cells_per_s"],
            "whole_cells_per_s": large["whole_cells_per_s"],
            "peak_rss_mb_small": small["peak_rss_mb"],
            "peak_rss_mb_large": large["peak_rss_mb"],
        }

    stage("train_default", lambda: bench_train_step("vgg11_narrow", 64, 64, reps))
    if not args.quick:
        stage("train_vgg11_128px", lambda: bench_train_step("vgg11", 128, 32, 3, width=1.0, max_rf=None))
    stage("data_push_inference", lambda: bench_data_push_inference(4 if args.quick else 8, 2 if args.quick else 3))
    stage("push_memory", lambda: {"peak_rss_mb_small": push_peak_rss(2), "peak_rss_mb_large": push_peak_rss(8)})
    stage("score", score)
    stage("prepare", lambda: prepare_run(quick=args.quick))

    def scale_step(name: str, figures: dict) -> None:  # each of scale's runs recorded as it finishes
        results.setdefault("scale_steps", {}).update(flat(figures, name))
        record(results, OUT)
        print(f"bench: scale {name} done ({OUT / 'bench.json'})", file=sys.stderr, flush=True)

    at_scale = scale_run(quick=args.quick, step=scale_step)  # prepare and score in shares (bench/scale.py)
    results["scale"] = at_scale["scale"]
    stage("scale_screen", lambda: at_scale["at_scale"])
    if not args.quick:
        stage("make_run", bench_make_run)
    results["complete"] = True
    record(results, OUT)
    print(table(results))
    return results


if __name__ == "__main__":
    main()
