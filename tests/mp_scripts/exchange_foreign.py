"""Rank 0 passes, for rank 1, a piece that ``columns.describe`` takes but ``put`` may not.

Usage: ``exchange_foreign.py KIND`` with KIND ``interface`` (an object that exposes only
NumPy's ``__array_interface__``: ``numpy.asarray`` takes it, ``columns.is_column`` counts it
as a column) or ``masked`` (a ``numpy.ma`` masked array, which ``put`` refuses by name).
The exchange must either deliver the piece as the array it describes, or refuse it with the
same :class:`~gpupart.CollectiveError` on every rank (naming rank 0), within the exchange's
timeout; never fail on rank 0 alone while the others wait for its metadata. Each rank emits
``@outcome`` (error type and message, or whether the pieces arrived intact) and closes.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from _mp import emit

import gpupart

rt = gpupart.init()
rank, size = rt.rank, rt.size


class ArrayInterfaceOnly:
    """The array interface protocol and nothing else (no dtype, shape or flags attributes)."""

    def __init__(self, array: np.ndarray) -> None:
        self._array = array
        self.__array_interface__ = array.__array_interface__


def values(src: int, dst: int) -> np.ndarray:
    return np.arange(5, dtype=np.float64) + 10 * src + dst


kind = sys.argv[1]
pieces = [values(rank, d) for d in range(size)]
if rank == 0:
    want = values(0, 1 % size)
    if kind == "interface":
        pieces[1 % size] = ArrayInterfaceOnly(want)
    else:
        pieces[1 % size] = np.ma.masked_array(want, mask=np.arange(want.size) % 2 == 1)
started = time.monotonic()
error, intact = None, None
try:
    got = rt.exchange(pieces, timeout=10)
    intact = all(
        type(g) is np.ndarray and np.array_equal(g, values(src, rank)) for src, g in enumerate(got)
    )
except Exception as exc:  # the test judges the type and the message
    error = exc
emit(
    "outcome",
    rank=rank,
    error=type(error).__name__ if error is not None else None,
    message=str(error),
    intact=intact,
    seconds=round(time.monotonic() - started, 2),
)
rt.close()
