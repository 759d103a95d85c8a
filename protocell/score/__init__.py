"""Apply a trained run to new wells: per-cell calls, per-well affected fractions with CIs, prototype
enrichment and dose–response (``score_run`` writes them; ``score_store`` returns the cells table)."""

from protocell.score.run import score_run, score_store

__all__ = ["score_run", "score_store"]
