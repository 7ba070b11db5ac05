"""DistFrame/DistSeries core and ``frame_ops``, checked against pandas on the same data.

Run as ``gpupart run -n N -- python core_cases.py`` at any job size. Every rank builds the
same pandas frames (every dtype the frame carries: int8..int64, uint, float32/64 with NaN,
bool, nullable Int64/boolean with NA, str with None, datetime64 with NaT, tz-aware,
categorical), distributes them in several layouts (one partition per rank, many partitions,
from a root, uneven pieces with an empty rank, every row on one rank), applies an operation
and compares with pandas: this rank's partitions (the layout's, of the meta's schema, each
with a RangeIndex) and the whole (``to_pandas``). Errors must be raised on every rank, and
the ranks must still be in step afterwards.

Every rank emits ``@plan`` (the case names), ``@case`` after each case passes and ``@done``.
A failed check raises: the job fails with the traceback.
"""

from __future__ import annotations

import contextlib
import operator
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "mp_scripts"))
from _mp import emit, expect, raises
from gpupart.containers import frame_columns
from gpupart.containers.dframe import DistFrame, DistSeries, Layout
from gpupart.containers.frame_creation import owners_for
from gpupart.containers.shuffle import shuffle_rows

import gpupart
from gpupart.errors import CollectiveError

CASES: list[tuple[str, Callable[[], Any]]] = []
ROWS = 23


