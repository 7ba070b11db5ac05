"""Linear algebra of distributed arrays: ``matmul`` (``@``), ``tensordot``, ``vecdot``, transposes.

An operand is *small* when every rank holds all of it: a NumPy/CuPy array (the same on every
rank, as for ``asarray`` without ``root``) or a replicated :class:`DistArray`. Three patterns
are computed, chosen from the operands' layouts alone (so every rank chooses alike):

* **tile by tile**: one operand is small and the other is not cut along its contracted axes.
  Each tile is multiplied where it is; the result keeps the distributed operand's tiling on
  its free axes (``X @ w`` with ``X`` split in rows is split in rows). No message.
* **contraction along cut axes**: the free axes are uncut, so the result is one tile. Each
  rank multiplies the tiles it counts with the matching part of the other operand (a slice of
  the small one, or the other distributed operand's tile, which the same rank must hold) and
  adds them up; one ``allreduce`` makes the small result every rank's (``X.T @ X``,
  ``X.T @ y``, ``w @ X``).
* **batches**: ``matmul`` with batch dimensions goes tile by tile of the distributed operand
  whose batch shape is the result's (it must not be cut along the contracted axis); each
  tile meets the other operand's matching batch slice (broadcast), a small one's sliced
  here, a distributed one's fetched in one collective call (its own tile when laid out alike).

Any other layout raises ``NotImplementedError`` naming the layouts and the way out
(``repartition``, or ``to_numpy`` for the small operand). ``matrix_transpose`` moves no data:
the tiles are transposed views under the transposed tiling, so ``matrix_transpose(X) @ X`` is
the contraction along ``X``'s cut rows (as is ``X.T @ X``). ``vecdot`` is an elementwise
product (any layouts, as elementwise functions take them) summed by the reductions' rules.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from gpupart.containers import layout, reductions, tilewise
from gpupart.containers.darray import DistArray
from gpupart.containers.manipulation import (
    check_array,
    expand_dims,
    normalize_axis,
    permute_dims,
    squeeze,
)
from gpupart.containers.reductions import is_replicated, local_whole, replicated

from gpupart.protocol import Tiling
from gpupart.trace import ranged

__all__ = ["matmul", "matrix_transpose", "tensordot", "vecdot"]


@dataclass(frozen=True)
class _Side:
    """One operand: distributed (``dist``) or held whole by this rank (``whole``)."""

    name: str
    dist: DistArray | None
    whole: Any

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.dist.shape if self.dist is not None else self.whole.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.dist.dtype if self.dist is not None else self.whole.dtype)

    def describe(self) -> str:
        if self.dist is None:
            return f"{self.name} (small, shape {self.shape})"
        grid = self.dist.tiling.grid
        return f"{self.name} (distributed, shape {self.shape}, grid {grid})"


def _sides(x1: Any, x2: Any) -> tuple[Any, Any, _Side, _Side]:
    """Return the runtime, array module and both operands as sides."""
    lead = x1 if isinstance(x1, DistArray) else x2
    if not isinstance(lead, DistArray):
        raise TypeError(
            f"x1, x2: expected at least one gpupart.DistArray, found {type(x1).__name__} and"
            f" {type(x2).__name__}"
        )
    rt, xp = lead.runtime, lead.xp
    sides = []
    for name, value in (("x1", x1), ("x2", x2)):
        if isinstance(value, DistArray):
            if value.runtime is not rt:
                raise ValueError(f"{name}: expected an array of the same runtime as the other")
            if is_replicated(value):
                sides.append(_Side(name, None, local_whole(value)))
            else:
                sides.append(_Side(name, value, None))
        else:
            sides.append(_Side(name, None, xp.asarray(value)))
    return rt, xp, sides[0], sides[1]


def matrix_transpose(x: DistArray, /) -> DistArray:
    """Return ``x`` with its last two axes swapped (no data moves; tiles are views)."""
    x = check_array(x)
    if x.ndim < 2:
        raise ValueError(f"x: expected an array with at least 2 dimensions, found shape {x.shape}")
    order = [*range(x.ndim - 2), x.ndim - 1, x.ndim - 2]
    return permute_dims(x, tuple(order))


# -- contraction -------------------------------------------------------------------------------


def _unsupported(a: _Side, b: _Side, why: str) -> NotImplementedError:
    return NotImplementedError(
        f"{a.describe()} with {b.describe()}: {why}. Supported: one operand small and the"
        " other uncut along the contracted axes, or a contraction along cut axes whose result"
        " is one tile (free axes uncut, both operands cut alike and held by the same ranks);"
        " repartition an operand (x.repartition(grid=...)) or pass the small one as a"
        " NumPy/CuPy array (x.to_numpy())"
    )


@ranged("compute.matmul")
def _contract(
    rt: Any, xp: Any, a: _Side, b: _Side, a_axes: tuple[int, ...], b_axes: tuple[int, ...]
) -> DistArray:
    """Return ``tensordot(a, b, (a_axes, b_axes))`` by one of the module's two patterns."""
    dtype = np.result_type(a.dtype, b.dtype)
    if a.dist is None and b.dist is None:
        return replicated(rt, xp.tensordot(a.whole, b.whole, axes=(a_axes, b_axes)))
    a_free = [d for d in range(a.ndim) if d not in a_axes]
    b_free = [d for d in range(b.ndim) if d not in b_axes]
    out_shape = tuple([a.shape[d] for d in a_free] + [b.shape[d] for d in b_free])

    def product(ta: Any, tb: Any) -> Any:
        return xp.tensordot(ta, tb, axes=(a_axes, b_axes))

    if a.dist is None or b.dist is None:
        dist_first = a.dist is not None
        d_side, s_side = (a, b) if dist_first else (b, a)
        d_axes, s_axes = (a_axes, b_axes) if dist_first else (b_axes, a_axes)
        d_free = a_free if dist_first else b_free
        s_free_shape = [s_side.shape[e] for e in range(s_side.ndim) if e not in s_axes]
        d, small = d_side.dist, s_side.whole
        grid = d.tiling.grid
        if all(grid[e] == 1 for e in d_axes):
            return _tile_by_tile(d, small, d_free, s_free_shape, dist_first, product, dtype)
        if all(grid[e] == 1 for e in d_free):
            acc = xp.zeros(out_shape, dtype=dtype)
            for pos, tile in d.counted_tiles():
                start = d.tiling.start(pos)
                stop = tuple(s + n for s, n in zip(start, tile.shape, strict=True))
                index = [slice(None)] * small.ndim
                for de, se in zip(d_axes, s_axes, strict=True):
                    index[se] = slice(start[de], stop[de])
                part = small[tuple(index)]
                acc = acc + (product(tile, part) if dist_first else product(part, tile))
            return replicated(rt, rt.allreduce(acc, "sum"))
        raise _unsupported(a, b, "the distributed operand is cut along free and contracted axes")
    da, db = a.dist, b.dist
    if any(da.tiling.grid[e] > 1 for e in a_free) or any(db.tiling.grid[e] > 1 for e in b_free):
        raise _unsupported(a, b, "both are distributed and a free axis is cut")
    for ea, eb in zip(a_axes, b_axes, strict=True):
        if list(da.tiling.boundaries[ea]) != list(db.tiling.boundaries[eb]):
            raise _unsupported(a, b, f"axis {ea} of x1 and axis {eb} of x2 are cut differently")
    if not np.array_equal(_pair_owners(da, a_axes), _pair_owners(db, b_axes)):
        raise _unsupported(a, b, "matching tiles are held by different ranks")
    acc = xp.zeros(out_shape, dtype=dtype)
    for pos, tile in da.counted_tiles():
        other = [0] * db.ndim
        for ea, eb in zip(a_axes, b_axes, strict=True):
            other[eb] = pos[ea]
        acc = acc + product(tile, db.local_tiles[tuple(other)])
    return replicated(rt, rt.allreduce(acc, "sum"))


