"""Every elementwise function of gpupart.array_api against NumPy, as one job (any rank count).

Each case emits ``@case {"name": ..., "ok": ...}`` (and ``error`` when it failed); the job
ends with ``@done``. Cases compare every tile a rank holds with the same slice of NumPy's
result on the whole data (the same on every rank: fixed seeds), check the result's dtype,
shape, tiling and owners, and count the ``fetch_regions`` calls the operation made (none
when the operands are laid out alike). Some also gather the whole result (``to_numpy``).

A failed comparison is local (no collective follows it in the case), so the job goes on; an
unexpected exception on one rank is reported and re-raised, which stops the job.
"""

from __future__ import annotations

import json
import os
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np
from gpupart.containers import darray, layout
from gpupart.containers import elementwise as ew
from gpupart.containers.darray import DistArray

import gpupart
from gpupart.protocol import Tiling

SEED = int(os.environ.get("GPUPART_TEST_SEED", "20260305"))
rt = gpupart.init()
rank, size = rt.rank, rt.size

INTS = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
FLOATS = ["float32", "float64"]
COMPLEX = ["complex64", "complex128"]
DTYPES = ["bool", *INTS, *FLOATS, *COMPLEX]
TOL = {"f": {4: 1e-5, 8: 1e-12}, "c": {8: 1e-5, 16: 1e-12}}

UNARY = {  # array-API name -> NumPy reference
    "abs": np.abs,
    "acos": np.arccos,
    "acosh": np.arccosh,
    "asin": np.arcsin,
    "asinh": np.arcsinh,
    "atan": np.arctan,
    "atanh": np.arctanh,
    "bitwise_invert": np.invert,
    "ceil": np.ceil,
    "conj": np.conj,
    "cos": np.cos,
    "cosh": np.cosh,
    "exp": np.exp,
    "expm1": np.expm1,
    "floor": np.floor,
    "imag": np.imag,
    "isfinite": np.isfinite,
    "isinf": np.isinf,
    "isnan": np.isnan,
    "log": np.log,
    "log1p": np.log1p,
    "log2": np.log2,
    "log10": np.log10,
    "logical_not": np.logical_not,
    "negative": np.negative,
    "positive": np.positive,
    "real": np.real,
    "reciprocal": np.reciprocal,
    "round": np.round,
    "sign": np.sign,
    "signbit": np.signbit,
    "sin": np.sin,
    "sinh": np.sinh,
    "sqrt": np.sqrt,
    "square": np.square,
    "tan": np.tan,
    "tanh": np.tanh,
    "trunc": np.trunc,
}
BINARY = {
    "add": np.add,
    "atan2": np.arctan2,
    "bitwise_and": np.bitwise_and,
    "bitwise_left_shift": np.left_shift,
    "bitwise_or": np.bitwise_or,
    "bitwise_right_shift": np.right_shift,
    "bitwise_xor": np.bitwise_xor,
    "copysign": np.copysign,
    "divide": np.divide,
    "equal": np.equal,
    "floor_divide": np.floor_divide,
    "greater": np.greater,
    "greater_equal": np.greater_equal,
    "hypot": np.hypot,
    "less": np.less,
    "less_equal": np.less_equal,
    "logaddexp": np.logaddexp,
    "logical_and": np.logical_and,
    "logical_or": np.logical_or,
    "logical_xor": np.logical_xor,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "multiply": np.multiply,
    "nextafter": np.nextafter,
    "not_equal": np.not_equal,
    "pow": np.power,
    "remainder": np.remainder,
    "subtract": np.subtract,
}
#: Functions refusing complex operands although NumPy orders complex numbers.
ORDERING = {"less", "less_equal", "greater", "greater_equal", "maximum", "minimum"}
STANDARD = {np.dtype(d) for d in DTYPES}

fetches = [0]
_fetch_regions = DistArray.fetch_regions


def _counting(self: DistArray, boxes: Any) -> list[Any]:
    fetches[0] += 1
    return _fetch_regions(self, boxes)


