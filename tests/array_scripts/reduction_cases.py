"""Reductions and linalg of gpupart.array_api against NumPy, as one job (any rank count).

Every rank builds the same data (fixed seeds), runs each case and emits ``@case {"name":
..., "ok": ...}`` (with ``error`` when a check failed), then ``@done``. A case does all its
collective work (the operation, ``to_numpy``) before it checks anything, so a failed check
on one rank leaves the others in step and the job goes on; an unexpected exception is
reported and re-raised, which stops the job.

Checks: shape, dtype, values of every tile a rank holds against the same slice of NumPy's
result (and the gathered whole for some), which tiles each rank holds, and the messages
the operation needed (``fetch_regions``, ``allreduce``, ``allgather`` calls), by path: a
reduction over uncut axes and ``X @ w`` need none; a full reduction or ``X.T @ X`` gives a
result every rank holds, without ``fetch_regions``.
"""

from __future__ import annotations

import itertools
import math
import operator
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "mp_scripts"))
from _mp import emit, expect, raises
from gpupart.containers import layout, linalg
from gpupart.containers import reductions as red
from gpupart.containers.darray import REPLICATED, DistArray

import gpupart
from gpupart.protocol import Tiling

rt = gpupart.init()
rank, size = rt.rank, rt.size
calls = {"fetch_regions": 0, "allreduce": 0, "allgather": 0}
results = {"ok": 0, "failed": 0}

_fetch_regions = DistArray.fetch_regions


def _counted_fetch(self: DistArray, boxes: Any) -> list[Any]:
    calls["fetch_regions"] += 1
    return _fetch_regions(self, boxes)


DistArray.fetch_regions = _counted_fetch  # type: ignore[method-assign]


def _counting(name: str) -> Callable[..., Any]:
    inner = getattr(rt, name)

    def call(*args: Any, **kw: Any) -> Any:
        calls[name] += 1
        return inner(*args, **kw)

    return call


rt.allreduce = _counting("allreduce")
rt.allgather = _counting("allgather")


def measured(fn: Callable[[], Any]) -> tuple[Any, dict[str, int]]:
    """Run ``fn`` and return its result and the collective calls it made."""
    before = dict(calls)
    out = fn()
    return out, {k: calls[k] - before[k] for k in calls}


def case(name: str, body: Callable[[], Any]) -> None:
    """Run one case; a failed check is reported and the job goes on, anything else stops it."""
    try:
        body()
    except AssertionError as exc:
        results["failed"] += 1
        emit("case", name=name, ok=False, error=str(exc)[:2000])
        return
    except Exception:
        results["failed"] += 1
        emit("case", name=name, ok=False, error=traceback.format_exc()[-3000:])
        raise
    results["ok"] += 1
    emit("case", name=name, ok=True)


# -- data and arrays --------------------------------------------------------------------------

DTYPES = [
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float32",
    "float64",
    "complex64",
    "complex128",
]
ATOL = {"f": {4: 5e-4, 8: 1e-9}, "c": {8: 5e-4, 16: 1e-9}}


