"""Modin DataFrames into a gpupart job, and gpupart frames back into Modin (Modin on Dask).

How the processes meet: Modin runs on a Dask cluster (``MODIN_ENGINE=dask``, a
``distributed.Client`` connected to the cluster's scheduler as the process's default client,
which Modin then uses instead of starting its own). Every rank of the gpupart job connects
its own ``distributed.Client`` to the same scheduler. Partitions stay in the Dask workers'
memory and travel as futures; the scheduler's named datasets hand them between processes and
keep them alive while no client holds them (``client.publish_dataset`` /
``client.get_dataset``).

- In: :func:`to_partitioned` (where the Modin DataFrame lives) describes its row partitions
  as a ``__partitioned__`` dict: futures as ``data``, each worker's ``(host, pid)`` as
  ``location``, :class:`DaskGather` as ``get``, no ``locals``. Every rank passes that dict to
  ``gpupart.from_partitioned``, which has each partition fetched by the rank that takes it
  (one ``client.gather`` per rank); the result is a :class:`~gpupart.DistFrame` (the index is
  dropped: rows are numbered by position).
- Out: :func:`to_modin` (collective) scatters each rank's partitions into the cluster and
  returns, on every rank, one Modin DataFrame over all of them; every rank's client holds
  every partition, so the frame stays whole while any rank keeps it. To hand it to a process
  outside the job, publish ``to_partitioned(frame)`` and read it there with
  :func:`from_partitioned`.

Moving a partition between a Dask worker and a rank copies it (serialised over Dask's
comm); no step copies a partition twice. Modin on Ray (ObjectRefs, ``ray.get``) follows the
same pattern with a Ray cluster as the meeting point; this module supports the Dask engine
(``docs/interop.md`` says why and how the Ray path goes).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from typing import Any

from gpupart import protocol
from gpupart.errors import CommTimeoutError, InteropError, PartitionedTypeError

__all__ = ["DaskGather", "from_partitioned", "to_modin", "to_partitioned"]

DEFAULT_TIMEOUT = 60.0  # seconds a Dask future may take to be ready before gpupart gives up


class DaskGather:
    """The ``get`` of a ``__partitioned__`` dict of Dask futures: futures (one or a list) to data.

    Resolves through this process's default ``distributed.Client`` when called, so it
    pickles and works in any process connected to the scheduler; a future that arrived
    unbound (unpickled) is rebound by its key. Anything that is not a future passes through.
    """

    def __init__(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.timeout = float(timeout)

    def __call__(self, futures: Any) -> Any:
        """Return the data of ``futures`` (or a list of data for a list)."""
        from distributed import Future, wait

        many = isinstance(futures, (list, tuple))
        items = list(futures) if many else [futures]
        client = default_client()
        wanted = [
            f if f.client is client else Future(f.key, client)
            for f in items
            if isinstance(f, Future)
        ]
        if wanted:
            try:
                wait(wanted, timeout=self.timeout)
            except TimeoutError as exc:
                keys = ", ".join(str(f.key) for f in wanted[:3])
                raise CommTimeoutError(
                    f"waiting for {len(wanted)} Dask future(s) ({keys}); is a client still"
                    " holding them, or are they published?",
                    self.timeout,
                ) from exc
        got = iter(client.gather(wanted, errors="raise") if wanted else ())
        out = [next(got) if isinstance(f, Future) else f for f in items]
        return out if many else out[0]

    def __eq__(self, other: object) -> bool:
        return type(other) is DaskGather and other.timeout == self.timeout

    def __hash__(self) -> int:
        return hash((DaskGather, self.timeout))


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
            f"Modin: expected the Dask engine (MODIN_ENGINE=dask, or"
            f" modin.config.Engine.put('Dask') before the first Modin call), found {engine!r}"
        )


def to_partitioned(df: Any, *, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
    """Describe a Modin DataFrame's row partitions as a ``__partitioned__`` dict (no copy).

    Call it where ``df`` lives; the dict pickles (hand it to a job through
    ``client.publish_dataset``). ``data`` are the partitions' futures, ``location`` the
    ``(host, pid)`` of every worker holding one, ``get`` a :class:`DaskGather`; the extra
    key ``columns`` holds the labels. Waits up to ``timeout`` s for the partitions.
    """
    from distributed import Future, wait
    from modin.distributed.dataframe.pandas import unwrap_partitions

    check_engine()
    client = default_client()
    futures = unwrap_partitions(df, axis=0)
    bad = [i for i, f in enumerate(futures) if not isinstance(f, Future)]
    if bad:
        raise PartitionedTypeError(
            f"df row partition {bad[0]}",
            "a Dask future (Modin on the Dask engine)",
            type(futures[bad[0]]).__name__,
        )
    try:
        wait(futures, timeout=timeout)
        lengths = client.gather(client.map(len, futures, pure=False))
    except TimeoutError as exc:
        raise CommTimeoutError(f"waiting for {len(futures)} Modin partition(s)", timeout) from exc
    cuts = [0]
    for n in lengths:
        cuts.append(cuts[-1] + int(n))
    return _spec(client, futures, cuts, list(df.columns), timeout)


def _spec(
    client: Any, futures: Sequence[Any], cuts: Sequence[int], columns: list[Any], timeout: float
) -> dict[str, Any]:
    """Build the ``__partitioned__`` dict of computed row partitions ``futures``."""
    from distributed.comm import get_address_host

    holders = client.who_has(list(futures))
    workers = sorted({w for f in futures for w in holders[f.key]})
    pids = client.run(os.getpid, workers=workers) if workers else {}
    data = {(i, 0): f for i, f in enumerate(futures)}
    locations = {
        (i, 0): [(get_address_host(w), pids[w]) for w in holders[f.key]]
        for i, f in enumerate(futures)
    }
    return protocol.build(
        (cuts[-1], len(columns)),
        protocol.Tiling.from_boundaries([list(cuts), [0, len(columns)]]),
        data,
        locations,
        DaskGather(timeout),
        lazy=False,
        columns=columns,
    )


def from_partitioned(obj: Any) -> Any:
    """Return a Modin DataFrame over a ``__partitioned__`` dict of Dask futures (no copy).

    The dict's rows are cut into ``(p, 1)`` partitions whose ``data`` are futures of pandas
    frames in the cluster Modin runs on (what :func:`to_partitioned` makes). The frame gets
    a ``RangeIndex``; its columns are the ``columns`` key's when present.
    """
    import pandas as pd
    from distributed import Future
    from modin.distributed.dataframe.pandas import from_partitions

    check_engine()
    client = default_client()
    view = protocol.validate(obj)
    if view.tiling[1:] != (1,):
        raise PartitionedTypeError(
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
        f = entry.data
        futures.append(f if f.client is client else Future(f.key, client))
    columns = view.extra.get("columns")
    return from_partitions(
        futures,
        axis=0,
        index=pd.RangeIndex(view.shape[0]),
        columns=None if columns is None else pd.Index(columns),
        row_lengths=[entry.shape[0] for entry in view.partitions.values()],
        column_widths=[view.shape[1]],
    )


def to_modin(frame: Any, *, timeout: float = DEFAULT_TIMEOUT) -> Any:
    """Return a Modin DataFrame of a :class:`~gpupart.DistFrame` on every rank (collective).

    Each rank scatters its partitions (as pandas frames) into the cluster of its default
    ``distributed.Client``; every rank's client then holds every partition (through one
    named dataset per rank, published, read by all, unpublished), so the Modin frame stays
    whole while any rank keeps it. Rows are numbered by position (``RangeIndex``).
    """
    rt = frame.runtime
    client, problem = None, None
    try:
        check_engine()
        client = default_client()
    except InteropError as exc:
        problem = exc
    _agree(rt, problem, "to_modin")
    sizes = frame.partition_sizes
    starts = [0]
    for n in sizes:
        starts.append(starts[-1] + n)
    mine = sorted(frame.local_partitions)
    parts = [_host_part(frame.local_partitions[i], starts[i]) for i in mine]
    token = rt.allgather(secrets.token_hex(8) if rt.rank == 0 else None)[0]
    names = [f"gpupart-to-modin-{token}-{r}" for r in range(rt.size)]
    futures = client.scatter(parts, hash=False) if parts else []
    client.publish_dataset(**{names[rt.rank]: dict(zip(mine, futures, strict=True))})
    rt.allgather(None)  # every rank's partitions are published
    everyone = client.get_dataset(names)  # this client now holds every partition
    rt.allgather(None)  # every rank holds every partition: the names can go
    client.unpublish_dataset(names[rt.rank])
    by_partition = {i: f for published in everyone for i, f in published.items()}
    futures = [by_partition[i] for i in range(len(sizes))]
    return from_partitioned(_spec(client, futures, starts, list(frame.columns), timeout))


def _host_part(part: Any, start: int) -> Any:
    """Return a partition as a pandas frame indexed by its global row numbers (data shared)."""
    import pandas as pd

    host = part if isinstance(part, pd.DataFrame) else part.to_pandas()
    out = host.copy(deep=False)
    out.index = pd.RangeIndex(start, start + len(out))
    return out


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
