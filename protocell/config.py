"""Structured configs: the types and ranges of every train.py key, in one place.

Values live in the YAML under ``conf/`` (what a user reads and overrides; the groups are YAML files);
the defaults below mirror the default composition (``python train.py`` with no override) so that a
Python user of the schema and a CLI user get the same model — ``tests/unit/test_config_defaults.py``
fails when the two drift apart.

The dataclasses below are registered in Hydra's ConfigStore as ``train_schema`` and listed first in
``conf/train.yaml``'s defaults, so Hydra checks every key's *type* while composing (an unknown key or
``data.batch_size=abc`` is refused with the key's name). *Ranges* sit beside the types as field
metadata (``rule(check, need)``) and ``protocell.config_check.validate(cfg)`` checks them all before
any work starts, with one message shape: ``config value key=value is invalid: need``. Checks that need several values
or the data (a warm-up shorter than the run, a channel the store has) live in the constructors
that use them (``training.schedule``, ``CellDataModule``) and raise the same ``ConfigError``.
"""

import signal
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional

from protocell.errors import ConfigError

LAST_LAYER_MODES = ("trained", "frozen")
CALIBRATIONS = ("mixture", "noisy_label", "platt", "none")
NORMALIZE = ("auto", "dataset", "cell", "none")
SPLIT_BY = ("auto", "image", "well", "plate")
LABEL_SOURCES = ("well", "truth")  # data.labels
PRETRAIN_KEEP = ("best", "last")
SEPARATIONS = ("reference", "all")
INIT_METHODS = ("evidence", "kmeans", "random")
HEADS = ("protopnet", "baseline")
VIEWS = (1, 8)  # views: orientations of each cell averaged in a run's predictions (protocell.model.views)
DEFAULT_VIEWS = 8  # conf/train.yaml's; the schema's default and what make bench measures
HEATMAPS = ("contour", "panel")  # report.heatmap
REPLICATE_UNITS = ("auto", "well", "image", "field")  # report.unit
LR_GROUPS = ("features", "add_on", "prototypes", "last_layer", "pretrain")  # optim.lr: a rate for each