def _pair_owners(x: DistArray, axes: tuple[int, ...]) -> np.ndarray:
    """Return the owners along ``axes`` (in that order; the other axes are uncut)."""
    ordered = sorted(axes)
    owners = np.asarray(x.owners).reshape([x.tiling.grid[e] for e in ordered])
    return np.transpose(owners, [ordered.index(e) for e in axes])


def _tile_by_tile(
    d: DistArray,
    small: Any,
    d_free: list[int],
    s_free_shape: list[int],
    dist_first: bool,
    product: Any,
    dtype: np.dtype,
) -> DistArray:
    """Multiply every tile of ``d`` (uncut along its contracted axes) by the whole ``small``."""
    bounds = d.tiling.boundaries
    new = [[0, n] for n in s_free_shape]
    d_bounds = [bounds[e] for e in d_free]
    out_bounds = d_bounds + new if dist_first else new + d_bounds
    owners = np.asarray(d.owners)[tuple(slice(None) if e in d_free else 0 for e in range(d.ndim))]
    ones = (1,) * len(new)
    owners = owners.reshape(owners.shape + ones if dist_first else ones + owners.shape)
    zeros = (0,) * len(new)
    tiles = {}
    for pos, tile in d.local_tiles.items():
        q = tuple(pos[e] for e in d_free)
        tiles[q + zeros if dist_first else zeros + q] = (
            product(tile, small) if dist_first else product(small, tile)
        )
    return DistArray(
        d.runtime,
        Tiling.from_boundaries(out_bounds),
        np.ascontiguousarray(owners, dtype=np.int32),
        dtype,
        tiles,
    )


