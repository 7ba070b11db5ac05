"""Manipulating distributed arrays: transposes, reshapes, joins, flips, broadcasts, tiles.

The result's layout is computed from the operands' tilings and owners (the same on every
rank), so every rank takes the same path. Most of these functions move no data:

* views of ``x``'s tiles, as NumPy's views (no copy, no message): ``permute_dims`` (and
  ``x.T``/``x.mT``), ``moveaxis``, ``expand_dims``, ``squeeze``, ``broadcast_to`` (read-only),
  ``flip`` (the flipped axes' cuts are mirrored: each rank keeps its tiles) and ``reshape``
  (where the tiling allows, see there; a tile that is not contiguous is copied locally);
* local copies (no message): ``concat``/``stack`` of arrays cut alike off the joined axis,
  ``tile``, ``repeat``;
* data fetched, each rank exactly the regions its tiles need: ``concat``/``stack`` of
  arrays cut differently off the joined axis (aligned to the first array's cuts), ``roll``
  along a cut axis.

The shared argument checks (:func:`normalize_axis`, :func:`normalize_axes`,
:func:`check_array`) are public for the other operation modules; they are not part of the
namespace.
"""

from __future__ import annotations

import bisect
import itertools
import math
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np
from gpupart.containers import layout
from gpupart.containers.darray import REPLICATED, DistArray

from gpupart.protocol import Tiling

__all__ = [
    "broadcast_arrays",
    "broadcast_to",
    "concat",
    "expand_dims",
    "flip",
    "moveaxis",
    "permute_dims",
    "repeat",
    "reshape",
    "roll",
    "squeeze",
    "stack",
    "tile",
    "unstack",
]

#: A bad axis is both an ``IndexError`` and a ``ValueError`` (as in NumPy and the standard).
AxisError = np.exceptions.AxisError

Position = tuple[int, ...]


# -- shared checks ----------------------------------------------------------------------------


def check_array(x: Any, name: str = "x") -> DistArray:
    """Return ``x`` if it is a :class:`DistArray`, else raise ``TypeError`` naming ``name``."""
    if not isinstance(x, DistArray):
        raise TypeError(f"{name}: expected a gpupart.DistArray, found {type(x).__name__}")
    return x


def normalize_axis(axis: Any, ndim: int, name: str = "axis") -> int:
    """Return ``axis`` as an index in ``0..ndim-1`` (negative counts from the end)."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, found {axis!r}")
    if not -ndim <= axis < ndim:
        valid = f"an axis in [{-ndim}, {ndim - 1}]" if ndim else "no axis"
        raise AxisError(f"{name}: expected {valid} (the array is {ndim}-d), found {int(axis)}")
    return int(axis) % ndim


def normalize_axes(axes: Any, ndim: int, name: str = "axis") -> tuple[int, ...]:
    """Return an int or a sequence of ints as distinct axes in ``0..ndim-1``."""
    items = tuple(axes) if isinstance(axes, (tuple, list)) else (axes,)
    out = tuple(normalize_axis(a, ndim, name) for a in items)
    if len(set(out)) != len(out):
        raise ValueError(f"{name}: expected distinct axes, found {tuple(items)}")
    return out


def _nonneg_int(value: Any, name: str) -> int:
    """Return ``value`` as an int >= 0."""
    if isinstance(value, bool):
        raise TypeError(f"{name}: expected an int, found {value!r}")
    try:
        n = operator.index(value)
    except TypeError:
        raise TypeError(f"{name}: expected an int, found {value!r}") from None
    if n < 0:
        raise ValueError(f"{name}: expected an int >= 0, found {n}")
    return n


def _result(
    x: DistArray,
    bounds: Sequence[Sequence[int]],
    owners: np.ndarray,
    tiles: dict[Position, Any],
    dtype: Any = None,
) -> DistArray:
    """Return an array of ``x``'s runtime cut at ``bounds``, owned by ``owners``."""
    tiling = Tiling.from_boundaries(list(bounds))
    owners = np.ascontiguousarray(owners, dtype=np.int32).reshape(tiling.grid)
    return x.like(tiles, dtype=x.dtype if dtype is None else dtype, tiling=tiling, owners=owners)


def empty_result(x: DistArray, shape: tuple[int, ...], dtype: Any = None) -> DistArray:
    """Return an array of ``shape`` with no elements: one empty tile every rank holds."""
    dt = x.dtype if dtype is None else np.dtype(dtype)
    tile = x.xp.empty(shape, dtype=dt)
    owners = np.full((1,) * len(shape), REPLICATED, dtype=np.int32)
    return _result(x, [[0, n] for n in shape], owners, {(0,) * len(shape): tile}, dt)


