"""A small cache of host buffers, so transfers do not page-fault on every use.

Fresh host memory costs a page fault per 4 KiB page on first touch (measured ~4 us each on
the development VM, i.e. 40 ms for a 40 MiB pack, more than the transfer itself). Owners
take pack buffers with :meth:`HostBufferPool.acquire` and give them back once sent.
Consumers receive into :meth:`HostBufferPool.lease` buffers: the arrays handed to the caller
are views of one, and it returns to the pool by itself when the last of them is gone (as
CuPy's and RMM's pools do for device memory, which needs no pool of ours).
"""

from __future__ import annotations

import contextlib
import mmap
import threading

import numpy as np

__all__ = ["HostBufferPool"]

_PAGE = 4096

_MIN_CLASS = 1 << 16


_HUGE_PAGE = 2 << 20


def _host_empty(nbytes: int) -> np.ndarray:
    """Allocate a ``uint8`` host buffer, backed by transparent huge pages where allowed.

    UCX's shared-memory rendezvous reads a pack with ``process_vm_readv``, which pins the
    owner's pages one by one: 4 KiB pages held it to ~4 GB/s on the development VM, huge
    pages reach the copy limit. Buffers of at least a huge page are mapped on their own,
    aligned to one, and advised (``MADV_HUGEPAGE``); smaller ones come from NumPy.
    """
    if nbytes < _HUGE_PAGE or not hasattr(mmap, "MADV_HUGEPAGE"):
        return np.empty(nbytes, dtype=np.uint8)
    region = mmap.mmap(-1, nbytes + _HUGE_PAGE)
    raw = np.frombuffer(region, dtype=np.uint8)
    start = -raw.ctypes.data % _HUGE_PAGE
    with contextlib.suppress(OSError):  # no THP here: plain pages still work
        region.madvise(mmap.MADV_HUGEPAGE, start, nbytes)
    return raw[start : start + nbytes]


class _Lease:
    """The base object of a leased buffer: gives its memory back when garbage collected."""

    __slots__ = ("__array_interface__", "_pool", "_whole")

    def __init__(self, pool: HostBufferPool, whole: np.ndarray, nbytes: int) -> None:
        self._pool = pool
        self._whole = whole
        self.__array_interface__ = {
            "data": (whole.ctypes.data, False),
            "shape": (nbytes,),
            "typestr": "|u1",
            "version": 3,
        }

    def __del__(self) -> None:
        self._pool._give_back(self._whole)


class HostBufferPool:
    """Power-of-two size classes of ``uint8`` host buffers, at most ``capacity`` bytes kept."""

    def __init__(self, capacity: int = 256 << 20) -> None:
        self.capacity = capacity
        self._free: dict[int, list[np.ndarray]] = {}
        self._lent: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # id -> (view, whole)
        self._kept = 0
        # Re-entrant: a lease collected by the garbage collector while this thread holds
        # the lock gives its memory back from inside it.
        self._lock = threading.RLock()

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
            whole = _host_empty(size)
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

    def lease(self, nbytes: int) -> np.ndarray:
        """Return a ``uint8`` array of ``nbytes`` that goes back to the pool when unreferenced.

        Views of it (tiles handed to the caller) keep it alive; when the last one is
        garbage, the memory is kept for the next lease (if the pool has room).
        """
        size = self._size_class(nbytes)
        with self._lock:
            free = self._free.get(size)
            if free:
                self._kept -= size
                whole = free.pop()
            else:
                whole = None
        if whole is None:
            whole = _host_empty(size)
            whole[::_PAGE] = 0  # fault the pages in now, not inside the transfer
        return np.asarray(_Lease(self, whole, nbytes))

    def _give_back(self, whole: np.ndarray) -> None:
        size = whole.shape[0]
        with self._lock:
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
