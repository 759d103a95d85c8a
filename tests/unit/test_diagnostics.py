"""The label-free checks of ``protocell.diagnostics`` and the one model of "affected" (calls from the
fraction's own fit), on simulated held-out scores whose truth is known."""

import numpy as np
import pandas as pd
import pytest

from protocell.diagnostics import run_diagnostics
from protocell.diagnostics.wells import calls_match_fraction, fraction_precision, memorised_wells, reference_wells_agree
from protocell.evaluate.calibration import calibrate
from protocell.evaluate.fraction import cell_posteriors, mixture_fraction, posterior
from protocell.evaluate.predictions import fractions
from protocell.evaluate.status import run_status

SIG = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731


def plate(rng, wells=6, cells=300, rho=(0.05, 0.3), shift=None, split="test"):
    """Held-out cells of ``wells`` Ref and Exp wells: logit N(2.5, 1) affected, N(−1, 1) not, plus a per-well
    ``shift[w]`` on every cell's logit (a well effect the network reads)."""
    rows = []
    for cond, label, p in (("Ref", 0, rho[0]), ("Exp", 1, rho[1])):
        for w in range(wells):
            name = f"{cond[0]}{w}"
            aff = rng.random(cells) < p
            z = np.where(aff, rng.normal(2.5, 1, cells), rng.normal(-1, 1, cells))
            z = z + (shift or {}).get(name, 0.0)
            rows.append(
                pd.DataFrame(
                    {
                        "cell_id": np.arange(cells) + len(rows) * cells,
                        "well": name,
                        "condition": cond,
                        "label": label,
                        "score": SIG(z),
                        "true_label": aff.astype(int),
                        "split": split,
                    }
                )
            )
    return pd.concat(rows, ignore_index=True)


def held(df):
    return df.assign(target=df["split"] == "test")


def test_reference_wells_agree_fires_on_a_well_effect_and_not_on_replicates():
    rng = np.random.default_rng(0)
    good = plate(rng)
    frac = fractions(held(good), 1)
    quiet = reference_wells_agree(good, frac["fit"], "Ref")
    assert not quiet["fires"] and quiet["n_wells"] == 6 and quiet["value"] < 0.03
    # every Ref well read a little differently (its own shift of the logit): the fractions spread
    shifts = {f"R{w}": s for w, s in enumerate([-1.0, 0.0, 1.0, 1.8, -0.5, 2.2])}
    bad = plate(rng, shift=shifts)
    loud = reference_wells_agree(bad, fractions(held(bad), 1)["fit"], "Ref")
    assert loud["fires"] and loud["value"] > 0.05 and loud["p_value"] < 1e-3
    assert "replicate untreated wells get different answers" in loud["why"]
    two = reference_wells_agree(bad[bad["well"].isin(["R0", "R1", "E0", "E1"])], frac["fit"], "Ref")
    assert not two["fires"] and "three are needed" in two["why"]


def test_memorised_wells_compares_training_wells_with_unseen_ones():
    rng = np.random.default_rng(1)
    df = plate(rng, wells=4)
    seen = df["well"].isin(["R0", "R1", "E0", "E1"])
    same = memorised_wells(df.assign(seen=seen), "Exp")
    assert not same["fires"] and abs(same["value"]) < 0.05
    # the seen wells' cells scored by their well (their label): a network that recognises its wells
    memo = df.copy()
    memo.loc[seen, "score"] = SIG(np.where(memo.loc[seen, "label"] == 1, 1.5, -1.5) + rng.normal(0, 0.5, seen.sum()))
    loud = memorised_wells(memo.assign(seen=seen), "Exp")
    assert loud["fires"] and loud["auroc_seen"] > 0.95 and loud["value"] > 0.1
    assert not memorised_wells(df.assign(seen=False), "Exp")["fires"]  # nothing seen: nothing to compare


