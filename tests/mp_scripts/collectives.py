"""Barrier, broadcast from every root, allgather of mixed objects, allreduce of every op.

Works at any job size; disagreements between ranks need two ranks and are skipped at size 1.
"""

from __future__ import annotations

import math

import numpy as np
from _mp import emit, expect, raises

import gpupart

rt = gpupart.init()
rank, size = rt.rank, rt.size

for _ in range(3):
    rt.barrier()
rt.barrier(timeout=60)

# broadcast: every rank is root once; non-root ranks pass a decoy that must not win.
for root in range(size):
    mine = {"root": root, "payload": np.arange(root + 3) * 1.5, "text": "é" * root}
    obj = mine if rank == root else {"decoy": rank}
    got = rt.broadcast(obj, root=root)
    expect(got.keys() == mine.keys(), f"broadcast from {root}: got {got!r}")
    expect(got["root"] == root and got["text"] == mine["text"], f"broadcast from {root}")
    expect(np.array_equal(got["payload"], mine["payload"]), f"broadcast array from {root}")
raises(ValueError, lambda: rt.broadcast(1, root=size), "root")
raises(ValueError, lambda: rt.broadcast(1, root=-1), "root")
# A root object that cannot be pickled fails the broadcast on every rank, not only the root.
root = size - 1
raises(
    gpupart.CollectiveError,
    lambda: rt.broadcast(lambda: 0 if rank == root else None, root=root),
    f"rank {root}",
)
expect(rt.broadcast("still in step", root=0) == "still in step", "broadcast after an error")


# allgather of mixed objects, ordered by rank.
def contribution(r: int) -> object:
    return (r, "x" * r, np.arange(r, dtype=np.int16), {"nested": [r, None, 2.5]}, None)


gathered = rt.allgather(contribution(rank))
expect(isinstance(gathered, list) and len(gathered) == size, "allgather gives a list by rank")
for r, item in enumerate(gathered):
    want = contribution(r)
    expect(
        item[0] == r and item[1] == want[1] and item[3] == want[3] and item[4] is None,
        f"allgather item {r}: {item!r}",
    )
    expect(np.array_equal(item[2], want[2]) and item[2].dtype == np.int16, f"allgather array {r}")
expect(rt.allgather(rt.location) == rt.peers, "allgather of locations equals peers")

# allreduce of arrays and scalars, every op.
base = np.arange(6, dtype=np.float64).reshape(2, 3)
ranks = np.arange(size)
mine = base + rank
cases = {
    "sum": sum(base + r for r in ranks),
    "prod": math.prod(base + r for r in ranks),
    "min": base,
    "max": base + size - 1,
}
for op, want in cases.items():
    got = rt.allreduce(mine, op=op)
    expect(isinstance(got, np.ndarray) and got.dtype == mine.dtype, f"allreduce {op} type")
    expect(np.array_equal(got, want), f"allreduce {op}: {got} != {want}")
expect(np.array_equal(mine, base + rank), "allreduce leaves its input alone")
got = rt.allreduce(np.array([rank, -rank], dtype=np.int32), op="max")
expect(got.dtype == np.int32 and got.tolist() == [size - 1, 0], f"int max {got}")
got = rt.allreduce(rank + 1, op="prod")
expect(type(got) is int and got == math.factorial(size), f"int prod {got!r}")
got = rt.allreduce(float(rank), op="sum")
expect(type(got) is float and got == sum(range(size)), f"float sum {got!r}")
got = rt.allreduce(np.float32(rank), op="min")
expect(isinstance(got, np.float32) and got == 0, f"np.float32 min {got!r}")
got = rt.allreduce(complex(rank, 1), op="sum")
expect(got == complex(sum(range(size)), size), f"complex sum {got!r}")
got = rt.allreduce(np.array(rank % 2 == 0), op="min")
expect(got.dtype == np.bool_ and bool(got) == (size == 1), f"bool min {got!r}")

raises(ValueError, lambda: rt.allreduce(mine, op="mean"), "op", "mean")
raises(TypeError, lambda: rt.allreduce("text"), "array")

# Ranks that disagree: the same CollectiveError on every rank, and the next collective works.
if size > 1:
    err = raises(gpupart.CollectiveError, lambda: rt.allreduce(np.zeros(rank + 1)), "shape")
    emit("mismatch", rank=rank, message=str(err))
    raises(
        gpupart.CollectiveError,
        lambda: rt.allreduce(np.zeros(3, dtype=np.float32 if rank else np.float64)),
        "dtype",
    )
expect(rt.allreduce(np.ones(2), op="sum").tolist() == [size, size], "allreduce after errors")
rt.barrier()

emit("done", rank=rank, size=size)
rt.close()
