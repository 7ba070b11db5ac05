"""groupby-agg, transform, drop_duplicates and value_counts of DistFrames, against pandas.

Run as ``gpupart run -n N -- python groupby_cases.py`` at any job size. Every rank builds the
same pandas frames (seeded), distributes them under several layouts (one partition per rank,
many partitions some of them empty, a rank with no rows, every row on one rank, partitions
owned in interleaved order), runs the operation and compares the gathered result with
pandas' on the same data (``assert_frame_equal`` with dtypes; groupby results after sorting
by the keys, since groups come in hash order). The runtime's messaging calls are counted
where the number of exchanges is documented (groupby-agg: exactly one).

Every rank emits ``@plan`` (the case names), ``@case`` after each case passes and ``@done``.
A failed check raises: the job fails with the traceback.
"""

from __future__ import annotations

import contextlib
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "mp_scripts"))
from _mp import emit, expect, raises
from gpupart.containers.dframe import DistFrame, Layout
from gpupart.containers.groupby import AGGREGATIONS

import gpupart

CASES: list[tuple[str, Callable[[], Any]]] = []
MESSAGING = ("allgather", "alltoall", "allreduce", "barrier", "broadcast", "exchange", "fetch")
NUMERIC_ONLY = ("sum", "mean", "std", "var")


