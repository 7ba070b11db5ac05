"""Sorting distributed arrays: ``sort``, ``argsort``, the ``unique_*`` family, ``searchsorted``.

``sort``/``argsort`` along an axis with at most one non-empty tile sort tile by tile (no
communication). Along the cut axis of a 1-d array they run a *sample sort*:

1. each rank sorts the elements of the tiles it counts (each tile once: a replicated tile
   on rank 0 only) by the key ``(value, global index)`` (NaNs last, as NumPy sorts them);
2. one all-gather of a regular sample of every rank's keys (``OVERSAMPLE`` per rank and
   destination, each weighted by the share of its rank's elements it stands for); every rank
   picks the same ``size - 1`` splitter keys from it;
3. ONE :meth:`Runtime.exchange` sends each rank the keys between two splitters;
4. each rank merges what it got (a stable sort by the index, then by the value); one
   all-gather of the lengths makes the result: rank ``r``'s run is its tile ``r``.

The global index in the key makes every key distinct, so ties are stable and equal values
(even all of them) spread evenly over the ranks. Descending is the reverse of the ascending
order of ``(value, -index)``: rank ``r`` sends bucket ``k`` to rank ``size - 1 - k``, which
reverses its run (equal elements keep their order; NaNs come first, as in the tile-by-tile
path). The result is cut where the runs end (within a sample's error of even).

An n-d array along a cut axis raises ``NotImplementedError`` (repartition so the axis is
whole: every line along it is then sorted where it is).

``unique_*`` (any shape, flattened; results sorted as ``np.unique``'s, NaNs distinct as in
NumPy 2's ``unique_values``): each rank finds the unique values of the tiles it holds with
their counts and first flat indices, sends each to the rank its splitter range says (ONE
exchange; equal values always go to the same rank), which merges them. ``unique_inverse``
and ``unique_all`` send every rank back the result position of each of its unique values
(a second exchange): the inverse indices have ``x``'s shape and layout.

``searchsorted``: the ranks all-gather a sample of every tile of the sorted ``x1`` (its
first value and ``SEARCH_SAMPLES`` evenly spaced others, with their indices); each value
of ``x2`` then lies between two known samples, and each rank fetches only those gaps (one
``fetch_regions``) to place its values of ``x2``. The result is laid out like ``x2``.
"""

from __future__ import annotations

import itertools
from typing import Any, NamedTuple

import numpy as np
from gpupart.containers.darray import DistArray, host_array
from gpupart.containers.manipulation import check_array, normalize_axis

from gpupart.protocol import Tiling
from gpupart.trace import ranged

__all__ = [
    "argsort",
    "searchsorted",
    "sort",
    "unique_all",
    "unique_counts",
    "unique_inverse",
    "unique_values",
]

#: Samples per rank and destination rank for the splitters (more: better balance).
OVERSAMPLE = 16
#: Samples per tile of ``x1`` in ``searchsorted`` besides its first value.
SEARCH_SAMPLES = 32

INDEX = np.dtype(np.int64)


class UniqueAllResult(NamedTuple):
    """``unique_all``'s result: the values, first indices, inverse indices and counts."""

    values: DistArray
    indices: DistArray
    inverse_indices: DistArray
    counts: DistArray


class UniqueCountsResult(NamedTuple):
    """``unique_counts``'s result: the values and their counts."""

    values: DistArray
    counts: DistArray


class UniqueInverseResult(NamedTuple):
    """``unique_inverse``'s result: the values and the inverse indices (``x``'s shape)."""

    values: DistArray
    inverse_indices: DistArray


# -- helpers ----------------------------------------------------------------------------------


def _concat(xp: Any, parts: list[Any], dtype: Any) -> Any:
    """Return ``parts`` (1-d) joined; an empty array of ``dtype`` when there are none."""
    return xp.concatenate(parts) if parts else xp.empty(0, dtype=dtype)


def _filled(x: DistArray, ax: int) -> int:
    """Return how many non-empty tiles ``x`` has along ``ax``."""
    return sum(b > a for a, b in itertools.pairwise(x.tiling.boundaries[ax]))


def _lexsort(xp: Any, values: Any, ties: Any) -> Any:
    """Return the order sorting by ``values``, then ``ties`` (two stable sorts)."""
    order = xp.argsort(ties, kind="stable")
    return order[xp.argsort(values[order], kind="stable")]


