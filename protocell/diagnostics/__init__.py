"""Label-free checks that a run's answer can be trusted: does the network read the cells, or the wells?

A network trained on well labels can learn what the wells share instead of what the cells carry —
imaging (gain, focus, noise), plating, position — and then it reports confident, wrong fractions. No
ground truth is needed to see most of it: wells that should agree, and cells it has and has not
seen, tell. Each check returns ``{"value", "threshold", "fires", "why", ...}``; a check that fires
makes the run's status ``warning`` (``evaluate.run_status``) and marks its affected fraction
unreliable. Thresholds are effect sizes a user would act on, and a check fires only when its effect
is also beyond sampling noise (false-alarm rates measured on the robustness matrices: docs/method.md).

- ``reference_wells_agree``: the held-out reference wells' affected fractions spread more than
  their cells explain (a homogeneity test over wells, and the excess SD beyond sampling > 0.05).
  Untreated wells are replicates: a network that reads the cells gives them one fraction.
- ``memorised_wells``: held-out images of *training* wells are told apart (well-label AUROC) better
  than cells of wells never trained on (> 0.05 and beyond 1.96 standard errors): the network
  recognises the wells it trained on. Only where both kinds of held-out cells exist
  (``data.split_by=image``).
- ``imaging_sensitivity``: the held-out cells of each condition re-imaged a little differently and
  re-scored: on the network's input, pixel noise doubled or halved in variance and focus softened or
  sharpened by 0.35 px; on the stored image before the run's normalisation, the camera's noise variance
  ×1.25 or ÷1.25 (±20 % of exposure), and **the other condition's camera** as this plate's cells show it
  (``plate_cameras``: optics blur from the cells' spectra, then the pixel noise — the reference cells
  imaged as the exposed wells were, however far apart the two were imaged). It fires when the
  **reference** cells' affected fraction rises by more than 0.10 under any of the seven: a different image of an unaffected cell is still an unaffected
  cell, so no imaging change can give reference cells the exposed state's evidence — a network that
  finds it there reads imaging, and a reference well imaged that way would be called affected. The
  exposed cells' shifts are recorded but do not fire: a worse image can erase real evidence (an exposed fraction
  falling under noise is what a network that reads the cells does too: 0.05–0.19 on runs that met every
  bar), and with both directions on each axis a network that reads an imaging difference in either
  polarity moves the reference one way or the other. An intervention, not a correlation: the six fixed
  changes need no estimate of how this plate's wells differ (per-cell medians of noise and sharpness can
  miss it: 0.003 apart on a plate whose unaffected cells the network told apart at AUROC 0.92); the
  seventh reads the difference from the spectra's roll-off, which those medians do not, and reaches
  cameras further apart than ±20 % (a plate whose exposed wells had +45 % read noise and +26 % blur
  said ``ok`` with the fraction 0.66 too high under the six). Measured: docs/method.md.
- ``surroundings_sensitivity``: the held-out cells of each condition re-scored inside the surroundings
  (background, neighbours, debris) of the other condition's cells, their own pixels kept. It fires when
  the reference fraction rises or the exposed fraction falls by more than 0.10: nothing of the cells
  changed, so a network that reads the cells has the same evidence, and one that moves reads what lies
  around them — a background that differs by condition in every well, which no check above sees (on
  ``mask=off`` runs it said ``ok`` with a fraction of 1.00 for 0.50). With the background zeroed
  (``mask=on``) nothing around a cell reaches the network, and the check says so without scoring.
- ``edge_layout``: on some plate one condition's wells sit on the outer ring and the other's inside it
  (Fisher exact, p < 0.01) and the ring is imaged differently (its wells' brightness against the inner
  wells of the same treatments, p < 0.01): an edge effect lines up with the condition. A design check —
  no intervention on the cells sees a plate position (``layout``).
- ``calls_match_fraction``: per condition, the share of cells called affected against the fraction
  (the mean posterior of the same fit): apart by more than its CI and 0.05, the scores do not separate
  affected from unaffected cells well enough to call single cells.
- ``fraction_precision``: each condition's fraction must be known to ±0.10 (its 95 % CI over held-out
  wells, refitting the reference each draw) from at least 3 held-out wells. A wide interval is the run
  saying it does not know: reported with a point estimate and ``ok``, a fraction 0.115 off the truth with
  a CI of 0.41–0.85 reads as an answer (trained on two plates imaged differently, docs/score.md).

The checks on held-out predictions are in ``wells``, the interventions in ``imaging`` and ``surroundings``,
the plate layout in ``layout``.
"""

from __future__ import annotations

import pandas as pd

from protocell.data.plate_map import PlateMapError
from protocell.diagnostics.base import check
from protocell.diagnostics.imaging import imaging_sensitivity
from protocell.diagnostics.layout import LAYOUT_P, edge_layout, wells_with_brightness
from protocell.diagnostics.surroundings import surroundings_sensitivity
from protocell.diagnostics.wells import calls_match_fraction, fraction_precision, memorised_wells, reference_wells_agree


def run_diagnostics(
    test: pd.DataFrame,
    val: pd.DataFrame | None,
    train_wells: set[str],
    class_names: list[str],
    fraction: dict,
    n_boot: int = 200,
    module=None,
    dm=None,
) -> dict:
    """Every check on a finished run's held-out predictions (``evaluate``'s test and validation tables;
    ``train_wells``: the wells with training cells); with the trained ``module`` and its DataModule
    ``dm``, the imaging and surroundings interventions too."""
    held = pd.concat([test] + ([val] if val is not None else []), ignore_index=True)
    held = held.assign(seen=held["well"].astype(str).isin(train_wells))
    out = {"memorised_wells": memorised_wells(held, class_names[-1])}
    if fraction.get("available"):
        out["reference_wells_agree"] = reference_wells_agree(held, fraction["fit"], class_names[0], n_boot)
        out["calls_match_fraction"] = calls_match_fraction(fraction)
        out["fraction_precision"] = fraction_precision(fraction)
        if module is not None and dm is not None:
            out["imaging_sensitivity"] = imaging_sensitivity(module, dm, held, fraction["fit"], class_names)
            out["surroundings_sensitivity"] = surroundings_sensitivity(module, dm, held, fraction["fit"], class_names)
    if dm is not None:
        try:
            out["edge_layout"] = edge_layout(wells_with_brightness(dm.store), class_names)
        except PlateMapError as err:  # score refuses such a store; the run's other answers still stand
            out["edge_layout"] = check(None, LAYOUT_P, False, f"not tested: {err}")
    return out
