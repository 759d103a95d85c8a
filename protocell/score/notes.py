"""The sentences a score's page and ``score.json`` say about how it measured: how cells were
normalised, how the cell call was made, which plates' reference wells read differently.
"""

from __future__ import annotations

import pandas as pd

from protocell.data.store import CropStore
from protocell.runs import Run
from protocell.score.cells import own_store
from protocell.score.source import is_mixture


def normalisation_note(run: Run, stores: list[CropStore]) -> str:
    mode = run.dm.normalize
    how = {
        "cell": "each cell by the 1st and 99.8th percentiles of its own pixels, so a cell's overall brightness "
        "(and a well's gain) is invisible to the network, by design",
        "dataset": "fixed per-channel ranges taken from the training crops, so a plate imaged at another gain "
        "or exposure shifts every cell it holds",
        "none": "no normalisation: the stored values as they are",
    }[mode]
    note = f"Cells are normalised as in training (data.normalize={mode}): {how}."
    if any(s.info.get("source") == "prepare" for s in stores):
        note += (
            " prepare stored each image normalised by its own percentiles: plates imaged at different "
            "exposures land on one scale, but whatever shifts an image's percentiles shifts every cell in it "
            "— a treatment that brightens or dims whole images is not measured as such, and a well much denser "
            "or sparser than the reference (more or less background in its images) is scaled differently."
        )
    others = [str(s.root) for s in stores if not own_store(run, s)]
    if others:
        note += (
            f" {'This store' if len(others) == 1 else 'These stores'} ({', '.join(others)}) "
            f"{'is' if len(others) == 1 else 'are'} not the one the run trained on ({run.dm.path}): the estimate "
            "holds as far as its unaffected cells look like that plate's reference cells."
        )
    return note


def read_differently_note(table: pd.DataFrame) -> str:
    """The page's line for ``screen.plates_read_differently``."""
    if not len(table):
        return "— (one plate, or no reference wells off the run's plates)"
    hit = table[table["flag"]]
    if not len(hit):
        return "none (every other plate's reference wells read like the run's)"
    return "; ".join(
        f"{r.plate}: reference wells {r.reference_median:.2f} vs {r.training_plates_reference_median:.2f} "
        f"(p = {r.mann_whitney_p:.1g}) — its fractions are biased, read them with care"
        for r in hit.itertuples()
    )


def call_note(calibration: dict) -> str:
    """How the cell call (p_affected > 0.5) was made, for score.json and the page."""
    if is_mixture(calibration):
        return (
            "The cell call (p_affected > 0.5) is the same fit's posterior at the cell's well's fraction "
            "(calibration=mixture): one model, so a well's mean p_affected is its affected fraction."
        )
    return (
        "The cell call (p_affected > 0.5) is the noisy-label calibration "
        f"(P(affected | score) = σ({calibration['a']:.3g}·logit(score) + {calibration['b']:.3g}))."
    )
