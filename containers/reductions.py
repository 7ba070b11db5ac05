"""Reductions of distributed arrays: statistics, any/all, argmin/argmax, cumulative sums, diff.

A reduction over ``axes`` finds its result along one of three paths, chosen from the tiling
alone (so every rank takes the same one):

* **local**: no reduced axis is cut and some axis is kept. Each tile is reduced where it
  is; the result keeps the other axes' tiling and owners (no message).
* **everyone**: every kept axis is uncut, so the result is one tile (always so for a full
  reduction). Every rank combines the partial results of the tiles it counts
  (:meth:`DistArray.counted_tiles`); one ``allreduce`` per state field combines the ranks'
  (sum, prod, min, max, any, all, mean), or, where the state does not combine elementwise
  (var/std, argmin/argmax), one ``allgather`` of each rank's small state. The result is
  held by every rank (:func:`replicated`).
* **owners**: otherwise. Each tile's partial result becomes a tile of an array of partials
  (one slab per block along the reduced axes); each result tile goes to an owner (tiles in
  C order over the ranks), which fetches the partials of its row of blocks
  (:meth:`DistArray.fetch_regions`) and combines them. Nothing is gathered to one rank.

A reduction is described by a :class:`Reducer`: the state of one tile (keeping the reduced
axes as length 1), an order-free combination of two states, the state of no data, and the
final step. Combining in block order keeps results identical on every rank.
"""

from __future__ import annotations

import builtins
import dataclasses
import itertools
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from gpupart.containers import layout
from gpupart.containers.darray import REPLICATED, DistArray, host_array
from gpupart.containers.manipulation import check_array, normalize_axis

from gpupart.protocol import Tiling
from gpupart.trace import ranged

__all__ = [
    "all",
    "any",
    "argmax",
    "argmin",
    "count_nonzero",
    "cumulative_prod",
    "cumulative_sum",
    "diff",
    "max",
    "mean",
    "min",
    "prod",
    "std",
    "sum",
    "var",
]

Position = tuple[int, ...]
State = tuple[Any, ...]
_NO_INDEX = np.iinfo(np.int64).max  # index of "no element" in an argmin/argmax state


# -- shared helpers (linalg uses them too) ---------------------------------------------------


def replicated(rt: Any, value: Any) -> DistArray:
    """Return ``value`` (an array every rank computed alike) as a DistArray every rank holds."""
    xp = rt.backend.xp
    value = xp.asarray(value)
    tiling = Tiling.from_boundaries([[0, n] for n in value.shape])
    owners = np.full(tiling.grid, REPLICATED, dtype=np.int32)
    return DistArray(rt, tiling, owners, value.dtype, {(0,) * value.ndim: value})


def is_replicated(x: DistArray) -> bool:
    """Return whether every rank holds every tile of ``x``."""
    return bool((np.asarray(x.owners) == REPLICATED).all())


def local_whole(x: DistArray) -> Any:
    """Return the whole of a replicated ``x`` from this rank's own tiles (no message)."""
    if len(x.local_tiles) == 1 and x.tiling.num_partitions == 1:
        return next(iter(x.local_tiles.values()))
    out = x.xp.empty(x.shape, dtype=x.dtype)
    for pos, start, stop in x.boxes():
        out[tuple(slice(a, b) for a, b in zip(start, stop, strict=True))] = x.local_tiles[pos]
    return out


