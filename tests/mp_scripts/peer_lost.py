"""One rank SIGKILLs itself while the others wait on it; the others must hear who died.

Usage: ``peer_lost.py MODE VICTIM`` with MODE ``get`` (the survivors wait in a ``get`` of a
tile the victim never sends: its ready event never completes) or ``barrier`` (the survivors
wait in a barrier the victim never enters). Survivors emit ``@lost`` with the error they got
and close their runtime; they exit 0 whatever happened, the test judges the records.
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

mode, victim = sys.argv[1], int(sys.argv[2])
rt = gpupart.init(timeout=90, fetch_timeout=90)
rank, size = rt.rank, rt.size


class NeverReady:
    """A tile event that never completes; records that a consumer's request reached it."""

    def __init__(self) -> None:
        self.asked = threading.Event()

    @property
    def done(self) -> bool:
        self.asked.set()  # polled by the owner's server once the request has arrived
        return False


# One stalled tile per consumer, so the victim knows each survivor's request has arrived.
events = {r: NeverReady() for r in range(size) if r != rank}
handles = {}
for consumer, event in events.items():
    handles[consumer] = rt.put(np.arange(1000, dtype=np.float64))
    rt._store.attach_event(handles[consumer].tile_id, event)
table = rt.allgather(handles)
rt.barrier()

if rank == victim:
    if mode == "get":
        for event in events.values():  # wait until every survivor is in its get
            event.asked.wait(60)
    else:
        time.sleep(1.0)  # let the survivors enter the barrier
    emit("dying", rank=rank, mode=mode)
    os.kill(os.getpid(), signal.SIGKILL)

started = time.monotonic()
error = None
try:
    if mode == "get":
        rt.get(table[victim][rank], timeout=90)
    else:
        rt.barrier(timeout=90)
except Exception as exc:  # the test checks the type and the rank
    error = exc
elapsed = time.monotonic() - started
emit(
    "lost",
    rank=rank,
    mode=mode,
    error=type(error).__name__ if error is not None else None,
    lost_rank=getattr(error, "rank", None),
    message=str(error),
    elapsed=round(elapsed, 3),
)
close_started = time.monotonic()
rt.close()
emit(
    "closed",
    rank=rank,
    seconds=round(time.monotonic() - close_started, 3),
    threads=[t.name for t in threading.enumerate()],
)
