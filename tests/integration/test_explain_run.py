"""explain on a tiny trained run: every figure, table and the report; bad run folders refused."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from protocell.explain.run import ExplainError, explain_run, load_run, nearest_patches

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))
from test_train_cli import TINY  # noqa: E402


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("explain")
    env = {**os.environ, "PROTOCELL_CACHE": str(tmp / "cache"), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "train.py", f"hydra.run.dir={tmp / 'run'}", *TINY], cwd=ROOT, env=env,
                   check=True, capture_output=True, timeout=300)
    return tmp / "run"


def test_explain_writes_figures_tables_metrics_and_a_report(tiny_run):
    out = explain_run(tiny_run, n_boot=50)
    P = len(torch.load(tiny_run / "prototypes.pt", weights_only=True)["cell_id"])
    assert len(list((out / "prototypes").glob("*.png"))) == P == len(list((out / "mosaics").glob("*.png")))
    for name in ("population_similarity.png", "population_similarity.csv", "prototype_differences.csv",
                 "explain_metrics.json"):
        assert (out / name).exists(), name
    em = json.loads((out / "explain_metrics.json").read_text())
    assert em["background_prototype_share"] == 0.0          # mask on: no prototype in background
    assert all(0 <= v <= 1 for v in em["exp_prototype_texture_share"].values())
    page = (tiny_run / "report.html").read_text()
    for src in re.findall(r'src="([^"]+)"', page):           # every image the page names exists
        assert (tiny_run / src).exists(), src


def test_nearest_patches_are_sorted_and_equal_brute_force(tiny_run):
    run = load_run(tiny_run)
    near = nearest_patches(run, k=5)
    assert (near["distance"][1:] >= near["distance"][:-1]).all()
    best = {}
    with torch.no_grad():
        for x, m, y, cid in run.dm.push_dataloader():
            d = run.net.distances(run.net.latent(x), m).flatten(2).amin(2)
            for b in range(len(cid)):
                best[int(cid[b])] = d[b]
    for j in range(near["distance"].shape[1]):
        brute = sorted((float(v[j]), c) for c, v in best.items())[:5]
        assert [c for _, c in brute] == near["cell_id"][:, j].tolist()


def test_bad_run_folders_get_clear_messages(tiny_run, tmp_path):
    with pytest.raises(ExplainError, match="does not exist"):
        load_run(tmp_path / "nope")
    broken = tmp_path / "run"
    shutil.copytree(tiny_run, broken)
    rec = torch.load(broken / "prototypes.pt", weights_only=True)
    torch.save({**rec, "version": 99}, broken / "prototypes.pt")
    with pytest.raises(ExplainError, match="v99"):
        load_run(broken)
    torch.save({**rec, "pushes": 0}, broken / "prototypes.pt")
    with pytest.raises(ExplainError, match="never pushed"):
        load_run(broken)
    (broken / "prototypes.pt").unlink()
    with pytest.raises(ExplainError, match="prototypes.pt is missing"):
        load_run(broken)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium): "
                    "the report is then checked only for files, not in a browser")
def test_report_loads_every_image_in_a_real_headless_browser(tiny_run, tmp_path):
    explain_run(tiny_run, n_boot=20)
    probe = tmp_path / "probe.html"
    # the report in an iframe of a probe page that lists each image's natural size once loaded
    probe.write_text(f"""<html><body><iframe id="r" src="{(tiny_run / 'report.html').as_uri()}" width=1200 height=800></iframe>
<pre id="out">pending</pre><script>
document.getElementById('r').onload = () => {{
  const imgs = [...document.getElementById('r').contentDocument.images];
  const wait = imgs.map(i => i.complete ? Promise.resolve() : new Promise(ok => {{ i.onload = ok; i.onerror = ok; }}));
  Promise.all(wait).then(() => {{
    document.getElementById('out').textContent = 'IMAGES ' + imgs.length + ' BROKEN ' +
      imgs.filter(i => !i.naturalWidth).map(i => i.getAttribute('src')).join(',') + ' END';
  }});
}};</script></body></html>""")
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           "--allow-file-access-from-files", f"--user-data-dir={tmp_path / 'profile'}",
                           "--virtual-time-budget=15000", "--dump-dom", probe.as_uri()],
                          capture_output=True, text=True, timeout=120)
    found = re.search(r"IMAGES (\d+) BROKEN (.*?) END", proc.stdout)
    assert found, proc.stdout[-2000:] + proc.stderr[-2000:]
    n, broken = int(found.group(1)), found.group(2)
    assert n >= 3 and broken == "", f"{n} images, broken: {broken}"
