"""How explain draws and tests: the ``report:`` settings, one place for train.py and explain.py.

``train.py`` keeps them in the run's ``config.yaml`` (``report:`` in conf/train.yaml, typed in
``protocell.config.ReportConfig``), so the explain at the end of training and a later
``explain.py run=…`` draw the same figures; ``explain.py report.<key>=…`` overrides a key for that
call (conf/explain.yaml lists them as null: "as the run says").

- ``display``: channel name → colour (red, green, blue, magenta, cyan, yellow, grey/white or
  ``#rrggbb``) of the composite; channels left out are not drawn; empty: from the channel names
  (``protocell.explain.render.default_display``).
- ``contrast``: [low, high] percentiles of each channel over the run's cells → black and full colour.
- ``heatmap``: ``contour`` (similarity contours over the composite) or ``panel`` (a separate heat-map
  panel beside the cell): either way the cell stays readable.
- ``channel_panels``: also draw each channel alone, in grey, under the composite of a prototype.
- ``unit``: replicate unit of the population statistics, ``auto`` | ``well`` | ``image`` | ``field``
  (``protocell.explain.similarity.replicate_unit``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from omegaconf import OmegaConf

from protocell.config import ReportConfig, check_fields
from protocell.errors import ConfigError


@dataclass(frozen=True)
class ReportOptions:
    """The checked settings explain draws with (values, defaults and ranges: ``protocell.config.ReportConfig``)."""

    display: dict
    contrast: tuple
    heatmap: str
    channel_panels: bool
    unit: str


def _plain(node) -> dict:
    if node is None:
        return {}
    if OmegaConf.is_config(node):
        node = OmegaConf.to_container(node, resolve=True)
    if not isinstance(node, dict):
        raise ConfigError(f"config value report={node!r} is invalid: a mapping of report settings")
    return node


def report_options(run_report=None, override=None) -> ReportOptions:
    """The run's ``report:`` settings with ``override``'s non-null keys on top, over the defaults."""
    known = {f.name for f in fields(ReportConfig)}
    merged = asdict(ReportConfig())
    for source in (_plain(run_report), _plain(override)):
        unknown = sorted(set(source) - known)
        if unknown:
            raise ConfigError(f"config value report.{unknown[0]} is unknown: report settings are {sorted(known)}")
        merged.update({k: v for k, v in source.items() if v is not None})
    try:
        check_fields(merged, ReportConfig, "report")
    except (TypeError, ValueError) as e:  # a contrast that is no pair of numbers
        if isinstance(e, ConfigError):
            raise
        raise ConfigError.invalid("report.contrast", merged["contrast"], "[low, high] percentiles") from None
    return ReportOptions(
        display=dict(merged["display"]),
        contrast=tuple(float(v) for v in merged["contrast"]),
        heatmap=merged["heatmap"],
        channel_panels=bool(merged["channel_panels"]),
        unit=merged["unit"],
    )
