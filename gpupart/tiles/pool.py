"""Small caches of host pack buffers, so packs do not page-fault on every transfer.

Fresh host memory costs a page fault per page on first touch, which for a large pack can
cost more than the transfer itself (numbers in ``bench/RESULTS.md``). Device memory needs no
such pool: CuPy's memory pool already caches allocations.

* :class:`HostBufferPool` (owners): a pack is sent and then given back.
* :class:`ReceivePool` (consumers): a pack is received, and the caller gets views of its
  tiles; the pack's memory comes back once the last of those views is gone. Only packs of at
  least :data:`POOLED_MIN` bytes are pooled (smaller ones fault little): a tile that travels
  alone lands in an array of its own (an ordinary owning array, as the caller expects).
"""

from __future__ import annotations

import threading
import weakref

import numpy as np

__all__ = ["POOLED_MIN", "HostBufferPool", "ReceivePool"]

_MIN_CLASS = 1 << 16
#: Smallest pack a :class:`ReceivePool` serves from its blocks.
POOLED_MIN = 1 << 20


class _FreeBlocks:
    """Free ``uint8`` host blocks by power-of-two size class, at most ``capacity`` bytes.

    The part both pools share; each pool decides when a block comes back. The lock is
    re-entrant: a block can come back from inside a locked section of this very thread (a
    garbage collection that an allocation under the lock triggers may drop a pack's last
    view, whose finalizer returns the block).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.kept = 0
        self.closed = False  # blocks coming back are dropped
        self.lock = threading.RLock()
        self._free: dict[int, list[np.ndarray]] = {}

    @staticmethod
    def size_class(nbytes: int) -> int:
        """Return the size of the blocks that hold ``nbytes``."""
        return max(_MIN_CLASS, 1 << (max(nbytes, 1) - 1).bit_length())

    def take(self, nbytes: int) -> np.ndarray:
        """Return a free block of ``nbytes``' size class, or a new one."""
        size = self.size_class(nbytes)
        with self.lock:
            free = self._free.get(size)
            if free:
                self.kept -= size
                return free.pop()
        return np.empty(size, dtype=np.uint8)

    def keep(self, block: np.ndarray) -> None:
        """Keep ``block`` for reuse if there is room (and the pool is open)."""
        size = block.shape[0]
        with self.lock:
            if self.closed or self.kept + size > self.capacity:
                return
            self._free.setdefault(size, []).append(block)
            self.kept += size

    def clear(self) -> None:
        """Drop every free block."""
        with self.lock:
            self._free.clear()
            self.kept = 0


class HostBufferPool:
    """Power-of-two size classes of ``uint8`` host buffers, at most ``capacity`` bytes kept."""

    def __init__(self, capacity: int = 256 << 20) -> None:
        self._blocks = _FreeBlocks(capacity)
        self._lent: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # id -> (view, whole)

    @property
    def capacity(self) -> int:
        """Most bytes of free buffers kept."""
        return self._blocks.capacity

    def acquire(self, nbytes: int) -> np.ndarray:
        """Return a buffer of exactly ``nbytes`` (a view of a pooled, maybe reused, allocation)."""
        whole = self._blocks.take(nbytes)
        view = whole[:nbytes]
        with self._blocks.lock:  # keyed by the view's identity: the entry keeps the view alive
            self._lent[id(view)] = (view, whole)
        return view

    def release(self, buffer: np.ndarray) -> None:
        """Give back a buffer from :meth:`acquire`; it is kept if the pool has room."""
        with self._blocks.lock:
            lent = self._lent.pop(id(buffer), None)
        if lent is not None:  # else not one of ours
            self._blocks.keep(lent[1])

    def forget(self, buffer: np.ndarray) -> None:
        """Never reuse a lent buffer (UCX may still touch it after a failed send)."""
        with self._blocks.lock:
            self._lent.pop(id(buffer), None)

    def clear(self) -> None:
        """Drop every cached buffer (and forget the lent ones)."""
        with self._blocks.lock:
            self._blocks.clear()
            self._lent.clear()


class ReceivePool:
    """Host memory for a consumer's packs, reused once no view of a pack is left.

    :meth:`empty` returns a ``uint8`` array over a pooled block, reached through a private
    ``memoryview``: every view NumPy makes of the array keeps that memoryview alive, so when
    it dies no array can reach the block any more and the block goes back to the pool
    (at most ``capacity`` bytes of free blocks are kept). Thread-safe: blocks come back on
    whichever thread drops the last view.
    """

    def __init__(self, capacity: int = 256 << 20) -> None:
        self._blocks = _FreeBlocks(capacity)

    @property
    def kept(self) -> int:
        """Bytes of free blocks waiting for reuse."""
        return self._blocks.kept

    def empty(self, nbytes: int) -> np.ndarray:
        """Return a writable ``uint8`` array of ``nbytes`` (undefined contents, maybe reused).

        Below :data:`POOLED_MIN` bytes it is a plain new array.
        """
        if nbytes < POOLED_MIN:
            return np.empty(nbytes, dtype=np.uint8)
        block = self._blocks.take(nbytes)
        array = np.frombuffer(memoryview(block), dtype=np.uint8, count=nbytes)
        # NumPy exports the block through a memoryview of its own (``array.base``): the
        # last array that reaches the block holds it. Watch that one.
        done = weakref.finalize(array.base, self._blocks.keep, block)
        done.atexit = False
        return array

    def close(self) -> None:
        """Drop the free blocks; blocks coming back later are dropped too."""
        with self._blocks.lock:
            self._blocks.closed = True
            self._blocks.clear()
