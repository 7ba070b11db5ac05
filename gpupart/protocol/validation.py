"""Check a ``__partitioned__`` structure against every rule of the spec: :func:`validate`.

:func:`validate` returns a :class:`PartitionedView`, the normalised read-only form the rest of
gpupart consumes; the rules and the two modes (lenient, strict) are listed in its docstring.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from gpupart.errors import PartitionedError, PartitionedTypeError
from gpupart.location import Location
from gpupart.protocol.builder import PROTOCOL_KEYS, LazyPartitions
from gpupart.protocol.tiling import (
    Position,
    Tiling,
    TilingPartitions,
    _c_order,
    _int_tuple,
    _short,
    _typed,
)

__all__ = ["PartitionEntry", "PartitionedView", "validate"]

_ENTRY_KEYS = ("start", "shape", "data", "location")
_ENTRY_DICT = "a dict with keys 'start', 'shape', 'data' and 'location'"
_SPEC_LOCATION = "an (ip, pid[, device]) tuple or a gpupart.Location"


class _FrozenMapping(Mapping[Any, Any]):
    """A read-only, picklable mapping over a private dict."""

    __slots__ = ("_d",)

    def __init__(self, d: dict[Any, Any]) -> None:
        self._d = d

    def __getitem__(self, key: Any) -> Any:
        return self._d[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __contains__(self, key: object) -> bool:
        return key in self._d

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._d!r})"


@dataclass(frozen=True, slots=True, eq=False)
class PartitionEntry:
    """One partition of a :class:`PartitionedView`, checked and normalised.

    ``start`` and ``shape`` are tuples of ints (``start + shape`` is the stop); ``data`` is as
    the producer gave it (``None`` for a non-local SPMD partition); ``location``, named after
    the spec's key, holds one :class:`~gpupart.Location` per place that has the data (several
    = replicas), parsed with :meth:`Location.parse` from whatever format the producer used;
    ``extra`` holds the entry's keys beyond the spec's four (Heat adds ``dtype`` and
    ``device``).
    """

    position: Position
    start: tuple[int, ...]
    shape: tuple[int, ...]
    data: Any
    location: tuple[Location, ...]
    extra: Mapping[str, Any]

    @property
    def stop(self) -> tuple[int, ...]:
        """One past the last global index, per dimension."""
        return tuple(s + n for s, n in zip(self.start, self.shape, strict=True))

    @property
    def slices(self) -> tuple[slice, ...]:
        """The global index slices this partition covers."""
        return tuple(slice(s, s + n) for s, n in zip(self.start, self.shape, strict=True))

    @property
    def size(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)


class _CheckedLazyEntries(Mapping[Position, PartitionEntry]):
    """The view's ``partitions`` over a lazy source: each entry is checked when looked up."""

    __slots__ = ("_layout", "_source", "_strict")

    def __init__(self, source: Mapping[Position, Any], layout: Tiling, strict: bool) -> None:
        self._source = source
        self._layout = layout
        self._strict = strict

    def __getitem__(self, key: Position) -> PartitionEntry:
        pos = self._layout.position(key)
        if pos is None:
            raise KeyError(key)
        return _check_entry(self._source[pos], pos, self._layout.shape, self._strict)

    def __contains__(self, key: object) -> bool:
        return self._layout.position(key) is not None

    def __len__(self) -> int:
        return self._layout.num_partitions

    def __iter__(self) -> Iterator[Position]:
        return iter(self._layout.partitions)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<checked lazy partitions of {self._layout!r}>"


