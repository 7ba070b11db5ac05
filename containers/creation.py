"""Making distributed arrays: from data, from one rank, from each rank's piece, by formula.

A formula (``zeros``, ``arange``, ...) lets each rank build only its own tiles.

Every function here is collective only when it says so; ``tiles=`` (a
:class:`~gpupart.protocol.Tiling` or a block shape) or ``grid=`` (blocks per dimension)
choose the tiling, by default one block per rank along the first axis.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np
from gpupart.containers import layout
from gpupart.containers.darray import DistArray, check_device

from gpupart.errors import CollectiveError
from gpupart.protocol import Tiling

__all__ = [
    "arange",
    "asarray",
    "empty",
    "empty_like",
    "eye",
    "from_local",
    "full",
    "full_like",
    "linspace",
    "ones",
    "ones_like",
    "runtime_or_init",
    "zeros",
    "zeros_like",
]


def runtime_or_init() -> Any:
    """Return the running runtime, or a new one (this process's job, or a world of one)."""
    import gpupart
    from gpupart.errors import NotInitializedError

    try:
        return gpupart.runtime()
    except NotInitializedError:
        return gpupart.init()


def normalize_shape(shape: Any, name: str = "shape") -> tuple[int, ...]:
    """``shape`` as a tuple of non-negative ints (an int is a 1-d shape)."""
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (int(shape),)
    try:
        dims = tuple(operator.index(n) for n in shape)
    except TypeError:
        raise TypeError(f"{name}: expected an int or a tuple of ints, found {shape!r}") from None
    if any(n < 0 for n in dims):
        raise ValueError(f"{name}: expected sizes >= 0, found {dims}")
    return dims


def _layout(rt: Any, shape: tuple[int, ...], tiles: Any, grid: Any) -> tuple[Any, np.ndarray, list]:
    tiling = layout.make_tiling(shape, rt.size, tiles, grid)
    owners = layout.assign_owners(tiling, rt.size)
    mine = [pos for pos in layout.positions(tiling) if owners[pos] == rt.rank]
    return tiling, owners, mine


def _by_formula(shape: Any, dtype: Any, tiles: Any, grid: Any, make: Any) -> DistArray:
    """Make an array whose tile at ``pos`` is ``make(xp, start, stop, dtype)`` (no messages)."""
    rt = runtime_or_init()
    dims = normalize_shape(shape)
    dt = np.dtype(dtype)
    tiling, owners, mine = _layout(rt, dims, tiles, grid)
    xp = rt.backend.xp
    data = {}
    for pos in mine:
        start, stop = layout.tile_box(tiling, pos)
        data[pos] = make(xp, start, stop, dt)
    return DistArray(rt, tiling, owners, dt, data)


def _extent(start: tuple[int, ...], stop: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(b - a for a, b in zip(start, stop, strict=True))


def empty(
    shape: Any,
    dtype: Any = np.float64,
    *,
    device: Any = None,
    tiles: Any = None,
    grid: Any = None,
) -> DistArray:
    """Return an uninitialised array (no communication)."""
    check_device(runtime_or_init(), device)
    return _by_formula(shape, dtype, tiles, grid, lambda xp, a, b, dt: xp.empty(_extent(a, b), dt))


def zeros(
    shape: Any,
    dtype: Any = np.float64,
    *,
    device: Any = None,
    tiles: Any = None,
    grid: Any = None,
) -> DistArray:
    """Return an array of zeros (no communication)."""
    check_device(runtime_or_init(), device)
    return _by_formula(shape, dtype, tiles, grid, lambda xp, a, b, dt: xp.zeros(_extent(a, b), dt))


def ones(
    shape: Any,
    dtype: Any = np.float64,
    *,
    device: Any = None,
    tiles: Any = None,
    grid: Any = None,
) -> DistArray:
    """Return an array of ones (no communication)."""
    check_device(runtime_or_init(), device)
    return _by_formula(shape, dtype, tiles, grid, lambda xp, a, b, dt: xp.ones(_extent(a, b), dt))


def full(
    shape: Any,
    fill_value: Any,
    dtype: Any = None,
    *,
    device: Any = None,
    tiles: Any = None,
    grid: Any = None,
) -> DistArray:
    """Return an array of ``fill_value`` (dtype inferred unless given; no communication)."""
    check_device(runtime_or_init(), device)
    dt = np.result_type(fill_value) if dtype is None else np.dtype(dtype)
    if dtype is None and isinstance(fill_value, bool):
        dt = np.dtype(bool)
    elif dtype is None and isinstance(fill_value, int):
        dt = np.dtype(np.int64)
    elif dtype is None and isinstance(fill_value, float):
        dt = np.dtype(np.float64)
    return _by_formula(
        shape, dt, tiles, grid, lambda xp, a, b, d: xp.full(_extent(a, b), fill_value, d)
    )


def _like(x: DistArray, dtype: Any, make: Any) -> DistArray:
    """Make an array laid out like ``x`` whose tiles ``make(xp, shape, dtype)`` builds."""
    dt = x.dtype if dtype is None else np.dtype(dtype)
    return x.like({pos: make(x.xp, tuple(t.shape), dt) for pos, t in x.local_tiles.items()}, dt)


def empty_like(x: DistArray, /, *, dtype: Any = None, device: Any = None) -> DistArray:
    """Return an uninitialised array laid out like ``x`` (no communication)."""
    check_device(runtime_or_init(), device)
    return _like(x, dtype, lambda xp, shape, dt: xp.empty(shape, dt))


def zeros_like(x: DistArray, /, *, dtype: Any = None, device: Any = None) -> DistArray:
    """Return zeros laid out like ``x`` (no communication)."""
    check_device(runtime_or_init(), device)
    return _like(x, dtype, lambda xp, shape, dt: xp.zeros(shape, dt))


def ones_like(x: DistArray, /, *, dtype: Any = None, device: Any = None) -> DistArray:
    """Return ones laid out like ``x`` (no communication)."""
    check_device(runtime_or_init(), device)
    return _like(x, dtype, lambda xp, shape, dt: xp.ones(shape, dt))


def full_like(
    x: DistArray, /, fill_value: Any, *, dtype: Any = None, device: Any = None
) -> DistArray:
    """Return ``fill_value`` everywhere, laid out like ``x`` (no communication)."""
    check_device(runtime_or_init(), device)
    return _like(x, dtype, lambda xp, shape, dt: xp.full(shape, fill_value, dt))


def arange(
    start: Any,
    stop: Any = None,
    step: Any = 1,
    *,
    dtype: Any = None,
    device: Any = None,
    tiles: Any = None,
    grid: Any = None,
) -> DistArray:
    """Evenly spaced values in ``[start, stop)``, each rank computing its own (1-d)."""
    check_device(runtime_or_init(), device)
    if stop is None:
        start, stop = 0, start
    if step == 0:
        raise ValueError("step: expected a non-zero step, found 0")
    n = max(int(np.ceil((stop - start) / step)), 0)
    dt = np.dtype(dtype) if dtype is not None else np.arange(start, start + step, step).dtype

    def make(xp: Any, a: tuple[int, ...], b: tuple[int, ...], d: Any) -> Any:
        return (start + xp.arange(a[0], b[0]) * step).astype(d)

    return _by_formula((n,), dt, tiles, grid, make)


def linspace(
    start: Any,
    stop: Any,
    num: int,
    *,
    dtype: Any = None,
    device: Any = None,
    endpoint: bool = True,
    tiles: Any = None,
    grid: Any = None,
) -> DistArray:
    """``num`` evenly spaced values from ``start`` to ``stop`` (1-d; like NumPy's)."""
    check_device(runtime_or_init(), device)
    num = operator.index(num)
    if num < 0:
        raise ValueError(f"num: expected an int >= 0, found {num}")
    div = (num - 1) if endpoint else num
    step = (stop - start) / div if div > 0 else 0.0
    dt = np.dtype(dtype) if dtype is not None else np.result_type(start, stop, float)

    def make(xp: Any, a: tuple[int, ...], b: tuple[int, ...], d: Any) -> Any:
        values = start + xp.arange(a[0], b[0], dtype=np.float64) * step
        if endpoint and num > 1 and b[0] == num:
            values[-1] = stop
        return (xp.floor(values) if d.kind in "iu" else values).astype(d)  # as NumPy 2

    return _by_formula((num,), dt, tiles, grid, make)


def eye(
    n_rows: int,
    n_cols: int | None = None,
    *,
    k: int = 0,
    dtype: Any = np.float64,
    device: Any = None,
    tiles: Any = None,
    grid: Any = None,
) -> DistArray:
    """Ones on the ``k``-th diagonal, zeros elsewhere (2-d; no communication)."""
    check_device(runtime_or_init(), device)
    n_cols = n_rows if n_cols is None else n_cols

    def make(xp: Any, a: tuple[int, ...], b: tuple[int, ...], d: Any) -> Any:
        rows = xp.arange(a[0], b[0])[:, None]
        cols = xp.arange(a[1], b[1])[None, :]
        return (cols - rows == k).astype(d)

    return _by_formula((n_rows, n_cols), dtype, tiles, grid, make)


def asarray(
    obj: Any,
    dtype: Any = None,
    *,
    device: Any = None,
    copy: bool | None = None,
    tiles: Any = None,
    grid: Any = None,
    root: int | None = None,
) -> DistArray:
    """Distribute an array (collective).

    Without ``root`` every rank passes the same array (each keeps its own tiles, no data
    moves; shapes and dtypes are checked to agree on every rank): the tiles are views of
    ``obj`` where they can be, copies with ``copy=True``. With ``root``, only that
    rank's ``obj`` counts (the others may pass ``None``): its tiles are fetched from it by
    the ranks that own them. A :class:`DistArray` is returned as it is (repartitioned if
    ``tiles``/``grid`` say so); a ``__partitioned__`` object goes to ``from_partitioned``.
    """
    check_device(runtime_or_init(), device)
    rt = runtime_or_init()
    if isinstance(obj, DistArray):
        out = obj if dtype is None else obj.map_tiles(lambda t: t.astype(dtype), dtype)
        return out if tiles is None and grid is None else out.repartition(tiles, grid)
    if root is None and hasattr(obj, "__partitioned__"):
        from gpupart.containers.partitioned import from_partitioned

        return asarray(from_partitioned(obj), dtype, tiles=tiles, grid=grid)
    xp = rt.backend.xp
    if root is not None:
        return _from_root(rt, obj, dtype, tiles, grid, root)
    host, problem = _sendable(xp, obj, dtype)
    signatures = rt.allgather(problem or (tuple(host.shape), host.dtype.str))
    problems = [f"rank {r}: {p}" for r, p in enumerate(signatures) if isinstance(p, str)]
    if problems:
        raise CollectiveError(f"asarray: {'; '.join(problems)}")
    if len(set(signatures)) != 1:
        detail = ", ".join(f"rank {r}: {s} {np.dtype(d)}" for r, (s, d) in enumerate(signatures))
        raise CollectiveError(
            f"asarray: expected the same array on every rank (or root=), found {detail}"
        )
    dims = tuple(host.shape)
    tiling, owners, mine = _layout(rt, dims, tiles, grid)
    data = {}
    for pos in mine:
        start, stop = layout.tile_box(tiling, pos)
        tile = host[(*(slice(a, b) for a, b in zip(start, stop, strict=True)), ...)]
        data[pos] = tile.copy() if copy else tile
    return DistArray(rt, tiling, owners, host.dtype, data)


def _sendable(xp: Any, obj: Any, dtype: Any) -> tuple[Any, str | None]:
    """``obj`` as an array of a dtype tiles can have, or the reason it cannot be one."""
    try:
        host = xp.asarray(obj, dtype=dtype)
    except (TypeError, ValueError) as exc:
        return None, f"cannot make an array of {type(obj).__name__}: {exc}"
    if host.dtype.hasobject or host.dtype.fields is not None:
        return None, f"expected a numeric/bool/datetime/fixed-width dtype, found {host.dtype}"
    return host, None


def _from_root(rt: Any, obj: Any, dtype: Any, tiles: Any, grid: Any, root: int) -> DistArray:
    if isinstance(root, bool) or not isinstance(root, int) or not 0 <= root < rt.size:
        raise ValueError(f"root: expected a rank in 0..{rt.size - 1}, found {root!r}")
    xp = rt.backend.xp
    host, problem = _sendable(xp, obj, dtype) if rt.rank == root else (None, None)
    mine = None if rt.rank != root else problem or (tuple(host.shape), host.dtype.str)
    meta = rt.broadcast(mine, root=root)
    if isinstance(meta, str):  # the root's data cannot be distributed: every rank says so
        raise CollectiveError(f"asarray: rank {root} (root): {meta}")
    dims, dt = meta[0], np.dtype(meta[1])
    tiling, owners, mine = _layout(rt, dims, tiles, grid)
    # The root holds every tile of the new tiling (views of its array where they can be):
    # each rank then fetches exactly its own tiles from it.
    staged = {}
    if rt.rank == root:
        for pos in layout.positions(tiling):
            start, stop = layout.tile_box(tiling, pos)
            staged[pos] = host[(*(slice(a, b) for a, b in zip(start, stop, strict=True)), ...)]
    source = DistArray(rt, tiling, np.full(tiling.grid, root, np.int32), dt, staged)
    boxes = [layout.tile_box(tiling, pos) for pos in mine]
    data = source.fetch_regions(boxes)
    return DistArray(rt, tiling, owners, dt, dict(zip(mine, data, strict=True)))


def from_local(piece: Any, axis: int = 0) -> DistArray:
    """Join each rank's ``piece`` along ``axis`` (collective; rank order; no copy).

    Pieces may differ in length along ``axis`` (some may be empty) but must agree on every
    other dimension and on dtype: otherwise every rank raises
    :class:`~gpupart.CollectiveError` naming the rank whose piece does not fit.
    """
    rt = runtime_or_init()
    xp = rt.backend.xp
    local, problem = _sendable(xp, piece, None)
    shapes = rt.allgather(problem or (tuple(local.shape), local.dtype.str, axis))
    problems = [f"rank {r}: {p}" for r, p in enumerate(shapes) if isinstance(p, str)]
    if problems:
        raise CollectiveError(f"from_local: {'; '.join(problems)}")
    axes = {a for _, _, a in shapes}
    if len(axes) != 1:
        detail = ", ".join(f"rank {r}: {a}" for r, (_, _, a) in enumerate(shapes))
        raise CollectiveError(f"from_local: expected the same axis on every rank, found {detail}")
    first_shape, first_dtype, _ = shapes[0]
    ndim = len(first_shape)
    if ndim == 0 or not -ndim <= axis < ndim:
        raise ValueError(f"axis: expected an axis of rank 0's {ndim}-d piece, found {axis}")
    axis %= ndim
    for r, (shape, dt, _) in enumerate(shapes):
        other = shape[:axis] + shape[axis + 1 :]
        want = first_shape[:axis] + first_shape[axis + 1 :]
        if len(shape) != ndim or other != want:
            raise CollectiveError(
                f"from_local: rank {r} passed a piece of shape {shape}; every dimension but"
                f" axis {axis} must match rank 0's {first_shape}"
            )
        if dt != first_dtype:
            raise CollectiveError(
                f"from_local: rank {r} passed dtype {np.dtype(dt)}, rank 0 {np.dtype(first_dtype)}"
            )
    lengths = [s[axis] for s, _, _ in shapes]
    cuts = np.concatenate([[0], np.cumsum(lengths)]).tolist()
    bounds: list[Sequence[int]] = [[0, n] for n in first_shape]
    bounds[axis] = [int(c) for c in cuts]
    tiling = Tiling.from_boundaries(bounds)
    grid = tiling.grid
    owners = np.zeros(grid, dtype=np.int32)
    index = [slice(None)] * len(grid)
    for r in range(rt.size):
        index[axis] = r
        owners[tuple(index)] = r
    pos = tuple(rt.rank if d == axis else 0 for d in range(ndim))
    return DistArray(rt, tiling, owners, np.dtype(first_dtype), {pos: local})