def test_calls_come_from_the_fraction_fit_and_a_wells_mean_posterior_is_its_fraction():
    rng = np.random.default_rng(2)
    df = held(plate(rng))
    frac = fractions(df, 1)
    test = df[df["target"]].copy()
    cal = calibrate(test, df, 1, "mixture", frac)
    assert cal["used"] and cal["method"].startswith("mixture")
    from protocell.evaluate.fraction import reference_lr

    lr = reference_lr(test["score"].to_numpy(), frac["fit"])
    post, per_well = cell_posteriors(lr, test["well"].to_numpy())
    assert np.allclose(test["calibrated"], post) and (test["call"] == (post > 0.5)).all()
    for well, f in per_well.items():
        sel = (test["well"] == well).to_numpy()
        assert post[sel].mean() == pytest.approx(f, abs=1e-6)  # the EM's fixed point
        assert f == pytest.approx(mixture_fraction(lr[sel]))
    # a clean plate: calls and fractions agree, and both are near the truth
    for cond in ("Ref", "Exp"):
        est = frac["conditions"][cond]
        assert abs(est["called_share"] - est["estimate"]) < 0.05 and abs(est["error"]) < 0.05
    assert not calls_match_fraction(frac)["fires"]
    assert posterior(np.array([0.0, 1.0, 1e6]), 0.2).tolist() == pytest.approx([0.0, 0.2, 1.0], abs=1e-5)


def test_calls_match_fraction_fires_when_the_called_share_leaves_the_ci():
    frac = {
        "conditions": {
            "Exp": {"estimate": 0.3, "ci_low": 0.25, "ci_high": 0.35, "called_share": 0.05},
            "Ref": {"estimate": 0.05, "ci_low": 0.03, "ci_high": 0.07, "called_share": 0.06},
        }
    }
    out = calls_match_fraction(frac)
    assert out["fires"] and out["value"] == pytest.approx(0.20)
    frac["conditions"]["Exp"]["called_share"] = 0.22
    assert not calls_match_fraction(frac)["fires"]  # 0.03 outside: within tolerance


def test_fraction_precision_fires_when_the_held_out_wells_do_not_determine_the_fraction():
    rng = np.random.default_rng(4)
    clean = fractions(held(plate(rng)), 1)  # 6 replicate wells a condition
    out = fraction_precision(clean)
    assert not out["fires"] and out["value"] < 0.05, out
    # exposed wells that respond very differently (a fifth to nine tenths affected): the CI over wells is wide
    a, b = plate(rng, wells=3, rho=(0.05, 0.2)), plate(rng, wells=3, rho=(0.05, 0.9))
    b = b.assign(well="X" + b["well"], cell_id=b["cell_id"] + len(a))
    wide = fractions(held(pd.concat([a, b], ignore_index=True)), 1)
    lo, hi = wide["conditions"]["Exp"]["ci_low"], wide["conditions"]["Exp"]["ci_high"]
    out = fraction_precision(wide)
    assert (hi - lo) / 2 > 0.10 and out["fires"] and out["value"] == pytest.approx((hi - lo) / 2)
    assert "Exp is known only to ±" in out["why"] and "read the interval" in out["why"]
    metrics = {
        "n_cells": 1000,
        "called_fraction": 0.3,
        "well_label_auroc": 0.8,
        "affected_fraction": wide,
        "diagnostics": {"fraction_precision": out},
        "test_composition": [{"condition": "Ref"}, {"condition": "Exp"}],
    }
    status = run_status(metrics, val_accuracy=[0.9], val_majority=0.5, n_val=500, epochs_run=10, epochs_planned=10)
    assert status["status"] == "warning" and wide["reliable"] is False
    assert any("known only to ±" in r for r in status["reasons"])
    # a narrow CI from two wells is no answer either: two wells cannot show how much wells differ
    two = {"conditions": {"Exp": {"estimate": 0.5, "ci_low": 0.48, "ci_high": 0.52, "n_wells": 2}}}
    out = fraction_precision(two)
    assert out["fires"] and "Exp has 2 held-out well(s), 3 are needed" in out["why"]
    two["conditions"]["Exp"]["n_wells"] = 3
    assert not fraction_precision(two)["fires"]