def normalize_axes(axis: Any, ndim: int, name: str = "axis") -> tuple[int, ...]:
    """Return ``axis`` (None, an int or a tuple of ints) as sorted distinct axes."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (list, np.ndarray)):
        raise TypeError(f"{name}: expected an int, a tuple of ints or None, found {axis!r}")
    items = axis if isinstance(axis, tuple) else (axis,)
    found = [normalize_axis(a, ndim, name) for a in items]
    if len(set(found)) != len(found):
        raise ValueError(f"{name}: expected distinct axes, found {axis!r}")
    return tuple(sorted(found))


# -- the reduction engine ---------------------------------------------------------------------


@dataclass(frozen=True)
class Reducer:
    """How one reduction combines (see the module docstring).

    ``partial(xp, tile, axes, start)`` is a non-empty tile's state (a tuple of arrays, the
    reduced axes kept as length 1; ``start`` is the tile's global start); ``combine(xp, a,
    b)`` merges two states elementwise, in any order; ``identity(xp, shape)`` is the state of
    no data; ``finish(xp, state, count)`` is the result, ``count`` elements reduced into
    each. ``dtype`` is the result's dtype, ``dtypes`` the state fields'; ``ops`` names the
    ``allreduce`` op of each field when states combine that way across ranks, else ``None``
    (an all-gather of each rank's state).
    """

    partial: Callable[[Any, Any, tuple[int, ...], tuple[int, ...]], State]
    combine: Callable[[Any, State, State], State]
    identity: Callable[[Any, tuple[int, ...]], State]
    finish: Callable[[Any, State, int], Any]
    dtype: np.dtype
    dtypes: tuple[np.dtype, ...]
    ops: tuple[str, ...] | None


def _tile_state(red: Reducer, xp: Any, tile: Any, axes: tuple[int, ...], start: Any) -> State:
    """Return the state of one tile (the identity for a tile empty along a reduced axis)."""
    if builtins.any(tile.shape[d] == 0 for d in axes):
        return red.identity(xp, tuple(1 if d in axes else n for d, n in enumerate(tile.shape)))
    return tuple(xp.asarray(f) for f in red.partial(xp, tile, axes, start))


def _fold(red: Reducer, xp: Any, states: list[State], shape: tuple[int, ...]) -> State:
    """Combine ``states`` in order (the identity of ``shape`` when there are none)."""
    if not states:
        return red.identity(xp, shape)
    state = states[0]
    for other in states[1:]:
        state = tuple(xp.asarray(f) for f in red.combine(xp, state, other))
    return state


def _drop(seq: Any, axes: tuple[int, ...]) -> tuple[Any, ...]:
    return tuple(v for d, v in enumerate(seq) if d not in axes)


@ranged("compute.reduce")
def reduce(x: DistArray, axes: tuple[int, ...], keepdims: bool, red: Reducer) -> DistArray:
    """Reduce ``x`` over ``axes`` (sorted, distinct) with ``red`` (collective; see module)."""
    rt, xp = x.runtime, x.xp
    grid, bounds = x.tiling.grid, x.tiling.boundaries
    kept = [d for d in range(x.ndim) if d not in axes]
    count = math.prod(x.shape[d] for d in axes)
    out_bounds = [[0, 1] if d in axes else bounds[d] for d in range(x.ndim)]

    def done(state: State) -> Any:
        out = xp.asarray(red.finish(xp, state, count))
        return out if keepdims else out.reshape(_drop(out.shape, axes))

    def result(owners: np.ndarray, tiles: dict[Position, Any]) -> DistArray:
        b, o = out_bounds, np.ascontiguousarray(owners, dtype=np.int32)
        if not keepdims:
            b, o = list(_drop(b, axes)), o.reshape(_drop(o.shape, axes))
            tiles = {_drop(pos, axes): t for pos, t in tiles.items()}
        return DistArray(rt, Tiling.from_boundaries(b), o, red.dtype, tiles)

    if kept and builtins.all(grid[d] == 1 for d in axes):  # local
        tiles = {}
        for pos, start, _ in x.boxes():
            q = tuple(0 if d in axes else p for d, p in enumerate(pos))
            tiles[q] = done(_tile_state(red, xp, x.local_tiles[pos], axes, start))
        first = tuple(slice(0, 1) if d in axes else slice(None) for d in range(x.ndim))
        return result(x.owners[first], tiles)
    if builtins.all(grid[d] == 1 for d in kept):  # everyone: the result is one tile
        return replicated(rt, done(_everyone(x, axes, red)))
    return _by_owners(x, axes, red, done, result)


def _everyone(x: DistArray, axes: tuple[int, ...], red: Reducer) -> State:
    """Return the state of the whole reduction on every rank (kept axes uncut)."""
    rt, xp = x.runtime, x.xp
    shape = tuple(1 if d in axes else n for d, n in enumerate(x.shape))
    alone = is_replicated(x)  # every tile is here: no message
    use = x.local_tiles if alone else dict(x.counted_tiles())
    states = [
        _tile_state(red, xp, x.local_tiles[pos], axes, start)
        for pos, start, _ in x.boxes()
        if pos in use
    ]
    state = _fold(red, xp, states, shape)
    if alone:
        return state
    if red.ops is not None:
        return tuple(rt.allreduce(f, op) for f, op in zip(state, red.ops, strict=True))
    gathered = rt.allgather(tuple(host_array(f) for f in state))
    return _fold(red, xp, [tuple(xp.asarray(f) for f in s) for s in gathered], shape)


def _by_owners(
    x: DistArray,
    axes: tuple[int, ...],
    red: Reducer,
    done: Callable[[State], Any],
    result: Callable[[np.ndarray, dict[Position, Any]], DistArray],
) -> DistArray:
    """Each result tile's owner fetches the partial states of its row of blocks."""
    rt, xp = x.runtime, x.xp
    grid, bounds = x.tiling.grid, x.tiling.boundaries
    part_tiling = Tiling.from_boundaries(
        [list(range(grid[d] + 1)) if d in axes else bounds[d] for d in range(x.ndim)]
    )
    fields: list[dict[Position, Any]] = [{} for _ in red.dtypes]
    for pos, start, _ in x.boxes():
        for i, f in enumerate(_tile_state(red, xp, x.local_tiles[pos], axes, start)):
            fields[i][pos] = f
    partials = [
        DistArray(rt, part_tiling, x.owners, dt, f)
        for dt, f in zip(red.dtypes, fields, strict=True)
    ]
    out_tiling = Tiling.from_boundaries([[0, 1] if d in axes else bounds[d] for d in range(x.ndim)])
    if is_replicated(x):
        owners = np.full(out_tiling.grid, REPLICATED, dtype=np.int32)
    else:
        owners = layout.assign_owners(out_tiling, rt.size)
    mine = [q for q in layout.positions(out_tiling) if owners[q] in (rt.rank, REPLICATED)]
    boxes = []
    for q in mine:
        lo, hi = layout.tile_box(out_tiling, q)
        boxes.append(
            (
                tuple(0 if d in axes else lo[d] for d in range(x.ndim)),
                tuple(grid[d] if d in axes else hi[d] for d in range(x.ndim)),
            )
        )
    fetched = [p.fetch_regions(boxes) for p in partials]
    blocks = list(itertools.product(*(range(grid[d]) for d in axes)))
    tiles = {}
    for j, q in enumerate(mine):
        states = []
        for combo in blocks:
            index = [slice(None)] * x.ndim
            for d, i in zip(axes, combo, strict=True):
                index[d] = slice(i, i + 1)
            states.append(tuple(f[j][tuple(index)] for f in fetched))
        shape = out_tiling.tile_shape(q)
        tiles[q] = done(_fold(red, xp, states, shape))
    return result(owners, tiles)


# -- the reductions ---------------------------------------------------------------------------


def _check_keepdims(keepdims: Any) -> bool:
    if not isinstance(keepdims, (bool, np.bool_)):
        raise TypeError(f"keepdims: expected a bool, found {keepdims!r}")
    return builtins.bool(keepdims)


def _acc_dtype(probe: Callable[..., Any], x_dtype: np.dtype, dtype: Any) -> np.dtype:
    """Return the dtype NumPy's ``probe`` (np.sum, np.prod, np.cumsum) gives for ``dtype``."""
    try:
        return np.dtype(probe(np.zeros(1, x_dtype), dtype=dtype).dtype)
    except TypeError:
        raise TypeError(f"dtype: expected a numeric dtype or None, found {dtype!r}") from None


def _monoid(dt: np.dtype, tile_fn: Callable, merge: Callable, fill: Any, op: str) -> Reducer:
    """Return a reducer whose state is one array merged elementwise by ``merge``."""
    return Reducer(
        partial=lambda xp, t, axes, start: (tile_fn(xp, t, axes),),
        combine=lambda xp, a, b: (merge(xp, a[0], b[0]),),
        identity=lambda xp, shape: (xp.full(shape, fill, dtype=dt),),
        finish=lambda xp, state, count: state[0],
        dtype=dt,
        dtypes=(dt,),
        ops=(op,),
    )


def _extreme(dt: np.dtype, high: bool) -> Any:
    """Return the largest (``high``) or smallest value of ``dt``: min's and max's identity."""
    if dt.kind == "b":
        return high
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return int(info.max if high else info.min)
    if dt.kind == "f":
        return math.inf if high else -math.inf
    if dt.kind == "c":
        return complex(math.inf, math.inf) if high else complex(-math.inf, -math.inf)
    raise TypeError(f"x: expected a numeric or bool dtype, found {dt}")


def _nonempty(x: DistArray, axes: tuple[int, ...], name: str) -> None:
    if math.prod(x.shape[d] for d in axes) == 0:
        raise ValueError(
            f"{name}: expected at least one element along the reduced axes {axes} of an array"
            f" of shape {x.shape} (a zero-size {name} has no identity), found none"
        )


def sum(
    x: DistArray, /, *, axis: Any = None, dtype: Any = None, keepdims: bool = False
) -> DistArray:
    """Return the sum over ``axis`` (all axes by default); integers accumulate like NumPy's."""
    x = check_array(x)
    dt = _acc_dtype(np.sum, x.dtype, dtype)
    red = _monoid(
        dt,
        lambda xp, t, axes: xp.sum(t, axis=axes, dtype=dt, keepdims=True),
        lambda xp, a, b: a + b,
        0,
        "sum",
    )
    return reduce(x, normalize_axes(axis, x.ndim), _check_keepdims(keepdims), red)


def prod(
    x: DistArray, /, *, axis: Any = None, dtype: Any = None, keepdims: bool = False
) -> DistArray:
    """Return the product over ``axis`` (all axes by default)."""
    x = check_array(x)
    dt = _acc_dtype(np.prod, x.dtype, dtype)
    red = _monoid(
        dt,
        lambda xp, t, axes: xp.prod(t, axis=axes, dtype=dt, keepdims=True),
        lambda xp, a, b: a * b,
        1,
        "prod",
    )
    return reduce(x, normalize_axes(axis, x.ndim), _check_keepdims(keepdims), red)


def min(x: DistArray, /, *, axis: Any = None, keepdims: bool = False) -> DistArray:
    """Return the minimum over ``axis`` (NaN wins, like NumPy's; no element: ValueError)."""
    x = check_array(x)
    axes = normalize_axes(axis, x.ndim)
    _nonempty(x, axes, "min")
    red = _monoid(
        x.dtype,
        lambda xp, t, ax: xp.min(t, axis=ax, keepdims=True),
        lambda xp, a, b: xp.minimum(a, b),
        _extreme(x.dtype, high=True),
        "min",
    )
    return reduce(x, axes, _check_keepdims(keepdims), red)


def max(x: DistArray, /, *, axis: Any = None, keepdims: bool = False) -> DistArray:
    """Return the maximum over ``axis`` (NaN wins, like NumPy's; no element: ValueError)."""
    x = check_array(x)
    axes = normalize_axes(axis, x.ndim)
    _nonempty(x, axes, "max")
    red = _monoid(
        x.dtype,
        lambda xp, t, ax: xp.max(t, axis=ax, keepdims=True),
        lambda xp, a, b: xp.maximum(a, b),
        _extreme(x.dtype, high=False),
        "max",
    )
    return reduce(x, axes, _check_keepdims(keepdims), red)


def any(x: DistArray, /, *, axis: Any = None, keepdims: bool = False) -> DistArray:
    """Return whether any element along ``axis`` is true (non-zero)."""
    x = check_array(x)
    red = _monoid(
        np.dtype(np.bool_),
        lambda xp, t, axes: xp.any(t, axis=axes, keepdims=True),
        lambda xp, a, b: a | b,
        False,
        "max",
    )
    return reduce(x, normalize_axes(axis, x.ndim), _check_keepdims(keepdims), red)


def all(x: DistArray, /, *, axis: Any = None, keepdims: bool = False) -> DistArray:
    """Return whether every element along ``axis`` is true (non-zero)."""
    x = check_array(x)
    red = _monoid(
        np.dtype(np.bool_),
        lambda xp, t, axes: xp.all(t, axis=axes, keepdims=True),
        lambda xp, a, b: a & b,
        True,
        "min",
    )
    return reduce(x, normalize_axes(axis, x.ndim), _check_keepdims(keepdims), red)


def count_nonzero(x: DistArray, /, *, axis: Any = None, keepdims: bool = False) -> DistArray:
    """Return the number of non-zero elements along ``axis`` (int64)."""
    x = check_array(x)
    dt = np.dtype(np.int64)
    red = _monoid(
        dt,
        lambda xp, t, axes: xp.sum(t != 0, axis=axes, dtype=dt, keepdims=True),
        lambda xp, a, b: a + b,
        0,
        "sum",
    )
    return reduce(x, normalize_axes(axis, x.ndim), _check_keepdims(keepdims), red)


def _float_dtype(dt: np.dtype) -> np.dtype:
    """Return the dtype mean/var compute in: floats keep theirs, the rest get float64."""
    return dt if dt.kind in "fc" else np.dtype(np.float64)


def mean(x: DistArray, /, *, axis: Any = None, keepdims: bool = False) -> DistArray:
    """Return the arithmetic mean over ``axis`` (integers give float64, like NumPy's)."""
    x = check_array(x)
    dt = _float_dtype(x.dtype)

    def finish(xp: Any, state: State, count: int) -> Any:
        if count == 0:
            return xp.full(state[0].shape, math.nan, dtype=dt)
        return (state[0] / count).astype(dt, copy=False)

    red = _monoid(
        dt,
        lambda xp, t, axes: xp.sum(t, axis=axes, dtype=dt, keepdims=True),
        lambda xp, a, b: a + b,
        0,
        "sum",
    )
    red = dataclasses.replace(red, finish=finish)
    return reduce(x, normalize_axes(axis, x.ndim), _check_keepdims(keepdims), red)


def _moments(x_dtype: np.dtype, correction: Any, root: bool) -> Reducer:
    """Return the var (or, with ``root``, std) reducer: states ``(count, mean, M2)``.

    Two states combine with Chan et al.'s pairwise update, ``M2 = M2a + M2b + |mb - ma|^2 na
    nb / n``, which never subtracts large sums (numerically stable at any number of tiles).
    """
    if isinstance(correction, bool) or not isinstance(correction, (int, float, np.number)):
        raise TypeError(f"correction: expected an int or a float, found {correction!r}")
    acc = _float_dtype(x_dtype)
    real = np.empty(0, acc).real.dtype
    n_dt = np.dtype(np.int64)

    def abs2(d: Any) -> Any:
        return d.real * d.real + d.imag * d.imag if acc.kind == "c" else d * d

    def partial(xp: Any, t: Any, axes: tuple[int, ...], start: Any) -> State:
        n = math.prod(t.shape[d] for d in axes)
        t = t.astype(acc, copy=False)
        m = (xp.sum(t, axis=axes, keepdims=True) / n).astype(acc, copy=False)
        m2 = xp.sum(abs2(t - m), axis=axes, keepdims=True).astype(real, copy=False)
        return xp.full(m.shape, n, dtype=n_dt), m, m2

    def combine(xp: Any, a: State, b: State) -> State:
        (na, ma, qa), (nb, mb, qb) = a, b
        n = na + nb
        w = nb / xp.where(n > 0, n, 1)
        delta = mb - ma
        m = (ma + delta * w).astype(acc, copy=False)
        q = (qa + qb + abs2(delta) * na * w).astype(real, copy=False)
        return n, m, q

    def identity(xp: Any, shape: tuple[int, ...]) -> State:
        return xp.zeros(shape, n_dt), xp.zeros(shape, acc), xp.zeros(shape, real)

    def finish(xp: Any, state: State, count: int) -> Any:
        denom = count - correction
        if denom <= 0:  # the standard's rule (NumPy gives inf, or NaN for 0/0)
            return xp.full(state[2].shape, math.nan, dtype=real)
        out = (state[2] / denom).astype(real, copy=False)
        return xp.sqrt(out) if root else out

    return Reducer(partial, combine, identity, finish, real, (n_dt, acc, real), None)


def var(
    x: DistArray,
    /,
    *,
    axis: Any = None,
    correction: int | float = 0.0,
    keepdims: bool = False,
) -> DistArray:
    """Return the variance over ``axis``, divided by ``N - correction`` (NaN if that is <= 0)."""
    x = check_array(x)
    red = _moments(x.dtype, correction, root=False)
    return reduce(x, normalize_axes(axis, x.ndim), _check_keepdims(keepdims), red)


def std(
    x: DistArray,
    /,
    *,
    axis: Any = None,
    correction: int | float = 0.0,
    keepdims: bool = False,
) -> DistArray:
    """Return the standard deviation over ``axis`` (the square root of :func:`var`)."""
    x = check_array(x)
    red = _moments(x.dtype, correction, root=True)
    return reduce(x, normalize_axes(axis, x.ndim), _check_keepdims(keepdims), red)


def _arg(x: DistArray, axis: Any, keepdims: bool, name: str, smallest: bool) -> DistArray:
    """Return the index of the first smallest (or largest) element; NaN wins, like NumPy's."""
    x = check_array(x)
    if axis is not None and (isinstance(axis, bool) or not isinstance(axis, (int, np.integer))):
        raise TypeError(f"axis: expected an int or None, found {axis!r}")
    axes = normalize_axes(axis, x.ndim)
    if math.prod(x.shape[d] for d in axes) == 0:
        raise ValueError(
            f"{name}: expected at least one element along axis {axis} of an array of shape"
            f" {x.shape}, found none"
        )
    dt, gshape = x.dtype, x.shape
    pick = "argmin" if smallest else "argmax"
    idx = np.dtype(np.int64)
    nan_able = dt.kind in "fc"

    def partial(xp: Any, t: Any, ax: tuple[int, ...], start: Any) -> State:
        kept = t.ndim - len(ax)
        moved = xp.moveaxis(t, ax, list(range(kept, t.ndim)))
        flat = moved.reshape((*moved.shape[:kept], math.prod(t.shape[d] for d in ax)))
        i = getattr(xp, pick)(flat, axis=-1)[..., None]
        value = xp.take_along_axis(flat, i, axis=-1)
        if ax:
            local = xp.unravel_index(i, tuple(t.shape[d] for d in ax))
            where = tuple(c + start[d] for c, d in zip(local, ax, strict=True))
            index = xp.ravel_multi_index(where, tuple(gshape[d] for d in ax))
        else:
            index = xp.zeros_like(i)
        shape = tuple(1 if d in ax else n for d, n in enumerate(t.shape))
        return value.reshape(shape), index.astype(idx, copy=False).reshape(shape)

    def combine(xp: Any, a: State, b: State) -> State:
        (va, ia), (vb, ib) = a, b
        earlier = ib < ia
        better = (vb < va) if smallest else (vb > va)
        ordered = better | ((vb == va) & earlier)
        if nan_able:
            na, nb = xp.isnan(va), xp.isnan(vb)
            take = (nb & ~na) | (nb & na & earlier) | (~nb & ~na & ordered)
        else:
            take = ordered
        return xp.where(take, vb, va), xp.where(take, ib, ia)

    def identity(xp: Any, shape: tuple[int, ...]) -> State:
        fill = _extreme(dt, high=smallest)
        return xp.full(shape, fill, dtype=dt), xp.full(shape, _NO_INDEX, dtype=idx)

    red = Reducer(partial, combine, identity, lambda xp, s, n: s[1], idx, (dt, idx), None)
    return reduce(x, axes, _check_keepdims(keepdims), red)


def argmin(x: DistArray, /, *, axis: int | None = None, keepdims: bool = False) -> DistArray:
    """Return the index of the first minimum along ``axis`` (of the flattened array if None)."""
    return _arg(x, axis, keepdims, "argmin", smallest=True)


def argmax(x: DistArray, /, *, axis: int | None = None, keepdims: bool = False) -> DistArray:
    """Return the index of the first maximum along ``axis`` (of the flattened array if None)."""
    return _arg(x, axis, keepdims, "argmax", smallest=False)


# -- cumulative sums and products -------------------------------------------------------------


def _cumulative(
    x: DistArray, axis: Any, dtype: Any, include_initial: Any, product: bool
) -> DistArray:
    """Scan each tile; tiles after the first along a cut axis add the totals before them."""
    x = check_array(x)
    if x.ndim == 0:
        raise ValueError("x: expected an array with at least one dimension, found a 0-d array")
    if axis is None:
        if x.ndim != 1:
            raise ValueError(
                f"axis: expected an axis (None is only for 1-d arrays) for a {x.ndim}-d array,"
                " found None"
            )
        axis = 0
    if isinstance(axis, tuple):
        raise TypeError(f"axis: expected an int, found {axis!r}")
    (k,) = normalize_axes(axis, x.ndim)
    if not isinstance(include_initial, (bool, np.bool_)):
        raise TypeError(f"include_initial: expected a bool, found {include_initial!r}")
    dt = _acc_dtype(np.cumprod if product else np.cumsum, x.dtype, dtype)
    rt, xp = x.runtime, x.xp
    scan, total = (xp.cumprod, xp.prod) if product else (xp.cumsum, xp.sum)
    grid, bounds = x.tiling.grid, list(x.tiling.boundaries)
    tiles = {pos: scan(t, axis=k, dtype=dt) for pos, t in x.local_tiles.items()}
    if grid[k] > 1:
        part_bounds = [list(range(grid[k] + 1)) if d == k else b for d, b in enumerate(bounds)]
        totals = DistArray(
            rt,
            Tiling.from_boundaries(part_bounds),
            x.owners,
            dt,
            {pos: total(t, axis=k, dtype=dt, keepdims=True) for pos, t in x.local_tiles.items()},
        )
        order = list(tiles)
        boxes = []
        for pos in order:
            lo, hi = layout.tile_box(x.tiling, pos)
            boxes.append(
                (
                    tuple(0 if d == k else v for d, v in enumerate(lo)),
                    tuple(pos[k] if d == k else v for d, v in enumerate(hi)),
                )
            )
        for pos, before in zip(order, totals.fetch_regions(boxes), strict=True):
            offset = total(before, axis=k, dtype=dt, keepdims=True)
            tiles[pos] = tiles[pos] * offset if product else tiles[pos] + offset
    if include_initial:
        bounds[k] = [0, *(c + 1 for c in list(bounds[k])[1:])]
        for pos, t in tiles.items():
            if pos[k] == 0:
                shape = tuple(1 if d == k else n for d, n in enumerate(t.shape))
                first = xp.full(shape, 1 if product else 0, dtype=dt)
                tiles[pos] = xp.concatenate([first, t], axis=k)
    return DistArray(rt, Tiling.from_boundaries(bounds), x.owners, dt, tiles)


def cumulative_sum(
    x: DistArray,
    /,
    *,
    axis: int | None = None,
    dtype: Any = None,
    include_initial: bool = False,
) -> DistArray:
    """Return the cumulative sums along ``axis`` (optional only for 1-d arrays)."""
    return _cumulative(x, axis, dtype, include_initial, product=False)


def cumulative_prod(
    x: DistArray,
    /,
    *,
    axis: int | None = None,
    dtype: Any = None,
    include_initial: bool = False,
) -> DistArray:
    """Return the cumulative products along ``axis`` (optional only for 1-d arrays)."""
    return _cumulative(x, axis, dtype, include_initial, product=True)


# -- differences ------------------------------------------------------------------------------


def _diff_piece(value: Any, x: DistArray, k: int, name: str) -> Any:
    """Return ``prepend``/``append`` as a DistArray or a whole array of x's shape off ``k``."""
    if value is None:
        return None
    if not isinstance(value, DistArray):
        value = x.xp.asarray(value)
        if value.ndim == 0:
            value = x.xp.broadcast_to(
                value, tuple(1 if d == k else n for d, n in enumerate(x.shape))
            )
    if value.ndim != x.ndim or builtins.any(
        a != b for d, (a, b) in enumerate(zip(value.shape, x.shape, strict=True)) if d != k
    ):
        raise ValueError(
            f"{name}: expected the shape of x {x.shape} except along axis {k} (or a scalar),"
            f" found {tuple(value.shape)}"
        )
    return value


def diff(
    x: DistArray,
    /,
    *,
    axis: int = -1,
    n: int = 1,
    prepend: Any = None,
    append: Any = None,
) -> DistArray:
    """Return the ``n``-th differences along ``axis`` of ``prepend``, ``x``, ``append`` joined.

    The result is cut like ``x`` (the prepended values go to the first block along
    ``axis``) and held by x's owners; each result tile fetches the ``n`` values after its
    block (one ``fetch_regions`` call per distributed operand; none when ``axis`` is uncut
    and the others are small).
    """
    x = check_array(x)
    if x.ndim == 0:
        raise ValueError("x: expected an array with at least one dimension, found a 0-d array")
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis: expected an int, found {axis!r}")
    (k,) = normalize_axes(axis, x.ndim)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n: expected an int, found {n!r}")
    if n < 0:
        raise ValueError(f"n: expected an int >= 0, found {n}")
    if n == 0:
        return x
    rt, xp = x.runtime, x.xp
    head, tail = _diff_piece(prepend, x, k, "prepend"), _diff_piece(append, x, k, "append")
    pieces = [p for p in (head, x, tail) if p is not None]
    starts = list(itertools.accumulate((p.shape[k] for p in pieces), initial=0))
    total = starts[-1]
    count = builtins.max(total - n, 0)
    cuts = list(x.tiling.boundaries[k])
    lead = 0 if head is None else head.shape[k]
    out_cuts = [0, *(builtins.min(lead + c, count) for c in cuts[1:-1]), count]
    mine = list(x.local_tiles)
    wanted = []  # per tile: its result block along k and the joined values it needs
    for pos in mine:
        a, b = out_cuts[pos[k]], out_cuts[pos[k] + 1]
        wanted.append((a, b, a, b + n if b > a else a))
    parts: list[list[Any]] = [[] for _ in mine]
    for piece, start in zip(pieces, starts[:-1], strict=True):
        length = piece.shape[k]
        boxes = []
        for pos, (_, _, lo_k, hi_k) in zip(mine, wanted, strict=True):
            lo, hi = layout.tile_box(x.tiling, pos)
            a = builtins.min(builtins.max(lo_k - start, 0), length)
            b = builtins.min(builtins.max(hi_k - start, 0), length)
            boxes.append(
                (
                    tuple(a if d == k else v for d, v in enumerate(lo)),
                    tuple(b if d == k else v for d, v in enumerate(hi)),
                )
            )
        if piece is x and x.tiling.grid[k] == 1:  # every tile is whole along k: here
            got = [x.local_tiles[pos] for pos in mine]
        elif isinstance(piece, DistArray):
            got = piece.fetch_regions(boxes)
        else:
            got = [piece[tuple(slice(a, b) for a, b in zip(*box, strict=True))] for box in boxes]
        for i, g in enumerate(got):
            parts[i].append(g)
    dtype = np.result_type(*(np.dtype(p.dtype) for p in pieces))
    bounds = list(x.tiling.boundaries)
    bounds[k] = out_cuts
    tiling = Tiling.from_boundaries(bounds)
    tiles = {}
    for pos, (a, b, _, _), chunk in zip(mine, wanted, parts, strict=True):
        if b == a:
            tiles[pos] = xp.empty(tiling.tile_shape(pos), dtype=dtype)
        else:
            joined = xp.concatenate([xp.asarray(c) for c in chunk], axis=k).astype(
                dtype, copy=False
            )
            tiles[pos] = xp.diff(joined, n=n, axis=k)
    return DistArray(rt, tiling, x.owners, dtype, tiles)


# -- Python scalars from 0-d arrays -----------------------------------------------------------


def scalar_value(x: DistArray, kind: str, error: type[Exception] = TypeError) -> np.ndarray:
    """Return the one value of a 0-d ``x`` as a 0-d NumPy array (collective unless replicated)."""
    if x.ndim != 0:
        raise error(f"{kind}(): expected a 0-d array (one value), found shape {x.shape}")
    if is_replicated(x):
        return host_array(local_whole(x))
    return x.to_numpy()


def to_bool(self: DistArray) -> builtins.bool:
    """Return ``bool(x)`` of a 0-d array (``DistArray.__bool__``)."""
    return builtins.bool(scalar_value(self, "bool", ValueError))


def to_int(self: DistArray) -> int:
    """Return ``int(x)`` of a 0-d array (``DistArray.__int__``)."""
    return int(scalar_value(self, "int"))


def to_float(self: DistArray) -> float:
    """Return ``float(x)`` of a 0-d array (``DistArray.__float__``)."""
    return float(scalar_value(self, "float"))


def to_complex(self: DistArray) -> complex:
    """Return ``complex(x)`` of a 0-d array (``DistArray.__complex__``)."""
    return complex(scalar_value(self, "complex"))


def to_index(self: DistArray) -> int:
    """Return ``operator.index(x)`` of a 0-d integer array (``DistArray.__index__``)."""
    return operator.index(scalar_value(self, "index"))