DistArray.fetch_regions = _counting  # type: ignore[method-assign]

results = {"ok": 0, "failed": 0}


def emit(kind: str, **data: Any) -> None:
    print(f"@{kind} {json.dumps(data, sort_keys=True)}", flush=True)


def expect(condition: object, message: str) -> None:
    if not condition:
        raise AssertionError(message)


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


# -- data and arrays ----------------------------------------------------------------------


def data(dtype: str, shape: tuple[int, ...], seed: int, *, special: bool = True) -> np.ndarray:
    """Values of ``dtype`` (the same on every rank); floats with NaN, infinities and zeros."""
    rng = np.random.default_rng([SEED, seed, DTYPES.index(dtype)])
    dt = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64))
    if dt.kind == "b":
        flat = rng.integers(0, 2, n).astype(bool)
    elif dt.kind == "i":
        flat = rng.integers(-40, 41, n).astype(dt)
        if special and n > 3:
            info = np.iinfo(dt)
            flat[:2] = info.min, info.max
    elif dt.kind == "u":
        flat = rng.integers(0, 81, n).astype(dt)
        if special and n > 3:
            flat[1] = np.iinfo(dt).max
    else:
        flat = (rng.standard_normal(n) * 3).astype(dt)
        if dt.kind == "c":
            flat = flat + 1j * (rng.standard_normal(n) * 3).astype(dt)
        if special and n > 8:
            flat[1:6] = [np.nan, np.inf, -np.inf, 0.0, -0.0]
    return flat.reshape(shape)


def dist(values: np.ndarray, tiles: Any = None, grid: Any = None, *, owners: Any = None) -> Any:
    """``values`` as a DistArray with this tiling (no message: every rank holds ``values``)."""
    tiling = layout.make_tiling(values.shape, size, tiles, grid)
    own = layout.assign_owners(tiling, size) if owners is None else owners
    tiles_ = {}
    for pos in layout.positions(tiling):
        if own[pos] in (rank, darray.REPLICATED):
            start, stop = layout.tile_box(tiling, pos)
            index = tuple(slice(a, b) for a, b in zip(start, stop, strict=True))
            tiles_[pos] = np.array(values[index])  # 0-d: an array, not a NumPy scalar
    return DistArray(rt, tiling, own, values.dtype, tiles_)


def replicated(values: np.ndarray) -> Any:
    """``values`` in one tile every rank holds (owner -1)."""
    tiling = layout.make_tiling(values.shape, size, None, [1] * values.ndim)
    return dist(values, tiling, owners=np.full(tiling.grid, darray.REPLICATED, np.int32))


def same(where: str, got: Any, want: np.ndarray) -> None:
    got = np.asarray(got)
    expect(got.shape == want.shape, f"{where}: shape {got.shape}, expected {want.shape}")
    expect(got.dtype == want.dtype, f"{where}: dtype {got.dtype}, expected {want.dtype}")
    if want.dtype.kind in "fc":
        rtol = TOL[want.dtype.kind][want.dtype.itemsize]
        try:
            np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-30, equal_nan=True)
        except AssertionError as exc:
            raise AssertionError(f"{where}: {exc}") from None
    else:
        expect(np.array_equal(got, want), f"{where}: {got!r} != {want!r}")


