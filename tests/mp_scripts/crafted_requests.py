"""Rank 0 sends requests that announce far more than their tiles need; rank 1 must refuse.

Rank 0 runs with a huge pack threshold, so its planner packs a forged 512 MiB handle (a tile
rank 1 does not have) with a real tile: rank 1 must answer with a rejection, at once, without
gathering 512 MiB. Then a request naming a 2**62-byte item: a rejection too, not silence.
Rank 1 reports its peak memory before and after (``@memory``). Two ranks exactly.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
from _mp import emit, expect, raises

import gpupart
from gpupart.tiles import wire


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


rank = int(__import__("os").environ["GPUPART_RANK"])
options = {"pack_threshold": 1 << 30, "pack_limit": 1 << 31} if rank == 0 else {}
rt = gpupart.init(fetch_timeout=60, **options)
expect(rt.size == 2, "two ranks")
tile = rt.put(np.arange(100, dtype=np.uint8))
handles = rt.allgather(tile)
before = peak_rss_mib()
rt.barrier()
if rank == 0:
    real = handles[1]
    forged = dataclasses.replace(real, tile_id=10**9, shape=(512 << 20,), nbytes=512 << 20)
    started = time.monotonic()
    raises(
        gpupart.FetchError, lambda: rt.get([real, forged], timeout=60), "rejected", "need at most"
    )
    expect(time.monotonic() - started < 30, "the rejection came at once")
    real_encode = wire.encode_request

    def huge(items, lengths, *args):
        items = items.copy()
        items["nbytes"] = 1 << 62
        return real_encode(items, lengths, *args)

    wire.encode_request = huge
    try:
        raises(gpupart.FetchError, lambda: rt.get(real, timeout=60), "rejected", "2**62")
    finally:
        wire.encode_request = real_encode
    expect(np.array_equal(rt.get(real), np.arange(100, dtype=np.uint8)), "still served")
rt.barrier()
if rank == 1:
    emit("memory", rank=1, before=before, after=peak_rss_mib())
emit("done", rank=rank, size=rt.size)
rt.close()
