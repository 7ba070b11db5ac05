"""Block grids described per dimension: :class:`Tiling` and its lazy ``partitions`` mapping.

A ``__partitioned__`` structure whose partitions tile the global index space exactly is a
*product grid*: along each dimension ``d`` there is one sorted list of cut points
``0 = c[0] <= c[1] <= ... <= c[g] = shape[d]``, and the partition at grid position
``(i0, i1, ...)`` covers ``[c0[i0], c0[i0 + 1]) x [c1[i1], c1[i1 + 1]) x ...``.
:class:`Tiling` stores exactly that, per dimension, in O(ndim) memory for regular grids
(``(size, block)`` per dimension) and in O(cut points) for irregular ones; it never keeps one
object per tile.

This module also holds the small argument checkers shared by :mod:`gpupart.protocol`; they
raise :class:`~gpupart.PartitionedTypeError` for a wrong type and
:class:`~gpupart.PartitionedError` for a wrong value, naming the offending path.
"""

from __future__ import annotations

import bisect
import itertools
import math
import operator
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple, NoReturn

from gpupart.errors import PartitionedError, PartitionedTypeError

__all__ = ["Position", "RegularCuts", "Tiling", "TilingPartitions"]

#: A grid position: one index per dimension into ``partition_tiling``.
Position = tuple[int, ...]

_REPR_MAX_CUTS = 64


# --------------------------------------------------------------------------- checkers


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters."""
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not hide the real error
        text = f"<{type(value).__name__} object>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _typed(value: Any) -> str:
    """Describe a value of the wrong type: its (short) repr and its type name."""
    if value is None:
        return "None"
    return f"{_short(value)} of type {type(value).__name__}"


def _as_int(value: Any, path: str) -> int:
    """Return ``value`` as a plain ``int`` (anything with ``__index__``, never a bool)."""
    if isinstance(value, bool):
        raise PartitionedTypeError(path, "an int", _typed(value))
    if type(value) is int:
        return value
    try:
        return operator.index(value)
    except TypeError:
        raise PartitionedTypeError(path, "an int", _typed(value)) from None


def _int_tuple(
    value: Any,
    path: str,
    ndim: int | None = None,
    *,
    minimum: int = 0,
    sequences: bool = False,
) -> tuple[int, ...]:
    """Check a tuple of ints (``ndim`` long when given, each ``>= minimum``).

    With ``sequences=True`` a list (or other non-string sequence) is accepted too; the
    protocol's own fields must be tuples, gpupart's API arguments may be any sequence.
    """
    if (
        type(value) is tuple
        and (ndim is None or len(value) == ndim)
        and all(type(v) is int and v >= minimum for v in value)
    ):
        return value  # the common case, checked in one pass
    ok = isinstance(value, tuple) or (
        sequences and isinstance(value, Sequence) and not isinstance(value, str | bytes)
    )
    if not ok:
        what = "a tuple" if not sequences else "a tuple or list"
        of = f" of {ndim} ints" if ndim is not None else " of ints"
        raise PartitionedTypeError(path, what + of, _typed(value))
    if ndim is not None and len(value) != ndim:
        raise PartitionedError(
            path, f"a tuple of length {ndim}", f"length {len(value)}: {_short(value)}"
        )
    out = tuple(_as_int(v, f"{path}[{i}]") for i, v in enumerate(value))
    for i, v in enumerate(out):
        if v < minimum:
            raise PartitionedError(f"{path}[{i}]", f"an int >= {minimum}", repr(v))
    return out


def _index_or_none(value: Any) -> int | None:
    """``operator.index(value)`` or ``None`` (bools and non-integers give ``None``)."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _c_order(grid: Position) -> Iterator[Position]:
    """Yield every position of ``grid`` in C order, lazily, in O(ndim) memory.

    ``itertools.product`` would first turn each ``range`` into a tuple, which is O(sum of the
    grid) memory; it is used only while that is small.
    """
    if sum(grid) <= 1 << 16:
        yield from itertools.product(*(range(g) for g in grid))
        return
    if 0 in grid:
        return
    pos = [0] * len(grid)
    while True:
        yield tuple(pos)
        d = len(grid) - 1
        while d >= 0:
            pos[d] += 1
            if pos[d] < grid[d]:
                break
            pos[d] = 0
            d -= 1
        if d < 0:
            return


