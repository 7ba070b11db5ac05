"""Run a per-tile function over operands of any layout: broadcasting, alignment, fetching.

An operation's operands are :class:`Operand` s: distributed arrays, small NumPy/CuPy arrays
(the same on every rank: each result tile takes its matching slice) and Python scalars.
The result has the broadcast shape of the operands and the layout of the *lead*: the first
distributed operand whose shape is the result's, else the first distributed operand,
stretched along the dimensions it is broadcast in (one block there) and given the missing
leading dimensions (one block each).

For each distributed operand the decision is made from metadata only (shapes, tilings,
owners), so every rank makes it alike: when every result tile this or any rank computes
maps to one whole tile of the operand held by the same rank (or every rank), its tiles are
used as they are, with no message; otherwise the operand's region for each result tile
is fetched with one collective :meth:`DistArray.fetch_regions` call on every rank. A
dimension the operand is broadcast in maps to its index range ``[0, 1)``.
"""

from __future__ import annotations

import bisect
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from gpupart.containers import layout
from gpupart.containers.darray import REPLICATED, DistArray

from gpupart.protocol import Tiling
from gpupart.trace import ranged

__all__ = ["STANDARD_DTYPES", "Operand", "apply", "broadcast_shape", "describe", "operand"]

#: The array-API standard's dtypes: results outside them (NumPy's float16) are refused.
STANDARD_DTYPES = frozenset(
    np.dtype(t)
    for t in (
        np.bool_,
        np.int8,
        np.int16,
        np.int32,
        np.int64,
        np.uint8,
        np.uint16,
        np.uint32,
        np.uint64,
        np.float32,
        np.float64,
        np.complex64,
        np.complex128,
    )
)

Position = tuple[int, ...]


@dataclass(frozen=True)
class Operand:
    """One argument of a tilewise operation.

    ``kind`` is ``'dist'`` (a :class:`DistArray`), ``'array'`` (a NumPy/CuPy array held
    alike by every rank) or ``'scalar'`` (a Python ``bool``/``int``/``float``/``complex``).
    ``name`` is the argument's name, for messages.
    """

    name: str
    kind: str
    value: Any

    @property
    def shape(self) -> tuple[int, ...]:
        """Global shape (``()`` for a scalar)."""
        return () if self.kind == "scalar" else tuple(self.value.shape)

    @property
    def dtype(self) -> np.dtype | None:
        """Dtype of an array operand; ``None`` for a scalar."""
        return None if self.kind == "scalar" else np.dtype(self.value.dtype)

    def dummy(self) -> Any:
        """Return a stand-in for NumPy's type rules: an empty array of this dtype, or the scalar."""
        return self.value if self.kind == "scalar" else np.empty((0,), self.dtype)


def _is_cupy(value: Any) -> bool:
    cupy = sys.modules.get("cupy")
    return cupy is not None and isinstance(value, cupy.ndarray)


def operand(fn: str, name: str, value: Any, *, scalar: bool = True, array: bool = True) -> Operand:
    """Return ``value`` as an :class:`Operand` of ``fn``, or raise a TypeError naming ``name``.

    ``scalar``/``array`` say whether Python scalars / NumPy or CuPy arrays are accepted (a
    NumPy scalar such as ``np.float32(1)`` counts as a 0-d array).
    """
    if isinstance(value, DistArray):
        return Operand(name, "dist", value)
    if isinstance(value, (np.ndarray, np.generic)) or _is_cupy(value):
        if not array:
            raise TypeError(
                f"{fn}: {name}: expected a gpupart.DistArray, found a {type(value).__name__}"
            )
        arr = np.asarray(value) if isinstance(value, np.generic) else value
        if arr.dtype.kind not in "biufc":
            raise TypeError(
                f"{fn}: {name}: expected an array of a numeric or bool dtype, found {arr.dtype}"
            )
        return Operand(name, "array", arr)
    if isinstance(value, (bool, int, float, complex)):
        if not scalar:
            raise TypeError(
                f"{fn}: {name}: expected a gpupart.DistArray, found a Python {type(value).__name__}"
            )
        return Operand(name, "scalar", value)
    kinds = ["a gpupart.DistArray"]
    if scalar:
        kinds.append("a Python scalar")
    if array:
        kinds.append("a NumPy/CuPy array")
    accepted = kinds[0] if len(kinds) == 1 else f"{', '.join(kinds[:-1])} or {kinds[-1]}"
    raise TypeError(f"{fn}: {name}: expected {accepted}, found {type(value).__name__}")


