"""Per-block partial results summed over the ranks: the one place device partials reach the host.

Estimators compute statistics block by block on the blocks' device, add them up on the rank
(:func:`local_sum`), copy the small totals to the host (:func:`to_host`) and sum them over the
ranks in one all-reduce per step, several statistics packed into one call
(:func:`packed_sum`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gpupart.containers.darray import host_array as to_host

__all__ = ["allreduce_host", "local_sum", "packed_sum", "to_host"]


def local_sum(xp: Any, parts: Sequence[Any], shape: tuple[int, ...]) -> Any:
    """Sum of this rank's per-block ``parts`` in float64 (zeros of ``shape`` when it has none)."""
    total = xp.zeros(shape, dtype=np.float64)
    for p in parts:
        total = total + p
    return total


def packed_sum(rt: Any, parts: Sequence[Any]) -> list[np.ndarray]:
    """Sum each of ``parts`` (host or device arrays, scalars) over all ranks in one all-reduce.

    Returns float64 NumPy arrays of the parts' shapes, the same on every rank.
    """
    hosts = [np.asarray(to_host(p), dtype=np.float64) for p in parts]
    flat = np.concatenate([h.ravel() for h in hosts]) if hosts else np.zeros(0)
    total = np.asarray(rt.allreduce(flat, op="sum"), dtype=np.float64)
    out, at = [], 0
    for h in hosts:
        out.append(total[at : at + h.size].reshape(h.shape))
        at += h.size
    return out


def allreduce_host(rt: Any, parts: Sequence[Any]) -> np.ndarray:
    """Sum ``parts`` over the ranks in one all-reduce, as one flat float64 vector."""
    summed = packed_sum(rt, parts)
    return np.concatenate([s.ravel() for s in summed]) if summed else np.zeros(0)
