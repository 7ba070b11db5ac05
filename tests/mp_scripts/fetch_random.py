"""Randomised calls against the same invariants (fixed seeds, so a failure reproduces).

Every rank owns 300 tiles drawn from one generator per (owner, index): 0-2 elements, a few
KiB (packed), just above the pack threshold (alone) or up to 300 KB, in six dtypes, some
2-d in C or F order; each rank frees five of its own. Then rounds of one ``get`` or one
``fetch`` of up to 900 handles of any rank (duplicates, freed tiles), with ``out=`` buffers
for some, and for ``fetch`` some futures cancelled at once. Checked every time: contents,
shapes and dtypes; ``get`` raises exactly when a freed tile is asked for; every future
completes (``concurrent.futures.wait`` sees cancelled ones too); a failed or cancelled
tile's ``out`` buffer is left as the caller filled it; a delivered one is that buffer.
"""

from __future__ import annotations

import os

import numpy as np
from _mp import emit, expect

import gpupart

DTYPES = ("uint8", "int16", "float32", "float64", "complex128", "bool")
N_TILES, ROUNDS, FILL = 300, 8, 7
SEED = int(os.environ.get("GPUPART_TEST_SEED", "20261125"))

rt = gpupart.init()
rank, size = rt.rank, rt.size


def make(owner: int, i: int) -> np.ndarray:
    rng = np.random.default_rng([SEED, owner, i])
    dtype = DTYPES[rng.integers(len(DTYPES))]
    itemsize = np.dtype(dtype).itemsize
    low, high = [(0, 3), (1, 5000), (60000, 80000), (1, 300000)][rng.integers(4)]
    n = int(rng.integers(max(low // itemsize, 0), max(high // itemsize, 1) + 1))
    array = rng.integers(0, 100, n).astype(dtype)
    if n and n % 4 == 0 and rng.integers(2):
        array = array.reshape(4, n // 4)
        if rng.integers(2):
            array = np.asfortranarray(array)
    return array


def untouched(out: np.ndarray | None, like: np.ndarray) -> bool:
    """Whether a caller's ``out`` buffer (if any) still holds what the caller put there."""
    return out is None or np.array_equal(out, filled(like))


def filled(like: np.ndarray) -> np.ndarray:
    order = "F" if like.ndim > 1 and not like.flags.c_contiguous else "C"
    return np.full(like.shape, FILL, like.dtype, order=order)


mine = [make(rank, i) for i in range(N_TILES)]
table = rt.allgather([rt.put(a) for a in mine])
rng = np.random.default_rng([SEED, rank, 1])
freed = sorted(int(i) for i in rng.choice(N_TILES, 5, replace=False))
rt.barrier()
for i in freed:
    rt.free(table[rank][i])
freed_by = rt.allgather(freed)
rt.barrier()

calls = tiles = 0
for _ in range(ROUNDS):
    k = int(rng.integers(1, 900))
    picks = [(int(rng.integers(size)), int(rng.integers(N_TILES))) for _ in range(k)]
    handles = [table[owner][i] for owner, i in picks]
    want = [make(owner, i) for owner, i in picks]
    gone = [i in freed_by[owner] for owner, i in picks]
    outs = None
    if rng.integers(2):
        outs = [None if rng.integers(3) == 0 else filled(w) for w in want]
    kept = outs if outs is not None else [None] * k

    if rng.integers(2):  # one get
        try:
            got = rt.get(handles, out=outs, timeout=120)
        except gpupart.TileNotFoundError:
            expect(any(gone), "get raised although no freed tile was asked for")
            expect(all(untouched(kept[j], want[j]) for j in range(k) if gone[j]), "failed out=")
        else:
            expect(not any(gone), "get returned although a freed tile was asked for")
            for j, (g, w) in enumerate(zip(got, want, strict=True)):
                same = g.shape == w.shape and g.dtype == w.dtype and np.array_equal(g, w)
                expect(same, f"get: tile {picks[j]} differs")
    else:  # one fetch, some futures cancelled at once
        futures = rt.fetch(handles, out=outs)
        cancelled = {j for j in range(k) if rng.integers(10) == 0 and futures[j].cancel()}
        futures.wait(timeout=120)
        expect(futures.done(), "a tile hangs")
        for j, fut in enumerate(futures):
            expect(fut.cancelled() == (j in cancelled), f"tile {picks[j]}: cancelled stays so")
            if fut.cancelled():
                expect(j in cancelled and untouched(kept[j], want[j]), f"cancelled {picks[j]}")
                continue
            if gone[j]:
                expect(isinstance(fut.exception(), gpupart.TileNotFoundError), "freed tile")
                expect(untouched(kept[j], want[j]), f"failed tile {picks[j]}: out= written")
                continue
            g, w = fut.result(), want[j]
            expect(kept[j] is None or g is kept[j], "delivered in its out= buffer")
            same = g.shape == w.shape and g.dtype == w.dtype and np.array_equal(g, w)
            expect(same, f"fetch: tile {picks[j]} differs")
    calls += 1
    tiles += k

rt.barrier()
emit("done", rank=rank, size=size, calls=calls, tiles=tiles)
rt.close()
