"""read_parquet and to_parquet at any job size, checked against pyarrow on the same files.

``python io_cases.py build DATA`` writes the datasets once (in one process, no job);
``gpupart run -n N -- python io_cases.py run DATA WORK`` runs every case: each rank reads the
datasets under ``DATA`` (read-only, shared by the jobs) and writes under ``WORK`` (this job's).
Reads are compared with ``pq.read_table(...).to_pandas()`` (values and dtypes); writes are
read back with pyarrow and with ``read_parquet``; every bad input must raise the same error on
every rank. Every rank emits ``@plan`` (the case names), ``@case`` after each case passes and
``@done``; a failed check raises, so the job fails with the traceback.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pandas.testing import assert_frame_equal

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "mp_scripts"))
from _mp import emit, expect, raises

CASES: list[tuple[str, Callable[[], Any]]] = []
EVEN_FILES, EVEN_GROUPS, EVEN_ROWS = 6, 10, 2000  # 60 row groups of ~16 KB of random floats


def case(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Register a case (run at every job size, in order)."""
    CASES.append((fn.__name__, fn))
    return fn


# == the datasets (written once, by the test process) =========================================


def _table(n: int, seed: int) -> pa.Table:
    """Every kind of column: ints, floats with NaN, strings and ints with nulls, times, bools."""
    rng = np.random.default_rng(seed)
    words = np.array(["a", "b", "c", "dd", "eee"])
    s = words[rng.integers(0, len(words), n)].astype(object)
    s[rng.random(n) < 0.1] = None
    f = rng.standard_normal(n)
    f[rng.random(n) < 0.1] = np.nan
    nullable = pa.array(rng.integers(0, 50, n), mask=rng.random(n) < 0.2)
    return pa.table(
        {
            "i": np.arange(seed * 100_000, seed * 100_000 + n, dtype=np.int64),
            "f": f,
            "s": pa.array(s, type=pa.string()),
            "n": nullable,
            "ts": pa.array(
                np.datetime64("2024-01-01") + rng.integers(0, 10**9, n).astype("timedelta64[s]")
            ),
            "b": rng.random(n) < 0.5,
        }
    )


def build(data: Path) -> None:
    """Write every dataset the cases read under ``data``."""
    plain = data / "plain"
    plain.mkdir(parents=True)
    for k, (rows, group) in enumerate([(300, 100), (1000, 25), (17, 100), (450, 200)]):
        pq.write_table(_table(rows, k + 1), plain / f"part-{k}.parquet", row_group_size=group)
    pq.write_table(_table(0, 9), plain / "part-4-empty.parquet")
    with pq.ParquetWriter(plain / "part-5-no-row-groups.parquet", _table(1, 0).schema):
        pass

    hive = data / "hive"
    for year in (2020, 2021, 2022):
        for s in ("x", "y"):
            d = hive / f"year={year}" / f"s={s}"
            d.mkdir(parents=True)
            table = _table(60 + year % 10, year * 10 + len(s)).drop_columns(["s"])
            pq.write_table(table, d / "part-0.parquet", row_group_size=20)

    tiny = data / "tiny"
    tiny.mkdir()
    for k in range(60):
        pq.write_table(_table(3, 100 + k), tiny / f"t-{k:03d}.parquet")

    even = data / "even"
    even.mkdir()
    rng = np.random.default_rng(5)
    for k in range(EVEN_FILES):
        values = rng.standard_normal(EVEN_GROUPS * EVEN_ROWS)
        table = pa.table({"v": values, "w": values * 2})
        pq.write_table(table, even / f"e-{k}.parquet", row_group_size=EVEN_ROWS)

    meta = data / "with_metadata"
    meta.mkdir()
    collected: list[Any] = []
    for k in range(3):
        pq.write_table(
            _table(40, 50 + k),
            meta / f"m-{k}.parquet",
            row_group_size=15,
            metadata_collector=collected,
        )
        collected[-1].set_file_path(f"m-{k}.parquet")
    pq.write_metadata(_table(1, 0).schema, meta / "_metadata", metadata_collector=collected)

    mismatch = data / "mismatch"
    mismatch.mkdir()
    pq.write_table(_table(10, 1), mismatch / "a.parquet")
    other = _table(10, 2)
    other = other.set_column(1, "f", pa.array([str(v) for v in other["f"].to_pylist()]))
    pq.write_table(other, mismatch / "b.parquet")

    corrupt = data / "corrupt"
    corrupt.mkdir()
    for k in range(3):
        pq.write_table(_table(10, k), corrupt / f"c-{k}.parquet")
    (corrupt / "c-3.parquet").write_bytes(b"PAR1 this is not a parquet file at all PAR1")

    pandas_written = data / "pandas"
    pandas_written.mkdir()
    frame = _table(30, 7).to_pandas()
    frame.to_parquet(pandas_written / "p-0.parquet")  # a RangeIndex in the pandas metadata
    frame.set_index("f").to_parquet(pandas_written / "indexed.parquet")  # a stored index
    # a RangeIndex named 'i' (pandas 3's set_index("i") of these consecutive ints; pandas 2's
    # would be a stored index): pyarrow writes it as metadata only
    start = int(frame["i"].iloc[0])
    named = frame.drop(columns="i").set_axis(pd.RangeIndex(start, start + len(frame), name="i"))
    named.to_parquet(pandas_written / "named-range.parquet")


