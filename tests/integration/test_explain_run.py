"""explain on a tiny trained run: every figure, table and the report (also in a real headless
browser); mosaics and population statistics against brute force; bad run folders refused; W&B
wiring."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from protocell.artifacts import RunFolderError
from protocell.explain.run import cell_similarities, explain_run, load_run, nearest_patches
from protocell.explain.similarity import population_means, unit_ids
from protocell.model.prototypes import log_similarity
from protocell.model.views import dihedral

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))
import warm  # noqa: E402
from conftest import skip_or_fail  # noqa: E402
from test_train_cli import TINY  # noqa: E402

# The tiny plate's change is too subtle to learn in a few steps (3 epochs of one batch give a network at
# chance, which has no affected fraction to check): every Exp cell affected, ten times the photons, no
# confound, 40 cells a field, small batches and 60 pretrain epochs give a run that learned enough for
# the fraction's reference to find evidence at its confidence bounds (as score's tiny fixture).
LEARNING = [
    *TINY,
    "data.synthetic.affected_fraction.Ref=0.0",
    "data.synthetic.affected_fraction.Exp=1.0",
    "data.synthetic.photons=6000",
    "data.synthetic.confound=false",
    "data.synthetic.cells_per_field=40",
    "data.synthetic.field_size=256",
    "data.batch_size=16",
    "schedule.pretrain_epochs=60",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("explain")
    env = {**os.environ, "PROTOCELL_CACHE": str(tmp / "cache"), "OMP_NUM_THREADS": "1"}
    warm.run(
        [sys.executable, "train.py", f"hydra.run.dir={tmp / 'run'}", *LEARNING],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return tmp / "run"


@pytest.fixture(scope="module")
def explained(tiny_run):
    return explain_run(tiny_run, n_boot=50, log_wandb=False)


def test_explain_writes_figures_tables_metrics_and_a_report(tiny_run, explained):
    out = explained
    rec = torch.load(tiny_run / "prototypes.pt", weights_only=True)
    P = len(rec["cell_id"])
    assert len(list((out / "prototypes").glob("*.png"))) == P == len(list((out / "mosaics").glob("*.png")))
    assert len(list((out / "mosaics").glob("*.csv"))) == P and len(list((out / "cells").glob("*.png"))) == 6
    for name in (
        "population_similarity.png",
        "population_similarity.csv",
        "prototype_differences.csv",
        "cell_scores.png",
        "prototype_health.csv",
        "prototypes.csv",
        "explain_metrics.json",
    ):
        assert (out / name).exists(), name
    # the prototype boxes are push's provenance, and every figure's cells can be found in the raw image
    protos = pd.read_csv(out / "prototypes.csv")
    assert protos["cell_id"].tolist() == rec["cell_id"].tolist()
    assert protos["box_crop"].tolist() == [",".join(map(str, b)) for b in rec["box_clipped"].tolist()]
    for col in ("image_id", "well", "field", "box_image"):
        assert protos[col].notna().all(), col
    em = json.loads((out / "explain_metrics.json").read_text())
    assert em["background_prototype_share"] == 0.0  # mask on: no prototype in background
    assert set(em["exp_prototype_texture_share"]) == {str(j) for j in range(P) if rec["prototype_class"][j] == 1}
    assert all(0 <= v <= 1 for v in em["exp_prototype_texture_share"].values())
    preds = pd.read_csv(tiny_run / "test_predictions.csv")
    exp = preds[preds["condition"] == "Exp"]
    metrics = json.loads((tiny_run / "metrics.json").read_text())  # same cells, same calls as train.py
    frac = metrics["affected_fraction"]["conditions"]["Exp"]  # the estimate explain shows (metrics.json)
    assert frac["true"] == pytest.approx((exp["true_label"] == 1).mean())
    assert frac["ci_low"] <= frac["estimate"] <= frac["ci_high"]
    assert em["true_label_accuracy"] == pytest.approx(metrics["true_label_accuracy"])
    assert em["true_label_auroc"] == pytest.approx(metrics["true_label_auroc"], abs=1e-6)
    page = (tiny_run / "report.html").read_text()
    for src in re.findall(r'(?:src|href)="([^"]+)"', page):  # every image and link the page names exists
        assert (tiny_run / src).exists(), src
    assert "vgg11_narrow" in page and "46 px" in page and "Mann–Whitney" in page
    assert "known only as a lower bound" in metrics["affected_fraction"]["identified"]
    assert "known only as a lower bound" in page  # what a fraction from well labels can be, said where it is read


def test_nearest_patches_are_sorted_and_equal_brute_force(tiny_run, explained):
    run = load_run(tiny_run)
    near = nearest_patches(run, k=5)
    assert (near["distance"][1:] >= near["distance"][:-1]).all()
    best = {}
    with torch.no_grad():
        for x, m, _y, cid in run.dm.push_dataloader():
            d = run.net.distances(run.net.latent(x), m).flatten(2).amin(2)
            for b in range(len(cid)):
                best[int(cid[b])] = d[b]
    for j in range(near["distance"].shape[1]):
        brute = sorted((float(v[j]), c) for c, v in best.items())[:5]
        assert [c for _, c in brute] == near["cell_id"][:, j].tolist()
    # the rendered mosaic lists the same cells in the same order (k = 20)
    near20 = nearest_patches(run)
    tiles = pd.read_csv(explained / "mosaics" / "mosaic_00.csv")
    assert len(tiles) == min(20, len(run.dm.rows["push"]))  # the tiny push set has fewer cells
    assert tiles["cell_id"].tolist() == near20["cell_id"][:, 0].tolist()
    assert tiles["rank"].tolist() == list(range(1, len(tiles) + 1))


def test_population_similarities_and_means_equal_a_direct_loop_over_test_cells(tiny_run, explained):
    run = load_run(tiny_run)
    cells = cell_similarities(run).set_index("cell_id")
    P = len(run.record["cell_id"])
    ds = run.dm.dataset("test")
    assert run.views == 8  # the default: every reported number is the mean over the cell's 8 orientations
    direct = {}
    with torch.no_grad():
        for i in range(len(ds)):  # one cell at a time, straight through the network, in each orientation
            x, m, _, cid = ds[i]
            sims = [
                log_similarity(run.net.distances(run.net.latent(vx), vm)[0].flatten(1).amin(1).double())
                for vx, vm in dihedral(x[None], m[None], run.views)
            ]
            direct[int(cid)] = torch.stack(sims).mean(0).numpy()
    assert set(direct) == set(cells.index)
    preds = run.preds.set_index("cell_id")
    for cid, sim in direct.items():
        # float32 distances (‖z‖² − 2 z·p + ‖p‖²) agree to ~1e-5 across batch sizes; the similarity
        # log((d + 1)/(d + 1e-4)) magnifies that near d = 0: compare similarities, relatively
        reported = log_similarity(torch.tensor(preds.loc[cid, [f"min_d_{j}" for j in range(P)]].to_numpy(float)))
        assert np.allclose(reported.numpy(), sim, rtol=2e-3, atol=1e-4)
        assert np.allclose(cells.loc[cid, [f"p{j}" for j in range(P)]].to_numpy(float), sim, rtol=2e-3, atol=1e-4)
    pop = pd.read_csv(explained / "population_similarity.csv")
    for cond in ("Ref", "Exp"):
        ids = [c for c in direct if cells.loc[c, "condition"] == cond]
        mean = np.mean([direct[c] for c in ids], axis=0)
        assert np.allclose(pop[f"mean_{cond}"], mean, rtol=1e-3)
        own = cells.loc[ids, [f"p{j}" for j in range(P)]].to_numpy(float).mean(0)
        assert np.allclose(pop[f"mean_{cond}"], own, rtol=1e-9)  # exactly the mean of the cells table
    assert np.allclose(pop["difference"], pop["mean_Exp"] - pop["mean_Ref"])
    # a predictions file without the per-prototype distances: one pass over the test set instead
    run.preds = run.preds.drop(columns=[c for c in run.preds if c.startswith("min_d_")])
    recomputed = cell_similarities(run).set_index("cell_id").loc[cells.index]
    assert (recomputed["condition"] == cells["condition"]).all()
    assert np.allclose(recomputed[[f"p{j}" for j in range(P)]], cells[[f"p{j}" for j in range(P)]], rtol=2e-3)
    unit = json.loads((explained / "explain_metrics.json").read_text())["replicate_unit"]["unit"]
    again = cells.reset_index().assign(replicate=lambda c: unit_ids(c, unit))
    again = population_means(again, [f"p{j}" for j in range(P)], "Ref", "Exp", n_boot=50, by="replicate")
    assert np.allclose(again["diff_ci_low"], pop["diff_ci_low"], equal_nan=True)  # seeded bootstrap: reproducible


def test_bad_run_folders_get_clear_messages(tiny_run, tmp_path):
    with pytest.raises(RunFolderError, match="does not exist"):
        load_run(tmp_path / "nope")
    broken = tmp_path / "run"
    shutil.copytree(tiny_run, broken, ignore=shutil.ignore_patterns("explain", "report.html"))
    rec = torch.load(broken / "prototypes.pt", weights_only=True)
    torch.save({**rec, "version": 99}, broken / "prototypes.pt")
    with pytest.raises(RunFolderError, match="v99.*protocell version that trained"):
        load_run(broken)
    torch.save(rec, broken / "prototypes.pt")
    config = (broken / "config.yaml").read_text()
    assert "\nviews: 8\n" in config
    for bad in ("3", "true", "'8'"):  # the orientations its predictions averaged: 1 or 8, nothing else
        (broken / "config.yaml").write_text(config.replace("\nviews: 8\n", f"\nviews: {bad}\n"))
        with pytest.raises(RunFolderError, match=r"config.yaml says views=.*not one of \(1, 8\)"):
            load_run(broken)
    (broken / "config.yaml").write_text(config.replace("\nviews: 8\n", "\n"))  # a run from before views: as cropped
    assert load_run(broken).views == 1
    (broken / "config.yaml").write_text(config)
    torch.save({**rec, "pushes": 0}, broken / "prototypes.pt")
    with pytest.raises(RunFolderError, match="pushes = 0.*never pushed"):
        load_run(broken)
    (broken / "prototypes.pt").write_bytes(b"not a torch file")
    with pytest.raises(RunFolderError, match="cannot be read"):
        load_run(broken)
    torch.save({**rec, "store": str(tmp_path / "gone")}, broken / "prototypes.pt")
    with pytest.raises(RunFolderError, match="crop store .*gone.* does not exist"):
        load_run(broken)
    (broken / "prototypes.pt").unlink()
    with pytest.raises(RunFolderError, match="prototypes.pt is missing"):
        load_run(broken)


def test_cli_refuses_a_missing_run_folder_without_creating_it(tmp_path):
    missing = tmp_path / "no_such_run"
    proc = warm.run(
        [sys.executable, "explain.py", f"run={missing}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 2 and "does not exist" in proc.stdout + proc.stderr
    assert not missing.exists()


def test_wandb_wiring_logs_figures_offline_to_the_training_run(tiny_run, tmp_path):
    pytest.importorskip("wandb")
    from omegaconf import OmegaConf

    from protocell.tracking import log_to_saved_run

    def log_to_wandb(run, _):
        return log_to_saved_run(run.cfg, run.dir, keys=("explain/",))

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    cfg = OmegaConf.load(run_dir / "config.yaml")
    assert log_to_wandb(load_run(run_dir), run_dir / "explain").startswith("skipped: the run did not use")
    cfg.logger = {"_target_": "lightning.pytorch.loggers.WandbLogger", "project": "protocell-test", "offline": True}
    OmegaConf.save(cfg, run_dir / "config.yaml")
    assert "no W&B run id" in log_to_wandb(load_run(run_dir), run_dir / "explain")
    (run_dir / "wandb_run_id.txt").write_text("explaintest01")
    os.environ.setdefault("WANDB_SILENT", "true")
    assert log_to_wandb(load_run(run_dir), run_dir / "explain") == "logged offline to run explaintest01"
    offline = list((run_dir / "wandb").glob("offline-run-*-explaintest01"))
    assert len(offline) == 1
    media = [p.name for p in offline[0].rglob("media/images/**/*.png")]
    assert any("population" in n for n in media) and any("mosaics" in n for n in media)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def require_chromium():
    """Skip without Debian's chromium (the reason printed), except under CI=true, where `make setup`
    installs it and its absence is a failure."""
    if CHROMIUM is None:
        skip_or_fail(
            "Debian's chromium is not installed (as root: apt-get update && apt-get install -y chromium): "
            "report.html is then checked only for files, not in a browser"
        )


def browser_images(report: Path, tmp_path: Path) -> tuple[int, list[str]]:
    """(images on the page, the src of each one the browser could not decode), as a real headless
    browser renders ``report``."""
    probe = tmp_path / "probe.html"
    # the report in an iframe of a probe page that lists each image's natural size once loaded
    probe.write_text(f"""<html><body><iframe id="r" src="{report.as_uri()}" width=1200 height=800></iframe>
