"""``DistFrame.merge`` and ``sort_values`` (containers/joins.py), checked against pandas.

Run as ``gpupart run -n N -- python join_cases.py`` at any job size. Every rank builds the same
pandas frames (seeded), distributes them in several layouts (one partition per rank, many
partitions, uneven pieces with an empty rank, every row on one rank, one partition on rank 0
only), runs the operation and compares with pandas: merges as sorted rows (the row order of a
distributed merge is not pandas'; columns and dtypes must be pandas'), sorts exactly (order
included). The path a merge took is checked by counting ``Runtime.exchange`` calls (hash 2,
broadcast 1, none on one rank). Errors must be raised on every rank, and the ranks must still
be in step afterwards.

Every rank emits ``@plan`` (the case names), ``@case`` after each case passes and ``@done``.
A failed check raises: the job fails with the traceback.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "mp_scripts"))
from _mp import emit, expect, raises
from gpupart.containers import frame_columns
from gpupart.containers.dframe import DistFrame, DistSeries
from gpupart.containers.joins import JoinLimits, JoinSkewError

import gpupart

CASES: list[tuple[str, Callable[[], Any]]] = []
HOWS = ["inner", "left", "right", "outer"]


def case(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Register a case (run at every job size, in order)."""
    CASES.append((fn.__name__, fn))
    return fn


def text(values: Any) -> Any:
    """Strings with ``None`` missing, as pandas makes them: ``str`` (pandas 3), objects (2).

    (``pd.array(values, dtype="str")`` gives NumPy text under pandas 2, ``None`` as 'None'.)
    """
    return pd.Series([None if v is None else str(v) for v in values], dtype="str").array


# -- helpers ----------------------------------------------------------------------------------


class Count:
    """How many ``Runtime.exchange`` calls ran inside :func:`exchanges`."""

    n = 0


@contextlib.contextmanager
def exchanges() -> Iterator[Count]:
    """Count the runtime's exchanges in the block (the merge paths differ in them)."""
    count, cls = Count(), type(rt)
    saved = cls.exchange

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        count.n += 1
        return saved(self, *args, **kwargs)

    cls.exchange = counting
    try:
        yield count
    finally:
        cls.exchange = saved


LAYOUTS = ("default", "parts5", "uneven", "rank0", "onepart")
#: Turns through the layouts and merge paths across calls, so that every combination is
#: met somewhere without running the full product (each collective costs a round trip).
TURN = itertools.count()