# -- the functions ------------------------------------------------------------------------------


def _expand_side(side: _Side, xp: Any, axis: int) -> _Side:
    if side.dist is not None:
        return _Side(side.name, expand_dims(side.dist, axis=axis), None)
    return _Side(side.name, None, xp.expand_dims(side.whole, axis))


def matmul(x1: Any, x2: Any, /) -> DistArray:
    """Return the matrix product ``x1 @ x2`` (see the module docstring for the layouts)."""
    rt, xp, a, b = _sides(x1, x2)
    for side in (a, b):
        if side.ndim == 0:
            raise ValueError(
                f"{side.name}: expected an array with at least one dimension, found a 0-d array"
            )
    k1, k2 = a.shape[-1], (b.shape[-2] if b.ndim > 1 else b.shape[0])
    if k1 != k2:
        raise ValueError(
            f"x2: expected {k1} rows to match x1's last dimension (x1 shape {a.shape}), found"
            f" shape {b.shape}"
        )
    if a.dist is None and b.dist is None:
        return replicated(rt, xp.matmul(a.whole, b.whole))
    drop = []
    if a.ndim == 1:
        a, drop = _expand_side(a, xp, 0), [-2]
    if b.ndim == 1:
        b, drop = _expand_side(b, xp, 1), [*drop, -1]
    plain = a.ndim == 2 and b.ndim == 2
    out = _contract(rt, xp, a, b, (1,), (0,)) if plain else _batched(xp, a, b)
    for axis in sorted((out.ndim + k for k in drop), reverse=True):
        out = squeeze(out, axis=axis)
    return out


@ranged("compute.matmul")
def _batched(xp: Any, a: _Side, b: _Side) -> DistArray:
    """Return ``a @ b`` with batch dimensions, tile by tile of the operand whose batch is whole.

    That *lead* operand must not be cut along the contracted axis; each of its tiles is
    multiplied by the other operand's matching batch slice (broadcast), which a distributed
    operand gives in one collective ``fetch_regions`` call.
    """
    try:
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(
            f"x2: expected batch dimensions that broadcast with x1's {a.shape[:-2]}, found"
            f" shape {b.shape}"
        ) from None
    first = a.dist is not None and a.shape[:-2] == batch
    if not first and not (b.dist is not None and b.shape[:-2] == batch):
        raise _unsupported(a, b, "the distributed operand would be broadcast along the batch")
    lead, other = (a, b) if first else (b, a)
    d = lead.dist
    contracted = d.ndim - 1 if first else d.ndim - 2
    if d.tiling.grid[contracted] > 1:
        raise _unsupported(
            a, b, "an operand with batch dimensions is cut along the contracted axis"
        )
    bounds = list(d.tiling.boundaries)  # the contracted axis becomes the other's free one
    bounds[contracted] = [0, b.shape[-1] if first else a.shape[-2]]
    off = len(batch) - (other.ndim - 2)
    mine = list(d.local_tiles)
    boxes = []
    for pos in mine:
        lo, hi = layout.tile_box(d.tiling, pos)
        dims = other.shape[:-2]
        start = (*(0 if n == 1 else lo[j + off] for j, n in enumerate(dims)), 0, 0)
        stop = (*(1 if n == 1 else hi[j + off] for j, n in enumerate(dims)), *other.shape[-2:])
        boxes.append((start, stop))
    if other.dist is not None:
        pieces = other.dist.fetch_regions(boxes)
    else:
        pieces = [
            other.whole[tuple(slice(u, v) for u, v in zip(*box, strict=True))] for box in boxes
        ]
    dtype = np.result_type(a.dtype, b.dtype)
    tiles = {}
    for pos, piece in zip(mine, pieces, strict=True):
        tile = d.local_tiles[pos]
        out = xp.matmul(tile, piece) if first else xp.matmul(piece, tile)
        tiles[pos] = out.astype(dtype, copy=False)
    return DistArray(d.runtime, Tiling.from_boundaries(bounds), d.owners, dtype, tiles)


