"""One rank dies (``os._exit``) in the middle of a parquet read or write; the others must raise.

Usage: ``io_killed.py MODE VICTIM DATA WORK``. ``DATA`` holds a parquet dataset (the test
writes it); MODE says where the victim dies:

* ``plan``: rank 0 (the victim must be 0) dies while it reads the footers: the others wait
  for its broadcast;
* ``read``: the victim dies reading its row groups: the others wait in the all-gather of the
  outcomes;
* ``write``: every rank writes the same frame to ``WORK/out``; the victim writes its first
  file into the temporary directory and dies.

The survivors emit ``@lost`` with the error they got (they exit 0 whatever happened: the test
judges the records and what is left under ``WORK``).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "mp_scripts"))
from _mp import emit
from gpupart.containers import frame_io

import gpupart

mode, victim, data, work = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
rt = gpupart.init(timeout=60)
rank, size = rt.rank, rt.size


def dying(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, but the process exits as soon as it has been called once."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if mode == "write":
            fn(*args, **kwargs)
        emit("dying", rank=rank)
        sys.stdout.flush()
        os._exit(3)

    return wrapper


if rank == victim:
    if mode == "plan":
        frame_io._footers = dying(frame_io._footers)
    elif mode == "read":
        frame_io._read_mine = dying(frame_io._read_mine)
    else:
        pq.write_table = dying(pq.write_table)

started = time.monotonic()
error: Exception | None = None
try:
    if mode == "write":
        frame = pd.DataFrame({"k": np.arange(1000) % 7, "x": np.linspace(0, 1, 1000)})
        gpupart.from_pandas(frame, npartitions=2 * size).to_parquet(work / "out")
    else:
        gpupart.read_parquet(data)
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
