"""tril/triu, meshgrid, nonzero and from_dlpack of gpupart.array_api against NumPy.

Run as ``gpupart run -n N -- python structure_cases.py`` at any job size. Every rank builds
the same NumPy arrays (seeded), distributes them under default, uneven (empty tiles) and
cut-on-every-axis tilings, applies an operation and compares the result with NumPy's: its
layout (every tile where its owner says, of the shape its tiling says), this rank's tiles,
and (for some) the whole. It also counts messages: ``tril``/``triu`` send none, ``meshgrid``
fetches once per input, ``nonzero`` fetches nothing when only the first axis is cut.

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
from gpupart.containers import layout
from gpupart.containers import namespace as xp
from gpupart.containers import reductions as red
from gpupart.containers.darray import DistArray

import gpupart
from gpupart.errors import CollectiveError
from gpupart.protocol import Tiling

CASES: list[tuple[str, Callable[[], Any]]] = []
MESSAGING = ("allgather", "alltoall", "allreduce", "barrier", "broadcast", "exchange", "fetch")
DTYPES = [np.bool_, np.int8, np.uint16, np.int64, np.float32, np.float64, np.complex128]


def case(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Register a case (run at every job size, in order)."""
    CASES.append((fn.__name__, fn))
    return fn


# -- helpers ----------------------------------------------------------------------------------


class Calls:
    """Counts of the runtime's messaging calls by name, and of ``fetch_regions`` calls."""

    def __init__(self) -> None:
        self.by_name: dict[str, int] = dict.fromkeys((*MESSAGING, "fetch_regions"), 0)

    def __getitem__(self, name: str) -> int:
        return self.by_name[name]

    @property
    def messages(self) -> int:
        return sum(n for name, n in self.by_name.items() if name in MESSAGING)


