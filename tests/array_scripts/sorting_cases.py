"""Distributed sorting, unique and searchsorted, checked against NumPy on the same data.

Run as ``gpupart run -n N -- python sorting_cases.py`` at any job size. Every rank builds the
same NumPy arrays (seeded), distributes them under default, uneven, empty-tile, one-rank and
replicated layouts, applies an operation and compares the result with NumPy's: its layout
(every tile where its owner says) and every rank's tiles. The
runtime's ``exchange`` calls are counted: a sample sort moves its data in exactly one.

Every rank emits ``@plan`` (the case names), ``@case`` after each case passes and ``@done``.
A failed check raises: the job fails with the traceback.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "mp_scripts"))
from _mp import emit, expect, raises
from gpupart.containers import namespace as xp
from gpupart.containers.darray import REPLICATED, DistArray

import gpupart
from gpupart.protocol import Tiling

CASES: list[tuple[str, Callable[[], Any]]] = []
DTYPES = [np.bool_, np.int8, np.uint64, np.float32, np.float64]


def case(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Register a case (run at every job size, in order)."""
    CASES.append((fn.__name__, fn))
    return fn


# -- helpers ----------------------------------------------------------------------------------


class Calls:
    """How many times the runtime's ``exchange`` ran."""

    def __init__(self) -> None:
        self.count = 0


@contextlib.contextmanager
def exchanges(where: str, expected: int | None) -> Iterator[Calls]:
    """Count the block's ``runtime.exchange`` calls; exactly ``expected`` unless ``None``."""
    calls = Calls()
    cls = type(rt)
    saved = cls.exchange

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.count += 1
        return saved(self, *args, **kwargs)

    cls.exchange = counting
    try:
        yield calls
    finally:
        cls.exchange = saved
    if expected is not None:
        expect(calls.count == expected, f"{where}: {calls.count} exchange(s), expected {expected}")


def data(n: int, dtype: Any, seed: int = 0, nan: bool = True) -> np.ndarray:
    """``n`` values of ``dtype`` with many duplicates (and NaNs for floats)."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return rng.integers(0, 2, n).astype(bool)
    if dt == np.uint64:  # large values too, beyond int64
        pool = rng.integers(0, 2**64 - 1, 12, dtype=np.uint64, endpoint=True)
        return pool[rng.integers(0, pool.size, n)]
    if dt.kind in "iu":
        info = np.iinfo(dt)
        pool = rng.integers(info.min, info.max, 15, dtype=dt, endpoint=True)
        return pool[rng.integers(0, pool.size, n)]
    out = np.round(rng.standard_normal(n) * 4).astype(dt)  # many ties, -0.0 and 0.0
    if nan and n:
        out[rng.integers(0, n, max(n // 10, 1))] = np.nan
    return out


def dist(a: np.ndarray, cuts: list[int] | None = None) -> DistArray:
    """``a`` (1-d) distributed: default tiling or these cut points."""
    if cuts is None:
        return gpupart.asarray(a)
    return gpupart.asarray(a, tiles=Tiling.from_boundaries([cuts]))


def replicated(a: np.ndarray) -> DistArray:
    """``a`` (1-d) in two tiles: the first held by every rank, the second by the last rank."""
    k = len(a) // 3
    tiling = Tiling.from_boundaries([[0, k, len(a)]])
    owners = np.array([REPLICATED, size - 1], dtype=np.int32)
    tiles = {(0,): a[:k].copy()}
    if rank == size - 1:
        tiles[(1,)] = a[k:].copy()
    return DistArray(rt, tiling, owners, a.dtype, tiles)


def layouts(a: np.ndarray) -> list[tuple[str, DistArray]]:
    """``a`` (1-d) under default, uneven (an empty tile), many-tile, one-rank, replicated."""
    n = len(a)
    out = [("default", dist(a))]
    if n >= 3:
        out.append(("uneven", dist(a, [0, 1, 1, n - 1, n])))
        out.append(("halves_and_empty", dist(a, [0, n // 2, n // 2, n])))  # middle rank: none
        out.append(("replicated", replicated(a)))
    out.append(("many", gpupart.asarray(a, tiles=(max(n // 7, 1),))))
    out.append(("one_rank", dist(a, [0, n])))  # one tile: the tile-by-tile path
    return out


def check(where: str, x: Any, want: np.ndarray) -> None:
    """``x`` holds ``want``: its layout is consistent and this rank's tiles are NumPy's.

    Every tile is checked by a rank that holds it (no ``to_numpy``: collectives are slow on
    a loaded machine, and the tiles cover the whole).
    """
    expect(isinstance(x, DistArray), f"{where}: a DistArray, got {type(x)}")
    expect(x.shape == want.shape, f"{where}: shape {x.shape} != {want.shape}")
    expect(x.dtype == want.dtype, f"{where}: dtype {x.dtype} != {want.dtype}")
    expect(x.owners.shape == x.tiling.grid, f"{where}: owners {x.owners.shape}")
    every = list(itertools.product(*(range(g) for g in x.tiling.grid)))
    held = sorted(p for p in every if int(x.owners[p]) in (rank, REPLICATED))
    expect(sorted(x.local_tiles) == held, f"{where}: tiles {sorted(x.local_tiles)} != {held}")
    nan = want.dtype.kind in "fc"
    for pos, tile in x.local_tiles.items():
        expect(tile.shape == x.tiling.tile_shape(pos), f"{where}: tile {pos} shape {tile.shape}")
        expect(tile.dtype == want.dtype, f"{where}: tile {pos} dtype {tile.dtype}")
        part = want[(*x.tiling.slices(pos), ...)]
        expect(np.array_equal(tile, part, equal_nan=nan), f"{where}: tile {pos}: {tile} != {part}")
        if nan:  # -0.0 and 0.0 in the right places too
            expect(np.array_equal(np.signbit(tile), np.signbit(part)), f"{where}: zeros' signs")


def sorted_like_numpy(a: np.ndarray, descending: bool) -> tuple[np.ndarray, np.ndarray]:
    """NumPy's stable sort and argsort; descending: reversed, equal elements in order."""
    if not descending:
        order = np.argsort(a, kind="stable")
    else:
        order = len(a) - 1 - np.argsort(a[::-1], kind="stable")[::-1]
    return a[order], order.astype(np.int64)


