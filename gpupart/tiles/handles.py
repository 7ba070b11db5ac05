"""Handles: the small, picklable names of tiles, valid anywhere in the job."""

from __future__ import annotations

import contextlib
import functools
import math
import operator
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpupart.location import Location

__all__ = [
    "HANDLE_RECORD",
    "Handle",
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
            if self.order not in _ORDERS or _expected_nbytes(self.dtype, self.shape) != self.nbytes:
                record = None  # fields that disagree: named where the handle is used
        except (struct.error, TypeError, ValueError):
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
_ORDERS = ("C", "F")


@functools.lru_cache(maxsize=1024)
def _itemsize(dtype: str) -> int | None:
    """Bytes per element of a plain dtype string (None for object, structured or invalid)."""
    try:
        dt = np.dtype(dtype)
    except (TypeError, ValueError):
        return None
    return None if dt.hasobject or dt.fields is not None else dt.itemsize


def _expected_nbytes(dtype: str, shape: tuple[int, ...]) -> int | None:
    """Size of a tile of ``dtype`` and ``shape`` (None if either is not a valid one)."""
    itemsize = _itemsize(dtype) if isinstance(dtype, str) else None
    if itemsize is None or not isinstance(shape, tuple):
        return None
    if not all(type(n) is int and n >= 0 for n in shape):
        return None
    return itemsize * math.prod(shape)


def handle_records(handles: Sequence[Any]) -> np.ndarray | None:
    """Owner, tile id, size, job and kind of every handle as a :data:`HANDLE_RECORD` array.

    One pass over the list (what it saves is in ``bench/RESULTS.md``). Returns None if any
    item is not a :class:`Handle` or has a field that does not fit its record (callers then
    check the handles one by one, which names the culprit).
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
    if handle.order not in _ORDERS:
        return f".order: expected 'C' or 'F', found {handle.order!r}"
    expected = None
    with contextlib.suppress(TypeError):
        expected = _expected_nbytes(handle.dtype, handle.shape)
    if expected is None:
        return (
            ": expected a plain dtype string and a shape of non-negative ints, found"
            f" {handle.dtype!r}, {handle.shape!r}"
        )
    if expected != handle.nbytes:
        return (
            f".nbytes: expected {expected} (shape {handle.shape} of {handle.dtype}), found"
            f" {handle.nbytes}"
        )
    return ": expected hashable fields, found unhashable ones"
