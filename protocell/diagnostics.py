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
  than cells of wells never trained on (> 0.03 and beyond 1.96 standard errors): the network
  recognises the wells it trained on. Only where both kinds of held-out cells exist
  (``data.split_by=image``).
- ``calls_match_fraction``: per condition, the share of cells called affected against the fraction
  (the mean posterior of the same fit): apart by more than its CI and 0.05, the scores do not separate
  affected from unaffected cells well enough to call single cells.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from protocell.metrics.truth import auroc, auroc_se

SPREAD = 0.05          # excess SD of reference wells' fractions beyond their cells' sampling
GAP = 0.03             # well-label AUROC gap, seen wells − unseen wells
CALLS = 0.05           # |called share − fraction| beyond the CI
MIN_CELLS = 20         # cells a well needs to be judged


def _check(name: str, value: float, threshold: float, fires: bool, why: str, **extra) -> dict:
    return {"value": None if value is None or not math.isfinite(value) else float(value),
            "threshold": threshold, "fires": bool(fires), "why": why, **extra}


def reference_wells_agree(held: pd.DataFrame, fit: dict, reference: str, n_boot: int = 200, seed: int = 0) -> dict:
    """Excess spread of the held-out reference wells' fractions (``held``: well, condition, score)."""
    from scipy.stats import chi2

    from protocell.fraction import bootstrap_cells, mixture_fraction, reference_lr

    rng = np.random.default_rng(seed)
    ref = held[held["condition"] == reference]
    rows = []
    for well, g in ref.groupby("well", sort=True):
        if len(g) < MIN_CELLS:
            continue
        lr = reference_lr(g["score"].to_numpy(), fit)
        boots = bootstrap_cells(lr, n_boot, rng)
        rows.append((str(well), mixture_fraction(lr), float(np.nanstd(boots, ddof=1)), len(g)))
    if len(rows) < 3:
        return _check("reference_wells_agree", None, SPREAD, False,
                      f"{len(rows)} held-out {reference} well(s) with ≥ {MIN_CELLS} cells: three are needed to judge",
                      n_wells=len(rows))
    f = np.array([r[1] for r in rows])
    se = np.maximum(np.array([r[2] for r in rows]), 1e-3)      # a fraction pinned at 0 still has sampling noise
    w = 1 / se ** 2
    mean = float((w * f).sum() / w.sum())
    q = float((w * (f - mean) ** 2).sum())
    p = float(chi2.sf(q, len(f) - 1))
    excess = math.sqrt(max(0.0, float(np.var(f, ddof=1)) - float(np.mean(se ** 2))))
    fires = excess > SPREAD and p < 0.01
    why = (f"the {len(f)} held-out {reference} wells' affected fractions ({', '.join(f'{v:.2f}' for v in f)}) differ by "
           f"an SD of {excess:.3f} beyond what their cells explain (homogeneity p = {p:.2g}): " +
           ("replicate untreated wells get different answers, so the network reads something the wells do not "
            "share (imaging, plating) and the fractions carry it" if fires else "they agree"))
    return _check("reference_wells_agree", excess, SPREAD, fires, why, p_value=p, n_wells=len(f),
                  wells={r[0]: round(r[1], 4) for r in rows})


def memorised_wells(held: pd.DataFrame, exposed: str) -> dict:
    """Well-label AUROC on held-out cells of training wells (``seen``) minus that of wells never trained on."""
    def part(cells: pd.DataFrame) -> tuple[float, float, int]:
        y = (cells["condition"] == exposed).to_numpy()
        a = auroc(cells["score"].to_numpy(), y.astype(int))
        return a, auroc_se(a, int(y.sum()), int((~y).sum())), len(cells)

    seen, unseen = held[held["seen"]], held[~held["seen"]]
    if min(seen["condition"].nunique() if len(seen) else 0, unseen["condition"].nunique() if len(unseen) else 0) < 2:
        return _check("memorised_wells", None, GAP, False,
                      "every held-out cell comes from wells the network never trained on (or none does): nothing to "
                      "compare", n_seen=len(seen), n_unseen=len(unseen))
    (a1, s1, n1), (a2, s2, n2) = part(seen), part(unseen)
    gap, se = a1 - a2, math.sqrt(s1 ** 2 + s2 ** 2)
    fires = gap > GAP and gap > 1.96 * se
    why = (f"well-label AUROC {a1:.3f} on held-out images of training wells ({n1} cells) against {a2:.3f} on wells "
           f"never trained on ({n2} cells): " +
           ("the network recognises the wells it trained on; what it reports for their cells carries the wells"
            if fires else "no sign of memorised wells"))
    return _check("memorised_wells", gap, GAP, fires, why, se=se, auroc_seen=a1, auroc_unseen=a2)


def calls_match_fraction(fraction: dict) -> dict:
    """The called share of each condition against its affected fraction (``evaluate``'s metrics)."""
    worst, why = 0.0, []
    for cond, est in (fraction.get("conditions") or {}).items():
        share, f = est.get("called_share"), est.get("estimate")
        if share is None or f is None or not math.isfinite(share):
            continue
        lo, hi = est.get("ci_low", f), est.get("ci_high", f)
        lo, hi = (f, f) if not (math.isfinite(lo) and math.isfinite(hi)) else (lo, hi)
        off = max(lo - share, share - hi, 0.0)
        worst = max(worst, off)
        why.append(f"{cond}: {share:.3f} called against a fraction of {f:.3f} [{lo:.3f}, {hi:.3f}]")
    fires = worst > CALLS
    return _check("calls_match_fraction", worst, CALLS, fires,
                  "; ".join(why) + (": the scores do not separate affected from unaffected cells well enough to call "
                                    "single cells" if fires else ""))


def run_diagnostics(test: pd.DataFrame, val: pd.DataFrame | None, train_wells: set[str], class_names: list[str],
                    fraction: dict, n_boot: int = 200) -> dict:
    """Every check on a finished run's held-out predictions (``evaluate``'s test and validation tables;
    ``train_wells``: the wells with training cells)."""
    held = pd.concat([test] + ([val] if val is not None else []), ignore_index=True)
    held = held.assign(seen=held["well"].astype(str).isin(train_wells))
    out = {"memorised_wells": memorised_wells(held, class_names[-1])}
    if fraction.get("available"):
        out["reference_wells_agree"] = reference_wells_agree(held, fraction["fit"], class_names[0], n_boot)
        out["calls_match_fraction"] = calls_match_fraction(fraction)
    return out
