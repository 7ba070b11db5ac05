"""DistArray core, creation, random and ``__partitioned__`` in and out, checked against NumPy.

Run as ``gpupart run -n N -- python core.py GROUP`` at any job size. GROUP is ``create``
(creation functions, ``asarray``, ``from_local``, ``random``) or ``array`` (repartition,
to_numpy, gather, the Python protocols, ``__partitioned__`` out and ``from_partitioned`` in),
many cases in one job; or one of the ``fault_*`` cases, each in its own job with short
limits: a rank that gets an error while the others do not can leave them waiting.

Every rank emits ``@plan`` (the names of the cases it will run), then ``@case`` after each
case passes its checks (with what the test file compares across jobs, e.g. a digest of a
random array, or an outcome it judges), then ``@done``. A failed check raises: the job
fails with the traceback. A fault case never raises: it emits ``@fault`` with what this rank
got (error or result), then ``@after`` if the collective after it failed.
"""

from __future__ import annotations

import hashlib
import itertools
import pickle
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "mp_scripts"))
from _mp import emit, expect, raises

import gpupart
from gpupart.protocol import Tiling, validate

GROUP = sys.argv[1]
if GROUP.startswith("fault_"):  # short limits: a rank left waiting must not stall the test
    rt = gpupart.init(timeout=8, fetch_timeout=8, close_timeout=2)
else:
    rt = gpupart.init(timeout=60)
rank, size = rt.rank, rt.size
last = size - 1

CASES: dict[str, list[tuple[str, Callable[[], Any], int]]] = {}


