"""Rank 0 closes while rank 1 stays in the job without closing: close() keeps close_timeout.

Rank 0 emits ``@closed`` with how long its close took; rank 1 leaves abruptly afterwards.
"""

from __future__ import annotations

import os
import time

from _mp import emit

import gpupart

rt = gpupart.init(close_timeout=2.0)
rt.barrier()
if rt.rank == 0:
    started = time.monotonic()
    rt.close()
    emit("closed", rank=0, seconds=round(time.monotonic() - started, 3))
else:
    time.sleep(8)
os._exit(0)