def describe(operands: Sequence[Operand]) -> str:
    """Return ``'x1: int8 (3, 4), x2: Python float'`` for messages."""
    parts = []
    for op in operands:
        if op.kind == "scalar":
            parts.append(f"{op.name}: Python {type(op.value).__name__}")
        else:
            parts.append(f"{op.name}: {op.dtype} {op.shape}")
    return ", ".join(parts)


def broadcast_shape(fn: str, operands: Sequence[Operand]) -> tuple[int, ...]:
    """Return the operands' broadcast shape, or raise a ValueError naming them."""
    shaped = [op for op in operands if op.kind != "scalar"]
    try:
        return tuple(np.broadcast_shapes(*(op.shape for op in shaped)))
    except ValueError:
        shapes = ", ".join(f"{op.name} of shape {op.shape}" for op in shaped)
        raise ValueError(
            f"{fn}: expected shapes that broadcast together (each trailing dimension equal or"
            f" 1), found {shapes}"
        ) from None


@ranged("compute.elementwise")
def apply(
    fn: str,
    kernel: Callable[..., Any],
    operands: Sequence[Operand],
    dtype: np.dtype,
) -> DistArray:
    """Return ``kernel(xp, *pieces)`` for every result tile, as a :class:`DistArray` (collective).

    ``pieces`` are, per operand, its tile or fetched region (distributed), its slice (NumPy
    or CuPy array) or the scalar itself; they broadcast to the result tile. The result tile
    is cast to ``dtype`` when the kernel gives another one.
    """
    dists = [op.value for op in operands if op.kind == "dist"]
    if not dists:
        raise TypeError(
            f"{fn}: expected at least one gpupart.DistArray argument, found {describe(operands)}"
        )
    rt = dists[0].runtime
    for op in operands:
        if op.kind == "dist" and op.value.runtime is not rt:
            raise ValueError(f"{fn}: {op.name}: expected an array of the same runtime as the rest")
    shape = broadcast_shape(fn, operands)
    lead = next((a for a in dists if a.shape == shape), dists[0])
    tiling, owners = _result_layout(lead, shape)
    mine = _positions(owners, rt.rank)
    xp = lead.xp
    columns = [_pieces(xp, op, shape, tiling, owners, mine) for op in operands]
    tiles = {}
    with np.errstate(all="ignore"):  # NaN, inf and 0 are results here, not warnings
        for k, pos in enumerate(mine):
            out = xp.asarray(kernel(xp, *(col[k] for col in columns)))
            if out.dtype != dtype:
                out = out.astype(dtype)
            want = tiling.tile_shape(pos)
            if tuple(out.shape) != want:
                out = xp.ascontiguousarray(xp.broadcast_to(out, want))
            tiles[pos] = out
    return lead.like(tiles, dtype=dtype, tiling=tiling, owners=owners)


def _result_layout(lead: DistArray, shape: tuple[int, ...]) -> tuple[Tiling, np.ndarray]:
    """Return the tiling and owners of a result of ``shape`` laid out like ``lead``."""
    if lead.shape == shape:
        return lead.tiling, lead.owners
    off = len(shape) - lead.ndim
    cuts: list[Any] = [[0, n] for n in shape[:off]]
    for d, n in enumerate(lead.shape):
        cuts.append(lead.tiling.boundaries[d] if n == shape[off + d] else [0, shape[off + d]])
    tiling = Tiling.from_boundaries(cuts)
    return tiling, _mapped_owners(lead, shape, tiling)


def _first_tile(cuts: Sequence[int]) -> int:
    """Return the index of the tile holding element 0 along a dimension of size 1."""
    return bisect.bisect_right(list(cuts), 0) - 1