<pre id="out">pending</pre><script>
document.getElementById('r').onload = () => {{
  const imgs = [...document.getElementById('r').contentDocument.images];
  const wait = imgs.map(i => i.complete ? Promise.resolve() : new Promise(ok => {{ i.onload = ok; i.onerror = ok; }}));
  Promise.all(wait).then(() => {{
    document.getElementById('out').textContent = 'IMAGES ' + imgs.length + ' BROKEN ' +
      imgs.filter(i => !i.naturalWidth).map(i => i.getAttribute('src')).join(',') + ' END';
  }});
}};</script></body></html>""")
    proc = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--allow-file-access-from-files",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=15000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    found = re.search(r"IMAGES (\d+) BROKEN (.*?) END", proc.stdout)
    assert found, proc.stdout[-2000:] + proc.stderr[-2000:]
    return int(found.group(1)), [b for b in found.group(2).split(",") if b]


def test_report_loads_every_image_in_a_real_headless_browser(tiny_run, explained, tmp_path):
    require_chromium()
    n, broken = browser_images(tiny_run / "report.html", tmp_path)
    P = len(list((explained / "prototypes").glob("*.png")))
    # population, cell scores, every prototype, every sampled cell: all decoded by the browser
    assert n == 2 + P + len(list((explained / "cells").glob("*.png"))) and broken == [], f"{n} images, broken: {broken}"


def test_the_browser_check_reports_a_missing_image(tiny_run, explained, tmp_path):
    """The negative case: the same check on a copy of the run with one figure deleted names it."""
    require_chromium()
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "explain" / "prototypes" / "prototype_01.png").unlink()
    (run / "explain" / "cell_scores.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(20))  # present, not decodable
    n, broken = browser_images(run / "report.html", tmp_path)
    assert sorted(broken) == ["explain/cell_scores.png", "explain/prototypes/prototype_01.png"], broken


def explain_cli(run: Path):
    return warm.run(
        [sys.executable, "explain.py", f"run={run}", "bootstrap=20", "wandb=false", "threads=1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_explain_refuses_a_truncated_checkpoint_naming_the_file(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("explain", "report.html"))
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    proc = explain_cli(run)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"explain: {ckpt} cannot be loaded as this run's checkpoint" in proc.stderr
    assert "re-run train.py (resume=<an intact checkpoint> continues a run)" in proc.stderr
    assert not (run / "report.html").exists()


class _Evil:
    """A pickle whose loading runs a shell command (touches ``marker``)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# What a crafted config.yaml can name: loaders that unpickle or run a file, an entry point that parses