@dataclass(frozen=True, slots=True, eq=False)
class PartitionedView:
    """A validated ``__partitioned__`` structure in normalised, read-only form.

    Attributes:
        shape: global shape (repaired from the partitions when the producer left it out and
            the check was lenient; ``repairs`` then contains ``'shape'``).
        tiling: the grid, the spec's ``partition_tiling``.
        partitions: read-only mapping grid position -> :class:`PartitionEntry`, iterated in C
            order. For a plain dict input every entry was checked by :func:`validate`; for a
            lazy input (:class:`~gpupart.protocol.LazyPartitions`,
            :class:`~gpupart.protocol.TilingPartitions`) each entry is built and checked when
            looked up (``lazy`` is then true) and may raise :class:`~gpupart.PartitionedError`.
        get: the producer's callable handle(s) -> raw data.
        locals: the positions this process owns (SPMD), or ``None`` when the key was absent.
        extra: the top-level keys beyond the protocol's (``dtype``, ``device``, ``columns``).
        layout: the :class:`~gpupart.protocol.Tiling` the partitions form.
        strict: whether the strict rules were applied.
        repairs: what lenient mode fixed (``('shape',)`` for a Modin-style dict), else ``()``.
        lazy: whether ``partitions`` checks entries on access.
    """

    shape: tuple[int, ...]
    tiling: Position
    partitions: Mapping[Position, PartitionEntry]
    get: Callable[[Any], Any]
    locals: tuple[Position, ...] | None
    extra: Mapping[str, Any]
    layout: Tiling
    strict: bool = False
    repairs: tuple[str, ...] = ()
    lazy: bool = False

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    @property
    def num_partitions(self) -> int:
        """Number of partitions (the product of ``tiling``)."""
        return self.layout.num_partitions

    @property
    def boundaries(self) -> tuple[Any, ...]:
        """Cut points per dimension (``layout.boundaries``): ``[[0, 4, 8], [0, 8]]``-like."""
        return self.layout.boundaries

    def local_partitions(self) -> tuple[PartitionEntry, ...]:
        """Return the entries of ``locals`` in order; empty when there are no ``locals``."""
        if self.locals is None:
            return ()
        return tuple(self.partitions[pos] for pos in self.locals)

    def locate(self, index: Any) -> PartitionEntry:
        """Return the entry of the partition that holds global element ``index``."""
        return self.partitions[self.layout.locate(index)]


# --------------------------------------------------------------------------- checks


def _unwrap(obj: Any) -> Mapping[str, Any]:
    if isinstance(obj, Mapping):
        return obj
    try:
        raw = obj.__partitioned__
    except AttributeError:
        raise PartitionedTypeError(
            "__partitioned__",
            "an object with a __partitioned__ property, or the dict itself",
            _typed(obj),
        ) from None
    if not isinstance(raw, Mapping):
        raise PartitionedTypeError(
            "__partitioned__", "a dict (the value of the __partitioned__ property)", _typed(raw)
        )
    return raw


def _required(raw: Mapping[str, Any], key: str, what: str) -> Any:
    if key not in raw:
        raise PartitionedError(key, f"{what} (a required key)", "missing")
    return raw[key]


def _grid_position(key: Any, grid: Position, path: str, *, inner_paths: bool) -> Position:
    """Check a grid position; ``inner_paths`` appends ``[d]`` to the path for a bad item."""
    ndim = len(grid)
    if not isinstance(key, tuple):
        raise PartitionedTypeError(path, f"a grid position: a tuple of {ndim} ints", _typed(key))
    if len(key) != ndim:
        raise PartitionedError(
            path, f"a grid position: a tuple of length {ndim}", f"length {len(key)}: {key!r}"
        )
    if inner_paths:
        pos = _int_tuple(key, path, ndim)
    else:
        try:
            pos = _int_tuple(key, path, ndim)
        except PartitionedTypeError:
            raise PartitionedTypeError(
                path, f"a grid position: a tuple of {ndim} ints", _short(key)
            ) from None
        except PartitionedError:
            pos = ()  # a negative item: reported as out of the grid below
    if len(pos) != ndim or any(not 0 <= p < g for p, g in zip(pos, grid, strict=True)):
        raise PartitionedError(path, f"a grid position inside partition_tiling {grid}", _short(key))
    return pos


def _check_location(value: Any, path: str, strict: bool) -> Location:
    if strict:
        if isinstance(value, Location):
            if (
                not isinstance(value.ip, str)
                or isinstance(value.pid, bool)
                or (not isinstance(value.pid, int))
            ):
                raise PartitionedError(
                    path,
                    "a Location whose ip and pid are set (strict: spec consumers read "
                    "loc[0] and loc[1])",
                    _short(value.spec),
                )
        elif not isinstance(value, tuple):
            if isinstance(value, bool):
                kind = "a bool"
            elif isinstance(value, int):
                kind = "a rank int (pre-2022 format, e.g. Heat)"
            elif isinstance(value, str):
                kind = "an IP string (pre-2022 format, e.g. Modin)"
            else:
                kind = f"type {type(value).__name__}"
            raise PartitionedTypeError(
                path, f"{_SPEC_LOCATION} (strict mode)", f"{_short(value)}, {kind}"
            )
    return Location.parse(value, path=path)