@contextlib.contextmanager
def counted() -> Iterator[Calls]:
    """Count the messaging calls (``get`` goes through ``fetch``) and fetch_regions calls."""
    calls = Calls()
    saved = {name: getattr(type(rt), name) for name in MESSAGING}
    saved_fetch = DistArray.fetch_regions

    def counting(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            calls.by_name[name] += 1
            return fn(self, *args, **kwargs)

        return call

    for name in MESSAGING:
        setattr(type(rt), name, counting(name, saved[name]))
    DistArray.fetch_regions = counting("fetch_regions", saved_fetch)  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        for name, fn in saved.items():
            setattr(type(rt), name, fn)
        DistArray.fetch_regions = saved_fetch  # type: ignore[method-assign]


@contextlib.contextmanager
def silent(where: str) -> Iterator[Calls]:
    """Check that the block sends no message: no collective, no fetch."""
    with counted() as calls:
        yield calls
    expect(calls.messages == 0, f"{where}: {calls.messages} messaging call(s), expected none")


def values(shape: tuple[int, ...], dtype: Any = np.float64, seed: int = 0) -> np.ndarray:
    """The same array on every rank: about a third zeros, the rest distinct nonzeros."""
    dt = np.dtype(dtype)
    rng = np.random.default_rng([seed, *shape])
    n = int(np.prod(shape))
    zero = rng.random(n) < 0.35
    if dt == np.bool_:
        flat = ~zero
    elif dt.kind == "c":
        flat = (np.arange(1, n + 1) + 1j * np.arange(n)[::-1]).astype(dt)
        flat[zero] = 0
    else:
        flat = (rng.permutation(n) % 100 + 1).astype(dt)
        flat[zero] = 0
    return flat.reshape(shape)


def uneven(n: int) -> list[int]:
    """Cut points of ``n`` with a short tile, an empty one and a long one."""
    if n < 3:
        return [0, n, n]
    return [0, 1, 1, n - 1, n]


def dist(a: np.ndarray, *bounds: list[int] | None) -> DistArray:
    """``a`` distributed: default tiling, or these cut points (``None``: the axis uncut)."""
    if not bounds:
        return gpupart.asarray(a)
    full = [[0, n] if b is None else b for b, n in zip(bounds, a.shape, strict=True)]
    return gpupart.asarray(a, tiles=Tiling.from_boundaries(full))


def layouts(a: np.ndarray) -> list[tuple[str, DistArray]]:
    """``a`` under several tilings: default, uneven first axis, every axis cut unevenly, grid."""
    out = [("default", dist(a))]
    if a.ndim:
        out.append(("uneven0", dist(a, uneven(a.shape[0]), *([None] * (a.ndim - 1)))))
    if a.ndim > 1:
        out.append(("uneven-all", dist(a, *(uneven(n) for n in a.shape))))
        out.append(("grid", gpupart.asarray(a, grid=tuple(min(n, 3) or 1 for n in a.shape))))
    return out


def check(where: str, x: Any, want: np.ndarray, *, whole: bool = True) -> None:
    """``x`` holds ``want``: its layout is consistent, its tiles (and its whole) are NumPy's."""
    expect(isinstance(x, DistArray), f"{where}: a DistArray, got {type(x)}")
    expect(x.shape == want.shape, f"{where}: shape {x.shape} != {want.shape}")
    expect(x.dtype == want.dtype, f"{where}: dtype {x.dtype} != {want.dtype}")
    expect(
        x.owners.shape == x.tiling.grid, f"{where}: owners {x.owners.shape} grid {x.tiling.grid}"
    )
    every = list(itertools.product(*(range(g) for g in x.tiling.grid)))
    held = sorted(p for p in every if int(x.owners[p]) in (rank, -1))
    expect(sorted(x.local_tiles) == held, f"{where}: tiles {sorted(x.local_tiles)} != {held}")
    for pos, tile in x.local_tiles.items():
        expect(tile.shape == x.tiling.tile_shape(pos), f"{where}: tile {pos} shape {tile.shape}")
        expect(tile.dtype == want.dtype, f"{where}: tile {pos} dtype {tile.dtype}")
        part = want[(*x.tiling.slices(pos), ...)]
        expect(np.array_equal(tile, part), f"{where}: tile {pos}\n{tile}\n!=\n{part}")
    if whole:
        got = x.to_numpy()
        expect(got.dtype == want.dtype and np.array_equal(got, want), f"{where}: whole")


def same_layout(where: str, out: DistArray, x: DistArray) -> None:
    expect(out.tiling == x.tiling, f"{where}: tiling {out.tiling} != {x.tiling}")
    expect(np.array_equal(out.owners, x.owners), f"{where}: owners differ from x's")


def in_step() -> None:
    """Every rank is at the same collective (after an error that every rank raised)."""
    expect(rt.allgather(rank) == list(range(size)), "ranks out of step after an error")


def np_triangle(a: np.ndarray, k: int, lower: bool) -> np.ndarray:
    """NumPy's tril/triu (``k`` clamped: NumPy cannot take a k beyond int64)."""
    k = max(min(k, 10**6), -(10**6))
    return np.tril(a, k) if lower else np.triu(a, k)


# == tril / triu ===============================================================================


@case
def tril_triu_every_layout_send_no_message() -> dict[str, int]:
    ran = 0
    for shape in [(5, 6), (6, 4), (1, 1), (0, 3), (4, 0), (2, 7)]:
        a = values(shape, np.float64, seed=1)
        rows, cols = shape
        for label, x in layouts(a):
            for k in sorted({-rows - 3, -rows, -2, -1, 0, 1, 2, cols - 1, cols, cols + 4}):
                for lower, fn in ((True, xp.tril), (False, xp.triu)):
                    where = f"{fn.__name__} {shape} {label} k={k}"
                    with silent(where):
                        out = fn(x, k=k)
                    same_layout(where, out, x)
                    check(where, out, np_triangle(a, k, lower), whole=k == 0)
                    ran += 1
    return {"checked": ran}


@case
def tril_triu_dtypes_and_huge_k() -> None:
    for dtype in DTYPES:
        a = values((5, 4), dtype, seed=2)
        x = dist(a, [0, 2, 2, 5], [0, 1, 3, 4])
        for k in (-(10**30), -3, 0, 1, 10**30, np.int64(2), np.int8(-1)):
            for lower, fn in ((True, xp.tril), (False, xp.triu)):
                where = f"{fn.__name__} {np.dtype(dtype)} k={k}"
                with silent(where):
                    out = fn(x, k=k)
                same_layout(where, out, x)
                check(where, out, np_triangle(a, int(k), lower), whole=False)
        for pos, tile in xp.tril(x).local_tiles.items():
            expect(not np.shares_memory(tile, a), f"tril {np.dtype(dtype)}: tile {pos} is x's")


@case
def tril_triu_batched() -> None:
    a4 = values((2, 3, 5, 4), np.int32, seed=3)
    a3 = values((3, 4, 4), np.float32, seed=4)
    cases4 = [
        ("default", dist(a4)),
        ("axes 0,2,3", dist(a4, [0, 1, 2], None, uneven(5), [0, 3, 4])),
        ("axis 1 only", dist(a4, None, [0, 0, 2, 3], None, None)),
    ]
    cases3 = [
        ("grid", gpupart.asarray(a3, grid=(2, 2, 2))),
        ("rows", dist(a3, None, uneven(4), None)),
    ]
    for a, cases in ((a4, cases4), (a3, cases3)):
        for label, x in cases:
            for k in (-2, 0, 1, 3):
                for lower, fn in ((True, xp.tril), (False, xp.triu)):
                    where = f"batched {fn.__name__} {a.shape} {label} k={k}"
                    with silent(where):
                        out = fn(x, k=k)
                    same_layout(where, out, x)
                    check(where, out, np_triangle(a, k, lower), whole=k == 1)
    rep = red.replicated(rt, values((4, 3), np.int64, seed=5))  # every rank holds it
    with silent("tril replicated"):
        out = xp.tril(rep, k=-1)
    same_layout("tril replicated", out, rep)
    check("tril replicated", out, np.tril(values((4, 3), np.int64, seed=5), -1))


@case
def tril_triu_errors_on_every_rank() -> None:
    a = values((4, 4))
    x = dist(a)
    for fn in (xp.tril, xp.triu):
        raises(ValueError, lambda fn=fn: fn(dist(np.arange(5.0))), "x", "1-d")
        raises(ValueError, lambda fn=fn: fn(red.replicated(rt, np.float64(3))), "x", "0-d")
        raises(TypeError, lambda fn=fn: fn(a), "x", "DistArray")
        raises(TypeError, lambda fn=fn: fn(x, k=1.5), "k", "1.5")
        raises(TypeError, lambda fn=fn: fn(x, k=True), "k", "True")
        raises(TypeError, lambda fn=fn: fn(x, k=None), "k", "None")
        raises(TypeError, lambda fn=fn: fn(x, 1))  # k is keyword-only
    in_step()


# == meshgrid ==================================================================================


def inputs() -> list[tuple[str, np.ndarray, DistArray]]:
    """1-d inputs of several lengths, dtypes and tilings (empty tiles, replicated, empty)."""
    a = np.array([3.5, -1.0, 2.25, 8.0, 0.5])
    b = np.array([7, 1, 4, 9], dtype=np.int32)
    c = np.array([True, False, True])
    d = np.array([1 + 2j, -3j], dtype=np.complex64)
    e = np.array([], dtype=np.float32)
    return [
        ("a default", a, dist(a)),
        ("b uneven", b, dist(b, [0, 1, 1, 3, 4])),
        ("c grid3", c, gpupart.asarray(c, grid=(3,))),
        ("d replicated", d, red.replicated(rt, d.copy())),
        ("a one tile at the end", a, dist(a, [0, 0, 0, 5])),
        ("e empty", e, dist(e)),
    ]


@case
def meshgrid_inputs_of_different_tilings() -> dict[str, int]:
    pool = inputs()
    combos = [[i] for i in range(len(pool))]
    combos += [[0, 1], [1, 2], [3, 0], [2, 5], [4, 4]]
    combos += [[0, 1, 2], [1, 3, 4], [2, 0, 1], [0, 5, 1]]
    ran = 0
    for combo in combos:
        labels = [pool[i][0] for i in combo]
        host = [pool[i][1] for i in combo]
        arrays = [pool[i][2] for i in combo]
        for indexing in ("xy", "ij"):
            where = f"meshgrid {labels} {indexing}"
            with counted() as calls:
                out = xp.meshgrid(*arrays, indexing=indexing)
            expect(calls["fetch_regions"] == len(arrays), f"{where}: {calls['fetch_regions']}")
            want = np.meshgrid(*host, indexing=indexing)
            expect(isinstance(out, list) and len(out) == len(want), f"{where}: {type(out)}")
            for i, (got, w) in enumerate(zip(out, want, strict=True)):
                check(f"{where} [{i}]", got, w)
                tiling = layout.default_tiling(w.shape, size)
                expect(got.tiling == tiling, f"{where} [{i}]: tiling {got.tiling}")
                expect(
                    np.array_equal(got.owners, layout.assign_owners(tiling, size)),
                    f"{where} [{i}]: owners",
                )
                for pos, tile in got.local_tiles.items():
                    expect(tile.flags.writeable, f"{where} [{i}]: tile {pos} is read-only")
                ran += 1
    expect(xp.meshgrid() == [] and xp.meshgrid(indexing="ij") == [], "meshgrid() is []")
    return {"checked": ran}


@case
def meshgrid_default_indexing_is_xy() -> None:
    a, b = np.arange(4.0), np.arange(3, dtype=np.int64)
    out = xp.meshgrid(dist(a), dist(b, [0, 2, 3]))
    for got, want in zip(out, np.meshgrid(a, b), strict=True):
        check("meshgrid default", got, want)
    x = dist(a)
    out = xp.meshgrid(x)  # one input: the same for both indexings
    check("meshgrid one input", out[0], a)
    out[0][0] = 99.0  # a copy: writing it leaves the input alone
    check("meshgrid input after a write", x, np.arange(4.0))
    expect(out[0].to_numpy()[0] == 99.0, "meshgrid output after a write")


@case
def meshgrid_errors_on_every_rank() -> None:
    a = dist(np.arange(4.0))
    m = dist(np.ones((2, 2)))
    raises(ValueError, lambda: xp.meshgrid(a, m), "arrays[1]", "2-d")
    raises(ValueError, lambda: xp.meshgrid(red.replicated(rt, np.float64(1))), "arrays[0]")
    raises(TypeError, lambda: xp.meshgrid(np.arange(3), a), "arrays[0]", "ndarray")
    raises(ValueError, lambda: xp.meshgrid(a, a, indexing="xz"), "indexing", "'xz'")
    raises(ValueError, lambda: xp.meshgrid(indexing="ji"), "indexing")
    in_step()


# == nonzero ===================================================================================


def nonzero_matches(where: str, x: DistArray, a: np.ndarray, whole: bool = False) -> Calls:
    """``nonzero(x)`` is NumPy's (every result's layout and tiles; with ``whole`` one whole)."""
    with counted() as calls:
        out = xp.nonzero(x)
    want = np.nonzero(a)
    expect(isinstance(out, tuple) and len(out) == a.ndim, f"{where}: {type(out)} {len(out)}")
    for i, (got, w) in enumerate(zip(out, want, strict=True)):
        expect(got.ndim == 1 and got.dtype == np.int64, f"{where}[{i}]: {got.dtype}")
        check(f"{where}[{i}]", got, w.astype(np.int64), whole=whole and i == 0)
    return calls


@case
def nonzero_every_layout_and_dtype() -> dict[str, int]:
    ran = 0
    for shape in [(13,), (5, 6), (3, 4, 5), (1, 1), (0, 4), (4, 0, 2)]:
        dtypes = DTYPES if shape in ((13,), (5, 6)) else [np.bool_, np.int8, np.float64]
        for dtype in dtypes:
            a = values(shape, dtype, seed=6)
            for label, x in layouts(a):
                where = f"nonzero {shape} {np.dtype(dtype)} {label}"
                calls = nonzero_matches(where, x, a, whole=dtype == np.float64)
                rows_only = all(g == 1 for g in x.tiling.grid[1:])
                if rows_only:  # x's row blocks are the results' tiles: no repartition
                    expect(calls["fetch_regions"] == 0, f"{where}: fetched")
                    expect(calls.messages == 1, f"{where}: {calls.by_name}")
                else:  # one repartition into row blocks, one all-gather of counts
                    expect(calls["fetch_regions"] == 1, f"{where}: {calls.by_name}")
                ran += 1
    return {"checked": ran}


@case
def nonzero_none_and_all() -> None:
    for shape in [(7,), (4, 5), (2, 3, 4)]:
        for dtype in (np.bool_, np.int16, np.float64):
            zero = np.zeros(shape, dtype)
            full = np.ones(shape, dtype)
            for fill, a in (("none", zero), ("all", full)):
                for label, x in layouts(a):
                    where = f"nonzero {fill} {shape} {np.dtype(dtype)} {label}"
                    nonzero_matches(where, x, a, whole=dtype == np.int16)
    a = np.array([[0.0, np.nan], [-0.0, 1e-300]])  # NaN is nonzero, -0.0 is zero
    for label, x in layouts(a):
        nonzero_matches(f"nonzero nan {label}", x, a, whole=True)


@case
def nonzero_owners_out_of_rank_order_and_replicated() -> None:
    a = values((7, 3), np.int64, seed=7)
    x = dist(a, [0, 2, 2, 3, 5, 7], None)  # five row blocks, run-assigned to ranks
    flipped = xp.flip(x, axis=0)  # mirrored cuts: the owners run backwards
    calls = nonzero_matches("nonzero flipped", flipped, np.flip(a, 0), whole=True)
    expect(calls["fetch_regions"] == 0, f"flipped: {calls.by_name}")
    rep = red.replicated(rt, a.copy())
    with silent("nonzero replicated"):
        out = xp.nonzero(rep)
    for got, want in zip(out, np.nonzero(a), strict=True):
        expect(np.all(got.owners == -1), "nonzero replicated: every rank holds the result")
        check("nonzero replicated", got, want.astype(np.int64))
    col = xp.permute_dims(dist(a.T.copy(), [0, 1, 3], uneven(7)), (1, 0))  # cut on both axes
    nonzero_matches("nonzero transposed", col, a, whole=True)


@case
def nonzero_errors_on_every_rank() -> None:
    raises(ValueError, lambda: xp.nonzero(red.replicated(rt, np.float64(1))), "x", "0-d")
    raises(ValueError, lambda: xp.nonzero(xp.sum(dist(np.ones(4)))), "x", "0-d")
    raises(TypeError, lambda: xp.nonzero(np.ones(3)), "x", "DistArray")
    in_step()


# == from_dlpack ===============================================================================


@case
def from_dlpack_copies_as_asked() -> None:
    for dtype in DTYPES:
        a = values((5, 3), dtype, seed=8)
        for copy in (None, False, True):
            x = xp.from_dlpack(a, copy=copy)
            check(f"from_dlpack {np.dtype(dtype)} copy={copy}", x, a, whole=copy is None)
            tiling = layout.default_tiling(a.shape, size)
            expect(x.tiling == tiling, f"from_dlpack copy={copy}: tiling {x.tiling}")
            for pos, tile in x.local_tiles.items():
                if tile.size:
                    expect(
                        np.shares_memory(tile, a) == (copy is not True),
                        f"from_dlpack copy={copy}: tile {pos} shares memory: {copy is not True}",
                    )
    strided = np.arange(12.0).reshape(3, 4)[:, ::2]  # DLPack carries strides: no copy needed
    check("from_dlpack strided", xp.from_dlpack(strided, copy=False), strided)
    x = dist(np.arange(6.0), [0, 1, 1, 6])
    expect(xp.from_dlpack(x) is x, "from_dlpack of a DistArray is that array")
    y = xp.from_dlpack(x, copy=True, device=x.device)
    same_layout("from_dlpack DistArray copy", y, x)
    for pos, tile in y.local_tiles.items():
        expect(not np.shares_memory(tile, x.local_tiles[pos]), f"copy: tile {pos}")
    check("from_dlpack DistArray copy", y, np.arange(6.0))


@case
def from_dlpack_errors_on_every_rank() -> None:
    a = np.arange(4.0)
    raises(TypeError, lambda: xp.from_dlpack([1, 2, 3]), "x", "list")
    in_step()
    raises(ValueError, lambda: xp.from_dlpack(a, device="kDLCUDA:7"), "device", "kDLCUDA:7")
    raises(TypeError, lambda: xp.from_dlpack(a, copy="yes"), "copy")
    in_step()
    if size > 1:  # one rank's import fails: every rank raises, naming it
        raises(CollectiveError, lambda: xp.from_dlpack([1] if rank == 1 else a), "rank 1")
        in_step()
        b = np.arange(5.0) if rank == 0 else a  # imports fine, shapes differ: asarray says so
        raises(CollectiveError, lambda: xp.from_dlpack(b), "asarray")
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
