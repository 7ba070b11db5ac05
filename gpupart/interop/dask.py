"""Dask <-> gpupart: dask.array and dask.dataframe on a ``distributed`` cluster.

How the processes meet: the Dask cluster (scheduler and workers) and the gpupart job are two
sets of processes that share nothing but the scheduler's address. Each gpupart rank is a Dask
*client*: it connects with ``distributed.Client(address)`` (the address reaches the job as an
argument or an environment variable of the launcher, e.g. ``DASK_SCHEDULER_ADDRESS``, which
``Client()`` reads), and finds the collection by name with ``client.get_dataset(name)`` after
whoever made it published it with ``client.publish_dataset``. No Dask worker runs inside a
gpupart rank, and no rank runs inside a worker.

In (:func:`to_partitioned`, then ``gpupart.from_partitioned``; every rank calls both): the
collection is persisted (if it is not already) and described as a Dask-style
``__partitioned__`` dict: one future per chunk as ``data``, ``client.gather`` straight from
the workers as ``get``, and each chunk's ``location`` the ``(host, pid)`` of the workers
holding it. ``from_partitioned`` gives each rank its share of the chunks (tiles in C order
over the ranks), and each rank gathers only its own, in one call, straight from the workers
(one copy: the network transfer into the rank); the arrays ``get`` returns become the rank's
tiles without a further copy.

Out (:func:`to_dask`, collective): every rank scatters the tiles it holds straight to the
workers on its own host (all workers when none is; one copy, the transfer into a worker),
keyed by the tile's position; rank 0 publishes the collection built from those keys under a
dataset name, and every rank takes it from the scheduler (its client then holds every
chunk), so no rank depends on another staying. Without ``name`` the dataset is dropped once
every rank holds the collection: the data live while some client references it. With
``name`` it stays published, for clients outside the job, until
``client.unpublish_dataset(name)``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from gpupart.errors import (
    FetchError,
    InteropError,
    PartitionedError,
    PartitionedTypeError,
)
from gpupart.interop._collective import step

__all__ = ["DaskGather", "chunk_futures", "chunk_locations", "to_dask", "to_partitioned"]

#: Default limit (seconds) for one wait on the Dask cluster (chunks ready, a scatter, a gather).
TIMEOUT = 120.0


def _require() -> tuple[Any, Any, Any]:
    """Return ``(dask.array, dask.dataframe, distributed)``, or say which extra installs them."""
    try:
        import dask.array as da
        import dask.dataframe as dd
        import distributed
    except ImportError as exc:
        raise ImportError(
            "gpupart.interop.dask needs dask[array,dataframe] and distributed: install them"
            f" with pip install 'gpupart[interop]' ({exc})"
        ) from exc
    return da, dd, distributed


# == in: a Dask collection as a __partitioned__ dict ==========================================


class DaskGather:
    """The ``get`` of :func:`to_partitioned`'s dict: futures (one or a list) to their data.

    Gathers through the client the futures are bound to (the one that persisted them, or
    the one whose ``get_dataset`` returned them), so the dict pickles and can be published:
    ``client.publish_dataset(spec=...)`` in one process, ``client.get_dataset('spec')`` in
    another. Waits up to ``timeout`` for the futures; with ``direct`` the data come straight
    from the workers, not through the scheduler. A failure is a :class:`~gpupart.FetchError`
    naming the futures (so ``from_partitioned`` reports it on every rank).
    """

    def __init__(self, *, direct: bool = True, timeout: float = TIMEOUT) -> None:
        self.direct, self.timeout = direct, timeout

    def __call__(self, futures: Any) -> Any:
        """Return the data of ``futures`` (a list of data for a list)."""
        from distributed import Future, wait

        many = isinstance(futures, (list, tuple))
        items = list(futures) if many else [futures]
        if not items:
            return []
        clients = {id(f.client): f.client for f in items if isinstance(f, Future)}
        client = next(iter(clients.values())) if len(clients) == 1 else None
        if client is None or not all(isinstance(f, Future) for f in items):
            raise InteropError(
                "Dask: expected futures bound to one distributed.Client (hand a"
                " __partitioned__ dict to another process with client.publish_dataset and"
                f" client.get_dataset), found {_describe(items)}"
            )
        try:
            wait(items, timeout=self.timeout)
            got = client.gather(items, direct=self.direct)
        except Exception as exc:  # a foreign failure: translated at the boundary
            keys = ", ".join(repr(f.key) for f in items[:3]) + (" ..." if len(items) > 3 else "")
            raise FetchError(
                f"gathering {len(items)} chunk(s) ({keys}) from the Dask cluster at"
                f" {client.scheduler.address}: {type(exc).__name__}: {exc}"
            ) from exc
        return got if many else got[0]

    def __eq__(self, other: object) -> bool:
        return type(other) is DaskGather and (other.direct, other.timeout) == (
            self.direct,
            self.timeout,
        )

    def __hash__(self) -> int:
        return hash((DaskGather, self.direct, self.timeout))


def _describe(items: list[Any]) -> str:
    """Say what ``items`` are: their types, and for futures whether each has a client."""
    from distributed import Future

    kinds = sorted(
        {
            (f"a future bound to client {f.client.id}" if f.client else "an unbound future")
            if isinstance(f, Future)
            else type(f).__name__
            for f in items
        }
    )
    return ", ".join(kinds)


def to_partitioned(
    collection: Any, client: Any = None, *, direct: bool = True, timeout: float = TIMEOUT
) -> dict[str, Any]:
    """Describe a dask.array or dask.dataframe as a ``__partitioned__`` dict (Dask-style).

    The collection is persisted on ``client`` (default: the current client) unless it is
    already; ``data`` are the chunks' futures (in the dict, they keep the chunks in the
    workers' memory), ``get`` a :class:`DaskGather`, each ``location`` the ``(host, pid)`` of
    every worker holding the chunk. A dataframe is cut by rows (grid ``(partitions, 1)``; the
    partitions' lengths are computed on the workers) and its index is dropped by the gpupart
    frame that adopts it (``reset_index()`` first to keep it as a column). The dict refers to
    this process's client: each process builds its own (it does not pickle).

    Raises:
        PartitionedTypeError: ``collection`` is neither a dask array nor a dask DataFrame.
        PartitionedError: a chunk failed to compute, or is in no worker's memory.
    """
    da, dd, distributed = _require()
    if client is None:
        client = distributed.get_client()
    if isinstance(collection, da.Array):
        frame = False
    elif isinstance(collection, dd.DataFrame):
        frame = True
    else:
        raise PartitionedTypeError(
            "collection",
            "a dask.array.Array or dask.dataframe.DataFrame",
            type(collection).__name__,
        )
    futures = chunk_futures(collection)
    if futures is None:
        collection = client.persist(collection)
        futures = chunk_futures(collection)
    if futures is None:  # persist always gives futures: a Dask we do not know
        raise PartitionedError(
            "collection", "a chunk future for every key after persist", "keys without one"
        )
    distributed.wait(list(futures.values()), timeout=timeout)
    for pos, future in futures.items():
        if future.status != "finished":
            cause = future.exception(timeout=timeout) if future.status == "error" else None
            raise PartitionedError(
                f"collection chunk {pos}", "a computed chunk", f"status {future.status!r}"
            ) from cause
    location = chunk_locations(client, futures)
    getter = DaskGather(direct=direct, timeout=timeout)
    from gpupart import protocol

    if frame:
        order = sorted(futures)
        lengths = client.gather(client.map(len, [futures[p] for p in order]))
        cuts = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).tolist()
        ncols = len(collection.columns)
        tiling = protocol.Tiling.from_boundaries([cuts, [0, ncols]])
        return protocol.build(
            (cuts[-1], ncols),
            tiling,
            {(i, 0): futures[p] for i, p in enumerate(order)},
            {(i, 0): location[p] for i, p in enumerate(order)},
            getter,
            lazy=False,
            columns=list(collection.columns),
        )
    cuts = [np.concatenate([[0], np.cumsum(c, dtype=np.int64)]).tolist() for c in collection.chunks]
    tiling = protocol.Tiling.from_boundaries(cuts)
    return protocol.build(
        collection.shape,
        tiling,
        futures,
        location,
        getter,
        lazy=False,
        dtype=np.dtype(collection.dtype).str,
    )


def chunk_futures(collection: Any) -> dict[tuple[int, ...], Any] | None:
    """Each chunk's future by grid position, or ``None`` when some chunk is not persisted.

    A persisted collection's graph maps each of its keys to a future, directly (arrays) or
    through an alias to another key (dataframes).
    """
    from distributed import Future

    graph = dict(collection.__dask_graph__())
    found = {}
    for pos, key in _positions(collection.__dask_keys__()):
        value = graph.get(key)
        for _ in range(len(graph)):
            deps = getattr(value, "dependencies", None)
            if isinstance(value, Future) or type(value).__name__ != "Alias" or len(deps) != 1:
                break
            value = graph.get(next(iter(deps)))
        if not isinstance(value, Future):
            return None
        found[pos] = value
    return found


def _positions(keys: Any, prefix: tuple[int, ...] = ()) -> Iterator[tuple[tuple[int, ...], Any]]:
    """``(grid position, key)`` of a collection's nested key lists (a dataframe's is flat)."""
    for i, item in enumerate(keys):
        if isinstance(item, list):
            yield from _positions(item, (*prefix, i))
        else:
            yield (*prefix, i), item


def chunk_locations(client: Any, futures: dict) -> dict[tuple[int, ...], list[Any]]:
    """Each chunk's holders as ``(host, pid)``: who_has, the workers' hosts and their PIDs."""
    who_has = client.who_has(list(futures.values()))
    holders = sorted({w for ws in who_has.values() for w in ws})
    workers = client.scheduler_info(n_workers=-1)["workers"]
    pids = client.run(os.getpid, workers=holders) if holders else {}
    return {
        pos: [(workers[w]["host"], int(pids[w])) for w in sorted(who_has.get(f.key, ()))]
        for pos, f in futures.items()
    }


# == out: a gpupart container as a Dask collection ============================================


def to_dask(
    x: Any, client: Any, *, name: str | None = None, direct: bool = True, timeout: float = TIMEOUT
) -> Any:
    """Return a gpupart array or frame as a dask.array / dask.dataframe (collective).

    Every rank scatters its tiles (a frame's partitions, given a global ``RangeIndex``) to
    the workers on its host, and every rank returns the same collection (see the module
    docstring for who holds the data). With ``name`` the collection stays published under
    it (``client.get_dataset(name)`` from any client) until ``client.unpublish_dataset(name)``.
    With ``direct`` the tiles go straight to the workers, not through the scheduler.

    Raises:
        PartitionedTypeError: ``x`` is not a DistArray or DistFrame.
        CollectiveError: a step failed on some rank (every rank raises, naming it).
    """
    da, dd, _ = _require()
    from gpupart.containers.darray import DistArray
    from gpupart.containers.dframe import DistFrame

    if not isinstance(x, (DistArray, DistFrame)):
        raise PartitionedTypeError("x", "a gpupart DistArray or DistFrame", type(x).__name__)
    rt = x.runtime
    token = rt.broadcast(uuid.uuid4().hex if rt.rank == 0 else None, timeout=timeout)
    key_name = f"gpupart-{token}"
    published = name if name is not None else key_name
    if isinstance(x, DistArray):
        mine = {(key_name, *pos): tile for pos, tile in x.counted_tiles()}
        build = _array_builder(da, x, key_name)
    else:
        cuts = np.concatenate([[0], np.cumsum(x.partition_sizes, dtype=np.int64)]).tolist()
        index = rt.backend.dataframe_module().RangeIndex
        mine = {}
        for i, part in x.local_partitions.items():
            shallow = part.copy(deep=False)  # the index is the new frame's, the data are shared
            shallow.index = index(cuts[i], cuts[i + 1])
            mine[(key_name, i)] = shallow
        build = _frame_builder(dd, x, key_name, cuts)
    held = step(
        rt, "to_dask: the scatter", timeout, lambda: _scatter(client, rt, mine, direct, timeout)
    )
    step(rt, "to_dask: publishing", timeout, lambda: _publish(client, rt, build, published))
    collection = step(
        rt, "to_dask: get_dataset", timeout, lambda: _adopt(client, published, timeout)
    )
    if name is None:
        step(rt, "to_dask: unpublishing", timeout, lambda: _unpublish(client, rt, published))
    del held  # the scatter's futures: the scheduler holds the data through the collection now
    return collection


def _scatter(client: Any, rt: Any, mine: dict, direct: bool, timeout: float) -> dict:
    """Scatter this rank's tiles to the workers on its host (all workers when none is)."""
    if not mine:
        return {}
    workers = _local_workers(client, rt)
    return client.scatter(mine, workers=workers, direct=direct, hash=False, timeout=timeout)


def _local_workers(client: Any, rt: Any) -> list[str] | None:
    """Addresses of the workers on this rank's host, or ``None`` (any worker) when none is."""
    names = {socket.gethostname(), "localhost", rt.location.ip}
    with contextlib.suppress(OSError):  # unresolvable: its own address and loopback count
        names.update(socket.gethostbyname_ex(socket.gethostname())[2])
    workers = client.scheduler_info(n_workers=-1)["workers"]
    local = [
        addr
        for addr, info in workers.items()
        if info["host"] in names or info["host"].startswith("127.")
    ]
    return sorted(local) or None


def _array_builder(da: Any, x: Any, key_name: str) -> Callable[[], Any]:
    """Return a function building ``x``'s dask array from its chunks' futures (by key)."""
    from distributed import Future

    from gpupart.containers import layout

    chunks = tuple(
        tuple(np.diff(np.asarray(c, dtype=np.int64)).tolist()) for c in x.tiling.boundaries
    )
    meta = x.xp.empty((0,) * x.ndim, dtype=x.dtype)

    def build() -> Any:
        graph = {(key_name, *p): Future((key_name, *p)) for p in layout.positions(x.tiling)}
        return da.Array(graph, key_name, chunks, dtype=x.dtype, meta=meta)

    return build


def _frame_builder(dd: Any, x: Any, key_name: str, cuts: list[int]) -> Callable[[], Any]:
    """Return a function building ``x``'s dask DataFrame from its partitions' futures."""
    from distributed import Future

    meta = x.meta.iloc[:0].copy()
    meta.index = x.runtime.backend.dataframe_module().RangeIndex(0)
    sizes = np.diff(cuts)
    if len(sizes) and (sizes > 0).all():
        divisions = (*cuts[:-1], cuts[-1] - 1)
    else:  # an empty partition: divisions must increase strictly, so they are unknown
        divisions = (None,) * (len(sizes) + 1)
    keys = [(key_name, i) for i in range(len(sizes))]

    def build() -> Any:
        graph = {k: Future(k) for k in keys}
        return dd.from_graph(graph, meta, divisions, keys, "gpupart")

    return build


def _publish(client: Any, rt: Any, build: Callable[[], Any], published: str) -> None:
    """Rank 0 publishes the collection: the scheduler holds its keys from then on."""
    if rt.rank == 0:
        client.publish_dataset(build(), name=published)


def _unpublish(client: Any, rt: Any, published: str) -> None:
    """Rank 0 drops the dataset once every rank's client holds the collection's keys."""
    if rt.rank == 0:
        client.unpublish_dataset(published)


def _adopt(client: Any, published: str, timeout: float) -> Any:
    """Return this rank's copy of the published collection, known to the scheduler."""
    from distributed import futures_of, wait

    collection = client.get_dataset(published)
    # ready futures prove the scheduler registered this client's interest in every key
    wait(futures_of(collection), timeout=timeout)
    return collection
