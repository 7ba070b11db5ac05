"""A rank's own data as one array: what SPMD libraries (MPI, Heat, XGBoost, daal4py) take.

:func:`local_block` joins the tiles a rank holds into one array, the tile itself (no copy)
when it holds one; :func:`local_rows` brings a rank the rows of ``y`` (and weights) that line
up with its rows of ``X``, through the estimators' own input checks (``gpupart.ml``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from gpupart.containers.darray import DistArray
from gpupart.errors import PartitionedError

__all__ = ["LocalRows", "local_block", "local_rows", "stack_rows"]


def local_block(x: DistArray) -> Any:
    """Return this rank's tiles of ``x`` as one array (the tile itself when it holds one).

    The tiles must form one box of the tile grid (as one block per rank along an axis, the
    layout of ``from_local`` and of the default tiling, does): several are joined (a copy).
    A rank holding none gets an empty array, of length 0 along the first axis cut into
    several tiles. Local, no communication.
    """
    tiles = x.local_tiles
    if len(tiles) == 1:
        return next(iter(tiles.values()))
    if not tiles:
        split = next((d for d, n in enumerate(x.tiling.grid) if n > 1), 0)
        shape = tuple(0 if d == split else n for d, n in enumerate(x.shape))
        return x.xp.empty(shape, dtype=x.dtype)
    held = np.array(sorted(tiles))
    low, high = held.min(axis=0), held.max(axis=0) + 1
    if int(np.prod(high - low)) != len(held):
        raise PartitionedError(
            "x",
            "tiles that form one box of the tile grid on this rank",
            f"tiles at {[tuple(int(i) for i in p) for p in held]}",
        )
    return x.xp.block(_nested(tiles, tuple(low), tuple(high), ()))


def _nested(tiles: Any, low: tuple[int, ...], high: tuple[int, ...], prefix: tuple) -> Any:
    """Return the tiles of the box ``[low, high)`` as nested lists (what ``block`` takes)."""
    d = len(prefix)
    if d == len(low):
        return tiles[prefix]
    return [_nested(tiles, low, high, (*prefix, i)) for i in range(low[d], high[d])]


def stack_rows(blocks: list[Any], width: tuple[int, ...], dtype: Any, xp: Any) -> Any:
    """Join row blocks into one array: the block itself when there is one, empty for none."""
    if len(blocks) == 1:
        return blocks[0]
    if not blocks:
        return xp.empty((0, *width), dtype=dtype)
    return xp.concatenate(blocks, axis=0)


class LocalRows(NamedTuple):
    """A rank's rows of ``X`` and the rows of the targets that line up with them."""

    X: Any  #: this rank's rows of X (float32/float64), one array
    targets: dict[str, Any]  #: each target's matching rows (``None`` where none was given)
    shape: tuple[int, int]  #: X's global shape
    feature_names: list[str] | None  #: the column labels of a frame X, else None


def local_rows(X: Any, *, finite: bool = True, **targets: Any) -> LocalRows:
    """Return this rank's rows of ``X`` and the matching rows of each target.

    Collective. ``X`` is anything ``gpupart.ml`` estimators take (a 2-d DistArray or
    DistFrame, or a ``__partitioned__`` producer), cast to float64 unless float32; each
    target (``y=``, ``weight=``, ...; ``None`` passes through) is 1-d or 2-d, any tiling:
    its rows are fetched to line up with this rank's rows of ``X``. With one row block on
    this rank (one block per rank, the usual layout) ``X``'s rows are its tile, not a copy.
    ``finite=False`` lets NaN and infinity through (libraries that read NaN as missing).
    """
    from gpupart.ml._data import check_X, check_y

    rows = check_X(X, finite=finite)
    xp, dtype = rows.array.xp, rows.dtype
    out_x = stack_rows([b for _, b in rows.blocks], (rows.n_features,), dtype, xp)
    out: dict[str, Any] = {}
    for name, target in targets.items():
        if target is None:
            out[name] = None
            continue
        pieces = check_y(target, rows, what=name, ndim=(1, 2), finite=finite)
        trailing = tuple(pieces[0].shape[1:]) if pieces else ()
        kind = pieces[0].dtype if pieces else dtype
        out[name] = stack_rows(pieces, trailing, kind, xp)
    names = None if rows.feature_names is None else [str(c) for c in rows.feature_names]
    return LocalRows(out_x, out, (rows.n_samples, rows.n_features), names)
