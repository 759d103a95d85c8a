"""Where a run's fraction error and interval width come from: its own cells re-drawn under two models.

    python experiments/interval_model.py <run folders…> [--draws 40] [--intervals 10] [--out parts.csv]

For a finished run on built-in wells (the cells' truth is in its predictions), the held-out cells are
re-drawn ``--draws`` times keeping every well's size, its target flag and each cell's true state; a cell's
score is drawn from a pool of the run's own scores (logit, plus a small jitter of 0.15 × the pool's SD)

- ``wells alike``: the pool of its condition and state — every well of a condition scores its unaffected
  (and its affected) cells alike, but an exposed well's unaffected cells score as the run's exposed wells'
  do, which may differ from the reference wells';
- ``states alike``: the pool of its state over both conditions — the estimator's assumption holds exactly.

Per model: the mean and SD of the estimate's error (estimate − truth of the re-drawn target cells) and,
on the first ``--intervals`` draws, the shipped interval's SD, half-width and coverage. Beside it the
run's own interval and its SD. A run's error that ``wells alike`` reproduces comes from its conditions'
unaffected cells scoring apart — no resampling of wells can see it; an interval much wider on the run's
own cells than under ``wells alike`` comes from its wells scoring apart. docs/results.md reads the table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from interval_replay import held_out  # noqa: E402

from protocell.evaluate.fraction import ci, condition_fractions, fit_reference, refit_draws  # noqa: E402

JITTER = 0.15  # of the pool's logit SD: a smoothed bootstrap, so that no two re-drawn cells tie


def estimate(cells: pd.DataFrame) -> dict | None:
    """Each target condition's fraction, as a run reports it (``affected_fractions``' point estimate)."""
    fit = fit_reference(cells["score"].to_numpy(), cells["exposed"].to_numpy())
    return condition_fractions(cells, fit, conditions(cells)) if fit["ok"] else None


def interval(cells: pd.DataFrame, rng: np.random.Generator, n_boot: int = 200) -> dict:
    """The shipped interval's draws (``refit_draws``), per condition."""
    draws = refit_draws(cells, conditions(cells), n_boot, rng)
    return {c: np.array([d[c] for d in draws]) for c in (draws[0] if draws else {})}


def conditions(cells: pd.DataFrame) -> list:
    return list(dict.fromkeys(cells.loc[cells["target"], "condition"]))


def redraw(cells: pd.DataFrame, by: list[str], rng: np.random.Generator) -> pd.DataFrame:
    p = np.clip(cells["score"].to_numpy(), 1e-6, 1 - 1e-6)
    logit = np.log(p / (1 - p))
    out = cells.copy()
    scores = out["score"].to_numpy().copy()
    for idx in cells.groupby(by).indices.values():
        pool = logit[idx]
        drawn = rng.choice(pool, len(idx)) + rng.normal(0, JITTER * pool.std(), len(idx))
        scores[idx] = 1 / (1 + np.exp(-drawn))
    out["score"] = scores
    return out


def parts(run: Path, draws: int, intervals: int, seed: int = 1) -> list[dict]:
    _, cells = held_out(run)
    rng = np.random.default_rng(seed)
    own = estimate(cells) or {}
    own_draws = interval(cells, rng)
    target = cells[cells["target"]]
    rows = []
    for cond in own:
        truth = float((target.loc[target["condition"] == cond, "true_label"] == 1).mean())
        lo, hi = ci(own_draws.get(cond, []))
        rows.append(
            {"run": str(run), "condition": cond, "model": "the run's cells", "error_mean": own[cond] - truth}
            | {"interval_sd": float(np.std(own_draws[cond])), "half_width": (hi - lo) / 2, "covers": lo <= truth <= hi}
        )
    for model, by in (("wells alike", ["condition", "true_label"]), ("states alike", ["true_label"])):
        errors, sds, halves, covers = (
            {c: [] for c in own},
            {c: [] for c in own},
            {c: [] for c in own},
            {c: [] for c in own},
        )
        for k in range(draws):
            new = redraw(cells, by, rng)
            e = estimate(new)
            if e is None:
                continue
            t = new[new["target"]]
            for cond in own:
                truth = float((t.loc[t["condition"] == cond, "true_label"] == 1).mean())
                errors[cond].append(e[cond] - truth)
                if k < intervals:
                    d = interval(new, rng)[cond]
                    lo, hi = ci(d)
                    sds[cond].append(float(np.std(d)))
                    halves[cond].append((hi - lo) / 2)
                    covers[cond].append(lo <= truth <= hi)
        for cond in own:
            rows.append(
                {"run": str(run), "condition": cond, "model": model, "error_mean": float(np.mean(errors[cond]))}
                | {"error_sd": float(np.std(errors[cond], ddof=1)), "interval_sd": float(np.mean(sds[cond]))}
                | {"half_width": float(np.mean(halves[cond])), "covers": float(np.mean(covers[cond]))}
            )
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--draws", type=int, default=40)
    ap.add_argument("--intervals", type=int, default=10)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    table = pd.DataFrame([r for run in a.runs for r in parts(run, a.draws, a.intervals)])
    if a.out:
        table.to_csv(a.out, index=False)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
