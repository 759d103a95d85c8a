"""Fuzzing the two readers of files people write by hand: the plate map (``read_plate_map``) and the
crops metadata table (``crop_table``). Hypothesis writes CSVs of random columns (the real ones, reserved
manifest names, junk, names padded with spaces or a byte-order mark, a column twice, nameless ones),
random rows (real files under several spellings, missing files, duplicates of other rows, blanks,
huge numbers, doses of every kind, NUL bytes, quotes, commas, newlines, any unicode) in random
encodings (UTF-8 with and without BOM, UTF-16, Latin-1, or random bytes). Every outcome must be one
of two: a refusal (``ProtocellError``: the one-line message), or an accepted table in which every
row is accounted for, no file appears twice and every dose is a finite number ≥ 0.

The test suite runs a bounded pass (``FUZZ_EXAMPLES``, default 300 examples per reader: a few
seconds); docs/reliability.md reports a long pass (``PROTOCELL_FUZZ_EXAMPLES=20000``) with the seed.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, seed, settings
from hypothesis import strategies as st

from protocell.doses import dose_value
from protocell.errors import ProtocellError
from protocell.prepare.crops_table import crop_table
from protocell.prepare.plate import read_plate_map

SEED = 25
FUZZ_ROOT = Path(tempfile.gettempdir()) / f"protocell-fuzz-{os.getpid()}"  # one per pytest worker
FUZZ_EXAMPLES = int(os.environ.get("PROTOCELL_FUZZ_EXAMPLES", "300"))
SETTINGS = settings(
    max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=False, suppress_health_check=list(HealthCheck)
)

IMAGES = [f"fields/f{k}.tif" for k in range(8)] + ["other/f0.tif"]
CROPS = ["Ref/a.npy", "Ref/b.npy", "Exp/c.tif", "Exp/d.npy", "Exp/sub/e.npy"]
ENCODINGS = ["utf-8", "utf-8", "utf-8-sig", "utf-16", "latin-1", "bytes"]

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
huge = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.just("9" * 400),
    st.just("1e400"),
    st.just("-0"),
)
good_dose = st.one_of(
    st.sampled_from(["", "0", "1", "2.5", "1e-3", " 3 ", "nan", "None", "1_000", "-0"]), st.floats(0, 1e30).map(repr)
)
bad_dose = st.one_of(
    st.sampled_from(
        ["-1", "inf", "-inf", "Infinity", "+nan", "1e400", "abc", "10 µM", "1,5", "0x10", "9" * 400 + "e9"]
    ),
    st.floats(max_value=-1e-300).map(repr),
    text,
)
blank = st.sampled_from(["", " ", "\t"])
junk = st.one_of(text, huge, blank)


def spellings(name: str, root: Path) -> st.SearchStrategy[str]:
    """One file as people write it: plain, ./, doubled slash, a detour through .., absolute, padded."""
    return st.sampled_from(
        [name, "./" + name, name.replace("/", "//"), name.split("/")[0] + "/../" + name, str(root / name), f" {name} "]
    )


@st.composite
def table(draw, kind: str, root: Path) -> tuple[list[str], list[list[str]]]:
    """A valid plate map (``kind="plate"``: multi-channel files, or one file per channel) or crops
    metadata table (``"crops"``: one row per crop): (header, rows)."""
    if kind == "crops":
        columns = (
            ["file", "condition"]
            + draw(
                st.lists(st.sampled_from(["plate", "well", "field", "image_id", "true_label", "compound"]), unique=True)
            )
            + ["dose"] * draw(st.booleans())
        )
        rows = []
        for k, name in enumerate(CROPS):
            value = {
                "file": draw(spellings(name, root)),
                "condition": draw(st.sampled_from(["Ref", "Exp", ""])),
                "plate": "plate1",
                "well": f"A0{k}",
                "field": draw(st.sampled_from(["0", "1", ""])),
                "image_id": f"img{k}",
                "true_label": draw(st.sampled_from(["", "-1", "0", "1"])),
                "dose": draw(good_dose),
                "compound": draw(text),
            }
            rows.append([value[c] for c in columns])
        return columns, rows
    columns = (
        ["image", "plate", "well", "field", "condition"]
        + draw(st.lists(st.sampled_from(["channel", "image_id", "compound"]), unique=True))
        + ["dose"] * draw(st.booleans())
    )
    files = draw(st.permutations(IMAGES))
    rows = []
    for k in range(draw(st.integers(1, 4))):
        per_channel = "channel" in columns and draw(st.booleans())
        channels = ["actin", "gfp" if draw(st.booleans()) else "actin", "nuclei"][1:] if per_channel else [""]
        common = {
            "plate": "plate1",
            "well": f"B0{k}",
            "field": draw(st.sampled_from(["0", "1"])),
            "condition": draw(st.sampled_from(["Ref", "Exp", ""])),
            "dose": draw(good_dose),
            "compound": draw(text),
        }
        for channel in channels:
            f = files.pop()
            value = {
                **common,
                "image": draw(spellings(f, root)),
                "channel": channel,
                "image_id": f"i{k}" if per_channel else f"i{k}_{channel}",
            }
            rows.append([value[c] for c in columns])
    return columns, rows


@st.composite
def csv_bytes(draw, kind: str, root: Path) -> tuple[bytes, int]:
    """A valid table (``table``) with up to four mutations — a row twice, one file under two rows, an
    invalid dose, any cell replaced (junk, blanks, huge numbers, NUL, any unicode), a junk column, a
    column dropped, a header name padded, upper-cased or behind a BOM, a column named twice — in a
    random encoding, or random bytes: (the file's bytes, the number of data rows, -1 for random bytes)."""
    encoding = draw(st.sampled_from(ENCODINGS))
    if encoding == "bytes":
        return draw(st.binary(max_size=300)), -1
    columns, rows = draw(table(kind, root))
    key = "image" if kind == "plate" else "file"
    kinds = [
        "twice",
        "same file",
        "same file",
        "bad dose",
        "bad dose",
        "cell",
        "cell",
        "junk column",
        "drop column",
        "header",
        "column twice",
    ]
    for mutation in draw(st.lists(st.sampled_from(kinds), max_size=3)):
        i, j = draw(st.integers(0, len(rows) - 1)), draw(st.integers(0, len(rows) - 1))
        if mutation == "twice":
            rows.append(list(rows[i]))
        elif mutation == "same file" and i != j and key in columns:
            rows[i][columns.index(key)] = draw(spellings(rows[j][columns.index(key)].strip(), root))
        elif mutation == "bad dose" and "dose" in columns:
            rows[i][columns.index("dose")] = draw(bad_dose)
        elif mutation == "cell":
            rows[i][draw(st.integers(0, len(columns) - 1))] = draw(st.one_of(junk, st.just("a\x00b")))
        elif mutation == "junk column":
            columns.append(
                draw(st.one_of(text, st.sampled_from(["label", "split", "path", "mask_source", "", "dose"])))
            )
            for r in rows:
                r.append(draw(junk))
        elif mutation == "drop column" and len(columns) > 1:
            k = draw(st.integers(0, len(columns) - 1))
            columns.pop(k)
            for r in rows:
                r.pop(k)
        elif mutation == "header":
            k = draw(st.integers(0, len(columns) - 1))
            columns[k] = draw(st.sampled_from([f" {columns[k]} ", columns[k].upper(), f"\ufeff{columns[k]}"]))
        elif mutation == "column twice":
            k = draw(st.integers(0, len(columns) - 1))
            columns.append(columns[k])
            for r in rows:
                r.append(r[k])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerow(columns)
    writer.writerows(rows)
    data = buf.getvalue()
    try:
        return (codecs.BOM_UTF8 if encoding == "utf-8-sig" else b"") + data.encode(
            "utf-8" if encoding == "utf-8-sig" else encoding
        ), len(rows)
    except UnicodeEncodeError:  # Latin-1 cannot hold every character: write what UTF-8 would
        return data.encode("utf-8"), len(rows)


@pytest.fixture(scope="module", autouse=True)
def fuzz_folder():
    """The files the tables name (empty: the readers check names, not pixels), at FUZZ_ROOT."""
    for name in IMAGES + CROPS:
        (FUZZ_ROOT / name).parent.mkdir(parents=True, exist_ok=True)
        (FUZZ_ROOT / name).write_bytes(b"")
    yield FUZZ_ROOT
    shutil.rmtree(FUZZ_ROOT, ignore_errors=True)


def _refused(err: ProtocellError) -> None:
    """A refusal: a message, counted by its kind (paths, quoted values and numbers left out)."""
    assert str(err).strip(), "an empty message"
    kind = re.sub(r"\d+", "N", re.sub(r"'[^']*'|\S*/\S*", "…", str(err).splitlines()[0]))
    event(f"refused: {kind[:60]}")


@SETTINGS
@seed(SEED)
@given(csv_bytes("plate", FUZZ_ROOT))
def test_fuzz_the_plate_map_reader(case):
    data, n_rows = case
    csv_path = FUZZ_ROOT / "plate_map.csv"
    csv_path.write_bytes(data)
    try:
        entries = read_plate_map(csv_path, FUZZ_ROOT, ["actin", "nuclei"], {"gfp": "actin"})
    except ProtocellError as err:
        return _refused(err)
    event("accepted")
    files = [Path(f).resolve() for e in entries for f in e.files.values()]
    assert len(files) == len(set(files)), f"a file accepted twice: {files}"
    for e in entries:
        if "dose" in e.meta:
            assert dose_value(e.meta["dose"]) is not None, f"an invalid dose accepted: {e.meta['dose']!r}"
    if n_rows >= 0:
        assert len(files) == n_rows, f"{n_rows} rows written, {len(files)} files accepted"


@SETTINGS
@seed(SEED)
@given(csv_bytes("crops", FUZZ_ROOT))
def test_fuzz_the_crops_metadata_reader(case):
    data, n_rows = case
    csv_path = FUZZ_ROOT / "meta.csv"
    csv_path.write_bytes(data)
    try:
        table = crop_table(FUZZ_ROOT, sorted(CROPS), csv_path, None)
    except ProtocellError as err:
        return _refused(err)
    event("accepted")
    assert sorted(table["file"]) == sorted(CROPS), f"crops accepted as {sorted(table['file'])}"
    if n_rows >= 0:
        assert n_rows == len(CROPS), f"{n_rows} rows written for {len(CROPS)} crops, accepted"
    if "dose" in table:
        bad = [d for d in table["dose"] if dose_value(d) is None]
        assert not bad, f"an invalid dose accepted: {bad}"
    if "true_label" in table:
        assert set(table["true_label"]) <= {"", "-1", "0", "1"}, set(table["true_label"])
    if "well" in table:
        assert (table["well"].astype(str).str.strip() != "").all(), "an empty well accepted"