# the command line, the shell, and a target nested below a plain value.
ATTACKS = {
    "torch.load": lambda evil: {"_target_": "torch.load", "f": str(evil), "weights_only": False},
    "torch.hub.load": lambda evil: {
        "_target_": "torch.hub.load",
        "repo_or_dir": str(evil.parent),
        "model": "x",
        "source": "local",
        "trust_repo": True,
    },
    "torch.jit.load": lambda evil: {"_target_": "torch.jit.load", "f": str(evil)},
    "lightning.pytorch.cli.LightningCLI": lambda evil: {
        "_target_": "lightning.pytorch.cli.LightningCLI",
        "args": ["--help"],
    },
    "os.system": lambda evil: {"_target_": "os.system", "command": f"touch {evil.parent / 'marker'}"},
}


def _crafted_run(tiny_run, tmp_path, key: str, attack: str, nested: bool = False) -> tuple[Path, Path]:
    """A copy of ``tiny_run`` whose config.yaml puts ``ATTACKS[attack]`` under ``key`` (``nested``: one
    level deeper, as the value of a plain setting). Returns (run, the file the attack would create)."""
    import yaml

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("explain", "report.html", "score", "score.html"))
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pt"
    torch.save(_Evil(str(marker)), evil)
    (tmp_path / "hubconf.py").write_text(f"import os\nos.system('touch {marker}')\ndef x():\n    return 0\n")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    node = cfg
    for part in key.split("."):
        node = node[part]
    payload = ATTACKS[attack](evil)
    if nested:
        node["gain"] = payload
    elif key == "data":
        node["_target_"] = payload["_target_"]
        node.update({k: v for k, v in payload.items() if k != "_target_"})
    else:
        node.clear()
        node.update(payload)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    return run, marker


