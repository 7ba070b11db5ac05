"""Ranks that call different collectives (or the same with other arguments) all fail fast.

Each case: rank ``size - 1`` calls something else than the others; every rank must raise
CollectiveError naming both calls well before the timeout (60 s), and a matching barrier
must work right after. Also: an object that cannot be sent fails every rank at once.
Emits ``@case`` per rank and case with the message and how long it took.
"""

from __future__ import annotations

import time

import numpy as np
from _mp import emit, expect

import gpupart

rt = gpupart.init(timeout=60)
rank, size = rt.rank, rt.size
odd = rank == size - 1

CASES = {
    "barrier_vs_allgather": (lambda: rt.barrier(), lambda: rt.allgather(rank)),
    "barrier_vs_alltoall": (lambda: rt.barrier(), lambda: rt.alltoall([rank] * size)),
    "alltoall_vs_allgather": (lambda: rt.alltoall([rank] * size), lambda: rt.allgather(rank)),
    "broadcast_roots": (lambda: rt.broadcast(rank, root=0), lambda: rt.broadcast(rank, root=1)),
    "allreduce_ops": (
        lambda: rt.allreduce(np.ones(3), op="sum"),
        lambda: rt.allreduce(np.ones(3), op="max"),
    ),
    "unsendable": (lambda: rt.allgather(rank), lambda: rt.allgather(lambda: rank)),
    "unsendable_alltoall": (
        lambda: rt.alltoall([rank] * size),
        lambda: rt.alltoall([object()] * size),
    ),
}
for name, (usual, other) in CASES.items():
    started = time.monotonic()
    try:
        (other if odd else usual)()
    except gpupart.CollectiveError as exc:
        emit("case", rank=rank, case=name, message=str(exc), seconds=time.monotonic() - started)
    else:
        emit("case", rank=rank, case=name, message=None, seconds=time.monotonic() - started)
    rt.barrier(timeout=60)  # in step again
expect(rt.allgather(rank) == list(range(size)), "collectives work after the mismatches")
emit("done", rank=rank, size=size)
rt.close()
