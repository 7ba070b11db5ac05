"""Tiles a process owns and the small, picklable handles that name them anywhere in the job."""

from __future__ import annotations

import itertools
import operator
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpupart.backend import backend_for_array
from gpupart.errors import TileNotFoundError
from gpupart.location import Location

__all__ = [
    "HANDLE_RECORD",
    "Handle",
    "Tile",
    "TileStore",
    "byte_view",
    "copy_into",
    "handle_records",
    "record_problem",
    "records_alike",
]

_RECORD = struct.Struct("<qQqqq")
#: What a bulk fetch reads of each handle, as one NumPy record (see :func:`handle_records`).
#: ``job`` and ``kind`` are ``hash(job)`` and ``hash((dtype, shape, order))`` of *this*
#: process (string hashes differ between processes): compare them, never send them.
HANDLE_RECORD = np.dtype(
    [("owner", "<i8"), ("tile_id", "<u8"), ("nbytes", "<i8"), ("job", "<i8"), ("kind", "<i8")]
)


@dataclass(frozen=True, slots=True)
class Handle:
    """Names one tile: its owner rank, id, dtype, shape, size and where it lives.

    Handles are small and picklable: send them anywhere in the job and any rank can
    ``Runtime.get`` the tile. ``order`` is the memory order of the owner's buffer ('C' or
    'F'); ``job`` the id of the job that made it (a handle is meaningless in another job).
    """

    owner: int
    tile_id: int
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    location: Location
    order: str = "C"
    job: str = ""
    # The fields a bulk fetch needs, packed once here so that reading them for 10,000
    # handles is one pass instead of one per field (None when a field does not fit).
    _record: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            kind = hash((self.dtype, self.shape, self.order))
            record = _RECORD.pack(self.owner, self.tile_id, self.nbytes, hash(self.job), kind)
        except (struct.error, TypeError):
            record = None  # an odd handle: checked field by field where it is used
        object.__setattr__(self, "_record", record)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # Rebuilt from its fields, so the record is made by (and valid in) this process.
        args = (self.owner, self.tile_id, self.dtype, self.shape, self.nbytes, self.location)
        return type(self), (*args, self.order, self.job)

    @property
    def ndim(self) -> int:
        """Number of dimensions of the tile."""
        return len(self.shape)


_RECORD_OF = operator.attrgetter("_record")


def handle_records(handles: Sequence[Any]) -> np.ndarray | None:
    """Owner, tile id, size, job and kind of every handle as a :data:`HANDLE_RECORD` array.

    One pass over the list (~30 ns a handle). Returns None if any item is not a
    :class:`Handle` or has a field that does not fit its record (callers then check the
    handles one by one, which names the culprit).
    """
    try:
        records = np.frombuffer(b"".join(map(_RECORD_OF, handles)), HANDLE_RECORD)
    except (AttributeError, TypeError, ValueError):
        return None
    return records if len(records) == len(handles) else None


def records_alike(records: np.ndarray) -> bool:
    """Whether the handles behind ``records`` share one dtype, shape, order and size."""
    kinds, sizes = records["kind"], records["nbytes"]
    return bool((kinds == kinds[0]).all() and (sizes == sizes[0]).all())


_RECORD_INTS = (("owner", -(2**63), 2**63), ("tile_id", 0, 2**64), ("nbytes", -(2**63), 2**63))


def record_problem(handle: Handle) -> str | None:
    """Why ``handle`` has no record: its first field that does not fit (None if it has one).

    The text follows ``handles[i]`` in an error message.
    """
    if handle._record is not None:
        return None
    for name, low, high in _RECORD_INTS:
        value = getattr(handle, name)
        try:
            number = operator.index(value)
        except TypeError:
            return f".{name}: expected an integer, found {type(value).__name__}"
        if not low <= number < high:
            return f".{name}: expected an integer in {low}..{high - 1}, found {number}"
    return (
        ": expected a hashable dtype, shape and order, found"
        f" {handle.dtype!r}, {handle.shape!r}, {handle.order!r}"
    )