def test_a_check_that_fires_makes_the_status_warning_and_the_fraction_unreliable():
    rng = np.random.default_rng(3)
    shifts = {f"R{w}": s for w, s in enumerate([-1.0, 0.0, 1.0, 1.8, -0.5, 2.2])}
    df = held(plate(rng, shift=shifts))
    frac = fractions(df, 1)
    test = df[df["target"]].copy()
    calibrate(test, df, 1, "mixture", frac)
    diag = run_diagnostics(test, None, set(), ["Ref", "Exp"], frac)
    assert diag["reference_wells_agree"]["fires"] and not diag["memorised_wells"]["fires"]
    metrics = {
        "n_cells": len(test),
        "called_fraction": 0.3,
        "well_label_auroc": 0.8,
        "affected_fraction": frac,
        "diagnostics": diag,
        "test_composition": [{"condition": "Ref"}, {"condition": "Exp"}],
    }
    status = run_status(metrics, val_accuracy=[0.9], val_majority=0.5, n_val=500, epochs_run=10, epochs_planned=10)
    assert status["status"] == "warning" and any("replicate untreated wells" in r for r in status["reasons"])
    assert frac["reliable"] is False
    metrics["diagnostics"] = {k: {**v, "fires": False} for k, v in diag.items()}
    assert (
        run_status(metrics, val_accuracy=[0.9], val_majority=0.5, n_val=500, epochs_run=10, epochs_planned=10)["status"]
        == "ok"
        and frac["reliable"] is True
    )


def test_imaging_stats_measure_noise_and_focus():
    from scipy import ndimage as ndi

    from protocell.diagnostics.imaging import imaging_stats

    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[:48, :48]
    mask = ((yy - 24) ** 2 + (xx - 24) ** 2 < 20**2).astype(np.uint8)
    smooth = 0.5 + 0.2 * np.sin(yy / 6.0) * np.cos(xx / 7.0)
    for sd in (0.01, 0.03):
        noisy = (smooth + rng.normal(0, sd, smooth.shape))[None]
        got = imaging_stats(noisy, mask)
        assert got[0, 0] == pytest.approx(sd, rel=0.35)  # the MAD of the median residual
        only = imaging_stats(noisy, mask, sharpness=False)  # the noise alone: the same noise, no sharpness
        assert only[0, 0] == got[0, 0] and np.isnan(only[0, 1]) and np.isfinite(got[0, 1])
    spots = smooth.copy()
    spots[rng.integers(8, 40, 30), rng.integers(8, 40, 30)] += 1.0
    sharp, blurred = (
        imaging_stats(spots[None], mask)[0, 1],
        imaging_stats(ndi.gaussian_filter(spots, 1.0)[None], mask)[0, 1],
    )
    assert blurred < 0.6 * sharp


class NoiseReader(__import__("torch").nn.Module):
    """A network whose exposed score rises with the pixel noise of the crop (what a network that reads
    imaging instead of cells does), or, with ``k = 0``, ignores it and reads the cell's size only (which
    no imaging change touches: an intensity after per-cell normalisation moves with the noise, since the
    noise moves the cell's percentiles)."""

    def __init__(self, k: float, centre: float = 0.0):
        super().__init__()
        self.k, self.centre, self.positive = k, centre, 1
        self.views = 1  # read as cropped

    @staticmethod
    def rough(x, m):  # second differences: the pixel noise, little of the cell's structure
        return (x[:, :, 2:, :] - 2 * x[:, :, 1:-1, :] + x[:, :, :-2, :]).abs().sum((1, 2, 3)) / m.sum(
            (1, 2, 3)
        ).clamp_min(1)

    def scores(self, x, m):
        import torch

        z = self.k * (self.rough(x, m) / self.centre - 1) * 20 + (m.sum((1, 2, 3)) / 400 - 1)
        return torch.stack([-z / 2, z / 2], 1), None


