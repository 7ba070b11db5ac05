"""Rank ``VICTIM`` (argv[1]) SIGKILLs itself while the others read a large tile from it.

Every rank puts one tile of SIZE bytes (argv[2]); the others fetch the victim's tile in a loop
(``out=`` buffer reused). The victim dies ``DELAY`` (argv[3]) seconds after the barrier, in
the middle of someone's transfer. Survivors must raise PeerLostError naming the victim (an
abort or a hang fails the test); they emit ``@lost`` and exit 0.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import numpy as np
from _mp import emit

import gpupart

victim, size, delay = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
rt = gpupart.init(timeout=60, fetch_timeout=60)
rank = rt.rank
tile = np.full(size, rank + 1, dtype=np.uint8)
handles = rt.allgather(rt.put(tile))
rt.barrier()
if rank == victim:
    threading.Timer(delay, lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
    time.sleep(60)  # serving from the progress thread until the timer fires
out = np.empty(size, dtype=np.uint8)
fetched, error, started = 0, None, time.monotonic()
try:
    while True:
        rt.get(handles[victim], out=out, timeout=60)
        fetched += 1
except gpupart.GpupartError as exc:
    error = exc
emit(
    "lost",
    rank=rank,
    fetched=fetched,
    error=type(error).__name__,
    lost_rank=getattr(error, "rank", None),
    message=str(error),
    seconds=round(time.monotonic() - started, 2),
)
rt.close()
