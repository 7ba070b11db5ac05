"""A get that times out while its owner is stopped (SIGSTOP) leaves its out= buffers untouched.

Rank 1 owns a 4 MiB tile (sent alone) and two small tiles (packed). Rank 0 stops rank 1,
gets the three into sentinel-filled ``out`` buffers with a 1 s timeout (it must raise
CommTimeoutError), continues rank 1, waits while rank 1 sends what it was asked for, and
checks that no byte landed in the buffers; then a new get works. Rank 1 reports how many
operations its progress engine still holds once everything has settled (late messages must
have been drained, so its sends completed). Two ranks exactly.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
from _mp import emit, expect, raises

import gpupart

rt = gpupart.init(timeout=60)
rank = rt.rank
tiles = [np.full(4 << 20, 7, np.uint8), np.full(100, 8, np.uint8), np.full(200, 9, np.uint8)]
handles = rt.allgather([rt.put(t) for t in tiles])[1]
pids = rt.allgather(os.getpid())
rt.barrier()
if rank == 0:
    outs = [np.full(t.shape, 1, np.uint8) for t in tiles]
    os.kill(pids[1], signal.SIGSTOP)
    try:
        raises(gpupart.CommTimeoutError, lambda: rt.get(handles, out=outs, timeout=1.0))
    finally:
        os.kill(pids[1], signal.SIGCONT)
    time.sleep(3.0)  # rank 1 now answers the request that timed out
    untouched = all(bool((o == 1).all()) for o in outs)
    got = rt.get(handles, timeout=60)
    expect(all(np.array_equal(g, t) for g, t in zip(got, tiles, strict=True)), "a new get works")
    emit("after", rank=0, untouched=untouched)
rt.barrier()
if rank == 1:
    time.sleep(0.5)
    emit("owner", rank=1, in_flight=len(rt._engine._ops) + len(rt._engine._new_ops))
rt.barrier()
emit("done", rank=rank, size=rt.size)
rt.close()
