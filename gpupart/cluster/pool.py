"""A small cache of host staging buffers, so packs do not page-fault on every transfer.

Fresh host memory costs a page fault per 4 KiB page on first touch (measured ~4 us each on
the development VM, i.e. 40 ms for a 40 MiB pack, more than the transfer itself). Packs are
internal buffers with a known lifetime, so they are taken from and returned to this pool.
Device memory needs no such pool: CuPy's memory pool already caches allocations.
"""

from __future__ import annotations

import threading

import numpy as np

__all__ = ["HostBufferPool"]

_MIN_CLASS = 1 << 16


class HostBufferPool:
    """Power-of-two size classes of ``uint8`` host buffers, at most ``capacity`` bytes kept."""

    def __init__(self, capacity: int = 256 << 20) -> None:
        self.capacity = capacity
        self._free: dict[int, list[np.ndarray]] = {}
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
                return free.pop()[:nbytes]
        return np.empty(size, dtype=np.uint8)[:nbytes]

    def release(self, buffer: np.ndarray) -> None:
        """Give back a buffer from :meth:`acquire`; it is kept if the pool has room."""
        base = buffer.base if buffer.base is not None else buffer
        size = base.shape[0]
        if size != self._size_class(size):
            return  # not one of ours
        with self._lock:
            if self._kept + size > self.capacity:
                return
            self._free.setdefault(size, []).append(base)
            self._kept += size

    def clear(self) -> None:
        """Drop every cached buffer."""
        with self._lock:
            self._free.clear()
            self._kept = 0