def check(
    name: str,
    got: Any,
    want: np.ndarray,
    *,
    like: Any = None,
    tiling: Tiling | None = None,
    fetched: int | None = None,
    whole: bool = False,
    fresh: tuple[Any, ...] = (),
) -> None:
    """Compare ``got`` (a DistArray) with NumPy's ``want``: tiles, layout, messages.

    ``like``: the operand whose tiling and owners the result must have; ``fetched``: the
    number of fetch_regions calls the operation made; ``whole``: also gather it; ``fresh``:
    operands whose tiles the result's must not share memory with.
    """
    expect(isinstance(got, DistArray), f"{name}: got a {type(got).__name__}")
    expect(got.shape == want.shape, f"{name}: shape {got.shape}, expected {want.shape}")
    expect(got.dtype == want.dtype, f"{name}: dtype {got.dtype}, expected {want.dtype}")
    if fetched is not None:
        expect(fetches[0] == fetched, f"{name}: {fetches[0]} fetch_regions, expected {fetched}")
    if like is not None:
        expect(got.tiling == like.tiling, f"{name}: tiling {got.tiling} != {like.tiling}")
        expect(np.array_equal(got.owners, like.owners), f"{name}: owners differ from x1's")
    if tiling is not None:
        expect(got.tiling == tiling, f"{name}: tiling {got.tiling}, expected {tiling}")
    held = {p for p in layout.positions(got.tiling) if got.owners[p] in (rank, -1)}
    expect(set(got.local_tiles) == held, f"{name}: holds {sorted(got.local_tiles)}")
    for pos, start, stop in got.boxes():
        index = tuple(slice(a, b) for a, b in zip(start, stop, strict=True))
        same(f"{name} tile {pos}", got.local_tiles[pos], want[index])
        for operand in fresh:
            for tile in operand.local_tiles.values():
                shared = np.shares_memory(got.local_tiles[pos], tile)
                expect(not shared, f"{name}: tile {pos} shares memory with an operand")
    if whole:
        same(f"{name} to_numpy", got.to_numpy(), want)


def reference(fn: Callable[..., Any], *args: Any) -> Any:
    """NumPy's result, or the exception class NumPy raises (dtype problems)."""
    with np.errstate(all="ignore"):
        try:
            out = np.asarray(fn(*args))
        except (TypeError, OverflowError) as exc:
            return TypeError if isinstance(exc, TypeError) else OverflowError
    return out if out.dtype in STANDARD else TypeError


def run(name: str, call: Callable[[], Any], want: Any, **kw: Any) -> None:
    """Check ``call()`` against ``want``: an array, or an exception class it must raise."""
    fetches[0] = 0
    if isinstance(want, type):
        try:
            got = call()
        except want:
            return
        raise AssertionError(f"{name}: expected {want.__name__}, got {got!r}")
    check(name, call(), want, **kw)


# -- the cases ----------------------------------------------------------------------------

SHAPE = (7, 5)
GRID = (3, 2)  # uneven tiles, more tiles than ranks at 1 and 2 ranks


def unary_sweep() -> None:
    """Every unary function on every dtype, 2-d, an uneven grid (no message)."""
    for dtype in DTYPES:
        values = data(dtype, SHAPE, 1)
        x = dist(values, grid=GRID)
        for name, ref in UNARY.items():
            fn = getattr(ew, name)
            want = reference(ref, values)
            case(
                f"unary {name} {dtype}",
                lambda fn=fn, x=x, want=want, name=name: run(
                    name, lambda: fn(x), want, like=x, fetched=0, fresh=(x,)
                ),
            )


def binary_want(name: str, a: Any, b: Any) -> Any:
    """NumPy's result with the refusals of gpupart's dtype rules."""
    kinds = {np.asarray(v).dtype.kind if not isinstance(v, complex) else "c" for v in (a, b)}
    if name in ORDERING and "c" in kinds:
        return TypeError
    bools = all(isinstance(v, bool) or np.asarray(v).dtype.kind == "b" for v in (a, b))
    if name == "add" and bools:
        return TypeError
    return reference(BINARY[name], a, b)


def pow_safe(values: np.ndarray) -> np.ndarray:
    """Exponents NumPy accepts for integers (no negative ones)."""
    return np.abs(values) % 5 if values.dtype.kind == "i" else values