def in_step() -> None:
    """Every rank is at the same collective (after an error that every rank raised)."""
    expect(rt.allgather(rank) == list(range(size)), "ranks out of step after an error")


def cut(x: DistArray) -> bool:
    """Whether ``x`` (1-d) has two non-empty tiles: sorted across ranks."""
    return sum(b > a for a, b in itertools.pairwise(x.tiling.boundaries[0])) > 1


# == sort and argsort ==========================================================================


@case
def sort_1d_matches_numpy() -> None:
    for (d, dtype), n in itertools.product(enumerate(DTYPES), [2, 150]):
        a = data(n, dtype, seed=n + d)
        for k, (label, x) in enumerate(layouts(a)):
            # each layout sorts one way for most dtypes (both ways for float64)
            for desc in [False, True] if dtype == np.float64 else [(k + d) % 2 == 1]:
                want_s, want_i = sorted_like_numpy(a, desc)
                where = f"{label} {np.dtype(dtype)} n={n} desc={desc}"
                with exchanges(f"sort {where}", 1 if cut(x) else 0):
                    s = xp.sort(x, descending=desc)
                with exchanges(f"argsort {where}", 1 if cut(x) else 0):
                    i = xp.argsort(x, descending=desc, stable=True)
                check(f"sort {where}", s, want_s)
                check(f"argsort {where}", i, want_i)
                if cut(x) and n > 2:  # a sample sort's result: one run per rank
                    expect(s.tiling.grid == (size,), f"{where}: grid {s.tiling.grid}")
    for n in [0, 1]:  # nothing to sort across ranks
        a = data(n, np.float64)
        for label, x in [("default", dist(a)), ("empty tiles", dist(a, [0, 0, n, n]))]:
            check(f"sort n={n} {label}", xp.sort(x, descending=True), a)
            check(f"argsort n={n} {label}", xp.argsort(x), np.arange(n, dtype=np.int64))
    # stable=False is allowed to be stable: the same result
    a = data(100, np.float64, seed=5)
    check("unstable flag", xp.argsort(dist(a), stable=False), sorted_like_numpy(a, False)[1])


@case
def sort_ordered_reversed_and_equal_inputs() -> None:
    n = 240
    inputs = {
        "sorted": np.arange(n, dtype=np.int64),
        "reversed": np.arange(n, dtype=np.float64)[::-1].copy(),
        "equal": np.full(n, 7, dtype=np.int8),
        "equal_float": np.full(n, -0.0, dtype=np.float32),
        "all_nan": np.full(n, np.nan),
        "zeros_signs": np.where(np.arange(n) % 3 == 0, -0.0, 0.0),
    }
    for k, (label, a) in enumerate(inputs.items()):
        for name, x, desc in [
            ("default", dist(a), k % 2 == 0),
            ("uneven", dist(a, [0, 1, 1, n - 1, n]), k % 2 == 1),
        ]:
            want_s, want_i = sorted_like_numpy(a, desc)
            s = xp.sort(x, descending=desc)
            i = xp.argsort(x, descending=desc)
            check(f"sort {label} {name} {desc}", s, want_s)
            check(f"argsort {label} {name} {desc}", i, want_i)
            # the (value, index) keys are distinct: even equal values spread over ranks
            lengths = np.diff(s.tiling.boundaries[0])
            expect(
                lengths.max() <= 1.5 * n / size + 2,
                f"{label} {name} {desc}: run lengths {lengths.tolist()} are unbalanced",
            )


