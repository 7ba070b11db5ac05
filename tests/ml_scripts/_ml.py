"""What the estimator rank scripts share: inputs in every form, collective counting, checks.

``spmd_rows`` and ``dask_style`` build ``__partitioned__`` producers as Heat and Dask would;
``collectives`` counts the runtime's collective calls; ``on_every_rank`` checks an error is
raised on every rank. Functions take the script's runtime ``rt`` explicitly.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "mp_scripts"))
from _mp import expect, raises


def whole(result: Any) -> np.ndarray:
    """A result as one NumPy array on every rank (DistArray: gathered)."""
    return result.to_numpy() if hasattr(result, "to_numpy") else np.asarray(result)


def agreed(rt: Any, where: str, value: np.ndarray) -> None:
    """``value`` is the same on every rank."""
    for r, other in enumerate(rt.allgather(np.asarray(value))):
        expect(np.array_equal(other, value), f"{where}: rank {r} has {other}, here {value}")


def my_rows(rt: Any, n: int) -> slice:
    """This rank's share of ``n`` rows, the last rank holding none when there are several."""
    rank, size = rt.rank, rt.size
    holders = max(size - 1, 1)
    cuts = np.linspace(0, n, holders + 1).astype(int)
    if rank >= holders:
        return slice(n, n)
    return slice(cuts[rank], cuts[rank + 1])


class Producer:
    """Any object with a ``__partitioned__`` property."""

    def __init__(self, parted: dict) -> None:
        self._parted = parted

    @property
    def __partitioned__(self) -> dict:
        return self._parted


class Future:
    def __init__(self, value: np.ndarray) -> None:
        self.value = value


def spmd_rows(rt: Any, X: np.ndarray, counts: list[int]) -> Producer:
    """Heat style: one partition per rank, data only on its owner, ``locals``."""
    rank, size = rt.rank, rt.size
    offs = np.concatenate([[0], np.cumsum(counts)]).astype(int)
    m = X.shape[1]
    parts = {
        (i, 0): {
            "start": (int(offs[i]), 0),
            "shape": (int(counts[i]), m),
            "data": X[offs[i] : offs[i + 1]].copy() if i == rank else None,
            "location": [i],
        }
        for i in range(size)
    }
    return Producer(
        {
            "shape": X.shape,
            "partition_tiling": (size, 1),
            "partitions": parts,
            "locals": [(rank, 0)],
            "get": lambda h: h,
        }
    )


def dask_style(rt: Any, X: np.ndarray, row_cuts: list[int], col_cuts: list[int]) -> Producer:
    """Dask style: no ``locals``, references resolved with ``get``, rank ints as locations."""
    size = rt.size
    parts = {}
    for i in range(len(row_cuts) - 1):
        for j in range(len(col_cuts) - 1):
            r0, r1, c0, c1 = row_cuts[i], row_cuts[i + 1], col_cuts[j], col_cuts[j + 1]
            parts[(i, j)] = {
                "start": (r0, c0),
                "shape": (r1 - r0, c1 - c0),
                "data": Future(X[r0:r1, c0:c1].copy()),
                "location": [(i + j) % size],
            }

    def get(refs: Any) -> Any:
        return [r.value for r in refs] if isinstance(refs, list) else refs.value

    return Producer(
        {
            "shape": X.shape,
            "partition_tiling": (len(row_cuts) - 1, len(col_cuts) - 1),
            "partitions": parts,
            "get": get,
        }
    )


@contextlib.contextmanager
def collectives(rt: Any) -> Iterator[dict[str, int]]:
    """Count the runtime's collective calls by name inside the block."""
    counts = dict.fromkeys(["allreduce", "allgather", "broadcast", "exchange", "alltoall"], 0)
    cls = type(rt)
    saved = {name: getattr(cls, name) for name in counts if hasattr(cls, name)}

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return fn(self, *args, **kwargs)

        return counting

    for name, fn in saved.items():
        setattr(cls, name, wrap(name, fn))
    try:
        yield counts
    finally:
        for name, fn in saved.items():
            setattr(cls, name, fn)


def on_every_rank(
    rt: Any, exc_type: type[BaseException], fn: Callable[[], Any], *needles: str
) -> None:
    """``fn`` raises ``exc_type`` naming ``needles`` on this rank; the ranks stay in step."""
    raises(exc_type, fn, *needles)
    rt.barrier()