def case(group: str, min_size: int = 1) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Register a case of ``group`` (run only in jobs of at least ``min_size`` ranks)."""

    def register(fn: Callable[[], Any]) -> Callable[[], Any]:
        CASES.setdefault(group, []).append((fn.__name__, fn, min_size))
        return fn

    return register


# -- expectations, computed independently of gpupart's layout code ---------------------------


def cuts(n: int, parts: int) -> list[int]:
    """Cut points of ``n`` items into ``parts`` runs as ``np.array_split`` makes them."""
    sizes = [len(p) for p in np.array_split(np.arange(n), parts)]
    return [0, *itertools.accumulate(sizes)]


def default_tiling(shape: tuple[int, ...]) -> Tiling:
    """The documented default: the first axis in one block per rank, the others uncut."""
    if not shape:
        return Tiling.from_boundaries([])
    return Tiling.from_boundaries([cuts(shape[0], size), *([0, n] for n in shape[1:])])


def grid_tiling(shape: tuple[int, ...], grid: tuple[int, ...]) -> Tiling:
    return Tiling.from_boundaries([cuts(n, g) for n, g in zip(shape, grid, strict=True)])


def positions(tiling: Tiling) -> list[tuple[int, ...]]:
    return list(itertools.product(*(range(g) for g in tiling.grid)))


def same(where: str, got: Any, want: np.ndarray, exact: bool = True) -> None:
    expect(isinstance(got, np.ndarray), f"{where}: a NumPy array, got {type(got)}")
    expect(got.shape == want.shape, f"{where}: shape {got.shape} != {want.shape}")
    expect(got.dtype == want.dtype, f"{where}: dtype {got.dtype} != {want.dtype}")
    if exact:
        expect(np.array_equal(got, want, equal_nan=want.dtype.kind in "fc"), f"{where}: values")
    else:
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=where)


def check(
    where: str,
    x: Any,
    want: np.ndarray | None,
    tiling: Tiling | None = None,
    *,
    dtype: Any = None,
    exact: bool = True,
    runs: bool = True,
    whole: bool | None = None,
) -> None:
    """``x`` holds ``want``: global attributes, ownership, this rank's tiles, maybe the whole.

    Each rank checks the tiles it owns against ``want``: together the ranks check every
    tile once (:func:`owners_agree`, run after every case, checks that they agree on who owns
    what). ``to_numpy`` costs messages: it is compared when ``whole`` is true, never when
    false, and for every third array when ``None`` (the same arrays on every rank).
    ``want=None`` (``empty``): values are not checked, only shapes and dtypes (``dtype``).
    ``runs``: gpupart chose the owners (not a producer), so they must be the documented runs
    of tiles in C order, as balanced as can be.
    """
    expect(isinstance(x, gpupart.DistArray), f"{where}: a DistArray, got {type(x)}")
    dt = np.dtype(dtype) if want is None else want.dtype
    shape = x.shape if want is None else want.shape
    expect(x.shape == shape and x.ndim == len(shape), f"{where}: shape {x.shape} != {shape}")
    expect(x.size == int(np.prod(shape)), f"{where}: size {x.size}")
    expect(x.dtype == dt, f"{where}: dtype {x.dtype} != {dt}")
    if tiling is not None:
        expect(x.tiling == tiling, f"{where}: tiling {x.tiling!r} != {tiling!r}")
    every = positions(x.tiling)
    owners = [x.owner_of(pos) for pos in every]
    expect(all(0 <= o < size for o in owners), f"{where}: owners {owners}")
    _OWNERS.append((where, x.shape, owners))
    if runs:
        counts = [owners.count(r) for r in range(size)]
        expect(owners == sorted(owners), f"{where}: owners not in runs of C order: {owners}")
        expect(max(counts) - min(counts) <= 1, f"{where}: unbalanced owners {owners}")
    mine = sorted(x.local_tiles)
    expect(
        mine == sorted(p for p, o in zip(every, owners, strict=True) if o == rank),
        f"{where}: local tiles {mine} are not the ones owned here ({owners})",
    )
    for pos, tile in x.local_tiles.items():
        expect(isinstance(tile, np.ndarray), f"{where}: tile {pos} is a {type(tile)}")
        expect(tile.shape == x.tiling.tile_shape(pos), f"{where}: tile {pos} shape {tile.shape}")
        expect(tile.dtype == dt, f"{where}: tile {pos} dtype {tile.dtype}")
        if want is not None:
            same(f"{where}: tile {pos}", tile, want[(*x.tiling.slices(pos), ...)], exact)
    if whole is None:
        whole = next(_CHECKS) % 3 == 0
    if not whole:
        return
    got = x.to_numpy()
    if want is None:
        expect(got.shape == shape and got.dtype == dt, f"{where}: to_numpy {got.shape}")
    else:
        same(f"{where}: to_numpy", got, want, exact)


_CHECKS = itertools.count()
_OWNERS: list[tuple[str, tuple[int, ...], list[int]]] = []


def owners_agree() -> None:
    """Every rank saw the same shapes and owners in the checks of a case (then forgotten)."""
    seen = digest(np.frombuffer(repr(_OWNERS).encode(), np.uint8))
    everyone = rt.allgather(seen)
    expect(len(set(everyone)) == 1, f"ranks disagree on the arrays' shapes or owners: {everyone}")
    _OWNERS.clear()


def in_step() -> None:
    """Every rank is at the same collective (after an error that every rank raised)."""
    expect(rt.allgather(rank) == list(range(size)), "ranks out of step after an error")


_TURNS: dict[int, itertools.count] = {}


def turn(options: list[Any]) -> Any:
    """One of ``options``, the next one at each call with as many options (cheap coverage)."""
    counter = _TURNS.setdefault(len(options), itertools.count())
    return options[next(counter) % len(options)]


def digest(a: np.ndarray) -> str:
    return hashlib.sha256(f"{a.dtype.str}{a.shape}".encode() + a.tobytes()).hexdigest()[:20]


SHAPES = [(), (7,), (2, 3), (5, 4), (3, 4, 5), (0,), (0, 3)]


def tilings_for(shape: tuple[int, ...]) -> list[tuple[str, dict[str, Any], Tiling]]:
    """(label, creation keywords, expected tiling): default, tiles=, grid=, a Tiling."""
    nd = len(shape)
    block = (2, 3, 2)[:nd]
    grid = (3, 2, 2)[:nd]
    irregular = Tiling.from_boundaries(
        [[0, 0, n] if d == 0 else [0, min(1, n), n] for d, n in enumerate(shape)]
    )
    return [
        ("default", {}, default_tiling(shape)),
        ("tiles", {"tiles": block}, Tiling.regular(shape, block)),
        ("grid", {"grid": grid}, grid_tiling(shape, grid)),
        ("Tiling", {"tiles": irregular}, irregular),
    ]


# == creation =================================================================================


@case("create")
def zeros_ones_full_empty_every_shape_and_tiling() -> dict:
    """Each shape under each tiling, the four functions taking turns."""
    makers = [
        ("zeros", lambda shape, **kw: gpupart.zeros(shape, **kw)),
        ("ones", lambda shape, **kw: gpupart.ones(shape, np.int32, **kw)),
        ("full", lambda shape, **kw: gpupart.full(shape, 2.5, **kw)),
        ("empty", lambda shape, **kw: gpupart.empty(shape, **kw)),
    ]
    wants = {
        "zeros": lambda shape: np.zeros(shape),
        "ones": lambda shape: np.ones(shape, np.int32),
        "full": lambda shape: np.full(shape, 2.5),
        "empty": lambda shape: None,
    }
    made = []
    turn = itertools.cycle(range(len(makers)))
    for shape in SHAPES:
        for label, kw, tiling in tilings_for(shape):
            name, make = makers[next(turn)]
            x = make(shape, **kw)
            edge = shape in ((), (2, 3), (0, 3)) or None  # to_numpy of each edge case
            check(
                f"{name} {shape} {label}",
                x,
                wants[name](shape),
                tiling,
                dtype=np.float64,
                whole=edge,
            )
            made.append(name)
    return {"made": sorted(set(made))}


@case("create")
def creation_dtypes() -> None:
    shape = (5, 4)
    dtypes = (np.float32, np.int8, np.uint8, np.int64, np.bool_, np.complex128, np.uint16)
    for i, dt in enumerate(dtypes):
        if i % 4 == 0:
            check(f"zeros {dt}", gpupart.zeros(shape, dt), np.zeros(shape, dt))
        elif i % 4 == 1:
            check(f"ones {dt}", gpupart.ones(shape, dt, grid=(2, 2)), np.ones(shape, dt))
        elif i % 4 == 2:
            check(f"empty {dt}", gpupart.empty(shape, dt, tiles=(3, 3)), None, dtype=dt)
        else:
            check(f"full {dt}", gpupart.full(shape, 1, dt), np.full(shape, 1, dt))
    # full infers its dtype like NumPy
    for value in (7, 2.5, True, 1 + 2j, np.float32(1.5), np.int16(-3)):
        check(f"full {value!r}", gpupart.full((3, 2), value), np.full((3, 2), value))


@case("create")
def arange_like_numpy() -> None:
    for args, kw in [
        ((10,), {}),
        ((3, 17, 4), {}),
        ((10, 0, -3), {}),
        ((0,), {}),
        ((5, 2), {}),
        ((0.5, 4.0, 0.25), {}),
        ((2, 9), {"dtype": np.float32}),
        ((-3, 3), {"dtype": np.int8}),
        ((-7, 30, 2), {"dtype": np.int32}),
    ]:
        want = np.arange(*args, **kw)
        n = len(want)
        others = [
            ("tiles", {"tiles": 3}, Tiling.regular((n,), (3,))),
            ("grid", {"grid": (4,)}, grid_tiling((n,), (4,))),
            ("Tiling", {"tiles": Tiling.from_boundaries([[0, 0, min(2, n), n]])}, None),
        ]
        for label, tkw, tiling in [("default", {}, default_tiling((n,))), turn(others)]:
            x = gpupart.arange(*args, **kw, **tkw)
            check(f"arange{args} {kw} {label}", x, want, tiling)
    # a step that is not exact in binary: the same length, values to rounding
    check(
        "arange(0.1, 2.0, 0.3)",
        gpupart.arange(0.1, 2.0, 0.3, grid=(3,)),
        np.arange(0.1, 2.0, 0.3),
        exact=False,
    )
    raises(ValueError, lambda: gpupart.arange(0, 5, 0), "step")
    in_step()


@case("create")
def linspace_like_numpy() -> None:
    for args, kw in [
        ((0, 1, 11), {}),
        ((2, 3, 1), {}),
        ((2, 3, 0), {}),
        ((0, 10, 5), {"endpoint": False}),
        ((1, 1, 4), {}),
        ((3, -2, 6), {"dtype": np.float32}),
        ((-5, 5, 7), {"dtype": np.int64}),  # NumPy >= 2 rounds integers towards -inf
        ((-1, 8, 10), {"dtype": np.int16}),
    ]:
        want = np.linspace(*args, **kw)
        others = [("tiles", {"tiles": 4}), ("grid", {"grid": (3,)})]
        for label, tkw in [("default", {}), turn(others)]:
            check(f"linspace{args} {kw} {label}", gpupart.linspace(*args, **kw, **tkw), want)
    raises(ValueError, lambda: gpupart.linspace(0, 1, -1), "num")
    in_step()


@case("create")
def eye_like_numpy() -> None:
    for args, kw in [
        ((5,), {}),
        ((5, 7), {"k": 2}),
        ((6, 4), {"k": -1}),
        ((4, 4), {"k": 5}),
        ((3, 5), {"dtype": np.int32}),
        ((4,), {"dtype": np.bool_, "k": 1}),
        ((0, 3), {}),
    ]:
        want = np.eye(*args, **kw)
        default, *others = tilings_for(want.shape)
        for label, tkw, tiling in [default, turn(others)]:
            check(f"eye{args} {kw} {label}", gpupart.eye(*args, **kw, **tkw), want, tiling)


# -- asarray --------------------------------------------------------------------------------

A2 = np.arange(60, dtype=np.int64).reshape(5, 12) * 3 - 7
A3 = np.arange(3 * 4 * 5, dtype=np.float64).reshape(3, 4, 5) / 8


@case("create")
def asarray_same_array_everywhere() -> None:
    for label, kw, tiling in tilings_for(A2.shape):
        check(f"asarray 2-d {label}", gpupart.asarray(A2, **kw), A2, tiling)
    for label, kw, tiling in tilings_for(A3.shape):
        check(f"asarray 3-d {label}", gpupart.asarray(A3, **kw), A3, tiling)
    for label, kw, tiling in tilings_for((2, 3)):
        check(f"asarray (2, 3) {label}", gpupart.asarray(A2[:2, :3], **kw), A2[:2, :3], tiling)
    check("asarray list", gpupart.asarray([1, 2, 3, 4]), np.array([1, 2, 3, 4]))
    check("asarray dtype=", gpupart.asarray(A2, np.float32), A2.astype(np.float32))
    check("asarray bool", gpupart.asarray(A2 % 3 == 0, grid=(2, 2)), A2 % 3 == 0)
    check("asarray complex", gpupart.asarray(A3 + 1j), A3 + 1j)
    check("asarray empty", gpupart.asarray(np.zeros((0, 4), np.int8)), np.zeros((0, 4), np.int8))


@case("create")
def asarray_zero_d() -> None:
    for value in (np.float32(3.5), np.array(-2, np.int16), 7):
        want = np.asarray(value)
        check(f"asarray 0-d {value!r}", gpupart.asarray(value), want, default_tiling(()))
        for root in sorted({0, last}):
            got = gpupart.asarray(value if rank == root else None, root=root)
            check(f"asarray 0-d {value!r} root={root}", got, want, default_tiling(()))


@case("create")
def asarray_from_root() -> None:
    for root in range(size):
        for label, kw, tiling in tilings_for(A2.shape)[root % 2 :: 2]:
            x = gpupart.asarray(A2 if rank == root else None, root=root, **kw)
            check(f"asarray root={root} {label}", x, A2, tiling)
    # only the root's object counts: the others' arrays are ignored
    decoy = np.full((2, 2), rank, np.uint8)
    x = gpupart.asarray(A3 if rank == last else decoy, root=last, grid=(2, 2, 1))
    check("asarray root=last decoys", x, A3, grid_tiling(A3.shape, (2, 2, 1)))
    x = gpupart.asarray(A2 if rank == 0 else None, np.float32, root=0)
    check("asarray root=0 dtype=", x, A2.astype(np.float32))
    x = gpupart.asarray(A2[:2, :3] if rank == last else None, root=last)
    check("asarray root=last (2, 3)", x, A2[:2, :3], default_tiling((2, 3)), whole=True)
    for bad in (size, -1, True, 0.0):
        raises(ValueError, lambda bad=bad: gpupart.asarray(A2, root=bad), "root")
    in_step()


@case("create", min_size=2)
def asarray_mismatched_arrays_fail_everywhere() -> dict:
    odd_shape = A2[:-1] if rank == last else A2
    err = raises(gpupart.CollectiveError, lambda: gpupart.asarray(odd_shape), f"rank {last}")
    expect("(4, 12)" in str(err), f"the odd shape is named: {err}")
    in_step()
    odd_dtype = A2.astype(np.int32) if rank == last else A2
    err2 = raises(gpupart.CollectiveError, lambda: gpupart.asarray(odd_dtype), "int32")
    in_step()
    return {"shape_message": str(err), "dtype_message": str(err2)}


@case("create")
def asarray_of_a_distarray() -> None:
    x = gpupart.asarray(A2, grid=(2, 3))
    expect(gpupart.asarray(x) is x, "asarray(DistArray) is the array itself")
    expect(gpupart.from_partitioned(x) is x, "from_partitioned(DistArray) is the array itself")
    check("asarray(x, dtype)", gpupart.asarray(x, np.float64), A2.astype(np.float64), x.tiling)
    check(
        "asarray(x, tiles)", gpupart.asarray(x, tiles=(2, 5)), A2, Tiling.regular((5, 12), (2, 5))
    )
    check("asarray(x, grid)", gpupart.asarray(x, grid=(1, 4)), A2, grid_tiling((5, 12), (1, 4)))
    check("x after", x, A2, grid_tiling((5, 12), (2, 3)))


@case("create")
def tiling_arguments_are_checked() -> None:
    raises(ValueError, lambda: gpupart.zeros((4, 4), tiles=(2, 2), grid=(2, 2)), "at most one")
    raises(ValueError, lambda: gpupart.zeros((4, 4), tiles=(0, 2)), "tiles")
    raises(ValueError, lambda: gpupart.zeros((4, 4), tiles=(2, 2, 2)), "tiles")
    raises(TypeError, lambda: gpupart.zeros((4, 4), tiles=(1.5, 2)), "tiles")
    raises(ValueError, lambda: gpupart.zeros((4, 4), grid=(0, 1)), "grid")
    raises(ValueError, lambda: gpupart.zeros((4, 4), grid=(2,)), "grid")
    raises(ValueError, lambda: gpupart.zeros((4, 4), tiles=Tiling.regular((4, 5), (2, 2))), "tiles")
    raises(ValueError, lambda: gpupart.zeros((-1, 4)), "shape")
    raises(TypeError, lambda: gpupart.zeros("4"), "shape")
    raises(ValueError, lambda: gpupart.asarray(A2, tiles=(2, 2), grid=(2, 2)), "at most one")
    in_step()
    # an int for tiles= is a block length along the first axis
    check(
        "tiles=int", gpupart.ones((7, 3), tiles=2), np.ones((7, 3)), Tiling.regular((7, 3), (2, 3))
    )


# -- from_local -----------------------------------------------------------------------------


def piece(r: int, shape: tuple[int, ...], dtype: Any = np.float64) -> np.ndarray:
    return (np.arange(int(np.prod(shape))).reshape(shape) + 1000 * r).astype(dtype)


def check_local(where: str, pieces: list[np.ndarray], axis: int) -> None:
    mine = pieces[rank]
    x = gpupart.from_local(mine, axis=axis)
    ax = axis % mine.ndim
    want = np.concatenate(pieces, axis=ax)
    bounds = [[0, n] for n in want.shape]
    bounds[ax] = [0, *itertools.accumulate(p.shape[ax] for p in pieces)]
    check(where, x, want, Tiling.from_boundaries(bounds))
    here = tuple(rank if d == ax else 0 for d in range(mine.ndim))
    expect(list(x.local_tiles) == [here], f"{where}: local tiles {list(x.local_tiles)}")
    expect(x.local_tiles[here] is mine, f"{where}: the piece is kept without a copy")
    for r in range(size):
        pos = tuple(r if d == ax else 0 for d in range(mine.ndim))
        expect(x.owner_of(pos) == r, f"{where}: piece {r} owned by {x.owner_of(pos)}")


@case("create")
def from_local_joins_pieces() -> None:
    check_local("1-d uneven", [piece(r, (r + 1,)) for r in range(size)], 0)
    lengths = [3, 0, 2, 1][:size] if size > 1 else [0]
    check_local("2-d with an empty piece", [piece(r, (n, 4)) for r, n in enumerate(lengths)], 0)
    check_local("axis=1", [piece(r, (3, r + 2), np.int32) for r in range(size)], 1)
    check_local("axis=-1", [piece(r, (2, 2 * r + 1)) for r in range(size)], -1)
    check_local("3-d axis=1", [piece(r, (2, r, 3), np.uint8) for r in range(size)], 1)
    check_local("all empty", [piece(r, (0,)) for r in range(size)], 0)
    check_local("list piece", [piece(r, (2,), np.int64) for r in range(size)], 0)


@case("create")
def from_local_bad_axis_fails_everywhere() -> None:
    for shape, axis in [((3,), 1), ((3, 2), 2), ((3, 2), -3)]:
        raises(ValueError, lambda s=shape, a=axis: gpupart.from_local(np.ones(s), axis=a), "axis")
        in_step()
    raises(ValueError, lambda: gpupart.from_local(np.float64(rank)), "axis")
    in_step()


@case("create", min_size=2)
def from_local_wrong_piece_fails_everywhere() -> dict:
    messages = {}
    for label, odd, needle in [
        ("width", np.ones((2, 5)), "(2, 5)"),
        ("dtype", np.ones((2, 4), np.float32), "float32"),
        ("ndim", np.ones(8), "(8,)"),
    ]:
        mine = odd if rank == last else np.ones((rank + 1, 4))
        err = raises(gpupart.CollectiveError, lambda m=mine: gpupart.from_local(m), f"rank {last}")
        expect(needle in str(err), f"{label}: {err} names {needle}")
        messages[label] = str(err)
        in_step()
    # the same along axis 1: a piece of another height
    mine = np.ones((3, 2)) if rank == last else np.ones((2, 2))
    raises(gpupart.CollectiveError, lambda: gpupart.from_local(mine, axis=1), f"rank {last}")
    in_step()
    return {"messages": messages}


# == random ===================================================================================

RANDOM_CASES: list[tuple[str, Callable[..., Any], tuple[int, ...], list[dict[str, Any]]]] = [
    ("random", lambda g, **kw: g.random((1000,), **kw), (1000,), [{"tiles": 77}, {"grid": (5,)}]),
    (
        "random",
        lambda g, **kw: g.random((7, 9), **kw),
        (7, 9),
        [
            {"grid": (3, 2)},
            {"tiles": (2, 4)},
            {"tiles": Tiling.from_boundaries([[0, 0, 6, 7], [0, 9]])},
        ],
    ),
    (
        "random",
        lambda g, **kw: g.random((300, 500), **kw),  # 150,000 elements: three chunks
        (300, 500),
        [{"grid": (3, 2)}, {"tiles": (64, 128)}, {"grid": (1, 7)}],
    ),
    ("random", lambda g, **kw: g.random((3, 4, 5), **kw), (3, 4, 5), [{"tiles": (1, 3, 2)}]),
    ("random", lambda g, **kw: g.random((), **kw), (), [{"grid": ()}]),
    ("random", lambda g, **kw: g.random((2, 3), **kw), (2, 3), [{"grid": (1, 3)}]),
    ("random", lambda g, **kw: g.random((0, 4), **kw), (0, 4), [{"tiles": (2, 2)}]),
    ("random32", lambda g, **kw: g.random((50,), np.float32, **kw), (50,), [{"tiles": 7}]),
    ("normal", lambda g, **kw: g.normal(2.0, 3.0, (40, 6), **kw), (40, 6), [{"grid": (2, 2)}]),
    ("standard", lambda g, **kw: g.standard_normal((30, 5), **kw), (30, 5), [{"tiles": (7, 2)}]),
    ("uniform", lambda g, **kw: g.uniform(-2.0, 5.0, (33,), **kw), (33,), [{"grid": (4,)}]),
    (
        "integers",
        lambda g, **kw: g.integers(-3, 4, (25, 8), **kw),
        (25, 8),
        [{"tiles": (4, 4)}, {"grid": (5, 3)}],
    ),
    ("integers", lambda g, **kw: g.integers(5, shape=(100,), **kw), (100,), [{"tiles": 9}]),
    (
        "integers_u8",
        lambda g, **kw: g.integers(0, 256, (64,), np.uint8, **kw),
        (64,),
        [{"grid": (4,)}],
    ),
]


@case("create")
def random_same_values_under_every_tiling() -> dict:
    """Every tiling gives the default tiling's values; the test compares those across jobs.

    The default tiling's whole array is fetched once (``to_numpy``); every other tiling (and a
    second draw) is checked tile by tile against it, here, without messages.
    """
    draws = []
    for index, (kind, draw, shape, variants) in enumerate(RANDOM_CASES):
        seed = 1000 * index + 7
        key = f"{kind} seed={seed} {shape}"
        first = draw(gpupart.random.default_rng(seed)).to_numpy()
        expect(first.shape == shape, f"{key}: shape {first.shape}")
        for kw in [{}, *variants]:
            x = draw(gpupart.random.default_rng(seed), **kw)
            tiling = kw["tiles"] if isinstance(kw.get("tiles"), Tiling) else None
            if not kw:
                tiling = default_tiling(shape)
            elif "grid" in kw:
                tiling = grid_tiling(shape, kw["grid"])
            check(f"{key} {kw}", x, first, tiling, whole=False)
        other = draw(gpupart.random.default_rng(seed + 1))
        differs = any(
            not np.array_equal(tile, first[(*other.tiling.slices(pos), ...)])
            for pos, tile in other.local_tiles.items()
        )
        if first.size > 1:
            expect(any(rt.allgather(differs)), f"{key}: another seed, the same values")
        draws.append({"key": key, "digest": digest(first), "head": first.reshape(-1)[:3].tolist()})
    return {"draws": draws}


@case("create")
def random_follows_its_documented_construction() -> None:
    """Element i is ``default_rng([seed, i // CHUNK])``'s draw number ``i % CHUNK``."""
    chunk = gpupart.random.CHUNK
    n = chunk + 500  # two chunks
    for seed in (0, 99):
        whole = gpupart.random.default_rng(seed).random((n,)).to_numpy()
        want = np.concatenate([np.random.default_rng([seed, c]).random(chunk) for c in range(2)])[
            :n
        ]
        same(f"seed {seed}", whole, want)
    got = gpupart.random.default_rng(5).integers(10, 20, (7,)).to_numpy()
    same("integers", got, np.random.default_rng([5, 0]).integers(10, 20, chunk)[:7])


@case("create")
def random_statistics() -> dict:
    g = gpupart.random.default_rng(7)
    u = g.random((200_000,), grid=(size + 1,)).to_numpy()
    expect(u.dtype == np.float64 and u.min() >= 0.0 and u.max() < 1.0, f"range {u.min()} {u.max()}")
    expect(abs(u.mean() - 0.5) < 0.01, f"uniform mean {u.mean()}")
    expect(abs(u.var() - 1 / 12) < 0.005, f"uniform variance {u.var()}")
    hist = np.histogram(u, bins=10, range=(0, 1))[0]
    expect(hist.min() > 19_000 and hist.max() < 21_000, f"uniform histogram {hist}")
    z = g.normal(2.0, 3.0, (200_000,), tiles=30_000).to_numpy()
    expect(abs(z.mean() - 2.0) < 0.05 and abs(z.std() - 3.0) < 0.05, f"normal {z.mean()} {z.std()}")
    s = g.standard_normal((100_000,), grid=(size,)).to_numpy()
    expect(abs(s.mean()) < 0.02 and abs(s.std() - 1.0) < 0.02, f"standard {s.mean()} {s.std()}")
    w = g.uniform(-2.0, 5.0, (100_000,), tiles=9_999).to_numpy()
    expect(w.min() >= -2.0 and w.max() < 5.0 and abs(w.mean() - 1.5) < 0.05, f"uniform {w.mean()}")
    z32 = g.normal(shape=(1000,), dtype=np.float32).to_numpy()
    expect(z32.dtype == np.float32 and abs(z32.mean()) < 0.2, f"float32 normal {z32.mean()}")
    k = g.integers(-3, 4, (70_000,), grid=(3,)).to_numpy()
    expect(k.dtype == np.int64 and set(np.unique(k).tolist()) == set(range(-3, 4)), "integers")
    k5 = g.integers(5, shape=(1000,)).to_numpy()
    expect(set(np.unique(k5).tolist()) == set(range(5)), f"integers(5): {np.unique(k5)}")
    k8 = g.integers(250, 256, (1000,), np.uint8).to_numpy()
    expect(k8.dtype == np.uint8 and set(np.unique(k8).tolist()) == set(range(250, 256)), "uint8")
    return {"mean": float(u.mean())}


@case("create")
def random_arguments_are_checked() -> None:
    for bad in (-1, 1.5, True, "1"):
        raises(ValueError, lambda bad=bad: gpupart.random.default_rng(bad), "seed")
    g = gpupart.random.default_rng(1)
    raises(ValueError, lambda: g.integers(5, 5, (3,)), "high")
    raises(ValueError, lambda: g.integers(0, shape=(3,)), "high")
    raises(ValueError, lambda: g.random((-2,)), "shape")
    in_step()


# == the array's core operations =============================================================

B = np.arange(77, dtype=np.float64).reshape(11, 7) * 1.5 - 20
EMPTY_TILES = Tiling.from_boundaries([[0, 0, 5, 11, 11], [0, 2, 7]])
TILINGS_B: list[tuple[str, dict[str, Any], Tiling]] = [
    ("default", {}, default_tiling(B.shape)),
    ("tiles (3, 2)", {"tiles": (3, 2)}, Tiling.regular(B.shape, (3, 2))),
    ("grid (1, 3)", {"grid": (1, 3)}, grid_tiling(B.shape, (1, 3))),
    ("grid (4, 1)", {"grid": (4, 1)}, grid_tiling(B.shape, (4, 1))),
    ("empty tiles", {"tiles": EMPTY_TILES}, EMPTY_TILES),
    ("one tile", {"tiles": (11, 7)}, Tiling.regular(B.shape, (11, 7))),
]


@case("array")
def repartition_through_many_tilings() -> dict:
    """A chain of repartitions: every tiling in TILINGS_B is a source and a target twice or
    more (uneven, columns, rows, empty tiles, one tile on one rank), and back to the first."""
    tilings = {label: (kw, tiling) for label, kw, tiling in TILINGS_B}
    chain = [
        "default", "tiles (3, 2)", "grid (1, 3)", "empty tiles", "one tile", "grid (4, 1)",
        "tiles (3, 2)", "one tile", "default", "empty tiles", "grid (1, 3)", "grid (4, 1)",
        "default",
    ]  # fmt: skip
    x0 = gpupart.asarray(B, **tilings[chain[0]][0])
    x = x0
    for source, target in itertools.pairwise(chain):
        kw, tiling = tilings[target]
        x = x.repartition(**kw)
        check(f"{source} -> {target}", x, B, tiling)
    expect(x.tiling == x0.tiling, "back to the first tiling")
    check("the first array, untouched", x0, B, tilings[chain[0]][1], whole=True)
    y = gpupart.asarray(B, grid=(5, 4))  # more tiles than ranks, in runs
    check("grid (5, 4) -> grid (2, 3)", y.repartition(grid=(2, 3)), B, grid_tiling(B.shape, (2, 3)))
    return {"steps": len(chain) - 1}


@case("array")
def repartition_other_shapes() -> None:
    a1 = np.arange(13, dtype=np.int32)
    x = gpupart.asarray(a1, tiles=4)
    for kw in ({}, {"grid": (5,)}, {"tiles": 13}, {"tiles": 1}, {"grid": (size + 3,)}):
        check(f"1-d {kw}", x.repartition(**kw), a1)
    x3 = gpupart.asarray(A3)
    for kw in ({"tiles": (2, 3, 2)}, {"grid": (1, 2, 3)}, {"grid": (3, 1, 1)}):
        check(f"3-d {kw}", x3.repartition(**kw), A3)
    x0 = gpupart.asarray(np.array(4.5))
    check("0-d", x0.repartition(grid=()), np.array(4.5))
    x23 = gpupart.asarray(A2[:2, :3])
    check("(2, 3) -> grid (1, 3)", x23.repartition(grid=(1, 3)), A2[:2, :3])
    xe = gpupart.zeros((0, 5), np.int16)
    check("(0, 5)", xe.repartition(tiles=(2, 2)), np.zeros((0, 5), np.int16))


@case("array")
def repartition_arguments() -> None:
    x = gpupart.asarray(B, grid=(2, 2))
    expect(x.repartition(grid=(2, 2)) is x, "the same layout: the array itself")
    expect(x.repartition(x.tiling) is x, "the same Tiling: the array itself")
    raises(ValueError, lambda: x.repartition(tiles=(2, 2), grid=(2, 2)), "at most one")
    raises(ValueError, lambda: x.repartition(grid=(2,)), "grid")
    raises(ValueError, lambda: x.repartition(Tiling.regular((11, 8), (2, 2))), "tiles")
    in_step()
    check("after", x, B)


@case("array")
def rebalance_uneven_pieces() -> None:
    lengths = [2 * r + 1 for r in range(size)]
    lengths[0] = 0 if size > 1 else lengths[0]
    pieces = [piece(r, (n, 3)) for r, n in enumerate(lengths)]
    x = gpupart.from_local(pieces[rank])
    want = np.concatenate(pieces)
    y = x.rebalance()
    check("rebalance", y, want, default_tiling(want.shape))
    expect(
        [y.tiling.tile_shape((r, 0))[0] for r in range(size)]
        == np.diff(cuts(len(want), size)).tolist(),
        "even rows",
    )
    check("rebalance 1-d", gpupart.asarray(B[0], tiles=1).rebalance(), B[0], default_tiling((7,)))
    z = gpupart.asarray(B, grid=(1, 1))
    check("rebalance one tile", z.rebalance(), B, default_tiling(B.shape))


@case("array")
def to_numpy_and_gather() -> None:
    for label, kw, _ in TILINGS_B:
        x = gpupart.asarray(B, **kw)
        for root in range(size):
            got = x.gather(root)
            if rank == root:
                same(f"gather {label} root={root}", got, B)
            else:
                expect(got is None, f"gather {label} root={root}: None off the root, got {got!r}")
        same(f"to_numpy {label}", x.to_numpy(), B)
    got0 = gpupart.zeros(()).gather(last)
    expect(got0.shape == () if rank == last else got0 is None, f"0-d gather: {got0!r}")
    for bad in (size, -1, True, 1.0, "0", None):
        raises(ValueError, lambda bad=bad: x.gather(bad), "root")
    in_step()
    got = x.gather()  # root 0 by default
    expect(got is None if rank else np.array_equal(got, B), f"gather(): {got!r}")


@case("array")
def fetch_regions_any_boxes() -> None:
    x = gpupart.asarray(B, tiles=(3, 2))
    own = list(x.local_tiles)
    boxes = [((0, 0), (11, 7)), ((2, 1), (9, 6)), ((5, 5), (5, 7)), ((10, 0), (11, 1))]
    boxes = boxes[: rank + 1]  # a different number of boxes per rank
    if own:  # exactly one of this rank's tiles
        start = x.tiling.start(own[0])
        shape = x.tiling.tile_shape(own[0])
        boxes.append((start, tuple(s + n for s, n in zip(start, shape, strict=True))))
    got = x.fetch_regions(boxes)
    expect(len(got) == len(boxes), "one array per box")
    for (lo, hi), g in zip(boxes, got, strict=True):
        same(f"box {lo} {hi}", g, B[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))])
    if own:
        expect(got[-1] is x.local_tiles[own[0]], "a box that is a local tile is that tile")
    expect(x.fetch_regions([]) == [], "no boxes")


