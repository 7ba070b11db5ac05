"""Modin DataFrames into a gpupart job, and gpupart frames back into Modin (Modin on Dask).

How the processes meet: Modin runs on a Dask cluster (``MODIN_ENGINE=dask`` and a
``distributed.Client`` connected to the cluster's scheduler as the process's default client,
which Modin then uses instead of starting its own). Every rank of the gpupart job connects
its own ``distributed.Client`` to the same scheduler. Partitions stay in the Dask workers'
memory and travel as futures; the scheduler's named datasets hand them between processes and
hold them while no client does (``client.publish_dataset`` / ``client.get_dataset``), as in
:mod:`gpupart.interop.dask`, whose gather, locations and scatter this module uses.

- In: :func:`to_partitioned` (where the Modin DataFrame lives) describes its row partitions
  as a ``__partitioned__`` dict: futures as ``data``, each holding worker's ``(host, pid)``
  as ``location``, a :class:`~gpupart.interop.dask.DaskGather` as ``get``, no ``locals``.
  Every rank passes that dict (published, then read with ``get_dataset``) to
  ``gpupart.from_partitioned``, which gives each rank its share of the partitions and has
  it gather only those; the result is a :class:`~gpupart.DistFrame` (the index is dropped:
  rows are numbered by position).
- Out: :func:`to_modin` (collective) scatters each rank's partitions into the cluster and
  returns, on every rank, one Modin DataFrame over all of them. To hand the result to a
  process outside the job, publish ``to_partitioned(modin_frame)`` and read it there with
  :func:`from_partitioned`.

Moving a partition between a Dask worker and a rank copies it once (serialised over Dask's
comm); wrapping futures in a Modin frame or a ``__partitioned__`` dict copies nothing. Modin
on Ray (ObjectRefs, ``ray.get``, a Ray cluster as the meeting point) is not handled here:
``docs/interop.md`` says why and how that path goes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gpupart import protocol
from gpupart.errors import CommTimeoutError, InteropError, PartitionedError, PartitionedTypeError

__all__ = ["check_engine", "default_client", "from_partitioned", "to_modin", "to_partitioned"]

#: Default limit (seconds) for one wait on the Dask cluster (partitions ready, a gather).
TIMEOUT = 120.0


def default_client() -> Any:
    """Return this process's default ``distributed.Client`` (the one Modin on Dask uses)."""
    from distributed import default_client as dask_default_client

    try:
        return dask_default_client()
    except ValueError as exc:
        raise InteropError(
            "Modin on Dask: expected a distributed.Client connected to the Modin cluster's"
            " scheduler in this process (distributed.Client(address)), found none"
        ) from exc


def check_engine() -> None:
    """Raise :class:`~gpupart.InteropError` unless Modin is set to run on Dask."""
    import modin.config

    engine = modin.config.Engine.get()
    if engine != "Dask":
        raise InteropError(
            "Modin: expected the Dask engine (MODIN_ENGINE=dask, or"
            f" modin.config.Engine.put('Dask') before the first Modin call), found {engine!r}"
        )


def to_partitioned(df: Any, *, timeout: float = TIMEOUT) -> dict[str, Any]:
    """Describe a Modin DataFrame's row partitions as a ``__partitioned__`` dict (no copy).

    Call it where ``df`` lives; the dict pickles with its futures, so publish it
    (``client.publish_dataset``) for a job's ranks to read. ``data`` are the partitions'
    futures, ``location`` the ``(host, pid)`` of every worker holding one, ``get`` a
    :class:`~gpupart.interop.dask.DaskGather`; the extra key ``columns`` holds the labels.
    Waits up to ``timeout`` s for the partitions.

    Raises:
        InteropError: Modin is not on the Dask engine, or there is no default client.
        CommTimeoutError: the partitions were not ready within ``timeout``.
    """
    from distributed import wait
    from modin.distributed.dataframe.pandas import unwrap_partitions

    from gpupart.interop import dask as dask_interop

    check_engine()
    client = default_client()
    futures = unwrap_partitions(df, axis=0)
    try:
        wait(futures, timeout=timeout)
        lengths = client.gather(client.map(len, futures, pure=False))
    except TimeoutError as exc:
        raise CommTimeoutError(f"waiting for {len(futures)} Modin partition(s)", timeout) from exc
    cuts = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).tolist()
    columns = list(df.columns)
    by_position = {(i, 0): f for i, f in enumerate(futures)}
    return protocol.build(
        (cuts[-1], len(columns)),
        protocol.Tiling.from_boundaries([cuts, [0, len(columns)]]),
        by_position,
        dask_interop.chunk_locations(client, by_position),
        dask_interop.DaskGather(timeout=timeout),
        lazy=False,
        columns=columns,
    )


