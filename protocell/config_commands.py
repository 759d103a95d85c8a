"""Structured configs of prepare.py and score.py: the types and ranges of their keys, in one place (train's
are ``protocell.config``, with the same ``rule``).

The defaults mirror ``conf/prepare.yaml`` and ``conf/score.yaml`` (``tests/unit/test_config_defaults.py``
fails when they drift apart). ``register()`` stores them in Hydra's ConfigStore as ``prepare_schema`` and
``score_schema``, listed first in those files' defaults: Hydra refuses a wrong type while composing
(``workers=abc``, naming the key), and the CLI refuses an out-of-range value with
``protocell.config_check.validate(cfg, schema)`` before any work starts (``config value key=value is
invalid: need``). The library entry points check the same rules on the values they are given
(``protocell.prepare.settings.validate``, ``protocell.score.run.score_run``), with the checks that need
several keys or the files (``normalize.low < high``, ``shard < shards``, an existing ``input``).
"""

from dataclasses import dataclass, field
from typing import Any

from protocell.config import _int, _one_of, rule, threads_rule

SHARES = ("all", "merge")  # shard: besides one share's number 0 … shards − 1
PREPARE_MODES = ("plates", "crops")  # plates: raw fields → segment → crops | crops: pre-cut crops (docs/crops.md)
MASK_MODES = ("auto", "files", "segment", "none")  # crops.masks (mode=crops)
STORE_DTYPES = ("uint16", "float32")  # store_dtype of a prepared store


def _bool(v) -> bool:
    return isinstance(v, bool)


def _number(check):
    """``check`` on a number (not a bool); anything else breaks the rule."""
    return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and check(v)


def _share(v) -> bool:
    return v in SHARES or _int(0)(v)


# ---------------------------------------------------------------- score.py


@dataclass
class ScoreDataConfig:
    path: Any = None  # a crop store, a list of them (data.path=[a,b]), or null: the run's own
    batch_size: int | None = rule(
        lambda v: v is None or _int(1)(v), "an integer ≥ 1, or null (the run's data.eval_batch_size)", None
    )
    num_workers: int = rule(_int(0), "an integer ≥ 0 (DataLoader workers)", 0)


@dataclass
class ScoreConfig:
    run: str = "???"  # a train.py run folder
    data: ScoreDataConfig = field(default_factory=ScoreDataConfig)
    out: str | None = None  # null: the run folder
    bootstrap: int = rule(_int(1), "an integer ≥ 1 (resamples for the CIs)", 200)
    nearest: int = rule(_int(1), "an integer ≥ 1", 3)
    top_prototypes: int = rule(_int(0), "an integer ≥ 0", 3)
    min_cells: int = rule(_int(1), "an integer ≥ 1", 20)
    seed: int = 0
    fdr: float = rule(_number(lambda v: 0 < v < 1), "a false discovery rate in (0, 1), e.g. 0.05", 0.05)
    bscore: bool = rule(_bool, "true or false", False)
    # each plate's wells brought to its own blurriest and noisiest well's imaging before the pass
    # (protocell.data.levelling.estimate_plates): a dimmer outer ring then weakens every well alike
    level_imaging: bool = rule(_bool, "true or false", False)
    # each plate zone (outer ring, inner wells) read against the run's control cells re-imaged as that zone is
    # (protocell.score.zones): a dimmer ring or plate no longer reads low; on by default (docs/score.md)
    match_imaging: bool = rule(_bool, "true or false", True)
    progress: bool = True
    wandb: bool = True
    threads: int | None = threads_rule(2)
    shards: int = rule(_int(1), "an integer ≥ 1: the number of tasks the cells are dealt to", 1)
    # all | merge | a share 0 … shards − 1 (that bound: score_run, it needs shards)
    shard: Any = rule(
        _share,
        "all (every cell here), a share 0 … shards − 1, or merge (the tables from the finished shares)",
        "all",
    )
    debug: bool = False


# ---------------------------------------------------------------- prepare.py


@dataclass
class ChannelsConfig:
    """Group ``channels`` (conf/channels/): that ``main`` and ``second`` are two of ``names`` is checked
    by ``protocell.prepare.settings`` (several keys)."""

    names: list[str] = field(default_factory=lambda: ["actin", "nuclei"])  # multi-channel files: in file order
    main: str = "actin"  # cytoplasm / cell body: segmentation's main channel
    second: str = "nuclei"  # nuclei: seeds
    map: dict[str, str] = field(default_factory=dict)  # raw channel value → name


