"""The host staging-buffer pool used for packs."""

from __future__ import annotations

import numpy as np

from gpupart.tiles.pool import HostBufferPool


def test_buffers_are_reused_by_size_class():
    pool = HostBufferPool(capacity=1 << 20)
    a = pool.acquire(70_000)
    assert a.shape == (70_000,) and a.dtype == np.uint8
    pool.release(a)
    b = pool.acquire(100_000)  # same 128 KiB class
    assert np.shares_memory(a, b)
    c = pool.acquire(100_000)  # the class is empty again: a new allocation
    assert not np.shares_memory(b, c)


def test_capacity_bounds_what_is_kept_and_foreign_buffers_are_ignored():
    pool = HostBufferPool(capacity=1 << 17)
    first, second = pool.acquire(1 << 17), pool.acquire(1 << 17)
    pool.release(first)
    pool.release(second)  # over capacity: dropped
    again = pool.acquire(1 << 17)
    assert np.shares_memory(again, first)
    assert not np.shares_memory(pool.acquire(1 << 17), second)
    pool.release(np.empty(1000, dtype=np.uint8))  # not a size class of ours: ignored
    pool.release(again)
    pool.clear()
    assert not np.shares_memory(pool.acquire(1 << 17), first)
