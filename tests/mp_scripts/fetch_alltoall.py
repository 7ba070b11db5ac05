"""All-to-all and ring fetches of tiles of many dtypes, shapes and sizes; contents verified.

Works at any job size. Emits ``@job`` (who am I) and ``@done`` (what was checked).
"""

from __future__ import annotations

import concurrent.futures

import numpy as np
from _mp import SPECS, check_tile, emit, expect, expected, make_tile

import gpupart

rt = gpupart.init()
rank, size = rt.rank, rt.size
emit(
    "job",
    rank=rank,
    size=size,
    launcher=rt.launcher,
    job_id=rt.job_id,
    peers=[loc.rank for loc in rt.peers],
    host=rt.host,
    device=rt.device,
)
expect(gpupart.runtime() is rt, "gpupart.runtime() is the runtime init returned")
expect(len(rt.peers) == size and rt.peers[rank] == rt.location, "peers[rank] is this location")

originals = [make_tile(rank, i) for i in range(len(SPECS))]
handles = [rt.put(a) for a in originals]
for i, (h, (dtype, shape, layout)) in enumerate(zip(handles, SPECS, strict=True)):
    want = expected(rank, i)
    expect(h.owner == rank and h.job == rt.job_id, f"handle {i}: owner/job")
    expect(h.shape == shape and np.dtype(h.dtype) == np.dtype(dtype), f"handle {i}: shape/dtype")
    expect(h.nbytes == want.nbytes, f"handle {i}: nbytes {h.nbytes} != {want.nbytes}")
    if layout == "F" and want.size > 1:
        expect(h.order == "F", f"handle {i}: F order kept, found {h.order}")
    # A local handle resolves to the tile itself: no copy (a non-contiguous input was copied).
    local = rt.get(h)
    if layout == "strided":
        expect(local is not originals[i], f"handle {i}: non-contiguous input must be copied")
        expect(not np.shares_memory(local, originals[i]), f"handle {i}: copy shares memory")
    else:
        expect(local is originals[i], f"handle {i}: local get must return the tile itself")
    check_tile(f"local tile {i}", local, want, "F" if layout == "F" else "C")

table = rt.allgather(handles)
expect([t[0].owner for t in table] == list(range(size)), "allgather is ordered by rank")

# All-to-all: one get naming every tile of every rank (remote ones in one batch per owner).
flat = [h for owner_handles in table for h in owner_handles]
where = [(owner, i) for owner in range(size) for i in range(len(SPECS))]
got = rt.get(flat, timeout=120)
expect(isinstance(got, list) and len(got) == len(flat), "get of a list returns a list")
for h, arr, (owner, i) in zip(flat, got, where, strict=True):
    check_tile(f"tile {i} of rank {owner}", arr, expected(owner, i), h.order)
    if owner == rank and SPECS[i][2] != "strided":
        expect(arr is originals[i], f"tile {i}: own tile fetched in a batch is not copied")

# Ring: futures for the right and left neighbours' tiles, waited on together.
right, left = (rank + 1) % size, (rank - 1) % size
ring = table[right] + table[left]
ring_where = [(right, i) for i in range(len(SPECS))] + [(left, i) for i in range(len(SPECS))]
transfer = rt.fetch(ring)
futures = transfer.futures()  # standard futures, for code that waits on them
expect(all(isinstance(f, concurrent.futures.Future) for f in futures), "fetch gives Futures")
done, pending = concurrent.futures.wait(futures, timeout=120)
expect(not pending, f"{len(pending)} ring fetches still pending after 120 s")
expect(transfer.done(), "the transfer is done once its futures are")
for h, fut, (owner, i) in zip(ring, futures, ring_where, strict=True):
    check_tile(f"ring tile {i} of rank {owner}", fut.result(), expected(owner, i), h.order)

# A single handle gives a single array; the 8 MiB tile checked once more on its own.
big = len(SPECS) - 1
single = rt.get(table[right][big], timeout=120)
check_tile("single get", single, expected(right, big))

rt.barrier()  # nobody frees (closes) while another rank may still fetch
emit("done", rank=rank, size=size, tiles=len(flat) + len(ring) + 1)
rt.close()