def binary_sweep() -> None:
    """Every binary function on every dtype: operands laid out alike, then otherwise."""
    for dtype in DTYPES:
        a, b = data(dtype, SHAPE, 2), data(dtype, SHAPE, 3)
        x1, x2 = dist(a, grid=GRID), dist(b, grid=GRID)
        y2 = dist(b, tiles=(2, 4))  # another tiling: fetched
        for name in BINARY:
            fn = getattr(ew, name)
            bb = pow_safe(b) if name == "pow" else b
            z2, w2 = (dist(bb, grid=GRID), dist(bb, tiles=(2, 4))) if name == "pow" else (x2, y2)
            want = binary_want(name, a, bb)
            case(
                f"binary {name} {dtype} aligned",
                lambda fn=fn, z2=z2, want=want, name=name, x1=x1: run(
                    name, lambda: fn(x1, z2), want, like=x1, fetched=0, fresh=(x1, z2)
                ),
            )
            case(
                f"binary {name} {dtype} other tiling",
                lambda fn=fn, w2=w2, want=want, name=name, x1=x1: run(
                    name, lambda: fn(x1, w2), want, like=x1, fetched=1
                ),
            )


SCALARS = [True, 3, -2, 300, 2.5, -0.0, 1.5 - 2j]


def scalar_sweep() -> None:
    """Every binary function with a Python scalar on either side, five dtypes."""
    for dtype in ["bool", "int16", "uint8", "float32", "complex128"]:
        a0 = data(dtype, SHAPE, 4)
        x0, xp_ = dist(a0, grid=GRID), dist(pow_safe(a0), grid=GRID)
        for name in BINARY:
            fn = getattr(ew, name)
            a, x = (pow_safe(a0), xp_) if name == "pow" else (a0, x0)
            for s in SCALARS:
                for side in ("left", "right"):
                    args = (s, a) if side == "left" else (a, s)
                    if name == "pow" and side == "right" and type(s) is int and s < 0:
                        continue  # NumPy refuses negative integer powers (see the pow case)
                    want = binary_want(name, *args)
                    dargs = (s, x) if side == "left" else (x, s)
                    case(
                        f"scalar {name} {dtype} {s!r} {side}",
                        lambda fn=fn, dargs=dargs, want=want, name=name, x=x: run(
                            name, lambda: fn(*dargs), want, like=x, fetched=0
                        ),
                    )


MIXED = [
    ("int8", "uint8"),
    ("int32", "float32"),
    ("uint64", "int64"),
    ("bool", "int16"),
    ("float32", "complex128"),
    ("int64", "float32"),
    ("uint16", "float64"),
    ("float32", "float64"),
]


def mixed_dtypes() -> None:
    """A few binary functions on operands of different dtypes (NumPy's promotion)."""
    for d1, d2 in MIXED:
        a, b = data(d1, SHAPE, 5), data(d2, SHAPE, 6)
        x1, x2 = dist(a, grid=GRID), dist(b, grid=(1, 1))
        for name in ("add", "multiply", "divide", "less", "maximum", "equal", "bitwise_or"):
            fn = getattr(ew, name)
            want = binary_want(name, a, b)
            case(
                f"mixed {name} {d1} {d2}",
                lambda fn=fn, want=want, name=name, x1=x1, x2=x2: run(
                    name, lambda: fn(x1, x2), want, like=x1, fetched=1
                ),
            )