@case("array")
def handles_published_once() -> None:
    x = gpupart.asarray(B, grid=(3, 2))
    table = x.handles()
    expect(sorted(table) == positions(x.tiling), "a handle for every tile")
    for pos, h in table.items():
        expect(isinstance(h, gpupart.Handle) and h.owner == x.owner_of(pos), f"handle {pos}")
        expect(tuple(h.shape) == x.tiling.tile_shape(pos), f"handle {pos} shape")
        expect(np.dtype(h.dtype) == x.dtype, f"handle {pos} dtype")
    ids = {pos: (h.owner, h.tile_id) for pos, h in table.items()}
    expect(all(part == ids for part in rt.allgather(ids)), "every rank has the same handles")
    expect({p: (h.owner, h.tile_id) for p, h in x.handles().items()} == ids, "cached")


@case("array")
def python_protocols() -> None:
    x = gpupart.asarray(B, grid=(2, 3))
    expect(len(x) == 11, f"len {len(x)}")
    expect(len(gpupart.arange(4)) == 4, "len 1-d")
    raises(TypeError, lambda: len(gpupart.zeros(())), "0-d")
    text = repr(x)
    for needle in ("shape=(11, 7)", "dtype=float64", "grid=(2, 3)", f"rank {rank}"):
        expect(needle in text, f"repr {text!r} lacks {needle!r}")
    expect(f"holds {len(x.local_tiles)} tile" in text, f"repr {text!r} tile count")
    raises(TypeError, lambda: np.asarray(x), "to_numpy")
    raises(TypeError, lambda: np.array(x), "to_numpy")
    tiles = x.local_tiles
    for pos in list(tiles)[:1]:

        def overwrite(pos: tuple[int, ...] = pos) -> None:
            tiles[pos] = np.zeros(1)  # type: ignore[index]

        raises(TypeError, overwrite)
    expect(x.device == "kDLCPU" and x.xp is np and x.runtime is rt, "device, xp, runtime")
    in_step()


