"""``CellDataModule``: the crop store split by source image, as DataLoaders.

Splits: rows without a condition (``label`` −1: wells a store holds only to be scored) belong to no
split. When the manifest's ``split`` column is filled (by ``prepare``) it is used, with ``val``
carved out of the training images; otherwise images are split here, stratified by condition:
``test_fraction`` of each condition's images to test, ``val_fraction`` of the rest to val. A source
image never lands in two splits; offline augmentations follow their original into train and are
never evaluated or pushed (the policy: ``protocell.data.split``). Normalisation ranges come from training crops only; ``normalize="auto"``
chooses ``dataset`` or ``cell`` from how ``store.json`` says the store was normalised
(``protocell.data.normalization``).

Loaders: ``train_dataloader`` (shuffled, online flips/rotations when ``augment``),
``val/test_dataloader``, ``push_dataloader`` (training originals, no augmentation: push projects
prototypes onto real cells) and ``predict_dataloader`` (test).

Under DDP (an initialised process group of ``world`` ranks) each loader deals this rank its share:
training shuffles the epoch's permutation and pads it to a multiple of ``world`` (ranks must run the
same number of steps), while val/test/predict/push take indices ``rank, rank + world, …`` with no
padding, so over all ranks every cell is evaluated, predicted and pushed exactly once
(``protocell.data.samplers``). Both subclass ``DistributedSampler``, so Lightning keeps them instead of
wrapping its own (padding) sampler.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from protocell.config import DataConfig, MaskConfig, check_fields
from protocell.data.dataset import CellDataset, EpochSampler, Photometric
from protocell.data.levelling import LevellingPlan
from protocell.data.normalization import auto_normalization
from protocell.data.samplers import BagSampler, DistributedEpochSampler, ShardSampler
from protocell.data.split import choose_split, split_rows
from protocell.data.store import CropStore, StoreError, well_key
from protocell.distributed import rank_and_world
from protocell.errors import ConfigError
from protocell.stats import validation_power

log = logging.getLogger("protocell.data")
# the smallest showable difference of affected shares (a perfect network) above which a run warns at its start
WEAK_VALIDATION = 0.2


class CellDataModule(L.LightningDataModule):
    def __init__(
        self,
        path: str,
        *,
        crop_size: int,
        channels: list[str] | None,
        zero_background: bool,
        augment: bool,
        normalize: str,
        test_fraction: float,
        val_fraction: float,
        batch_size: int,
        eval_batch_size: int | None,
        num_workers: int,
        split_by: str,
        seed: int,
        photometric: dict | None,
        zero_margin: int,
        bag_size: int,
        labels: str,
        level_imaging: bool,
        min_epoch_cells: int,
    ):
        """Every setting is given: the values live in conf/ (``data``, ``mask``) and ``protocell.config``
        (``build.build_datamodule`` passes them; a run folder's config.yaml carries its own)."""
        super().__init__()
        # the ranges of single keys are the schema's (DataConfig, MaskConfig); those that tie keys together
        # (a batch of whole bags) or need the store (the channels, the crop size) are checked here and in setup
        given = {k: v for k, v in locals().items() if k not in ("self", "path", "__class__")}
        check_fields(given, DataConfig, "data")
        check_fields(given, MaskConfig, "mask")
        self.path = Path(path)
        self.crop_size = crop_size
        self.channel_names = channels
        self.zero_background = zero_background
        self.zero_margin = int(zero_margin)
        self.augment = augment
        self.photometric = Photometric(**(photometric or {}))
        self.normalize = normalize
        self.normalize_why = f"data.normalize={normalize} (set in the config)"
        self.test_fraction, self.val_fraction = test_fraction, val_fraction
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.bag_size = int(bag_size)
        for key, value in (("data.batch_size", batch_size), ("data.eval_batch_size", self.eval_batch_size)):
            if self.bag_size < 1 or value % self.bag_size:
                raise ConfigError.invalid(
                    key,
                    value,
                    f"a multiple of data.bag_size={bag_size} (≥ 1): a batch holds whole bags of cells from one well",
                )
        self.num_workers = num_workers
        self.pin_memory = torch.cuda.is_available()  # pinned host memory feeds a GPU; nothing to gain on a CPU
        self.split_by = split_by
        self.seed = seed
        self.label_source = labels  # data.labels: well | truth
        if labels == "truth" and self.bag_size != 1:
            raise ConfigError.invalid(
                "data.bag_size",
                bag_size,
                "1 with data.labels=truth: a bag takes one label, and true labels differ from cell to cell",
            )
        self.level_imaging = level_imaging  # True, False or "auto" (the schema's rule)
        self.min_epoch_cells = int(min_epoch_cells)
        self.epoch_repeats = 1  # passes over the training cells an epoch makes (setup: data.min_epoch_cells)
        self.levelling: LevellingPlan | None = None  # over every well of the store, made in setup
        self.imaging_alignment: dict | None = None  # data.level_imaging=auto: the test and its verdict
        self.store: CropStore | None = None

    # --------------------------------------------------------------------- setup
    def setup(self, stage: str | None = None) -> None:
        if self.store is not None:
            return
        self.store = store = CropStore(self.path)  # checks every shard against the manifest (StoreError)
        if self.normalize == "auto":  # from how the store was normalised (protocell.data.normalization)
            self.normalize, self.normalize_why = auto_normalization(store.info)
            log.info("%s", self.normalize_why)
        if self.crop_size > store.crop_size:
            log.warning(
                "data.crop_size=%d is larger than the store's %d px crops (%s): every crop is upscaled "
                "×%.2f, which adds no detail and changes what a prototype's receptive field covers; set "
                "data.crop_size=%d or smaller, or re-run prepare with cells.crop_size=%d",
                self.crop_size,
                store.crop_size,
                self.path / "store.json",
                self.crop_size / store.crop_size,
                store.crop_size,
                self.crop_size,
            )
        names = self.channel_names or store.channels
        unknown = [c for c in names if c not in store.channels]
        if unknown:
            raise StoreError(f"data.channels {unknown} not in the store {self.path} (it has {store.channels})")
        self.channel_index = [store.channels.index(c) for c in names]
        self.in_channels = len(names)
        m = store.manifest
        if self.label_source == "truth":
            known = m["true_label"].to_numpy() >= 0 if "true_label" in m else np.zeros(len(m), bool)
            if not known[m["label"].to_numpy() >= 0].all():
                raise ConfigError(
                    f"data.labels=truth trains on each cell's true label, and {self.path / 'manifest.csv'} "
                    "does not know it for every labelled cell: only the built-in wells (data=synthetic) do. "
                    "Set data.labels=well"
                )
        self.num_classes = int(m["label"].max()) + 1
        self.class_names = [m.loc[m["label"] == k, "condition"].iloc[0] for k in range(self.num_classes)]
        # wells without a condition (label −1: wells to score, e.g. compounds and doses) take no split
        labelled = m["label"].to_numpy() >= 0
        self.splits = np.full(len(m), "unlabelled", dtype=object)
        self.split_unit, self.split_why = choose_split(
            m[labelled], self.test_fraction, self.val_fraction, self.split_by
        )
        log.info("split: %s", self.split_why)
        self.splits[labelled], self.split_info = split_rows(
            m[labelled], self.test_fraction, self.val_fraction, self.seed, self.split_unit
        )
        single = sorted(c for c, u in self.split_info["val_unit"].items() if u == "image")
        if single and self.val_fraction > 0:
            log.warning(
                "validation cells of %s come from images of a training well (one well left after the test "
                "split): the pretrain epoch is then chosen on wells the network trained on, which rewards "
                "recognising wells; a condition needs ≥ 3 wells for a validation well of its own",
                single,
            )
        originals = m["aug_of"].to_numpy() < 0
        self.rows = {s: np.flatnonzero(self.splits == s) for s in ("train", "val", "test")}
        self._say_validation_power(m)
        self.rows["push"] = np.flatnonzero((self.splits == "train") & originals)
        for s in ("train", "test"):
            if len(self.rows[s]) == 0:
                raise StoreError(
                    f"{self.path}: the '{s}' split is empty; the store needs at least two source images per condition"
                )
        if len(set(m.loc[self.rows["train"], "label"])) < 2:
            raise StoreError(f"{self.path}: training images hold only one condition; need both")
        self._set_epoch_repeats()
        self.norm_lo, self.norm_hi = self._norm_ranges()
        if self.level_imaging is not False:
            if self.level_imaging is True and self.normalize != "cell":
                raise ConfigError.invalid(
                    "data.level_imaging",
                    self.level_imaging,
                    f"false with data.normalize={self.normalize}: levelling reads and adds pixel noise on cells "
                    "normalised one by one (data.normalize=cell)",
                )
            from protocell.data.imaging_alignment import levelling_plan

            self.levelling, self.imaging_alignment = levelling_plan(
                store,
                originals,
                self.channel_index,
                self.class_names,
                self.seed,
                auto=self.level_imaging == "auto",
                normalize=self.normalize,
            )

    def _set_epoch_repeats(self) -> None:
        """An epoch makes round(data.min_epoch_cells / training cells) passes (≥ 1) over the training cells, each
        with its own order and augmentation: the schedule counts epochs, and was set on the built-in plate
        (≈ 2,200 training cells), so a plate with a third of its cells would get a third of the optimisation
        (a 4-well plate at low light: true AUROC 0.78 in one pass, 0.94 in three). 0: one pass."""
        n = len(self.rows["train"])
        self.epoch_repeats = max(1, round(self.min_epoch_cells / n)) if self.min_epoch_cells > 0 else 1
        self.split_info["epoch"] = {"training_cells": n, "passes": self.epoch_repeats}
        if self.epoch_repeats > 1:
            log.info(
                "training: %d cells, each epoch goes through them %d times (data.min_epoch_cells=%d: an epoch of "
                "the schedule is as much training as on the built-in plate)",
                n,
                self.epoch_repeats,
                self.min_epoch_cells,
            )

    def _say_validation_power(self, m) -> None:
        """Say, before training, what the validation cells can show at all (``stats.validation_power``):
        the smallest difference of affected shares between the conditions that the keep rule (validation
        AUROC − 2·SE > ½) passes on average; recorded in ``split_info`` (metrics.json → split) and a
        warning when even a perfect network needs more than ``WEAK_VALIDATION`` of it."""
        val = m.loc[self.rows["val"]]
        val = val[val["aug_of"] < 0]
        counts = {str(c): int(n) for c, n in val["condition"].value_counts().sort_index().items()}
        if len(counts) != 2:
            return
        perfect, good = validation_power(*counts.values())
        wells = val.assign(_w=well_key(val)).groupby("condition")["_w"].nunique()
        self.split_info["validation_power"] = {
            "cells": counts,
            "wells": {str(c): int(n) for c, n in wells.items()},
            "difference_perfect": round(perfect, 4),
            "difference_auroc_0.9": round(good, 4),
        }
        text = (
            f"validation: {' + '.join(f'{n} {c}' for c, n in counts.items())} cells in "
            f"{' + '.join(f'{int(wells[c])} {c}' for c in counts)} well(s); the keep rule (AUROC − 2·SE > ½) shows on "
            f"average only a difference of affected shares ≥ {perfect:.2f} between the conditions for a network "
            f"that tells every affected cell apart, ≥ {good:.2f} at cell AUROC 0.9"
        )
        if perfect > WEAK_VALIDATION:
            log.warning(
                "%s: a change in fewer than that share of the exposed cells cannot show here, and such a run will "
                "say failed. More validation cells lower it as 1/√n: raise data.val_fraction, or image more "
                "fields or wells",
                text,
            )
        else:
            log.info("%s", text)

    def _norm_ranges(self) -> tuple[np.ndarray, np.ndarray]:
        C = len(self.channel_index)
        if self.normalize == "none":
            return np.zeros(C, np.float32), np.ones(C, np.float32)
        rng = np.random.default_rng(self.seed)
        rows = self.rows["push"]
        sample = rng.choice(rows, size=min(256, len(rows)), replace=False)
        assert self.store is not None  # opened by setup, which calls this
        pix = np.stack([self.store.crop(int(r))[self.channel_index] for r in sample]).astype(np.float32)
        pix = pix.transpose(1, 0, 2, 3).reshape(C, -1)
        if not np.isfinite(pix).all():
            raise StoreError(f"{self.path}: crops contain NaN or inf pixels; re-run prepare on clean images")
        lo, hi = np.percentile(pix, 1, axis=1), np.percentile(pix, 99.8, axis=1)
        return lo.astype(np.float32), np.maximum(hi, lo + 1e-6).astype(np.float32)

    def dataset(self, split: str, augment: bool = False) -> CellDataset:
        """``split``'s cells; with ``data.labels=truth`` the cells the network learns from (train, val, push)
        carry their true labels and the test cells their wells' (evaluation is unchanged)."""
        self.setup()
        assert self.store is not None  # opened by setup
        rows = self.rows[split]
        truth = self.label_source == "truth" and split != "test"
        labels = self.store.manifest["true_label"].to_numpy()[rows] if truth else None
        return self.dataset_of(self.store, rows, augment, labels=labels)

    @property
    def channels(self) -> list[str]:
        """Names of the channels the network sees, in its input order."""
        self.setup()
        assert self.store is not None  # opened by setup
        return [self.store.channels[i] for i in self.channel_index]

    def dataset_of(
        self,
        store: CropStore,
        rows,
        augment: bool = False,
        labels=None,
        levelling: LevellingPlan | None = None,
        zero_background: bool | None = None,
        reimage=None,
    ) -> CellDataset:
        """Rows of any crop store with this module's data handling (channels by name, crop size,
        normalisation and its training ranges, zeroed background and margin): how ``score`` reads
        another plate as the network was trained to see cells. ``levelling``: a plan for ``store``'s wells
        (``score.level_imaging``) instead of the run's own (``data.level_imaging``, its own store only).
        ``zero_background=False``: the background kept, for a caller that zeroes it after a change of its
        own (the imaging check); ``reimage``: ``CellDataset``'s change of imaging before the normalisation."""
        zero = self.zero_background if zero_background is None else zero_background
        if levelling is None and self.levelling is not None and store.root.resolve() != self.path.resolve():
            raise ConfigError(
                f"this run levelled the imaging of its own store's wells (data.level_imaging=true) and cannot yet "
                f"level another store's ({store.root}) to the same target: score the plates of the store it trained "
                "on, or retrain with data.level_imaging=false"
            )
        missing = [c for c in self.channels if c not in store.channels]
        if missing:
            raise StoreError(
                f"{store.root / 'store.json'} has channels {store.channels} but the network was "
                f"trained on {self.channels}: {missing} missing; prepare the plate with those channels"
            )
        return CellDataset(
            store,
            rows,
            [store.channels.index(c) for c in self.channels],
            self.crop_size,
            self.norm_lo,
            self.norm_hi,
            zero,
            augment,
            self.seed,
            per_cell=self.normalize == "cell",
            photometric=self.photometric,
            margin=self.zero_margin if zero else 0,
            labels=labels,
            levelling=self.levelling if levelling is None else levelling,
            reimage=reimage,
        )

    # --------------------------------------------------------------------- loaders
    def _loader(self, ds, shuffle: bool, batch_size: int, bags: bool = False) -> DataLoader:
        rank, world = rank_and_world()
        repeats = self.epoch_repeats if shuffle else 1  # only training (shuffled) epochs make several passes
        sampler: Sampler | None
        if bags and self.bag_size > 1:
            sampler = BagSampler(self.wells_of(ds), self.bag_size, self.seed, shuffle, rank, world, repeats)
        elif world > 1:
            sampler = (
                DistributedEpochSampler(len(ds), self.seed, rank, world, repeats)
                if shuffle
                else ShardSampler(len(ds), rank, world)
            )
        else:
            sampler = EpochSampler(len(ds), self.seed, repeats) if shuffle else None
        return DataLoader(
            ds,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            drop_last=False,
        )

    def wells_of(self, ds: CellDataset) -> np.ndarray:
        assert self.store is not None  # opened by setup (ds is one of its datasets)
        m = self.store.manifest
        return well_key(m).to_numpy()[ds.rows]

    def train_dataloader(self):
        """Shuffled training cells, online augmentation; in bags of ``bag_size`` cells of one well."""
        return self._loader(self.dataset("train", self.augment), True, self.batch_size, bags=True)

    def val_dataloader(self):
        """Validation cells in fixed bags (the validation loss is the bag loss training minimises)."""
        if len(self.rows["val"]) == 0:
            return []
        return self._loader(self.dataset("val"), False, self.eval_batch_size, bags=True)

    def test_dataloader(self):
        return self._loader(self.dataset("test"), False, self.eval_batch_size)

    def predict_dataloader(self, split: str = "test"):
        """Every cell of ``split`` (test, val, push) once, in store order."""
        return self._loader(self.dataset(split), False, self.eval_batch_size)

    def push_dataloader(self):
        return self._loader(self.dataset("push"), False, self.eval_batch_size)

    # normalisation and split travel with checkpoints, so explain and resume see the same data
    def state_dict(self):
        return {"norm_lo": self.norm_lo.tolist(), "norm_hi": self.norm_hi.tolist()}

    def load_state_dict(self, state):
        self.norm_lo = np.asarray(state["norm_lo"], np.float32)
        self.norm_hi = np.asarray(state["norm_hi"], np.float32)
