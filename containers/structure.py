"""Triangles, coordinate grids, nonzero indices and DLPack imports of distributed arrays.

* ``tril``/``triu`` mask each tile by its global row and column offsets: no message, the
  result laid out like ``x`` (any tiling, batched too).
* ``meshgrid`` builds each output tile (default tiling) from the part of each 1-d input it
  needs: one ``fetch_regions`` per input.
* ``nonzero`` keeps ``x``'s row blocks when only its first axis is cut (otherwise it
  repartitions so it is): each row block's indices are a tile of the results, in C order,
  after one all-gather of the counts.
* ``from_dlpack`` imports the same array on every rank, as ``asarray`` does.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
from gpupart.containers import layout
from gpupart.containers.creation import asarray, runtime_or_init
from gpupart.containers.darray import REPLICATED, DistArray
from gpupart.containers.manipulation import check_array

from gpupart.errors import CollectiveError
from gpupart.protocol import Tiling

__all__ = ["from_dlpack", "meshgrid", "nonzero", "tril", "triu"]


# -- triangles --------------------------------------------------------------------------------


def _diagonal(k: Any) -> int:
    """Return ``k`` as an int (bools are refused, as in the standard's ``k: int``)."""
    if isinstance(k, bool):
        raise TypeError(f"k: expected an int, found {k!r}")
    try:
        return operator.index(k)
    except TypeError:
        raise TypeError(f"k: expected an int, found {k!r}") from None


def _triangle(x: Any, k: Any, lower: bool) -> DistArray:
    """Keep the elements on and below (``lower``) or above diagonal ``k`` of every matrix."""
    x = check_array(x)
    k = _diagonal(k)
    if x.ndim < 2:
        raise ValueError(f"x: expected an array of at least 2 dimensions, found {x.ndim}-d")
    rows, cols = x.shape[-2:]
    k = min(max(k, -rows - 1), cols + 1)  # beyond the matrix all or nothing is kept
    keep = x.xp.tril if lower else x.xp.triu
    tiles = {}
    for pos, start, _ in x.boxes():
        # global (i, j) is local (i - r0, j - c0): j - i <= k becomes j' - i' <= k + r0 - c0
        tiles[pos] = keep(x.local_tiles[pos], k=k + start[-2] - start[-1])
    return x.like(tiles, x.dtype)


def tril(x: DistArray, /, *, k: int = 0) -> DistArray:
    """Return ``x`` with the elements above diagonal ``k`` zeroed (tile by tile; no message)."""
    return _triangle(x, k, lower=True)


def triu(x: DistArray, /, *, k: int = 0) -> DistArray:
    """Return ``x`` with the elements below diagonal ``k`` zeroed (tile by tile; no message)."""
    return _triangle(x, k, lower=False)


# -- coordinate grids -------------------------------------------------------------------------


def meshgrid(*arrays: DistArray, indexing: str = "xy") -> list[DistArray]:
    """Return coordinate grids of 1-d arrays (collective; one fetch per input).

    Each output has the broadcast shape (the first two lengths swapped for ``'xy'``) under the
    default tiling and its input's dtype; each rank fetches the parts of the inputs its tiles
    span and broadcasts them (writable copies, as NumPy's).
    """
    if indexing not in ("xy", "ij"):
        raise ValueError(f"indexing: expected 'xy' or 'ij', found {indexing!r}")
    for i, a in enumerate(arrays):
        check_array(a, f"arrays[{i}]")
        if a.ndim != 1:
            raise ValueError(f"arrays[{i}]: expected a 1-d array, found {a.ndim}-d")
    if not arrays:
        return []
    axes = list(range(len(arrays)))
    if indexing == "xy" and len(arrays) > 1:
        axes[0], axes[1] = 1, 0
    shape = [0] * len(arrays)
    for a, axis in zip(arrays, axes, strict=True):
        shape[axis] = a.shape[0]
    rt = arrays[0].runtime
    tiling = layout.default_tiling(tuple(shape), rt.size)
    owners = layout.assign_owners(tiling, rt.size)
    mine = [(pos, *layout.tile_box(tiling, pos)) for pos in layout.positions(tiling)]
    mine = [(pos, start, stop) for pos, start, stop in mine if owners[pos] == rt.rank]
    out = []
    for a, axis in zip(arrays, axes, strict=True):
        parts = a.fetch_regions([((start[axis],), (stop[axis],)) for _, start, stop in mine])
        tiles = {}
        for (pos, start, stop), part in zip(mine, parts, strict=True):
            extent = tuple(b - s for s, b in zip(start, stop, strict=True))
            along = [1] * len(shape)
            along[axis] = extent[axis]
            tiles[pos] = a.xp.broadcast_to(part.reshape(along), extent).copy()
        out.append(a.like(tiles, a.dtype, tiling=tiling, owners=owners))
    return out


# -- nonzero ----------------------------------------------------------------------------------


def nonzero(x: DistArray, /) -> tuple[DistArray, ...]:
    """Return the indices of ``x``'s nonzero elements, one int64 1-d array per axis, C order.

    Collective. The results have one tile per row block of ``x``, held by that block's owner;
    an ``x`` cut along other axes is first repartitioned into row blocks (C order would
    interleave its tiles). One all-gather of the counts (none when every rank holds every
    row block).
    """
    x = check_array(x)
    if x.ndim == 0:
        raise ValueError(
            "x: expected an array of at least 1 dimension, found 0-d (the standard leaves"
            " nonzero of a 0-d array undefined); use expand_dims(x) first"
        )
    if any(g > 1 for g in x.tiling.grid[1:]):
        x = x.repartition()  # whole rows per tile: each tile's C order is a run of the result
    blocks = x.tiling.grid[0]
    block_owners = np.asarray(x.owners).reshape(blocks, -1)[:, 0]
    xp, rank = x.xp, x.runtime.rank
    found: dict[int, tuple[Any, ...]] = {}
    for pos, start, _ in x.boxes():
        idx = xp.nonzero(x.local_tiles[pos])
        found[pos[0]] = tuple(
            i.astype(np.int64, copy=False) + s for i, s in zip(idx, start, strict=True)
        )
    counts = {p: int(found[p][0].shape[0]) for p in found}
    if not (block_owners == REPLICATED).all():
        owned = {p: n for p, n in counts.items() if block_owners[p] == rank}
        for part in x.runtime.allgather(owned):
            counts.update(part)
    cuts = np.concatenate([[0], np.cumsum([counts[p] for p in range(blocks)])]).tolist()
    tiling = Tiling.from_boundaries([[int(c) for c in cuts]])
    owners = np.ascontiguousarray(block_owners, dtype=np.int32)
    return tuple(
        x.like({(p,): found[p][axis] for p in found}, np.int64, tiling=tiling, owners=owners)
        for axis in range(x.ndim)
    )


# -- DLPack -----------------------------------------------------------------------------------


def _import(xp: Any, x: Any, copy: bool | None) -> Any:
    """``xp.from_dlpack(x)`` honouring ``copy`` (older array modules lack the keyword)."""
    if not hasattr(x, "__dlpack__"):
        raise TypeError(f"x: expected an object with __dlpack__, found {type(x).__name__}")
    if copy is None:
        return xp.from_dlpack(x)
    try:
        return xp.from_dlpack(x, copy=copy)
    except TypeError as exc:
        if "copy" not in str(exc):
            raise
    local = xp.from_dlpack(x)  # an import without copy= never copies
    return local.copy() if copy else local


def from_dlpack(x: Any, /, *, device: Any = None, copy: bool | None = None) -> DistArray:
    """Distribute a DLPack array every rank passes alike (collective, as ``asarray``).

    ``copy=True`` always copies, ``copy=False`` never does (the import fails if it must),
    ``None`` copies only if it must. A :class:`DistArray` is returned as it is (its tiles
    copied with ``copy=True``). An import that fails on some rank fails on every rank.
    """
    if copy not in (None, True, False):
        raise TypeError(f"copy: expected None, True or False, found {copy!r}")
    rt = runtime_or_init()
    if device is not None and device != rt.backend.dlpack_device:
        raise ValueError(f"device: expected None or {rt.backend.dlpack_device!r}, found {device!r}")
    if isinstance(x, DistArray):
        return x.map_tiles(lambda t: t.copy(), x.dtype) if copy else x
    local, problem = None, None
    try:
        local = _import(rt.backend.xp, x, copy)
    except (AttributeError, BufferError, RuntimeError, TypeError, ValueError) as exc:
        problem = (type(exc).__name__, str(exc))
        error = exc
    problems = rt.allgather(problem)
    if any(p is not None for p in problems):
        if len(set(problems)) == 1:  # the same failure everywhere: the array module's error
            raise error
        detail = "; ".join(f"rank {r}: {p[0]}: {p[1]}" for r, p in enumerate(problems) if p)
        raise CollectiveError(f"from_dlpack: the import failed on some ranks: {detail}")
    return asarray(local)