@case("array")
def dlpack_of_one_tile() -> None:
    one = gpupart.asarray(B, grid=(1, 1))
    if rank == one.owner_of((0, 0)):
        view = np.from_dlpack(one)
        same("from_dlpack", view, B)
        expect(np.shares_memory(view, one.local_tiles[(0, 0)]), "no copy")
    else:
        raises(TypeError, lambda: np.from_dlpack(one), "to_numpy")
    many = gpupart.asarray(B, grid=(2, 1))
    raises(TypeError, lambda: np.from_dlpack(many), "to_numpy")
    raises(TypeError, lambda: many.__dlpack__(), "to_numpy")
    in_step()


# == __partitioned__ ==========================================================================


def out_arrays() -> list[tuple[str, Any, np.ndarray]]:
    return [
        ("2-d grid (2, 3)", gpupart.asarray(A2, grid=(2, 3)), A2),
        ("1-d default", gpupart.arange(10), np.arange(10)),
        ("(2, 3)", gpupart.zeros((2, 3), np.int8), np.zeros((2, 3), np.int8)),
        ("3-d tiles", gpupart.asarray(A3, tiles=(2, 2, 2)), A3),
        ("0-d", gpupart.full((), 3.25), np.array(3.25)),
        ("(0, 3)", gpupart.ones((0, 3)), np.ones((0, 3))),
    ]


