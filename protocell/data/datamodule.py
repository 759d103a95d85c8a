"""``CellDataModule``: the crop store split by source image, as DataLoaders.

Splits: rows without a condition (``label`` −1: wells a store holds only to be scored) belong to no
split. When the manifest's ``split`` column is filled (by ``prepare``) it is used, with ``val``
carved out of the training images; otherwise images are split here, stratified by condition:
``test_fraction`` of each condition's images to test, ``val_fraction`` of the rest to val. A source
image never lands in two splits; offline augmentations follow their original into train and are
never evaluated or pushed. Normalisation ranges come from training crops only; ``normalize="auto"``
chooses ``dataset`` or ``cell`` from how ``store.json`` says the store was normalised
(``protocell.data.normalization``).

Loaders: ``train_dataloader`` (shuffled, online flips/rotations when ``augment``),
``val/test_dataloader``, ``push_dataloader`` (training originals, no augmentation: push projects
prototypes onto real cells) and ``predict_dataloader`` (test).

Under DDP (an initialised process group of ``world`` ranks) each loader deals this rank its share:
training shuffles the epoch's permutation and pads it to a multiple of ``world`` (ranks must run the
same number of steps), while val/test/predict/push take indices ``rank, rank + world, …`` with no
padding, so over all ranks every cell is evaluated, predicted and pushed exactly once. Both subclass
``DistributedSampler``, so Lightning keeps them instead of wrapping its own (padding) sampler.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from protocell.config import SPLIT_BY, DataConfig, MaskConfig, check_fields
from protocell.data.dataset import CellDataset, EpochSampler, Photometric
from protocell.data.normalization import auto_normalization
from protocell.data.split import assign, n_out
from protocell.data.store import CropStore, StoreError
from protocell.distributed import rank_and_world
from protocell.errors import ConfigError

log = logging.getLogger("protocell.data")
MIN_TRAIN_WELLS = 5  # split_by=auto: training wells a condition must keep to split whole wells (module doc)


def units_per_split(n_wells: int, test_fraction: float, val_fraction: float) -> dict[str, int]:
    """Wells of one condition in test, val and train when whole wells are split (``protocell.data.split``)."""
    test = n_out(n_wells, test_fraction)
    val = n_out(n_wells - test, val_fraction)
    return {"test": test, "val": val, "train": n_wells - test - val}


def choose_split(manifest, test_fraction: float, val_fraction: float, split_by: str) -> tuple[str, str]:
    """(``image`` or ``well``, why). ``auto`` splits by well when every condition keeps at least
    ``MIN_TRAIN_WELLS`` training wells after its test and validation wells, else by image.

    Held-out wells are the only test a network cannot pass by recognising the wells it trained on; but
    few training wells let a per-well nuisance line up with the condition by chance: with k wells a
    condition, independent per-well gains separate the two conditions' training wells perfectly in
    2 / C(2k, k) of plates — 10 % at k = 3 (8 wells a condition split by well), < 1 % at k ≥ 5. At 20 %
    affected exposed cells the network then learns the gains (measured: true AUROC 0.72 split by well
    against 0.94 by image on the same plate, issue 22). Split by image, the training images come from
    every well but the validation wells, the validation wells still test generalisation to wells never
    seen, and ``protocell.diagnostics.memorised_wells`` compares the two kinds of held-out cells."""
    if split_by not in SPLIT_BY:
        raise ConfigError.invalid("data.split_by", split_by, f"one of {SPLIT_BY}")
    if split_by == "plate":
        m = manifest[manifest["aug_of"] < 0]
        plates = sorted(m["plate"].astype(str).unique())
        if len(plates) < 2:
            raise ConfigError.invalid(
                "data.split_by",
                split_by,
                f"image, well or auto: the store's labelled cells lie "
                f"on {len(plates)} plate(s) {plates}, and whole plates need two or more",
            )
    if split_by != "auto":
        return split_by, f"data.split_by={split_by} (set in the config)"
    m = manifest[manifest["aug_of"] < 0]
    wells = m.assign(_well=m["plate"].astype(str) + "/" + m["well"].astype(str)).groupby("condition")["_well"].nunique()
    train = {c: units_per_split(int(k), test_fraction, val_fraction)["train"] for c, k in wells.items()}
    if train and min(train.values()) >= MIN_TRAIN_WELLS:
        return "well", (
            f"data.split_by=auto → well: every condition keeps ≥ {MIN_TRAIN_WELLS} training wells "
            f"({', '.join(f'{c}: {k}' for c, k in sorted(train.items()))}); test and validation wells "
            "are wells the network never trained on"
        )
    return "image", (
        f"data.split_by=auto → image: splitting whole wells would leave "
        f"{', '.join(f'{c}: {k}' for c, k in sorted(train.items()))} training well(s) a condition "
        f"(< {MIN_TRAIN_WELLS}, too few to keep a per-well nuisance from lining up with the condition); "
        "test images come from training wells, validation from wells of their own"
    )


def split_by_image(manifest, test_fraction: float, val_fraction: float, seed: int, unit: str = "image") -> np.ndarray:
    """Split labels ('train'/'val'/'test'/'drop') per row (the policy of ``protocell.data.split``,
    shared with prepare); every image lies in one split only.

    Test: ``unit="image"`` takes ``test_fraction`` of each condition's images (prepare's own split
    when the manifest has one); ``unit="well"`` whole wells (all fields of a well in one split), so
    per-well batch effects (imaging, plating) cannot carry a well's label from training into test;
    ``unit="plate"`` ``test_fraction`` of the plates, whole (a store spanning plates: test plates the
    network never saw, as a screen's later plates are), at least one plate training.
    Validation: the non-test images of ``val_fraction`` of each condition's wells, whatever ``unit``
    is — the epoch pretrain keeps is chosen on wells the network never trained on (a score on held-out
    images of training wells rewards memorising the wells). A condition with one such well only gives
    ``val_fraction`` of its training images instead (``val_unit`` says which happened)."""
    return split_rows(manifest, test_fraction, val_fraction, seed, unit)[0]


def split_rows(
    manifest, test_fraction: float, val_fraction: float, seed: int, unit: str = "image"
) -> tuple[np.ndarray, dict]:
    """``split_by_image``'s labels and what it did: {"val_unit": {condition: "well" | "image"},
    "wells": {split: {condition: n}}}."""
    rng = np.random.default_rng(seed)
    if unit not in SPLIT_BY[1:]:
        raise ConfigError.invalid("data.split_by", unit, f"one of {SPLIT_BY[1:]}")
    given = manifest["split"].astype(str).to_numpy()
    originals = manifest["aug_of"].to_numpy() < 0
    image_of = manifest["image_id"].astype(str).to_numpy()
    well_of = (manifest["plate"].astype(str) + "/" + manifest["well"].astype(str)).to_numpy()
    first = manifest[originals].assign(_well=well_of[originals]).drop_duplicates("image_id")
    # 1. test
    if unit == "plate":  # whole plates: a plate's own imaging never reaches test from training
        plates = sorted(first["plate"].astype(str).unique())
        test_plates = {p for p, s in assign({"": plates}, {"test": test_fraction}, seed, rng).items() if s == "test"}
        test_image = {i: p in test_plates for i, p in zip(first["image_id"].astype(str), first["plate"].astype(str))}
    elif unit == "well":
        wells = {c: sorted(g["_well"].unique()) for c, g in first.groupby("condition", sort=True)}
        test_wells = {w for w, s in assign(wells, {"test": test_fraction}, seed, rng).items() if s == "test"}
        test_image = {i: w in test_wells for i, w in zip(first["image_id"].astype(str), first["_well"])}
    elif (given[originals] != "").all():  # prepare split by image
        test_image = {i: s == "test" for i, s in zip(image_of, given)}
    else:
        images = {c: g["image_id"].astype(str).tolist() for c, g in first.groupby("condition", sort=True)}
        test_image = {i: s == "test" for i, s in assign(images, {"test": test_fraction}, seed, rng).items()}
    # 2. validation: whole wells among those with non-test images
    rest = first[~first["image_id"].astype(str).map(test_image).to_numpy(bool)]
    split_of_image = {i: "test" for i, t in test_image.items() if t}
    val_unit = {}
    for cond, g in rest.groupby("condition", sort=True):
        wells = sorted(g["_well"].unique())
        if len(wells) >= 2 or val_fraction <= 0:
            val_wells = {w for w, s in assign({cond: wells}, {"val": val_fraction}, seed, rng).items() if s == "val"}
            split_of_image.update(
                {i: "val" if w in val_wells else "train" for i, w in zip(g["image_id"].astype(str), g["_well"])}
            )
            val_unit[str(cond)] = "well"
        else:  # one well left: validation images of the training well
            split_of_image.update(assign({cond: g["image_id"].astype(str).tolist()}, {"val": val_fraction}, seed, rng))
            val_unit[str(cond)] = "image"
    out = np.array([split_of_image.get(i, "train") for i in image_of], dtype=object)
    # augmented rows train only (their images are train images by construction)
    out[~originals & (out != "train")] = "drop"
    counts = {
        s: {
            str(c): int(n)
            for c, n in manifest.assign(_s=out, _well=well_of)[originals & (out == s)]
            .groupby("condition")["_well"]
            .nunique()
            .items()
        }
        for s in ("train", "val", "test")
    }
    return out, {"val_unit": val_unit, "wells": counts}


class ShardSampler(DistributedSampler):
    """Evaluation share of one rank: indices ``rank, rank + world, …``, unpadded (every cell once)."""

    def __init__(self, n: int, rank: int, world: int):  # no super().__init__: it wants a dataset
        self.n, self.rank, self.num_replicas, self.epoch, self.shuffle = n, rank, world, 0, False

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.num_replicas))

    def __iter__(self):
        return iter(range(self.rank, self.n, self.num_replicas))


class DistributedEpochSampler(DistributedSampler):
    """Training share of one rank: ``EpochSampler``'s (seed, epoch) permutation, padded by wrapping to
    a multiple of ``world``, then every ``world``-th item from ``rank``; yields (index, epoch) pairs."""

    def __init__(self, n: int, seed: int, rank: int, world: int):
        self.base = EpochSampler(n, seed)
        self.rank, self.num_replicas, self.epoch, self.shuffle = rank, world, 0, True
        self.per_rank = -(-n // world)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self):
        items = list(self.base)
        items += items[: self.per_rank * self.num_replicas - len(items)]
        return iter(items[self.rank :: self.num_replicas])


class BagSampler(DistributedSampler):
    """Items in *bags*: runs of ``bag_size`` items from one well (``groups``: a well id per item).

    Per epoch, each well's items are permuted with a generator seeded by (seed, epoch) and cut into
    bags (a well's last < ``bag_size`` items sit the epoch out); the bags are shuffled (``shuffle``)
    and, under DDP, padded by wrapping to a multiple of ``world`` and dealt round-robin. A loader
    whose batch size is a multiple of ``bag_size`` then yields whole bags. Yields (index, epoch)."""

    def __init__(self, groups, bag_size: int, seed: int, shuffle: bool = True, rank: int = 0, world: int = 1):
        self.groups = np.asarray(groups)
        self.bag_size, self.seed, self.shuffle = int(bag_size), int(seed), shuffle
        self.rank, self.num_replicas, self.epoch = rank, world, 0
        self._order = {g: np.flatnonzero(self.groups == g) for g in sorted(set(self.groups.tolist()))}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def bags(self) -> list[np.ndarray]:
        epoch = self.epoch if self.shuffle else 0
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        bags = []
        for items in self._order.values():
            items = items[torch.randperm(len(items), generator=g).numpy()] if self.shuffle else items
            bags += [items[i : i + self.bag_size] for i in range(0, len(items) - self.bag_size + 1, self.bag_size)]
        if self.shuffle and bags:
            bags = [bags[i] for i in torch.randperm(len(bags), generator=g).tolist()]
        if self.num_replicas > 1 and bags:
            per_rank = -(-len(bags) // self.num_replicas)
            bags = (bags + bags[: per_rank * self.num_replicas - len(bags)])[self.rank :: self.num_replicas]
        return bags

    def __len__(self) -> int:
        return sum(len(b) for b in self.bags())

    def __iter__(self):
        epoch = self.epoch if self.shuffle else 0
        return iter([(int(i), epoch) for b in self.bags() for i in b])


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
        self.rows["push"] = np.flatnonzero((self.splits == "train") & originals)
        for s in ("train", "test"):
            if len(self.rows[s]) == 0:
                raise StoreError(
                    f"{self.path}: the '{s}' split is empty; the store needs at least two source images per condition"
                )
        if len(set(m.loc[self.rows["train"], "label"])) < 2:
            raise StoreError(f"{self.path}: training images hold only one condition; need both")
        self.norm_lo, self.norm_hi = self._norm_ranges()

    def _norm_ranges(self) -> tuple[np.ndarray, np.ndarray]:
        C = len(self.channel_index)
        if self.normalize == "none":
            return np.zeros(C, np.float32), np.ones(C, np.float32)
        rng = np.random.default_rng(self.seed)
        rows = self.rows["push"]
        sample = rng.choice(rows, size=min(256, len(rows)), replace=False)
        pix = np.stack([self.store.crop(int(r))[self.channel_index] for r in sample]).astype(np.float32)
        pix = pix.transpose(1, 0, 2, 3).reshape(C, -1)
        if not np.isfinite(pix).all():
            raise StoreError(f"{self.path}: crops contain NaN or inf pixels; re-run prepare on clean images")
        lo, hi = np.percentile(pix, 1, axis=1), np.percentile(pix, 99.8, axis=1)
        return lo.astype(np.float32), np.maximum(hi, lo + 1e-6).astype(np.float32)

    def dataset(self, split: str, augment: bool = False) -> CellDataset:
        self.setup()
        return self.dataset_of(self.store, self.rows[split], augment)

    @property
    def channels(self) -> list[str]:
        """Names of the channels the network sees, in its input order."""
        self.setup()
        return [self.store.channels[i] for i in self.channel_index]

    def dataset_of(self, store: CropStore, rows, augment: bool = False) -> CellDataset:
        """Rows of any crop store with this module's data handling (channels by name, crop size,
        normalisation and its training ranges, zeroed background and margin): how ``score`` reads
        another plate as the network was trained to see cells."""
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
            self.zero_background,
            augment,
            self.seed,
            per_cell=self.normalize == "cell",
            photometric=self.photometric,
            margin=self.zero_margin if self.zero_background else 0,
        )

    # --------------------------------------------------------------------- loaders
    def _loader(self, ds, shuffle: bool, batch_size: int, bags: bool = False) -> DataLoader:
        rank, world = rank_and_world()
        if bags and self.bag_size > 1:
            sampler = BagSampler(self.wells_of(ds), self.bag_size, self.seed, shuffle, rank, world)
        elif world > 1:
            sampler = (
                DistributedEpochSampler(len(ds), self.seed, rank, world)
                if shuffle
                else ShardSampler(len(ds), rank, world)
            )
        else:
            sampler = EpochSampler(len(ds), self.seed) if shuffle else None
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
        m = self.store.manifest
        return (m["plate"].astype(str) + "/" + m["well"].astype(str)).to_numpy()[ds.rows]

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