def broadcasting() -> None:
    """Shapes that broadcast: result layout, fetched regions, the whole result."""
    combos = [  # shape1, shape2, layout of x1, layout of x2, index of the operand laid out like
        ((7, 5), (5,), {"grid": (3, 2)}, {"grid": (2,)}, 0),
        ((7, 5), (1, 5), {"grid": (3, 2)}, {"grid": (1, 2)}, 0),
        ((7, 5), (7, 1), {"grid": (3, 2)}, {"grid": (2, 1)}, 0),
        ((7, 5), (), {"tiles": (2, 2)}, {}, 0),
        ((5,), (7, 5), {"grid": (2,)}, {"grid": (3, 2)}, 1),
        ((1, 5), (7, 5), {"grid": (1, 2)}, {"tiles": (3, 5)}, 1),
        ((), (4, 3, 5), {}, {"grid": (2, 1, 3)}, 1),
        ((3, 1, 5), (4, 1), {"grid": (2, 1, 2)}, {"grid": (2, 1)}, None),
        ((7, 1), (1, 5), {"grid": (3, 1)}, {"grid": (1, 2)}, None),
        ((2, 3), (3,), {}, {}, 0),
        ((0, 4), (4,), {}, {"grid": (2,)}, 0),
        ((0, 4), (1, 4), {}, {}, 0),
    ]
    for k, (s1, s2, l1, l2, lead) in enumerate(combos):
        for dtype in ("int32", "float64"):
            a, b = data(dtype, s1, 10 + k), data(dtype, s2, 30 + k)
            x1, x2 = dist(a, **l1), dist(b, **l2)
            for name in ("add", "atan2", "less", "subtract"):
                fn = getattr(ew, name)
                want = binary_want(name, a, b)
                like = (x1, x2)[lead] if lead is not None else None

                tiling = None if like is not None else stretched(x1, want.shape)
                case(
                    f"broadcast {name} {dtype} {s1} {s2}",
                    lambda fn=fn, x1=x1, x2=x2, want=want, like=like, name=name, tiling=tiling: run(
                        name, lambda: fn(x1, x2), want, like=like, tiling=tiling, whole=True
                    ),
                )
    # a NumPy-shaped mismatch: the same ValueError on every rank, naming both arguments
    x = dist(data("float64", (7, 5), 1))
    y = dist(data("float64", (4,), 1))
    case(
        "broadcast error", lambda: raises(ValueError, lambda: ew.add(x, y), "x1", "(7, 5)", "(4,)")
    )


def stretched(x: Any, shape: tuple[int, ...]) -> Tiling:
    """The documented layout of a result no operand has the shape of: ``x``'s, stretched."""
    off = len(shape) - x.ndim
    cuts: list[Any] = [[0, n] for n in shape[:off]]
    for d, n in enumerate(x.shape):
        cuts.append(list(x.tiling.boundaries[d]) if n == shape[off + d] else [0, shape[off + d]])
    return Tiling.from_boundaries(cuts)


def raises(exc: type[BaseException], fn: Callable[[], Any], *needles: str) -> None:
    try:
        fn()
    except exc as err:
        for needle in needles:
            expect(needle in str(err), f"{err!r} lacks {needle!r}")
        return
    raise AssertionError(f"expected {exc.__name__}")


def layouts() -> None:
    """Different tilings and owners: 0-d, 1-d, 3-d, empty tiles, replicated operands."""
    cases = [
        ((), {}, {}),
        ((11,), {"grid": (4,)}, {"tiles": (5,)}),
        ((4, 3, 5), {"grid": (2, 2, 2)}, {"tiles": (1, 3, 2)}),
        ((2, 3), {}, {"grid": (2, 1)}),  # at 3 ranks one rank holds an empty tile
        ((0, 3), {}, {"grid": (1, 1)}),
        ((6, 4), {"tiles": Tiling.from_boundaries([[0, 0, 2, 2, 6], [0, 4]])}, {"grid": (3, 2)}),
    ]
    for k, (shape, l1, l2) in enumerate(cases):
        for dtype in ("uint16", "complex64"):
            a, b = data(dtype, shape, 50 + k), data(dtype, shape, 60 + k)
            x1, x2 = dist(a, **l1), dist(b, **l2)
            aligned = x1.tiling == x2.tiling and np.array_equal(x1.owners, x2.owners)
            for name in ("multiply", "equal", "exp", "sqrt", "square"):
                fn = getattr(ew, name)
                if name in BINARY:
                    want, fetched = binary_want(name, a, b), 0 if aligned else 1
                    call = lambda fn=fn, x1=x1, x2=x2: fn(x1, x2)  # noqa: E731
                else:
                    want, fetched = reference(UNARY[name], a), 0
                    call = lambda fn=fn, x1=x1: fn(x1)  # noqa: E731
                case(
                    f"layout {name} {dtype} {shape} {k}",
                    lambda call=call, want=want, fetched=fetched, name=name, x1=x1: run(
                        name, call, want, like=x1, fetched=fetched, whole=True
                    ),
                )
    # an operand every rank holds whole (owner -1) is sliced where it is: no message
    row = data("float64", (1, 5), 70)
    a = data("float64", SHAPE, 71)
    x, r = dist(a, grid=GRID), replicated(row)
    case(
        "replicated row",
        lambda: run("add", lambda: ew.add(x, r), a + row, like=x, fetched=0, whole=True),
    )
    case(
        "replicated left",
        lambda: run("add", lambda: ew.add(r, x), row + a, like=x, fetched=0, whole=True),
    )
    # through gpupart.asarray and the operators
    case(
        "asarray operators",
        lambda: check(
            "ops",
            (gpupart.asarray(a, grid=(2, 2)) * 2 - gpupart.asarray(a, tiles=(3, 5))) ** 2,
            (a * 2 - a) ** 2,
            whole=True,
        ),
    )