@case("array")
def partitioned_out() -> None:
    peers = rt.peers
    for label, x, want in out_arrays():
        p = x.__partitioned__
        view = validate(p, strict=True)
        expect(view.shape == x.shape and tuple(p["shape"]) == x.shape, f"{label}: shape")
        expect(tuple(p["partition_tiling"]) == x.tiling.grid, f"{label}: partition_tiling")
        expect(view.layout == x.tiling, f"{label}: partitions tile as x.tiling")
        expect(p["dtype"] == x.dtype.str and np.dtype(p["dtype"]) == x.dtype, f"{label}: dtype")
        owned = [pos for pos in positions(x.tiling) if x.owner_of(pos) == rank]
        expect(isinstance(p["locals"], list), f"{label}: locals is a list")
        expect(sorted(p["locals"]) == owned, f"{label}: locals {p['locals']} != {owned}")
        remote = []
        for pos in positions(x.tiling):
            entry = p["partitions"][pos]
            owner = x.owner_of(pos)
            expect(tuple(entry["start"]) == x.tiling.start(pos), f"{label} {pos}: start")
            expect(tuple(entry["shape"]) == x.tiling.tile_shape(pos), f"{label} {pos}: shape")
            (loc,) = entry["location"]
            expect(isinstance(loc, gpupart.Location), f"{label} {pos}: location {loc!r}")
            expect(loc.rank == owner, f"{label} {pos}: location rank {loc.rank} != {owner}")
            expect(
                (loc.ip, loc.pid) == (peers[owner].ip, peers[owner].pid),
                f"{label} {pos}: location {loc} is not rank {owner}'s {peers[owner]}",
            )
            expect(loc[0] == loc.ip and loc[1] == loc.pid, "the spec's loc[0], loc[1]")
            data = entry["data"]
            if owner == rank:
                expect(data is x.local_tiles[pos], f"{label} {pos}: the tile itself here")
                expect(p["get"](data) is data, f"{label} {pos}: get of a local tile")
            else:
                expect(isinstance(data, gpupart.Handle), f"{label} {pos}: a Handle, {type(data)}")
                expect(data.owner == owner and tuple(data.shape) == x.tiling.tile_shape(pos), "h")
                same(f"{label} get {pos}", p["get"](data), want[(*x.tiling.slices(pos), ...)])
                remote.append(pos)
        # get of a list (mixed tiles and handles) and of a tuple, from any rank
        every = positions(x.tiling)
        for kind in (list, tuple):
            got = p["get"](kind(p["partitions"][pos]["data"] for pos in every))
            expect(len(got) == len(every), f"{label}: one result per handle")
            for pos, g in zip(every, got, strict=True):
                same(f"{label} get[{kind.__name__}] {pos}", g, want[(*x.tiling.slices(pos), ...)])
        again = x.__partitioned__
        for pos in remote:
            a, b = p["partitions"][pos]["data"], again["partitions"][pos]["data"]
            expect((a.owner, a.tile_id) == (b.owner, b.tile_id), "the same handles again")
        rt.barrier()  # every get is over before any rank may drop x