def from_partitioned(obj: Any) -> Any:
    """Return a Modin DataFrame over a ``__partitioned__`` dict of Dask futures (no copy).

    The rows are cut into ``(p, 1)`` partitions whose ``data`` are futures of pandas frames
    in the cluster Modin runs on (what :func:`to_partitioned` makes, read back with
    ``client.get_dataset``). The frame gets a ``RangeIndex``; its columns are the dict's
    ``columns`` key when present, else Modin asks the partitions.

    Raises:
        InteropError: Modin is not on the Dask engine, or there is no default client.
        PartitionedError: the dict breaks the protocol, or its rows are not cut ``(p, 1)``.
        PartitionedTypeError: some partition's ``data`` is not a Dask future.
    """
    from distributed import Future

    check_engine()
    default_client()  # without one, Modin would start a cluster of its own
    view = protocol.validate(obj)
    if view.tiling[1:] != (1,):
        raise PartitionedError(
            "partition_tiling", "rows cut into (p, 1) partitions", str(view.tiling)
        )
    futures = []
    for pos, entry in view.partitions.items():
        if not isinstance(entry.data, Future):
            raise PartitionedTypeError(
                f"partitions[{pos!r}]['data']",
                "a Dask future in Modin's cluster (for a gpupart DistFrame use to_modin)",
                type(entry.data).__name__,
            )
        futures.append(entry.data)
    cuts = [0, *(entry.stop[0] for entry in view.partitions.values())]
    return _from_futures(futures, cuts, view.extra.get("columns"))


def to_modin(frame: Any, *, timeout: float = TIMEOUT) -> Any:
    """Return a Modin DataFrame of a :class:`~gpupart.DistFrame` on every rank (collective).

    Each rank's partitions (as pandas frames: cuDF ones are copied to the host) go to the
    cluster of this process's default ``distributed.Client`` through
    :func:`gpupart.interop.dask.to_dask` (each rank scatters its own to the workers on its
    host; every rank's client then holds every partition), and each rank's Modin frame is
    made over those futures. Rows are numbered by position (``RangeIndex``).

    Raises:
        InteropError: on every rank, when Modin is not on the Dask engine or some rank has
            no default client.
        CollectiveError: a step of ``to_dask`` failed on some rank (every rank raises).
    """
    from gpupart.interop import dask as dask_interop

    rt = frame.runtime
    client, problem = None, None
    try:
        check_engine()
        client = default_client()
    except InteropError as exc:
        problem = exc
    _agree(rt, problem, "to_modin")
    collection = dask_interop.to_dask(_on_host(frame), client, timeout=timeout)
    chunks = dask_interop.chunk_futures(collection)  # {(i,): future}, in partition order
    futures = [chunks[(i,)] for i in range(frame.npartitions)]
    cuts = np.concatenate([[0], np.cumsum(frame.partition_sizes, dtype=np.int64)]).tolist()
    return _from_futures(futures, cuts, list(frame.columns))


def _from_futures(
    futures: Sequence[Any], cuts: Sequence[int], columns: Sequence[Any] | None
) -> Any:
    """Return the Modin frame of row-partition ``futures`` cut at ``cuts`` (no data moves)."""
    import pandas as pd
    from modin.distributed.dataframe.pandas import from_partitions

    return from_partitions(
        list(futures),
        axis=0,
        index=pd.RangeIndex(cuts[-1]),
        columns=None if columns is None else pd.Index(columns),
        row_lengths=np.diff(np.asarray(cuts, dtype=np.int64)).tolist(),
        column_widths=None if columns is None else [len(columns)],
    )


def _on_host(frame: Any) -> Any:
    """Return ``frame`` with pandas partitions (itself when they already are)."""
    import pandas as pd

    if all(isinstance(p, pd.DataFrame) for p in frame.local_partitions.values()):
        return frame
    return frame.map_partitions(lambda p: p.to_pandas(), keeps_rows=True)


def _agree(rt: Any, problem: Exception | None, what: str) -> None:
    """Raise on every rank if any rank found a problem (the rank's own, else the first's)."""
    reports: Sequence[str | None] = rt.allgather(
        None if problem is None else f"{type(problem).__name__}: {problem}"
    )
    if problem is not None:
        raise problem
    bad = [(r, p) for r, p in enumerate(reports) if p is not None]
    if bad:
        raise InteropError(f"{what}: rank {bad[0][0]} failed: {bad[0][1]}")