def numpy_operands() -> None:
    """NumPy arrays and scalars as operands, on either side, and NumPy's protocols."""
    a = data("float32", SHAPE, 80)
    x = dist(a, grid=GRID)
    others = {
        "row": data("float32", (5,), 81),
        "col": data("float64", (7, 1), 82),
        "full": data("int16", SHAPE, 83),
        "0-d": np.asarray(2.5, np.float64),
        "np.float32": np.float32(1.5),
        "np.int64": np.int64(3),
    }
    for label, other in others.items():
        for name in ("add", "divide", "greater", "where"):
            if name == "where":
                cond = a > 0
                want = np.where(cond, other, a)
                xc = dist(cond, grid=GRID)

                def call(xc=xc, other=other) -> Any:
                    return ew.where(xc, other, x)

                likes = xc
            else:
                want = binary_want(name, other, a)
                fn = getattr(ew, name)

                def call(fn=fn, other=other) -> Any:
                    return fn(other, x)

                likes = x
            case(
                f"numpy operand {name} {label}",
                lambda call=call, want=want, likes=likes, name=name: run(
                    name, call, want, like=likes, fetched=0
                ),
            )
    row = others["row"]
    case("ndarray + dist", lambda: run("radd", lambda: row + x, row + a, like=x, fetched=0))
    case("dist - ndarray", lambda: run("sub", lambda: x - row, a - row, like=x, fetched=0))
    case("ndarray < dist", lambda: run("lt", lambda: row < x, row < a, like=x, fetched=0))
    case("2 ** dist", lambda: run("rpow", lambda: 2**x, 2**a, like=x, fetched=0))
    y = dist(data("float32", SHAPE, 84), tiles=(4, 3))
    b = data("float32", SHAPE, 84)
    case("np.add(dist, dist)", lambda: run("np.add", lambda: np.add(x, y), a + b, like=x))
    case("np.exp(dist)", lambda: run("np.exp", lambda: np.exp(x), reference(np.exp, a), like=x))
    case(
        "np.maximum(ndarray, dist)",
        lambda: run("np.maximum", lambda: np.maximum(row, x), np.maximum(row, a), like=x),
    )
    case(
        "np.where(dist, dist, scalar)",
        lambda: run("np.where", lambda: np.where(x > 0, y, 0.0), np.where(a > 0, b, 0.0), like=x),
    )
    case(
        "np.clip(dist, lo, hi)",
        lambda: run("np.clip", lambda: np.clip(x, -1.0, 1.0), np.clip(a, -1.0, 1.0), like=x),
    )
    case("np.real(dist)", lambda: run("np.real", lambda: np.real(x), np.real(a), like=x))
    case("np.shape(dist)", lambda: expect(np.shape(x) == SHAPE and np.ndim(x) == 2, "np.shape"))
    case(
        "np.fft.fft refused",
        lambda: raises(TypeError, lambda: np.fft.fft(x), "numpy.fft.fft", "to_numpy()"),
    )
    case("np.add.reduce refused", lambda: raises(TypeError, lambda: np.add.reduce(x)))
    case("np.asarray refused", lambda: raises(TypeError, lambda: np.asarray(x), "to_numpy()"))