def case(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Register a case (run at every job size, in order)."""
    CASES.append((fn.__name__, fn))
    return fn


def text(values: Any) -> Any:
    """Strings with ``None`` missing, as pandas makes them: ``str`` (pandas 3), objects (2).

    (``pd.array(values, dtype="str")`` gives NumPy text under pandas 2, ``None`` as 'None'.)
    """
    return pd.Series([None if v is None else str(v) for v in values], dtype="str").array


# -- data -------------------------------------------------------------------------------------


def sample(n: int = ROWS) -> pd.DataFrame:
    """The same frame on every rank: every dtype, nulls at different strides, an ``id``."""
    k = np.arange(n)
    rng = np.random.default_rng(7)
    f32 = (k * 0.25 - 2).astype(np.float32)
    f32[k % 5 == 1] = np.nan
    f64 = rng.standard_normal(n) * 100
    f64[k % 4 == 2] = np.nan
    t = pd.Series(pd.date_range("2021-01-30 22:00", periods=n, freq="7h")).astype("M8[us]")
    t[k % 5 == 3] = pd.NaT
    words = np.array(["apple", "Banana", " cherry ", "date", "APPLE pie", "fig", ""])
    return pd.DataFrame(
        {
            "id": k.astype(np.int64),
            "i8": ((k * 37) % 200 - 100).astype(np.int8),
            "i16": (k * 1000 - 9000).astype(np.int16),
            "i32": (k % 7 - 3).astype(np.int32),
            "i64": rng.integers(-(10**12), 10**12, n),
            "u8": (k * 11 % 256).astype(np.uint8),
            "u64": (np.uint64(2**63) + k.astype(np.uint64) * np.uint64(3)),
            "f32": f32,
            "f64": f64,
            "b": k % 3 == 0,
            "I": pd.array([None if i % 3 == 1 else int(i * i - 40) for i in k], dtype="Int64"),
            "B": pd.array([None if i % 4 == 0 else bool(i % 3) for i in k], dtype="boolean"),
            "s": text([None if i % 6 == 5 else words[i % 7] for i in k]),
            "t": t,
            "tz": pd.date_range("2021-03-27 20:00", periods=n, freq="5h", tz="Europe/Berlin"),
            "cat": pd.Categorical(
                [None if i % 8 == 7 else "xyz"[i % 3] for i in k], categories=["z", "y", "x"]
            ),
        }
    )


def layouts(df: pd.DataFrame, only: tuple[str, ...] = ()) -> list[tuple[str, DistFrame]]:
    """``df`` in several layouts: per rank, 5 partitions, from the last rank, uneven, skewed."""
    n = len(df)
    # uneven pieces, the middle rank (rank 1 at 2 or 3 ranks) empty
    cuts = [0, *[min(n, (r + 1) * (r + 1) * n // (size * size)) for r in range(size)]]
    if size > 1:
        cuts[2] = cuts[1]
    cuts[-1] = n
    makers = {
        "default": lambda: gpupart.from_pandas(df),
        "parts5": lambda: gpupart.from_pandas(df, npartitions=5),
        "root": lambda: gpupart.from_pandas(df if rank == size - 1 else None, 4, root=size - 1),
        "uneven": lambda: gpupart.from_local_frames(df.iloc[cuts[rank] : cuts[rank + 1]]),
        "skewed": lambda: gpupart.from_local_frames(df if rank == 0 else df.iloc[:0]),
    }
    return [(label, make()) for label, make in makers.items() if not only or label in only]


def varied(df: pd.DataFrame) -> list[tuple[str, DistFrame]]:
    """The layouts that differ for partition-by-partition work (the job's time stays short).

    Several partitions per rank, a rank with no rows (the first rows on rank 0, the rest on
    the last), and every row on rank 0 with empty partitions elsewhere.
    """
    return layouts(df, ("parts5", "uneven", "skewed"))


# -- checks -----------------------------------------------------------------------------------


def check_parts(where: str, x: DistFrame | DistSeries) -> None:
    """This rank holds the layout's partitions, each of ``meta``'s schema with a RangeIndex."""
    mine = x.layout.mine(rank)
    expect(sorted(x.local_partitions) == mine, f"{where}: partitions {sorted(x.local_partitions)}")
    meta = x.meta if isinstance(x, DistFrame) else x.meta.to_frame()
    for i, p in x.local_partitions.items():
        part = p if isinstance(x, DistFrame) else p.to_frame()
        expect(
            frame_columns.schema(part) == frame_columns.schema(meta),
            f"{where}: partition {i} schema {frame_columns.schema(part)} != meta's"
            f" {frame_columns.schema(meta)}",
        )
        expect(isinstance(p.index, pd.RangeIndex), f"{where}: partition {i} index {p.index}")
        expect(p.index.start == 0 and p.index.step == 1, f"{where}: partition {i} index")
        if isinstance(x, DistSeries):
            expect(p.name == x.name, f"{where}: partition {i} name {p.name!r} != {x.name!r}")
        if x.layout._sizes is not None:
            expect(len(p) == x.layout._sizes[i], f"{where}: partition {i} has {len(p)} rows")


#: Comparisons queued by the running case (see :func:`compare_later`); ``None``: compare now.
PENDING: list[tuple[str, Any, Any, dict[str, Any]]] | None = None


def check_frame(where: str, x: Any, want: pd.DataFrame, **kw: Any) -> None:
    """``x`` is its layout's partitions, and the whole of it is ``want`` (as pandas)."""
    expect(isinstance(x, DistFrame), f"{where}: expected a DistFrame, got {type(x)}")
    check_parts(where, x)
    if x.layout._sizes is not None:  # (unknown sizes: learnt from the rows that arrive)
        expect(x.shape == want.shape and len(x) == len(want), f"{where}: shape {x.shape}")
    compare_later(where, x, want.reset_index(drop=True), kw)


def check_series(where: str, x: Any, want: pd.Series, **kw: Any) -> None:
    """``x`` is its layout's partitions, and the whole of it is ``want`` (as pandas)."""
    expect(isinstance(x, DistSeries), f"{where}: expected a DistSeries, got {type(x)}")
    check_parts(where, x)
    want = want.reset_index(drop=True)
    compare_later(where, x, want, kw)


def compare_later(where: str, x: Any, want: Any, kw: dict[str, Any]) -> None:
    """Queue ``x`` (as it is now) against ``want``; compared now outside a case."""
    frame = x if isinstance(x, DistFrame) else x.to_frame()
    snapshot = DistFrame(rt, frame.meta, x.layout, dict(frame.local_partitions))
    if PENDING is None:
        compare([(where, snapshot, want, kw)])
    else:
        PENDING.append((where, snapshot, want, kw))


def compare(queued: list[tuple[str, DistFrame, Any, dict[str, Any]]]) -> None:
    """Gather every queued result with one ``to_pandas`` per layout; compare with pandas.

    The results of one layout travel as the columns of one frame (labels by position), so a
    case that checks hundreds of results moves data a few times, not hundreds.
    """
    groups: dict[int, list[tuple[str, DistFrame, Any, dict[str, Any]]]] = {}
    for item in queued:
        groups.setdefault(id(item[1].layout), []).append(item)
    for items in groups.values():
        layout = items[0][1].layout

        def joined(frames: list[Any]) -> pd.DataFrame:
            out = pd.concat(frames, axis=1) if frames else pd.DataFrame()
            out.columns = [f"c{k}" for k in range(out.shape[1])]
            return out

        meta = joined([x.meta for _, x, _, _ in items])
        parts = {
            i: joined([x.local_partitions[i] for _, x, _, _ in items]) for i in layout.mine(rank)
        }
        whole = DistFrame(rt, meta, layout, parts).to_pandas()
        at = 0
        for where, x, want, kw in items:
            width = len(x.columns)
            got = whole.iloc[:, at : at + width]
            got.columns = x.columns
            at += width
            try:
                if isinstance(want, pd.Series):
                    got = got.iloc[:, 0]  # (named as x: its frame's column)
                    pd.testing.assert_series_equal(got, want, **kw)
                else:
                    pd.testing.assert_frame_equal(got, want, **kw)
            except AssertionError as exc:
                raise AssertionError(f"{where}: {exc}\n got:\n{got}\n want:\n{want}") from None
            same_nulls(where, got, want)


def same_nulls(where: str, got: Any, want: Any) -> None:
    """Object columns hold pandas' missing-value objects (None, NaN, NA) row for row.

    (``assert_frame_equal`` only warns about ``None`` against ``NaN`` under pandas 2, whose
    strings are objects.)
    """
    got, want = (got.to_frame(), want.to_frame()) if isinstance(want, pd.Series) else (got, want)
    for j in range(want.shape[1]):
        if want.iloc[:, j].dtype == object:
            kinds = [[repr(v) for v in c[c.isna()]] for c in (got.iloc[:, j], want.iloc[:, j])]
            expect(kinds[0] == kinds[1], f"{where}: missing values {kinds[0]} != {kinds[1]}")


def check_local(where: str, x: Any, want: Any) -> None:
    """This rank's partitions are their rows of ``want``, of its dtypes (no data moves)."""
    check_parts(where, x)
    expect(
        str(x.dtypes if isinstance(x, DistFrame) else x.dtype)
        == str(want.dtypes if isinstance(x, DistFrame) else want.dtype),
        f"{where}: dtypes",
    )
    starts = np.concatenate([[0], np.cumsum(x.partition_sizes)])
    for i, p in x.local_partitions.items():
        part = want.iloc[starts[i] : starts[i + 1]].reset_index(drop=True)
        if isinstance(x, DistFrame):
            pd.testing.assert_frame_equal(p, part, obj=f"{where} partition {i}")
        else:
            pd.testing.assert_series_equal(p, part, obj=f"{where} partition {i}")


def check_value(where: str, got: Any, want: Any, rtol: float = 1e-12) -> None:
    """A reduction's value: pandas' type, and its value (floats to ``rtol``)."""
    if want is pd.NA or want is pd.NaT:
        expect(got is want, f"{where}: got {got!r}, expected {want!r}")
        return
    if isinstance(want, (float, np.floating)) and np.isnan(want):
        expect(
            isinstance(got, (float, np.floating)) and np.isnan(got),
            f"{where}: got {got!r}, expected NaN",
        )
        expect(np.dtype(type(got)) == np.dtype(type(want)), f"{where}: {type(got)} NaN")
        return
    expect(type(got) is type(want), f"{where}: got {got!r} ({type(got)}), expected {want!r}")
    if isinstance(want, (float, np.floating)):
        expect(np.isclose(got, want, rtol=rtol, atol=0), f"{where}: got {got!r}, want {want!r}")
    elif isinstance(want, pd.Timestamp):
        expect(str(got.tz) == str(want.tz), f"{where}: tz {got.tz} != {want.tz}")
        expect(abs(got - want) <= pd.Timedelta(1, "us"), f"{where}: got {got!r}, want {want!r}")
    elif isinstance(want, pd.Timedelta):
        expect(abs(got - want) <= pd.Timedelta(1, "us"), f"{where}: got {got!r}, want {want!r}")
    else:
        expect(got == want, f"{where}: got {got!r}, expected {want!r}")


def everywhere(exc: type[BaseException], fn: Callable[[], Any], *needles: str) -> str:
    """``fn`` raises ``exc`` here (every rank calls this), and the ranks are still in step."""
    message = str(raises(exc, fn, *needles))
    in_step()
    return message


def in_step() -> None:
    expect(rt.allgather(rank) == list(range(size)), "ranks out of step after an error")


def messages_agree(message: str) -> None:
    """Every rank raised the same message."""
    got = rt.allgather(message)
    expect(len(set(got)) == 1, f"different messages on different ranks: {got}")


# == creation =================================================================================


@case
def from_pandas_default_and_npartitions() -> None:
    df = sample()
    for parts in [None, 1, 2, 3, 4, 5, 6, 7, 40]:
        x = gpupart.from_pandas(df, npartitions=parts)
        p = size if parts is None else parts
        expect(x.npartitions == p, f"npartitions {x.npartitions} != {p}")
        expect(x.layout.owners == tuple(owners_for(p, size)), f"owners {x.layout.owners}")
        sizes = [len(c) for c in np.array_split(np.arange(ROWS), p)]
        expect(list(x.partition_sizes) == sizes, f"sizes {x.partition_sizes} != {sizes}")
        check_frame(f"from_pandas npartitions={parts}", x, df)
    # no data moves without root=: the partitions are views of the caller's frame
    x = gpupart.from_pandas(df, npartitions=2)
    for i, p in x.local_partitions.items():
        expect(np.shares_memory(p["i64"].to_numpy(), df["i64"].to_numpy()), f"view {i}")
    empty = gpupart.from_pandas(df.iloc[:0], npartitions=3)
    check_frame("from_pandas empty", empty, df.iloc[:0])
    expect(empty.partition_sizes == (0, 0, 0), f"empty sizes {empty.partition_sizes}")
    indexed = df.set_index("id")  # the index is dropped
    check_frame("from_pandas drops the index", gpupart.from_pandas(indexed), indexed)


@case
def from_pandas_root() -> None:
    df = sample()
    for root in sorted({0, size - 1}):
        for parts in [1, 3, 7]:
            x = gpupart.from_pandas(df if rank == root else "ignored", parts, root=root)
            expect(x.partition_sizes == tuple(len(c) for c in np.array_split(df, parts)), "sz")
            check_frame(f"from_pandas root={root} npartitions={parts}", x, df)
    everywhere(ValueError, lambda: gpupart.from_pandas(df, root=size), "root", str(size))
    message = everywhere(
        CollectiveError,
        lambda: gpupart.from_pandas([1, 2] if rank == size - 1 else None, root=size - 1),
        f"rank {size - 1}",
        "DataFrame",
    )
    messages_agree(message)


@case
def from_pandas_errors_everywhere() -> None:
    df = sample()
    everywhere(ValueError, lambda: gpupart.from_pandas(df, npartitions=0), "npartitions")
    everywhere(ValueError, lambda: gpupart.from_pandas(df, npartitions=True), "npartitions")
    message = everywhere(
        CollectiveError,
        lambda: gpupart.from_pandas(np.zeros(3) if rank == size - 1 else df),
        "DataFrame",
    )
    messages_agree(message)
    if size > 1:
        message = everywhere(
            CollectiveError,
            lambda: gpupart.from_pandas(df.iloc[: ROWS - rank]),
            "same frame",
            f"rank {size - 1}: {ROWS - size + 1} rows",
        )
        messages_agree(message)
    dup = pd.DataFrame([[1, 2]], columns=["a", "a"])
    everywhere(CollectiveError, lambda: gpupart.from_pandas(dup), "distinct column labels")


@case
def interleaved_owners_keep_row_order() -> None:
    """Rank r owns partitions r, r + size, ...: gathering and to_array keep the frame's order."""
    df = sample()
    pieces = np.array_split(np.arange(ROWS), 3 * size)
    owners = [i % size for i in range(3 * size)]
    parts = {
        i: df.iloc[rows].reset_index(drop=True)
        for i, rows in enumerate(pieces)
        if owners[i] == rank
    }
    x = DistFrame(rt, df.iloc[:0], Layout(owners, [len(r) for r in pieces]), parts)
    pd.testing.assert_frame_equal(x.to_pandas(), df)
    whole = x.gather(size - 1)
    if rank == size - 1:
        pd.testing.assert_frame_equal(whole, df)
    pd.testing.assert_frame_equal(x.head(ROWS - 2), df.head(ROWS - 2))
    got = x.to_array(["id", "i64"]).to_numpy()
    expect(np.array_equal(got, df[["id", "i64"]].to_numpy()), "to_array row order")
    pd.testing.assert_series_equal(x["id"].to_pandas(), df["id"])
    s = DistSeries(
        rt, pd.Series([], dtype="int64"), x.layout, {i: p["id"] for i, p in parts.items()}
    )
    expect(s.to_pandas().name is None, f"unnamed series came back named {s.to_pandas().name!r}")


@case
def from_local_frames_uneven_and_empty() -> None:
    df = sample()
    for label, x in layouts(df):
        check_frame(f"layout {label}", x, df)
    # every rank's piece is its partition, in rank order; sizes known without a collective
    pieces = np.array_split(np.arange(ROWS), size)
    x = gpupart.from_local_frames(df.iloc[pieces[rank]])
    expect(x.layout._sizes == tuple(len(p) for p in pieces), f"sizes {x.layout._sizes}")
    expect(x.layout.owners == tuple(range(size)), f"owners {x.layout.owners}")
    # an empty piece of other dtypes (a frame built from nothing) takes the others' schema
    blank = pd.DataFrame({c: [] for c in df.columns})
    last = size - 1
    y = gpupart.from_local_frames(df if rank == last or size == 1 else blank)
    check_frame("from_local_frames blank pieces", y, df)
    z = gpupart.from_local_frames(df.iloc[:0])
    check_frame("from_local_frames all empty", z, df.iloc[:0])


@case
def from_local_frames_schema_mismatch_everywhere() -> None:
    df = sample(6)
    last = size - 1
    everywhere(CollectiveError, lambda: gpupart.from_local_frames(5), "piece", "DataFrame")
    if size == 1:
        return
    bad = df.astype({"i32": "int64"}) if rank == last else df
    message = everywhere(
        CollectiveError,
        lambda: gpupart.from_local_frames(bad),
        f"rank {last}",
        "'i32' is int64 (expected int32)",
    )
    messages_agree(message)
    renamed = df.rename(columns={"f64": "g"}) if rank == last else df
    message = everywhere(
        CollectiveError, lambda: gpupart.from_local_frames(renamed), f"rank {last}", "'g'"
    )
    messages_agree(message)
    # categories differ (one more here): partitions must share one schema, as pandas would
    # otherwise make the whole column object; set_categories on every rank first
    more = df.assign(cat=df["cat"].cat.add_categories(["w"])) if rank == last else df
    message = everywhere(
        CollectiveError, lambda: gpupart.from_local_frames(more), f"rank {last}", "'cat'", "'w'"
    )
    messages_agree(message)
    # the same categories in another order: an unordered categorical's dtype (pandas calls
    # them equal) is still one schema for every partition, so it is rejected too
    order = df.assign(cat=df["cat"].cat.reorder_categories(["x", "y", "z"])) if rank == last else df
    everywhere(CollectiveError, lambda: gpupart.from_local_frames(order), f"rank {last}", "'cat'")


# == describing and moving out =================================================================


@case
def describe_len_shape_columns_dtypes() -> None:
    df = sample()
    for label, x in layouts(df):
        expect(len(x) == ROWS and x.shape == df.shape, f"{label}: len {len(x)} shape {x.shape}")
        expect(list(x.columns) == list(df.columns), f"{label}: columns")
        pd.testing.assert_series_equal(x.dtypes, df.dtypes)
        expect(sum(x.partition_sizes) == ROWS, f"{label}: sizes {x.partition_sizes}")
        expect(len(x.partition_sizes) == x.npartitions, f"{label}: npartitions")
        expect("DistFrame" in repr(x) and f"rank {rank}" in repr(x), repr(x))
        s = x["s"]
        expect(s.name == "s" and s.dtype == df["s"].dtype and len(s) == ROWS, f"{label}: s")
        expect(x.f64.name == "f64", "attribute access")
        expect(s.layout is x.layout, f"{label}: a column shares the frame's layout")
    raises(AttributeError, lambda: x.nope, "nope")
    raises(KeyError, lambda: x["nope"], "nope")
    raises(KeyError, lambda: x[["id", "nope"]], "nope")
    raises(TypeError, lambda: bool(x["b"]), "ambiguous")
    # sizes unknown after a filter: learnt with one all-gather when asked
    y = x[x["b"]]
    expect(y.layout._sizes is None, "sizes are unknown after a filter")
    expect(len(y) == int(df["b"].sum()), f"len after filter {len(y)}")


@case
def head_across_partitions() -> None:
    df = sample()
    for label, x in layouts(df):
        for n in [0, 1, 3, 5, 9, ROWS - 1, ROWS, ROWS + 10]:
            got = x.head(n)
            pd.testing.assert_frame_equal(got, df.head(n).reset_index(drop=True), obj=f"{label}")
        pd.testing.assert_series_equal(x["tz"].head(4), df["tz"].head(4))
    expect(len(x.head()) == 5, "head() is 5 rows")
    everywhere(ValueError, lambda: x.head(-1), "n")
    everywhere(ValueError, lambda: x.head(2.0), "n")


@case
def to_pandas_and_gather() -> None:
    df = sample()
    for label, x in layouts(df):
        for root in range(size):
            got = x.gather(root)
            if rank == root:
                pd.testing.assert_frame_equal(got, df, obj=f"{label} gather({root})")
            else:
                expect(got is None, f"{label}: gather({root}) gave {type(got)} on rank {rank}")
        s = x["cat"].gather(size - 1)
        if rank == size - 1:
            pd.testing.assert_series_equal(s, df["cat"])
        pd.testing.assert_series_equal(x["s"].to_pandas(), df["s"])
    everywhere(ValueError, lambda: x.gather(size), "root")
    everywhere(ValueError, lambda: x.gather(-1), "root")


@case
def to_array_columns_and_dtype() -> None:
    df = sample()
    for label, x in layouts(df):
        for cols, dtype in [
            (["i8", "i16", "i32"], None),
            (["f32", "f64", "i64"], None),
            (["u8", "b"], np.uint8),
            (["i8", "f32"], np.float32),
            (["id"], np.int32),
        ]:
            a = x.to_array(cols, dtype=dtype)
            want = df[cols].to_numpy(dtype=dtype)
            expect(a.shape == want.shape and a.dtype == want.dtype, f"{label} {cols}: {a.dtype}")
            got = a.to_numpy()
            expect(np.array_equal(got, want, equal_nan=True), f"{label} {cols}: values")
        one = x["f64"].to_array()
        expect(np.array_equal(one.to_numpy(), df["f64"].to_numpy(), equal_nan=True), "series")
    everywhere(KeyError, lambda: x.to_array(["id", "nope"]), "nope")


# == selection, assignment, operators ==========================================================


@case
def filter_with_boolean_series() -> None:
    df = sample()
    for label, x in varied(df):
        check_frame(f"{label} b", x[x["b"]], df[df["b"]])
        check_frame(f"{label} ~b", x[~x["b"]], df[~df["b"]])
        check_frame(f"{label} f64>0", x[x["f64"] > 0], df[df["f64"] > 0])
        check_frame(f"{label} nullable NA", x[x["B"]], df[df["B"].fillna(False)])
        check_frame(f"{label} none", x[x["id"] < 0], df.iloc[:0])
        both = (x["i32"] > 0) & (x["s"] != "fig") | (x["id"] == 0)
        check_frame(
            f"{label} & |", x[both], df[(df["i32"] > 0) & (df["s"] != "fig") | (df.id == 0)]
        )
        # a filtered frame filters again, with its own mask
        y = x[x["i8"] > -50]
        check_frame(f"{label} twice", y[y["u8"] % 2 == 0], df[df.i8 > -50][lambda d: d.u8 % 2 == 0])
        check_frame(f"{label} columns", x[["s", "id"]], df[["s", "id"]])
        check_series(f"{label} column", x["tz"], df["tz"])
    everywhere(TypeError, lambda: x[x["i32"]], "boolean", "int32")
    everywhere(TypeError, lambda: x[x["s"]], "boolean")


@case
def assign_and_setitem() -> None:
    df = sample()
    for label, x in varied(df):
        got = x.assign(z=x["f64"] * 2, one=1, s=x["s"].str.upper())
        check_frame(f"{label} assign", got, df.assign(z=df.f64 * 2, one=1, s=df.s.str.upper()))
        check_frame(f"{label} assign keeps the original", x, df)
        y = x.assign()
        y["id"] = y["id"] + 100
        y["new"] = "text"
        y["when"] = pd.Timestamp("2020-01-01")
        y["flag"] = y["I"] > 0
        want = df.copy()
        want["id"] = want["id"] + 100
        want["new"] = "text"
        want["when"] = pd.Timestamp("2020-01-01")
        want["flag"] = want["I"] > 0
        check_frame(f"{label} setitem", y, want)
    everywhere(TypeError, lambda: x.assign(z=[1, 2, 3]), "z", "DistSeries or a scalar")
    everywhere(TypeError, lambda: x.assign(z=x), "z")


@case
def arithmetic_and_comparisons() -> None:
    df = sample()
    ops = [operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv]
    cmps = [operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # division by zero, as pandas
        for label, x in varied(df):
            for a, b in [("i64", "i8"), ("f64", "f32"), ("I", "i32"), ("u8", "i16"), ("f64", "I")]:
                for op in [*ops, *cmps]:
                    check_series(
                        f"{label} {a} {op.__name__} {b}", op(x[a], x[b]), op(df[a], df[b]).rename(a)
                    )
            for col, scalar in [("i32", 3), ("f64", 2.5), ("I", 4), ("u8", 2), ("f32", -1.5)]:
                for op in [*ops, *cmps, operator.mod, operator.pow]:
                    if op is operator.pow and col in ("i32", "I"):
                        continue  # negative integer powers raise in pandas too
                    check_series(
                        f"{label} {col} {op.__name__} {scalar}",
                        op(x[col], scalar),
                        op(df[col], scalar),
                    )
                    if col == "I" and op in (operator.floordiv, operator.mod) and label == "root":
                        # pandas widens Int64 to Float64 when a masked slot holds 0, and the
                        # codec (frame_columns) stores 0 under NA where pandas stores 1
                        continue
                    check_series(
                        f"{label} {scalar} {op.__name__} {col}",
                        op(scalar, x[col]),
                        op(scalar, df[col]),
                    )
            check_series(f"{label} -", -x["f64"], -df["f64"])
            check_series(
                f"{label} abs", abs(x["i8"].astype("int64")), abs(df["i8"].astype("int64"))
            )
            # datetimes: minus a timedelta, minus each other, compared with a timestamp
            delta = pd.Timedelta("1D 3h")
            check_series(f"{label} t - td", x["t"] - delta, df["t"] - delta)
            check_series(f"{label} tz + td", x["tz"] + delta, df["tz"] + delta)
            check_series(
                f"{label} t - t",
                x["t"] - x["t"].fillna(pd.Timestamp(0)),
                df.t - df.t.fillna(pd.Timestamp(0)),
            )
            stamp = pd.Timestamp("2021-02-03", tz="UTC")
            check_series(f"{label} tz < ts", x["tz"] < stamp, df["tz"] < stamp)
            check_series(f"{label} s == str", x["s"] == "fig", df["s"] == "fig")
            check_series(f"{label} s + s", x["s"] + x["s"], df["s"] + df["s"])
            # logic: bool and nullable boolean, with Kleene's NA
            b, B = x["b"], x["B"]
            check_series(f"{label} b & B", b & B, (df.b & df.B).rename("b"))
            check_series(f"{label} B | b", B | b, (df.B | df.b).rename("B"))
            check_series(f"{label} ~B", ~B, ~df.B)
            check_series(f"{label} b ^ True", b ^ True, df.b ^ True)
            check_series(f"{label} True & b", True & b, True & df.b)
            expect(x["f64"].layout is x.layout, "columns of a frame share its layout")
            expect((x["f64"] + x["f32"]).layout is x.layout, "results too")
    # integer powers: a negative exponent on one rank raises on every rank
    message = everywhere(ValueError, lambda: 2 ** x["i32"], "pow", "negative integer powers")
    messages_agree(message)
    check_series("zero divisor", x["i32"] // 0, df["i32"] // 0)  # float64 everywhere
    everywhere(TypeError, lambda: x["f64"] + x, "frame")
    everywhere(TypeError, lambda: x["f64"] + [1, 2], "scalar")


@case
def unaligned_operands_fail_everywhere() -> None:
    df = sample()
    x = gpupart.from_pandas(df)
    other = gpupart.from_pandas(df, npartitions=size + 1)
    uneven = layouts(df)[3][1]  # at one rank, the same layout as x
    filtered = x[x["b"]]
    for y in (other, uneven, filtered) if size > 1 else (other, filtered):
        everywhere(ValueError, lambda y=y: x["f64"] + y["f64"], "partitioned like this one")
        everywhere(ValueError, lambda y=y: x[y["b"]], "key", "partitioned like")
        everywhere(ValueError, lambda y=y: x.assign(z=y["f64"]), "z", "partitioned like")
    short = gpupart.from_pandas(df.iloc[1:])
    everywhere(ValueError, lambda: x["f64"] < short["f64"], "sizes")
    # lined up although derived separately (same owners and sizes): allowed, as pandas
    twin = gpupart.from_pandas(df.copy())
    check_series("twins", x["f64"] + twin["f64"], df["f64"] * 2)


@case
def repartition_and_rebalance() -> None:
    df = sample()
    for label, x in varied(df):
        for parts in [1, 2, 3, 5, 7]:
            y = x.repartition(parts)
            sizes = [len(c) for c in np.array_split(np.arange(ROWS), parts)]
            expect(list(y.partition_sizes) == sizes, f"{label} repartition({parts})")
            expect(y.layout.owners == tuple(owners_for(parts, size)), f"{label} owners")
            check_frame(f"{label} repartition({parts})", y, df)
        z = x[x["f64"] > 0].rebalance()
        want = df[df["f64"] > 0]
        sizes = [len(c) for c in np.array_split(np.arange(len(want)), size)]
        expect(list(z.partition_sizes) == sizes, f"{label} rebalance sizes {z.partition_sizes}")
        check_frame(f"{label} rebalance", z, want)
    everywhere(ValueError, lambda: x.repartition(0), "npartitions")
    check_frame("rebalance empty", x[x["id"] < 0].rebalance(), df.iloc[:0])


@case
def shuffle_rows_every_row_arrives_in_order() -> None:
    df = sample()
    for label, x in layouts(df):
        dest = {
            i: ((p["id"].to_numpy() * 7 + 3) % size).astype(np.int32)
            for i, p in x.local_partitions.items()
        }
        y = shuffle_rows(x, dest)
        expect(y.layout.owners == tuple(range(size)), f"{label}: one partition per rank")
        check_parts(f"shuffle {label}", y)
        want = df[(df["id"] * 7 + 3) % size == rank].reset_index(drop=True)
        pd.testing.assert_frame_equal(y.local_partitions[rank], want, obj=f"shuffle {label}")
        everything = y.to_pandas().sort_values("id").reset_index(drop=True)
        pd.testing.assert_frame_equal(everything, df, obj=f"shuffle {label} all rows")
        # everything to the last rank
        last = shuffle_rows(
            x, {i: np.full(len(p), size - 1) for i, p in x.local_partitions.items()}
        )
        if rank == size - 1:
            pd.testing.assert_frame_equal(last.local_partitions[rank], df)
        else:
            expect(len(last.local_partitions[rank]) == 0, "nothing left elsewhere")
    x = gpupart.from_pandas(df)  # one partition per rank: every rank checks its own
    (mine,) = x.local_partitions
    n = len(x.local_partitions[mine])
    everywhere(ValueError, lambda: shuffle_rows(x, {mine: np.zeros(n + 1, int)}), "destinations")
    everywhere(ValueError, lambda: shuffle_rows(x, {mine: np.full(n, size)}), "ranks in")
    everywhere(ValueError, lambda: shuffle_rows(x, {mine: np.zeros(n)}), "integer")


# == dtypes through every path =================================================================


@case
def dtypes_round_trip_every_path() -> None:
    df = sample()
    extra = pd.DataFrame(
        {
            "td": pd.to_timedelta(np.arange(ROWS), unit="s"),
            "obj": pd.Series([None if i % 3 else f"o{i}" for i in range(ROWS)], dtype=object),
            "onan": pd.Series(  # missing values as pandas 2 may leave them in strings
                [[f"n{i}", np.nan, pd.NA, None][i % 4] for i in range(ROWS)], dtype=object
            ),
            "F": pd.array([None if i % 5 == 0 else i / 4 for i in range(ROWS)], dtype="Float64"),
            "string": pd.array(
                [None if i % 4 == 0 else f"s{i}" for i in range(ROWS)], dtype="string"
            ),
            "u16": np.arange(ROWS, dtype=np.uint16),
            "u32": np.arange(ROWS, dtype=np.uint32) * 100000,
            "ocat": pd.Categorical(
                ["b", "a"] * 11 + ["c"], categories=["c", "b", "a"], ordered=True
            ),
            "icat": pd.Categorical(np.arange(ROWS) % 4),
        }
    )
    # pandas 3's str, which pandas 2.3 has too (it reads the name 'str' as NumPy's text)
    with contextlib.suppress(TypeError):  # (pandas before 2.3: no na_value)
        extra["nstr"] = pd.array(
            [None if i % 5 == 2 else f"t{i}" for i in range(ROWS)],
            dtype=pd.StringDtype(na_value=np.nan),
        )
    full = pd.concat([df, extra], axis=1)
    empty = frame_columns.empty_frame(frame_columns.schema(full), pd)
    expect(list(empty.dtypes) == list(full.dtypes), f"schema to empty frame: {empty.dtypes}")
    for label, x in layouts(full):
        check_frame(f"{label} to_pandas", x, full)
        check_frame(f"{label} rebalance", x.rebalance(), full)
        check_frame(f"{label} repartition(2)", x.repartition(2), full)
        check_frame(f"{label} filter", x[x["id"] % 3 != 1], full[full["id"] % 3 != 1])
        pd.testing.assert_frame_equal(x.head(7), full.head(7))


# == frame_ops: frames =========================================================================


@case
def frame_astype_rename_drop() -> None:
    df = sample()
    for label, x in varied(df):
        check_frame(
            f"{label} astype dict",
            x.astype({"i8": "int64", "f32": "float64", "b": "int8"}),
            df.astype({"i8": "int64", "f32": "float64", "b": "int8"}),
        )
        num = ["i8", "i16", "u8", "f64", "I"]
        check_frame(f"{label} astype all", x[num].astype("float64"), df[num].astype("float64"))
        check_frame(
            f"{label} astype str", x[["i32", "s"]].astype("str"), df[["i32", "s"]].astype("str")
        )
        check_frame(
            f"{label} astype category", x.astype({"s": "category"}), df.astype({"s": "category"})
        )
        check_frame(
            f"{label} rename dict",
            x.rename(columns={"i8": "small", "zz": "q"}),
            df.rename(columns={"i8": "small", "zz": "q"}),
        )
        fn = "{}_x".format
        check_frame(f"{label} rename fn", x.rename(columns=fn), df.rename(columns=fn))
        check_frame(
            f"{label} rename positional", x.rename({"s": "S"}), df.rename(columns={"s": "S"})
        )
        check_frame(f"{label} drop", x.drop(columns=["i8", "tz"]), df.drop(columns=["i8", "tz"]))
        check_frame(f"{label} drop one", x.drop(columns="cat"), df.drop(columns="cat"))
    message = everywhere(
        KeyError, lambda: x.astype({"i8": "int64", "nope": "int8", "zz": int}), "nope", "zz"
    )
    messages_agree(message)
    everywhere(TypeError, lambda: x.astype({"i8": "no-such-type"}), "no-such-type")
    everywhere(ValueError, lambda: x.rename(columns={"i8": "i16"}), "distinct", "i16")
    everywhere(ValueError, lambda: x.rename(columns=lambda c: "same"), "distinct")
    everywhere(ValueError, lambda: x.rename(columns=str.upper), "distinct", "['b', 'B'] -> 'B'")
    everywhere(TypeError, lambda: x.rename(columns=3), "columns")
    everywhere(TypeError, lambda: x.rename(), "columns")
    everywhere(KeyError, lambda: x.drop(columns=["id", "nope"]), "nope")


@case
def frame_astype_value_errors_everywhere() -> None:
    """A value only one rank holds cannot be cast: every rank raises, naming that rank."""
    df = sample(12)
    last = size - 1
    piece = df.iloc[4 * rank : 4 * rank + 4].copy() if size > 1 else df.copy()
    bad = gpupart.from_local_frames(
        piece.assign(f64=np.nan if rank == last else 1.0, s=("x" if rank == last else "7"))
    )
    message = everywhere(ValueError, lambda: bad.astype({"f64": "int64"}), f"rank(s) {last}")
    messages_agree(message)
    message = everywhere(ValueError, lambda: bad["s"].astype("int64"), f"rank {last}", "astype")
    messages_agree(message)
    fine = gpupart.from_local_frames(piece.assign(s="7"))
    want = pd.Series([7] * len(fine), name="s")
    check_series("astype str to int", fine["s"].astype("int64"), want)


@case
def frame_dropna_fillna_isna() -> None:
    df = sample()
    for label, x in varied(df):
        check_frame(f"{label} dropna", x.dropna(), df.dropna())
        for subset in (["f64"], ["f32", "I"], "s", ["cat", "t"]):
            for how in ("any", "all"):
                check_frame(
                    f"{label} dropna {subset} {how}",
                    x.dropna(subset=subset, how=how),
                    df.dropna(subset=subset, how=how),
                )
        check_frame(f"{label} isna", x.isna(), df.isna())
        check_frame(f"{label} notna", x.notna(), df.notna())
        num = ["f32", "f64", "I"]
        check_frame(f"{label} fillna 0", x[num].fillna(0), df[num].fillna(0))
        fills = {
            "f64": -1.0,
            "I": 0,
            "s": "?",
            "B": False,
            "t": pd.Timestamp("1999-01-01"),
            "nope": 3,
        }
        check_frame(f"{label} fillna dict", x.fillna(fills), df.fillna(fills))
        # a fill that changes the dtype only where there are nulls: pandas' dtype for the whole
        # (mixed objects the codec cannot carry: compared partition by partition)
        cols = ["f64", "i32", "t"]
        check_local(f"{label} fillna str", x[cols].fillna("none"), df[cols].fillna("none"))
    everywhere(KeyError, lambda: x.dropna(subset=["nope"]), "nope")
    everywhere(ValueError, lambda: x.dropna(how="some"), "how")
    everywhere(TypeError, lambda: x.fillna([1, 2]), "value")
    everywhere(TypeError, lambda: x.fillna({"f64": [1]}), "value")
    # pandas 3 refuses a new category where there are nulls to fill (the ranks agree and name
    # one); pandas 2 for any column, empty too (every rank raises pandas' error for the meta)
    try:
        df.iloc[:0].fillna({"cat": "new"})
        needles: tuple[str, ...] = ("fillna", "rank")
    except TypeError:
        needles = ("new category",)
    message = everywhere(TypeError, lambda: x.fillna({"cat": "new"}), *needles)
    messages_agree(message)


# == frame_ops: series =========================================================================


@case
def series_elementwise_ops() -> None:
    df = sample()
    for label, x in varied(df):
        for col in ("f64", "f32", "I", "i8", "u64", "s", "t", "tz", "cat", "B"):
            check_series(f"{label} {col} isna", x[col].isna(), df[col].isna())
            check_series(f"{label} {col} notna", x[col].notna(), df[col].notna())
            check_series(f"{label} {col} dropna", x[col].dropna(), df[col].dropna())
        check_series(f"{label} isin", x["i32"].isin([0, 2, 99]), df["i32"].isin([0, 2, 99]))
        check_series(
            f"{label} isin arr",
            x["s"].isin(np.array(["fig", "date"])),
            df["s"].isin(np.array(["fig", "date"])),
        )
        check_series(f"{label} isin I", x["I"].isin([-40, -39]), df["I"].isin([-40, -39]))
        check_series(f"{label} isin cat", x["cat"].isin(["x"]), df["cat"].isin(["x"]))
        for inc in ("both", "neither", "left", "right"):
            check_series(
                f"{label} between {inc}",
                x["i32"].between(-1, 2, inclusive=inc),
                df["i32"].between(-1, 2, inclusive=inc),
            )
        check_series(f"{label} between f", x["f64"].between(-50, 50), df["f64"].between(-50, 50))
        lo, hi = pd.Timestamp("2021-02-01"), pd.Timestamp("2021-02-03")
        check_series(f"{label} between t", x["t"].between(lo, hi), df["t"].between(lo, hi))
        check_series(f"{label} clip", x["f64"].clip(-20, 30), df["f64"].clip(-20, 30))
        check_series(f"{label} clip lower", x["i16"].clip(lower=0), df["i16"].clip(lower=0))
        check_series(f"{label} clip upper", x["I"].clip(upper=10), df["I"].clip(upper=10))
        # a float bound makes an int column float only where it clips: pandas' dtype overall
        check_series(f"{label} clip float", x["i32"].clip(-0.5), df["i32"].clip(-0.5))
        check_series(f"{label} round", x["f64"].round(1), df["f64"].round(1))
        check_series(f"{label} round -1", x["f32"].round(-1), df["f32"].round(-1))
        check_series(f"{label} round int", x["i64"].round(), df["i64"].round())
        check_series(f"{label} astype", x["i8"].astype("float32"), df["i8"].astype("float32"))
        check_series(f"{label} astype Int64", x["i32"].astype("Int64"), df["i32"].astype("Int64"))
        check_series(f"{label} fillna", x["f64"].fillna(0.5), df["f64"].fillna(0.5))
        check_series(f"{label} fillna s", x["s"].fillna("-"), df["s"].fillna("-"))
        check_series(
            f"{label} fillna tz",
            x["tz"].fillna(pd.Timestamp(0, tz="UTC")),
            df["tz"].fillna(pd.Timestamp(0, tz="UTC")),
        )
        check_local(f"{label} fillna mixed", x["s"].fillna(1), df["s"].fillna(1))
    s = x["i32"]
    everywhere(TypeError, lambda: s.isin(3), "values")
    everywhere(TypeError, lambda: s.isin("abc"), "values")
    everywhere(TypeError, lambda: s.isin(s), "values", "DistSeries")
    everywhere(ValueError, lambda: s.between(0, 1, inclusive="some"), "inclusive")
    everywhere(TypeError, lambda: s.clip([1], None), "lower")
    everywhere(TypeError, lambda: s.round(1.5), "decimals")
    everywhere(TypeError, lambda: s.fillna([0]), "value")
    everywhere(TypeError, lambda: x["I"].fillna(1.5), "fillna")


# == reductions ================================================================================


REDUCTIONS = ["sum", "min", "max", "mean", "count", "prod", "any", "all", "std", "var"]


def pandas_reduce(s: pd.Series, name: str) -> tuple[Any, type | None]:
    try:
        return getattr(s, name)(), None
    except TypeError as exc:
        return None, type(exc)


#: Layouts for the reductions (each value is one collective): several partitions per rank,
#: and a rank with no rows (empty partitions met while combining)
FEW = ("parts5", "uneven")


def check_reductions(where: str, x: DistSeries, s: pd.Series) -> None:
    for name in REDUCTIONS:
        want, error = pandas_reduce(s, name)
        if error is not None:
            everywhere(error, lambda name=name: getattr(x, name)())
            continue
        rtol = 1e-5 if s.dtype == np.float32 else 1e-9
        check_value(f"{where} {name}", getattr(x, name)(), want, rtol)


@case
def reductions_match_pandas() -> None:
    df = sample()
    for label, x in layouts(df, FEW):
        for col in df.columns:
            check_reductions(f"{label} {col}", x[col], df[col])
        check_value(f"{label} std ddof=0", x["f64"].std(ddof=0), df["f64"].std(ddof=0))
        check_value(f"{label} var ddof=3", x["I"].var(ddof=3), df["I"].var(ddof=3))
        check_value(f"{label} std t", x["t"].std(ddof=0), df["t"].std(ddof=0))
    everywhere(TypeError, lambda: x["f64"].std(ddof=1.5), "ddof")


@case
def reductions_empty_and_all_null() -> None:
    df = sample()
    nulls = pd.DataFrame(
        {
            "f64": np.full(ROWS, np.nan),
            "f32": np.full(ROWS, np.nan, dtype=np.float32),
            "I": pd.array([None] * ROWS, dtype="Int64"),
            "B": pd.array([None] * ROWS, dtype="boolean"),
            "s": text([None] * ROWS),
            "t": pd.Series([pd.NaT] * ROWS, dtype="M8[us]"),
            "tz": pd.Series([pd.NaT] * ROWS, dtype="datetime64[ns, Asia/Tokyo]"),
            "cat": pd.Categorical([None] * ROWS, categories=["a", "b"], ordered=True),
        }
    )
    for label, x in layouts(nulls, FEW):
        for col in nulls.columns:
            check_reductions(f"all-null {label} {col}", x[col], nulls[col])
    empty = gpupart.from_pandas(df.iloc[:0], npartitions=4)
    for col in df.columns:
        check_reductions(f"empty {col}", empty[col], df[col].iloc[:0])
    # the rows are all on one rank; the others have empty partitions
    one = gpupart.from_local_frames(df if rank == size - 1 else df.iloc[:0])
    for col in ("f64", "tz", "s", "I"):
        check_reductions(f"one rank {col}", one[col], df[col])


@case
def reductions_of_objects_with_nulls_apart() -> None:
    """Strings as objects (pandas 2's) with the nulls in partitions of their own: pandas'
    result or error for the whole column (pandas 2 refuses min/max of strings next to nulls).
    """
    objects = pd.DataFrame(
        {
            "o": pd.Series(["b", "a", None, np.nan, "c", "d", None], dtype=object),
            "p": pd.Series(["x", "y", None, None, "zz", "", None], dtype=object),
        }
    )
    x = gpupart.from_pandas(objects, npartitions=4)  # [b a] [None NaN] [c d] [None]
    for col in objects.columns:
        check_reductions(f"objects {col}", x[col], objects[col])
    whole = gpupart.from_pandas(objects.iloc[[0, 1, 4, 5]].reset_index(drop=True), 3)
    check_reductions("objects without nulls", whole["o"], objects["o"].iloc[[0, 1, 4, 5]])


@case
def reductions_are_stable() -> None:
    """Chan's combination keeps the variance of large values with a small spread."""
    big = pd.DataFrame({"v": 1e9 + np.arange(5000) % 7 * 1e-3, "w": np.arange(5000) ** 2.0})
    for label, x in varied(big):
        check_value(f"{label} var big offset", x["v"].var(), big["v"].var(), rtol=1e-6)
        check_value(f"{label} std", x["w"].std(), big["w"].std(), rtol=1e-12)
        check_value(f"{label} mean", x["w"].mean(), big["w"].mean(), rtol=1e-12)
        check_value(f"{label} sum", x["w"].sum(), big["w"].sum(), rtol=1e-12)


@case
def nunique_and_unique() -> None:
    df = sample()
    skew = pd.DataFrame(
        {
            "k": np.r_[np.zeros(40, np.int64), np.arange(5)],  # one key on nearly every row
            "f": np.r_[np.full(30, np.nan), np.arange(15) % 4 * 0.5],
            "z": np.r_[np.full(20, -0.0), np.zeros(25)],  # -0.0 and 0.0 are one value
        }
    )
    # every value moves to the rank its hash names, whatever the layout: every dtype in one
    # layout with an empty rank, the skewed keys in all three
    for frame, chosen in ((df, layouts(df, ("uneven",))), (skew, varied(skew))):
        for label, x in chosen:
            for col in frame.columns:
                for dropna in (True, False):
                    want = frame[col].nunique(dropna=dropna)
                    got = x[col].nunique(dropna=dropna)
                    expect(got == want and type(got) is int, f"{label} {col} nunique {got} {want}")
                u = x[col].unique()
                check_parts(f"{label} {col} unique", u)
                got = u.to_pandas()
                expect(got.dtype == frame[col].dtype and got.name == col, f"{col} unique dtype")
                want = pd.Series(frame[col].unique(), dtype=frame[col].dtype, name=col)
                expect(len(got) == len(want), f"{label} {col} unique {len(got)} != {len(want)}")
                expect(
                    sorted(map(str, got.tolist())) == sorted(map(str, want.tolist())),
                    f"{label} {col} unique values {got.tolist()} != {want.tolist()}",
                )
    # keys absent on some ranks: only the last rank has rows
    one = gpupart.from_local_frames(skew if rank == size - 1 else skew.iloc[:0])
    expect(one["k"].nunique() == 5 and len(one["k"].unique()) == 5, "nunique on one rank")


# == accessors =================================================================================


@case
def string_methods() -> None:
    df = sample()
    obj = df.assign(s=df["s"].astype(object), nn=df["s"].fillna("x"))
    for label, x in varied(obj):
        for col in ("s", "nn"):
            xs, ps = x[col], obj[col]
            check_series(f"{label} {col} len", xs.str.len(), ps.str.len())
            check_series(f"{label} {col} lower", xs.str.lower(), ps.str.lower())
            check_series(f"{label} {col} upper", xs.str.upper(), ps.str.upper())
            check_series(f"{label} {col} strip", xs.str.strip(), ps.str.strip())
            check_series(f"{label} {col} strip e", xs.str.strip("e "), ps.str.strip("e "))
            check_series(f"{label} {col} contains", xs.str.contains("an"), ps.str.contains("an"))
            check_series(
                f"{label} {col} contains re",
                xs.str.contains(r"^\s*[a-c]"),
                ps.str.contains(r"^\s*[a-c]"),
            )
            check_series(
                f"{label} {col} contains case",
                xs.str.contains("APP", case=False),
                ps.str.contains("APP", case=False),
            )
            check_series(
                f"{label} {col} contains na",
                xs.str.contains("a", na=False),
                ps.str.contains("a", na=False),
            )
            check_series(
                f"{label} {col} contains lit",
                xs.str.contains(".", regex=False),
                ps.str.contains(".", regex=False),
            )
            check_series(f"{label} {col} match", xs.str.match("[A-Z]"), ps.str.match("[A-Z]"))
            check_series(
                f"{label} {col} startswith", xs.str.startswith("a"), ps.str.startswith("a")
            )
            check_series(
                f"{label} {col} startswith t",
                xs.str.startswith(("a", "B")),
                ps.str.startswith(("a", "B")),
            )
            check_series(f"{label} {col} endswith", xs.str.endswith("e"), ps.str.endswith("e"))
            check_series(
                f"{label} {col} replace", xs.str.replace("a", "4"), ps.str.replace("a", "4")
            )
            check_series(
                f"{label} {col} replace re",
                xs.str.replace(r"[aeiou]+", "_", regex=True),
                ps.str.replace(r"[aeiou]+", "_", regex=True),
            )
            check_series(f"{label} {col} slice", xs.str.slice(1, 4), ps.str.slice(1, 4))
            check_series(f"{label} {col} slice step", xs.str.slice(step=2), ps.str.slice(step=2))
            check_series(f"{label} {col} lstrip", xs.str.lstrip(), ps.str.lstrip())
        # a filter by a string condition, then a reduction of a string method's result
        want = obj[obj["s"].str.contains("a", na=False)]
        check_frame(f"{label} filter", x[x["s"].str.contains("a", na=False)], want)
        check_value(f"{label} len sum", x["nn"].str.len().sum(), obj["nn"].str.len().sum())
        check_series(f"{label} cat str", x["cat"].str.upper(), obj["cat"].str.upper())
    everywhere(AttributeError, lambda: x["i32"].str, "strings", "int32")
    everywhere(AttributeError, lambda: x["t"].str, "strings")
    everywhere(ValueError, lambda: x["s"].str.contains("(unclosed"), "regular expression")
    everywhere(ValueError, lambda: x["s"].str.replace("[", "", regex=True), "regular expression")
    everywhere(TypeError, lambda: x["s"].str.startswith(3), "pat")


@case
def datetime_methods() -> None:
    df = sample()
    for label, x in varied(df):
        for col in ("t", "tz"):
            xs, ps = x[col], df[col]
            for field in ("year", "month", "day", "hour", "minute", "second", "day_of_week"):
                check_series(f"{label} {col} {field}", getattr(xs.dt, field), getattr(ps.dt, field))
            check_series(f"{label} {col} dayofweek", xs.dt.dayofweek, ps.dt.day_of_week)
            for freq in ("h", "D", "15min"):
                check_series(f"{label} {col} floor {freq}", xs.dt.floor(freq), ps.dt.floor(freq))
            check_series(f"{label} {col} ceil", xs.dt.ceil("h"), ps.dt.ceil("h"))
            check_series(f"{label} {col} normalize", xs.dt.normalize(), ps.dt.normalize())
            check_series(
                f"{label} {col} strftime",
                xs.dt.strftime("%Y-%m-%d %H"),
                ps.dt.strftime("%Y-%m-%d %H"),
            )
        check_frame(f"{label} filter by month", x[x["t"].dt.month == 2], df[df["t"].dt.month == 2])
    with_nat = gpupart.from_local_frames(df.iloc[:0] if rank else df.iloc[:3])  # no NaT anywhere
    check_series("year without NaT", with_nat["t"].dt.year, df["t"].iloc[:3].dt.year)
    everywhere(AttributeError, lambda: x["f64"].dt, "datetime64", "float64")
    everywhere(AttributeError, lambda: x["s"].dt, "datetime64")
    everywhere(ValueError, lambda: x["t"].dt.floor("fortnight"), "fortnight")
    everywhere(TypeError, lambda: x["t"].dt.strftime(3), "fmt")


# == main =====================================================================================


rt: Any = None
rank = size = 0


def main() -> None:
    global rt, rank, size, PENDING
    rt = gpupart.init(timeout=60)
    rank, size = rt.rank, rt.size
    names = [name for name, _ in CASES]
    only = sys.argv[1:]
    chosen = [(n, fn) for n, fn in CASES if not only or n in only]
    emit("plan", rank=rank, cases=[n for n, _ in chosen] if only else names)
    for name, fn in chosen:
        PENDING = []
        start = time.perf_counter()
        extra = fn() or {}
        queued, PENDING = PENDING, None
        compare(queued)
        rt.barrier()
        emit("case", name=name, rank=rank, seconds=round(time.perf_counter() - start, 2), **extra)
    emit("done", rank=rank, size=size)
    rt.close()


if __name__ == "__main__":
    main()