def _tensordot_axes(axes: Any, a: _Side, b: _Side) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Return the contracted axes of both operands, checked."""
    if isinstance(axes, (int, np.integer)) and not isinstance(axes, bool):
        n = int(axes)
        if not 0 <= n <= min(a.ndim, b.ndim):
            raise ValueError(
                f"axes: expected an int in [0, {min(a.ndim, b.ndim)}] for arrays of shapes"
                f" {a.shape} and {b.shape}, found {n}"
            )
        pair: Any = (list(range(a.ndim - n, a.ndim)), list(range(n)))
    else:
        pair = axes
    if not (isinstance(pair, Sequence) and len(pair) == 2) or isinstance(pair, str):
        raise TypeError(f"axes: expected an int or two sequences of axes, found {axes!r}")
    found = []
    for side, seq in zip((a, b), pair, strict=True):
        seq = [seq] if isinstance(seq, (int, np.integer)) else seq
        try:
            items = [operator.index(e) for e in seq]
        except TypeError:
            raise TypeError(f"axes: expected sequences of ints, found {axes!r}") from None
        if any(not -side.ndim <= e < side.ndim for e in items):
            raise ValueError(
                f"axes: expected axes of {side.name} in [{-side.ndim}, {side.ndim}), found {axes!r}"
            )
        items = [e % side.ndim for e in items]
        if len(set(items)) != len(items):
            raise ValueError(f"axes: expected distinct axes of {side.name}, found {axes!r}")
        found.append(tuple(items))
    a_axes, b_axes = found
    if len(a_axes) != len(b_axes):
        raise ValueError(f"axes: expected as many axes of x1 as of x2, found {axes!r}")
    for ea, eb in zip(a_axes, b_axes, strict=True):
        if a.shape[ea] != b.shape[eb]:
            raise ValueError(
                f"axes: expected contracted dimensions of equal length, found x1's axis {ea}"
                f" ({a.shape[ea]}) with x2's axis {eb} ({b.shape[eb]})"
            )
    return a_axes, b_axes


def tensordot(x1: Any, x2: Any, /, *, axes: Any = 2) -> DistArray:
    """Return the sum of products over ``axes`` (the last ``axes`` of x1 with x2's first)."""
    rt, xp, a, b = _sides(x1, x2)
    a_axes, b_axes = _tensordot_axes(axes, a, b)
    return _contract(rt, xp, a, b, a_axes, b_axes)


def vecdot(x1: Any, x2: Any, /, *, axis: int = -1) -> DistArray:
    """Return ``sum(conj(x1) * x2, axis=axis)``: products tile by tile, then :func:`sum`.

    The operands broadcast as in elementwise functions (an operand laid out otherwise than
    the result is fetched in one collective call, none when laid out alike); the sum over
    ``axis`` follows the reductions' paths.
    """
    ops = [
        tilewise.operand("vecdot", name, value, scalar=False)
        for name, value in (("x1", x1), ("x2", x2))
    ]
    shape = tilewise.broadcast_shape("vecdot", ops)
    k = normalize_axis(axis, len(shape))
    sizes = [
        op.shape[k - len(shape) + len(op.shape)] for op in ops if k >= len(shape) - len(op.shape)
    ]
    if len(sizes) != 2 or sizes[0] != sizes[1]:
        raise ValueError(
            f"axis: expected both operands to have dimension {axis} of equal length, found"
            f" shapes {ops[0].shape} and {ops[1].shape}"
        )
    dtype = np.result_type(ops[0].dtype, ops[1].dtype)
    complex_x1 = ops[0].dtype.kind == "c"

    def kernel(xp: Any, a: Any, b: Any) -> Any:
        return (xp.conj(a) if complex_x1 else a) * b

    products = tilewise.apply("vecdot", kernel, ops, dtype)
    return reductions.sum(products, axis=k, dtype=dtype)


# -- operators ---------------------------------------------------------------------------------


def matmul_method(self: DistArray, other: Any) -> DistArray:
    """Return ``self @ other`` (``DistArray.__matmul__``)."""
    return matmul(self, other)


def rmatmul_method(self: DistArray, other: Any) -> DistArray:
    """Return ``other @ self`` (``DistArray.__rmatmul__``)."""
    return matmul(other, self)
