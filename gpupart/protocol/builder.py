"""Produce a valid ``__partitioned__`` dict in one call: :func:`build` and :class:`LazyPartitions`.

A producer describes its layout once (a :class:`~gpupart.protocol.Tiling` or a block shape)
and says where each tile's data and locations come from; :func:`build` returns the protocol
dict. Its ``partitions`` is a :class:`LazyPartitions` mapping that builds each entry when it is
looked up, so a regular grid of a million tiles costs O(ndim) to describe and to validate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from gpupart.errors import PartitionedError, PartitionedTypeError
from gpupart.location import Location
from gpupart.protocol.tiling import Position, Tiling, _int_tuple, _short, _typed

__all__ = ["PROTOCOL_KEYS", "LazyPartitions", "build"]

#: The top-level keys the protocol defines; every other key is an extra.
PROTOCOL_KEYS = frozenset({"shape", "partition_tiling", "partitions", "get", "locals"})

_NONE = "none"
_MAPPING = "mapping"
_CALLABLE = "callable"
_CONSTANT = "constant"


def _is_single_location(value: Any) -> bool:
    """Tell whether ``value`` is one location in an accepted format (a list means several)."""
    return isinstance(value, tuple | int | str) and not isinstance(value, bool)


def _location_list(value: Any, path: str) -> tuple[Any, ...]:
    """Check one partition's locations; a single location is wrapped. Returns them as given.

    Every item must be understood by :meth:`Location.parse` (all three formats met in the
    wild); :func:`~gpupart.protocol.validate` with ``strict=True`` is where old formats are
    refused.
    """
    if _is_single_location(value):
        Location.parse(value, path=f"{path}[0]")
        return (value,)
    if not isinstance(value, list):
        raise PartitionedTypeError(
            path, "a location or a list of locations (several = replicas)", _typed(value)
        )
    if not value:
        raise PartitionedError(path, "at least one location", "[]")
    for i, loc in enumerate(value):
        Location.parse(loc, path=f"{path}[{i}]")
    return tuple(value)


class LazyPartitions(Mapping[Position, dict[str, Any]]):
    """The ``partitions`` mapping :func:`build` returns: entries are built on lookup.

    ``parts[pos]`` returns a fresh dict ``{'start', 'shape', 'data', 'location'}``: start and
    shape come from the tiling in O(ndim); ``data`` is ``data[pos]`` (``None`` where a data
    mapping has no entry), ``data(pos)`` or ``None``; ``location`` is a new list of the
    locations given for ``pos``, exactly as given (a :class:`~gpupart.Location`, an
    ``(ip, pid[, device])`` tuple, a rank or an IP string). ``len()`` is the number of tiles,
    iteration yields positions in C order without building entries, ``in`` is O(ndim).

    Inputs given as mappings are copied and checked when the object is made (keys must be
    positions of the tiling; a location mapping must cover every position); a location
    callable's result is checked each time an entry is built. ``data`` is opaque and never
    checked. The object pickles when its data and location sources do.

    :func:`gpupart.protocol.validate` recognises this exact type and checks its structure
    in O(ndim) instead of visiting every entry.
    """

    __slots__ = ("_data", "_data_kind", "_loc_kind", "_locations", "_tiling")

    def __init__(self, tiling: Tiling, data: Any, locations: Any) -> None:
        if not isinstance(tiling, Tiling):
            raise PartitionedTypeError("tiling", "a Tiling", _typed(tiling))
        self._tiling = tiling
        self._data_kind, self._data = self._check_data(data)
        self._loc_kind, self._locations = self._check_locations(locations)

    def _positions_of(self, mapping: Mapping[Any, Any], path: str) -> Iterator[tuple[Any, Any]]:
        for key, value in mapping.items():
            pos = self._tiling.position(key)
            if pos is None:
                raise PartitionedError(
                    f"{path}[{_short(key)}]",
                    f"a grid position of the tiling (grid {self._tiling.grid})",
                    _short(key),
                )
            yield pos, value

    def _check_data(self, data: Any) -> tuple[str, Any]:
        if data is None:
            return _NONE, None
        if isinstance(data, Mapping):
            return _MAPPING, dict(self._positions_of(data, "data"))
        if callable(data):
            return _CALLABLE, data
        raise PartitionedTypeError(
            "data", "a mapping position -> data, a callable(position) or None", _typed(data)
        )

    def _check_locations(self, locations: Any) -> tuple[str, Any]:
        if isinstance(locations, Mapping):
            checked = {
                pos: _location_list(value, f"locations[{pos!r}]")
                for pos, value in self._positions_of(locations, "locations")
            }
            if len(checked) != self._tiling.num_partitions:
                missing = next(p for p in self._tiling.partitions if p not in checked)
                raise PartitionedError(
                    f"locations[{missing!r}]", "locations for every grid position", "missing"
                )
            return _MAPPING, checked
        if callable(locations) and not _is_single_location(locations):
            return _CALLABLE, locations
        return _CONSTANT, _location_list(locations, "locations")

    # -- per-position sources ------------------------------------------------------------

    @property
    def tiling(self) -> Tiling:
        """The tiling the partitions follow."""
        return self._tiling

    def data_of(self, position: Position) -> Any:
        """Return the ``data`` of the partition at ``position`` (calls a data callable)."""
        pos = self._tiling._checked_position(position)
        if self._data_kind == _MAPPING:
            return self._data.get(pos)
        if self._data_kind == _CALLABLE:
            return self._data(pos)
        return None

    def location_of(self, position: Position) -> list[Any]:
        """Return the ``location`` list of the partition at ``position``: a new list, as given.

        Does not touch ``data``. A location callable's result is checked here.
        """
        pos = self._tiling._checked_position(position)
        if self._loc_kind == _CONSTANT:
            return list(self._locations)
        if self._loc_kind == _MAPPING:
            return list(self._locations[pos])
        return list(_location_list(self._locations(pos), f"partitions[{pos!r}]['location']"))

    # -- Mapping -------------------------------------------------------------------------

    def __getitem__(self, key: Position) -> dict[str, Any]:
        pos = self._tiling.position(key)
        if pos is None:
            raise KeyError(key)
        entry: dict[str, Any] = self._tiling._entry(pos)
        entry["data"] = self.data_of(pos)
        entry["location"] = self.location_of(pos)
        return entry

    def __contains__(self, key: object) -> bool:
        return self._tiling.position(key) is not None

    def __len__(self) -> int:
        return self._tiling.num_partitions

    def __iter__(self) -> Iterator[Position]:
        return iter(self._tiling.partitions)

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _restore_lazy,
            (self._tiling, self._data_kind, self._data, self._loc_kind, self._locations),
        )

    def __repr__(self) -> str:
        return (
            f"LazyPartitions({self._tiling!r}, data=<{self._data_kind}>, "
            f"locations=<{self._loc_kind}>)"
        )


def _restore_lazy(
    tiling: Tiling, data_kind: str, data: Any, loc_kind: str, locations: Any
) -> LazyPartitions:
    """Unpickle a :class:`LazyPartitions` without checking its (already checked) inputs."""
    self = LazyPartitions.__new__(LazyPartitions)
    self._tiling = tiling
    self._data_kind, self._data = data_kind, data
    self._loc_kind, self._locations = loc_kind, locations
    return self


def build(
    shape: Sequence[int],
    tiling: Tiling | Sequence[int],
    data: Mapping[Position, Any] | Callable[[Position], Any] | None,
    locations: Any,
    get: Callable[[Any], Any],
    locals: Sequence[Position] | None = None,
    *,
    lazy: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """Return a valid ``__partitioned__`` dict for a tiled object.

    Args:
        shape: global shape.
        tiling: a :class:`~gpupart.protocol.Tiling` of that shape, or a block shape
            (``Tiling.regular(shape, tiling)``).
        data: a mapping position -> data (positions it lacks get ``None``, the SPMD
            convention for non-local tiles), a callable ``data(position)`` called each time an
            entry is built, or ``None`` (all ``None``).
        locations: every partition's ``location`` list (plural: it covers all the
            partitions): a mapping position -> list of locations (every position needed), a
            callable ``locations(position)`` returning that list, or one location / one list
            of locations used for every partition. A location is a :class:`~gpupart.Location`,
            an ``(ip, pid[, device])`` tuple, a rank int or an IP string (a *list* means
            several replicas; a tuple is always one location). A bare location is wrapped in
            a list. Locations are emitted as given.
        get: the callable turning a ``data`` handle (or a list of handles) into raw data.
        locals: SPMD only: the grid positions this process owns (emitted as a list). Leave
            ``None`` for Ray/Dask-style producers: the key is then absent, as the spec asks.
        lazy: when true (default) ``partitions`` is a :class:`LazyPartitions` (O(ndim) to
            make); when false, a plain dict of every entry (O(tiles)) for consumers that
            insist on a ``dict``.
        **extra: extra top-level keys passed through (``dtype``, ``columns``, ...); the
            protocol's own key names are refused.

    Raises:
        PartitionedTypeError: an argument has the wrong type.
        PartitionedError: an argument has a wrong value (path names it, e.g.
            ``locations[(1, 0)][0]`` or ``locals[2]``).
    """
    gshape = _int_tuple(shape, "shape", sequences=True)
    if isinstance(tiling, Tiling):
        if tiling.shape != gshape:
            raise PartitionedError(
                "tiling", f"a Tiling of shape {gshape}", f"a Tiling of shape {tiling.shape}"
            )
        layout = tiling
    elif isinstance(tiling, Sequence) and not isinstance(tiling, str | bytes):
        layout = Tiling._regular(gshape, tiling, "shape", "tiling")
    else:
        raise PartitionedTypeError("tiling", "a Tiling or a block shape tuple", _typed(tiling))
    if not callable(get):
        raise PartitionedTypeError("get", "a callable handle -> data", _typed(get))
    clash = sorted(PROTOCOL_KEYS & extra.keys())
    if clash:
        raise PartitionedError(
            clash[0], "an extra key other than the protocol's own", f"extra key {clash[0]!r}"
        )

    parts: Mapping[Position, Any] = LazyPartitions(layout, data, locations)
    if not lazy:
        parts = {pos: parts[pos] for pos in parts}
    out: dict[str, Any] = {
        "shape": gshape,
        "partition_tiling": layout.grid,
        "partitions": parts,
        "get": get,
    }
    if locals is not None:
        out["locals"] = _check_locals(locals, layout)
    out.update(extra)
    return out


def _check_locals(locals: Any, layout: Tiling) -> list[Position]:
    if not isinstance(locals, Sequence) or isinstance(locals, str | bytes):
        raise PartitionedTypeError("locals", "a list of grid positions", _typed(locals))
    out: list[Position] = []
    seen: dict[Position, int] = {}
    for i, key in enumerate(locals):
        if not isinstance(key, tuple | list):
            raise PartitionedTypeError(f"locals[{i}]", "a grid position tuple", _typed(key))
        pos = layout.position(tuple(key))
        if pos is None:
            raise PartitionedError(
                f"locals[{i}]", f"a grid position inside {layout.grid}", _short(key)
            )
        if pos in seen:
            raise PartitionedError(
                f"locals[{i}]", "distinct positions", f"{pos!r} again (also locals[{seen[pos]}])"
            )
        seen[pos] = i
        out.append(pos)
    return out