def _refusal(run: Path, key: str, attack: str, nested: bool) -> str:
    where = f"{key}.gain" if nested else key
    return f"{run / 'config.yaml'}: {where}._target_='{ATTACKS[attack](Path('x'))['_target_']}' is refused"


@pytest.mark.parametrize("attack", sorted(ATTACKS))
@pytest.mark.parametrize("key,nested", [("data.photometric", False), ("data.photometric", True), ("data", False)])
def test_a_run_folder_names_no_code_that_reading_it_runs(tiny_run, tmp_path, attack, key, nested):
    """A run folder is data people mail each other: its config.yaml must never choose code to run
    (issue 25: torch.load passed a module-prefix allow-list and unpickled a payload that ran a command).
    Every attack at every place, through ``load_run``: what explain.py and score.py read a run with."""
    from protocell.errors import ConfigError

    run, marker = _crafted_run(tiny_run, tmp_path, key, attack, nested)
    with pytest.raises(ConfigError) as err:
        load_run(run)
    assert not marker.exists(), f"{attack} under {key} ran code"
    assert str(err.value).startswith(_refusal(run, key, attack, nested)), str(err.value)
    assert "never chooses code to run" in str(err.value)


@pytest.mark.parametrize(
    "attack,key,nested",
    [
        ("torch.load", "data.photometric", False),
        ("os.system", "data.photometric", True),
        ("torch.hub.load", "data", False),
    ],
)
def test_explain_cli_runs_no_code_a_run_folder_names(tiny_run, tmp_path, attack, key, nested):
    """The same refusal end to end (each place once): exit 2, one line, no traceback, nothing written."""
    run, marker = _crafted_run(tiny_run, tmp_path, key, attack, nested)
    proc = explain_cli(run)
    assert not marker.exists(), f"{attack} under {key} ran code"
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"explain: {_refusal(run, key, attack, nested)}" in proc.stderr, proc.stderr[-2000:]
    assert "never chooses code to run" in proc.stderr
    assert not (run / "explain").exists()


