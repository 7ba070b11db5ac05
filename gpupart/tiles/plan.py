"""Planning a fetch: which tiles travel packed, where each lands in its pack, which request.

Everything here is vectorised over the tiles of a call (NumPy arrays in, arrays out): a call
for one tile and a call for ten thousand take the same steps.
"""

from __future__ import annotations

import numpy as np

from gpupart.tiles.wire import ITEM, MAX_ITEMS, PACK_ALIGN

__all__ = ["plan_items", "request_bounds"]

_NO_PACKS = np.zeros(0, dtype=np.int64)
_NO_PACKS.flags.writeable = False


def request_bounds(nbytes: np.ndarray, pack_threshold: int, pack_limit: int) -> list[int]:
    """Cut one owner's tiles, in order, into requests: returns the bounds ``[0, ..., n]``.

    A request holds at most :data:`~gpupart.tiles.wire.MAX_ITEMS` tiles and about one pack
    of packed tiles, so that the owner serves one request while the consumer plans the next
    and reads one pack while the owner fills the next. Tiles that travel alone count no
    bytes: they need no pipelining.
    """
    n = len(nbytes)
    if n <= 1:
        return [0, n]
    packed = np.where(nbytes <= pack_threshold, nbytes, 0)
    ends = np.cumsum(packed)
    room = max(pack_limit - pack_threshold, 1)
    if n <= MAX_ITEMS and (not n or int(ends[-1]) <= room):
        return [0, n]
    bounds, start = [0], 0
    while start < n:
        before = int(ends[start - 1]) if start else 0
        stop = int(np.searchsorted(ends, before + room, side="left")) + 1
        start = min(max(stop, start + 1), start + MAX_ITEMS, n)
        bounds.append(start)
    return bounds


def plan_items(
    tile_ids: np.ndarray, nbytes: np.ndarray, pack_threshold: int, pack_limit: int
) -> tuple[np.ndarray, np.ndarray]:
    """Plan one request: its :data:`~gpupart.tiles.wire.ITEM` array and pack lengths.

    Tiles of at most ``pack_threshold`` bytes are packed, unless only one of them has bytes
    (a pack of one tile only adds a copy on each side); empty tiles always are (their room
    is empty, and a pack orders them after the owner's error reply). Packed tiles are laid
    out back to back (each at a multiple of :data:`~gpupart.tiles.wire.PACK_ALIGN`) on one
    line, cut into packs every ``pack_limit - largest packed tile`` bytes: no pack exceeds
    ``pack_limit``.
    """
    n = len(nbytes)
    if n == 1 and nbytes[0]:  # a pack needs two tiles with bytes: the one item goes alone
        return np.array([(tile_ids[0], nbytes[0], -1, 0)], dtype=ITEM), _NO_PACKS
    items = np.empty(n, dtype=ITEM)
    items["tile_id"] = tile_ids
    items["nbytes"] = nbytes
    items["pack"] = -1
    items["offset"] = 0
    packable = nbytes <= pack_threshold
    if np.count_nonzero(packable & (nbytes > 0)) < 2:
        packable = nbytes == 0
    idx = np.flatnonzero(packable)
    if not len(idx):
        return items, _NO_PACKS
    sizes = nbytes[idx].astype(np.int64)
    aligned = -(-sizes // PACK_ALIGN) * PACK_ALIGN
    starts = np.cumsum(aligned) - aligned
    if int(starts[-1] + sizes[-1]) <= pack_limit:  # one pack (a request's usual case)
        items["pack"][idx] = 0
        items["offset"][idx] = starts
        return items, np.array([int(starts[-1] + sizes[-1])], dtype=np.int64)
    span = max(pack_limit - int(sizes.max()), 1)
    piece = starts // span  # non-decreasing: the piece of the line each tile starts in
    first = np.empty(len(piece), dtype=bool)
    first[0] = True
    np.not_equal(piece[1:], piece[:-1], out=first[1:])
    pack_of = np.cumsum(first) - 1
    pack_start = starts[first]
    items["pack"][idx] = pack_of
    items["offset"][idx] = starts - pack_start[pack_of]
    last = np.append(np.flatnonzero(first)[1:] - 1, len(piece) - 1)
    return items, starts[last] + sizes[last] - pack_start