def held_positions(tiling: Tiling, owners: np.ndarray, rank: int) -> list[Position]:
    """Return the positions this rank holds under ``owners``: its own and the replicated."""
    return [pos for pos in layout.positions(tiling) if int(owners[pos]) in (rank, REPLICATED)]


def grid_rank(pos: Position, grid: Sequence[int]) -> int:
    """Return the C-order rank of ``pos`` in ``grid``."""
    rank = 0
    for p, g in zip(pos, grid, strict=True):
        rank = rank * g + p
    return rank


def grid_position(rank: int, grid: Sequence[int]) -> Position:
    """Return the position of C-order rank ``rank`` in ``grid``."""
    pos = []
    for g in reversed(grid):
        rank, p = divmod(rank, g)
        pos.append(p)
    return tuple(reversed(pos))


def tile_index(cuts: Sequence[int], i: int) -> int:
    """Return the tile along one axis that holds element ``i`` (the last for ``i`` = size)."""
    return min(max(bisect.bisect_right(cuts, i) - 1, 0), len(cuts) - 2)


# -- permutations -----------------------------------------------------------------------------


def permute_dims(x: DistArray, /, axes: Sequence[int]) -> DistArray:
    """Return ``x`` with its axes permuted (tiles are permuted views; no communication)."""
    x = check_array(x)
    if not isinstance(axes, (tuple, list)):
        raise TypeError(f"axes: expected a tuple of ints, found {axes!r}")
    perm = tuple(normalize_axis(a, x.ndim, "axes") for a in axes)
    if sorted(perm) != list(range(x.ndim)):
        raise ValueError(
            f"axes: expected a permutation of {tuple(range(x.ndim))}, found {tuple(axes)}"
        )
    bounds = x.tiling.boundaries
    tiles = {
        tuple(pos[a] for a in perm): tile.transpose(perm) for pos, tile in x.local_tiles.items()
    }
    return _result(x, [bounds[a] for a in perm], x.owners.transpose(perm), tiles)


def moveaxis(
    x: DistArray, source: int | Sequence[int], destination: int | Sequence[int], /
) -> DistArray:
    """Return ``x`` with axes moved from ``source`` to ``destination`` (views; no messages)."""
    x = check_array(x)
    src = normalize_axes(source, x.ndim, "source")
    dst = normalize_axes(destination, x.ndim, "destination")
    if len(src) != len(dst):
        raise ValueError(
            f"source, destination: expected as many axes in each, found {len(src)} and {len(dst)}"
        )
    order = [a for a in range(x.ndim) if a not in src]
    for d, s in sorted(zip(dst, src, strict=True)):
        order.insert(d, s)
    return permute_dims(x, tuple(order))


def transpose_2d(x: DistArray) -> DistArray:
    """Return the transpose of a 2-d array (``x.T``; views, no communication)."""
    if x.ndim != 2:
        raise ValueError(
            f"x.T: expected a 2-d array, found {x.ndim}-d; use x.mT (the last two axes) or"
            " permute_dims"
        )
    return permute_dims(x, (1, 0))


# -- adding and removing axes -----------------------------------------------------------------


def expand_dims(x: DistArray, /, axis: int | Sequence[int] = 0) -> DistArray:
    """Return ``x`` with a new axis of length 1 at ``axis`` (views; no communication).

    ``axis`` may be a tuple (axes of the result, as in later versions of the standard).
    """
    x = check_array(x)
    count = len(axis) if isinstance(axis, (tuple, list)) else 1
    new = set(normalize_axes(axis, x.ndim + count))
    bounds, key, old = [], [], iter(x.tiling.boundaries)
    for d in range(x.ndim + count):
        bounds.append([0, 1] if d in new else next(old))
        key.append(None if d in new else slice(None))
    tiles = {}
    for pos, tile in x.local_tiles.items():
        at = iter(pos)
        tiles[tuple(0 if d in new else next(at) for d in range(len(key)))] = tile[(*key, ...)]
    return _result(x, bounds, x.owners, tiles)


def _nonempty_tile(cuts: Sequence[int]) -> int:
    """Return the one tile of an axis of length 1 that holds its element."""
    return tile_index(cuts, 0)