def data(dtype: str, shape: tuple[int, ...], seed: int = 0, *, nan: bool = False) -> np.ndarray:
    """Values of ``dtype`` (the same on every rank): small ints with ties, floats ~ N(0, 1)."""
    rng = np.random.default_rng([seed, DTYPES.index(dtype), *shape])
    dt = np.dtype(dtype)
    n = math.prod(shape)
    if dt.kind == "b":
        flat = rng.integers(0, 2, n).astype(bool)
    elif dt.kind == "i":
        flat = rng.integers(-3, 4, n).astype(dt)
    elif dt.kind == "u":
        flat = rng.integers(0, 6, n).astype(dt)
    else:
        flat = rng.standard_normal(n).astype(dt)
        if dt.kind == "c":
            flat = flat + 1j * rng.standard_normal(n).astype(dt)
        if nan and n > 4:
            flat[[1, n // 2, n - 2]] = np.nan
    return flat.reshape(shape)


def replicated(values: np.ndarray) -> DistArray:
    """``values`` in one tile every rank holds."""
    return red.replicated(rt, values.copy())


LAYOUTS: dict[tuple[int, ...], list[tuple[str, Any]]] = {
    (): [("default", {})],
    (13,): [
        ("default", {}),
        ("grid4", {"grid": (4,)}),
        ("tiles5", {"tiles": (5,)}),
        ("empties", {"tiles": Tiling.from_boundaries([[0, 0, 6, 6, 13]])}),
        ("replicated", None),
    ],
    (7, 5): [
        ("default", {}),
        ("grid3x2", {"grid": (3, 2)}),
        ("grid1x3", {"grid": (1, 3)}),
        ("tiles2x5", {"tiles": (2, 5)}),
        ("empties", {"tiles": Tiling.from_boundaries([[0, 3, 3, 7], [0, 0, 5]])}),
        ("replicated", None),
    ],
    (2, 3): [("default", {}), ("grid3x1", {"grid": (3, 1)})],
    (4, 5, 6): [
        ("default", {}),
        ("grid2x2x2", {"grid": (2, 2, 2)}),
        ("grid1x3x1", {"grid": (1, 3, 1)}),
    ],
    (0, 4): [("default", {})],
    (3, 0): [("grid2x1", {"grid": (2, 1)})],
}


def make(values: np.ndarray, kw: Any) -> DistArray:
    return replicated(values) if kw is None else gpupart.asarray(values, **kw)


def axes_for(ndim: int) -> list[Any]:
    out: list[Any] = [None, *range(ndim)]
    if ndim:
        out.append(-1)
    if ndim >= 2:
        out += [(0, 1), (-1, 0)]
    if ndim >= 3:
        out += [(0, 2), (0, 1, 2)]
    if ndim == 1:
        out.append(())
    return out


# -- checking ---------------------------------------------------------------------------------


def same(where: str, got: Any, want: np.ndarray) -> None:
    got = np.asarray(got)
    expect(got.shape == want.shape, f"{where}: shape {got.shape}, expected {want.shape}")
    expect(got.dtype == want.dtype, f"{where}: dtype {got.dtype}, expected {want.dtype}")
    if want.dtype.kind in "fc":
        atol = ATOL[want.dtype.kind][want.dtype.itemsize]
        try:
            np.testing.assert_allclose(got, want, rtol=atol, atol=atol, equal_nan=True)
        except AssertionError as exc:
            raise AssertionError(f"{where}: {exc}") from None
    else:
        expect(np.array_equal(got, want), f"{where}: {got!r} != {want!r}")


def check(name: str, got: Any, want: Any, whole: np.ndarray | None = None) -> None:
    """Compare ``got`` with NumPy's ``want``: every tile held here, the holdings, the whole."""
    want = np.asarray(want)
    expect(isinstance(got, DistArray), f"{name}: got a {type(got).__name__}")
    expect(got.shape == want.shape, f"{name}: shape {got.shape}, expected {want.shape}")
    expect(got.dtype == want.dtype, f"{name}: dtype {got.dtype}, expected {want.dtype}")
    expect(got.owners.shape == got.tiling.grid, f"{name}: owners {got.owners.shape}")
    held = {p for p in layout.positions(got.tiling) if got.owners[p] in (rank, REPLICATED)}
    expect(set(got.local_tiles) == held, f"{name}: holds {sorted(got.local_tiles)} not {held}")
    for pos, start, stop in got.boxes():
        index = tuple(slice(a, b) for a, b in zip(start, stop, strict=True))
        same(f"{name} tile {pos}", got.local_tiles[pos], want[index])
    if whole is not None:
        same(f"{name} to_numpy", whole, want)


def numpy_or_error(fn: Callable[[], Any]) -> Any:
    with np.errstate(all="ignore"):
        try:
            return fn()
        except (ValueError, TypeError) as exc:
            return type(exc)


# -- reductions -------------------------------------------------------------------------------

STATS: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
    "sum": (red.sum, np.sum),
    "prod": (red.prod, np.prod),
    "min": (red.min, np.min),
    "max": (red.max, np.max),
    "mean": (red.mean, np.mean),
    "var": (red.var, np.var),
    "std": (red.std, np.std),
    "any": (red.any, np.any),
    "all": (red.all, np.all),
    "count_nonzero": (red.count_nonzero, np.count_nonzero),
}


def path_of(x: DistArray, axis: Any) -> str:
    axes = red.normalize_axes(axis, x.ndim)
    kept = [d for d in range(x.ndim) if d not in axes]
    grid = x.tiling.grid
    if kept and all(grid[d] == 1 for d in axes):
        return "local"
    if all(grid[d] == 1 for d in kept):
        return "everyone"
    return "owners"


def reduction_case(op: str, x: DistArray, a: np.ndarray, axis: Any, keepdims: bool, **kw: Any):
    ours, theirs = STATS[op]

    def body() -> None:
        nkw = {"ddof": kw["correction"]} if "correction" in kw else dict(kw)
        want = numpy_or_error(lambda: theirs(a, axis=axis, keepdims=keepdims, **nkw))
        if isinstance(want, type):
            raises(want, lambda: ours(x, axis=axis, keepdims=keepdims, **kw))
            return
        if op in ("mean", "var", "std") and a.dtype.kind not in "fc":
            want = np.asarray(want, dtype=np.float64)  # NumPy keeps float64 for ints
        got, used = measured(lambda: ours(x, axis=axis, keepdims=keepdims, **kw))
        path = path_of(x, axis)
        check(f"{op}", got, want)
        alone = red.is_replicated(x)
        if path == "local" or alone:
            expect(not any(used.values()), f"no message expected on path {path}, found {used}")
        elif path == "everyone":
            expect(used["fetch_regions"] == 0, f"everyone path fetched: {used}")
            expect(red.is_replicated(got), "a one-tile result is every rank's")
            expect(used["allreduce"] + used["allgather"] >= 1, f"no combination: {used}")
        else:
            expect(used["allreduce"] == 0, f"owners path: {used}")
            expect(1 <= used["fetch_regions"] <= 3, f"owners path: {used}")

    return body


#: Per layout: one reduction of each kind the engine combines differently (an allreduce'd
#: sum, a min with its identity, Chan's var by all-gather, a bool any); every op and dtype
#: is swept on one layout below.
LAYOUT_OPS = ("sum", "min", "var", "any")


def reductions_every_layout() -> None:
    for shape, layouts in LAYOUTS.items():
        for label, kw in layouts:
            a = data("float64", shape, 1)
            x = make(a, kw)
            for op, axis, keepdims in itertools.product(
                LAYOUT_OPS, axes_for(len(shape)), (False, True)
            ):
                if keepdims and axis not in (None, 0):
                    continue
                name = f"{op} float64{shape} {label} axis={axis} keepdims={keepdims}"
                case(name, reduction_case(op, x, a, axis, keepdims))


def reductions_every_dtype() -> None:
    for dtype in DTYPES:
        a = data(dtype, (7, 5), 2)
        x = gpupart.asarray(a, grid=(3, 2))
        for op, axis in itertools.product(STATS, (None, -1)):
            if op in ("min", "max") and dtype.startswith("complex"):
                continue  # not in the standard; NumPy orders complex numbers lexically
            case(f"{op} {dtype}(7, 5) grid3x2 axis={axis}", reduction_case(op, x, a, axis, False))


def reductions_with_dtype_and_correction() -> None:
    a = data("int8", (7, 5), 3) * 40
    x = gpupart.asarray(a, grid=(3, 2))
    for op, dt, axis in itertools.product(
        ("sum", "prod"), ("int8", "int64", "float32", "uint16"), (None, 0, 1)
    ):
        case(f"{op} int8 dtype={dt} axis={axis}", reduction_case(op, x, a, axis, False, dtype=dt))
    f = data("float32", (7, 5), 3)
    xf = gpupart.asarray(f, grid=(3, 2))
    for op, c, axis in itertools.product(("var", "std"), (0, 1, 2.5), (None, 0, 1)):
        case(
            f"{op} float32 correction={c} axis={axis}",
            reduction_case(op, xf, f, axis, False, correction=c),
        )


def reductions_with_nans() -> None:
    for dtype, shape, kw in (
        ("float64", (7, 5), {"grid": (3, 2)}),
        ("float32", (13,), {"grid": (4,)}),
        ("complex128", (4, 5, 6), {"grid": (2, 2, 2)}),
    ):
        a = data(dtype, shape, 4, nan=True)
        x = gpupart.asarray(a, **kw)
        for op, axis in itertools.product(
            ("sum", "min", "max", "mean", "var", "any"), (None, 0, -1)
        ):
            if op in ("min", "max") and dtype.startswith("complex"):
                continue
            case(f"{op} {dtype}{shape} nan axis={axis}", reduction_case(op, x, a, axis, False))


def var_is_stable() -> None:
    a = 1e9 + data("float64", (400, 3), 5)
    x = gpupart.asarray(a, grid=(7, 1))

    def body() -> None:
        got = red.var(x, axis=0).to_numpy()
        want = np.var(a, axis=0)
        np.testing.assert_allclose(got, want, rtol=1e-6)
        got_all = float(red.std(x, correction=1))
        np.testing.assert_allclose(got_all, np.std(a, ddof=1), rtol=1e-6)

    case("var of 1e9 + N(0, 1) keeps its digits", body)


def var_correction_beyond_count() -> None:
    x = gpupart.asarray(np.arange(6.0).reshape(3, 2), grid=(3, 1))

    def body() -> None:
        v = red.var(x, axis=0, correction=3).to_numpy()
        s = red.std(x, correction=6).to_numpy()
        expect(np.isnan(v).all() and np.isnan(s), f"N - correction <= 0 gives NaN: {v}, {s}")

    case("var/std with N - correction <= 0 is NaN (the standard's rule)", body)


# -- argmin / argmax --------------------------------------------------------------------------


def arg_case(op: str, x: DistArray, a: np.ndarray, axis: Any, keepdims: bool) -> Callable:
    ours, theirs = (red.argmin, np.argmin) if op == "argmin" else (red.argmax, np.argmax)

    def body() -> None:
        want = numpy_or_error(lambda: theirs(a, axis=axis, keepdims=keepdims))
        if isinstance(want, type):
            raises(want, lambda: ours(x, axis=axis, keepdims=keepdims))
            return
        got = ours(x, axis=axis, keepdims=keepdims)
        check(op, got, want)

    return body


def argmin_argmax() -> None:
    for (shape, layouts), nan in itertools.product(LAYOUTS.items(), (False, True)):
        for label, kw in layouts:
            for dtype in ("int16",) if not nan else ("float32",):
                a = data(dtype, shape, 6, nan=nan)
                x = make(a, kw)
                axes = [None, *range(len(shape))]
                for op, axis, keepdims in itertools.product(
                    ("argmin", "argmax"), axes, (False, True)
                ):
                    if keepdims and axis is not None:
                        continue
                    name = f"{op} {dtype}{shape} {label} nan={nan} axis={axis} keepdims={keepdims}"
                    case(name, arg_case(op, x, a, axis, keepdims))


def argmin_ties_across_tiles() -> None:
    a = np.zeros((6, 4), dtype=np.int64)
    a[5, 0] = a[1, 3] = a[4, 2] = -1  # the first in C order is (1, 3)
    a[3, 1] = a[0, 2] = 9
    b = np.full((6, 4), np.nan)
    b[2:, :] = 1.0
    b[0, 3] = b[1, 0] = 7.0  # rows 0-1 NaN except these: the first NaN is (0, 0)
    for label, kw in (
        ("grid3x2", {"grid": (3, 2)}),
        ("grid1x4", {"grid": (1, 4)}),
        ("default", {}),
    ):
        for values, vname in ((a, "ties"), (b, "nans")):
            x = gpupart.asarray(values, **kw)
            for op, axis in itertools.product(("argmin", "argmax"), (None, 0, 1)):
                case(f"{op} {vname} {label} axis={axis}", arg_case(op, x, values, axis, False))


# -- cumulative sums --------------------------------------------------------------------------


def cumulative_case(op: str, x: DistArray, a: np.ndarray, axis: Any, **kw: Any) -> Callable:
    ours, theirs = (
        (red.cumulative_sum, np.cumulative_sum)
        if op == "cumulative_sum"
        else (red.cumulative_prod, np.cumulative_prod)
    )

    def body() -> None:
        want = numpy_or_error(lambda: theirs(a, axis=axis, **kw))
        if isinstance(want, type):
            raises(want, lambda: ours(x, axis=axis, **kw))
            return
        got, used = measured(lambda: ours(x, axis=axis, **kw))
        check(op, got, want)
        k = 0 if axis is None else axis % a.ndim
        cut = x.tiling.grid[k] > 1
        expect(used["fetch_regions"] == (1 if cut else 0), f"messages {used} (axis cut: {cut})")
        expect(np.array_equal(got.owners, x.owners), "the result keeps x's owners")

    return body


def cumulative() -> None:
    for (shape, layouts), dtype in itertools.product(LAYOUTS.items(), ("float64", "int8")):
        if not shape:
            continue
        for label, kw in layouts:
            a = data(dtype, shape, 7)
            x = make(a, kw)
            axes = [*range(len(shape)), *([None] if len(shape) == 1 else [])]
            for op, axis, initial in itertools.product(
                ("cumulative_sum", "cumulative_prod"), axes, (False, True)
            ):
                if initial and op == "cumulative_prod" and dtype == "int8":
                    continue
                name = f"{op} {dtype}{shape} {label} axis={axis} include_initial={initial}"
                case(name, cumulative_case(op, x, a, axis, include_initial=initial))
    a = data("int16", (7, 5), 8)
    x = gpupart.asarray(a, grid=(3, 2))
    for dt, axis in itertools.product(("int8", "float32", "complex64", "uint64"), (0, 1)):
        case(
            f"cumulative_sum int16 dtype={dt} axis={axis}",
            cumulative_case("cumulative_sum", x, a, axis, dtype=dt),
        )
    c = data("complex64", (13,), 8)
    case(
        "cumulative_sum complex64",
        cumulative_case("cumulative_sum", gpupart.asarray(c, grid=(4,)), c, 0),
    )


# -- differences ------------------------------------------------------------------------------


def diff_case(x: DistArray, a: np.ndarray, axis: int, n: int, **kw: Any) -> Callable:
    def body() -> None:
        host = {k: v.to_numpy() if isinstance(v, DistArray) else v for k, v in kw.items()}
        want = np.diff(a, axis=axis, n=n, **{k: v for k, v in host.items() if v is not None})
        got, used = measured(lambda: red.diff(x, axis=axis, n=n, **kw))
        check("diff", got, want, got.to_numpy())
        dists = [v for v in kw.values() if isinstance(v, DistArray)]
        if x.tiling.grid[axis] > 1:
            dists.append(x)
        expect(used["fetch_regions"] == len(dists), f"one fetch per distributed piece: {used}")
        expect(np.array_equal(got.owners, x.owners), "the result keeps x's owners")

    return body


def differences() -> None:
    for shape, layouts in LAYOUTS.items():
        if not shape:
            continue
        for label, kw in layouts:
            a = data("int16", shape, 22)
            x = make(a, kw)
            for axis, n in itertools.product(range(len(shape)), (1, 2, 3)):
                case(f"diff int16{shape} {label} axis={axis} n={n}", diff_case(x, a, axis, n))
    a = data("float64", (7, 5), 23)
    x = gpupart.asarray(a, grid=(3, 2))
    for axis in (0, 1):
        edge = [(2, 5), (7, 2)][axis]
        pre, app = data("float64", edge, 24), data("int8", edge, 25)
        pieces = {
            "NumPy": (pre, app),
            "scalars": (1.5, 2),
            "distributed": (gpupart.asarray(pre, grid=(2, 2)), gpupart.asarray(app)),
            "replicated": (None, replicated(app)),
        }
        for (name, (p, q)), n in itertools.product(pieces.items(), (1, 3)):
            case(
                f"diff float64(7, 5) grid3x2 axis={axis} n={n} prepend/append {name}",
                diff_case(x, a, axis, n, prepend=p, append=q),
            )


# -- Python scalars -----------------------------------------------------------------------------


def scalars() -> None:
    a = data("float64", (7, 5), 9)
    x = gpupart.asarray(a, grid=(3, 2))

    def body() -> None:
        s = red.sum(x)
        expect(red.is_replicated(s) and s.ndim == 0, "a full sum is every rank's 0-d array")
        value, after = measured(lambda: float(s))
        expect(not any(after.values()), f"float() of a replicated value sends nothing: {after}")
        expect(math.isclose(value, float(a.sum()), rel_tol=1e-12), f"{value} vs {a.sum()}")
        expect(int(red.sum(gpupart.asarray(np.arange(10)))) == 45, "int()")
        expect(operator.index(red.argmax(x)) == int(np.argmax(a)), "index()")
        expect(bool(red.any(x)) is True, "bool(any)")
        expect(bool(red.all(gpupart.asarray(np.ones(4, bool)))) is True, "bool(all)")
        expect(bool(red.any(gpupart.asarray(np.zeros(4, bool)))) is False, "bool(any)")
        expect(complex(red.sum(gpupart.asarray(np.array([1 + 2j, 3j])))) == 1 + 5j, "complex()")
        one = gpupart.asarray(np.float64(2.5))  # 0-d, held by rank 0 only
        expect(float(one) == 2.5, "float() of a 0-d array held by one rank (collective)")
        raises(TypeError, lambda: float(x), "0-d")
        raises(ValueError, lambda: bool(x), "0-d")
        raises(TypeError, lambda: operator.index(red.sum(x)))  # a float is no index

    case("float/int/bool/complex/index of 0-d arrays", body)


# -- errors -------------------------------------------------------------------------------------


def errors() -> None:
    a = data("float64", (7, 5), 10)
    x = gpupart.asarray(a, grid=(3, 2))
    e = gpupart.asarray(np.zeros((0, 3)))
    v = gpupart.asarray(np.arange(5.0))

    def body() -> None:
        for bad in (2, -3, (0, 2), (0, 0), (1, -1)):
            exc = raises(ValueError, lambda b=bad: red.sum(x, axis=b), "axis")
            expect(isinstance(exc, IndexError) or "distinct" in str(exc), f"AxisError: {exc!r}")
        raises(TypeError, lambda: red.sum(x, axis=1.0), "axis")
        raises(TypeError, lambda: red.sum(x, axis=[0]), "axis")
        raises(TypeError, lambda: red.sum(x, axis=True), "axis")
        raises(TypeError, lambda: red.sum(a), "x: expected a gpupart.DistArray")
        raises(TypeError, lambda: red.sum(x, keepdims=1), "keepdims")
        raises(TypeError, lambda: red.sum(x, dtype="not a dtype"), "dtype")
        raises(ValueError, lambda: red.min(e), "min", "(0, 3)")
        raises(ValueError, lambda: red.max(e, axis=0), "max")
        raises(ValueError, lambda: red.argmin(e), "argmin")
        raises(TypeError, lambda: red.argmin(x, axis=(0, 1)), "axis")
        raises(TypeError, lambda: red.var(x, correction=True), "correction")
        raises(ValueError, lambda: red.cumulative_sum(x), "axis", "None")
        raises(ValueError, lambda: red.cumulative_sum(red.sum(x)), "0-d")
        raises(TypeError, lambda: red.cumulative_sum(v, include_initial=None), "include_initial")
        raises(ValueError, lambda: linalg.matmul(x, np.ones((4, 2))), "x2", "5 rows")
        raises(ValueError, lambda: linalg.matmul(x, np.float64(1)), "x2", "0-d")
        raises(TypeError, lambda: linalg.matmul(a, a), "DistArray")
        raises(ValueError, lambda: linalg.tensordot(x, x, axes=3), "axes")
        raises(ValueError, lambda: linalg.tensordot(x, x, axes=([0], [1])), "axes", "equal length")
        raises(ValueError, lambda: linalg.tensordot(x, x, axes=([0, 0], [0, 1])), "distinct")
        raises(ValueError, lambda: linalg.vecdot(x, np.ones(4)), "x2")
        raises(ValueError, lambda: linalg.matrix_transpose(v), "2 dimensions")
        raises(ValueError, lambda: red.diff(x, n=-1), "n", "-1")
        raises(
            ValueError, lambda: red.diff(x, axis=0, prepend=np.ones((2, 4))), "prepend", "(2, 4)"
        )

    case("bad arguments name themselves", body)


# -- linalg -------------------------------------------------------------------------------------


def linalg_case(
    name: str, call: Callable[[], Any], want: np.ndarray, expect_path: str, like: Any = None
):
    def body() -> None:
        got, used = measured(call)
        check(name, got, want, None if red.is_replicated(got) else got.to_numpy())
        if expect_path == "local":
            expect(not any(used.values()), f"tile by tile: no message expected, found {used}")
            if like is not None:
                expect(got.tiling.boundaries[0] == like.tiling.boundaries[0], "rows cut like X")
                rows = got.owners.reshape(got.tiling.grid[0], -1)[:, 0]
                expect(np.array_equal(rows, like.owners[:, 0]), "rows held like X")
        elif expect_path == "fetch":
            expect(used["allreduce"] == 0 and used["fetch_regions"] <= 1, f"{used}")
        elif expect_path == "allreduce":
            expect(used == {"fetch_regions": 0, "allreduce": 1, "allgather": 0}, f"{used}")
            expect(red.is_replicated(got), "the small result is every rank's")

    return body


def linalg_cases(dtype: str, n: int, k: int, kw: dict) -> list[tuple[str, Any, Any, str]]:
    """(label, call, NumPy's result, expected path) of every pattern for one X."""
    X = data(dtype, (n, k), 11)
    y = data(dtype, (n,), 12)
    w = data(dtype, (k,), 13)
    W = data(dtype, (k, 2), 14)
    V = data(dtype, (2, n), 15)
    x = gpupart.asarray(X, **kw)
    yd = gpupart.asarray(y, **({"grid": (4,)} if kw else {}))
    xt = linalg.matrix_transpose(x)
    contract = "allreduce" if x.tiling.grid[0] > 1 else "local"  # one row block: tile by tile
    cases = [
        ("matmul(matrix_transpose(X), X)", lambda: linalg.matmul(xt, x), X.T @ X, "allreduce"),
        ("matrix_transpose(X) @ y", lambda: xt @ yd, X.T @ y, "allreduce"),
        ("X @ w (1-d)", lambda: x @ w, X @ w, "local"),
        ("X @ W (2-d)", lambda: x @ W, X @ W, "local"),
        ("X @ replicated W", lambda: x @ replicated(W), X @ W, "local"),
        ("V @ X (contract the cut rows)", lambda: V @ x, V @ X, contract),
        ("y (NumPy) @ X", lambda: linalg.matmul(y, x), y @ X, contract),
        ("yd @ X", lambda: yd @ x, y @ X, "allreduce"),
        (
            "tensordot(X, X, axes=([0], [0]))",
            lambda: linalg.tensordot(x, x, axes=([0], [0])),
            np.tensordot(X, X, axes=([0], [0])),
            "allreduce",
        ),
        (
            "tensordot(X, W, axes=1)",
            lambda: linalg.tensordot(x, W, axes=1),
            np.tensordot(X, W, axes=1),
            "local",
        ),
        (
            "tensordot(V, X, axes=1)",
            lambda: linalg.tensordot(V, x, axes=1),
            np.tensordot(V, X, axes=1),
            contract,
        ),
        ("vecdot(X, X)", lambda: linalg.vecdot(x, x), np.vecdot(X, X), "local"),
        ("vecdot(X, w)", lambda: linalg.vecdot(x, w), np.vecdot(X, w), "local"),
        (
            "vecdot(X, X, axis=0)",
            lambda: linalg.vecdot(x, x, axis=0),
            np.vecdot(X, X, axis=0),
            "any",
        ),
        ("vecdot(y, yd)", lambda: linalg.vecdot(y, yd), np.vecdot(y, y), "any"),
    ]
    if "T" in DistArray.__dict__:  # x.T from manipulation.permute_dims, once it is loaded
        cases.append(("X.T @ X", lambda: x.T @ x, X.T @ X, "allreduce"))
        cases.append(("X.T @ y", lambda: x.T @ yd, X.T @ y, "allreduce"))
    return [(label, call, want, path, x) for label, call, want, path in cases]


def linalg_patterns() -> None:
    for (n, k), kw, dtype in itertools.product(
        ((10, 3), (2, 3)),
        ({}, {"grid": (4, 1)}),
        ("float64", "int8", "complex64", "bool"),
    ):
        tag = f"{dtype}({n}, {k}) {kw or 'default'}"
        for label, call, want, path, x in linalg_cases(dtype, n, k, kw):
            like = x if label.startswith(("X @", "tensordot(X, W")) else None
            case(f"{label} {tag}", linalg_case(label, call, want, path, like=like))


def linalg_batched_and_replicated() -> None:
    A = data("float64", (6, 4, 3), 16)
    B = data("float64", (6, 3, 2), 17)
    W = data("float64", (3, 2), 17)
    M = data("float64", (5, 4), 18)
    S = data("float64", (1, 3, 2), 26)
    a = gpupart.asarray(A)  # split along the batch
    b = gpupart.asarray(B)
    bg = gpupart.asarray(B, grid=(3, 1, 2))
    w = gpupart.asarray(W, grid=(2, 1))  # distributed, not replicated
    V = data("float64", (2,), 27)
    v = gpupart.asarray(V)
    cases = [
        ("batched X (split on batch) @ W", lambda: a @ W, A @ W, "local"),
        ("M @ batched X", lambda: M @ a, M @ A, "local"),
        ("batched X @ batched Y (split alike)", lambda: a @ b, A @ B, "fetch"),
        ("batched X @ batched Y (cut otherwise)", lambda: a @ bg, A @ B, "fetch"),
        ("batched X @ broadcast NumPy batch", lambda: a @ S, A @ S, "local"),
        ("batched X @ distributed W", lambda: a @ w, A @ W, "fetch"),
        ("1-d @ batched X", lambda: v @ b.mT, V @ np.swapaxes(B, 1, 2), "fetch"),
    ]
    for label, call, want, path in cases:
        case(label, linalg_case(label, call, want, path))
    R = data("float64", (4, 3), 19)
    r = replicated(R)
    case("replicated @ replicated", linalg_case("R @ R.T", lambda: r @ R.T, R @ R.T, "local"))
    case(
        "vecdot of replicated",
        linalg_case("vecdot", lambda: linalg.vecdot(r, R), np.vecdot(R, R), "local"),
    )


def linalg_unsupported() -> None:
    X = data("float64", (10, 3), 20)
    x = gpupart.asarray(X, grid=(2, 1))
    xg = gpupart.asarray(X, grid=(2, 3))
    other = gpupart.asarray(data("float64", (10,), 21), grid=(5,))

    def body() -> None:
        raises(
            NotImplementedError,
            lambda: x @ linalg.matrix_transpose(x),
            "repartition",
            "(10, 3)",
            "(3, 10)",
        )
        raises(NotImplementedError, lambda: xg @ np.ones(3), "grid (2, 3)", "to_numpy")
        raises(NotImplementedError, lambda: linalg.matrix_transpose(x) @ other, "cut differently")
        a3 = gpupart.asarray(np.ones((2, 3, 3)), grid=(1, 1, 3))
        raises(NotImplementedError, lambda: a3 @ np.ones((3, 2)), "contracted axis")
        small = gpupart.asarray(np.ones((3, 2)))
        raises(NotImplementedError, lambda: small @ np.ones((4, 2, 5)), "broadcast")

    case("other layouts raise NotImplementedError with the way out", body)


def main() -> None:
    for section in (
        reductions_every_layout,
        reductions_every_dtype,
        reductions_with_dtype_and_correction,
        reductions_with_nans,
        var_is_stable,
        var_correction_beyond_count,
        argmin_argmax,
        argmin_ties_across_tiles,
        cumulative,
        differences,
        scalars,
        errors,
        linalg_patterns,
        linalg_batched_and_replicated,
        linalg_unsupported,
    ):
        began, before, messages = time.perf_counter(), dict(results), dict(calls)
        section()
        emit(
            "section",
            name=section.__name__,
            rank=rank,
            seconds=round(time.perf_counter() - began, 3),
            cases=sum(results.values()) - sum(before.values()),
            **{k: calls[k] - messages[k] for k in calls},
        )
    emit("done", rank=rank, size=size, **results)
    rt.close()


if __name__ == "__main__":
    main()