def byte_view(array: Any) -> Any:
    """Return a flat ``uint8`` view of a C- or F-contiguous NumPy/CuPy array (no copy)."""
    if array.flags.c_contiguous:
        flat = array.reshape(-1)
    elif array.flags.f_contiguous:
        flat = array.ravel(order="F")
    else:
        raise ValueError("byte_view needs a contiguous array")
    return flat.view(np.uint8)


def copy_into(out: Any, value: Any) -> Any:
    """``out[...] = value`` across host and device memory (NumPy and CuPy either side)."""
    if isinstance(out, np.ndarray) and not isinstance(value, np.ndarray):
        out[...] = value.get()  # device -> host
    elif not isinstance(out, np.ndarray) and isinstance(value, np.ndarray):
        out[...] = backend_for_array(out).xp.asarray(value)  # host -> device
    else:
        out[...] = value
    return out


@dataclass(slots=True, eq=False)  # compared by identity: fast ``None in tiles`` tests
class Tile:
    """A registered array and the event that says when its producer has finished writing it."""

    array: Any
    data: Any  # flat uint8 view of ``array`` (what goes on the wire)
    nbytes: int
    event: Any = None  # backend event, None when nothing is pending
    address: int = 0  # host address of the bytes (0 for device memory)

    def ready(self) -> bool:
        """Whether the producer's pending work on the tile has completed (never blocks)."""
        return self.event is None or bool(self.event.done)


class TileStore:
    """Tile id -> :class:`Tile`, shared by the caller's thread and the progress engine."""

    def __init__(self, owner: int) -> None:
        self.owner = owner
        self._tiles: dict[int, Tile] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        #: Whether any tile was registered with a ready event (else none can be pending).
        self.has_events = False
        #: Whether any tile lives in device memory (else every pack is gathered on the host).
        self.has_device_tiles = False

    def add(self, tile: Tile) -> int:
        """Register ``tile``; returns its new id."""
        with self._lock:
            tile_id = next(self._ids)
            self._tiles[tile_id] = tile
            if tile.event is not None:
                self.has_events = True
            if not tile.address:
                self.has_device_tiles = True
        return tile_id

    def attach_event(self, tile_id: int, event: Any) -> None:
        """Make a registered tile wait for ``event`` (its producer's work) before it is sent.

        Owners skip the readiness check while no tile has an event, so setting
        ``Tile.event`` directly would go unnoticed.
        """
        with self._lock:
            tile = self._tiles.get(tile_id)
            if tile is None:
                raise TileNotFoundError(self.owner, tile_id)
            tile.event = event
            if event is not None:
                self.has_events = True

    def get(self, tile_id: int) -> Tile:
        """Look up a tile; :class:`~gpupart.TileNotFoundError` if unknown or freed."""
        with self._lock:
            tile = self._tiles.get(tile_id)
        if tile is None:
            raise TileNotFoundError(self.owner, tile_id)
        return tile

    def lookup(self, tile_ids: Any) -> list[Tile | None]:
        """Look up many tiles (a list or an integer array of ids) at once, under one lock.

        Unknown ids give ``None``.
        """
        if isinstance(tile_ids, np.ndarray):
            tile_ids = tile_ids.tolist()
        with self._lock:
            return list(map(self._tiles.get, tile_ids))

    def remove(self, tile_id: int) -> Tile:
        """Forget a tile (in-flight sends keep their own reference until they complete)."""
        with self._lock:
            tile = self._tiles.pop(tile_id, None)
        if tile is None:
            raise TileNotFoundError(self.owner, tile_id)
        return tile

    def __len__(self) -> int:
        with self._lock:
            return len(self._tiles)

    def clear(self) -> None:
        """Forget every tile."""
        with self._lock:
            self._tiles.clear()