def special_functions() -> None:
    """pow of integers with negative exponents, clip, where, astype."""
    base = np.array([1, -1, -1, 2, 0, 3, -4, 5], np.int16)
    expo = np.array([-2, -3, -4, -1, -1, 2, 3, 0], np.int16)
    truncated = np.array([1, -1, 1, 0, 0, 9, -64, 1], np.int16)
    xb, xe = dist(base, grid=(3,)), dist(expo, tiles=(3,))
    case("pow negative", lambda: run("pow", lambda: ew.pow(xb, xe), truncated, like=xb, whole=True))
    case(
        "pow negative scalar",
        lambda: run(
            "pow", lambda: ew.pow(xb, -3), np.array([1, -1, -1, 0, 0, 0, 0, 0], np.int16), like=xb
        ),
    )
    # clip: bounds as scalars, arrays, distributed arrays; x's dtype kept
    for dtype in ("int8", "uint32", "float32", "float64"):
        a = data(dtype, SHAPE, 90)
        lo, hi = data(dtype, (5,), 91), data(dtype, (7, 1), 92)
        hi = np.maximum(hi, lo.max())  # min <= max (otherwise unspecified)
        x = dist(a, grid=GRID)
        dlo = dist(lo, grid=(2,))
        variants = {
            "scalars": ((3, 20), np.clip(a, 3, 20)),
            "min only": ((5, None), np.maximum(a, np.asarray(5, a.dtype))),
            "max only": ((None, 7), np.minimum(a, np.asarray(7, a.dtype))),
            "none": ((None, None), a),
            "arrays": ((lo, hi), np.clip(a, lo, hi)),
            "dist bound": ((dlo, hi), np.clip(a, lo, hi)),
        }
        if dtype == "int8":
            variants["wide scalars"] = ((-1000, 1000), a)
        for label, ((mn, mx), want) in variants.items():
            case(
                f"clip {dtype} {label}",
                lambda mn=mn, mx=mx, want=want, x=x: run(
                    "clip",
                    lambda: ew.clip(x, min=mn, max=mx),
                    want.astype(x.dtype),
                    like=x,
                    whole=True,
                ),
            )
    xc = dist(data("complex64", SHAPE, 93))
    case("clip complex refused", lambda: raises(TypeError, lambda: ew.clip(xc, 0, 1), "clip"))
    # where: scalars both sides, three layouts, broadcasting condition
    a, b = data("float64", SHAPE, 94), data("int32", SHAPE, 95)
    cond = data("bool", (7, 1), 96)
    xa, xb2, xcond = dist(a, grid=GRID), dist(b, tiles=(2, 2)), dist(cond, grid=(2, 1))
    xfull = dist(np.broadcast_to(cond, SHAPE).copy(), grid=GRID)
    case(
        "where three layouts",
        lambda: run("where", lambda: ew.where(xcond, xa, xb2), np.where(cond, a, b), like=xa),
    )
    case(
        "where counted fetches",
        lambda: run(
            "where", lambda: ew.where(xfull, xa, xb2), np.where(cond, a, b), like=xfull, fetched=1
        ),
    )
    case(
        "where scalars",
        lambda: run(
            "where",
            lambda: ew.where(xfull, 1, -1.5),
            np.where(np.broadcast_to(cond, SHAPE), 1, -1.5),
            like=xfull,
        ),
    )
    case(
        "where int scalar keeps int32",
        lambda: run("where", lambda: ew.where(xfull, xb2, 7), np.where(cond, b, 7), like=xfull),
    )
    # astype: every pair of dtypes; complex to real refused; copy
    for d1 in DTYPES:
        values = data(d1, SHAPE, 97)
        x = dist(values, grid=GRID)
        for d2 in DTYPES:
            if np.dtype(d1).kind == "c" and np.dtype(d2).kind not in "cb":
                case(
                    f"astype {d1} {d2} refused",
                    lambda x=x, d2=d2: raises(
                        TypeError, lambda: ew.astype(x, np.dtype(d2)), "imaginary"
                    ),
                )
                continue
            with np.errstate(all="ignore"):
                want = values.astype(d2)
            case(
                f"astype {d1} {d2}",
                lambda x=x, d2=d2, want=want: run(
                    "astype", lambda: ew.astype(x, np.dtype(d2)), want, like=x, fetched=0
                ),
            )
    x = dist(data("float32", SHAPE, 98), grid=GRID)
    case("astype copy=False same", lambda: expect(ew.astype(x, x.dtype, copy=False) is x, "same"))
    case(
        "astype copy=True new",
        lambda: expect(
            all(t is not x.local_tiles[p] for p, t in ew.astype(x, x.dtype).local_tiles.items()),
            "copied",
        ),
    )