# == helpers ===================================================================================


def expected(path: Any, **kwargs: Any) -> pd.DataFrame:
    """What pyarrow reads, as pandas, index dropped (a frame has none)."""
    return pq.read_table(path, **kwargs).to_pandas().reset_index(drop=True)


def same(name: str, got: Any, want: pd.DataFrame) -> None:
    """The frame (gathered) equals ``want``; checks dtypes and the frame's meta."""
    whole = got.to_pandas()
    try:
        assert_frame_equal(whole, want)
    except AssertionError as exc:
        raise AssertionError(f"{name}: {exc}") from None
    expect(list(got.meta.columns) == list(want.columns), f"{name}: meta columns")
    expect((got.meta.dtypes == want.dtypes).all(), f"{name}: meta dtypes {got.meta.dtypes}")
    expect(sum(got.partition_sizes) == len(want), f"{name}: partition sizes")


def no_leftovers(where: str) -> None:
    """No hidden (temporary or old) directory next to the outputs; then a barrier, so that no
    rank starts the next write (and its temporary directory) before every rank looked."""
    leftovers = [p for p in os.listdir(WORK) if p.startswith(".")]
    gpupart.runtime().barrier()
    expect(not leftovers, f"{where}: no temporary directory left, found {leftovers}")


def files(sub: str) -> list[str]:
    return sorted(str(p) for p in (DATA / sub).glob("*.parquet"))


# == reading ===================================================================================


@case
def read_a_directory_with_every_kind_of_file():
    df = gpupart.read_parquet(DATA / "plain")
    same("plain", df, expected(str(DATA / "plain")))
    expect(df.npartitions == size and df.layout.owners == tuple(range(size)), "one per rank")
    for p in df.local_partitions.values():  # every partition has a default RangeIndex
        expect(isinstance(p.index, pd.RangeIndex) and p.index.start == 0, "RangeIndex")


@case
def read_a_glob_a_list_a_file_and_a_file_url():
    want = expected(files("plain"))
    same("glob", gpupart.read_parquet(str(DATA / "plain" / "part-*.parquet")), want)
    backwards = files("plain")[::-1]
    same("list", gpupart.read_parquet(backwards), expected(backwards))
    one = files("plain")[1]
    same("file", gpupart.read_parquet(one), expected(one))
    url = f"file://{DATA / 'hive'}"
    same("file url", gpupart.read_parquet(url), expected(str(DATA / "hive")))
    same("file url list", gpupart.read_parquet([f"file://{one}"]), expected([one]))
    raises(
        FileNotFoundError, lambda: gpupart.read_parquet(str(DATA / "plain" / "*.nope")), "*.nope"
    )


@case
def read_columns_in_any_order():
    none = gpupart.read_parquet(DATA / "plain", columns=[])  # rows without columns
    expect(sum(none.partition_sizes) == len(expected(str(DATA / "plain"))), "rows of no columns")
    for cols in (["s", "i"], ["ts"], ["b", "n", "f"]):
        same(
            f"columns {cols}",
            gpupart.read_parquet(DATA / "plain", columns=cols),
            expected(str(DATA / "plain"), columns=cols),
        )


