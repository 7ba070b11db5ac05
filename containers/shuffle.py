"""Moving a frame's rows between ranks: the one primitive behind shuffles and rebalancing.

:func:`shuffle_rows` sends every row to the rank its destination names with one
``Runtime.exchange``: each rank orders its rows by destination (stable), encodes them once
(``frame_columns``) and sends each rank a contiguous slice; each rank decodes what it
receives, in source-rank order. The result has one partition per rank, and a row keeps its
relative order among the rows that go to the same rank.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from gpupart.containers import frame_columns
from gpupart.containers.dframe import DistFrame, Layout, row_view

__all__ = ["rebalance", "repartition", "shuffle_rows"]


def shuffle_rows(frame: DistFrame, destinations: Mapping[int, Any]) -> DistFrame:
    """Send the rows of each local partition ``i`` to the ranks ``destinations[i]`` names.

    ``destinations[i]`` is an integer array (NumPy or CuPy) with one rank per row of this
    rank's partition ``i``. Collective; the result has one partition per rank.
    """
    rt = frame.runtime
    module = rt.backend.dataframe_module()
    mine = sorted(frame.local_partitions)
    pieces: list[Any] = [{} for _ in range(rt.size)]
    if mine:
        parts = [frame.local_partitions[i] for i in mine]
        local = frame_columns.concat(parts, module) if len(parts) > 1 else parts[0]
        dest = _concat(
            [_as_ranks(destinations[i], len(frame.local_partitions[i]), rt.size, i) for i in mine]
        )
        order, bounds = _group_by_destination(dest, rt.size)
        encoded = frame_columns.encode(local.take(order) if len(local) else local)
        for d in range(rt.size):
            lo, hi = int(bounds[d]), int(bounds[d + 1])
            if hi > lo:
                pieces[d] = {key: column[lo:hi] for key, column in encoded.items()}
    received = rt.exchange(pieces)
    decoded = [frame_columns.decode(p, frame.meta, module) for p in received if p]
    if not decoded:
        result = frame.meta.iloc[:0]
    elif len(decoded) == 1:
        result = decoded[0]
    else:
        result = frame_columns.concat(decoded, module)
    return DistFrame(rt, frame.meta, Layout(range(rt.size)), {rt.rank: result})


def rebalance(frame: DistFrame) -> DistFrame:
    """Return the same rows in order, one partition per rank, lengths differing by <= 1."""
    return repartition(frame, frame.runtime.size)


def repartition(frame: DistFrame, npartitions: int) -> DistFrame:
    """Return the same rows in order in ``npartitions`` even partitions (collective)."""
    from gpupart.containers.frame_creation import owners_for

    if isinstance(npartitions, bool) or not isinstance(npartitions, int) or npartitions < 1:
        raise ValueError(f"npartitions: expected an int >= 1, found {npartitions!r}")
    rt = frame.runtime
    sizes = np.asarray(frame.partition_sizes, dtype=np.int64)
    total = int(sizes.sum())
    starts = np.concatenate([[0], np.cumsum(sizes)])
    base, extra = divmod(total, npartitions)
    lengths = np.full(npartitions, base, np.int64)
    lengths[:extra] += 1
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    owners = np.asarray(owners_for(npartitions, rt.size), dtype=np.int64)
    destinations = {}
    for i, part in frame.local_partitions.items():
        rows = np.arange(starts[i], starts[i] + len(part))
        destinations[i] = owners[np.searchsorted(bounds, rows, side="right") - 1]
    moved = shuffle_rows(frame, destinations)
    (here,) = moved.local_partitions.values()
    mine = [p for p in range(npartitions) if owners[p] == rt.rank]
    parts, at = {}, 0
    for p in mine:
        parts[p] = row_view(here, at, at + int(lengths[p]))
        at += int(lengths[p])
    return DistFrame(rt, frame.meta, Layout(owners.tolist(), lengths.tolist()), parts)


def _as_ranks(dest: Any, rows: int, size: int, partition: int) -> np.ndarray:
    """Check one partition's destinations: an int array of ``rows`` ranks in ``0..size-1``."""
    host = dest.get() if hasattr(dest, "get") and not isinstance(dest, np.ndarray) else dest
    host = np.asarray(host)
    if host.shape != (rows,) or host.dtype.kind not in "iu":
        raise ValueError(
            f"destinations[{partition}]: expected {rows} integer ranks, found"
            f" {host.dtype} of shape {host.shape}"
        )
    if rows and (host.min() < 0 or host.max() >= size):
        raise ValueError(
            f"destinations[{partition}]: expected ranks in 0..{size - 1}, found"
            f" {host.min()}..{host.max()}"
        )
    return host.astype(np.int64, copy=False)


def _concat(arrays: list[np.ndarray]) -> np.ndarray:
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def _group_by_destination(dest: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Return a stable order grouping rows by destination, and each destination's bounds."""
    order = np.argsort(dest, kind="stable")
    counts = np.bincount(dest, minlength=size)
    return order, np.concatenate([[0], np.cumsum(counts)])