def rule(check, need: str, default=MISSING, **kw):
    """A dataclass field with a range check (``check(value) -> bool``) and what it needs."""
    meta = {"check": check, "need": need}
    if default is MISSING:
        return field(metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


def _int(lo: int):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo


def threads_rule(default: Optional[int]):
    """``threads`` of every command: torch's intra-op threads, or null (torch's default)."""
    return rule(lambda v: v is None or _int(1)(v), "an integer ≥ 1 or null", default)


def _one_of(options):
    return lambda v: v in options


def _fraction(lo_open: bool = True):
    return (lambda v: 0 < v < 1) if lo_open else (lambda v: 0 <= v < 1)


@dataclass
class PhotometricConfig:
    gain: float = rule(lambda v: v >= 0, "≥ 0 (0 = off)", 0.0)
    blur: float = rule(lambda v: v >= 0, "≥ 0 (0 = off)", 0.0)
    noise: float = rule(lambda v: v >= 0, "≥ 0 (0 = off)", 0.0)


@dataclass
class DoseSeriesConfig:
    """``data.synthetic.dose_series`` (``protocell.data.synthetic.DoseSeries``; ``plate=dose_series``)."""

    compound: str = "C1"
    doses: List[float] = rule(
        lambda v: len(v) > 0 and min(v) >= 0,
        "a non-empty list of doses ≥ 0 (0: vehicle)",
        default_factory=lambda: [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0],
    )
    replicates: int = rule(_int(1), "an integer ≥ 1", 3)
    ec50: float = rule(lambda v: v > 0, "> 0 (in the doses' unit)", 0.5)
    hill: float = rule(lambda v: v > 0, "> 0", 1.0)
    bottom: float = rule(lambda v: 0 <= v <= 1, "a fraction in [0, 1]", 0.05)
    top: float = rule(lambda v: 0 <= v <= 1, "a fraction in [0, 1]", 0.7)
    stress: bool = False


@dataclass
class WellEffectsConfig:
    """``data.synthetic.well_effects`` (``protocell.data.synthetic.WellEffects``; group ``well_effects``)."""

    gain: float = rule(lambda v: 0 <= v <= 0.9, "in [0, 0.9] (per-well gain 1 ± gain)", 0.2)
    blur: float = rule(lambda v: 0 <= v <= 1, "in [0, 1] (per-well optics σ 0.8·(1 ± blur) px)", 0.0)
    noise: float = rule(lambda v: 0 <= v <= 1, "in [0, 1] (per-well read noise ×(1 ± noise))", 0.0)
    align: float = rule(
        lambda v: 0 <= v <= 1,
        "a probability in [0, 1] (0 independent of the condition, 1 exposed wells imaged differently)",
        0.0,
    )


@dataclass
class PlateConfig:
    """One plate of ``data.synthetic.plates`` (``protocell.data.synthetic.Plate``; ``plate=two_plates``)."""

    name: str = rule(lambda v: bool(str(v)), "a non-empty name", "plate1")
    gain: float = rule(lambda v: v > 0, "gain > 0 (× every well's own gain)", 1.0)
    offset: float = rule(lambda v: v >= 0, "offset ≥ 0 (uniform light, in units of the brightest actin structure)", 0.0)
    edge: float = rule(lambda v: 0 <= v < 1, "edge in [0, 1) (the outer ring of wells at gain × (1 − edge))", 0.0)
    seed: Optional[int] = None  # None: data.synthetic.seed + the plate's position


def broken_rule(schema, values) -> tuple[str, object, str] | None:
    """The first field of ``values`` (a mapping, or a dataclass instance) that breaks its ``rule`` in
    ``schema``: (key, value, need), or None. How a library dataclass checks itself against the schema
    without writing its ranges a second time (``protocell.data.synthetic``)."""
    get = values.get if hasattr(values, "get") else lambda k, d=None: getattr(values, k, d)
    for f in fields(schema):
        check = f.metadata.get("check")
        value = get(f.name, f.default)
        if check is not None and value is not MISSING and not check(value):
            return f.name, value, f.metadata["need"]
    return None


def check_fields(values, schema, prefix: str) -> None:
    """Raise ``ConfigError`` naming ``prefix.key`` for the first field that breaks its rule."""
    broken = broken_rule(schema, values)
    if broken is not None:
        raise ConfigError.invalid(f"{prefix}.{broken[0]}", broken[1], broken[2])


def _plates_ok(plates) -> bool:
    return plates is None or (
        len(plates) > 0
        and len({p["name"] for p in plates}) == len(plates)
        and all(broken_rule(PlateConfig, p) is None for p in plates)
    )


@dataclass
class SyntheticConfig:
    wells_per_condition: int = rule(_int(1), "an integer ≥ 1", 8)
    fields_per_well: int = rule(_int(1), "an integer ≥ 1", 6)
    field_size: int = rule(_int(96), "an integer ≥ 96 (pixels)", 512)
    cells_per_field: int = rule(_int(1), "an integer ≥ 1", 60)
    affected_fraction: Dict[str, float] = field(default_factory=lambda: {"Ref": 0.05, "Exp": 0.5})
    confound: bool = True
    confound_under_cells: bool = False
    crop_size: int = rule(_int(16), "an integer ≥ 16", 64)
    photons: float = rule(lambda v: v > 0, "> 0", 600.0)
    read_noise: float = rule(lambda v: v >= 0, "≥ 0", 6.0)
    seed: int = 0
    dose_series: Optional[DoseSeriesConfig] = None
    well_effects: WellEffectsConfig = field(default_factory=WellEffectsConfig)
    plates: Optional[List[PlateConfig]] = rule(
        _plates_ok,
        "null or a list of plates with distinct non-empty names, gain > 0, offset ≥ 0 and edge in [0, 1)",
        None,
    )


@dataclass
class DataConfig:
    _target_: str = "protocell.data.datamodule.CellDataModule"
    # mandatory ("???"): data=synthetic sets it to null, data=prepared leaves it for the user. A schema
    # default of null would hide a data=prepared without a path (merging "???" keeps the default)
    path: Optional[str] = "???"
    crop_size: int = rule(_int(16), "an integer ≥ 16", 64)
    channels: Optional[List[str]] = None
    augment: bool = True
    photometric: PhotometricConfig = field(default_factory=PhotometricConfig)
    normalize: str = rule(_one_of(NORMALIZE), f"one of {NORMALIZE}", "cell")
    split_by: str = rule(_one_of(SPLIT_BY), f"one of {SPLIT_BY}", "auto")
    test_fraction: float = rule(_fraction(), "a fraction in (0, 1)", 0.5)
    val_fraction: float = rule(_fraction(False), "a fraction in [0, 1)", 0.2)
    batch_size: int = rule(_int(1), "an integer ≥ 1", 64)
    eval_batch_size: Optional[int] = 256
    num_workers: int = rule(_int(0), "an integer ≥ 0", 0)
    bag_size: int = rule(_int(1), "an integer ≥ 1 (1: one cell at a time)", 4)
    # what the network is trained on: the wells' labels (every real run), or each cell's true label — a
    # ceiling measured on built-in wells, never an answer (docs/results.md)
    labels: str = rule(_one_of(LABEL_SOURCES), f"one of {LABEL_SOURCES}", "well")
    # every well brought to the blurriest and noisiest well's imaging before the network reads a cell
    # (protocell.data.levelling); auto: only when the wells' optics blur lines up with the condition
    # (protocell.data.imaging_alignment); false: the cells as stored
    level_imaging: Any = rule(lambda v: isinstance(v, bool) or v == "auto", "true, false or auto", False)
    # an epoch goes round(min_epoch_cells / training cells) times (≥ 1) through the training cells: the
    # schedule's epochs were set on the built-in plate (≈ 2,200 training cells); 0: once
    min_epoch_cells: int = rule(_int(0), "an integer ≥ 0 (0: one pass an epoch)", 2000)
    seed: int = 0
    synthetic: Optional[SyntheticConfig] = None


@dataclass
class BackboneConfig:
    name: str = "vgg11_narrow"
    pretrained: bool = False
    max_rf: Optional[float] = rule(lambda v: v is None or v > 0, "a positive number or null", 46.0)
    width: float = rule(lambda v: 0 < v <= 1, "in (0, 1]", 0.125)
    batch_norm: bool = True


@dataclass
class MaskConfig:
    distance_term: bool = True
    zero_background: bool = True
    zero_margin: int = rule(_int(0), "a whole number of pixels ≥ 0", 2)


@dataclass
class LastLayerConfig:
    mode: str = rule(_one_of(LAST_LAYER_MODES), f"one of {LAST_LAYER_MODES}", "trained")


@dataclass
class ScheduleConfig:
    pretrain_epochs: int = rule(_int(0), "an integer ≥ 0", 12)
    pretrain_keep: str = rule(_one_of(PRETRAIN_KEEP), f"one of {PRETRAIN_KEEP}", "best")
    epochs: int = rule(_int(1), "≥ 1", 30)
    warm_epochs: int = rule(_int(0), "an integer ≥ 0", 2)
    push_every: int = rule(_int(1), "≥ 1", 10)
    push_start: Optional[int] = rule(lambda v: v is None or (isinstance(v, int) and v >= 1), "≥ 1 or null", 10)
    last_layer_epochs: int = rule(_int(0), "an integer ≥ 0", 5)
    lr_step_epochs: int = rule(_int(0), "an integer ≥ 0 (0 = constant rates)", 0)
    loss_ramp_epochs: int = rule(_int(0), "an integer ≥ 0", 0)


@dataclass
class ProtoPNetConfig:
    """``protopnet:``, the prototype head (keyword arguments of ``protocell.model.protopnet.ProtoPNet``)."""

    prototypes_per_class: int = rule(_int(1), "an integer ≥ 1", 10)
    prototype_dim: int = rule(_int(1), "an integer ≥ 1", 64)
    mask_penalty: Optional[float] = rule(lambda v: v is None or v > 0, "> 0 or null", None)
    incorrect_class_weight: float = -0.5


@dataclass
class PrototypesConfig:
    init: str = rule(_one_of(INIT_METHODS), f"one of {INIT_METHODS}", "evidence")
    push_unique: bool = True


@dataclass
class LossConfig:
    clst: float = rule(lambda v: v >= 0, "≥ 0", 0.8)
    sep: float = rule(lambda v: v >= 0, "≥ 0", 0.0)
    l1: float = rule(lambda v: v >= 0, "≥ 0", 1e-4)
    div: float = rule(lambda v: v >= 0, "≥ 0", 0.5)
    ref_sim: float = rule(lambda v: v >= 0, "≥ 0", 1.0)
    separation: str = rule(_one_of(SEPARATIONS), f"one of {SEPARATIONS}", "reference")


@dataclass
class OptimConfig:
    lr: Dict[str, float] = rule(
        lambda v: set(LR_GROUPS) <= set(v) and all(x >= 0 for x in v.values()),
        f"a rate ≥ 0 for each of {LR_GROUPS} (0 freezes the group)",
        default_factory=lambda: {
            "features": 1e-4,
            "add_on": 1e-3,
            "prototypes": 1e-3,
            "last_layer": 1e-2,
            "pretrain": 1e-3,
        },
    )
    weight_decay: float = rule(lambda v: v >= 0, "≥ 0", 1e-3)
    lr_gamma: float = rule(lambda v: 0 < v <= 1, "in (0, 1]", 0.1)


@dataclass
class PerformanceConfig:
    compile: bool = False
    compile_backend: str = "inductor"
    channels_last: bool = False


def signal_named(name) -> signal.Signals | None:
    """The signal a name such as ``SIGUSR2`` or ``USR2`` (sbatch ``--signal``) spells, or None."""
    found = getattr(signal, name if str(name).startswith("SIG") else f"SIG{name}", None)
    return found if isinstance(found, signal.Signals) else None


@dataclass
class SlurmConfig:
    auto_requeue: bool = True
    requeue_signal: str = rule(
        lambda v: signal_named(v) is not None, "a signal name such as SIGUSR2 (sbatch --signal)", "SIGUSR2"
    )


@dataclass
class ReportConfig:
    """How explain draws and tests (``protocell.explain.options``); explain.py reads them from the run."""

    display: Dict[str, str] = rule(lambda v: hasattr(v, "items"), "a mapping channel → colour", default_factory=dict)
    contrast: List[float] = rule(
        lambda v: len(v) == 2 and 0 <= float(v[0]) < float(v[1]) <= 100,
        "[low, high] percentiles with 0 ≤ low < high ≤ 100",
        default_factory=lambda: [0.5, 99.5],
    )
    heatmap: str = rule(_one_of(HEATMAPS), f"one of {HEATMAPS}", "contour")
    channel_panels: bool = False
    unit: str = rule(_one_of(REPLICATE_UNITS), f"one of {REPLICATE_UNITS}", "auto")


@dataclass
class TrainConfig:
    # checked in this order: mask first (the DataModule's zeroing comes from it)
    mask: MaskConfig = field(default_factory=MaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    last_layer: LastLayerConfig = field(default_factory=LastLayerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    protopnet: ProtoPNetConfig = field(default_factory=ProtoPNetConfig)
    prototypes: PrototypesConfig = field(default_factory=PrototypesConfig)
    head: str = rule(_one_of(HEADS), f"one of {HEADS}", "protopnet")
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    performance: PerformanceConfig = field(default_factory=PerformanceConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    trainer: Any = None
    logger: Any = None
    paths: Any = None
    seed: int = 0
    threads: Optional[int] = threads_rule(2)
    resume: Optional[str] = rule(lambda v: v is None or Path(v).is_file(), "an existing checkpoint file", None)
    explain: bool = True
    report: ReportConfig = field(default_factory=ReportConfig)
    strict: bool = False
    debug: bool = False
    calibration: str = rule(_one_of(CALIBRATIONS), f"one of {CALIBRATIONS}", "mixture")
    views: int = rule(_one_of(VIEWS), f"one of {VIEWS}", DEFAULT_VIEWS)


def register() -> None:
    """Put the schema in Hydra's ConfigStore (``conf/train.yaml`` lists ``train_schema`` first)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