@pytest.fixture(scope="module")
def imaged_apart(tmp_path_factory):
    """A small plate whose exposed wells were imaged with more light than its reference wells (gain 1–1.3
    against 0.7–1, as on another day): after per-cell normalisation the reference cells are the noisier."""
    from protocell.data.synthetic import WellSpec, build_store

    return build_store(
        tmp_path_factory.mktemp("apart"),
        WellSpec(
            wells_per_condition=2,
            fields_per_well=2,
            field_size=192,
            cells_per_field=12,
            seed=3,
            well_effects={"gain": 0.3, "align": 1.0},
        ),
    )


def test_the_imaging_sensitivity_fires_for_a_network_that_reads_noise_in_either_polarity(imaged_apart):
    from conftest import tiny_data, toy_reference_fit

    from protocell.diagnostics.imaging import _Imaged, imaging_sensitivity

    dm = tiny_data(imaged_apart, normalize="cell", zero_background=True, zero_margin=2, val_fraction=0.0, seed=0)
    dm.setup()
    cells = dm.store.manifest[dm.store.manifest["label"] >= 0]
    held = pd.DataFrame({"cell_id": cells["cell_id"], "condition": cells["condition"]})
    fit = toy_reference_fit()  # affected cells score high
    # each toy network's boundary passes through its reference cells' median noise, as the network that read
    # read noise on a random plate had it (docs/method.md): a little more or less noise moves them across
    centre = {}
    for cond in ("Ref", "Exp"):
        plain = _Imaged(dm, np.flatnonzero(dm.store.manifest["condition"].to_numpy() == cond)[:60])
        centre[cond] = float(np.median([NoiseReader.rough(x[None], m[None]).item() for x, m, _, _ in plain]))
    # the Ref wells had less light: their cells are the noisier after per-cell normalisation
    assert centre["Ref"] > centre["Exp"]
    # a network that calls clean cells affected: the (noisy) reference cells made cleaner look affected
    clean = imaging_sensitivity(NoiseReader(-3.0, centre["Ref"]), dm, held, fit, ["Ref", "Exp"], max_cells=80)
    assert clean["noise_sd"]["Ref"][0] > clean["noise_sd"]["Exp"][0]
    rises = {k: clean["shifts"][f"Ref/{k}"]["change"] for k in ("less_noise", "more_light", "other_camera")}
    every = max(v["change"] for k, v in clean["shifts"].items() if k.startswith("Ref/"))
    assert clean["fires"] and clean["value"] == every and min(rises.values()) > 0.10, clean["why"]
    # the plate's own cameras: the reference wells had less light, so their change to the exposed camera is quieter
    assert clean["cameras"]["noise_sd"]["Ref"][0] > clean["cameras"]["noise_sd"]["Exp"][0]
    assert "pixel noise halved in variance" in clean["why"] and "the camera's noise variance ÷1.25" in clean["why"]
    # a network that calls noisy cells affected, with the clean (Exp-labelled) wells as its reference:
    # those cells given more noise look affected
    noisy = imaging_sensitivity(NoiseReader(3.0, centre["Exp"]), dm, held, fit, ["Exp", "Ref"], max_cells=80)
    rises = {k: noisy["shifts"][f"Exp/{k}"]["change"] for k in ("more_noise", "less_light", "other_camera")}
    every = max(v["change"] for k, v in noisy["shifts"].items() if k.startswith("Exp/"))
    assert noisy["fires"] and noisy["value"] == every and min(rises.values()) > 0.10, noisy["why"]
    # a network that reads the cells' size only: no imaging change moves the reference
    ignores = imaging_sensitivity(NoiseReader(0.0, centre["Ref"]), dm, held, fit, ["Ref", "Exp"], max_cells=80)
    assert not ignores["fires"] and abs(ignores["value"]) < 0.05, ignores["why"]
    assert set(ignores["shifts"]) == {
        f"{c}/{k}"
        for c in ("Ref", "Exp")
        for k in (
            "more_noise",
            "less_noise",
            "softer_focus",
            "sharper_focus",
            "less_light",
            "more_light",
            "other_camera",
        )
    }