def squeeze(x: DistArray, /, axis: int | Sequence[int]) -> DistArray:
    """Return ``x`` without the given axes of length 1 (views; no communication)."""
    x = check_array(x)
    axes = normalize_axes(axis, x.ndim)
    for a in axes:
        if x.shape[a] != 1:
            raise ValueError(
                f"axis: expected axes of length 1, found axis {a} of length {x.shape[a]}"
                f" (shape {x.shape})"
            )
    bounds = x.tiling.boundaries
    keep = {a: _nonempty_tile(bounds[a]) for a in axes}
    tiles = {}
    for pos, tile in x.local_tiles.items():
        if all(pos[a] == t for a, t in keep.items()):
            key = tuple(0 if d in keep else slice(None) for d in range(x.ndim))
            tiles[tuple(p for d, p in enumerate(pos) if d not in keep)] = tile[(*key, ...)]
    owners = x.owners[tuple(keep.get(d, slice(None)) for d in range(x.ndim))]
    return _result(x, [b for d, b in enumerate(bounds) if d not in keep], owners, tiles)


# -- reshaping --------------------------------------------------------------------------------


def _target_shape(shape: Any, size: int) -> tuple[int, ...]:
    """Return ``shape`` (with at most one ``-1``) as the concrete shape of ``size`` elements."""
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        dims = [operator.index(n) for n in shape]
    except TypeError:
        raise TypeError(f"shape: expected a tuple of ints, found {shape!r}") from None
    if sum(n == -1 for n in dims) > 1 or any(n < -1 for n in dims):
        raise ValueError(f"shape: expected sizes >= 0 and at most one -1, found {tuple(dims)}")
    if -1 in dims:
        rest = math.prod(n for n in dims if n != -1)
        if rest == 0 or size % rest:
            raise ValueError(f"shape: cannot reshape an array of size {size} into {tuple(dims)}")
        dims[dims.index(-1)] = size // rest
    if math.prod(dims) != size:
        raise ValueError(f"shape: cannot reshape an array of size {size} into {tuple(dims)}")
    return tuple(dims)


def _axis_groups(old: tuple[int, ...], new: tuple[int, ...]) -> list[tuple[list[int], list[int]]]:
    """Split two shapes of the same (non-zero) size into runs of axes of equal products."""
    groups, i, j = [], 0, 0
    while i < len(old) or j < len(new):
        oi, nj, po, pn = [], [], 1, 1
        if i < len(old):
            oi.append(i)
            po, i = po * old[i], i + 1
        if j < len(new):
            nj.append(j)
            pn, j = pn * new[j], j + 1
        while po != pn:
            if po < pn:
                oi.append(i)
                po, i = po * old[i], i + 1
            else:
                nj.append(j)
                pn, j = pn * new[j], j + 1
        groups.append((oi, nj))
    return groups


def _flat_runs(
    shape: Sequence[int], bounds: Sequence[Sequence[int]]
) -> list[tuple[int, int]] | None:
    """Return each tile's run of C-order flat indices, tiles in C order; None if not runs.

    A tile is a run when it spans whole trailing axes after its first partial axis and one
    index of the axes before it; consecutive non-empty tiles must continue each other. An
    empty tile's run is empty, at the flat index of its start.
    """
    strides = [math.prod(shape[d + 1 :]) for d in range(len(shape))]
    runs, at = [], 0
    for pos in itertools.product(*(range(len(c) - 1) for c in bounds)):
        lo = [c[p] for c, p in zip(bounds, pos, strict=True)]
        ext = [c[p + 1] - c[p] for c, p in zip(bounds, pos, strict=True)]
        first = sum(a * s for a, s in zip(lo, strides, strict=True))
        count = math.prod(ext)
        if count:
            partial = [d for d in range(len(shape)) if ext[d] != shape[d]]
            if any(ext[d] != 1 for d in range(partial[-1] if partial else 0)) or first != at:
                return None
            at = first + count
        runs.append((first, first + count))
    return runs


