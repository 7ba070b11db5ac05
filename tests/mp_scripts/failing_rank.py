"""Rank ``BAD`` (argv[1]) raises while the others wait on it.

MODE (argv[2]): ``barrier`` (the others wait in a barrier) or ``fetch`` (the others fetch a
large tile from the failing rank in a loop when it raises). STYLE (argv[3], default
``with``): the ranks run inside ``with gpupart.init()``, or (``atexit``) without it, so the
error ends the program uncaught and the runtime is closed at exit. Survivors emit ``@lost``
with the error they got (and how long after the failure it came) and re-raise; the failing
rank emits ``@failing`` with the time it raised.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from _mp import emit

import gpupart

bad, mode = int(sys.argv[1]), sys.argv[2]
style = sys.argv[3] if len(sys.argv) > 3 else "with"


def run(rt: gpupart.Runtime) -> None:
    rank = rt.rank
    big = rt.put(np.ones(8 << 20, dtype=np.uint8))  # 8 MiB: a transfer that takes a while
    handles = rt.allgather(big)
    rt.barrier()
    if rank == bad:
        if mode == "fetch":
            time.sleep(1.0)  # the others are fetching from this rank by now
        emit("failing", rank=rank, at=time.time(), pid=os.getpid())
        raise ValueError(f"rank {rank} cannot go on")
    try:
        if mode == "barrier":
            rt.barrier()
        else:
            while True:
                rt.get(handles[bad], timeout=60)
    except gpupart.GpupartError as exc:
        emit("lost", rank=rank, at=time.time(), error=type(exc).__name__, message=str(exc))
        raise


options = {"timeout": 60, "fetch_timeout": 60, "close_timeout": 10}
if style == "with":
    with gpupart.init(**options) as runtime:
        run(runtime)
else:
    run(gpupart.init(**options))
