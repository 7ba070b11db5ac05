"""Rank ``STUCK`` (argv[1]) stops itself (SIGSTOP) while the others call a barrier.

The others must time out (3 s) with an error that names the stuck rank, on every rank, not
a tree neighbour; the test continues the stopped rank afterwards. DELAYS (argv[2], optional)
are the seconds each rank waits before entering the barrier, comma-separated by rank
(default: rank 0 1.0, the others 0.5). Emits ``@timeout``.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from _mp import emit

import gpupart

stuck = int(sys.argv[1])
rt = gpupart.init(timeout=60)
rank = rt.rank
rt.barrier()
if rank == stuck:
    emit("stopping", rank=rank, pid=os.getpid())
    os.kill(os.getpid(), signal.SIGSTOP)
    os._exit(0)  # continued by the test: leave without more collectives
# By default rank 1 enters first and so times out first, waiting for the result rank 0
# gathers: it must still name the stuck rank, which only rank 0 knows.
delays = [float(d) for d in sys.argv[2].split(",")] if len(sys.argv) > 2 else None
time.sleep(delays[rank] if delays else 1.0 if rank == 0 else 0.5)
started = time.monotonic()
try:
    rt.barrier(timeout=3)
except gpupart.GpupartError as exc:
    emit(
        "timeout",
        rank=rank,
        error=type(exc).__name__,
        message=str(exc),
        seconds=round(time.monotonic() - started, 2),
    )
os._exit(0)