def argument_errors() -> None:
    """Errors decided from metadata: the same on every rank, naming the argument."""
    x = dist(data("float64", SHAPE, 99), grid=GRID)
    i = dist(data("int8", SHAPE, 99), grid=GRID)
    c = dist(data("complex128", SHAPE, 99), grid=GRID)
    checks = [
        ("string operand", TypeError, lambda: ew.add(x, "1"), ("x2", "str")),
        ("list operand", TypeError, lambda: ew.multiply([1, 2], x), ("x1", "list")),
        ("scalar to unary", TypeError, lambda: ew.exp(1.0), ("exp", "x")),
        ("numpy to unary", TypeError, lambda: ew.sin(np.ones(3)), ("sin", "x")),
        ("no DistArray", TypeError, lambda: ew.add(np.ones(3), 1), ("add", "DistArray")),
        ("bitwise float", TypeError, lambda: ew.bitwise_and(x, x), ("bitwise_and", "float64")),
        ("complex order", TypeError, lambda: ew.less(c, 1), ("less", "complex128")),
        ("int8 overflow", OverflowError, lambda: ew.add(i, 1000), ("add", "1000")),
        ("sqrt int8 float16", TypeError, lambda: ew.sqrt(i), ("sqrt", "float16")),
        ("bool add", TypeError, lambda: ew.add(x > 0, True), ("add", "logical_or")),
        ("astype dtype", TypeError, lambda: ew.astype(x, "U4"), ("astype", "dtype")),
        ("astype device", ValueError, lambda: ew.astype(x, np.int8, device="gpu:9"), ("device",)),
        ("where shapes", ValueError, lambda: ew.where(x > 0, x, np.ones(4)), ("x2", "(4,)")),
    ]
    for label, exc, fn, needles in checks:
        case(f"error {label}", lambda exc=exc, fn=fn, needles=needles: raises(exc, fn, *needles))


def wrong_fetch_count() -> None:
    """Layouts that differ only in owners are fetched (owners are part of the layout)."""
    a, b = data("float64", SHAPE, 100), data("float64", SHAPE, 101)
    x1 = dist(a, grid=(size, 1))
    own = (np.arange(size, dtype=np.int32)[::-1]).reshape(size, 1)
    x2 = dist(b, grid=(size, 1), owners=own)
    case(
        "owners differ",
        lambda: run("add", lambda: ew.add(x1, x2), a + b, like=x1, fetched=1 if size > 1 else 0),
    )


unary_sweep()
binary_sweep()
scalar_sweep()
mixed_dtypes()
broadcasting()
layouts()
numpy_operands()
special_functions()
argument_errors()
wrong_fetch_count()
rt.barrier()
emit("done", rank=rank, size=size, **results)
rt.close()
