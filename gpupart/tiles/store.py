"""The tiles a process owns: registered arrays, their ready events, and byte views of them."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpupart.backend import backend_for_array
from gpupart.errors import TileNotFoundError

__all__ = ["Tile", "TileStore", "byte_view", "copy_into"]


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
    #: The only rank that may fetch it (None: any rank).
    consumer: int | None = None
    #: Remote fetches after which the tile is released (None: until freed).
    uses_left: int | None = None

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
        #: Whether any tile is meant for one consumer / is released after some fetches.
        self.has_consumers = False
        self.has_uses = False

    def add(self, tile: Tile) -> int:
        """Register ``tile``; returns its new id."""
        with self._lock:
            tile_id = next(self._ids)
            self._tiles[tile_id] = tile
            if tile.event is not None:
                self.has_events = True
            if not tile.address:
                self.has_device_tiles = True
            if tile.consumer is not None:
                self.has_consumers = True
            if tile.uses_left is not None:
                self.has_uses = True
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

    def used(self, tile_ids: list[int]) -> None:
        """Count one completed remote fetch of each tile; release tiles that have no uses left."""
        with self._lock:
            for tile_id in tile_ids:
                tile = self._tiles.get(tile_id)
                if tile is not None and tile.uses_left is not None:
                    tile.uses_left -= 1
                    if tile.uses_left <= 0:
                        del self._tiles[tile_id]

    def __contains__(self, tile_id: int) -> bool:
        with self._lock:
            return tile_id in self._tiles

    def __len__(self) -> int:
        with self._lock:
            return len(self._tiles)

    def clear(self) -> None:
        """Forget every tile."""
        with self._lock:
            self._tiles.clear()