@case
def sort_nd_and_errors() -> None:
    rng = np.random.default_rng(8)
    a = rng.integers(0, 5, (6, 9)).astype(np.float64)
    x = gpupart.asarray(a)  # cut along axis 0 at 2+ ranks
    want = np.sort(a, axis=1, kind="stable")
    check("2-d along the uncut axis", xp.sort(x, axis=1), want)
    check("2-d argsort uncut", xp.argsort(x), np.argsort(a, axis=1, kind="stable"))
    if size > 1:
        raises(NotImplementedError, lambda: xp.sort(x, axis=0), "axis 0", "repartition")
        raises(NotImplementedError, lambda: xp.argsort(x, axis=0), "argsort", "repartition")
        in_step()
    whole = x.repartition(grid=(1, size))
    check("2-d along axis 0 after repartition", xp.sort(whole, axis=0), np.sort(a, axis=0))
    raises(IndexError, lambda: xp.sort(x, axis=2), "axis")
    raises(IndexError, lambda: xp.argsort(dist(a[0]), axis=1), "axis")
    raises(TypeError, lambda: xp.sort(a), "x", "DistArray")
    in_step()


# == unique ====================================================================================


def unique_reference(a: np.ndarray) -> tuple[np.ndarray, ...]:
    """``np.unique`` with everything (sorted values, NaNs distinct, inverse of a's shape)."""
    values, first, inverse, counts = np.unique(
        a, return_index=True, return_inverse=True, return_counts=True, equal_nan=False
    )
    return values, first.astype(np.int64), inverse.reshape(a.shape), counts.astype(np.int64)


def check_unique(where: str, a: np.ndarray, x: DistArray, every: bool = False) -> None:
    """Check ``unique_values`` and ``unique_all`` (``every``: the other two too) of ``x``."""
    values, first, inverse, counts = unique_reference(a)
    with exchanges(f"unique_values {where}", 1):
        v = xp.unique_values(x)
    check(f"unique_values {where}", v, values)
    with exchanges(f"unique_all {where}", 2):
        ua = xp.unique_all(x)
    check(f"unique_all.values {where}", ua.values, values)
    check(f"unique_all.indices {where}", ua.indices, first)
    check(f"unique_all.inverse {where}", ua.inverse_indices, inverse)
    check(f"unique_all.counts {where}", ua.counts, counts)
    inv = ua.inverse_indices
    expect(inv.tiling == x.tiling, f"{where}: the inverse has x's tiling")
    expect(np.array_equal(inv.owners, x.owners), f"{where}: and x's owners")
    if not every:
        return
    got = np.sort(np.unique_values(a))  # NumPy 2's own: the same set, NaNs distinct
    expect(np.array_equal(v.to_numpy(), got, equal_nan=True), f"{where}: unique_values set")
    uc = xp.unique_counts(x)
    check(f"unique_counts.values {where}", uc.values, values)
    check(f"unique_counts.counts {where}", uc.counts, counts)
    with exchanges(f"unique_inverse {where}", 2):
        ui = xp.unique_inverse(x)
    check(f"unique_inverse.values {where}", ui.values, values)
    check(f"unique_inverse.inverse {where}", ui.inverse_indices, inverse)


@case
def unique_1d_matches_numpy() -> None:
    for d, dtype in enumerate(DTYPES):
        a = data(97, dtype, seed=d + 1)
        for k, (label, x) in enumerate(layouts(a)):
            check_unique(f"{label} {np.dtype(dtype)}", a, x, every=k == d)
    for n in [0, 1]:
        a = data(n, np.float64)
        check_unique(f"n={n}", a, dist(a, [0, 0, n, n]), every=True)
    for label, a in [("all equal", np.full(90, 3)), ("all nan", np.full(20, np.nan))]:
        check_unique(label, a, dist(a, [0, 1, 1, len(a) - 2, len(a)]), every=True)


@case
def unique_nd_matches_numpy() -> None:
    a = data(7 * 5 * 3, np.float64, seed=9).reshape(7, 5, 3)
    for label, x in [
        ("default", gpupart.asarray(a)),
        ("grid", gpupart.asarray(a, grid=(2, 2, 2))),
        (
            "uneven",
            gpupart.asarray(a, tiles=Tiling.from_boundaries([[0, 1, 1, 7], [0, 5], [0, 3]])),
        ),
    ]:
        check_unique(f"3-d {label}", a, x, every=label == "grid")
    b = data(12, np.int8, seed=3).reshape(3, 4)
    check_unique("2-d int8 grid", b, gpupart.asarray(b, grid=(3, 2)))
    zero = np.array(2.5)
    check_unique("0-d", zero, gpupart.asarray(zero))
    raises(TypeError, lambda: xp.unique_values(a), "x", "DistArray")
    in_step()