def _bucket_cuts(rt: Any, xp: Any, values: Any, ties: Any | None) -> list[int]:
    """Return where the sorted keys ``(values, ties)`` split into ``rt.size`` buckets.

    Collective (one all-gather of samples): every rank picks the same splitter keys; bucket
    ``k`` holds the keys above splitter ``k - 1`` and up to splitter ``k``. Without ``ties``
    the keys are the values alone (equal values always land in one bucket).
    """
    n, p = int(values.shape[0]), rt.size
    if p == 1:
        return [0, n]
    s = min(n, OVERSAMPLE * p)
    at = xp.asarray((2 * np.arange(s, dtype=np.int64) + 1) * n // (2 * max(s, 1)))
    sample = (host_array(values[at]), None if ties is None else host_array(ties[at]), n)
    parts = [part for part in rt.allgather(sample) if part[2]]
    if not parts:
        return [0] * p + [n]
    sv = np.concatenate([v for v, _, _ in parts])
    st = np.concatenate([t for _, t, _ in parts]) if ties is not None else np.zeros(sv.size)
    weights = np.concatenate([np.full(v.size, m / v.size) for v, _, m in parts])
    order = np.argsort(st, kind="stable")
    order = order[np.argsort(sv[order], kind="stable")]
    middle = np.cumsum(weights[order]) - weights[order] / 2  # elements up to each sample
    total = sum(m for _, _, m in parts)
    picks = np.searchsorted(middle, total * np.arange(1, p) / p).clip(0, sv.size - 1)
    split_v, split_t = sv[order][picks], st[order][picks]
    dev = xp.asarray(split_v)
    if ties is None:
        ends = host_array(xp.searchsorted(values, dev, side="right")).tolist()
    else:
        los = host_array(xp.searchsorted(values, dev, side="left")).tolist()
        his = host_array(xp.searchsorted(values, dev, side="right")).tolist()
        ends = []
        for lo, hi, t in zip(los, his, split_t, strict=True):
            within = xp.searchsorted(ties[lo:hi], xp.asarray(t, dtype=ties.dtype), side="right")
            ends.append(lo + int(within))
    return [0, *ends, n]


def _joined(x: DistArray, *pieces: tuple[Any, Any]) -> list[DistArray]:
    """Return 1-d arrays joining each rank's ``(piece, dtype)`` in rank order.

    The pieces have one length on this rank; one all-gather of the lengths.
    """
    rt = x.runtime
    lengths = rt.allgather(int(pieces[0][0].shape[0]))
    tiling = Tiling.from_boundaries([[0, *itertools.accumulate(lengths)]])
    owners = np.arange(rt.size, dtype=np.int32)
    return [
        x.like({(rt.rank,): x.xp.ascontiguousarray(piece)}, dtype, tiling, owners)
        for piece, dtype in pieces
    ]


# -- sort and argsort -------------------------------------------------------------------------


def _check_sortable(x: DistArray, ax: int, what: str) -> bool:
    """Return whether ``x`` must be sorted across ranks along ``ax`` (a cut 1-d array).

    An n-d array cut along ``ax`` (two non-empty tiles) raises ``NotImplementedError``.
    """
    filled = _filled(x, ax)
    if filled <= 1:
        return False
    if x.ndim == 1:
        return True
    grid = tuple(1 if d == ax else g for d, g in enumerate(x.tiling.grid))
    raise NotImplementedError(
        f"{what}: axis {ax} of a {x.ndim}-d array is cut into {filled} tiles; a distributed"
        f" {what} works along a 1-d array only: repartition first (x.repartition(grid={grid}))"
        " so each line is sorted where it is, or use x.to_numpy()"
    )


@ranged("compute.sort")
def sort(
    x: DistArray, /, *, axis: int = -1, descending: bool = False, stable: bool = True
) -> DistArray:
    """Return ``x`` sorted along ``axis`` (always stable; NaNs last, first when descending).

    Tile by tile along an uncut axis (no communication); a sample sort across ranks along
    a cut 1-d array (one exchange of the data; see the module docstring).
    """
    x = check_array(x)
    ax = normalize_axis(axis, x.ndim)
    if _check_sortable(x, ax, "sort"):
        return _sample_sort(x, bool(descending), indices=False)
    xp = x.xp

    def one(t: Any) -> Any:
        if not descending:
            return xp.sort(t, axis=ax, kind="stable")
        # reversed, sorted, reversed back: equal elements (0.0 and -0.0) keep their order
        return xp.flip(xp.sort(xp.flip(t, axis=ax), axis=ax, kind="stable"), axis=ax)

    return x.map_tiles(one, x.dtype)


@ranged("compute.sort")
def argsort(
    x: DistArray, /, *, axis: int = -1, descending: bool = False, stable: bool = True
) -> DistArray:
    """Return the indices (int64) that sort ``x`` along ``axis``, as :func:`sort` orders.

    Stable in both directions (equal elements keep their order). Tile by tile along an
    uncut axis; a sample sort along a cut 1-d array.
    """
    x = check_array(x)
    ax = normalize_axis(axis, x.ndim)
    if _check_sortable(x, ax, "argsort"):
        return _sample_sort(x, bool(descending), indices=True)
    xp = x.xp

    def one(t: Any) -> Any:
        if not descending:
            return xp.argsort(t, axis=ax, kind="stable").astype(INDEX)
        n = t.shape[ax]
        back = xp.argsort(xp.flip(t, axis=ax), axis=ax, kind="stable")
        return (n - 1 - xp.flip(back, axis=ax)).astype(INDEX)

    return x.map_tiles(one, INDEX)


def _sample_sort(x: DistArray, descending: bool, *, indices: bool) -> DistArray:
    """Return the values (or global indices) of a 1-d ``x`` in sorted order (collective)."""
    rt, xp = x.runtime, x.xp
    held = sorted(x.counted_tiles(), key=lambda item: item[0])
    values = _concat(xp, [t for _, t in held], x.dtype)
    index = _concat(
        xp, [x.tiling.start(pos)[0] + xp.arange(t.shape[0], dtype=INDEX) for pos, t in held], INDEX
    )
    if descending:  # ascending by (value, -index), then reversed
        values, index = values[::-1], -index[::-1]
    order = xp.argsort(values, kind="stable")
    values, ties = values[order], index[order]
    cuts = _bucket_cuts(rt, xp, values, ties)
    carry = indices or x.dtype.kind in "fc"  # equal ints/bools are alike: no order to keep
    pieces: list[Any] = []
    for a, b in itertools.pairwise(cuts):
        pieces.append({"v": values[a:b], "t": ties[a:b]} if carry else values[a:b])
    if descending:
        pieces.reverse()
    got = rt.exchange(pieces)
    if carry:
        values = _concat(xp, [g["v"] for g in got], x.dtype)
        ties = _concat(xp, [g["t"] for g in got], INDEX)
        order = _lexsort(xp, values, ties)
        out = (-ties[order] if descending else ties[order]) if indices else values[order]
    else:
        out = xp.sort(_concat(xp, list(got), x.dtype), kind="stable")
    if descending:
        out = out[::-1]
    return _joined(x, (out, INDEX if indices else x.dtype))[0]


# -- unique -----------------------------------------------------------------------------------


def _flat_index(xp: Any, shape: tuple[int, ...], start: tuple[int, ...], tile: Any) -> Any:
    """Return the C-order flat global index of every element of ``tile`` (1-d)."""
    ndim = len(shape)
    flat = xp.zeros(tuple(tile.shape), dtype=INDEX)
    stride = 1
    for d in reversed(range(ndim)):
        line = (start[d] + xp.arange(tile.shape[d], dtype=INDEX)) * stride
        flat = flat + line.reshape(tuple(-1 if e == d else 1 for e in range(ndim)))
        stride *= shape[d]
    return flat.reshape(-1)


def _group_starts(xp: Any, values: Any, ties: Any | None) -> Any:
    """Return where a new group of equal sorted keys starts (``ties``: NaNs' identities).

    Equal values group; a NaN groups only with the NaN of the same tie key (NaNs are
    distinct, and the same NaN comes twice only from a replicated tile).
    """
    same = values[1:] == values[:-1]
    if ties is not None:
        nan = xp.isnan(values)
        same = (same | (nan[1:] & nan[:-1])) & (ties[1:] == ties[:-1])
    return xp.concatenate([xp.ones(min(int(values.shape[0]), 1), dtype=bool), ~same])


def _segment_sums(xp: Any, weights: Any, starts: Any) -> Any:
    """Return the sums of ``weights`` over the runs beginning at ``starts``."""
    total = xp.concatenate([xp.zeros(1, dtype=INDEX), xp.cumsum(weights, dtype=INDEX)])
    ends = xp.concatenate([starts[1:], xp.asarray([weights.shape[0]], dtype=starts.dtype)])
    return total[ends] - total[starts]


def _nan_ties(xp: Any, values: Any, index: Any, floating: bool) -> Any | None:
    """Return a NaN's flat index (its identity) and -1 for others; ``None`` if not floating."""
    if not floating:
        return None
    return xp.where(xp.isnan(values), index, xp.asarray(-1, dtype=INDEX))


def _unique(x: DistArray, inverse: bool) -> tuple[DistArray, DistArray, DistArray, Any]:
    """Return the sorted unique values, their first flat indices, counts, and the inverse.

    Collective (see the module docstring); the inverse (``None`` unless asked) has ``x``'s
    layout.
    """
    x = check_array(x)
    rt, xp = x.runtime, x.xp
    floating = x.dtype.kind in "fc"
    counted = {pos for pos, _ in x.counted_tiles()}
    held = list(x.local_tiles.items())
    values = _concat(xp, [t.reshape(-1) for _, t in held], x.dtype)
    index = _concat(
        xp, [_flat_index(xp, x.shape, x.tiling.start(pos), t) for pos, t in held], INDEX
    )
    # a replicated tile is held everywhere but counted once (on rank 0)
    weight = _concat(
        xp, [xp.full(t.size, int(pos in counted), dtype=INDEX) for pos, t in held], INDEX
    )
    order = _lexsort(xp, values, index)
    values, index, weight = values[order], index[order], weight[order]
    ties = _nan_ties(xp, values, index, floating)
    new = _group_starts(xp, values, ties)
    starts = xp.flatnonzero(new)
    uv, uf, uc = values[starts], index[starts], _segment_sums(xp, weight, starts)
    cuts = _bucket_cuts(rt, xp, uv, None if ties is None else ties[starts])
    pieces = [{"v": uv[a:b], "f": uf[a:b], "c": uc[a:b]} for a, b in itertools.pairwise(cuts)]
    got = rt.exchange(pieces)
    mv = _concat(xp, [g["v"] for g in got], x.dtype)
    mf = _concat(xp, [g["f"] for g in got], INDEX)
    mc = _concat(xp, [g["c"] for g in got], INDEX)
    merge = _lexsort(xp, mv, mf)  # by value, the first index first within a group
    mv, mf, mc = mv[merge], mf[merge], mc[merge]
    mnew = _group_starts(xp, mv, _nan_ties(xp, mv, mf, floating))
    mstarts = xp.flatnonzero(mnew)
    out_v, out_f, out_c = _joined(
        x, (mv[mstarts], x.dtype), (mf[mstarts], INDEX), (_segment_sums(xp, mc, mstarts), INDEX)
    )
    if not inverse:
        return out_v, out_f, out_c, None
    offset = int(out_v.tiling.boundaries[0][rt.rank])
    back = xp.empty(int(mv.shape[0]), dtype=INDEX)
    back[merge] = xp.cumsum(mnew, dtype=INDEX) - 1 + offset
    sizes = [0, *itertools.accumulate(int(g["v"].shape[0]) for g in got)]
    returned = rt.exchange([back[a:b] for a, b in itertools.pairwise(sizes)])
    where = _concat(xp, list(returned), INDEX)  # result position of each local unique value
    inv = xp.empty(int(values.shape[0]), dtype=INDEX)
    inv[order] = where[xp.cumsum(new, dtype=INDEX) - 1]
    tiles, at = {}, 0
    for pos, t in held:
        tiles[pos] = inv[at : at + t.size].reshape(t.shape)
        at += t.size
    return out_v, out_f, out_c, x.like(tiles, INDEX)


def unique_values(x: DistArray, /) -> DistArray:
    """Return the unique elements of ``x`` (flattened), sorted; each NaN is distinct."""
    return _unique(x, inverse=False)[0]


def unique_counts(x: DistArray, /) -> UniqueCountsResult:
    """Return the sorted unique elements of ``x`` and how often each occurs."""
    values, _, counts, _ = _unique(x, inverse=False)
    return UniqueCountsResult(values, counts)


def unique_inverse(x: DistArray, /) -> UniqueInverseResult:
    """Return the sorted unique elements and, laid out like ``x``, each element's position."""
    values, _, _, inverse = _unique(x, inverse=True)
    return UniqueInverseResult(values, inverse)


def unique_all(x: DistArray, /) -> UniqueAllResult:
    """Return the unique elements, their first flat indices, the inverse and the counts."""
    values, first, counts, inverse = _unique(x, inverse=True)
    return UniqueAllResult(values, first, inverse, counts)


# -- searchsorted -----------------------------------------------------------------------------


def searchsorted(x1: DistArray, x2: Any, /, *, side: str = "left", sorter: Any = None) -> DistArray:
    """Return where ``x2``'s values would go in the sorted 1-d ``x1`` (int64, ``x2``'s layout).

    ``side='left'`` gives the first suitable index, ``'right'`` the last. ``x2`` is a
    DistArray or a small array (the same on every rank). ``sorter`` (indices sorting ``x1``)
    is applied with ``take`` (every rank gathers it). Collective: one all-gather of samples
    of ``x1``'s tiles and one ``fetch_regions`` of the gaps between them that hold values.
    """
    x1 = check_array(x1, "x1")
    if x1.ndim != 1:
        raise ValueError(f"x1: expected a 1-d array, found a {x1.ndim}-d array")
    if side not in ("left", "right"):
        raise ValueError(f"side: expected 'left' or 'right', found {side!r}")
    if sorter is not None:
        from gpupart.containers.indexing import take

        if getattr(sorter, "shape", None) != x1.shape:
            raise ValueError(
                f"sorter: expected indices of shape {x1.shape}, found"
                f" {getattr(sorter, 'shape', type(sorter).__name__)}"
            )
        x1 = take(x1, sorter)
    if not isinstance(x2, DistArray):
        from gpupart.containers.creation import asarray

        x2 = asarray(x2)
    rt, xp, n = x1.runtime, x1.xp, x1.shape[0]
    if n == 0:
        return x2.like({p: xp.zeros(t.shape, dtype=INDEX) for p, t in x2.local_tiles.items()})
    mine = []
    for pos, tile in x1.counted_tiles():
        m = int(tile.shape[0])
        if m:
            q = min(m, SEARCH_SAMPLES + 1)
            at = np.arange(q, dtype=np.int64) * m // q
            mine.append((at + x1.tiling.start(pos)[0], host_array(tile[xp.asarray(at)])))
    samples = [part for parts in rt.allgather(mine) for part in parts]
    where = np.concatenate([at for at, _ in samples])
    order = np.argsort(where)
    where, known = where[order], np.concatenate([v for _, v in samples])[order]
    # gap k lies between samples k - 1 and k: [where[k - 1] + 1, where[k]) (ends: -1 and n)
    lo = np.concatenate([[0], where + 1])
    hi = np.concatenate([where, [n]])
    known_dev = xp.asarray(known)
    gaps = {pos: xp.searchsorted(known_dev, t, side=side) for pos, t in x2.local_tiles.items()}
    needed = sorted(
        {int(k) for g in gaps.values() for k in host_array(xp.unique(g)).tolist() if hi[k] > lo[k]}
    )
    parts = x1.fetch_regions([((int(lo[k]),), (int(hi[k]),)) for k in needed])
    fetched = _concat(xp, list(parts), x1.dtype)
    lengths = np.zeros(lo.size, dtype=np.int64)
    lengths[needed] = hi[needed] - lo[needed]
    base = xp.asarray(lo - (np.cumsum(lengths) - lengths))  # lo[k] - fetched before gap k
    tiles = {}
    for pos, g in gaps.items():
        tile = x2.local_tiles[pos]
        found = xp.searchsorted(fetched, tile.reshape(-1), side=side).reshape(tile.shape)
        tiles[pos] = xp.asarray(base[g] + found, dtype=INDEX).reshape(tile.shape)
    return x2.like(tiles, INDEX)
