"""One rank dies (``os._exit``) in the middle of a frame shuffle; the others must raise.

Usage: ``shuffle_killed.py OP VICTIM``. OP is ``groupby``, ``merge`` or ``sort``: every rank
builds the same frames, the victim dies as it enters the exchange that moves the rows (its
pieces never offered), the survivors are inside that exchange waiting for it. They emit
``@lost`` with the error they got and exit 0 (the test judges the records).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "mp_scripts"))
from _mp import emit

import gpupart

op, victim = sys.argv[1], int(sys.argv[2])
rt = gpupart.init(timeout=60)
rank, size = rt.rank, rt.size
n = 20_000
frame = pd.DataFrame({"k": np.arange(n) % 97, "x": np.linspace(0.0, 1.0, n)})
left = gpupart.from_pandas(frame, npartitions=2 * size)
right = gpupart.from_pandas(pd.DataFrame({"k": np.arange(97), "w": np.arange(97.0)}))
rt.barrier()

if rank == victim:

    def dying_exchange(pieces, timeout=None):
        emit("dying", rank=rank)
        sys.stdout.flush()
        os._exit(3)

    rt.exchange = dying_exchange  # the shuffle's one exchange: the victim never offers

started = time.monotonic()
error: Exception | None = None
try:
    if op == "groupby":
        left.groupby("k").agg(total=("x", "sum"))
    elif op == "merge":
        left.merge(right, on="k", broadcast=False)
    else:
        left.sort_values("x", ascending=False)
except Exception as exc:  # the test checks the type
    error = exc
emit(
    "lost",
    rank=rank,
    error=type(error).__name__ if error is not None else None,
    lost_rank=getattr(error, "rank", None),
    message=str(error),
    elapsed=round(time.monotonic() - started, 3),
)
rt.close()