@pytest.mark.parametrize("attack", ["torch.load", "lightning.pytorch.cli.LightningCLI"])
def test_score_runs_no_code_a_run_folder_names(tiny_run, tmp_path, attack):
    run, marker = _crafted_run(tiny_run, tmp_path, "data.photometric", attack)
    proc = warm.run(
        [sys.executable, "score.py", f"run={run}", "bootstrap=20", "wandb=false", "threads=1", "progress=false"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert not marker.exists(), f"{attack} ran code"
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"{run / 'config.yaml'}: data.photometric._target_=" in proc.stderr and "is refused" in proc.stderr
    assert not (run / "score.html").exists()


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda cfg: cfg["data"].update(batch_size="many"), "'data' does not match protocell's data schema"),
        (lambda cfg: cfg["data"].update(loader_hook="x"), "'data' does not match protocell's data schema"),
        (lambda cfg: cfg["data"].update(test_fraction=2.0), "config value data.test_fraction=2.0 is invalid"),
        (lambda cfg: cfg["data"].update(path="${oc.env:HOME}"), "data.path is an interpolation"),
    ],
)
def test_explain_refuses_a_run_config_outside_the_schema(tiny_run, tmp_path, edit, message):
    """In-process through ``load_run`` (the CLI's one-line form of the same errors: the test above and
    the interpolation case through explain.py below)."""
    import yaml

    from protocell.errors import ProtocellError

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("explain", "report.html"))
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    edit(cfg)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ProtocellError) as err:
        load_run(run)
    assert message in str(err.value) and str(run / "config.yaml") in str(err.value), str(err.value)
    if "interpolation" in message:
        proc = explain_cli(run)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert message in proc.stderr and str(run / "config.yaml") in proc.stderr, proc.stderr[-2000:]


def test_score_reads_an_eight_view_run_as_its_own_predictions(tiny_run):
    """score.py reads each cell in the run's 8 orientations, as its predictions did (score's own tests use
    a one-view run: an eighth of the network passes)."""
    from protocell.score import score_store

    cells = score_store(tiny_run, progress=False).set_index("cell_id")
    preds = pd.read_csv(tiny_run / "test_predictions.csv").set_index("cell_id")
    assert load_run(tiny_run).views == 8
    assert np.allclose(cells.loc[preds.index, "score"], preds["score"], atol=1e-2)


def test_a_replay_scores_the_cells_as_the_run_did(tiny_run):
    """``experiments/diagnose.py`` replays the label-free checks on a finished run's checkpoint: its module
    reads each cell in the run's 8 orientations (``build.load_module(…, views)``), so it reproduces the
    stored predictions. Read at one orientation it did not (a replay of the imaging check gave 0.277 where
    the run had recorded 0.337)."""
    import importlib.util

    from lightning import Trainer

    spec = importlib.util.spec_from_file_location("diagnose", ROOT / "experiments" / "diagnose.py")
    diagnose = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(diagnose)
    store = torch.load(tiny_run / "prototypes.pt", weights_only=True)["store"]
    dm, module = diagnose.rebuild(tiny_run, store, imaging=True)
    assert module.views == 8
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    batches = trainer.predict(module, dataloaders=dm.predict_dataloader("test"))
    ids = torch.cat([b["cell_id"] for b in batches]).numpy()
    score = torch.cat([b["probs"] for b in batches])[:, 1].numpy()
    preds = pd.read_csv(tiny_run / "test_predictions.csv").set_index("cell_id")
    assert np.allclose(preds.loc[ids, "score"], score, atol=1e-5)