@dataclass
class CropsConfig:
    masks: str = rule(_one_of(MASK_MODES), f"one of {MASK_MODES}", "auto")


@dataclass
class TileConfig:
    size: int = rule(_int(64), "an integer ≥ 64", 650)  # core tile edge (pixels)
    halo: int | None = None  # pixels; ≥ crop_size/2 + 1 (settings: it needs cells.crop_size)


@dataclass
class NormalizeConfig:
    """Percentiles per channel (low → 0, high → 1); low < high: settings (two keys)."""

    low: float = rule(_number(lambda v: 0 <= v <= 100), "a percentile in [0, 100]", 1.0)
    high: float = rule(_number(lambda v: 0 <= v <= 100), "a percentile in [0, 100]", 99.8)


@dataclass
class CellsConfig:
    """Crop edge and cell filters; 0 < min_area ≤ max_area: settings (two keys)."""

    crop_size: int = rule(_int(16), "an integer ≥ 16", 64)  # pixels
    min_area: int = 80  # pixels
    max_area: int = 6000
    min_solidity: float = 0.0  # area / convex area; 0 = off
    max_eccentricity: float = 1.0  # 1 = off


@dataclass
class PrepareSplitConfig:
    test_fraction: float = rule(_number(lambda v: 0 < v < 1), "in (0, 1)", 0.5)
    seed: int = 0


@dataclass
class AugmentConfig:
    copies: int = rule(_int(0), "≥ 0 (0 = off)", 2)  # augmented copies per training cell
    rotate: float = 180.0  # degrees
    shear: float = 10.0  # degrees
    skew: float = 0.05  # fraction of the crop
    flip: bool = True
    seed: int = 0


@dataclass
class SummaryConfig:
    overlays: int = 3  # overlay PNGs (0 = none)


@dataclass
class PrepareConfig:
    segmentation: Any = None  # group segmentation/: its keys depend on the method (checked by settings)
    channels: ChannelsConfig = field(default_factory=ChannelsConfig)
    mode: str = rule(
        _one_of(PREPARE_MODES), f"one of {PREPARE_MODES}: raw fields, or a folder of pre-cut crops", "plates"
    )
    input: str = "???"  # folder of raw images, or of crops (mode=crops)
    metadata: str | None = None  # mode=crops: CSV
    crops: CropsConfig = field(default_factory=CropsConfig)
    plate_map: str | None = None  # plate_map or pattern, exactly one: settings
    pattern: str | None = None
    output: str | None = None  # null: outputs/prepared/<input name>-<hash>
    overwrite: bool = rule(_bool, "true or false", False)
    conditions: list[str] | None = None  # class order, the reference first; null: by name
    workers: int = rule(_int(1), "an integer ≥ 1", 2)
    shards: int = rule(
        _int(1), "an integer ≥ 1: the number of tasks the images are dealt to (docs/usage.md, 'A screen on SLURM')", 1
    )
    # all | merge | a share 0 … shards − 1 (that bound: settings, it needs shards)
    shard: Any = rule(
        _share,
        "all (every image here, then the store), a share 0 … shards − 1, or merge (the store from the finished shares)",
        "all",
    )
    progress: bool = True
    debug: bool = False
    tile: TileConfig = field(default_factory=TileConfig)
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    denoise_sigma: float = rule(_number(lambda v: v >= 0), "≥ 0 (0 = off)", 1.0)  # Gaussian σ, pixels
    cells: CellsConfig = field(default_factory=CellsConfig)
    store_dtype: str = rule(_one_of(STORE_DTYPES), f"one of {STORE_DTYPES}", "uint16")
    shard_size: int = 2048  # cells per shard file
    split: PrepareSplitConfig = field(default_factory=PrepareSplitConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    summary: SummaryConfig = field(default_factory=SummaryConfig)


def register() -> None:
    """Put the schemas in Hydra's ConfigStore (``conf/prepare.yaml`` and ``conf/score.yaml`` list
    ``prepare_schema`` and ``score_schema`` first)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="prepare_schema", node=PrepareConfig)
    ConfigStore.instance().store(name="score_schema", node=ScoreConfig)
