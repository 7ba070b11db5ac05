"""Rank ``BAD`` (argv[1]) joins with a wrong job token; it must be refused, not hang.

Every rank emits ``@joined`` or ``@failed`` with its error; a failure re-raises (non-zero exit).
"""

from __future__ import annotations

import os
import sys

from _mp import emit

import gpupart

bad = int(sys.argv[1])
rank = int(os.environ["GPUPART_RANK"])
if rank == bad:
    os.environ["GPUPART_JOB_TOKEN"] = "5a" * 32
try:
    rt = gpupart.init(bootstrap_timeout=60)
except gpupart.GpupartError as exc:
    emit("failed", rank=rank, error=type(exc).__name__, message=str(exc))
    raise
emit("joined", rank=rank)
rt.close()
