"""How often does ``data.level_imaging=auto`` fire, and where? The test alone, no training.

    python experiments/imaging_alignment.py out.csv --draws experiments/results/random_plates_*draws*.json
    python experiments/imaging_alignment.py out.csv --matrix-v2 --store BBBC013=<crop store> [--workers 2]

For every plate: the built-in plate of a random draw (``experiments/random_plates.py``; the draw's
overrides), of matrix v2 (experiments/robustness.sh: 4 shares with well effects at chance, 2 aligned, on its
three plates), or a prepared crop store — the labelled wells' optics blur readings tested against their
condition exactly as a run's setup does (``protocell.data.imaging_alignment.levelling_plan``: the readings of
150 cells a well, the permutation p-value, the floor), one row each: the plate's knobs where it has them,
p, the exposed − reference difference per channel, and whether it fires. The firing rate on plates imaged
alike (``well_effects.align`` 0) is the false-alarm rate; on aligned plates, the rate it catches them.
Built-in plates are generated in ``paths.cache_dir`` (``PROTOCELL_CACHE``); ≈ 25 s a plate on one core.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
V2_PLATES = (5439, 7578, 8936)  # experiments/robustness.sh


def plates(draws: list[str], matrix_v2: bool, stores: list[str]) -> list[tuple[str, list[str], dict]]:
    """(name, train.py overrides, knobs) of every plate asked for."""
    out = []
    for f in draws:
        tag = Path(f).stem
        for d in json.loads(Path(f).read_text()):
            knobs = {k.removeprefix("data.synthetic."): v for k, v in d.items() if k != "name"}
            out.append((f"{tag}/{d['name']}", [f"{k}={v}" for k, v in d.items() if k != "name"], knobs))
    if matrix_v2:
        for share, effects in [(s, "chance") for s in (0.15, 0.2, 0.3, 0.5)] + [(s, "aligned") for s in (0.2, 0.3)]:
            for plate in V2_PLATES:
                knobs = {"seed": plate, "affected_fraction.Exp": share, "well_effects": effects}
                overrides = [f"data.synthetic.seed={plate}", f"data.synthetic.affected_fraction.Exp={share}"]
                out.append((f"matrix_v2/{effects}_{share}_{plate}", [*overrides, f"well_effects={effects}"], knobs))
    for s in stores:
        name, _, path = s.partition("=")
        out.append((name, ["data=prepared", f"data.path={path}"], {}))
    return out


def test_plate(job: tuple[str, list[str], dict]) -> dict:
    """The test a run's setup makes, on one plate (one process: torch and numpy at one thread)."""
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from protocell.build import build_datamodule
    from protocell.config import register
    from protocell.data.imaging_alignment import store_lines_up

    torch.set_num_threads(1)
    name, overrides, knobs = job
    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose("train", overrides=[*overrides, "data.level_imaging=false"], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        dm = build_datamodule(cfg)
    originals = dm.store.manifest["aug_of"].to_numpy() < 0
    verdict, _ = store_lines_up(dm.store, originals, dm.channel_index, dm.class_names, dm.seed)
    row = {"name": name, **{k: v for k, v in knobs.items() if not isinstance(v, dict)}}
    row.update(fires=verdict["fires"], p=verdict.get("p"))
    for c, v in (verdict.get("channels") or {}).items():
        row[f"{c}_exposed_minus_reference_px2"] = v["exposed_minus_reference_px2"]
        row[f"{c}_auroc"] = v["auroc"]
    return row


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="the CSV to write")
    ap.add_argument("--draws", nargs="*", default=[], help="draws.json files of experiments/random_plates.py")
    ap.add_argument("--matrix-v2", action="store_true", help="matrix v2's 18 plates (experiments/robustness.sh)")
    ap.add_argument("--store", nargs="*", default=[], help="NAME=<crop store folder> of a prepared plate")
    ap.add_argument("--workers", type=int, default=1, help="plates tested at once (one core each)")
    a = ap.parse_args(argv)
    import pandas as pd

    draws = sorted({f for pattern in a.draws for f in glob.glob(pattern)})
    jobs = plates(draws, a.matrix_v2, a.store)
    if not jobs:
        sys.exit("nothing to test: give --draws, --matrix-v2 or --store")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with ProcessPoolExecutor(a.workers) as pool:
        rows = []
        for row in pool.map(test_plate, jobs):
            rows.append(row)
            print(f"{row['name']}: fires {row['fires']} (p = {row['p']})", flush=True)
    df = pd.DataFrame(rows)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(a.out, index=False, float_format="%.4f")
    if "well_effects.align" in df:
        for what, plates_ in (
            ("imaged alike (align 0)", df["well_effects.align"] == 0),
            ("aligned (1)", df["well_effects.align"] == 1),
        ):
            print(f"fires on {int(df.loc[plates_, 'fires'].sum())} of {int(plates_.sum())} drawn plates {what}")
    print(f"fires on {int(df['fires'].sum())} of {len(df)} plates; {a.out}")


if __name__ == "__main__":
    main()
