"""Small caches of host pack buffers, so packs do not page-fault on every transfer.

Fresh host memory costs a page fault per 4 KiB page on first touch (measured ~4 us each on
the development VM, i.e. 40 ms for a 40 MiB pack, more than the transfer itself), or the
zeroing of a 2 MiB page where transparent huge pages apply. Device memory needs no such
pool: CuPy's memory pool already caches allocations.

* :class:`HostBufferPool` (owners): a pack is sent and then given back.
* :class:`ReceivePool` (consumers): a pack is received, and the caller gets views of its
  tiles; the pack's memory comes back once the last of those views is gone. Only packs are
  pooled: a tile that travels alone lands in an array of its own (an ordinary owning NumPy
  array, as the caller expects), which the allocator handles.

Tried and not done (development VM): transparent huge pages for the owner's packs
(10,000 x 4 KiB: 13-16 ms against 10.5 ms); pooling the arrays of tiles that travel alone
(slower than the allocator's own reuse once the tiles outstanding exceed the pool: 1 MiB
tiles 1.7 against 7.9 GB/s). Without the receive pool, whether a consumer's packs reuse
memory was up to glibc's heap trimming: 10,000 x 4 KiB took 7.5 ms or 15-21 ms, for minutes
at a time; with it, 7.2-7.9 ms.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np

__all__ = ["HostBufferPool", "ReceivePool"]

_MIN_CLASS = 1 << 16


class HostBufferPool:
    """Power-of-two size classes of ``uint8`` host buffers, at most ``capacity`` bytes kept."""

    def __init__(self, capacity: int = 256 << 20) -> None:
        self.capacity = capacity
        self._free: dict[int, list[np.ndarray]] = {}
        self._lent: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # id -> (view, whole)
        self._kept = 0
        self._lock = threading.Lock()

    @staticmethod
    def _size_class(nbytes: int) -> int:
        return max(_MIN_CLASS, 1 << (max(nbytes, 1) - 1).bit_length())

    def acquire(self, nbytes: int) -> np.ndarray:
        """Return a buffer of exactly ``nbytes`` (a view of a pooled, maybe reused, allocation)."""
        size = self._size_class(nbytes)
        with self._lock:
            free = self._free.get(size)
            if free:
                self._kept -= size
                whole = free.pop()
            else:
                whole = None
        if whole is None:
            whole = np.empty(size, dtype=np.uint8)
        view = whole[:nbytes]
        with self._lock:  # keyed by the view's identity: the entry keeps the view alive
            self._lent[id(view)] = (view, whole)
        return view

    def release(self, buffer: np.ndarray) -> None:
        """Give back a buffer from :meth:`acquire`; it is kept if the pool has room."""
        with self._lock:
            lent = self._lent.pop(id(buffer), None)
            if lent is None:
                return  # not one of ours
            whole = lent[1]
            size = whole.shape[0]
            if self._kept + size > self.capacity:
                return
            self._free.setdefault(size, []).append(whole)
            self._kept += size

    def forget(self, buffer: np.ndarray) -> None:
        """Never reuse a lent buffer (UCX may still touch it after a failed send)."""
        with self._lock:
            self._lent.pop(id(buffer), None)

    def clear(self) -> None:
        """Drop every cached buffer (and forget the lent ones)."""
        with self._lock:
            self._free.clear()
            self._lent.clear()
            self._kept = 0


class ReceivePool:
    """Host memory for a consumer's packs, reused once no view of a pack is left.

    :meth:`empty` returns a ``uint8`` array over a pooled block, reached through a private
    ``memoryview``: every view NumPy makes of the array keeps that memoryview alive, so when
    it dies no array can reach the block any more and the block goes back to the pool
    (at most ``capacity`` bytes of free blocks are kept). Thread-safe: blocks come back on
    whichever thread drops the last view.
    """

    def __init__(self, capacity: int = 256 << 20) -> None:
        self.capacity = capacity
        self._free: dict[int, list[np.ndarray]] = {}
        self._kept = 0
        self._closed = False
        # Re-entrant: a block can come back from inside a locked section of this very thread
        # (a garbage collection that an allocation under the lock triggers may drop a pack's
        # last view, and its finalizer returns the block).
        self._lock = threading.RLock()

    @property
    def kept(self) -> int:
        """Bytes of free blocks waiting for reuse."""
        return self._kept

    def empty(self, nbytes: int) -> np.ndarray:
        """Return a writable ``uint8`` array of ``nbytes`` (undefined contents, maybe reused)."""
        size = HostBufferPool._size_class(nbytes)
        with self._lock:
            free = self._free.get(size)
            if free:
                self._kept -= size
                block = free.pop()
            else:
                block = None
        if block is None:
            block = np.empty(size, dtype=np.uint8)
        array = np.frombuffer(memoryview(block), dtype=np.uint8, count=nbytes)
        # NumPy exports the block through a memoryview of its own (``array.base``): the
        # last array that reaches the block holds it. Watch that one.
        done = weakref.finalize(array.base, self._give_back, block)
        done.atexit = False
        return array

    def _give_back(self, block: np.ndarray) -> None:
        size = block.shape[0]
        with self._lock:
            if self._closed or self._kept + size > self.capacity:
                return
            self._free.setdefault(size, []).append(block)
            self._kept += size

    def close(self) -> None:
        """Drop the free blocks; blocks coming back later are dropped too."""
        with self._lock:
            self._closed = True
            self._free.clear()
            self._kept = 0
