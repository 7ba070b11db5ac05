"""The ``__partitioned__`` protocol: check it, describe tilings, produce it.

* :func:`validate` checks any producer's structure (an object with ``__partitioned__`` or the
  dict) and returns a read-only :class:`PartitionedView` with :class:`PartitionEntry` items.
* :class:`Tiling` describes a block grid per dimension (O(ndim) for regular grids); its
  ``partitions`` is a lazy :class:`TilingPartitions` mapping.
* :func:`build` produces a valid ``__partitioned__`` dict whose ``partitions`` is a lazy
  :class:`LazyPartitions` mapping.

See ``docs/protocol.md`` for the protocol as gpupart implements it and its extensions.
"""

from __future__ import annotations

from gpupart.protocol.builder import PROTOCOL_KEYS, LazyPartitions, build
from gpupart.protocol.tiling import Position, RegularCuts, Tiling, TilingPartitions
from gpupart.protocol.validation import PartitionedView, PartitionEntry, validate

__all__ = [
    "PROTOCOL_KEYS",
    "LazyPartitions",
    "PartitionEntry",
    "PartitionedView",
    "Position",
    "RegularCuts",
    "Tiling",
    "TilingPartitions",
    "build",
    "validate",
]
