"""Many fetches in flight: 500 ``fetch`` calls outstanding before any wait; 5,000 tiles per get.

Works at any job size (at size 1 every handle is local).
"""

from __future__ import annotations

import math
import time

import numpy as np
from _mp import check_tile, emit, expect, small_tile, values

import gpupart

N_FETCHES = 500
N_SMALL = 5000
N_LARGE = 4
LARGE_SHAPE = (100, 130)  # ~101 KiB of float64: sent alone

rt = gpupart.init()
rank, size = rt.rank, rt.size
per_rank = math.ceil(N_SMALL / size)
small = [small_tile(rank, i) for i in range(per_rank)]
large = [values(rank, 1000 + i, "float64", LARGE_SHAPE) for i in range(N_LARGE)]
small_handles = [rt.put(a) for a in small]
large_handles = [rt.put(a) for a in large]
table = rt.allgather((small_handles, large_handles))

# 500 separate fetch calls (one request each) to every peer in turn, mixing small and large
# tiles, all outstanding before the first wait.
peers = [p for p in range(size) if p != rank] or [rank]
futures, wanted = [], []
for k in range(N_FETCHES):
    owner = peers[k % len(peers)]
    if k % 50 == 7:
        h = table[owner][1][k % N_LARGE]
        want = values(owner, 1000 + k % N_LARGE, "float64", LARGE_SHAPE)
    else:
        index = (k * 37) % per_rank
        h = table[owner][0][index]
        want = small_tile(owner, index)
    (future,) = rt.fetch(h)  # a transfer of one tile
    futures.append(future)
    wanted.append(want)
deadline = time.monotonic() + 180
for future in futures:
    future.exception(timeout=max(deadline - time.monotonic(), 0))
pending = [f for f in futures if not f.done()]
expect(not pending, f"{len(pending)} of {N_FETCHES} fetches still pending after 180 s")
for k, (future, want) in enumerate(zip(futures, wanted, strict=True)):
    check_tile(f"fetch #{k}", future.result(), want)

# One get of 5,000 small tiles spread over every rank (thousands per owner, packed).
order = [(owner, i) for i in range(per_rank) for owner in range(size)][:N_SMALL]
handles = [table[owner][0][i] for owner, i in order]
got = rt.get(handles, timeout=180)
expect(len(got) == N_SMALL, f"get returned {len(got)} arrays for {N_SMALL} handles")
for (owner, i), arr in zip(order, got, strict=True):
    check_tile(f"small tile {i} of rank {owner}", arr, small_tile(owner, i))
    if owner == rank:
        expect(arr is small[i], "an own tile is returned without a copy")

# The same 5,000 again through one fetch call (futures), plus the large tiles of everyone.
everything = handles + [h for _, lh in table for h in lh]
futures = rt.fetch(everything)
futures.wait(timeout=180)
pending = [f for f in futures if not f.done()]
expect(not pending, f"{len(pending)} tiles of one big fetch still pending")
futures = list(futures)
for (owner, i), future in zip(order, futures[:N_SMALL], strict=True):
    check_tile(f"small tile {i} of rank {owner} (fetch)", future.result(), small_tile(owner, i))
for j, future in enumerate(futures[N_SMALL:]):
    owner, i = divmod(j, N_LARGE)
    want = values(owner, 1000 + i, "float64", LARGE_SHAPE)
    check_tile(f"large tile {i} of rank {owner}", future.result(), want)
expect(
    all(
        np.array_equal(a, values(rank, 1000 + i, "float64", LARGE_SHAPE))
        for i, a in enumerate(large)
    ),
    "own large tiles intact after being served",
)

rt.barrier()
emit("done", rank=rank, size=size, fetches=N_FETCHES, small=N_SMALL)
rt.close()