def _check_locations(value: Any, path: str, strict: bool) -> tuple[Location, ...]:
    if not isinstance(value, list):
        raise PartitionedTypeError(
            path, f"a list of locations, each {_SPEC_LOCATION}", _typed(value)
        )
    if not value:
        raise PartitionedError(path, "at least one location", "[]")
    return tuple(_check_location(v, f"{path}[{i}]", strict) for i, v in enumerate(value))


def _check_entry(
    entry: Any, pos: Position, gshape: tuple[int, ...] | None, strict: bool
) -> PartitionEntry:
    """Check one partition entry (not its place in the grid) and normalise it."""
    base = f"partitions[{pos!r}]"
    if not isinstance(entry, Mapping):
        raise PartitionedTypeError(base, _ENTRY_DICT, _typed(entry))
    for key in _ENTRY_KEYS:
        if key not in entry:
            raise PartitionedError(f"{base}[{key!r}]", f"a value ({_ENTRY_DICT})", "missing")
    ndim = len(pos)
    start = _int_tuple(entry["start"], f"{base}['start']", ndim)
    shape = _int_tuple(entry["shape"], f"{base}['shape']", ndim)
    if gshape is not None:
        for d, (s, n, size) in enumerate(zip(start, shape, gshape, strict=True)):
            if s > size:
                raise PartitionedError(
                    f"{base}['start'][{d}]", f"a start <= shape[{d}] = {size}", repr(s)
                )
            if s + n > size:
                raise PartitionedError(
                    f"{base}['shape'][{d}]",
                    f"start + shape <= shape[{d}] = {size} (start is {s})",
                    f"{n}, which ends at {s + n}",
                )
    location = _check_locations(entry["location"], f"{base}['location']", strict)
    extra = {k: v for k, v in entry.items() if k not in _ENTRY_KEYS}
    return PartitionEntry(pos, start, shape, entry["data"], location, _FrozenMapping(extra))


def _check_grid_tiling(
    parts: Mapping[Any, Any], grid: Position, gshape: tuple[int, ...] | None, strict: bool
) -> tuple[Tiling, dict[Position, PartitionEntry]]:
    """Check every entry and that the entries tile the space as a product grid.

    O(P * ndim): a pass over the keys checks that they are exactly the grid positions; a
    pass over the entries records, per dimension and grid index, the start and end every
    partition in that slab must share; a pass over the per-dimension lists checks that
    consecutive slabs touch (no gap, no overlap, grid order = start order).
    """
    ndim = len(grid)
    # Keys first, so that a huge partition_tiling with few partitions is reported as a
    # missing position before anything proportional to the grid is allocated.
    raws: dict[Position, Any] = {}
    for key, raw in parts.items():
        path = f"partitions[{_short(key)}]"
        pos = _grid_position(key, grid, path, inner_paths=False)
        if pos in raws:
            raise PartitionedError(path, "one entry per grid position", f"a second {pos!r}")
        raws[pos] = raw
    if len(raws) != math.prod(grid):
        # All keys are distinct valid positions, so one is missing among the first len + 1.
        missing = next(p for p in _c_order(grid) if p not in raws)
        raise PartitionedError(
            f"partitions[{missing!r}]",
            f"an entry for every grid position of partition_tiling {grid}",
            "missing",
        )
    starts: list[list[int]] = [[0] * g for g in grid]
    ends: list[list[int]] = [[0] * g for g in grid]
    owners: list[list[Position | None]] = [[None] * g for g in grid]
    entries: dict[Position, PartitionEntry] = {}
    for pos, raw in raws.items():
        entry = _check_entry(raw, pos, gshape, strict)
        entries[pos] = entry
        for d in range(ndim):
            i, s = pos[d], entry.start[d]
            e = s + entry.shape[d]
            owner = owners[d][i]
            if owner is None:
                starts[d][i], ends[d][i], owners[d][i] = s, e, pos
            elif s != starts[d][i] or e != ends[d][i]:
                same = f"as partitions[{owner!r}], which has grid index {i} along dimension {d} too"
                if s != starts[d][i]:
                    raise PartitionedError(
                        f"partitions[{pos!r}]['start'][{d}]", f"{starts[d][i]}, {same}", repr(s)
                    )
                raise PartitionedError(
                    f"partitions[{pos!r}]['shape'][{d}]",
                    f"{ends[d][i] - s}, {same}",
                    repr(entry.shape[d]),
                )
    cuts: list[list[int]] = []
    for d in range(ndim):
        prev_end, prev_owner = 0, None
        for i in range(grid[d]):
            s, owner = starts[d][i], owners[d][i]
            if s != prev_end:
                if prev_owner is None:
                    expected = f"0 (grid index 0 along dimension {d} starts the space)"
                else:
                    expected = (
                        f"{prev_end}, where partitions[{prev_owner!r}] (grid index {i - 1}) "
                        f"ends along dimension {d}"
                    )
                found = "a gap" if s > prev_end else "an overlap, or grid order != start order"
                raise PartitionedError(
                    f"partitions[{owner!r}]['start'][{d}]", expected, f"{s} ({found})"
                )
            prev_end, prev_owner = ends[d][i], owner
        if gshape is not None and prev_end != gshape[d]:
            raise PartitionedError(
                f"partitions[{prev_owner!r}]['shape'][{d}]",
                f"the last partition along dimension {d} to end at shape[{d}] = {gshape[d]}",
                f"it ends at {prev_end} (a gap at the end)",
            )
        cuts.append([*starts[d], prev_end])
    layout = Tiling.from_boundaries(cuts)
    ordered = {pos: entries[pos] for pos in layout.partitions}
    return layout, ordered