def case(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Register a case (run at every job size, in order)."""
    CASES.append((fn.__name__, fn))
    return fn


# -- data -------------------------------------------------------------------------------------


def table(n: int, nkeys: int, seed: int) -> pd.DataFrame:
    """Keys of several kinds (with nulls) and value columns of every supported dtype."""
    rng = np.random.default_rng(seed)
    k = rng.integers(0, nkeys, n)
    gap = rng.random(n) < 0.1

    def holes(values: Any, dtype: str) -> pd.Series:
        s = pd.Series(values).astype(dtype)
        s[rng.random(n) < 0.15] = None
        return s

    base = pd.Timestamp("2021-03-04")
    return pd.DataFrame(
        {
            "k": k,
            "ks": pd.Series(
                np.where(gap, None, np.array(["x", "y", "zz", ""])[k % 4]), dtype="str"
            ),
            "kf": np.where(gap, np.nan, (k % 5).astype(float)),
            "kd": pd.Series(base + pd.to_timedelta(k % 6, unit="D")).where(~gap),
            "kI": pd.array(np.where(gap, None, k % 7), dtype="Int64"),
            "kb": (k % 2).astype(bool),
            "i64": rng.integers(-1000, 1000, n),
            "i32": rng.integers(-100, 100, n).astype("int32"),
            "u8": rng.integers(0, 3, n).astype("uint8"),
            "f64": np.where(rng.random(n) < 0.1, np.nan, rng.standard_normal(n) * 10 + 100),
            "f32": rng.standard_normal(n).astype("float32"),
            "b": rng.random(n) < 0.3,
            "I": holes(rng.integers(-50, 50, n), "Int64"),
            "F": holes(rng.standard_normal(n), "Float64"),
            "B": holes(rng.random(n) < 0.5, "boolean"),
            "s": holes(np.array(["p", "q", "r", "ss"])[rng.integers(0, 4, n)], "str"),
            "dt": pd.Series(base + pd.to_timedelta(rng.integers(0, 10**6, n), unit="s")).where(
                rng.random(n) > 0.1
            ),
            "dtz": pd.Series(
                (base + pd.to_timedelta(rng.integers(0, 99, n), unit="h")).tz_localize("UTC")
            ),
            "td": pd.to_timedelta(rng.integers(0, 10**4, n), unit="ms"),
            "cat": pd.Categorical(np.array(["lo", "mid", "hi"])[rng.integers(0, 3, n)]),
        }
    )


KEY_COLUMNS = ["k", "ks", "kf", "kd", "kI", "kb"]
VALUE_COLUMNS = [
    "i64",
    "i32",
    "u8",
    "f64",
    "f32",
    "b",
    "I",
    "F",
    "B",
    "s",
    "dt",
    "dtz",
    "td",
    "cat",
]


def provided(df: pd.DataFrame, column: str, agg: str) -> bool:
    """Whether the module provides ``agg`` of ``column`` (pandas does and it is not refused)."""
    dtype = df[column].dtype
    numeric = (
        pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)
    ) and not isinstance(dtype, pd.CategoricalDtype)
    if agg in NUMERIC_ONLY and not numeric:
        return agg == "sum" and pd.api.types.is_timedelta64_dtype(dtype)
    # pandas refuses min/max of unordered categories (checked in errors_are_raised...); the
    # pandas reference of every_aggregation_of_every_dtype proves the rest are accepted
    unordered = isinstance(dtype, pd.CategoricalDtype) and not dtype.ordered
    if unordered and agg in ("min", "max"):
        return False
    if pd.api.types.is_object_dtype(dtype) and agg in ("min", "max"):
        # pandas 2 keeps strings as objects and refuses their min/max next to a null
        # (min_max_of_strings_next_to_nulls checks that every rank raises then)
        try:
            getattr(df[column], agg)()
        except TypeError:
            return False
    return True


# -- layouts ----------------------------------------------------------------------------------


def even(df: pd.DataFrame) -> DistFrame:
    return gpupart.from_pandas(df)


def many(df: pd.DataFrame) -> DistFrame:
    """More partitions than ranks, uneven, some of them empty when the frame is small."""
    return gpupart.from_pandas(df, npartitions=2 * size + 3)


def empty_rank(df: pd.DataFrame) -> DistFrame:
    """Rank 0 holds no rows (unless it is alone)."""
    if size == 1:
        return gpupart.from_local_frames(df)
    cuts = np.linspace(0, len(df), size).astype(int)
    piece = df.iloc[:0] if rank == 0 else df.iloc[cuts[rank - 1] : cuts[rank]]
    return gpupart.from_local_frames(piece)


def one_rank(df: pd.DataFrame) -> DistFrame:
    """Every row on the last rank."""
    return gpupart.from_local_frames(df if rank == size - 1 else df.iloc[:0])


def interleaved(df: pd.DataFrame) -> DistFrame:
    """Partitions owned round robin (rank 0 holds partitions 0, size, 2 size, ...)."""
    nparts = 2 * size + 1
    bounds = np.linspace(0, len(df), nparts + 1).astype(int)
    owners = [p % size for p in range(nparts)]
    parts = {
        p: df.iloc[bounds[p] : bounds[p + 1]].reset_index(drop=True)
        for p in range(nparts)
        if owners[p] == rank
    }
    sizes = [int(bounds[p + 1] - bounds[p]) for p in range(nparts)]
    return DistFrame(rt, df.iloc[:0], Layout(owners, sizes), parts)


def gappy(df: pd.DataFrame) -> DistFrame:
    """Interleaved owners, rank 0's partitions all empty (unless it is alone)."""
    nparts = 2 * size + 1
    owners = [p % size for p in range(nparts)]
    full = [p for p in range(nparts) if owners[p] != 0 or size == 1]
    cuts = np.linspace(0, len(df), len(full) + 1).astype(int)
    bounds = {p: (cuts[j], cuts[j + 1]) for j, p in enumerate(full)}
    spans = [bounds.get(p, (0, 0)) for p in range(nparts)]
    parts = {
        p: df.iloc[lo:hi].reset_index(drop=True)
        for p, (lo, hi) in enumerate(spans)
        if owners[p] == rank
    }
    return DistFrame(rt, df.iloc[:0], Layout(owners, [b - a for a, b in spans]), parts)


LAYOUTS = {
    "even": even,
    "many": many,
    "empty_rank": empty_rank,
    "one_rank": one_rank,
    "interleaved": interleaved,
    "gappy": gappy,
}


# -- checks -----------------------------------------------------------------------------------


def by_keys(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return frame.sort_values(keys, na_position="last", kind="stable").reset_index(drop=True)


def same_frame(where: str, got: pd.DataFrame, want: pd.DataFrame) -> None:
    try:
        pd.testing.assert_frame_equal(got, want, check_dtype=True)
    except AssertionError as exc:
        raise AssertionError(f"{where}: {exc}\n--- got\n{got}\n--- want\n{want}") from None


def same_parts(where: str, got: Any, want: Any, sizes: tuple[int, ...]) -> None:
    """Each local partition of ``got`` (layout kept) holds ``want``'s rows of its positions.

    ``want`` is indexed by the input's row positions (pandas keeps them); ``sizes`` are the
    input's partition lengths. Checked partition by partition on every rank, because
    ``to_pandas`` concatenates each rank's partitions in turn, which is not the row order
    when a rank owns partitions that are not adjacent (dframe.py; see the interleaved layout).
    """
    starts = np.concatenate([[0], np.cumsum(sizes)])
    for i, part in got.local_partitions.items():
        at = (want.index >= starts[i]) & (want.index < starts[i + 1])
        expected = want[at].reset_index(drop=True)
        if isinstance(expected, pd.Series):
            pd.testing.assert_series_equal(part, expected, obj=f"{where} partition {i}")
        else:
            same_frame(f"{where} partition {i}", part, expected)


def same_groups(where: str, got: DistFrame, want: pd.DataFrame, keys: list[str]) -> None:
    """``got`` (a DistFrame) holds pandas' groups ``want`` (compared in key order)."""
    expect(isinstance(got, DistFrame), f"{where}: expected a DistFrame, found {type(got)}")
    same_frame(where, by_keys(got.to_pandas(), keys), by_keys(want, keys))


class Calls(Counter):
    """The runtime's messaging calls by name, and the rows each exchange delivered here."""

    received: list[int]


@contextlib.contextmanager
def counted() -> Iterator[Calls]:
    """Count the runtime's messaging calls made inside the block (and rows received)."""
    calls = Calls()
    calls.received = []
    saved = {name: getattr(type(rt), name) for name in MESSAGING}

    def counting(name: str) -> Callable[..., Any]:
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            out = saved[name](self, *args, **kwargs)
            if name == "exchange":
                calls.received.append(
                    sum(len(next(iter(p.values()))) for p in out if isinstance(p, dict) and p)
                )
            return out

        return call

    for name in MESSAGING:
        setattr(type(rt), name, counting(name))
    try:
        yield calls
    finally:
        for name, fn in saved.items():
            setattr(type(rt), name, fn)


def only(calls: Calls, where: str, **wanted: int) -> None:
    found = {k: v for k, v in calls.items() if v}
    expect(found == wanted, f"{where}: messaging calls {found}, expected {wanted}")


# == cases ====================================================================================


@case
def every_aggregation_of_every_dtype() -> None:
    """One agg call per layout with every provided (column, aggregation) pair: one exchange."""
    df = table(600, 23, seed=1)
    named = {
        f"{c}_{a}": (c, a)
        for c in VALUE_COLUMNS
        for a in AGGREGATIONS
        if a != "size" and provided(df, c, a)
    }
    named["n"] = ("i64", "size")
    expect(len(named) > 100, f"only {len(named)} pairs")
    want = df.groupby("k", as_index=False).agg(**named)
    for name in ("gappy",):  # rank 0 without rows, the others several partitions apart
        d = LAYOUTS[name](df)
        with counted() as calls:
            got = d.groupby("k").agg(**named)
        only(calls, f"agg {name}", exchange=1, allreduce=1)  # allreduce: int32/uint8 sums
        same_groups(f"every aggregation, {name}", got, want, ["k"])


@case
def key_kinds_and_null_keys() -> None:
    """String, float, datetime, nullable int and bool keys, one or several, both dropna."""
    df = table(400, 17, seed=2)
    named = {"v": ("f64", "sum"), "m": ("i32", "mean"), "c": ("s", "count"), "f": ("I", "first")}
    named |= {"n": ("i64", "size"), "u": ("s", "nunique"), "sd": ("F", "std")}
    runs = [(["ks"], True), (["ks"], False), (["kf"], False), (["kd"], True), (["kI"], False)]
    runs += [(["kb"], True), (["ks", "kd"], False), (["k", "kf", "kI"], True)]
    layouts = list(LAYOUTS)
    for i, (keys, dropna) in enumerate(runs):
        name = layouts[i % len(layouts)]
        want = df.groupby(keys, as_index=False, dropna=dropna).agg(**named)
        got = LAYOUTS[name](df).groupby(keys, dropna=dropna).agg(**named)
        same_groups(f"keys {keys} dropna={dropna} {name}", got, want, keys)


@case
def one_key_and_ten_thousand_keys() -> None:
    rng = np.random.default_rng(3)
    n = 40_000
    for nkeys in (1, 10_000):
        df = pd.DataFrame(
            {
                "k": rng.integers(0, nkeys, n),
                "v": rng.standard_normal(n),
                "i": rng.integers(0, 9, n),
            }
        )
        want = df.groupby("k", as_index=False).agg(
            v_sum=("v", "sum"), v_mean=("v", "mean"), v_std=("v", "std"), i_nunique=("i", "nunique")
        )
        for name in ("even", "many"):
            got = (
                LAYOUTS[name](df).groupby("k").agg({"v": ["sum", "mean", "std"], "i": ["nunique"]})
            )
            same_groups(f"{nkeys} key(s) {name}", got, want, ["k"])


@case
def zipf_keys_move_one_state_row_per_key_and_rank() -> dict[str, Any]:
    """A key holding most rows: each rank sends at most one state row per key it holds."""
    rng = np.random.default_rng(4)
    n = 200_000
    keys = np.minimum(rng.zipf(1.5, n), 5000)
    df = pd.DataFrame({"k": keys, "v": rng.standard_normal(n), "i": rng.integers(0, 5, n)})
    d = even(df)
    local = sum(len(p) for p in d.local_partitions.values())
    local_keys = pd.concat(list(d.local_partitions.values()))["k"].nunique()
    with counted() as calls:
        got = d.groupby("k").agg(s=("v", "sum"), m=("v", "mean"), x=("i", "max"))
    only(calls, "zipf", exchange=1)
    (received,) = calls.received
    want = df.groupby("k", as_index=False).agg(s=("v", "sum"), m=("v", "mean"), x=("i", "max"))
    same_groups("zipf", got, want, ["k"])
    top_share = float((keys == 1).mean())
    sent = rt.allgather(int(local_keys))
    expect(received <= sum(sent), f"received {received} partial rows, sent {sent}")
    expect(received <= size * len(want), f"received {received} rows for {len(want)} keys")
    expect(top_share > 0.3, f"key 1 holds {top_share:.0%} only")
    return {"rows_held": local, "partial_rows_received": received, "hot_key_share": top_share}


@case
def shortcuts_and_selections() -> None:
    numeric = ["i32", "u8", "f32", "b", "I", "F", "B"]  # all dtypes: every_aggregation_of...
    ordered = ["i64", "B", "s", "dt", "dtz", "td"]
    df = table(300, 11, seed=5)[["k", *dict.fromkeys([*numeric, *ordered, "f64"])]]
    ordered = [c for c in ordered if provided(df, c, "min")]  # (pandas 2: not "s")
    d = interleaved(df)
    g, pg = d.groupby("k"), df.groupby("k", as_index=False)
    checks: list[tuple[str, Any, pd.DataFrame]] = [
        ("sum", g[numeric].sum(), pg[numeric].sum()),
        ("mean", g[numeric].mean(), pg[numeric].mean()),
        ("std", g[numeric].std(), pg[numeric].std()),
        ("var ddof=0", g[numeric].var(ddof=0), pg[numeric].var(ddof=0)),
        ("std ddof=2", g[["f64"]].std(ddof=2), pg[["f64"]].std(ddof=2)),
        ("count", g.count(), pg.count()),
        ("size", g.size(), pg.size()),
        ("min", g[ordered].min(), pg[ordered].min()),
        ("max", g[ordered].max(), pg[ordered].max()),
        ("nunique", g.nunique(), pg.nunique()),
        ("first", g.first(), pg.first()),
        ("last", g.last(), pg.last()),
        ("one column", g["f64"].sum(), pg["f64"].sum()),
        ("one column list", g["f64"].agg(["sum", "max"]), pg["f64"].agg(["sum", "max"])),
        ("str", g[["i64", "F"]].agg("mean"), pg[["i64", "F"]].agg("mean")),
        ("dict", g.agg({"i64": "sum", "s": "nunique"}), pg.agg({"i64": "sum", "s": "nunique"})),
    ]
    for where, got, want in checks:
        same_groups(where, got, want, ["k"])
    # a list per column: pandas' two-level labels flattened to "<column>_<aggregation>"
    got = g.agg({"f64": ["min", "mean"], "s": ["first"]})
    want = pg.agg({"f64": ["min", "mean"], "s": ["first"]})
    want.columns = ["k", "f64_min", "f64_mean", "s_first"]
    same_groups("dict of lists", got, want, ["k"])
    got = g[["i32", "b"]].agg(["sum", "count"])
    want = pg[["i32", "b"]].agg(["sum", "count"])
    want.columns = ["k", "i32_sum", "i32_count", "b_sum", "b_count"]
    same_groups("list", got, want, ["k"])


@case
def keys_on_one_rank_only_and_empty_frames() -> None:
    df = table(300, 30, seed=6).sort_values("k", kind="stable").reset_index(drop=True)
    named = {"a": ("f64", "mean"), "b": ("s", "last"), "c": ("i64", "nunique"), "d": ("F", "var")}
    want = df.groupby("k", as_index=False).agg(**named)
    for name in ("even", "many", "one_rank"):  # sorted keys: most keys in one partition
        got = LAYOUTS[name](df).groupby("k").agg(**named)
        same_groups(f"sorted keys {name}", got, want, ["k"])
    empty = df.iloc[:0]
    want = empty.groupby(["k", "ks"], as_index=False).agg(**named)
    for name in ("even", "many"):
        got = LAYOUTS[name](empty).groupby(["k", "ks"]).agg(**named)
        same_groups(f"empty frame {name}", got, want, ["k", "ks"])
    got = even(empty).groupby("k")["f64"].transform("sum").to_pandas()
    pd.testing.assert_series_equal(got, empty.groupby("k")["f64"].transform("sum"))


@case
def narrow_integer_sums_widen_like_pandas() -> None:
    """pandas keeps int8 for sums that fit and widens to int64 when a group overflows."""
    small = pd.DataFrame({"k": [1, 1, 2, 2, 3] * 4, "v": np.arange(20, dtype="int8")})
    big = small.assign(v=np.full(20, 100, dtype="int8"))
    for df in (small, big):
        want = df.groupby("k", as_index=False).agg(v=("v", "sum"))
        for name in ("even", "one_rank"):
            d = LAYOUTS[name](df)  # built outside the count: from_pandas all-gathers schemas
            with counted() as calls:
                got = d.groupby("k").agg(v=("v", "sum"))
            # the all-reduce is the overflow flag: pandas widens an int8 sum only on overflow
            only(calls, f"narrow sum {name}", exchange=1, allreduce=1)
            same_groups(f"int8 sum {name}", got, want, ["k"])


@case
def first_and_last_follow_the_global_row_order() -> None:
    """Values spread so each rank holds some of every key: the winner is the global first."""
    n = 500
    rng = np.random.default_rng(7)
    df = pd.DataFrame(
        {
            "k": rng.integers(0, 4, n),
            "v": np.where(rng.random(n) < 0.5, np.nan, np.arange(n, dtype=float)),
            "s": pd.Series(np.arange(n).astype(str), dtype="str").where(rng.random(n) < 0.3),
        }
    )
    want = df.groupby("k", as_index=False).agg(
        vf=("v", "first"), vl=("v", "last"), sf=("s", "first"), sl=("s", "last")
    )
    for name in ("many", "empty_rank", "interleaved"):
        got = (
            LAYOUTS[name](df)
            .groupby("k")
            .agg(vf=("v", "first"), vl=("v", "last"), sf=("s", "first"), sl=("s", "last"))
        )
        same_groups(f"first/last {name}", got, want, ["k"])


@case
def transform_lines_up_with_the_frame() -> None:
    """Every aggregation as a transform of the columns that provide it, null keys both ways."""
    df = table(400, 13, seed=8)
    configs = [(["ks"], True, "interleaved"), (["kf", "kb"], False, "empty_rank")]
    for keys, dropna, name in configs:
        d = LAYOUTS[name](df)
        # bool columns: rows with a null key would make pandas' result objects (refused below)
        columns = ["f64", "I", "s", "dt", "u8", *(["B"] if dropna else ["b"])]
        # every aggregation once; the second configuration the ones with their own merge
        aggs = AGGREGATIONS if dropna else ("sum", "mean", "std", "first", "nunique", "size")
        for agg in aggs:
            chosen = [c for c in columns if provided(df, c, agg)]
            want = df.groupby(keys, dropna=dropna)[chosen].transform(agg)
            with counted() as calls:
                got = d.groupby(keys, dropna=dropna)[chosen].transform(agg)
            narrow = {"allreduce": 1} if dropna or (agg == "sum" and "u8" in chosen) else {}
            only(calls, f"transform {agg}", exchange=2, **narrow)
            expect(got.layout is d.layout, f"transform {agg} {name}: not lined up")
            where = f"transform {agg} by {keys} dropna={dropna} {name}"
            if agg == "size":  # one value a row: a series (named None), as pandas
                expect(got.name is None, f"{where}: a series named {got.name!r}")
            same_parts(where, got, want, d.partition_sizes)
    d = even(df)
    for agg in ("first", "max", "min"):  # a bool column with null keys gives pandas objects
        raises(
            NotImplementedError,
            lambda agg=agg: d.groupby("ks")["b"].transform(agg),
            "'b'",
            "nullable",
        )
    got = d.groupby("ks")["f64"].transform("size")
    pd.testing.assert_series_equal(got.to_pandas(), df.groupby("ks")["f64"].transform("size"))
    got = d.groupby("k")["f64"].transform("mean")
    expect(got.name == "f64", f"transform of one column: a series named {got.name!r}")
    pd.testing.assert_series_equal(got.to_pandas(), df.groupby("k")["f64"].transform("mean"))
    added = d.assign(t=d.groupby("k")["i64"].transform("max")).to_pandas()
    same_frame("assign a transform", added, df.assign(t=df.groupby("k")["i64"].transform("max")))


@case
def drop_duplicates_keeps_the_row_order() -> None:
    df = table(500, 9, seed=9)
    subsets: list[Any] = [None, "k", ["k", "ks"], ["kf", "kb"], ["kd"], ["s", "B"]]
    layouts = list(LAYOUTS)
    keeps: list[Any] = ["first", "last", False]
    for i, subset in enumerate(subsets):
        for j, keep in enumerate(keeps if subset in (None, "k") else keeps[i % 3 : i % 3 + 1]):
            name = layouts[(i + j) % len(layouts)]
            want = df.drop_duplicates(subset, keep=keep)  # indexed by row positions
            d = LAYOUTS[name](df)
            with counted() as calls:
                got = d.drop_duplicates(subset, keep=keep)
            only(calls, "drop_duplicates", exchange=2)
            expect(got.layout.owners == d.layout.owners, "drop_duplicates: partitions moved")
            where = f"drop_duplicates {subset} keep={keep} {name}"
            same_parts(where, got, want, d.partition_sizes)
            if name != "interleaved":
                same_frame(where, got.to_pandas(), want.reset_index(drop=True))


@case
def value_counts_of_frames_and_series() -> None:
    """Counts compared as sets of rows (the distributed sort does not exist yet)."""
    df = table(400, 7, seed=10)
    d = empty_rank(df)
    for subset, dropna, normalize in (
        (["k"], True, False),
        (["ks", "kb"], False, True),
        (["kf"], True, True),
        (["kf", "kd"], False, False),
    ):
        got = d.value_counts(subset, normalize=normalize, dropna=dropna)
        want = df.value_counts(subset, normalize=normalize, dropna=dropna)
        same_groups(f"value_counts {subset} {dropna} {normalize}", got, want.reset_index(), subset)
    got = even(df[["ks", "kI"]]).value_counts()
    same_groups(
        "value_counts of all columns",
        got,
        df[["ks", "kI"]].value_counts().reset_index(),
        ["ks", "kI"],
    )
    for column, dropna in (("ks", True), ("kd", False), ("kI", False), ("b", True)):
        got = d[column].value_counts(dropna=dropna)
        want = df[column].value_counts(dropna=dropna).reset_index()
        same_groups(f"series value_counts {column}", got, want, [column])
    if True:
        got = d["kf"].value_counts(normalize=True)
        want = df["kf"].value_counts(normalize=True).reset_index()
        same_groups("series value_counts normalize", got, want, ["kf"])


@case
def sort_true_orders_groups_like_pandas() -> None:
    """``sort=True``: keys in pandas' order (null keys last); value_counts by count."""
    df = table(300, 9, seed=12)
    for keys, dropna, name in ((["k"], True, "many"), (["ks", "kd"], False, "empty_rank")):
        want = df.groupby(keys, as_index=False, dropna=dropna, sort=True).agg(
            v=("f64", "mean"), n=("i64", "size")
        )
        got = (
            LAYOUTS[name](df)
            .groupby(keys, dropna=dropna, sort=True)
            .agg(v=("f64", "mean"), n=("i64", "size"))
        )
        same_frame(f"sort=True {keys} {name}", got.to_pandas(), want)
    for ascending in (False, True):
        got = empty_rank(df).value_counts(["kf"], dropna=False, ascending=ascending).to_pandas()
        counts = got["count"].to_numpy()
        step = np.diff(counts)
        expect(bool((step >= 0).all() if ascending else (step <= 0).all()), f"order {counts}")
        want = df.value_counts(["kf"], dropna=False).reset_index()
        same_frame("value_counts sorted", by_keys(got, ["kf"]), by_keys(want, ["kf"]))


@case
def errors_are_raised_on_every_rank() -> None:
    df = table(50, 5, seed=11)
    d = even(df)
    with counted() as calls:
        raises(KeyError, lambda: d.groupby("nope"), "by", "'nope'")
        raises(KeyError, lambda: d.groupby(["k", "nope"]), "by", "'nope'")
        raises(ValueError, lambda: d.groupby([]), "by")
        raises(KeyError, lambda: d.groupby("k")["nope"], "key", "'nope'")
        raises(ValueError, lambda: d.groupby("k")["k"], "group keys", "'k'")
        raises(KeyError, lambda: d.groupby("k").agg({"nope": "sum"}), "agg", "'nope'")
        raises(KeyError, lambda: d.groupby("k").agg(o=("nope", "sum")), "agg o", "'nope'")
        raises(ValueError, lambda: d.groupby("k").agg({"i64": "median"}), "'median'", "nunique")
        raises(ValueError, lambda: d.groupby("k")["i64"].transform("cumsum"), "func", "'cumsum'")
        raises(TypeError, lambda: d.groupby("k").agg({"i64": np.sum}), "function")
        raises(TypeError, lambda: d.groupby("k").agg(o="i64"), "o=(column, aggregation")
        raises(TypeError, lambda: d.groupby("k").agg(), "expected an aggregation")
        raises(ValueError, lambda: d.groupby("k").agg(k=("i64", "sum")), "'k'")
        raises(ValueError, lambda: d.groupby("k").agg(["sum", "sum"]), "more than once")
        strings = str(df["s"].dtype)  # str (pandas 3) or object (pandas 2)
        raises(NotImplementedError, lambda: d.groupby("k").agg({"s": "sum"}), "'s'", strings)
        raises(NotImplementedError, lambda: d.groupby("k").agg({"dt": "mean"}), "'dt'")
        raises(TypeError, lambda: d.groupby("k").agg({"cat": "mean"}), "'cat'", "category")
        raises(TypeError, lambda: d.groupby("k").agg({"cat": "max"}), "'cat'")
        raises(TypeError, lambda: d.groupby("k").agg({"s": "var"}), "'s'")
        raises(TypeError, lambda: d.groupby("k", dropna=None), "dropna")
        raises(ValueError, lambda: d.groupby("k").std(ddof=-1), "ddof")
        raises(ValueError, lambda: d.drop_duplicates(keep="middle"), "keep", "'middle'")
        raises(KeyError, lambda: d.drop_duplicates(["k", "nope"]), "subset", "'nope'")
        raises(KeyError, lambda: d.value_counts(["nope"]), "subset")
        raises(NotImplementedError, lambda: d["k"].value_counts(bins=3), "bins")
    only(calls, "errors")  # refused before any message: every rank raises the same


@case
def min_max_of_strings_next_to_nulls() -> None:
    """pandas 2 refuses the min/max of strings in a group that holds nulls (objects), pandas 3
    skips the nulls: a group mixed on one rank, mixed only where the ranks' partials meet, and
    nulls in a group of their own; every rank raises where pandas does, or gives its result.
    """
    last = size - 1
    scenarios = {  # (key, value, rank)
        "mixed on rank 0": [(0, "a", 0), (0, None, 0), (1, "b", last), (1, "c", 0)],
        "mixed when merged": [(0, "b", 0), (1, "c", 0), (0, None, last), (0, "a", last)],
        "nulls apart": [(0, "b", 0), (1, None, last), (0, "a", last), (1, None, 0)],
    }
    for where, rows in scenarios.items():
        whole = pd.DataFrame(
            {"k": [k for k, _, _ in rows], "s": pd.Series([v for _, v, _ in rows], dtype="str")}
        )
        mine = whole[[r == rank for _, _, r in rows]].reset_index(drop=True)
        d = gpupart.from_local_frames(mine)
        for agg in ("min", "max"):
            try:
                want = whole.groupby("k", as_index=False).agg(m=("s", agg))
            except TypeError:
                raises(TypeError, lambda a=agg, d=d: d.groupby("k").agg(m=("s", a)), "'s'", agg)
                continue
            same_groups(f"{where} {agg}", d.groupby("k").agg(m=("s", agg)), want, ["k"])


# == main =====================================================================================


rt: Any = None
rank = size = 0


def main() -> None:
    global rt, rank, size
    warnings.simplefilter("error")
    rt = gpupart.init(timeout=60)
    rank, size = rt.rank, rt.size
    emit("plan", rank=rank, cases=[name for name, _ in CASES])
    for name, fn in CASES:
        start = time.perf_counter()
        extra = fn() or {}
        rt.barrier()
        emit("case", name=name, rank=rank, seconds=round(time.perf_counter() - start, 2), **extra)
    emit("done", rank=rank, size=size)
    rt.close()


if __name__ == "__main__":
    main()
