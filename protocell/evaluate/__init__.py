"""What a run's held-out predictions mean, one job a module.

- ``predictions``: the network's predict outputs → one row per cell; ``evaluate``, the held-out tables and
  the test metrics; ``fractions``, the affected fraction of each condition and test well.
- ``fraction``: the affected-fraction estimator (mixture proportion from the held-out control cells, the
  per-cell likelihood ratio, EM per well, bootstrap CIs).
- ``calibration``: the cell call — the fraction fit's posterior (``mixture``, the default), a noisy-label
  sigmoid, Platt, or the raw argmax.
- ``status``: the finished run's ``ok`` / ``warning`` / ``incomplete`` / ``failed`` and why.
- ``truth``: scores against the per-cell truth where it is known (built-in wells).
- ``localisation``: where prototypes sit against the planted texture and the cell mask.

The label-free checks a status reads are ``protocell.diagnostics``.
"""