def test_the_imaging_changes_are_mirrors_of_each_other():
    """``sharper`` undoes the blur ``_Imaged`` adds (to float precision inside the crop); ``less_noise``
    lowers the noise ``imaging_stats`` reads toward 1/√2 of itself and brings the image closer to its
    noise-free signal, not further."""
    import torch
    from scipy import ndimage as ndi
    from torchvision.transforms.functional import gaussian_blur

    from protocell.diagnostics.imaging import FOCUS, imaging_stats, less_noise, sharper

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    mask = ((yy - 32) ** 2 + (xx - 32) ** 2 < 26**2).astype(np.uint8)
    smooth = 0.5 + 0.2 * np.sin(yy / 6.0) * np.cos(xx / 7.0)
    puncta = smooth.copy()
    puncta[rng.integers(8, 56, 40), rng.integers(8, 56, 40)] += 2
    puncta = ndi.gaussian_filter(puncta, 0.8)
    x = torch.tensor(puncta[None], dtype=torch.float32)
    blurred = gaussian_blur(x, [5, 5], [FOCUS, FOCUS])
    assert float((blurred - x).abs().max()) > 0.01
    assert float((sharper(blurred, FOCUS) - x)[0, 4:-4, 4:-4].abs().max()) < 1e-4
    assert imaging_stats(sharper(x, FOCUS).numpy(), mask)[0, 1] > imaging_stats(x.numpy(), mask)[0, 1]
    for signal in (smooth, puncta):
        for sd in (0.01, 0.03):
            noisy = torch.tensor((signal + rng.normal(0, sd, signal.shape))[None], dtype=torch.float32)
            before = imaging_stats(noisy.numpy(), mask)[0, 0]
            quiet = less_noise(noisy, [before])
            assert 0.65 < imaging_stats(quiet.numpy(), mask)[0, 0] / before < 0.85
            inside = mask > 0
            assert np.abs(quiet[0].numpy() - signal)[inside].mean() < np.abs(noisy[0].numpy() - signal)[inside].mean()


def test_the_imaging_changes_act_on_the_camera_image_before_the_normalisation(imaged_apart):
    """``CellDataset``'s ``reimage`` runs on the stored crop before the normalisation: a change of gain
    and offset there leaves a per-cell-normalised cell exactly as it was (and not a dataset-normalised
    one). ``_Reimaged`` doubles or halves the variance of each cell's own camera noise, so a cell's
    noise as the network sees it moves by about √2 either way — and with per-cell normalisation more
    noise also lowers the cell's 1st percentile, which lifts its dark parts (what a noisier camera does,
    and the same noise added to the normalised image does not)."""
    import torch
    from conftest import tiny_data

    from protocell.data.dataset import CellDataset
    from protocell.diagnostics.imaging import _Imaged, _Reimaged, imaging_stats

    dm = tiny_data(imaged_apart, normalize="cell", zero_background=True, zero_margin=2, val_fraction=0.0, seed=0)
    dm.setup()
    rows = np.flatnonzero(dm.store.manifest["label"].to_numpy() >= 0)[:40]

    def items(per_cell, reimage=None):
        ds = CellDataset(
            dm.store, rows, dm.channel_index, dm.crop_size, dm.norm_lo, dm.norm_hi, per_cell=per_cell, reimage=reimage
        )
        return torch.stack([ds[i][0] for i in range(len(ds))])

    brighter = lambda crop, mask, cell_id: 3 * crop + 50  # noqa: E731
    assert torch.allclose(items(True, brighter), items(True), atol=1e-5)
    assert not torch.allclose(items(False, brighter), items(False), atol=1e-2)

    def noise_and_dark(reimage=None):
        cells = _Imaged(dm, rows, reimage)
        sd, dark = [], []
        for x, m, _, _ in (cells.ds[i] for i in range(len(cells))):
            sd.append(imaging_stats(x.numpy(), m[0].numpy())[0, 0])
            dark.append(float(np.quantile(x[0][m[0] > 0].numpy(), 0.1)))
        return np.median(sd), np.median(dark)

    (plain, dark), (more, dark_more), (less, _) = (
        noise_and_dark(),
        noise_and_dark(_Reimaged(noise=1.0, camera=True)),
        noise_and_dark(_Reimaged(quiet=1.0, camera=True)),
    )
    assert 1.25 < more / plain < 1.6 and 0.6 < less / plain < 0.9, (plain, more, less)
    assert dark_more > dark  # the 1st percentile fell further than the dark parts