def _check_locals(
    raw: Mapping[str, Any], grid: Position, strict: bool
) -> tuple[Position, ...] | None:
    if "locals" not in raw:
        return None
    value = raw["locals"]
    if value is None and not strict:
        return None
    if not isinstance(value, list | tuple):
        raise PartitionedTypeError("locals", "a list of grid positions", _typed(value))
    out: list[Position] = []
    seen: dict[Position, int] = {}
    for i, key in enumerate(value):
        pos = _grid_position(key, grid, f"locals[{i}]", inner_paths=True)
        if pos in seen:
            raise PartitionedError(
                f"locals[{i}]", "distinct positions", f"{pos!r} again (also locals[{seen[pos]}])"
            )
        seen[pos] = i
        out.append(pos)
    return tuple(out)


def validate(obj: Any, *, strict: bool = False) -> PartitionedView:
    """Check a ``__partitioned__`` structure and return its normalised :class:`PartitionedView`.

    ``obj`` is an object with a ``__partitioned__`` property, or the dict itself.

    Rules checked (both modes):

    * required keys ``partition_tiling``, ``partitions`` and ``get`` (and ``shape``, see
      below); ``locals`` is optional; any other key is an extra, kept in ``view.extra``.
    * ``partition_tiling`` and ``shape`` are tuples of ints (``>= 1`` and ``>= 0``) of one
      length, ``ndim``; ``get`` is callable.
    * ``partitions`` is a mapping whose keys are exactly the grid positions of
      ``partition_tiling`` (tuples of ``ndim`` ints), every one present, no other.
    * each entry is a mapping with ``start``, ``shape``, ``data`` and ``location``
      (extra keys allowed); ``start``/``shape`` are tuples of ``ndim`` ints ``>= 0`` with
      ``start + shape <= shape`` (global); ``data`` is anything, ``None`` included (SPMD
      non-local); ``location`` is a non-empty list (several = replicas) of locations, each
      normalised with :meth:`gpupart.Location.parse`: a rank int (Heat), an IP string (Modin,
      xgboost_ray), an ``(ip, pid[, device])`` tuple (the spec) or a :class:`~gpupart.Location`.
    * the partitions tile the space exactly as a product grid: all partitions sharing a grid
      index along a dimension share their start and extent there, consecutive grid indices
      touch (no gap, no overlap: grid order is start order), the first starts at 0 and the
      last ends at ``shape``. Empty partitions (zero extent) are allowed. O(P * ndim).
    * ``locals``, when present, is a list or tuple of distinct grid positions.

    Lenient (default) repairs and allowances: a missing top-level ``shape`` (Modin) is derived
    from the partitions (where the last partition along each dimension ends) and
    ``view.repairs`` says ``('shape',)``; ``locals=None`` is read as absent; all three
    location formats are accepted.

    ``strict=True`` applies the spec's final text: ``shape`` must be present, ``locals`` if
    present must be a list or tuple, and every location must be an ``(ip, pid[, device])``
    tuple or a :class:`~gpupart.Location` whose ``ip`` (str) and ``pid`` (int) are set; a rank
    or an IP string is rejected with a :class:`~gpupart.PartitionedTypeError` naming its path.

    Lazy partitions: when ``partitions`` is exactly a :class:`~gpupart.protocol.LazyPartitions`
    (what :func:`~gpupart.protocol.build` makes) or a bare
    :class:`~gpupart.protocol.TilingPartitions` (``Tiling.partitions``), its entries are not
    visited: the tiling is correct by construction, so validate checks that its grid and shape
    match ``partition_tiling`` and ``shape`` (O(ndim)), checks ``locals`` (O(len(locals))),
    and checks the locations of partition ``(0, ..., 0)`` and of every local partition
    without building their entries (a ``LazyPartitions`` ``data`` callable is not called). A
    bare ``TilingPartitions`` has no ``data``/``location`` in its entries, so it fails there,
    naming ``partitions[(0, ...)]['data']``. The returned view's ``partitions`` is then lazy:
    each entry is built and fully checked (start, shape, location formats, strict rules) when
    it is looked up, O(ndim + locations) per lookup, and a bad entry raises then.

    Raises:
        PartitionedTypeError: an item has the wrong type (also a :class:`TypeError`).
        PartitionedError: any other broken rule (also a :class:`ValueError`). ``err.path``
            names the item, e.g. ``partitions[(1, 0)]['shape'][1]``, ``partition_tiling``,
            ``partitions[(0,)]['location'][1]`` or ``locals[2]``; the message says what was
            expected and what was found.
    """
    raw = _unwrap(obj)
    grid = _int_tuple(
        _required(raw, "partition_tiling", "a tuple of partition counts per dimension"),
        "partition_tiling",
        minimum=1,
    )
    ndim = len(grid)
    gshape: tuple[int, ...] | None = None
    repairs: tuple[str, ...] = ()
    if "shape" in raw or strict:
        gshape = _int_tuple(_required(raw, "shape", f"a tuple of {ndim} ints"), "shape")
        if len(gshape) != ndim:
            raise PartitionedError(
                "shape",
                f"a tuple of length {ndim}, the length of partition_tiling {grid}",
                f"length {len(gshape)}: {gshape!r}",
            )
    get = _required(raw, "get", "a callable handle -> data")
    if not callable(get):
        raise PartitionedTypeError("get", "a callable handle -> data", _typed(get))
    parts = _required(raw, "partitions", "a dict grid position -> partition entry")
    if not isinstance(parts, Mapping):
        raise PartitionedTypeError(
            "partitions", "a dict grid position -> partition entry", _typed(parts)
        )

    lazy = type(parts) in (LazyPartitions, TilingPartitions)
    if lazy:
        layout = parts.tiling
        if layout.grid != grid:
            raise PartitionedError(
                "partition_tiling", f"{layout.grid}, the grid of the lazy partitions", repr(grid)
            )
        if gshape is not None and layout.shape != gshape:
            raise PartitionedError(
                "shape", f"{layout.shape}, the shape the lazy partitions cover", repr(gshape)
            )
        entries: Mapping[Position, PartitionEntry] = _CheckedLazyEntries(parts, layout, strict)
    else:
        layout, eager = _check_grid_tiling(parts, grid, gshape, strict)
        entries = _FrozenMapping(eager)
    if gshape is None:
        gshape, repairs = layout.shape, ("shape",)

    local = _check_locals(raw, grid, strict)
    if lazy:
        zero = (0,) * ndim
        for pos in (zero, *(p for p in local or () if p != zero)):
            if type(parts) is LazyPartitions:
                path = f"partitions[{pos!r}]['location']"
                _check_locations(parts.location_of(pos), path, strict)
            else:
                _check_entry(parts[pos], pos, gshape, strict)

    extra = {k: v for k, v in raw.items() if k not in PROTOCOL_KEYS}
    return PartitionedView(
        shape=gshape,
        tiling=grid,
        partitions=entries,
        get=get,
        locals=local,
        extra=_FrozenMapping(extra),
        layout=layout,
        strict=strict,
        repairs=repairs,
        lazy=lazy,
    )
