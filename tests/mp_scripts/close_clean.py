"""``close()`` leaves no threads, a second close is a no-op, a closed runtime refuses work.

Works at any job size. Emits ``@threads`` (names while open and after close), then ``@done``.
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

rt.close()
after = [t.name for t in threading.enumerate()]
emit("threads", rank=rank, running=running, after=after)
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