FILTERS = [
    [("i", ">", 200_050)],
    [("i", ">=", 100_010), ("i", "<", 300_000), ("s", "in", ["a", "dd"])],
    [[("s", "==", "eee")], [("f", ">", 1.5)], [("n", "=", 7)]],
    [("s", "not in", ["a", "b"])],
    [("s", "!=", "c"), ("b", "=", True)],
    [("n", "<=", 10)],
    [("ts", ">", pd.Timestamp("2050-01-01"))],  # matches nothing
    [("i", "<", 0)],
]


@case
def read_filters_on_data_columns_like_pyarrow():
    for k, filters in enumerate(FILTERS):  # with and without a projection, in turn
        for cols in [None if k % 2 else ["i", "s"]]:
            same(
                f"filters {filters} columns {cols}",
                gpupart.read_parquet(DATA / "plain", columns=cols, filters=filters),
                expected(str(DATA / "plain"), columns=cols, filters=filters),
            )


HIVE_FILTERS = [
    [("year", "=", 2021)],
    [("year", ">=", 2021), ("s", "=", "y")],
    [[("year", "=", 2020), ("i", ">", 202_000_100)], [("s", "in", ["x"]), ("f", ">", 0.5)]],
    [("s", "not in", ["x"]), ("n", "!=", 3)],
]


@case
def read_hive_partitions_and_filter_on_them():
    path = str(DATA / "hive")
    whole = gpupart.read_parquet(path)
    same("hive", whole, expected(path))
    expect(str(whole.meta.dtypes["year"]) == "category", "year is categorical")
    for k, filters in enumerate(HIVE_FILTERS):
        for cols in [(None, ["year", "i"], ["f"])[k % 3]]:
            same(
                f"hive {filters} {cols}",
                gpupart.read_parquet(path, columns=cols, filters=filters),
                expected(path, columns=cols, filters=filters),
            )


@case
def partition_and_statistics_pruning_in_planning():
    from gpupart.containers import frame_io

    src = frame_io._open(str(DATA / "hive"), None, [("year", "=", 2021)], None)
    expect(len(src.fragments) == 2, f"2 of 6 files left, found {len(src.fragments)}")
    off = frame_io._Progress(False, False, 0.0)
    plan = frame_io._footers(src, off)
    expect(len(plan) == 8, f"every row group of the two files, found {len(plan)}")
    # file part-1 of plain: 40 row groups of 25 rows, i ascending: one row group holds 100_010
    src = frame_io._open(str(DATA / "plain"), ["i"], [("i", "=", 200_010)], None)
    plan = frame_io._footers(src, off)
    expect(plan.tolist() == [[1, 0, 25, plan[0, 3]]], f"one row group left, found {plan}")
    expect(0 < plan[0, 3] < 1000, f"projected bytes: one int column, found {plan[0, 3]}")