@case("array")
def partitioned_out_pickles() -> dict:
    """The spec: ``__partitioned__`` returns a picklable dict (reported, not raised here)."""
    p = gpupart.asarray(A2, grid=(2, 2)).__partitioned__
    try:
        pickle.dumps(p)
    except Exception as exc:
        return {"pickles": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"pickles": True, "error": None}


class Producer:
    """Any object with a ``__partitioned__`` property."""

    def __init__(self, parted: dict) -> None:
        self._parted = parted

    @property
    def __partitioned__(self) -> dict:
        return self._parted


class Future:
    """A Dask future stand-in that records who resolved it."""

    resolved: list[Any] = []

    def __init__(self, key: Any, value: np.ndarray) -> None:
        self.key, self._value = key, value

    def result(self) -> np.ndarray:
        Future.resolved.append(self.key)
        return self._value


class Store:
    """A Ray object store stand-in: ``get`` resolves one reference or a list of them."""

    def __init__(self) -> None:
        self.values: dict[Any, np.ndarray] = {}
        self.calls: list[list[Any]] = []

    def put(self, key: Any, value: np.ndarray) -> tuple[str, Any]:
        self.values[key] = value
        return ("ref", key)

    def get(self, refs: Any) -> Any:
        if isinstance(refs, list):
            self.calls.append([r[1] for r in refs])
            return [self.values[r[1]] for r in refs]
        self.calls.append([refs[1]])
        return self.values[refs[1]]


def dask_gather(futures: Any) -> Any:
    if isinstance(futures, list):
        return [f.result() for f in futures]
    return futures.result()


def spmd_rows(rows: list[int], ncols: int = 4, dtype: Any = np.float64) -> tuple[dict, np.ndarray]:
    """A Heat-style dict: one partition per rank along axis 0, ``location=[rank]``."""
    offs = [0, *itertools.accumulate(rows)]
    whole = piece(0, (offs[-1], ncols), dtype)
    parts = {
        (i, 0): {
            "start": (offs[i], 0),
            "shape": (rows[i], ncols),
            "data": whole[offs[i] : offs[i + 1]].copy() if i == rank else None,
            "location": [i],
            "dtype": "torch.float64",
            "device": "cpu",
        }
        for i in range(size)
    }
    parted = {
        "shape": (offs[-1], ncols),
        "partition_tiling": (size, 1),
        "partitions": parts,
        "locals": [(rank, 0)],
        "get": lambda h: h,
        "dtype": "ht.float64",  # a framework's dtype name: not a NumPy dtype
        "device": "cpu",
    }
    return parted, whole


def owned_by(x: Any) -> list[int]:
    return [x.owner_of(pos) for pos in positions(x.tiling)]


@case("array")
def from_partitioned_gpupart_producer() -> None:
    for label, x, want in out_arrays():
        y = gpupart.from_partitioned(Producer(x.__partitioned__))
        expect(y is not x, "a producer object is adopted as a new array")
        check(f"from gpupart {label}", y, want, x.tiling)
        expect(owned_by(y) == owned_by(x), f"{label}: the same owners")
        for pos, tile in y.local_tiles.items():
            expect(tile is x.local_tiles[pos], f"{label} {pos}: adopted without a copy")
        z = gpupart.asarray(Producer(x.__partitioned__))
        check(f"asarray of a producer {label}", z, want, x.tiling)
        rt.barrier()


