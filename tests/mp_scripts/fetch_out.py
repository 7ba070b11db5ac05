"""``out=`` buffers: results land in the given arrays; bad buffers and handles fail on the caller.

Works at any job size (at size 1 the neighbours are this rank: ``out`` then copies).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from _mp import SPECS, check_tile, emit, expect, expected, make_tile, raises

import gpupart

rt = gpupart.init()
rank, size = rt.rank, rt.size
tiles = [make_tile(rank, i) for i in range(len(SPECS))]
table = rt.allgather([rt.put(a) for a in tiles])
right, left = (rank + 1) % size, (rank - 1) % size
n = len(SPECS)


def buffers(handles):
    return [np.empty(h.shape, np.dtype(h.dtype), order=h.order) for h in handles]


# get(out=...): every result *is* the buffer given for it, filled with the tile.
outs = buffers(table[right])
before = rt.bytes_fetched
got = rt.get(table[right], out=outs, timeout=120)
moved = sum(h.nbytes for h in table[right]) if right != rank else 0
expect(rt.bytes_fetched - before == moved, f"bytes_fetched grew by {rt.bytes_fetched - before}")
for i, (arr, buf) in enumerate(zip(got, outs, strict=True)):
    expect(arr is buf, f"get: result {i} is not out[{i}]")
    check_tile(f"out[{i}] from rank {right}", buf, expected(right, i), table[right][i].order)

# fetch(out=...): the futures' results are the buffers; None entries get new arrays.
outs = buffers(table[left])
outs[::3] = [None] * len(outs[::3])
futures = rt.fetch(table[left], out=outs)
futures.wait(timeout=120)
expect(futures.done(), "fetch(out=...) tiles still pending after 120 s")
for i, (future, buf) in enumerate(zip(futures, outs, strict=True)):
    if buf is not None:
        expect(future.result() is buf, f"fetch: result {i} is not out[{i}]")
    check_tile(
        f"fetched out[{i}] from rank {left}",
        future.result(),
        expected(left, i),
        table[left][i].order,
    )

# A single handle with a single buffer; an own tile with a buffer is copied into it.
buf = np.empty((1024, 1024))
expect(rt.get(table[right][n - 1], out=buf) is buf, "single get(out=buf) returns buf")
check_tile("single out", buf, expected(right, n - 1))
own = table[rank][5]
buf = np.zeros(own.shape, np.dtype(own.dtype))
expect(rt.get(own, out=buf) is buf, "own tile with out= lands in out")
expect(not np.shares_memory(buf, tiles[5]), "own tile with out= is a copy")
check_tile("own tile copied to out", buf, expected(rank, 5))

# Bad buffers: ValueError/TypeError naming out[i], raised on the caller before anything is sent.
handles = [table[right][4], table[right][5], table[right][7]]  # bool (17,), int8 (1000,), F (6, 9)
good = buffers(handles)
readonly = np.empty((1000,), np.int8)
readonly.setflags(write=False)
bad_cases = [
    (ValueError, [good[0], np.empty((999,), np.int8), good[2]], ("out[1]", "shape")),
    (ValueError, [good[0], np.empty((1000,), np.uint8), good[2]], ("out[1]", "dtype")),
    (ValueError, [good[0], good[1], np.empty((6, 9), order="C")], ("out[2]", "F-contiguous")),
    (ValueError, [good[0], readonly, good[2]], ("out[1]", "writable")),
    (ValueError, [good[0], np.empty((2000,), np.int8)[::2], good[2]], ("out[1]", "contiguous")),
    (ValueError, [good[0], good[1]], ("out", "3 buffers")),
    (TypeError, [good[0], [0] * 1000, good[2]], ("out[1]",)),
]
for exc_type, out, needles in bad_cases:
    raises(exc_type, lambda out=out: rt.get(handles, out=out), *needles)
    raises(exc_type, lambda out=out: rt.fetch(handles, out=out), *needles)

# Bad handles: errors name handles[i].
raises(TypeError, lambda: rt.get([handles[0], "not a handle"]), "handles[1]")
raises(TypeError, lambda: rt.fetch([None]), "handles[0]")
foreign = dataclasses.replace(handles[0], job="another-job")
raises(ValueError, lambda: rt.get([handles[0], handles[1], foreign]), "handles[2]", "another-job")
stranger = dataclasses.replace(handles[0], owner=size)
raises(ValueError, lambda: rt.fetch([stranger]), "handles[0].owner")

# Nothing above was sent: the runtime works, and the good buffers are still usable.
got = rt.get(handles, out=good, timeout=120)
expect(all(a is b for a, b in zip(got, good, strict=True)), "get after errors uses out")
for (i, h), arr in zip(((4, handles[0]), (5, handles[1]), (7, handles[2])), got, strict=True):
    check_tile(f"after errors, tile {i}", arr, expected(right, i), h.order)

rt.barrier()
emit("done", rank=rank, size=size, bad_cases=len(bad_cases))
rt.close()
