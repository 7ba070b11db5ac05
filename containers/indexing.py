"""Indexing distributed arrays: ``x[key]``, ``x[key] = value``, ``take``.

Basic indexing (ints, negative ones too, slices with any step, ``...``, ``None``) moves no
data. ``x[key]``'s tiles are the parts of ``x``'s tiles that the key selects, on the ranks
that hold them, always as views (NumPy and CuPy make a view for every basic index, whatever
the step): writing into them writes into ``x``. Along a sliced axis the result keeps the
tiles that hold selected elements (a negative step reverses their order; the whole axis,
``:`` or ``::-1``, keeps every tile, empty ones too, so ``x[:, 0]`` is cut as ``x``'s first
axis); an integer keeps the one tile holding it and drops the axis; ``None`` adds an uncut
axis of length 1.

``x[key] = value`` writes on every rank into its own tiles: a scalar or a NumPy/CuPy array
(the same on every rank) directly, a DistArray by fetching the regions of it that match this
rank's part of the selection (collective). Writing into ``x`` releases its published tiles
(the next fetch publishes them again).

Array indices (collective): a boolean mask over leading axes selects with ``x[mask]`` (when
``x`` is not cut inside the mask's axes but along the first, so that its tiles in C order
hold the selected elements in C order; every rank learns the others' counts, the elements
stay where they are) and assigns a scalar with ``x[mask] = value``. One 1-d integer array
among basic indices is a :func:`take` (then basic indexing); ints and integer arrays alone
index points (each rank fetches its points' boxes). Other array keys raise
``NotImplementedError`` naming :func:`take` and ``to_numpy``.

``sort``/``argsort`` live in :mod:`gpupart.containers.sorting`.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np
from gpupart.containers import layout
from gpupart.containers.darray import DistArray
from gpupart.containers.manipulation import (
    check_array,
    held_positions,
    normalize_axis,
    tile_index,
)

from gpupart.protocol import Tiling

__all__ = ["take", "take_along_axis"]

Position = tuple[int, ...]


# -- basic indices ----------------------------------------------------------------------------


def _is_array_index(item: Any) -> bool:
    """Return whether ``item`` is an array index (mask or integer array), not a basic one."""
    if isinstance(item, (DistArray, list, bool, np.bool_)):
        return True
    shape = getattr(item, "shape", None)
    return shape is not None and hasattr(item, "dtype") and (len(shape) or item.dtype == bool)


def _scalar_indices(items: tuple[Any, ...]) -> tuple[Any, ...]:
    """Return ``items`` with each 0-d integer DistArray as an int (collective: gathered)."""
    return tuple(
        int(it.to_numpy())
        if isinstance(it, DistArray) and it.ndim == 0 and it.dtype.kind in "iu"
        else it
        for it in items
    )


def _expand(items: tuple[Any, ...], ndim: int) -> tuple[Any, ...]:
    """Return the key with its ellipsis (or the missing trailing axes) as whole slices."""
    ellipses = sum(it is Ellipsis for it in items)
    if ellipses > 1:
        raise IndexError(f"key: expected at most one ellipsis ('...'), found {ellipses}")
    indexed = sum(it is not None and it is not Ellipsis for it in items)
    if indexed > ndim:
        raise IndexError(
            f"key: too many indices for a {ndim}-d array: {indexed} axes indexed in {items!r}"
        )
    fill = (slice(None),) * (ndim - indexed)
    if ellipses:
        at = next(i for i, it in enumerate(items) if it is Ellipsis)
        return items[:at] + fill + items[at + 1 :]
    return items + fill


def _slice_tiles(
    cuts: Sequence[int], n: int, s: slice
) -> tuple[list[int], list[tuple[int, int, slice]]]:
    """Return the result's cuts and ``(tile, result tile, local slice)`` for a sliced axis."""
    start, stop, step = s.indices(n)
    length = len(range(start, stop, step))
    whole = length == n and abs(step) == 1
    order = range(len(cuts) - 1) if step > 0 else range(len(cuts) - 2, -1, -1)
    out_cuts, kept = [0], []
    for t in order:
        a, b = cuts[t], cuts[t + 1]
        if step > 0:
            k0, k1 = -((start - a) // step), -((start - b) // step)
        else:
            k0, k1 = (start - b) // -step + 1, (start - a) // -step + 1
        k0, k1 = min(max(k0, 0), length), min(max(k1, 0), length)
        if k1 <= k0 and not (whole and a == b):
            continue
        first = start + k0 * step - a
        last = start + (k1 - 1) * step - a
        end = last + (1 if step > 0 else -1)
        local = slice(first, None if end < 0 else end, step) if k1 > k0 else slice(0, 0)
        kept.append((t, len(kept), local))
        out_cuts.append(k1 if k1 > k0 else k0)
    if not kept:  # nothing selected: one empty tile
        kept.append((0, 0, slice(0, 0)))
        out_cuts.append(0)
    return out_cuts, kept


def _int_index(item: Any, d: int, n: int) -> int:
    """Return the integer index ``item`` of axis ``d`` (length ``n``), non-negative."""
    i = operator.index(item)
    if not -n <= i < n:
        raise IndexError(f"index {i} is out of bounds for axis {d} with size {n}")
    return i % n


def getitem(x: DistArray, key: Any) -> DistArray:
    """Return ``x[key]`` (see the module docstring; basic indices move no data)."""
    x = check_array(x)
    items = _scalar_indices(key if isinstance(key, tuple) else (key,))
    if any(_is_array_index(it) for it in items):
        return _array_getitem(x, items)
    items = _expand(items, x.ndim)
    bounds: list[Sequence[int]] = []
    picks: list[np.ndarray] = []  # per input axis: the tiles kept, in result order
    axes: list[tuple[str, int, Any]] = []  # per key item: how a local tile is cut
    d = 0
    for it in items:
        if it is None:
            bounds.append([0, 1])
            axes.append(("new", -1, None))
            continue
        cuts, n = x.tiling.boundaries[d], x.shape[d]
        if isinstance(it, slice):
            out_cuts, kept = _slice_tiles(cuts, n, it)
            bounds.append(out_cuts)
            picks.append(np.array([t for t, _, _ in kept], dtype=np.intp))
            axes.append(("slice", d, {t: (k, local) for t, k, local in kept}))
        else:
            try:
                i = _int_index(it, d, n)
            except TypeError:
                raise IndexError(
                    f"key: expected ints, slices, '...' or None, found {it!r} for axis {d}"
                ) from None
            t = tile_index(cuts, i)
            picks.append(np.array([t], dtype=np.intp))
            axes.append(("int", d, (t, i - cuts[t])))
        d += 1
    tiles = {}
    for pos, tile in x.local_tiles.items():
        new_pos, local = _place(pos, axes)
        if new_pos is not None:
            tiles[new_pos] = tile[(*local, ...)]
    owners = x.owners[np.ix_(*picks)] if picks else x.owners
    return x.like(tiles, x.dtype, Tiling.from_boundaries(bounds), _owners(owners, bounds))


def _owners(owners: np.ndarray, bounds: Sequence[Sequence[int]]) -> np.ndarray:
    """Return ``owners`` shaped as the grid of ``bounds``."""
    return np.ascontiguousarray(owners, dtype=np.int32).reshape([len(c) - 1 for c in bounds])


def _place(pos: Position, axes: list[tuple[str, int, Any]]) -> tuple[Position | None, list]:
    """Return where a tile at ``pos`` goes and its local key; ``None`` if nothing is kept."""
    new_pos, local = [], []
    for kind, d, info in axes:
        if kind == "new":
            new_pos.append(0)
            local.append(None)
        elif kind == "int":
            t, i = info
            if pos[d] != t:
                return None, []
            local.append(i)
        else:
            hit = info.get(pos[d])
            if hit is None:
                return None, []
            new_pos.append(hit[0])
            local.append(hit[1])
    return tuple(new_pos), local


def _array_getitem(x: DistArray, items: tuple[Any, ...]) -> DistArray:
    """Return ``x[key]`` for a key with a boolean mask or integer arrays.

    One boolean mask over leading axes; one 1-d integer array among basic indices (through
    :func:`take`); or integer arrays and ints only, indexing points (:func:`_points`).
    """
    mask = items[0]
    alone = len(items) == 1 or (len(items) == 2 and items[1] is Ellipsis)
    if alone and _is_mask(mask):
        return _masked(x, mask)
    arrays = [i for i, it in enumerate(items) if _is_array_index(it)]
    integer = all(_index_kind(items[i]) in "iu" for i in arrays)
    if integer and len(arrays) == 1 and len(np.shape(items[arrays[0]])) == 1:
        return _one_array(x, items, arrays[0])
    basic = [it for i, it in enumerate(items) if i not in arrays]
    if integer and all(not isinstance(it, slice) and it not in (None, Ellipsis) for it in basic):
        return _points(x, items)
    raise NotImplementedError(
        f"x[{items!r}]: a distributed array takes basic indices (ints, slices, '...', None),"
        " one boolean mask over leading axes, one 1-d integer array among basic indices, or"
        " integer arrays and ints only; use take(x, indices, axis=...) or x.to_numpy()"
    )


def _index_kind(item: Any) -> str:
    """Return the dtype kind of an array index (``'b'`` for a bool, a list's from NumPy)."""
    if isinstance(item, (bool, np.bool_)):
        return "b"
    dtype = getattr(item, "dtype", None)
    return np.dtype(dtype).kind if dtype is not None else np.asarray(item).dtype.kind


def _one_array(x: DistArray, items: tuple[Any, ...], at: int) -> DistArray:
    """Return ``x[key]`` for one 1-d integer array in ``key``: a take, then basic indexing."""
    marker = slice(None)
    expanded = _expand((*items[:at], marker, *items[at + 1 :]), x.ndim)
    p = next(i for i, it in enumerate(expanded) if it is marker)
    axis = sum(it is not None for it in expanded[:p])
    taken = take(x, items[at], axis=axis)
    out = getitem(taken, expanded)
    # NumPy puts the array's axis first when the advanced indices (the array and the ints)
    # are not next to each other in the key
    advanced = [i for i, it in enumerate(items) if i == at or _is_int(it)]
    if advanced[-1] - advanced[0] + 1 == len(advanced):
        return out
    from gpupart.containers.manipulation import moveaxis

    here = sum(not _is_int(it) for it in expanded[:p])
    return moveaxis(out, here, 0)


def _is_int(item: Any) -> bool:
    """Return whether ``item`` is an integer index (not a bool)."""
    if isinstance(item, (bool, np.bool_, slice)) or item is None or item is Ellipsis:
        return False
    try:
        operator.index(item)
    except TypeError:
        return False
    return True


def _points(x: DistArray, items: tuple[Any, ...]) -> DistArray:
    """Return ``x[key]`` for ints and integer arrays over leading axes (pointwise).

    The result (the broadcast shape of the arrays, then ``x``'s other axes) is cut by the
    default tiling; each rank fetches the bounding box of its points in every tile of ``x``.
    """
    k = len(items)
    if k > x.ndim:
        raise IndexError(f"key: too many indices for a {x.ndim}-d array: {k} axes indexed")
    idx = []
    for d, it in enumerate(items):
        host = _host_indices(it, f"key[{d}]", ndim=None) if not _is_int(it) else np.asarray(it)
        n = x.shape[d]
        bad = (host < -n) | (host >= n)
        if bad.any():
            raise IndexError(
                f"index {int(host[bad].flat[0])} is out of bounds for axis {d} with size {n}"
            )
        idx.append(np.where(host < 0, host + n, host).astype(np.int64))
    try:
        idx = np.broadcast_arrays(*idx)
    except ValueError:
        shapes = [np.shape(i) for i in idx]
        raise IndexError(f"key: integer arrays that do not broadcast together: {shapes}") from None
    lead = idx[0].shape
    shape = lead + x.shape[k:]
    rt, xp = x.runtime, x.xp
    tiling = layout.make_tiling(shape, rt.size)
    owners = layout.assign_owners(tiling, rt.size)
    mine = held_positions(tiling, owners, rt.rank)
    plans, boxes = [], []
    for pos in mine:
        lo, hi = layout.tile_box(tiling, pos)
        box = tuple(slice(a, b) for a, b in zip(lo[: len(lead)], hi[: len(lead)], strict=True))
        coords = np.stack([i[box].reshape(-1) for i in idx], axis=1)  # points x k
        tiles_of = np.stack(
            [
                np.searchsorted(x.tiling.boundaries[d], coords[:, d], side="right") - 1
                for d in range(k)
            ],
            axis=1,
        )
        groups = {}
        for row, tp in enumerate(map(tuple, tiles_of)):
            groups.setdefault(tp, []).append(row)
        parts = []
        for rows in groups.values():
            pts = coords[rows]
            a, b = pts.min(axis=0), pts.max(axis=0) + 1
            boxes.append(((*a.tolist(), *lo[len(lead) :]), (*b.tolist(), *hi[len(lead) :])))
            parts.append((np.array(rows), pts - a))
        plans.append((pos, parts))
    data = iter(x.fetch_regions(boxes))
    tiles = {}
    for pos, parts in plans:
        tile_shape = tiling.tile_shape(pos)
        flat = xp.empty((int(np.prod(tile_shape[: len(lead)])), *tile_shape[len(lead) :]), x.dtype)
        for rows, rel in parts:
            flat[xp.asarray(rows)] = next(data)[tuple(xp.asarray(c) for c in rel.T)]
        tiles[pos] = flat.reshape(tile_shape)
    return x.like(tiles, x.dtype, tiling, owners)


def _is_mask(item: Any) -> bool:
    """Return whether ``item`` is a boolean array (not a Python bool)."""
    return (
        not isinstance(item, (bool, np.bool_, list))
        and np.dtype(getattr(item, "dtype", object)) == np.bool_
    )


def _mask_slabs(
    x: DistArray, mask: Any, boxes: list[tuple[tuple[int, ...], tuple[int, ...]]]
) -> list[Any]:
    """Return the parts of ``mask`` in ``boxes`` (collective when ``mask`` is a DistArray)."""
    if isinstance(mask, DistArray):
        return mask.fetch_regions(boxes)
    host = x.xp.asarray(mask)
    return [host[(*(slice(a, b) for a, b in zip(lo, hi, strict=True)), ...)] for lo, hi in boxes]


def _check_mask(x: DistArray, mask: Any) -> bool:
    """Return whether ``mask`` selects anything; ``IndexError`` unless it fits ``x``.

    Its shape is that of leading axes of ``x``, where any axis may be 0 (as NumPy allows).
    """
    if mask.ndim > x.ndim or any(
        m not in (n, 0) for m, n in zip(mask.shape, x.shape, strict=False)
    ):
        raise IndexError(
            f"mask: expected a boolean mask of the shape of leading axes of {x.shape}, found"
            f" shape {tuple(mask.shape)}"
        )
    return 0 not in tuple(mask.shape)


def _masked(x: DistArray, mask: Any) -> DistArray:
    """Return ``x[mask]``: each rank masks its own tiles, counts are all-gathered."""
    k = mask.ndim
    if not _check_mask(x, mask):
        from gpupart.containers.manipulation import empty_result

        return empty_result(x, (0, *x.shape[k:]))
    if k == 0:  # x[True] / x[False]: a new first axis of length 1 / 0
        (slab,) = _mask_slabs(x, mask, [((), ())])
        c = int(bool(slab))
        bounds0 = [[0, c], *x.tiling.boundaries]
        tiles0 = {(0, *pos): tile[None][:c] for pos, tile in x.local_tiles.items()}
        owners0 = x.owners[None]
        return x.like(tiles0, x.dtype, Tiling.from_boundaries(bounds0), _owners(owners0, bounds0))
    grid, cuts0 = x.tiling.grid, x.tiling.boundaries[0]
    cut = [d for d in range(1, min(k, x.ndim)) if grid[d] != 1]
    if cut:
        raise NotImplementedError(
            f"x[mask]: x is cut along axis {cut[0]}, inside the mask's axes, so its tiles are"
            " not runs of the result; repartition first (x.repartition(grid=(n, 1, ...))) or"
            " use x.to_numpy()"
        )
    rows = sorted({pos[0] for pos in x.local_tiles})
    # the same NumPy mask on every rank: count every row here, no message
    wanted = rows if isinstance(mask, DistArray) else list(range(grid[0]))
    boxes = [((cuts0[t],) + (0,) * (k - 1), (cuts0[t + 1], *x.shape[1:k])) for t in wanted]
    slabs = dict(zip(wanted, _mask_slabs(x, mask, boxes), strict=True))
    counts = {t: int(slab.sum()) for t, slab in slabs.items()}
    if isinstance(mask, DistArray):
        for part in x.runtime.allgather(counts):
            counts.update(part)
    ends = np.concatenate([[0], np.cumsum([counts[t] for t in range(grid[0])])]).tolist()
    tiles = {(pos[0], *pos[k:]): tile[slabs[pos[0]]] for pos, tile in x.local_tiles.items()}
    bounds = [ends, *x.tiling.boundaries[k:]]
    owners = x.owners[(slice(None), *([0] * (k - 1)))]
    return x.like(tiles, x.dtype, Tiling.from_boundaries(bounds), _owners(owners, bounds))


# -- writing ----------------------------------------------------------------------------------


def setitem(x: DistArray, key: Any, value: Any) -> None:
    """Write ``value`` into ``x[key]`` (collective; each rank writes its own tiles).

    ``value`` is a scalar, a NumPy/CuPy array (the same on every rank) or a DistArray, any
    of them broadcast to the selection. Arrays that share tiles with ``x`` (views made
    before) and were already fetched from may serve other ranks the values from before.
    """
    x = check_array(x)
    items = _scalar_indices(key if isinstance(key, tuple) else (key,))
    if any(_is_array_index(it) for it in items):
        _set_masked(x, items, value)
        _forget_published(x)
        return
    sel = getitem(x, items)
    xp = x.xp
    if isinstance(value, DistArray):
        _check_broadcast(value.shape, sel.shape)
        boxes = [_value_box(value.shape, lo, hi) for _, lo, hi in sel.boxes()]
        own = {id(t) for t in value.local_tiles.values()}
        # a part that is one of value's tiles may be (a view of) x's: copied before any write
        parts = [p.copy() if id(p) in own else p for p in value.fetch_regions(boxes)]
        for view, part in zip(sel.local_tiles.values(), parts, strict=True):
            view[...] = part
    else:
        v = value if np.isscalar(value) else xp.asarray(value)
        if getattr(v, "ndim", 0):
            _check_broadcast(tuple(v.shape), sel.shape)
            v = xp.broadcast_to(v, sel.shape)
        for pos, lo, hi in sel.boxes():
            box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
            sel.local_tiles[pos][...] = v[box] if getattr(v, "ndim", 0) else v
    _forget_published(x)


def _check_broadcast(shape: tuple[int, ...], target: tuple[int, ...]) -> None:
    """Raise ``ValueError`` unless ``shape`` broadcasts to ``target``."""
    lead = len(target) - len(shape)
    if lead < 0 or any(n not in (1, m) for n, m in zip(shape, target[lead:], strict=True)):
        raise ValueError(
            f"value: expected an array broadcastable to the selection's shape {target}, found"
            f" shape {shape}"
        )


def _value_box(
    shape: tuple[int, ...], lo: tuple[int, ...], hi: tuple[int, ...]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Return the box of a broadcast value that lands on the selection's box ``[lo, hi)``."""
    lead = len(lo) - len(shape)
    a = tuple(0 if n == 1 else s for n, s in zip(shape, lo[lead:], strict=True))
    b = tuple(1 if n == 1 else e for n, e in zip(shape, hi[lead:], strict=True))
    return a, b


def _set_masked(x: DistArray, items: tuple[Any, ...], value: Any) -> None:
    """Write a scalar where a boolean mask over leading axes is true (each rank its tiles)."""
    mask = items[0]
    if not (len(items) == 1 and _is_mask(mask)):
        raise NotImplementedError(
            f"x[{items!r}] = ...: only basic indices and one boolean mask are supported; use"
            " x.to_numpy() and asarray"
        )
    if isinstance(value, DistArray) and value.ndim == 0:
        value = value.to_numpy()[()]  # collective, as the write
    if isinstance(value, DistArray) or getattr(value, "ndim", 0):
        raise NotImplementedError(
            "x[mask] = value: only a scalar value is supported for a mask; use where(mask,"
            " value, x) or x.to_numpy()"
        )
    k = mask.ndim
    if not _check_mask(x, mask):
        return
    held = list(x.boxes())
    boxes = [(lo[:k], hi[:k]) for _, lo, hi in held]
    for (pos, _, _), slab in zip(held, _mask_slabs(x, mask, boxes), strict=True):
        x.local_tiles[pos][slab] = value


def _forget_published(x: DistArray) -> None:
    """Release ``x``'s registered tiles after a write (a copy may have been registered).

    Collective like the write itself: every fetch of ``x`` ended with a barrier before.
    """
    handles = x._handles
    if handles is None:
        return
    rt = x.runtime
    for pos, handle in handles.items():
        if int(x.owners[pos]) == rt.rank:
            rt.free(handle)
    x._handles = None


# -- take -------------------------------------------------------------------------------------


def _host_indices(indices: Any, name: str = "indices", ndim: int | None = 1) -> np.ndarray:
    """Return ``indices`` as an integer NumPy array (a DistArray is gathered: collective)."""
    if isinstance(indices, DistArray):
        host = indices.to_numpy()
    elif hasattr(indices, "get") and not isinstance(indices, np.ndarray):
        host = indices.get()
    else:
        host = np.asarray(indices)
    if host.dtype.kind not in "iu" or (ndim is not None and host.ndim != ndim):
        want = "an integer array" if ndim is None else f"a {ndim}-d integer array"
        raise TypeError(f"{name}: expected {want}, found a {host.ndim}-d {host.dtype} array")
    return host


def _runs(values: np.ndarray) -> list[tuple[int, int]]:
    """Return sorted distinct ``values`` as runs ``[a, b)`` of consecutive integers."""
    if not values.size:
        return []
    breaks = np.flatnonzero(np.diff(values) != 1) + 1
    return [(int(r[0]), int(r[-1]) + 1) for r in np.split(values, breaks)]


def take(x: DistArray, indices: Any, /, *, axis: int | None = None) -> DistArray:
    """Return the elements of ``x`` at ``indices`` along ``axis`` (1-d ``x``: optional).

    ``indices`` is a 1-d integer array (NumPy, CuPy, or a DistArray every rank gathers).
    Along an uncut axis every rank takes from its own tiles (no communication). Along a cut
    axis the result is cut into as many even runs of ``indices`` as ``x`` has tiles there,
    owned as ``x``'s tiles are, and each rank fetches the rows its tiles need.
    """
    x = check_array(x)
    if axis is None:
        if x.ndim != 1:
            raise ValueError(f"axis: expected an axis for a {x.ndim}-d array, found None")
        axis = 0
    ax = normalize_axis(axis, x.ndim)
    idx = _host_indices(indices).astype(np.int64)
    n = x.shape[ax]
    bad = (idx < -n) | (idx >= n)
    if bad.any():
        raise IndexError(
            f"indices: index {int(idx[bad][0])} is out of bounds for axis {ax} with size {n}"
        )
    idx = np.where(idx < 0, idx + n, idx)
    xp = x.xp
    bounds = list(x.tiling.boundaries)
    if x.tiling.grid[ax] == 1:
        bounds[ax] = [0, idx.size]
        tiles = {pos: xp.take(t, xp.asarray(idx), axis=ax) for pos, t in x.local_tiles.items()}
        return x.like(tiles, x.dtype, Tiling.from_boundaries(bounds), x.owners)
    bounds[ax] = layout.even_cuts(idx.size, x.tiling.grid[ax])
    tiling = Tiling.from_boundaries(bounds)
    mine = held_positions(tiling, x.owners, x.runtime.rank)
    plans, boxes = [], []
    for pos in mine:
        lo, hi = layout.tile_box(tiling, pos)
        part = idx[lo[ax] : hi[ax]]
        unique = np.unique(part)
        runs = _runs(unique)
        plans.append((pos, part, unique, len(runs)))
        for a, b in runs:
            boxes.append((_with(lo, ax, a), _with(hi, ax, b)))
    data = iter(x.fetch_regions(boxes))
    tiles = {}
    for pos, part, unique, count in plans:
        pieces = [next(data) for _ in range(count)]
        if not pieces:
            tiles[pos] = xp.empty(tiling.tile_shape(pos), dtype=x.dtype)
            continue
        rows = xp.concatenate(pieces, axis=ax)
        tiles[pos] = xp.take(rows, xp.asarray(np.searchsorted(unique, part)), axis=ax)
    return x.like(tiles, x.dtype, tiling, x.owners)


def _with(t: tuple[int, ...], d: int, v: int) -> tuple[int, ...]:
    """Return ``t`` with entry ``d`` replaced by ``v``."""
    return (*t[:d], v, *t[d + 1 :])


def take_along_axis(x: DistArray, indices: Any, /, *, axis: int = -1) -> DistArray:
    """Return ``x``'s elements at ``indices`` along an uncut ``axis`` (tile by tile).

    ``indices`` has ``x``'s shape except along ``axis`` (a DistArray, fetched where its
    tiles are not cut and owned as the result's; or a NumPy/CuPy array). Along a cut axis:
    ``NotImplementedError`` (repartition first).
    """
    x = check_array(x)
    ax = normalize_axis(axis, x.ndim)
    _check_uncut(x, ax, "take_along_axis")
    shape = tuple(getattr(indices, "shape", ()))
    if len(shape) != x.ndim or any(
        n != m for d, (n, m) in enumerate(zip(shape, x.shape, strict=True)) if d != ax
    ):
        raise ValueError(
            f"indices: expected the shape of x {x.shape} except along axis {ax}, found {shape}"
        )
    if getattr(indices, "dtype", np.dtype(float)).kind not in "iu":
        raise TypeError(f"indices: expected an integer array, found dtype {indices.dtype}")
    bounds = list(x.tiling.boundaries)
    bounds[ax] = [0, shape[ax]]
    tiling = Tiling.from_boundaries(bounds)
    held = list(x.local_tiles)
    boxes = [layout.tile_box(tiling, pos) for pos in held]
    if isinstance(indices, DistArray):
        if indices.tiling == tiling and np.array_equal(indices.owners, x.owners):
            parts = [indices.local_tiles[pos] for pos in held]
        else:
            parts = indices.fetch_regions(boxes)
    else:
        host = x.xp.asarray(indices)
        parts = [host[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] for lo, hi in boxes]
    n, xp = x.shape[ax], x.xp
    tiles = {}
    for pos, part in zip(held, parts, strict=True):
        part = xp.where(part < 0, part + n, part)
        tiles[pos] = xp.take_along_axis(x.local_tiles[pos], part, axis=ax)
    return x.like(tiles, x.dtype, tiling, x.owners)


# -- checks -----------------------------------------------------------------------------------


def _check_uncut(x: DistArray, ax: int, what: str) -> None:
    """Raise ``NotImplementedError`` if ``x`` is cut along ``ax`` (two non-empty tiles)."""
    cuts = x.tiling.boundaries[ax]
    filled = sum(b > a for a, b in itertools.pairwise(cuts))
    if filled > 1:
        grid = tuple(1 if d == ax else g for d, g in enumerate(x.tiling.grid))
        raise NotImplementedError(
            f"{what}: axis {ax} is cut into {filled} tiles; a distributed {what} is future work:"
            f" repartition first (x.repartition(grid={grid})) or use x.to_numpy()"
        )