# == searchsorted ==============================================================================


@case
def searchsorted_matches_numpy() -> None:
    rng = np.random.default_rng(11)
    for d, dtype in enumerate([np.int8, np.uint64, np.float32, np.float64]):
        raw = data(400, dtype, seed=12, nan=True)
        x1 = np.sort(raw)
        # probes: the values, between them, beyond both ends, NaN for floats
        probes = np.concatenate([raw[:60], np.sort(raw)[::37]])
        if np.dtype(dtype).kind == "f":
            probes = np.concatenate([probes, [np.nan, -1e9, 1e9, 0.5]]).astype(dtype)
        v2 = rng.permutation(probes)
        for label, x in [
            ("default", dist(x1)),
            ("uneven", dist(x1, [0, 3, 3, 350, 400])),  # a tile much longer than the samples
            ("many", gpupart.asarray(x1, tiles=(45,))),
            ("replicated", replicated(x1)),
        ]:
            for side in ["left", "right"] if label == "uneven" else [("left", "right")[d % 2]]:
                want = np.searchsorted(x1, v2, side=side).astype(np.int64)
                where = f"{label} {np.dtype(dtype)} {side}"
                y2 = gpupart.asarray(v2, tiles=Tiling.from_boundaries([[0, 5, 5, len(v2)]]))
                check(f"searchsorted {where}", xp.searchsorted(x, y2, side=side), want)
                got = xp.searchsorted(x, v2, side=side)  # a NumPy array: distributed first
                check(f"searchsorted numpy x2 {where}", got, want)
    # n-d x2 in a grid: the result is laid out like it
    x1 = np.sort(data(300, np.float64, seed=13, nan=False))
    v2 = data(48, np.float64, seed=14, nan=False).reshape(6, 8)
    y2 = gpupart.asarray(v2, grid=(2, 3))
    out = xp.searchsorted(dist(x1, [0, 100, 100, 299, 300]), y2, side="right")
    check("searchsorted 2-d x2", out, np.searchsorted(x1, v2, side="right").astype(np.int64))
    expect(out.tiling == y2.tiling and np.array_equal(out.owners, y2.owners), "x2's layout")
    # 0-d x2, empty x1, empty x2
    check(
        "0-d x2",
        xp.searchsorted(dist(x1), gpupart.asarray(np.array(0.25))),
        np.array(np.searchsorted(x1, 0.25), dtype=np.int64),
    )
    empty = np.zeros(0)
    check("empty x1", xp.searchsorted(dist(empty), dist(x1[:5])), np.zeros(5, dtype=np.int64))
    check("empty x2", xp.searchsorted(dist(x1), dist(empty)), np.zeros(0, dtype=np.int64))


@case
def searchsorted_with_sorter_and_errors() -> None:
    raw = data(200, np.float64, seed=15, nan=False)
    v2 = data(30, np.float64, seed=16, nan=False)
    x = dist(raw, [0, 70, 70, 200])
    sorter = xp.argsort(x)
    for side in ["left", "right"]:
        want = np.searchsorted(raw, v2, side=side, sorter=np.argsort(raw, kind="stable"))
        check(f"sorter {side}", xp.searchsorted(x, dist(v2), side=side, sorter=sorter), want)
        check(
            f"numpy sorter {side}",
            xp.searchsorted(x, dist(v2), side=side, sorter=np.argsort(raw, kind="stable")),
            want,
        )
    m = gpupart.asarray(np.zeros((4, 4)))
    raises(ValueError, lambda: xp.searchsorted(m, dist(v2)), "x1", "1-d")
    raises(ValueError, lambda: xp.searchsorted(x, dist(v2), side="middle"), "side", "middle")
    raises(ValueError, lambda: xp.searchsorted(x, dist(v2), sorter=np.arange(3)), "sorter")
    raises(TypeError, lambda: xp.searchsorted(raw, dist(v2)), "x1", "DistArray")
    in_step()


# == main =====================================================================================


rt: Any = None
rank = size = 0


def main() -> None:
    global rt, rank, size
    rt = gpupart.init(timeout=60)
    rank, size = rt.rank, rt.size
    emit("plan", rank=rank, cases=[name for name, _ in CASES])
    for name, fn in CASES:
        extra = fn() or {}
        rt.barrier()
        emit("case", name=name, rank=rank, **extra)
    emit("done", rank=rank, size=size)
    rt.close()


if __name__ == "__main__":
    main()