# --------------------------------------------------------------------------- axes


class _RegularAxis(NamedTuple):
    """One dimension cut every ``block`` elements (the last block may be smaller).

    Canonical form: ``block = min(block, size)``; a zero-size dimension is ``(0, 0)`` and
    has one empty tile.
    """

    size: int
    block: int

    @property
    def count(self) -> int:
        return 1 if self.size == 0 else -(-self.size // self.block)

    def start(self, i: int) -> int:
        return i * self.block

    def extent(self, i: int) -> int:
        return min(self.block, self.size - i * self.block)

    def locate(self, x: int) -> int:
        return x // self.block

    @property
    def cuts(self) -> RegularCuts:
        return RegularCuts(self.size, self.block)


class _IrregularAxis(NamedTuple):
    """One dimension with explicit cut points (non-decreasing, from 0 to the size)."""

    points: tuple[int, ...]

    @property
    def size(self) -> int:
        return self.points[-1]

    @property
    def count(self) -> int:
        return len(self.points) - 1

    def start(self, i: int) -> int:
        return self.points[i]

    def extent(self, i: int) -> int:
        return self.points[i + 1] - self.points[i]

    def locate(self, x: int) -> int:
        # bisect_right skips empty tiles that start at x: the tile holding x is the last
        # one whose start is <= x.
        return bisect.bisect_right(self.points, x) - 1

    @property
    def cuts(self) -> tuple[int, ...]:
        return self.points


_Axis = _RegularAxis | _IrregularAxis


def _regular_axis(size: int, block: int, path: str) -> _RegularAxis:
    if size == 0:
        return _RegularAxis(0, 0)
    if block < 1:
        raise PartitionedError(path, f"a block length >= 1 (the dimension has {size})", repr(block))
    return _RegularAxis(size, min(block, size))


def _axis_from_cuts(cuts: tuple[int, ...]) -> _Axis:
    """Return the canonical axis for checked cut points: regular whenever it can be."""
    size = cuts[-1]
    if size == 0:
        return _RegularAxis(0, 0) if len(cuts) == 2 else _IrregularAxis(cuts)
    block = cuts[1]
    if (
        block > 0
        and len(cuts) - 1 == -(-size // block)
        and all(c == min(i * block, size) for i, c in enumerate(cuts))
    ):
        return _RegularAxis(size, block)
    return _IrregularAxis(cuts)


class RegularCuts(Sequence[int]):
    """The cut points ``0, b, 2b, ..., size`` of a regular dimension, computed on access.

    A read-only :class:`~collections.abc.Sequence` of ``count + 1`` ints that costs O(1)
    memory; it compares equal to any sequence holding the same numbers (``== [0, 4, 8]``).
    """

    __slots__ = ("_block", "_size")

    def __init__(self, size: int, block: int) -> None:
        n = _as_int(size, "size")
        if n < 0:
            raise PartitionedError("size", "an int >= 0", repr(n))
        # Canonical (block <= size), so that equal cut points compare equal.
        self._size, self._block = _regular_axis(n, _as_int(block, "block"), "block")

    def __len__(self) -> int:
        return _RegularAxis(self._size, self._block).count + 1

    def __getitem__(self, i: Any) -> Any:
        n = len(self)
        if isinstance(i, slice):
            return tuple(self[j] for j in range(*i.indices(n)))
        j = operator.index(i)
        if j < 0:
            j += n
        if not 0 <= j < n:
            raise IndexError(f"cut index {i} out of range for {n} cut points")
        return min(j * self._block, self._size)

    def __iter__(self) -> Iterator[int]:
        for j in range(len(self)):
            yield min(j * self._block, self._size)

    def __contains__(self, x: object) -> bool:
        v = _index_or_none(x)
        if v is None or not 0 <= v <= self._size:
            return False
        return v == self._size or (self._block > 0 and v % self._block == 0)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RegularCuts):
            return (self._size, self._block) == (other._size, other._block)
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"RegularCuts(size={self._size}, block={self._block})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (RegularCuts, (self._size, self._block))


# --------------------------------------------------------------------------- Tiling


class Tiling:
    """An immutable block grid over an n-d index space, described per dimension.

    Build one with :meth:`regular` (same block length along each dimension, the last block
    may be smaller) or :meth:`from_boundaries` (explicit cut points per dimension). A regular
    dimension costs O(1) memory however many tiles it has, so a regular grid of a million
    tiles is described, hashed, compared and pickled in O(ndim); irregular dimensions store
    their cut points. Dimensions are canonicalised (cut points that happen to be regular are
    stored as regular), so two tilings are equal exactly when they cut the same shape at the
    same points.

    A zero-size dimension has one empty tile (grid length 1), as in Dask. Empty tiles inside
    a dimension (repeated cut points) are allowed by :meth:`from_boundaries`.

    Attributes: ``shape`` (global shape), ``grid`` (the protocol's ``partition_tiling``),
    ``ndim``, ``boundaries`` (one cut-point sequence per dimension), ``num_partitions``,
    ``block_shape`` (shape of tile ``(0, ..., 0)`` when every dimension is regular, else
    ``None``), ``is_regular`` and ``partitions`` (a lazy :class:`TilingPartitions` mapping).
    """

    __slots__ = ("_axes", "_grid", "_shape")

    _axes: tuple[_Axis, ...]
    _grid: Position
    _shape: tuple[int, ...]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("build a Tiling with Tiling.regular(...) or Tiling.from_boundaries(...)")

    @classmethod
    def _from_axes(cls, axes: tuple[_Axis, ...]) -> Tiling:
        self = object.__new__(cls)
        object.__setattr__(self, "_axes", axes)
        object.__setattr__(self, "_shape", tuple(a.size for a in axes))
        object.__setattr__(self, "_grid", tuple(a.count for a in axes))
        return self

    @classmethod
    def regular(cls, shape: Sequence[int], block_shape: Sequence[int]) -> Tiling:
        """Cut ``shape`` into blocks of ``block_shape`` (the last block may be smaller).

        O(ndim) time and memory. A block longer than its dimension leaves it uncut; a
        zero-size dimension gets one empty tile whatever its block length; a block length of
        0 is only allowed for a zero-size dimension.
        """
        return cls._regular(shape, block_shape, "shape", "block_shape")

    @classmethod
    def _regular(
        cls, shape: Sequence[int], block_shape: Sequence[int], shape_path: str, block_path: str
    ) -> Tiling:
        gshape = _int_tuple(shape, shape_path, sequences=True)
        block = _int_tuple(block_shape, block_path, len(gshape), sequences=True)
        axes = tuple(
            _regular_axis(n, b, f"{block_path}[{d}]")
            for d, (n, b) in enumerate(zip(gshape, block, strict=True))
        )
        return cls._from_axes(axes)

    @classmethod
    def from_boundaries(cls, boundaries: Sequence[Sequence[int]]) -> Tiling:
        """Build a tiling from one sorted list of cut points per dimension.

        ``[[0, 4, 8], [0, 8]]`` is an 8x8 space cut into two row blocks and one column block.
        Each list starts at 0, never decreases and ends at the dimension's size; it has at
        least two points. Repeated points make empty tiles. Accepts the ``boundaries`` of
        another tiling (regular dimensions stay O(1)).
        """
        if not isinstance(boundaries, Sequence) or isinstance(boundaries, str | bytes):
            raise PartitionedTypeError(
                "boundaries", "a sequence of cut-point lists, one per dimension", _typed(boundaries)
            )
        axes: list[_Axis] = []
        for d, cuts in enumerate(boundaries):
            path = f"boundaries[{d}]"
            if isinstance(cuts, RegularCuts):
                axes.append(_regular_axis(cuts._size, cuts._block, path))
                continue
            points = _int_tuple(cuts, path, sequences=True)
            if len(points) < 2:
                raise PartitionedError(
                    path, "at least two cut points (0 and the size)", _short(list(points))
                )
            if points[0] != 0:
                raise PartitionedError(f"{path}[0]", "0 (the first cut point)", repr(points[0]))
            for i in range(1, len(points)):
                if points[i] < points[i - 1]:
                    raise PartitionedError(
                        f"{path}[{i}]",
                        f"a cut point >= {points[i - 1]} (cut points never decrease)",
                        repr(points[i]),
                    )
            axes.append(_axis_from_cuts(points))
        return cls._from_axes(tuple(axes))

    # -- attributes ----------------------------------------------------------------------

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError(f"Tiling is immutable (cannot set {name!r})")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"Tiling is immutable (cannot delete {name!r})")

    @property
    def shape(self) -> tuple[int, ...]:
        """Global number of elements per dimension."""
        return self._shape

    @property
    def grid(self) -> Position:
        """Number of tiles per dimension (the protocol's ``partition_tiling``)."""
        return self._grid

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self._axes)

    @property
    def num_partitions(self) -> int:
        """Total number of tiles, the product of :attr:`grid`."""
        return math.prod(self._grid)

    @property
    def boundaries(self) -> tuple[Sequence[int], ...]:
        """Cut points per dimension: a tuple for irregular ones, a :class:`RegularCuts` else."""
        return tuple(a.cuts for a in self._axes)

    @property
    def is_regular(self) -> bool:
        """True when every dimension is cut into equal blocks (the last one may be smaller)."""
        return all(type(a) is _RegularAxis for a in self._axes)

    @property
    def block_shape(self) -> tuple[int, ...] | None:
        """Shape of tile ``(0, ..., 0)`` when :attr:`is_regular`, else ``None``."""
        if not self.is_regular:
            return None
        return tuple(a.block for a in self._axes)  # type: ignore[union-attr]

    @property
    def partitions(self) -> TilingPartitions:
        """Lazy read-only mapping grid position -> ``{'start': ..., 'shape': ...}``."""
        return TilingPartitions(self)

    # -- per-tile queries (O(ndim) each) -------------------------------------------------

    def position(self, key: Any) -> Position | None:
        """Return ``key`` as a grid position if it is one of this tiling, else ``None``.

        A position is a tuple of ``ndim`` ints with ``0 <= key[d] < grid[d]``. O(ndim).
        """
        if not isinstance(key, tuple) or len(key) != len(self._axes):
            return None
        out = []
        for k, g in zip(key, self._grid, strict=True):
            v = _index_or_none(k)
            if v is None or not 0 <= v < g:
                return None
            out.append(v)
        return tuple(out)

    def start(self, position: Position) -> tuple[int, ...]:
        """Global index of the first element of the tile at ``position``."""
        pos = self._checked_position(position)
        return tuple(a.start(i) for a, i in zip(self._axes, pos, strict=True))

    def tile_shape(self, position: Position) -> tuple[int, ...]:
        """Shape of the tile at ``position``."""
        pos = self._checked_position(position)
        return tuple(a.extent(i) for a, i in zip(self._axes, pos, strict=True))

    def slices(self, position: Position) -> tuple[slice, ...]:
        """Return the global index slices the tile at ``position`` covers (for ``x[slices]``)."""
        pos = self._checked_position(position)
        out = []
        for a, i in zip(self._axes, pos, strict=True):
            s = a.start(i)
            out.append(slice(s, s + a.extent(i)))
        return tuple(out)

    def locate(self, index: int | Sequence[int]) -> Position:
        """Grid position of the tile that holds global element ``index``.

        ``index`` has one int per dimension (a bare int for 1-d); negative values count from
        the end as in NumPy. Raises :class:`IndexError` for an index outside the shape.
        O(ndim) for regular dimensions, O(log cuts) for irregular ones.
        """
        idx = (index,) if not isinstance(index, Sequence) else tuple(index)
        if len(idx) != self.ndim:
            raise IndexError(f"index {index!r} has {len(idx)} dimensions, the tiling {self.ndim}")
        out = []
        for d, (axis, x) in enumerate(zip(self._axes, idx, strict=True)):
            v = _index_or_none(x)
            if v is None:
                raise IndexError(f"index {index!r}: dimension {d} is not an integer: {x!r}")
            if v < 0:
                v += axis.size
            if not 0 <= v < axis.size:
                raise IndexError(
                    f"index {x!r} is out of bounds for dimension {d} of size {axis.size}"
                )
            out.append(axis.locate(v))
        return tuple(out)

    def _checked_position(self, position: Any) -> Position:
        pos = self.position(position)
        if pos is None:
            raise KeyError(position)
        return pos

    def _entry(self, pos: Position) -> dict[str, tuple[int, ...]]:
        return {
            "start": tuple(a.start(i) for a, i in zip(self._axes, pos, strict=True)),
            "shape": tuple(a.extent(i) for a, i in zip(self._axes, pos, strict=True)),
        }

    # -- value semantics -----------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Tiling):
            return NotImplemented
        return self._axes == other._axes

    def __hash__(self) -> int:
        return hash(("Tiling", self._axes))

    def __reduce__(self) -> tuple[Any, ...]:
        return (Tiling._from_axes, (self._axes,))

    def __repr__(self) -> str:
        if self.is_regular:
            return f"Tiling.regular({self._shape}, {self.block_shape})"
        if sum(a.count + 1 for a in self._axes) <= _REPR_MAX_CUTS:
            cuts = [list(a.cuts) for a in self._axes]
            return f"Tiling.from_boundaries({cuts})"
        return f"<Tiling shape={self._shape} grid={self._grid} irregular>"