@case("array")
def from_partitioned_heat_style() -> None:
    for rows in ([3] * size, [r + 1 for r in range(size)], [0, *([2] * (size - 1))]):
        parted, whole = spmd_rows(rows)
        x = gpupart.from_partitioned(Producer(parted))
        bounds = [[0, *itertools.accumulate(rows)], [0, 4]]
        check(f"heat {rows}", x, whole, Tiling.from_boundaries(bounds))
        expect(owned_by(x) == list(range(size)), f"heat {rows}: owners {owned_by(x)}")
        mine = parted["partitions"][(rank, 0)]["data"]
        expect(x.local_tiles[(rank, 0)] is mine, "the local tensor adopted without a copy")
    # a plain dict works too, and an int32 producer gives an int32 array (no dtype key)
    parted, whole = spmd_rows([2] * size, dtype=np.int32)
    del parted["dtype"]
    check("heat int32", gpupart.from_partitioned(parted), whole)


@case("array")
def from_partitioned_mpi_block_cyclic() -> None:
    """The spec's 8x8 example: a (4, 1) grid of 2-row blocks, block i on rank i % size."""
    peers = rt.peers
    whole = piece(0, (8, 8))
    parts = {
        (i, 0): {
            "start": (2 * i, 0),
            "shape": (2, 8),
            "data": whole[2 * i : 2 * i + 2].copy() if i % size == rank else None,
            "location": [(peers[i % size].ip, peers[i % size].pid)],
        }
        for i in range(4)
    }
    mine = [(i, 0) for i in range(4) if i % size == rank]
    parted = {
        "shape": (8, 8),
        "partition_tiling": (4, 1),
        "partitions": parts,
        "locals": mine,
        "get": lambda h: h,
    }
    validate(parted, strict=True)
    x = gpupart.from_partitioned(parted)
    check("block-cyclic", x, whole, Tiling.regular((8, 8), (2, 8)), runs=False)
    expect(owned_by(x) == [i % size for i in range(4)], f"owners {owned_by(x)}")
    for pos in mine:
        expect(x.local_tiles[pos] is parts[pos]["data"], f"{pos} adopted without a copy")
    out = x.__partitioned__  # and out again: this rank's blocks, the cyclic owners' locations
    validate(out, strict=True)
    expect(sorted(out["locals"]) == sorted(mine), f"locals {out['locals']} != {mine}")
    for i in range(4):
        expect(out["partitions"][(i, 0)]["location"][0].rank == i % size, f"location of {i}")
    rt.barrier()
    check("block-cyclic rebalanced", x.rebalance(), whole, default_tiling((8, 8)), whole=True)


def dask_spec_example() -> tuple[dict, np.ndarray]:
    """8x8 in a 2x2 grid, futures as data, written in the spec's reverse order."""
    whole = piece(0, (8, 8), np.int64)
    alice, bob = ("1.1.1.1", 1234), ("1.1.1.2", 5678, "kDLCUDA:0")
    parts = {}
    for i, j, loc in [(1, 1, bob), (1, 0, alice), (0, 1, bob), (0, 0, alice)]:
        block = whole[4 * i : 4 * i + 4, 4 * j : 4 * j + 4].copy()
        parts[(i, j)] = {
            "start": (4 * i, 4 * j),
            "shape": (4, 4),
            "data": Future((i, j), block),
            "location": [loc],
        }
    return {
        "shape": (8, 8),
        "partition_tiling": (2, 2),
        "partitions": parts,
        "get": dask_gather,
    }, whole


@case("array")
def from_partitioned_dask_style() -> dict:
    parted, whole = dask_spec_example()
    expect("locals" not in parted, "no locals: a Dask-style producer")
    Future.resolved.clear()
    x = gpupart.from_partitioned(Producer(parted))
    check("dask 2x2", x, whole, Tiling.regular((8, 8), (4, 4)))
    owned = sorted(pos for pos in positions(x.tiling) if x.owner_of(pos) == rank)
    expect(sorted(Future.resolved) == owned, f"resolved {Future.resolved}, owns {owned}")
    return {"resolved": sorted(Future.resolved)}


@case("array")
def from_partitioned_ray_style() -> dict:
    """The spec's 1-d example: 64 elements in 4 ObjectRefs, (ip, pid) locations elsewhere."""
    store = Store()
    whole = np.arange(64, dtype=np.float32) * 0.5
    parts = {
        (i,): {
            "start": (16 * i,),
            "shape": (16,),
            "data": store.put(i, whole[16 * i : 16 * i + 16].copy()),
            "location": [(f"1.1.1.{i + 1}", 7000 + i)],
        }
        for i in range(4)
    }
    parted = {"shape": (64,), "partition_tiling": (4,), "partitions": parts, "get": store.get}
    validate(parted, strict=True)
    x = gpupart.from_partitioned(parted)
    check("ray", x, whole, Tiling.regular((64,), (16,)))
    owned = [pos[0] for pos in positions(x.tiling) if x.owner_of(pos) == rank]
    fetched = sorted(k for call in store.calls for k in call)
    expect(fetched == owned, f"rank {rank} resolved {store.calls}, owns {owned}")
    expect(len(store.calls) <= 1, f"one get for all of a rank's refs: {store.calls}")
    return {"calls": store.calls}


@case("array")
def from_partitioned_locations_choose_owners() -> None:
    """Without locals a tile goes to the rank its location names: (ip, pid) or a rank int."""
    peers = rt.peers
    whole = np.arange(12, dtype=np.int16) * 7
    wanted = [(size - 1 - i) % size for i in range(6)]
    for label, loc_of in [
        ("(ip, pid)", lambda r: (peers[r].ip, peers[r].pid)),
        ("rank int", lambda r: r),
        ("Location", lambda r: peers[r]),
    ]:
        store = Store()
        parts = {
            (i,): {
                "start": (2 * i,),
                "shape": (2,),
                "data": store.put(i, whole[2 * i : 2 * i + 2].copy()),
                "location": [loc_of(wanted[i])],
            }
            for i in range(6)
        }
        parted = {"shape": (12,), "partition_tiling": (6,), "partitions": parts, "get": store.get}
        x = gpupart.from_partitioned(parted)
        check(f"owners from {label}", x, whole, Tiling.regular((12,), (2,)), runs=False)
        expect(owned_by(x) == wanted, f"{label}: owners {owned_by(x)} != {wanted}")
        mine = sorted(i for i in range(6) if wanted[i] == rank)
        expect(sorted(k for c in store.calls for k in c) == mine, f"{label}: {store.calls}")


@case("array")
def from_partitioned_modin_style() -> None:
    """No top-level shape, IP-string locations, futures: a lenient consumer repairs the shape."""
    store = Store()
    whole = piece(0, (6, 4))
    rows, cols = [0, 4, 6], [0, 1, 4]
    parts = {
        (i, j): {
            "start": (rows[i], cols[j]),
            "shape": (rows[i + 1] - rows[i], cols[j + 1] - cols[j]),
            "data": store.put((i, j), whole[rows[i] : rows[i + 1], cols[j] : cols[j + 1]].copy()),
            "location": [f"10.0.0.{i * 2 + j}"],
        }
        for i in range(2)
        for j in range(2)
    }
    parted = {"partition_tiling": (2, 2), "partitions": parts, "get": store.get}
    raises(gpupart.PartitionedError, lambda: validate(parted, strict=True), "shape")
    x = gpupart.from_partitioned(Producer(parted))
    check("modin", x, whole, Tiling.from_boundaries([rows, cols]))