def _mapped_owners(a: DistArray, shape: tuple[int, ...], tiling: Tiling) -> np.ndarray:
    """Return, per tile of ``tiling``, the owner of the tile of ``a`` (broadcast) it maps to.

    Only meaningful along dimensions where ``a`` has the result's size and cuts; a
    dimension ``a`` is broadcast in maps to its tile holding index 0.
    """
    off = len(shape) - a.ndim
    index = []
    for d, n in enumerate(a.shape):
        count = tiling.grid[off + d]
        if n == shape[off + d]:
            index.append(np.arange(count))
        else:
            index.append(np.full(count, _first_tile(a.tiling.boundaries[d])))
    mapped = a.owners[np.ix_(*index)] if index else a.owners
    return np.broadcast_to(mapped, tiling.grid)


def _aligned(a: DistArray, shape: tuple[int, ...], tiling: Tiling, owners: np.ndarray) -> bool:
    """Return whether each result tile maps to one whole tile of ``a`` held where it is computed."""
    if a.tiling is tiling and a.owners is owners:
        return True
    off = len(shape) - a.ndim
    for d, n in enumerate(a.shape):
        if n == shape[off + d] and tuple(a.tiling.boundaries[d]) != tuple(
            tiling.boundaries[off + d]
        ):
            return False
    mapped = _mapped_owners(a, shape, tiling)
    return bool(np.all((mapped == owners) | (mapped == REPLICATED)))


def _positions(owners: np.ndarray, rank: int) -> list[Position]:
    """Return the grid positions this rank computes (its own and replicated ones), in C order."""
    hits = np.argwhere((owners == rank) | (owners == REPLICATED))
    return [tuple(int(i) for i in row) for row in hits]


def _pieces(
    xp: Any,
    op: Operand,
    shape: tuple[int, ...],
    tiling: Tiling,
    owners: np.ndarray,
    mine: list[Position],
) -> list[Any]:
    """Return the operand's piece for each result tile in ``mine`` (collective if distributed)."""
    if op.kind == "scalar":
        return [op.value] * len(mine)
    value = op.value
    off = len(shape) - len(op.shape)
    broadcast = [n != shape[off + d] for d, n in enumerate(op.shape)]
    if op.kind == "array":
        whole = value.get() if xp is np and _is_cupy(value) else xp.asarray(value)
        return _slices(whole, broadcast, off, tiling, mine)
    if value.tiling.num_partitions == 1 and np.all(value.owners == REPLICATED):
        (whole,) = value.local_tiles.values()  # every rank holds it all: no message
        return _slices(whole, broadcast, off, tiling, mine)
    if _aligned(value, shape, tiling, owners):
        return _local_pieces(value, broadcast, off, mine)
    boxes = []
    for pos in mine:
        start, stop = layout.tile_box(tiling, pos)
        lo = tuple(0 if b else start[off + d] for d, b in enumerate(broadcast))
        hi = tuple(1 if b else stop[off + d] for d, b in enumerate(broadcast))
        boxes.append((lo, hi))
    return value.fetch_regions(boxes)


def _local_pieces(a: DistArray, broadcast: list[bool], off: int, mine: list[Position]) -> list[Any]:
    """Return the tiles of an aligned ``a`` for each result tile in ``mine`` (no message)."""
    firsts = [
        _first_tile(cuts) if b else 0
        for cuts, b in zip(a.tiling.boundaries, broadcast, strict=True)
    ]
    tiles = a.local_tiles
    out = []
    for pos in mine:
        key = tuple(f if b else p for f, b, p in zip(firsts, broadcast, pos[off:], strict=True))
        out.append(tiles[key])
    return out


def _slices(
    whole: Any, broadcast: list[bool], off: int, tiling: Tiling, mine: list[Position]
) -> list[Any]:
    """Return the slice of ``whole`` (held here entirely) for each result tile in ``mine``."""
    out = []
    for pos in mine:
        start, stop = layout.tile_box(tiling, pos)
        index = tuple(
            slice(None) if b else slice(start[off + d], stop[off + d])
            for d, b in enumerate(broadcast)
        )
        out.append(whole[index])
    return out
