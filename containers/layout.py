"""Where the tiles of a distributed array are: tilings, owners, and boxes that overlap tiles.

A layout is a :class:`~gpupart.protocol.Tiling` (the block grid over the global shape) plus
one owner rank per grid position (an integer array of the grid's shape). By default the
first axis is cut into one block per rank (as even as possible; with more ranks than rows
some blocks are empty) and tile ``k`` belongs to rank ``k``; a grid with more tiles than
ranks gives each rank a run of consecutive tiles in C order.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from gpupart.protocol import Tiling

__all__ = [
    "assign_owners",
    "default_tiling",
    "even_cuts",
    "make_tiling",
    "overlapping_tiles",
    "positions",
]

Position = tuple[int, ...]


def even_cuts(n: int, parts: int) -> list[int]:
    """Cut points of ``n`` items into ``parts`` runs whose lengths differ by at most one."""
    base, extra = divmod(n, parts)
    cuts, at = [0], 0
    for k in range(parts):
        at += base + (1 if k < extra else 0)
        cuts.append(at)
    return cuts


def default_tiling(shape: tuple[int, ...], size: int) -> Tiling:
    """One block per rank along the first axis; every other axis uncut (0-d: one tile)."""
    if not shape:
        return Tiling.from_boundaries([])
    bounds = [even_cuts(shape[0], size), *([0, n] for n in shape[1:])]
    return Tiling.from_boundaries(bounds)


def make_tiling(
    shape: tuple[int, ...],
    size: int,
    tiles: Tiling | Sequence[int] | None = None,
    grid: Sequence[int] | None = None,
) -> Tiling:
    """Return the tiling asked for: a Tiling or block shape (``tiles``), or blocks per axis.

    ``grid`` gives the number of blocks per dimension (cut as evenly as possible); without
    either, the first axis is split across ranks.
    """
    if tiles is not None and grid is not None:
        raise ValueError("tiles, grid: expected at most one of them, found both")
    if isinstance(tiles, Tiling):
        if tiles.shape != shape:
            raise ValueError(f"tiles: expected a tiling of shape {shape}, found {tiles.shape}")
        return tiles
    if tiles is not None:
        block = [
            n if b is None else b
            for b, n in zip(_ints(tiles, "tiles", len(shape)), shape, strict=True)
        ]
        if any(b < 1 for b, n in zip(block, shape, strict=True) if n):
            raise ValueError(f"tiles: expected block lengths >= 1, found {tuple(tiles)}")
        return Tiling.regular(shape, [max(b, 1) for b in block])
    if grid is not None:
        counts = _ints(grid, "grid", len(shape))
        if any(c is None or c < 1 for c in counts):
            raise ValueError(f"grid: expected at least one block per dimension, found {counts}")
        return Tiling.from_boundaries([even_cuts(n, c) for n, c in zip(shape, counts, strict=True)])
    return default_tiling(shape, size)


def _ints(value: Any, name: str, ndim: int) -> tuple[int | None, ...]:
    """``value`` as one int (or None: the whole dimension) per dimension."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value), *([None] * (ndim - 1)))
    if not isinstance(value, Sequence) or len(value) != ndim:
        raise ValueError(f"{name}: expected {ndim} entries (one per dimension), found {value!r}")
    if not all(
        v is None or (isinstance(v, (int, np.integer)) and not isinstance(v, bool)) for v in value
    ):
        raise TypeError(f"{name}: expected ints (or None for a whole dimension), found {value!r}")
    return tuple(None if v is None else int(v) for v in value)


def assign_owners(tiling: Tiling, size: int) -> np.ndarray:
    """Owner rank of every tile (an int array of the grid's shape): runs of tiles in C order."""
    count = tiling.num_partitions
    ranks = (np.arange(count, dtype=np.int64) * size) // max(count, 1)
    return ranks.astype(np.int32).reshape(tiling.grid)


def positions(tiling: Tiling) -> Iterator[Position]:
    """Every grid position, in C order."""
    return itertools.product(*(range(g) for g in tiling.grid))


def overlapping_tiles(
    tiling: Tiling, lo: Sequence[int], hi: Sequence[int]
) -> Iterator[tuple[Position, tuple[int, ...], tuple[int, ...]]]:
    """Yield the tiles that hold part of the box ``[lo, hi)``: ``(position, start, stop)``.

    ``start`` and ``stop`` are the part's global bounds; an empty box holds nothing.
    """
    if any(b <= a for a, b in zip(lo, hi, strict=True)):
        return
    ranges = []
    for cuts, a, b in zip(tiling.boundaries, lo, hi, strict=True):
        first = bisect.bisect_right(cuts, a) - 1
        last = bisect.bisect_left(cuts, b)
        ranges.append([i for i in range(max(first, 0), last) if cuts[i + 1] > cuts[i]])
    for pos in itertools.product(*ranges):
        start = tuple(max(c[i], a) for c, i, a in zip(tiling.boundaries, pos, lo, strict=True))
        stop = tuple(min(c[i + 1], b) for c, i, b in zip(tiling.boundaries, pos, hi, strict=True))
        if all(s < e for s, e in zip(start, stop, strict=True)):
            yield pos, start, stop


def tile_box(tiling: Tiling, pos: Position) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Global ``(start, stop)`` of the tile at ``pos``."""
    start = tiling.start(pos)
    shape = tiling.tile_shape(pos)
    return start, tuple(s + n for s, n in zip(start, shape, strict=True))


def numel(shape: Sequence[int]) -> int:
    """Return the number of elements of ``shape``."""
    return math.prod(shape)
