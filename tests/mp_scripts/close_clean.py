"""``close()`` leaves no threads, a second close is a no-op, a closed runtime refuses work.

Works at any job size. Emits ``@threads`` (names while open and after close), ``@kept`` (bytes
the runtime keeps for reuse, and tiles, before and after close), then ``@done``.
"""

from __future__ import annotations

import threading

import numpy as np
from _mp import emit, expect, raises

import gpupart

expect(threading.enumerate() == [threading.main_thread()], "threads before init")
raises(gpupart.NotInitializedError, gpupart.runtime, "gpupart.init()")
rt = gpupart.init()
rank, size = rt.rank, rt.size
expect(gpupart.init() is rt and gpupart.runtime() is rt, "init is idempotent")

h = rt.put(np.full(100_000, rank, dtype=np.int32))  # big enough to be sent alone
table = rt.allgather(h)
got = rt.get(table, timeout=60)
expect([int(a[0]) for a in got] == list(range(size)), "fetched every rank's tile")
rt.barrier()
running = sorted(t.name for t in threading.enumerate())


def kept() -> dict[str, int]:
    """Bytes the runtime holds for reuse: received packs, the owner's packs, exchange results."""
    return {
        "receive": rt._fetcher._receive_pool.kept,
        "serve": 0 if rt._server is None else rt._server.pool._blocks.kept,
        "exchange": rt._exchange._pool.kept,
        "tiles": len(rt._store),
    }


# Fill every pool: 40 packed tiles (2 MB, one pack) from the next rank, an exchange of 2 MiB
# pieces; the results are dropped, so their memory goes back to the pools.
small = [np.full(50_000, i, np.uint8) for i in range(40)]  # separate arrays: gathered
packed = rt.allgather([rt.put(a) for a in small])
got = rt.get(packed[(rank + 1) % size], timeout=60)
expect([int(a[0]) for a in got] == list(range(40)), "fetched the packed tiles")
del got
pieces = rt.exchange([np.full(2 << 20, rank, np.uint8) for _ in range(size)], timeout=60)
expect([int(p[0]) for p in pieces] == list(range(size)), "exchanged")
del pieces
rt.barrier()  # every owner has sent its packs
before = kept()

rt.close()
after = [t.name for t in threading.enumerate()]
emit("threads", rank=rank, running=running, after=after)
emit("kept", rank=rank, before=before, after=kept())
expect(rt.closed, "closed after close()")
expect(threading.enumerate() == [threading.main_thread()], f"threads left by close: {after}")
rt.close()  # idempotent
expect(threading.enumerate() == [threading.main_thread()], "second close started threads")

raises(gpupart.NotInitializedError, gpupart.runtime, "gpupart.init()")
for call in (
    lambda: rt.put(np.zeros(3)),
    lambda: rt.get(h),
    lambda: rt.fetch([h]),
    lambda: rt.free(h),
    rt.barrier,
    lambda: rt.allgather(1),
    lambda: rt.broadcast(1),
    lambda: rt.allreduce(1),
):
    raises(gpupart.NotInitializedError, call, "closed")
expect("closed" in repr(rt), f"repr says closed: {rt!r}")

emit("done", rank=rank, size=size)