class TilingPartitions(Mapping[Position, dict[str, tuple[int, ...]]]):
    """The lazy, read-only ``partitions`` mapping of a :class:`Tiling`.

    Maps each grid position to a fresh ``{'start': tuple, 'shape': tuple}`` dict built on
    access in O(ndim) (mutating it changes nothing). ``len()`` is the product of the grid,
    iteration yields positions lazily in C order, ``in`` is O(ndim). Nothing per tile is
    stored. A position outside the grid raises :class:`KeyError`, as for a dict.
    """

    __slots__ = ("_tiling",)

    def __init__(self, tiling: Tiling) -> None:
        if not isinstance(tiling, Tiling):
            raise PartitionedTypeError("tiling", "a Tiling", _typed(tiling))
        self._tiling = tiling

    @property
    def tiling(self) -> Tiling:
        """The tiling whose tiles this mapping lists."""
        return self._tiling

    def __getitem__(self, key: Position) -> dict[str, tuple[int, ...]]:
        pos = self._tiling.position(key)
        if pos is None:
            raise KeyError(key)
        return self._tiling._entry(pos)

    def __contains__(self, key: object) -> bool:
        return self._tiling.position(key) is not None

    def __len__(self) -> int:
        return self._tiling.num_partitions

    def __iter__(self) -> Iterator[Position]:
        return _c_order(self._tiling.grid)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TilingPartitions):
            return self._tiling == other._tiling
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (TilingPartitions, (self._tiling,))

    def __repr__(self) -> str:
        return f"TilingPartitions({self._tiling!r})"
