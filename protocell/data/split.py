"""Splitting source images (or wells) into train / val / test: the one policy prepare and the
DataModule share.

Per condition, ``n_out = round_half_up(fraction · n)`` units go out (to test, or from train to val),
but never all of them and, when there are at least two, at least one: an only image of a condition
trains. Units are drawn by a seeded permutation of their sorted names, conditions in sorted order.

The DataModule's split of a store's labelled rows (``split_rows``): by image, whole well or whole plate
as ``data.split_by`` says, ``auto`` choosing image or well (``choose_split``); validation wells carved
out of what test left. On a store spanning plates every draw is made per (plate, condition), as
prepare's are: each plate gives each split its share of each condition's wells or images, so a plate's
imaging cannot line up with the condition in training or validation (drawn per condition only, one
seed gave validation reference wells all from plate 1 and exposed ones all from plate 2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from protocell.config import SPLIT_BY
from protocell.errors import ConfigError

MIN_TRAIN_WELLS = 5  # split_by=auto: training wells a condition must keep to split whole wells (choose_split)

if TYPE_CHECKING:
    from _typeshed import SupportsRichComparison

# a stratum's key: a condition, or a (plate, condition) pair (``protocell.prepare.assemble``)
K = TypeVar("K", bound="SupportsRichComparison")


def n_out(n: int, fraction: float, keep_one: bool = True) -> int:
    """How many of ``n`` units go to the held-out side: ``floor(n·fraction + 0.5)``, clipped to
    [1, n − 1] when n ≥ 2 (``keep_one``), 0 when n < 2; ``fraction`` 0 gives 0."""
    if n < 2 or fraction <= 0:
        return 0
    k = int(math.floor(n * fraction + 0.5))
    return min(n - 1, max(1, k)) if keep_one else min(n, k)


def assign(
    units_by_condition: Mapping[K, list[str]],
    fractions: dict[str, float],
    seed: int,
    rng: np.random.Generator | None = None,
) -> dict[str, str]:
    """unit → split name. ``fractions`` maps held-out split names to fractions of what is left,
    applied in order (e.g. {"test": 0.5, "val": 0.2}: half to test, 20 % of the rest to val);
    everything else is "train"."""
    rng = rng if rng is not None else np.random.default_rng(seed)
    out = {}
    for cond in sorted(units_by_condition):
        units = rng.permutation(sorted(units_by_condition[cond])).tolist()
        left = len(units)
        start = 0
        for name, fraction in fractions.items():
            k = n_out(left, fraction)
            for u in units[start : start + k]:
                out[u] = name
            start += k
            left -= k
        for u in units[start:]:
            out[u] = "train"
    return out


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
    m = m.assign(_well=m["plate"].astype(str) + "/" + m["well"].astype(str))
    train: dict = {}
    for key, g in by_stratum(m):
        c = condition_of(key)
        train[c] = train.get(c, 0) + units_per_split(g["_well"].nunique(), test_fraction, val_fraction)["train"]
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


def strata_of(frame) -> list[str]:
    """The columns a draw is made within: condition, and plate too when the rows span plates."""
    return ["plate", "condition"] if frame["plate"].astype(str).nunique() > 1 else ["condition"]


def by_stratum(frame):
    """``frame`` grouped by stratum, sorted: keys are conditions, or (plate, condition) pairs on a store
    spanning plates (``condition_of`` reads the condition back)."""
    keys = strata_of(frame)
    return frame.assign(plate=frame["plate"].astype(str)).groupby(keys if len(keys) > 1 else keys[0], sort=True)


def condition_of(key) -> str:
    """The condition of a stratum key (``by_stratum``)."""
    return str(key[1] if isinstance(key, tuple) else key)


def _strata(frame, column: str) -> dict:
    """{stratum key: the sorted distinct values of ``column``} (``by_stratum``)."""
    return {k: sorted(g[column].astype(str).unique()) for k, g in by_stratum(frame)}


def split_by_image(manifest, test_fraction: float, val_fraction: float, seed: int, unit: str = "image") -> np.ndarray:
    """Split labels ('train'/'val'/'test'/'drop') per row (the policy of ``protocell.data.split``,
    shared with prepare); every image lies in one split only.

    Draws are per condition, or per (plate, condition) on a store spanning plates (``strata_of``).
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
        test_wells = {
            w for w, s in assign(_strata(first, "_well"), {"test": test_fraction}, seed, rng).items() if s == "test"
        }
        test_image = {i: w in test_wells for i, w in zip(first["image_id"].astype(str), first["_well"])}
    elif (given[originals] != "").all():  # prepare split by image
        test_image = {i: s == "test" for i, s in zip(image_of, given)}
    else:
        images = _strata(first, "image_id")
        test_image = {i: s == "test" for i, s in assign(images, {"test": test_fraction}, seed, rng).items()}
    # 2. validation: whole wells among those with non-test images, per condition (and plate)
    rest = first[~first["image_id"].astype(str).map(test_image).to_numpy(bool)]
    split_of_image = {i: "test" for i, t in test_image.items() if t}
    val_unit: dict[str, str] = {}
    for key, g in by_stratum(rest):
        cond = condition_of(key)
        wells = sorted(g["_well"].unique())
        if len(wells) >= 2 or val_fraction <= 0:
            val_wells = {w for w, s in assign({key: wells}, {"val": val_fraction}, seed, rng).items() if s == "val"}
            split_of_image.update(
                {i: "val" if w in val_wells else "train" for i, w in zip(g["image_id"].astype(str), g["_well"])}
            )
            val_unit.setdefault(cond, "well")
        else:  # one well left: validation images of the training well
            split_of_image.update(assign({key: g["image_id"].astype(str).tolist()}, {"val": val_fraction}, seed, rng))
            val_unit[cond] = "image"
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