@case("array")
def from_partitioned_dtypes() -> None:
    def dict_of(dtypes: list[Any], **extra: Any) -> dict:
        store = Store()
        parts = {
            (i,): {
                "start": (3 * i,),
                "shape": (3,),
                "data": store.put(i, np.arange(3 * i, 3 * i + 3).astype(dt)),
                "location": [f"10.1.0.{i}"],
            }
            for i, dt in enumerate(dtypes)
        }
        n = 3 * len(dtypes)
        return {
            "shape": (n,),
            "partition_tiling": (len(dtypes),),
            "partitions": parts,
            "get": store.get,
            **extra,
        }

    check(
        "int32 data",
        gpupart.from_partitioned(dict_of([np.int32] * 3)),
        np.arange(9, dtype=np.int32),
    )
    check(
        "dtype key wins",
        gpupart.from_partitioned(dict_of([np.int32] * 3, dtype="float32")),
        np.arange(9, dtype=np.float32),
    )
    raises(
        gpupart.PartitionedError,
        lambda: gpupart.from_partitioned(dict_of([np.int32, np.float64])),
        "one dtype",
    )
    in_step()


@case("array")
def from_partitioned_replicated_spmd() -> None:
    """Every rank lists every partition (replicas): each tile is taken once."""
    whole = piece(0, (6, 2))
    parts = {
        (i, 0): {
            "start": (2 * i, 0),
            "shape": (2, 2),
            "data": whole[2 * i : 2 * i + 2].copy(),
            "location": list(range(size)),
        }
        for i in range(3)
    }
    parted = {
        "shape": (6, 2),
        "partition_tiling": (3, 1),
        "partitions": parts,
        "locals": [(i, 0) for i in range(3)],
        "get": lambda h: h,
    }
    x = gpupart.from_partitioned(parted)
    check("replicated", x, whole, Tiling.regular((6, 2), (2, 2)), runs=False)


def bad_dicts() -> dict[str, tuple[dict, type, str]]:
    """Malformed dicts: (dict, the validator's error type, a piece of its message)."""

    def good() -> dict:
        store = Store()
        return {
            "shape": (8,),
            "partition_tiling": (2,),
            "partitions": {
                (i,): {
                    "start": (4 * i,),
                    "shape": (4,),
                    "data": store.put(i, np.ones(4)),
                    "location": [f"10.2.0.{i}"],
                }
                for i in range(2)
            },
            "get": store.get,
        }

    missing = good()
    del missing["partitions"][(1,)]
    overlap = good()
    overlap["partitions"][(1,)]["start"] = (3,)
    overlap["partitions"][(1,)]["shape"] = (5,)
    gap = good()
    gap["partitions"][(1,)]["shape"] = (3,)
    no_get = good()
    no_get["get"] = "gather"
    bad_loc = good()
    bad_loc["partitions"][(0,)]["location"] = []
    unclaimed = good()
    unclaimed["locals"] = []
    unclaimed["get"] = lambda h: h
    return {
        "missing partition": (missing, gpupart.PartitionedError, "partitions[(1,)]"),
        "overlapping starts": (overlap, gpupart.PartitionedError, "overlap"),
        "gap at the end": (gap, gpupart.PartitionedError, "gap"),
        "get not callable": (no_get, gpupart.PartitionedTypeError, "get"),
        "empty location": (bad_loc, gpupart.PartitionedError, "location"),
        "no rank lists a partition": (unclaimed, gpupart.PartitionedError, "locals"),
    }


@case("array")
def from_partitioned_malformed_everywhere() -> dict:
    messages = {}
    for label, (parted, exc, needle) in bad_dicts().items():
        err = raises(exc, lambda p=parted: gpupart.from_partitioned(Producer(p)), needle)
        messages[label] = str(err)
        in_step()
    raises(
        gpupart.PartitionedTypeError, lambda: gpupart.from_partitioned([1, 2]), "__partitioned__"
    )
    in_step()
    return {"messages": messages}


@case("array", min_size=2)
def from_partitioned_malformed_on_one_rank() -> dict:
    """Only the last rank's dict is bad: it raises the validator's error, the others name it."""
    messages = {}
    for label, (bad, exc, needle) in bad_dicts().items():
        if label == "no rank lists a partition":
            continue  # a locals list is per rank: not a per-rank malformation
        parted = bad if rank == last else dask_spec_example()[0]
        if rank == last:
            err = raises(exc, lambda p=parted: gpupart.from_partitioned(p), needle)
        else:
            err = raises(
                gpupart.PartitionedError,
                lambda p=parted: gpupart.from_partitioned(p),
                f"rank {last}",
                needle,
            )
        messages[label] = str(err)
        in_step()
    return {"messages": messages}


# == outcomes the test file judges (a rank may get an error alone; none is left waiting) =====


def outcome(fn: Callable[[], Any]) -> dict:
    """What this rank got from ``fn``: an error's type and message, or a short result."""
    try:
        result = fn()
    except Exception as exc:
        return {"error": type(exc).__name__, "message": str(exc)}
    return {"error": None, "message": str(result)[:200]}


@case("array")
def partitioned_dicts_disagree() -> dict:
    """Each rank's dict is valid, but the last rank's says another global shape."""
    rows = [2] * size
    rows[last] += 1 if rank == last else 0
    parted, _ = spmd_rows(rows)
    return outcome(lambda: gpupart.from_partitioned(parted).shape)


@case("array")
def from_local_axis_disagrees() -> dict:
    """Every rank but the last passes axis=0; the last an axis its piece does not have."""
    return outcome(lambda: gpupart.from_local(np.ones((2, 2)), axis=5 if rank == last else 0))


@case("array")
def to_numpy_result_is_a_copy() -> dict:
    """A caller writes into what ``to_numpy``/``gather`` gave it: the array keeps its values."""
    x = gpupart.asarray(B.copy(), grid=(1, 1))  # one tile, on rank 0
    x.to_numpy()[...] = 0
    got = x.gather(0)
    if got is not None:
        got[...] = 0
    rt.barrier()
    whole = x.to_numpy()
    intact = np.array_equal(whole, B)
    return {"intact": bool(intact), "head": whole.reshape(-1)[:3].tolist()}


# == faults: one case per job, every rank must raise (no hang, no rank left behind) ==========


def fault_partitioned_bad_data_shape() -> Any:
    """The last rank's local data does not have its partition's shape."""
    parted, _ = spmd_rows([2] * size)
    if rank == last:
        parted["partitions"][(rank, 0)]["data"] = np.ones((3, 4))
    return gpupart.from_partitioned(parted)


def fault_partitioned_local_data_none() -> Any:
    """The last rank lists its partition in locals but gives no data."""
    parted, _ = spmd_rows([2] * size)
    if rank == last:
        parted["partitions"][(rank, 0)]["data"] = None
    return gpupart.from_partitioned(parted)


def fault_asarray_root_unsendable() -> Any:
    """The root's object cannot become tiles (object dtype): every rank must hear of it."""
    return gpupart.asarray(np.array([1, None, 3], dtype=object) if rank == 0 else None, root=0)


FAULTS = {name: fn for name, fn in globals().items() if name.startswith("fault_")}


def main() -> None:
    if GROUP in FAULTS:
        try:
            result = FAULTS[GROUP]()
        except Exception as exc:
            emit("fault", case=GROUP, rank=rank, error=type(exc).__name__, message=str(exc))
        else:
            emit("fault", case=GROUP, rank=rank, error=None, message=repr(result)[:200])
        try:  # a program goes on after an error: a rank that raised alone is now out of step
            in_step()
        except Exception as exc:
            emit("after", case=GROUP, rank=rank, error=type(exc).__name__, message=str(exc))
        emit("done", rank=rank, size=size, group=GROUP)
        rt.close()
        return
    todo = [(name, fn) for name, fn, min_size in CASES[GROUP] if size >= min_size]
    emit("plan", group=GROUP, rank=rank, cases=[name for name, _ in todo])
    for name, fn in todo:
        extra = fn() or {}
        owners_agree()
        emit("case", group=GROUP, name=name, rank=rank, **extra)
    emit("done", rank=rank, size=size, group=GROUP)
    rt.close()


main()