@case
def only_rank_0_lists_the_dataset_and_reads_footers():
    from gpupart.containers import frame_io

    calls = {"open": 0, "footers": 0}
    real_open, real_footers = frame_io._open, frame_io._footers

    def counting(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    frame_io._open = counting("open", real_open)
    frame_io._footers = counting("footers", real_footers)
    try:
        same("counted", gpupart.read_parquet(DATA / "hive"), expected(str(DATA / "hive")))
    finally:
        frame_io._open, frame_io._footers = real_open, real_footers
    want = 1 if rank == 0 else 0
    expect(calls == {"open": want, "footers": want}, f"rank {rank} planned: {calls}")


@case
def same_as_pandas_read_parquet():
    for path, kwargs in [
        (DATA / "plain", {}),
        (DATA / "plain", {"columns": ["s", "f"], "filters": [("i", ">", 200_050)]}),
        (DATA / "hive", {}),
        (DATA / "hive", {"filters": [("year", ">=", 2021)], "columns": ["i", "year"]}),
        (DATA / "tiny", {}),
    ]:
        want = pd.read_parquet(path, **kwargs).reset_index(drop=True)
        same(f"pandas {path.name} {kwargs}", gpupart.read_parquet(path, **kwargs), want)


@case
def split_row_groups_false_and_int():
    whole = gpupart.read_parquet(DATA / "even", split_row_groups=False)
    sizes = whole.partition_sizes
    file_rows = EVEN_GROUPS * EVEN_ROWS
    expect(all(s % file_rows == 0 for s in sizes), f"whole files per rank, found {sizes}")
    expect(whole.npartitions == size, "one partition per rank")
    same("split False", whole, expected(str(DATA / "even")))
    by3 = gpupart.read_parquet(DATA / "plain", split_row_groups=3)
    # plain: 3, 40, 1 and 3 row groups (empty files have none): 1 + 14 + 1 + 1 partitions
    expect(by3.npartitions == 17, f"17 partitions of <= 3 row groups, found {by3.npartitions}")
    owners = list(by3.layout.owners)
    expect(owners == sorted(owners) and set(owners) <= set(range(size)), f"{owners}")
    expect(max(by3.partition_sizes) <= 75 or by3.partition_sizes[0] == 300, "row groups")
    same("split 3", by3, expected(str(DATA / "plain")))
    none = gpupart.read_parquet(DATA / "plain", filters=[("i", "<", 0)], split_row_groups=2)
    same("split 2 nothing", none, expected(str(DATA / "plain"), filters=[("i", "<", 0)]))
    raises(ValueError, lambda: gpupart.read_parquet(DATA / "plain", split_row_groups=0), "split")
    raises(ValueError, lambda: gpupart.read_parquet(DATA / "plain", split_row_groups="x"), "'x'")


@case
def many_tiny_files_are_grouped_in_order():
    df = gpupart.read_parquet(DATA / "tiny")
    same("tiny", df, expected(str(DATA / "tiny")))
    sizes = df.partition_sizes
    expect(all(s % 3 == 0 for s in sizes) and max(sizes) - min(sizes) <= 3, f"{sizes}")
    return {"sizes": list(sizes)}


@case
def bytes_per_rank_are_even():
    df = gpupart.read_parquet(DATA / "even", columns=["v"])
    sizes = df.partition_sizes
    # map each rank's contiguous rows back to the row groups' projected (column v) bytes
    per_group = [
        md.row_group(g).column(0).total_compressed_size
        for f in files("even")
        for md in [pq.ParquetFile(f).metadata]
        for g in range(md.num_row_groups)
    ]
    expect(all(s % EVEN_ROWS == 0 for s in sizes), f"whole row groups, found {sizes}")
    bounds = np.cumsum([0, *sizes]) // EVEN_ROWS
    loads = [sum(per_group[bounds[r] : bounds[r + 1]]) for r in range(size)]
    mean = sum(loads) / size
    expect(all(abs(x - mean) <= 0.1 * mean for x in loads), f"loads {loads} around {mean}")
    again = gpupart.read_parquet(DATA / "even", columns=["v"]).partition_sizes
    expect(again == sizes, "the same assignment every time")
    return {"sizes": list(sizes), "loads": loads}


@case
def a_metadata_file_replaces_the_footers():
    path = str(DATA / "with_metadata")
    same("_metadata", gpupart.read_parquet(path), expected(path))
    same(
        "_metadata filtered",
        gpupart.read_parquet(path, filters=[("i", ">", 5_100_020)]),
        expected(path, filters=[("i", ">", 5_100_020)]),
    )


@case
def files_written_by_pandas_have_no_index():
    one = str(DATA / "pandas" / "p-0.parquet")
    same("pandas RangeIndex", gpupart.read_parquet(one), expected(one))
    indexed = str(DATA / "pandas" / "indexed.parquet")
    want = pq.read_table(indexed).to_pandas().reset_index()  # the index as a column
    same("pandas index", gpupart.read_parquet(indexed), want)
    ranged = str(DATA / "pandas" / "named-range.parquet")  # a RangeIndex named 'i': dropped
    same("pandas named RangeIndex", gpupart.read_parquet(ranged), expected(ranged))


@case
def progress_bar_forced_on():
    df = gpupart.read_parquet(DATA / "tiny", progress=True)
    expect(sum(df.partition_sizes) == 180, "read with a progress bar")


@case
def bad_input_raises_the_same_error_on_every_rank():
    messages = {}
    read = gpupart.read_parquet

    def check(label: str, exc: type[BaseException], fn: Callable[[], Any], *needles: str):
        messages[label] = str(raises(exc, fn, *needles))

    check("missing", FileNotFoundError, lambda: read(DATA / "nope"), "nope")
    check("missing in list", FileNotFoundError, lambda: read([*files("plain"), "/nope.parquet"]))
    check("column", KeyError, lambda: read(DATA / "plain", columns=["i", "zz"]), "zz")
    check("columns str", TypeError, lambda: read(DATA / "plain", columns="i"), "columns")
    check("filter column", KeyError, lambda: read(DATA / "plain", filters=[("zz", "=", 1)]), "zz")
    check("operator", ValueError, lambda: read(DATA / "plain", filters=[("i", "like", 1)]), "like")
    check("filter form", TypeError, lambda: read(DATA / "plain", filters="i > 3"), "filters")
    check("in list", TypeError, lambda: read(DATA / "plain", filters=[("i", "in", 3)]), "in")
    check("types", TypeError, lambda: read(DATA / "plain", filters=[("i", ">", "x")]), "filters")
    check(
        "partition types",
        TypeError,
        lambda: read(DATA / "hive", filters=[("year", "=", "2021")]),
        "filters",
    )
    mm = DATA / "mismatch"
    check("schema", ValueError, lambda: read(mm), f"{mm}/a.parquet", f"{mm}/b.parquet", "'f'")
    check("corrupt", ValueError, lambda: read(DATA / "corrupt"), "c-3.parquet", "corrupt")
    check("path type", TypeError, lambda: read(3), "path")
    check("url", ValueError, lambda: read("nosuchscheme://x/y"), "nosuchscheme")
    return {"messages": messages}


# == writing ===================================================================================


def frame_with_an_empty_partition() -> tuple[Any, pd.DataFrame]:
    """A frame of every dtype whose last rank holds no rows (at 1 rank: none, all rows)."""
    rng = np.random.default_rng(3)
    n = 97
    whole = pd.DataFrame(
        {
            "k": rng.integers(0, 4, n),
            "g": pd.Series(np.array(["p", "q", "r"])[rng.integers(0, 3, n)], dtype="str"),
            "x": rng.standard_normal(n),
            "s": pd.Series([f"s{v}" if v % 5 else None for v in range(n)], dtype="str"),
            "m": pd.array([v if v % 4 else None for v in range(n)], dtype="Int64"),
            "t": pd.date_range("2020-01-01", periods=n, freq="h"),
            "z": pd.date_range("2020-01-01", periods=n, freq="D", tz="Europe/Paris"),
            "b": rng.random(n) < 0.3,
        }
    )
    pieces = np.array_split(np.arange(n), max(size - 1, 1))
    mine = whole.iloc[pieces[rank]] if rank < len(pieces) else whole.iloc[:0]
    return gpupart.from_local_frames(mine.reset_index(drop=True)), whole


@case
def write_and_read_back():
    df, whole = frame_with_an_empty_partition()
    out = WORK / "roundtrip"
    df.to_parquet(out)
    names = sorted(os.listdir(out))
    expect(names == [f"part.{i}.parquet" for i in range(df.npartitions)], f"{names}")
    assert_frame_equal(expected(str(out)), whole)
    same("read back", gpupart.read_parquet(out), whole)
    same(
        "read back filtered",
        gpupart.read_parquet(out, filters=[("k", "=", 2)]),
        whole[whole.k == 2].reset_index(drop=True),
    )
    no_leftovers("write")
    df.to_parquet(WORK / "zstd", compression="zstd")
    expect(
        pq.ParquetFile(WORK / "zstd" / "part.0.parquet").metadata.row_group(0).column(0).compression
        == "ZSTD",
        "zstd",
    )
    df.to_parquet(f"file://{WORK / 'by_url'}", compression=None)
    assert_frame_equal(expected(str(WORK / "by_url")), whole)


@case
def write_many_partitions_keeps_the_order():
    _, whole = frame_with_an_empty_partition()
    df = gpupart.from_pandas(whole, npartitions=12)
    out = WORK / "twelve"
    df.to_parquet(out)
    names = sorted(os.listdir(out))
    expect(names == [f"part.{i:02d}.parquet" for i in range(12)], f"{names}")
    assert_frame_equal(pd.read_parquet(out), whole)
    same("twelve back", gpupart.read_parquet(out), whole)
    no_leftovers("twelve")


@case
def write_partition_cols():
    df, whole = frame_with_an_empty_partition()
    out = WORK / "partitioned"
    df.to_parquet(out, partition_cols=["g", "k"])
    dirs = sorted(os.listdir(out))
    expect(dirs == ["g=p", "g=q", "g=r"], f"{dirs}")
    back = gpupart.read_parquet(out)
    want = expected(str(out))
    same("partitioned read back", back, want)
    expect(list(want.columns) == ["x", "s", "m", "t", "z", "b", "g", "k"], "partitions last")
    expect(str(want.k.dtype) == "category" and str(want.k.cat.categories.dtype) == "int32", "k")
    restored = want.astype({"g": "str", "k": "int64"})[list(whole.columns)]
    order = ["x"]
    assert_frame_equal(
        restored.sort_values(order).reset_index(drop=True),
        whole.sort_values(order).reset_index(drop=True),
    )


@case
def overwrite_rules():
    df, whole = frame_with_an_empty_partition()
    out = WORK / "target"
    df.to_parquet(out)
    raises(FileExistsError, lambda: df.to_parquet(out), str(out), "overwrite=True")
    small = df[df["k"] == 1]
    small.to_parquet(out, overwrite=True)
    assert_frame_equal(expected(str(out)), whole[whole.k == 1].reset_index(drop=True))
    (WORK / "a_file").write_text("x") if rank == 0 else None
    gpupart.runtime().barrier()
    raises(FileExistsError, lambda: df.to_parquet(WORK / "a_file"), "a_file")
    df.to_parquet(WORK / "a_file", overwrite=True)
    assert_frame_equal(expected(str(WORK / "a_file")), whole)
    no_leftovers("overwrite")


@case
def a_failing_rank_leaves_nothing_behind():
    df, _ = frame_with_an_empty_partition()
    out = WORK / "failed"
    real = pq.write_table

    def failing(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)  # this rank has written a file: the temporary dir is not empty
        if rank == size - 1:
            raise OSError("disk full (simulated)")

    pq.write_table = failing
    try:
        raises(
            OSError, lambda: df.to_parquet(out), "disk full", f"rank {size - 1}" if size > 1 else ""
        )
    finally:
        pq.write_table = real
    gpupart.runtime().barrier()
    expect(not out.exists(), "no dataset under the final name")
    no_leftovers("failed write")
    nulls = gpupart.from_pandas(pd.DataFrame({"k": [1.0, None, 2.0], "x": [1, 2, 3]}))
    raises(ValueError, lambda: nulls.to_parquet(out, partition_cols=["k"]), "'k'", "null")
    expect(not out.exists(), "no dataset after the null partition value")


@case
def bad_write_arguments_raise_everywhere():
    df, _ = frame_with_an_empty_partition()
    out = WORK / "bad"
    raises(KeyError, lambda: df.to_parquet(out, partition_cols=["nope"]), "nope")
    raises(TypeError, lambda: df.to_parquet(out, partition_cols="k"), "partition_cols")
    raises(ValueError, lambda: df.to_parquet(out, compression="nope"), "compression")
    raises(TypeError, lambda: df.to_parquet(out, overwrite=1), "overwrite")
    raises(TypeError, lambda: df.to_parquet(3), "path")
    if size > 1:  # a different path on one rank: every rank refuses
        path = out if rank else WORK / "other"
        raises(ValueError, lambda: df.to_parquet(path), "same arguments")
    expect(not out.exists() and not (WORK / "other").exists(), "nothing written")


# == main ======================================================================================

DATA = WORK = Path()
rank = size = 0
gpupart: Any = None


def main() -> None:
    global DATA, WORK, rank, size, gpupart
    if sys.argv[1] == "build":
        build(Path(sys.argv[2]))
        return
    import gpupart as gp

    gpupart = gp
    DATA, WORK = Path(sys.argv[2]), Path(sys.argv[3])
    rt = gpupart.init(timeout=60)
    rank, size = rt.rank, rt.size
    if rank == 0:
        shutil.rmtree(WORK, ignore_errors=True)
        WORK.mkdir(parents=True)
    rt.barrier()
    emit("plan", rank=rank, cases=[name for name, _ in CASES])
    for name, fn in CASES:
        started = time.monotonic()
        extra = fn() or {}
        rt.barrier()
        emit("case", name=name, rank=rank, seconds=round(time.monotonic() - started, 2), **extra)
    emit("done", rank=rank, size=size)
    rt.close()


if __name__ == "__main__":
    main()