def test_the_plate_cameras_are_read_from_the_cells_and_given_to_the_other_condition(tmp_path):
    """``plate_cameras`` reads how each condition's wells were imaged from their cells (optics blur from the
    spectra's roll-off, pixel noise once the focus is matched) and builds the change that gives the
    reference cells the exposed wells' camera. On a plate whose exposed wells are blurrier and noisier
    (blur and read-noise spreads lined up with the condition, gain equal) the blur reads near the truth,
    and the reference cells so changed read as the exposed wells do: the blur mostly gone between them,
    the noise within 20 %. The other way (sharpening, then removing noise) is an approximation: only
    recorded, never the check's alarm."""
    from conftest import tiny_data

    from protocell.data.levelling import blur_offsets
    from protocell.data.synthetic import WellSpec, build_store, well_imaging
    from protocell.diagnostics.imaging import SPECTRUM_EDGES, _camera_of, plate_cameras, sampled

    spec = WellSpec(
        wells_per_condition=2,
        fields_per_well=2,
        field_size=192,
        cells_per_field=12,
        seed=3,
        well_effects={"gain": 0.0, "blur": 0.3, "noise": 0.5, "align": 1.0},
    )
    dm = tiny_data(build_store(tmp_path, spec), normalize="cell", zero_background=True, val_fraction=0.0, seed=0)
    dm.setup()
    rows = {c: np.flatnonzero(dm.store.manifest["condition"].to_numpy() == c) for c in ("Ref", "Exp")}
    imaging = pd.DataFrame(well_imaging(spec)).groupby("condition")["blur"].apply(lambda s: float((s**2).mean()))
    truth = imaging["Exp"] - imaging["Ref"]  # σ² of the optics, px²: 0.36 here
    stored = {cond: sampled(dm, rows[cond][:200])[1] for cond in rows}
    cams = plate_cameras(stored, "Ref", "Exp")
    assert np.all(np.abs(cams["blur_px2"] - truth) < 0.3 * truth), (cams["blur_px2"], truth)
    to_exp, to_ref = cams["changes"]["Ref"], cams["changes"]["Exp"]
    assert np.all(to_exp.blur > 0.4) and not to_exp.sharpen.any() and np.all(to_exp.noise > 0)
    assert np.all(to_ref.sharpen > 0.4) and not to_ref.blur.any()
    noise, power = _camera_of(stored["Ref"], to_exp)
    exp_noise, exp_power = _camera_of(stored["Exp"])
    left = blur_offsets({"Ref": power, "Exp": exp_power}, SPECTRUM_EDGES)
    assert np.all(np.abs(left["Exp"] - left["Ref"]) < 0.35 * np.abs(cams["blur_px2"])), left
    assert np.all(np.abs(noise / exp_noise - 1) < 0.2), (noise, exp_noise)


def test_cells_too_small_for_a_spectrum_are_read_for_their_noise_alone():
    """A cell whose mask leaves fewer than 16 px after the spectrum's erosion gives no power spectrum:
    ``_camera_of`` says so (None) instead of averaging nothing into NaN, and its noise is still read."""
    from protocell.diagnostics.imaging import _camera_of

    rng = np.random.default_rng(0)
    crop = (100 + rng.normal(0, 5, (2, 32, 32))).astype(np.float32)
    small = np.zeros((32, 32), np.uint8)
    small[12:20, 12:20] = 1
    noise, power = _camera_of([(crop, small)] * 3)
    assert power is None and noise.shape == (2,) and np.all(noise > 0)
    big = np.zeros((32, 32), np.uint8)
    big[4:28, 4:28] = 1
    assert _camera_of([(crop, big)])[1].shape == (2, 25)