def _cuts_for_runs(shape: Sequence[int], runs: list[tuple[int, int]]) -> list[list[int]] | None:
    """Return cut points of ``shape`` whose tiles (in C order) are exactly ``runs``, or None.

    The tilings tried: unit cuts before one axis ``k``, any cuts along ``k``, none after.
    """
    if not shape:
        return [] if runs == [(0, 1)] else None
    for k in range(len(shape)):
        prefix, inner = math.prod(shape[:k]), math.prod(shape[k + 1 :])
        if len(runs) % prefix:
            continue
        per = len(runs) // prefix
        head = runs[:per]
        if any(a % inner or b % inner for a, b in head):
            continue
        cuts = [a // inner for a, _ in head] + [shape[k]]
        block = shape[k] * inner
        made = [
            (p * block + cuts[t] * inner, p * block + cuts[t + 1] * inner)
            for p in range(prefix)
            for t in range(per)
        ]
        if made == runs:
            unit = [list(range(n + 1)) for n in shape[:k]]
            return [*unit, cuts, *([0, n] for n in shape[k + 1 :])]
    return None


class _Plan:
    """How a reshape moves tiles: the new cuts, and each kept tile's new position."""

    def __init__(self, tiling: Tiling, shape: tuple[int, ...]) -> None:
        self.bounds: list[list[int]] = []
        self.ok = True
        self._groups: list[tuple[list[int], tuple[int, ...], dict[int, int], tuple[int, ...]]] = []
        old = tiling.boundaries
        for old_axes, new_axes in _axis_groups(tiling.shape, shape):
            sub = [old[d] for d in old_axes]
            runs = _flat_runs([tiling.shape[d] for d in old_axes], sub)
            new_shape = [shape[d] for d in new_axes]
            cuts = None if runs is None else _cuts_for_runs(new_shape, runs)
            kept = list(range(len(runs or [])))
            if cuts is None and runs is not None:  # without the empty tiles, maybe
                kept = [i for i, (a, b) in enumerate(runs) if b > a]
                cuts = _cuts_for_runs(new_shape, [runs[i] for i in kept])
            if cuts is None:
                self.ok = False
                return
            self.bounds.extend(cuts)
            old_grid = tuple(len(c) - 1 for c in sub)
            new_grid = tuple(len(c) - 1 for c in cuts)
            self._groups.append((old_axes, old_grid, {r: i for i, r in enumerate(kept)}, new_grid))

    def place(self, pos: Position) -> Position | None:
        """Return the new position of the tile at ``pos``; None for a dropped (empty) tile."""
        out: list[int] = []
        for axes, old_grid, kept, new_grid in self._groups:
            at = kept.get(grid_rank(tuple(pos[d] for d in axes), old_grid))
            if at is None:
                return None
            out.extend(grid_position(at, new_grid))
        return tuple(out)


def _flat_runs_ok(x: DistArray) -> bool:
    """Return whether ``x``'s tiles are runs of its flattened order."""
    return x.size == 0 or _Plan(x.tiling, (x.size,)).ok


def flattened(x: DistArray) -> DistArray:
    """Return ``x`` as 1-d: reshaped in place, or first repartitioned by rows (collective).

    For the functions whose ``axis=None`` means the flattened array.
    """
    return reshape(x if _flat_runs_ok(x) else x.repartition(), (-1,))


def reshape(x: DistArray, /, shape: Sequence[int], *, copy: bool | None = None) -> DistArray:
    """Return ``x`` with a new shape (C order), every tile reshaped where it is if it can be.

    Tiles stay where they are (no communication) when each is a run of the C-order
    flattening within the axes a reshape splits or merges: splitting or merging axes that
    are not cut, or reshaping along a cut first axis whose tiles span whole trailing rows.
    Empty tiles that fit nowhere are dropped. Any other layout is moved: the result is cut
    along its first axis, one block per rank, each fetched from the tiles that hold its
    elements (one collective fetch). Tiles are views where NumPy can make one;
    ``copy=True`` copies each tile, ``copy=False`` raises ``ValueError`` where a tile would
    need a copy or data would move.
    """
    x = check_array(x)
    if copy not in (None, True, False):
        raise TypeError(f"copy: expected None, True or False, found {copy!r}")
    dims = _target_shape(shape, x.size)
    if x.size == 0:
        return empty_result(x, dims)
    plan = _Plan(x.tiling, dims)
    if not plan.ok:
        if copy is False:
            raise ValueError(
                f"copy: reshape {x.shape} -> {dims} moves data between the tiles of"
                f" {x.tiling}; pass copy=None"
            )
        return _reshape_moving(x, dims, copy=bool(copy))
    tiling = Tiling.from_boundaries(plan.bounds)
    owners = np.empty(tiling.grid, dtype=np.int32)
    for pos in layout.positions(x.tiling):
        new_pos = plan.place(pos)
        if new_pos is not None:
            owners[new_pos] = x.owners[pos]
    tiles = {}
    for pos, tile in x.local_tiles.items():
        new_pos = plan.place(pos)
        if new_pos is None:
            continue
        out = tile.reshape(tiling.tile_shape(new_pos))
        if copy:
            out = out.copy()
        elif copy is False and out.size and not x.xp.may_share_memory(out, tile):
            raise ValueError(
                f"copy: reshape {x.shape} -> {dims} needs a copy of tile {pos}; pass copy=None"
            )
        tiles[new_pos] = out
    return _result(x, plan.bounds, owners, tiles)


def _reshape_moving(x: DistArray, dims: tuple[int, ...], *, copy: bool) -> DistArray:
    """Reshape by moving data: one block of whole rows of ``dims`` per rank (collective)."""
    rt = x.runtime
    tiling = layout.default_tiling(dims, rt.size)
    owners = layout.assign_owners(tiling, rt.size)
    row = math.prod(dims[1:])
    mine = [pos for pos in layout.positions(tiling) if owners[pos] == rt.rank]
    boxes: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    spans = []
    for pos in mine:
        start, stop = layout.tile_box(tiling, pos)
        first, last = (start[0] * row, stop[0] * row) if dims else (0, 1)
        found = flat_range_boxes(x.shape, first, last)
        spans.append((pos, len(boxes), len(found)))
        boxes.extend(found)
    pieces = x.fetch_regions(boxes)
    xp = x.xp
    tiles = {}
    for pos, at, count in spans:
        if not count:
            tiles[pos] = xp.empty(tiling.tile_shape(pos), dtype=x.dtype)
            continue
        flat = [xp.reshape(p, (-1,)) for p in pieces[at : at + count]]
        joined = flat[0] if len(flat) == 1 else xp.concatenate(flat)
        tiles[pos] = xp.reshape(joined, tiling.tile_shape(pos))
        if copy and len(flat) == 1:
            tiles[pos] = tiles[pos].copy()
    return x.like(tiles, dtype=x.dtype, tiling=tiling, owners=owners)


def flat_range_boxes(
    shape: tuple[int, ...], first: int, last: int
) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Cover the C-order flat indices ``[first, last)`` of ``shape`` with boxes, in order.

    At most ``2 * ndim - 1`` boxes: a partial leading row, a block of whole rows, a partial
    trailing row (each partial row split the same way one axis down).
    """
    if first >= last:
        return []
    if not shape:
        return [((), ())]
    row = math.prod(shape[1:])
    (i0, r0), (i1, r1) = divmod(first, row), divmod(last, row)
    inner = shape[1:]

    def within(i: int, a: int, b: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
        return [((i, *s), (i + 1, *e)) for s, e in flat_range_boxes(inner, a, b)]

    if i0 == i1:
        return within(i0, r0, r1)
    boxes = []
    if r0:
        boxes += within(i0, r0, row)
        i0 += 1
    if i1 > i0:
        boxes.append(((i0, *(0 for _ in inner)), (i1, *inner)))
    if r1:
        boxes += within(i1, 0, r1)
    return boxes


# -- joining ----------------------------------------------------------------------------------


def _source_owner(x: DistArray, start: Sequence[int]) -> int:
    """Return the owner of ``x``'s tile holding the element at ``start`` (clamped)."""
    pos = tuple(tile_index(c, s) for c, s in zip(x.tiling.boundaries, start, strict=True))
    return int(x.owners[pos])


def align(x: DistArray, bounds: Sequence[Sequence[int]]) -> DistArray:
    """Return ``x`` cut at ``bounds`` (collective unless already so cut; fetches tiles).

    A new tile belongs to the owner of the old tile holding its first element.
    """
    tiling = Tiling.from_boundaries(list(bounds))
    if tiling == x.tiling:
        return x
    owners = np.empty(tiling.grid, dtype=np.int32)
    for pos in layout.positions(tiling):
        owners[pos] = _source_owner(x, tiling.start(pos))
    mine = held_positions(tiling, owners, x.runtime.rank)
    data = x.fetch_regions([layout.tile_box(tiling, pos) for pos in mine])
    return x.like(dict(zip(mine, data, strict=True)), x.dtype, tiling, owners)


def _arrays(arrays: Any) -> list[DistArray]:
    """Return ``arrays`` as a non-empty list of distributed arrays of one runtime."""
    if not isinstance(arrays, (tuple, list)) or not arrays:
        raise TypeError(f"arrays: expected a non-empty tuple or list of arrays, found {arrays!r}")
    out = [check_array(a, f"arrays[{i}]") for i, a in enumerate(arrays)]
    for i, a in enumerate(out):
        if a.runtime is not out[0].runtime:
            raise ValueError(f"arrays[{i}]: expected an array of the same runtime as arrays[0]")
    return out


def concat(arrays: Sequence[DistArray], /, *, axis: int | None = 0) -> DistArray:
    """Join arrays along an existing axis (``None``: flattened) into new tiles.

    The result's cuts along ``axis`` are every input's cuts, one after the other, each tile
    owned by the owner of the input tile it copies (a local copy, cast to the promoted
    dtype). Off ``axis`` the result is cut as ``arrays[0]``: an input cut differently there
    is first aligned to it (its ranks fetch the regions they then hold).
    """
    arrays = _arrays(arrays)
    if axis is None:
        arrays = [flattened(a) for a in arrays]
        axis = 0
    first = arrays[0]
    if first.ndim == 0:
        raise ValueError("arrays: expected arrays of at least one dimension, found 0-d arrays")
    ax = normalize_axis(axis, first.ndim)
    for i, a in enumerate(arrays):
        if a.ndim != first.ndim or any(
            n != m for d, (n, m) in enumerate(zip(a.shape, first.shape, strict=True)) if d != ax
        ):
            raise ValueError(
                f"arrays[{i}]: expected the shape of arrays[0] {first.shape} except along axis"
                f" {ax}, found {a.shape}"
            )
    dtype = np.result_type(*(a.dtype for a in arrays))
    ref = first.tiling.boundaries
    aligned = [
        align(a, [c if d == ax else ref[d] for d, c in enumerate(a.tiling.boundaries)])
        for a in arrays
    ]
    cuts, owners, tiles, offset, grid_offset = [0], [], {}, 0, 0
    for a in aligned:
        cuts.extend(offset + c for c in a.tiling.boundaries[ax][1:])
        owners.append(a.owners)
        for pos, tile in a.local_tiles.items():
            new_pos = tuple(p + grid_offset if d == ax else p for d, p in enumerate(pos))
            tiles[new_pos] = tile.astype(dtype, copy=True)
        offset += a.shape[ax]
        grid_offset += a.tiling.grid[ax]
    bounds = [cuts if d == ax else ref[d] for d in range(first.ndim)]
    return _result(first, bounds, np.concatenate(owners, axis=ax), tiles, dtype)


def stack(arrays: Sequence[DistArray], /, *, axis: int = 0) -> DistArray:
    """Join arrays of one shape along a new axis (as :func:`concat` of each with that axis)."""
    arrays = _arrays(arrays)
    for i, a in enumerate(arrays):
        if a.shape != arrays[0].shape:
            raise ValueError(
                f"arrays[{i}]: expected the shape of arrays[0] {arrays[0].shape}, found {a.shape}"
            )
    ax = normalize_axis(axis, arrays[0].ndim + 1)
    return concat([expand_dims(a, ax) for a in arrays], axis=ax)


def unstack(x: DistArray, /, *, axis: int = 0) -> tuple[DistArray, ...]:
    """Split ``x`` along ``axis`` into a tuple of arrays (views of its tiles; no messages)."""
    from gpupart.containers.indexing import getitem

    x = check_array(x)
    ax = normalize_axis(axis, x.ndim)
    head = (slice(None),) * ax
    return tuple(getitem(x, (*head, i)) for i in range(x.shape[ax]))


# -- flipping, broadcasting, tiling, repeating, rolling ---------------------------------------


def flip(x: DistArray, /, *, axis: int | Sequence[int] | None = None) -> DistArray:
    """Reverse ``x`` along ``axis`` (all axes by default); each rank keeps its tiles.

    The result's cuts along the flipped axes are ``x``'s mirrored, so every tile is the
    reversed view of a tile on the same rank (no communication). ``result.repartition(...)``
    puts it back under another tiling.
    """
    x = check_array(x)
    axes = tuple(range(x.ndim)) if axis is None else normalize_axes(axis, x.ndim)
    bounds = list(x.tiling.boundaries)
    grid = x.tiling.grid
    for a in axes:
        n = x.shape[a]
        bounds[a] = [n - c for c in reversed(bounds[a])]
    key = tuple(slice(None, None, -1) if d in axes else slice(None) for d in range(x.ndim))
    tiles = {
        tuple(grid[d] - 1 - p if d in axes else p for d, p in enumerate(pos)): tile[(*key, ...)]
        for pos, tile in x.local_tiles.items()
    }
    return _result(x, bounds, np.flip(x.owners, axes), tiles)


def broadcast_to(x: DistArray, /, shape: Sequence[int]) -> DistArray:
    """Return ``x`` broadcast to ``shape`` (read-only views of its tiles; no communication).

    A broadcast axis (length 1 in ``x``) is uncut in the result; new leading axes too.
    """
    from gpupart.containers.creation import normalize_shape

    x = check_array(x)
    dims = normalize_shape(shape)
    lead = len(dims) - x.ndim
    if lead < 0 or any(n != m and n != 1 for n, m in zip(x.shape, dims[lead:], strict=True)):
        raise ValueError(f"shape: cannot broadcast an array of shape {x.shape} to {dims}")
    old = x.tiling.boundaries
    spread = {d: _nonempty_tile(old[d]) for d in range(x.ndim) if x.shape[d] != dims[lead + d]}
    bounds = [[0, n] for n in dims[:lead]]
    bounds += [[0, dims[lead + d]] if d in spread else old[d] for d in range(x.ndim)]
    tiling = Tiling.from_boundaries(bounds)
    tiles = {}
    for pos, tile in x.local_tiles.items():
        if all(pos[d] == t for d, t in spread.items()):
            new_pos = (0,) * lead + tuple(0 if d in spread else p for d, p in enumerate(pos))
            tiles[new_pos] = x.xp.broadcast_to(tile, tiling.tile_shape(new_pos))
    index = tuple(
        slice(spread[d], spread[d] + 1) if d in spread else slice(None) for d in range(x.ndim)
    )
    return _result(x, bounds, x.owners[index], tiles)


def broadcast_arrays(*arrays: DistArray) -> list[DistArray]:
    """Return the arrays broadcast to one shape (views; no communication)."""
    if not arrays:
        return []
    arrays_ = _arrays(list(arrays))
    try:
        shape = np.broadcast_shapes(*(a.shape for a in arrays_))
    except ValueError:
        shapes = ", ".join(str(a.shape) for a in arrays_)
        raise ValueError(
            f"arrays: expected shapes that broadcast together, found {shapes}"
        ) from None
    return [broadcast_to(a, shape) for a in arrays_]


def tile(x: DistArray, repetitions: Sequence[int], /) -> DistArray:
    """Repeat ``x`` ``repetitions[d]`` times along each axis (local copies; no messages).

    Each copy of a tile stays with its owner, so the result's cuts repeat ``x``'s.
    """
    x = check_array(x)
    if not isinstance(repetitions, (tuple, list)):
        raise TypeError(f"repetitions: expected a tuple of ints, found {repetitions!r}")
    reps = [_nonneg_int(r, f"repetitions[{i}]") for i, r in enumerate(repetitions)]
    ndim = max(len(reps), x.ndim)
    reps = [1] * (ndim - len(reps)) + reps
    if ndim > x.ndim:
        x = expand_dims(x, tuple(range(ndim - x.ndim)))
    shape = tuple(n * r for n, r in zip(x.shape, reps, strict=True))
    if 0 in shape:
        return empty_result(x, shape)
    bounds = []
    for cuts, n, r in zip(x.tiling.boundaries, x.shape, reps, strict=True):
        bounds.append([0] + [k * n + c for k in range(r) for c in cuts[1:]])
    grid = x.tiling.grid
    tiles = {}
    for pos, t in x.local_tiles.items():
        for ks in itertools.product(*(range(r) for r in reps)):
            tiles[tuple(p + k * g for p, k, g in zip(pos, ks, grid, strict=True))] = t.copy()
    return _result(x, bounds, np.tile(x.owners, reps), tiles)


def _repeat_counts(repeats: Any, n: int) -> int | np.ndarray:
    """Return ``repeats`` as an int or as ``n`` counts on the host (collective for a DistArray)."""
    if isinstance(repeats, (int, np.integer)) and not isinstance(repeats, bool):
        return _nonneg_int(repeats, "repeats")
    if isinstance(repeats, DistArray):
        counts = repeats.to_numpy()
    elif hasattr(repeats, "shape") and hasattr(repeats, "dtype"):
        counts = repeats.get() if hasattr(repeats, "get") else np.asarray(repeats)
    else:
        raise TypeError(f"repeats: expected an int or an integer array, found {repeats!r}")
    if counts.dtype.kind not in "iu" or counts.ndim > 1:
        raise TypeError(
            f"repeats: expected an int or a 1-d integer array, found a {counts.ndim}-d"
            f" {counts.dtype} array"
        )
    counts = counts.reshape(-1)
    if counts.size == 1:
        return _nonneg_int(counts[0], "repeats")
    if counts.size != n:
        raise ValueError(
            f"repeats: expected 1 or {n} counts (the axis length), found {counts.size}"
        )
    if (counts < 0).any():
        raise ValueError(f"repeats: expected counts >= 0, found {int(counts.min())}")
    return counts.astype(np.int64)


def repeat(x: DistArray, repeats: int | Any, /, *, axis: int | None = None) -> DistArray:
    """Repeat each element of ``x`` along ``axis`` (``None``: flattened) where it is.

    ``repeats`` is an int or one count per element (a NumPy array, or a DistArray which every
    rank then gathers). The result's cuts are ``x``'s scaled by the counts, so each rank
    repeats its own tiles (no communication). ``axis=None`` flattens ``x`` first, which
    repartitions it by rows when its tiles are not runs of the flattened order.
    """
    x = check_array(x)
    if axis is None:
        x, axis = flattened(x), 0
    ax = normalize_axis(axis, x.ndim)
    counts = _repeat_counts(repeats, x.shape[ax])
    cuts = x.tiling.boundaries[ax]
    if isinstance(counts, int):
        new_cuts = [c * counts for c in cuts]
    else:
        ends = np.concatenate([[0], np.cumsum(counts)])
        new_cuts = [int(ends[c]) for c in cuts]
    tiles = {}
    for pos, t in x.local_tiles.items():
        if isinstance(counts, int):
            per = counts
        else:
            part = counts[cuts[pos[ax]] : cuts[pos[ax] + 1]]
            per = part if x.xp is np else part.tolist()
        tiles[pos] = x.xp.repeat(t, per, axis=ax)
    bounds = [new_cuts if d == ax else b for d, b in enumerate(x.tiling.boundaries)]
    return _result(x, bounds, x.owners, tiles)


def _roll_pieces(lo: int, hi: int, n: int, shift: int) -> list[tuple[int, int, int]]:
    """Split the result range ``[lo, hi)`` of a roll by ``shift``: ``(dst, src, length)``."""
    pieces = []
    if lo < min(hi, shift):
        pieces.append((lo, lo - shift + n, min(hi, shift) - lo))
    if max(lo, shift) < hi:
        pieces.append((max(lo, shift), max(lo, shift) - shift, hi - max(lo, shift)))
    return pieces


def roll(
    x: DistArray,
    /,
    shift: int | Sequence[int],
    *,
    axis: int | Sequence[int] | None = None,
) -> DistArray:
    """Roll ``x``'s elements along ``axis`` (``None``: flattened) into new tiles.

    The result keeps ``x``'s tiling. Along uncut axes every rank rolls its own tiles (no
    communication); along a cut axis each rank fetches the regions its tiles receive. With
    ``axis=None``, a layout whose tiles are not runs of the flattened order (cut along a
    later axis) is rolled under the default tiling and repartitioned back.
    """
    x = check_array(x)
    if axis is None:
        if isinstance(shift, (tuple, list)):
            raise TypeError(f"shift: expected an int when axis is None, found {shift!r}")
        out = reshape(roll(flattened(x), shift, axis=0), x.shape)
        return out if _flat_runs_ok(x) else out.repartition(tiles=x.tiling)
    shifts = list(shift) if isinstance(shift, (tuple, list)) else [shift]
    axes = list(axis) if isinstance(axis, (tuple, list)) else [axis]
    if len(shifts) == 1 and len(axes) > 1:
        shifts *= len(axes)
    if len(shifts) != len(axes):
        raise ValueError(f"shift, axis: expected as many shifts as axes, found {shift!r}, {axis!r}")
    total: dict[int, int] = {}
    for s, a in zip(shifts, axes, strict=True):
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
            raise TypeError(f"shift: expected ints, found {shift!r}")
        d = normalize_axis(a, x.ndim)
        total[d] = total.get(d, 0) + int(s)
    total = {d: s % x.shape[d] for d, s in total.items() if x.shape[d]}
    grid = x.tiling.grid
    if not total:
        return x.like({pos: t.copy() for pos, t in x.local_tiles.items()}, x.dtype)
    if all(grid[d] == 1 for d in total):
        axes_, shifts_ = tuple(total), tuple(total.values())
        tiles = {pos: x.xp.roll(t, shifts_, axes_) for pos, t in x.local_tiles.items()}
        return x.like(tiles, x.dtype)
    plans, boxes = [], []
    for pos in x.local_tiles:
        start, stop = layout.tile_box(x.tiling, pos)
        per_axis = []
        for d in range(x.ndim):
            if d in total:
                per_axis.append(_roll_pieces(start[d], stop[d], x.shape[d], total[d]))
            else:
                per_axis.append([(start[d], start[d], stop[d] - start[d])])
        for combo in itertools.product(*per_axis):
            dst = tuple(slice(p[0] - s, p[0] - s + p[2]) for p, s in zip(combo, start, strict=True))
            plans.append((pos, dst))
            boxes.append((tuple(p[1] for p in combo), tuple(p[1] + p[2] for p in combo)))
    data = x.fetch_regions(boxes)
    tiles = {pos: x.xp.empty(t.shape, dtype=x.dtype) for pos, t in x.local_tiles.items()}
    for (pos, dst), part in zip(plans, data, strict=True):
        tiles[pos][dst] = part
    return x.like(tiles, x.dtype)