def layout(df: pd.DataFrame, name: str) -> DistFrame:
    """``df`` per rank, in 5 partitions, uneven with an empty rank, all on rank 0, one part."""
    if name == "default":
        return gpupart.from_pandas(df)
    if name == "parts5":
        return gpupart.from_pandas(df, 5)
    if name == "onepart":
        return gpupart.from_pandas(df, 1)
    if name == "rank0":
        return gpupart.from_local_frames(df if rank == 0 else df.iloc[:0])
    n = len(df)
    cuts = [0, *[min(n, (r + 1) * (r + 1) * n // (size * size)) for r in range(size)]]
    if size > 1:
        cuts[2] = cuts[1]
    cuts[-1] = n
    return gpupart.from_local_frames(df.iloc[cuts[rank] : cuts[rank + 1]])


def layouts(df: pd.DataFrame) -> list[tuple[str, DistFrame]]:
    """``df`` in every layout."""
    return [(name, layout(df, name)) for name in LAYOUTS]


def check_parts(where: str, x: DistFrame) -> None:
    """This rank holds the layout's partitions, each of ``meta``'s schema with a RangeIndex."""
    mine = x.layout.mine(rank)
    expect(sorted(x.local_partitions) == mine, f"{where}: partitions {sorted(x.local_partitions)}")
    for i, p in x.local_partitions.items():
        expect(
            frame_columns.schema(p) == frame_columns.schema(x.meta),
            f"{where}: partition {i} schema {frame_columns.schema(p)} != meta's"
            f" {frame_columns.schema(x.meta)}",
        )
        expect(isinstance(p.index, pd.RangeIndex) and p.index.start == 0, f"{where}: index")


def ordered(df: pd.DataFrame) -> pd.DataFrame:
    """Rows in one canonical order (every column a key), to compare merges."""
    keyed = df.copy()
    keyed.columns = [f"c{i}" for i in range(df.shape[1])]
    for c in keyed.columns:
        if keyed[c].dtype == object:
            keyed[c] = keyed[c].map(repr)  # bools with NaN: comparable as text
    order = keyed.sort_values(list(keyed.columns), kind="stable", na_position="last").index
    return df.loc[order].reset_index(drop=True)


def same_merge(where: str, got: DistFrame, want: pd.DataFrame) -> pd.DataFrame:
    """``got`` holds ``want``'s rows (any order), columns and dtypes."""
    check_parts(where, got)
    expect(list(got.columns) == list(want.columns), f"{where}: columns {list(got.columns)}")
    expect(
        list(map(str, got.meta.dtypes)) == list(map(str, want.dtypes)),
        f"{where}: dtypes {list(map(str, got.meta.dtypes))} != {list(map(str, want.dtypes))}",
    )
    # pandas makes bool columns with unmatched rows object: compare those as nullable booleans
    # (pandas 2 keeps strings as objects too: those stay as they are)
    bools = {
        c: "boolean"
        for c in want.columns
        if want[c].dtype == object and pd.api.types.infer_dtype(want[c], skipna=True) == "boolean"
    }
    if bools:
        got = got.map_partitions(lambda p: p.astype(bools), keeps_rows=True)
        want = want.astype(bools)
    whole = got.to_pandas()
    try:
        pd.testing.assert_frame_equal(ordered(whole), ordered(want))
    except AssertionError as exc:
        raise AssertionError(f"{where}: {exc}\ngot\n{whole}\nwant\n{want}") from None
    return whole


def merges(
    where: str,
    left: pd.DataFrame,
    right: pd.DataFrame,
    hows: list[str] | int = HOWS,
    paths: tuple[Any, ...] = (None, True, False),
    **kwargs: Any,
) -> None:
    """Each how gives pandas' merge, on a path and pair of layouts taken in turn.

    ``hows`` is a list, or a count of hows taken in turn (variations of a case that every
    how has met). The path is checked by the exchanges it takes: broadcast 1, hash 2 (none
    on one rank).
    """
    pairs = [*zip(LAYOUTS, LAYOUTS, strict=True), ("uneven", "default"), ("default", "rank0")]
    if isinstance(hows, int):
        first = next(TURN)
        hows = [HOWS[(first + j) % len(HOWS)] for j in range(hows)]
    for how in hows:
        allowed = [p for p in paths if not (p and how == "outer")]
        turn = next(TURN)
        path = allowed[turn % len(allowed)]
        ln, rn = pairs[turn % len(pairs)]
        dl, dr = layout(left, ln), layout(right, rn)
        want = left.merge(right, how=how, **kwargs)
        at = f"{where} {ln}/{rn} how={how} broadcast={path}"
        with exchanges() as count:
            got = dl.merge(dr, how=how, broadcast=path, **kwargs)
        same_merge(at, got, want)
        expected = {True: 1, False: 2}.get(path, count.n)
        expected = 0 if size == 1 else expected
        expect(count.n == expected, f"{at}: {count.n} exchanges, expected {expected}")


def sorts(where: str, df: pd.DataFrame, by: Any, every: bool = False, **kwargs: Any) -> None:
    """pandas' stable sort, order included, one partition per rank; a layout in turn or all."""
    want = df.sort_values(by, **{"kind": "stable", **kwargs}).reset_index(drop=True)
    names = LAYOUTS if every else [LAYOUTS[next(TURN) % len(LAYOUTS)]]
    for name in names:
        x = layout(df, name)
        at = f"{where} {name} by={by} {kwargs}"
        got = x.sort_values(by, **kwargs)
        check_parts(at, got)
        expect(got.npartitions == size, f"{at}: {got.npartitions} partitions")
        try:
            pd.testing.assert_frame_equal(got.to_pandas(), want)
        except AssertionError as exc:
            raise AssertionError(f"{at}: {exc}\ngot\n{got.to_pandas()}\nwant\n{want}") from None


def in_step() -> None:
    """Every rank is at the same collective (after an error that every rank raised)."""
    expect(rt.allgather(rank) == list(range(size)), "ranks out of step after an error")


def keys_frame(n: int, seed: int, high: int, **extra: Any) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"k": rng.integers(0, high, n), **extra})


# == merge =====================================================================================


@case
def merge_every_how_int_keys() -> None:
    """Many-to-many int keys, keys on one side only, a value column of each side."""
    rng = np.random.default_rng(1)
    left = keys_frame(40, 1, 12, a=rng.standard_normal(40), v=np.arange(40))
    right = keys_frame(25, 2, 18, b=rng.integers(0, 9, 25), v=np.arange(25) * 10)
    merges("int", left, right, on="k")
    merges("int suffixes", left, right, on="k", suffixes=("_l", "_r"), paths=(False,), hows=2)
    merges("common columns", left[["k", "a"]], right[["k", "b"]], paths=(False, True), hows=2)


@case
def merge_multi_column_keys() -> None:
    """Two keys (int, string) with nulls on both sides."""
    rng = np.random.default_rng(3)
    words = np.array(["x", "y", "zz", None], dtype=object)
    left = pd.DataFrame(
        {
            "k": rng.integers(0, 4, 30),
            "s": text(words[rng.integers(0, 4, 30)]),
            "a": np.arange(30),
        }
    )
    right = pd.DataFrame(
        {
            "s": text(words[rng.integers(0, 4, 20)]),
            "k": rng.integers(0, 5, 20),
            "b": np.arange(20) * 1.5,
        }
    )
    merges("multi", left, right, on=["k", "s"])


@case
def merge_left_on_right_on() -> None:
    """Keys of other names on each side; an overlapping non-key column gets the suffixes."""
    rng = np.random.default_rng(4)
    left = pd.DataFrame({"lk": rng.integers(0, 10, 30), "x": np.arange(30), "lk2": 1})
    right = pd.DataFrame({"rk": rng.integers(0, 10, 16), "x": np.arange(16) * 2, "rk2": 1})
    merges("left_on", left, right, left_on="lk", right_on="rk")
    merges(
        "left_on 2",
        left,
        right,
        left_on=["lk", "lk2"],
        right_on=["rk", "rk2"],
        paths=(False,),
        hows=2,
    )


@case
def merge_null_keys() -> None:
    """Null keys match each other as in pandas: NaN, None in strings, NaT, Int64's NA."""
    left = pd.DataFrame({"f": [1.0, np.nan, 2.0, np.nan, 3.0, -0.0], "a": np.arange(6)})
    right = pd.DataFrame({"f": [np.nan, 2.0, 4.0, 0.0], "b": np.arange(4)})
    merges("float", left, right, on="f")
    ls = pd.DataFrame({"s": text(["a", None, "b", None, "a"]), "a": range(5)})
    rs = pd.DataFrame({"s": text([None, "a", "c"]), "b": range(3)})
    merges("str", ls, rs, on="s")
    times = pd.to_datetime(["2020-01-01", None, "2020-01-03", None])
    lt = pd.DataFrame({"t": times, "a": range(4)})
    rt_ = pd.DataFrame({"t": times[[1, 0]], "b": range(2)})
    merges("datetime", lt, rt_, on="t", paths=(False,), hows=2)
    li = pd.DataFrame({"i": pd.array([1, None, 3, None], dtype="Int64"), "a": range(4)})
    ri = pd.DataFrame({"i": pd.array([None, 3, 5], dtype="Int64"), "b": range(3)})
    merges("Int64", li, ri, on="i", paths=(False,), hows=2)


@case
def merge_strings_and_datetimes() -> None:
    """String keys, tz-aware datetime keys, value columns of every kind."""
    rng = np.random.default_rng(5)
    names = np.array(["apple", "Banana", "", "cherry pie", "fig"])
    times = pd.date_range("2021-03-27", periods=6, freq="13h", tz="Europe/Berlin")
    left = pd.DataFrame(
        {
            "s": text(names[rng.integers(0, 5, 30)]),
            "t": times[rng.integers(0, 6, 30)],
            "flag": rng.integers(0, 2, 30).astype(bool),
            "I": pd.array(rng.integers(0, 9, 30), dtype="Int64"),
        }
    )
    right = pd.DataFrame(
        {
            "s": text(names[rng.integers(0, 5, 12)]),
            "t": times[rng.integers(0, 6, 12)],
            "w": pd.Categorical(rng.choice(["lo", "hi"], 12)),
            "n": np.arange(12, dtype=np.int32),
        }
    )
    merges("strings", left, right, on="s", paths=(None, False), hows=2)
    merges("datetimes", left, right, on="t", paths=(None, False), hows=2)
    merges("both", left, right, on=["s", "t"], paths=(False,), hows=2)


@case
def merge_key_dtypes_differ() -> None:
    """int32 vs int64, int vs float, Int64 vs float64, datetime units: equal keys meet."""
    rng = np.random.default_rng(6)
    k = rng.integers(0, 15, 40)
    j = rng.integers(0, 15, 25)
    left = pd.DataFrame({"k": k.astype(np.int32), "a": np.arange(40)})
    for rk in (
        j.astype(np.int64),
        j.astype(np.float64),
        j + 0.5 * (j % 3 == 0),
        j.astype(np.uint8),
    ):
        right = pd.DataFrame({"k": rk, "b": np.arange(25)})
        merges(f"int32 vs {rk.dtype}", left, right, on="k", paths=(False,), hows=2)
    nullable = pd.DataFrame({"k": pd.array([*k[:20], None], dtype="Int64"), "a": range(21)})
    floats = pd.DataFrame({"k": np.append(j.astype(float), np.nan), "b": range(26)})
    merges("Int64 vs float64", nullable, floats, on="k", paths=(False,), hows=2)
    base = pd.Timestamp("2022-05-01")
    lt = pd.DataFrame({"t": (base + pd.to_timedelta(k, "D")).as_unit("s"), "a": range(40)})
    rt_ = pd.DataFrame({"t": (base + pd.to_timedelta(j, "D")).as_unit("ns"), "b": range(25)})
    merges("datetime s vs ns", lt, rt_, on="t", paths=(False,), hows=2)


@case
def merge_empty_sides() -> None:
    """An empty side, both empty, no matches: dtypes as pandas gives them."""
    rng = np.random.default_rng(7)
    left = pd.DataFrame({"k": rng.integers(0, 5, 20), "a": np.arange(20), "f": True})
    right = pd.DataFrame({"k": rng.integers(0, 5, 9), "b": np.arange(9), "g": False})
    merges("empty right", left, right.iloc[:0], on="k", paths=(None, False), hows=2)
    merges("empty left", left.iloc[:0], right, on="k", paths=(None, False), hows=2)
    merges("both empty", left.iloc[:0], right.iloc[:0], on="k", paths=(False,), hows=2)
    merges("no match", left, right.assign(k=right.k + 100), on="k", paths=(None, False), hows=2)


@case
def merge_dtypes_agree_across_ranks() -> None:
    """Unmatched rows on one rank only: int columns become float, bool object, everywhere."""
    left = pd.DataFrame({"k": np.arange(30), "a": np.arange(30)})
    right = pd.DataFrame({"k": np.arange(29), "b": np.arange(29), "c": True, "t": pd.Timestamp(0)})
    merges("one unmatched", left, right, on="k", hows=["left", "outer"], paths=(False, None))
    merges("all matched", left, right.assign(k=right.k % 30), on="k", hows=["left"])
    merges("right unmatched", right, left, on="k", hows=["right"], paths=(False, True))


@case
def merge_rows_on_some_ranks() -> None:
    """The right side's rows on one rank, keys only some ranks hold, a partitionless rank."""
    rng = np.random.default_rng(8)
    left = keys_frame(50, 9, 20, a=rng.standard_normal(50))
    right = keys_frame(10, 10, 40, b=np.arange(10))
    only0 = gpupart.from_local_frames(right if rank == 0 else right.iloc[:0])
    last = gpupart.from_local_frames(left if rank == size - 1 else left.iloc[:0])
    onepart = gpupart.from_pandas(left, 1)  # rank 0 holds the only partition
    for name, dl in (("last", last), ("onepart", onepart)):
        for how in HOWS:
            allowed = [None, False] if how == "outer" else [None, True, False]
            for path in (allowed[next(TURN) % len(allowed)],):
                at = f"rows on some ranks {name} how={how} broadcast={path}"
                same_merge(
                    at,
                    dl.merge(only0, on="k", how=how, broadcast=path),
                    left.merge(right, on="k", how=how),
                )
                same_merge(
                    at + " swapped",
                    only0.merge(dl, on="k", how=how, broadcast=path),
                    right.merge(left, on="k", how=how),
                )


@case
def merge_broadcast_chosen_by_size() -> None:
    """broadcast=None sends a small side whole when allowed (1 exchange), else hashes (2)."""
    big = keys_frame(2000, 11, 100, a=np.arange(2000))
    small = keys_frame(50, 12, 120, b=np.arange(50))
    dbig, dsmall = gpupart.from_pandas(big), gpupart.from_pandas(small)
    expected = {
        ("big", "small", "inner"): 1,
        ("big", "small", "left"): 1,
        ("big", "small", "right"): 2,  # the small right side's unmatched rows are kept
        ("big", "small", "outer"): 2,
        ("small", "big", "inner"): 1,
        ("small", "big", "right"): 1,
        ("small", "big", "left"): 2,
    }
    frames = {"big": (big, dbig), "small": (small, dsmall)}
    for (ln, rn, how), n in expected.items():
        (pl, dl), (pr, dr) = frames[ln], frames[rn]
        with exchanges() as count:
            got = dl.merge(dr, on="k", how=how)
        same_merge(f"auto {ln}/{rn} {how}", got, pl.merge(pr, on="k", how=how))
        want = 0 if size == 1 else n
        expect(count.n == want, f"auto {ln}/{rn} {how}: {count.n} exchanges, expected {want}")
        if n == 1:  # the big side did not move: the result has its partitions
            big_side = dl if ln == "big" else dr
            expect(got.layout.owners == big_side.layout.owners, f"{ln}/{rn} {how}: owners")
    tight = JoinLimits(broadcast_max_rows=10)
    with exchanges() as count:
        got = dbig.merge(dsmall, on="k", limits=tight)
    same_merge("auto over the row bound", got, big.merge(small, on="k"))
    expect(count.n == (0 if size == 1 else 2), f"row bound: {count.n} exchanges")


def zipf(n: int, seed: int) -> np.ndarray:
    """Zipf keys: key 1 holds about 60% of the rows."""
    return np.minimum(np.random.default_rng(seed).zipf(2.0, n), 500)


@case
def merge_zipf_salted() -> None:
    """salt=k gives pandas' result for every how and spreads the hot key's rows."""
    rng = np.random.default_rng(13)
    left = pd.DataFrame({"k": zipf(3000, 13), "a": np.arange(3000)})
    right = pd.DataFrame(
        {"k": np.append(np.arange(1, 60), [1, 2, 2, 700]), "b": rng.integers(0, 9, 63)}
    )
    dl, dr = gpupart.from_pandas(left), gpupart.from_pandas(right)
    sizes = {}
    spread = 2 * size  # a multiple of the job size spreads evenly
    for j, how in enumerate(HOWS):
        want = left.merge(right, on="k", how=how)
        for salt in (None, (1, 3)[j % 2], spread):
            at = f"zipf how={how} salt={salt}"
            with exchanges() as count:
                got = dl.merge(dr, on="k", how=how, salt=salt, broadcast=False)
            same_merge(at, got, want)
            expect(count.n == (0 if size == 1 else 2), f"{at}: {count.n} exchanges")
            sizes[how, salt] = hot_share(got)
        if j % 2 == 0:
            swapped = right.merge(left, on="k", how=how)  # the hot side is the right one
            got = dr.merge(dl, on="k", how=how, salt=3)
            same_merge(f"zipf swapped how={how}", got, swapped)
            continue
        lon = left.rename(columns={"k": "lk"})
        same_merge(
            f"zipf left_on how={how}",
            gpupart.from_pandas(lon).merge(dr, left_on="lk", right_on="k", how=how, salt=4),
            lon.merge(right, left_on="lk", right_on="k", how=how),
        )
    if size > 1:  # the hot key's rows: all on one rank, then spread evenly
        for how in HOWS:
            expect(sizes[how, None] == 1.0, f"hot key unsalted {how}: {sizes}")
            expect(sizes[how, spread] < 1 / size + 0.1, f"salt spread {how}: {sizes}")
    return {"largest_share": {f"{h}/{s}": round(n, 3) for (h, s), n in sizes.items()}}


def hot_share(got: DistFrame) -> float:
    """The largest share of the hot key's (1) result rows that one rank holds."""
    mine = sum(int((p["k"] == 1).sum()) for p in got.local_partitions.values())
    counts = rt.allgather(mine)
    return max(counts) / sum(counts)


@case
def merge_salt_over_few_rows() -> None:
    """More salts than a hot key has rows: the other side is copied to the salts it has."""
    left = pd.DataFrame({"k": [77] * 12 + list(range(18)), "a": np.arange(30)})
    right = pd.DataFrame({"k": [77, 77, 5, 999], "b": [1.5, 2.5, 3.5, 4.5]})
    dl, dr = gpupart.from_pandas(left, 4), gpupart.from_pandas(right)
    limits = JoinLimits(hot_share=0.01)
    for j, how in enumerate(HOWS):
        salt, other = (2, 40) if j % 2 else (40, 2)
        same_merge(
            f"few rows how={how} salt={salt}",
            dl.merge(dr, on="k", how=how, salt=salt, limits=limits),
            left.merge(right, on="k", how=how),
        )
        same_merge(
            f"few rows swapped how={how} salt={other}",
            dr.merge(dl, on="k", how=how, salt=other, limits=limits),
            right.merge(left, on="k", how=how),
        )


@case
def merge_skew_is_refused() -> None:
    """A hot key that would overload one rank raises on every rank, naming the key."""
    left = pd.DataFrame({"k": np.where(np.arange(2000) % 10 == 0, np.arange(2000), 77), "a": 1})
    right = pd.DataFrame({"k": np.arange(0, 2000, 5), "b": 2})
    dl, dr = gpupart.from_pandas(left), gpupart.from_pandas(right)
    limits = JoinLimits(skew_min_rows=500)
    if size > 1:
        err = raises(JoinSkewError, lambda: dl.merge(dr, on="k", limits=limits), "'k'=77", "salt=")
        expect(isinstance(err, ValueError), "JoinSkewError is a ValueError")
        raises(JoinSkewError, lambda: dl.merge(dr, on="k", how="outer", limits=limits), "salt=")
        in_step()
    want = left.merge(right, on="k")
    same_merge("skew salted", dl.merge(dr, on="k", limits=limits, salt=size), want)
    same_merge("skew broadcast", dl.merge(dr, on="k", limits=limits, broadcast=True), want)
    same_merge("skew default limits", dl.merge(dr, on="k", broadcast=False), want)


@case
def merge_errors_on_every_rank() -> None:
    """Bad arguments raise the same error on every rank; the ranks stay in step."""
    left = pd.DataFrame({"k": [1, 2], "s": text(["a", "b"]), "a": [1, 2]})
    right = pd.DataFrame({"k": [2, 3], "s": text(["b", "c"]), "b": [1, 2]})
    dl, dr = gpupart.from_pandas(left), gpupart.from_pandas(right)
    raises(KeyError, lambda: dl.merge(dr, on="nope"), "on", "nope")
    raises(KeyError, lambda: dl.merge(dr, left_on="k", right_on="zz"), "right_on", "zz")
    raises(ValueError, lambda: dl.merge(dr, on="k", how="sideways"), "how", "sideways")
    raises(ValueError, lambda: dl.merge(dr, left_on="k", right_on="s"), "key ('k', 's')", "(left)")
    words = right.assign(k=right.k.astype(str))  # str (pandas 3) or object (pandas 2)
    found = f"{words.k.dtype} (right)"
    texts = gpupart.from_pandas(words)
    raises(ValueError, lambda: dl.merge(texts, on="k"), "key 'k'", "int64 (left)", found)
    raises(ValueError, lambda: dl.merge(dr, on="k", left_on="k", right_on="k"), "on")
    raises(ValueError, lambda: dl.merge(dr, left_on="k"), "right_on")
    raises(ValueError, lambda: dl.merge(dr, left_on=["k", "s"], right_on="k"), "right_on")
    raises(ValueError, lambda: dl.merge(dr, on="k", how="outer", broadcast=True), "broadcast")
    raises(ValueError, lambda: dl.merge(dr, on="k", broadcast="yes"), "broadcast")
    raises(ValueError, lambda: dl.merge(dr, on="k", salt=0), "salt")
    raises(ValueError, lambda: dl.merge(dr, on="k", salt=2, broadcast=True), "salt")
    raises(TypeError, lambda: dl.merge(right, on="k"), "right", "DataFrame")
    nocommon = gpupart.from_pandas(pd.DataFrame({"z": [1]}))
    raises(ValueError, lambda: dl.merge(nocommon), "on", "common")
    in_step()


# == sort_values ===============================================================================


def mixed(n: int, seed: int) -> pd.DataFrame:
    """Columns of every sortable kind, with nulls and many ties."""
    rng = np.random.default_rng(seed)
    k = np.arange(n)
    f = rng.integers(0, 6, n).astype(float)
    f[k % 7 == 3] = np.nan
    words = np.array(["pear", "Apple", "", "apple", "ümlaut", "zz", None], dtype=object)
    t = pd.Series(pd.date_range("2020-01-01", periods=5, freq="D")[rng.integers(0, 5, n)])
    t[k % 6 == 1] = pd.NaT
    return pd.DataFrame(
        {
            "f": f,
            "i": rng.integers(-3, 3, n),
            "s": text(words[rng.integers(0, 7, n)]),
            "t": t,
            "tz": pd.date_range("2021-03-27", periods=n, freq="-7h", tz="Europe/Berlin"),
            "I": pd.array([None if x % 5 == 0 else int(x % 4) for x in k], dtype="Int64"),
            "b": rng.integers(0, 2, n).astype(bool),
            "B": pd.array([None if x % 4 == 2 else bool(x % 3) for x in k], dtype="boolean"),
            "c": pd.Categorical(rng.choice(["lo", "mid", "hi"], n), categories=["lo", "mid", "hi"]),
            "id": k,
        }
    )


@case
def sort_one_column_every_dtype() -> None:
    df = mixed(61, 21)
    directions = [(True, "last"), (False, "first"), (True, "first"), (False, "last")]
    for j, col in enumerate(["f", "i", "s", "t", "tz", "I", "b", "B", "c"]):
        ascending, na = directions[j % len(directions)]
        sorts(f"one {col}", df, col, ascending=ascending, na_position=na)


@case
def sort_several_columns_mixed_directions() -> None:
    df = mixed(80, 22)
    sorts("multi", df, ["f", "s"], kind="mergesort")
    sorts("multi", df, ["s", "f", "i"], ascending=[False, True, False])
    sorts("multi", df, ["I", "t"], ascending=[True, False], na_position="first")
    sorts("multi", df, ["B", "c", "tz"], ascending=[False, False, True])


@case
def sort_duplicate_heavy_keys_spread() -> None:
    """One value in 90% of the rows: still sorted stably, and no rank gets nearly all rows."""
    n = 3000
    rng = np.random.default_rng(23)
    x = np.where(rng.random(n) < 0.9, 5.0, rng.standard_normal(n))
    df = pd.DataFrame({"x": x, "id": np.arange(n)})
    want = df.sort_values("x", kind="stable").reset_index(drop=True)
    for name, d in layouts(df):
        got = d.sort_values("x")
        pd.testing.assert_frame_equal(got.to_pandas(), want)
        largest = max(got.partition_sizes)
        expect(largest <= 1.3 * n / size + 2, f"{name}: rank sizes {got.partition_sizes}")
    sorts("dups desc", df, "x", ascending=False)
    return {"sizes": list(gpupart.from_pandas(df).sort_values("x").partition_sizes)}


@case
def sort_sorted_and_reversed_input() -> None:
    n = 500
    df = pd.DataFrame({"x": np.arange(n), "y": np.arange(n) % 7})
    sorts("sorted", df, "x")
    sorts("reversed", df, "x", ascending=False)
    sorts("reversed input", df.iloc[::-1].reset_index(drop=True), "x")
    sorts("all equal", df.assign(x=1), "x")


@case
def sort_empty_and_tiny() -> None:
    df = mixed(5, 24)
    sorts("tiny", df, ["s", "f"], every=True)
    sorts("one row", df.iloc[:1], "f")
    sorts("empty", df.iloc[:0], ["f", "s"])


@case
def series_sort_values() -> None:
    df = mixed(40, 25)
    for col in ["f", "s", "I"]:
        for ascending in (True, False):
            want = df[col].sort_values(ascending=ascending, kind="stable").reset_index(drop=True)
            name = LAYOUTS[next(TURN) % len(LAYOUTS)]
            for x in (layout(df, name),):
                got = x[col].sort_values(ascending=ascending)
                expect(isinstance(got, DistSeries), f"series {name}: {type(got)}")
                pd.testing.assert_series_equal(got.to_pandas(), want)
    unnamed = pd.Series([3.0, np.nan, 1.0, 2.0])
    s = gpupart.from_pandas(unnamed.to_frame())[0]
    got = s.sort_values(na_position="first").to_pandas()
    want = unnamed.sort_values(na_position="first", kind="stable").reset_index(drop=True)
    want.name = 0
    pd.testing.assert_series_equal(got, want)


@case
def sort_errors_on_every_rank() -> None:
    d = gpupart.from_pandas(mixed(10, 26))
    raises(KeyError, lambda: d.sort_values("nope"), "by", "nope")
    raises(KeyError, lambda: d.sort_values(["f", "nope"]), "by", "nope")
    raises(ValueError, lambda: d.sort_values(["f", "s"], ascending=[True]), "ascending", "2")
    raises(TypeError, lambda: d.sort_values("f", ascending="yes"), "ascending")
    raises(ValueError, lambda: d.sort_values("f", na_position="middle"), "na_position")
    raises(ValueError, lambda: d.sort_values("f", kind="bogo"), "kind", "bogo")
    raises(ValueError, lambda: d.sort_values([]), "by")
    raises(TypeError, lambda: d["f"].sort_values(ascending=[True]), "ascending")
    in_step()


# == main =====================================================================================


rt: Any = None
rank = size = 0


def main() -> None:
    global rt, rank, size
    rt = gpupart.init(timeout=60)
    rank, size = rt.rank, rt.size
    only = sys.argv[1:]
    chosen = [(n, fn) for n, fn in CASES if not only or n in only]
    emit("plan", rank=rank, cases=[name for name, _ in chosen])
    for name, fn in chosen:
        start = time.perf_counter()
        extra = fn() or {}
        rt.barrier()
        emit("case", name=name, rank=rank, seconds=round(time.perf_counter() - start, 2), **extra)
    emit("done", rank=rank, size=size)
    rt.close()


if __name__ == "__main__":
    main()
