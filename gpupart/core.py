"""The per-process runtime: join the job, own tiles, fetch any tile, run collectives."""

from __future__ import annotations

import atexit
import contextlib
import itertools
import logging
import operator
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np

from gpupart import backend as backends
from gpupart import topology
from gpupart.comm.collectives import Collectives
from gpupart.comm.engine import ProgressEngine
from gpupart.comm.tags import MAX_RANKS, Kind
from gpupart.errors import (
    CommTimeoutError,
    GpupartError,
    NotInitializedError,
    TileNotFoundError,
)
from gpupart.job import bootstrap
from gpupart.job.binding import bind_process
from gpupart.job.coordinator import COORDINATOR_RANK, Coordinator, CoordinatorClient
from gpupart.location import Location
from gpupart.options import RuntimeOptions
from gpupart.tiles.fetch import (
    SIZE_MISMATCH,
    AloneItem,
    FetchBatch,
    TileServer,
    error_for,
    plan_packs,
    plan_packs_bulk,
)
from gpupart.tiles.handles import (
    Handle,
    Tile,
    TileStore,
    byte_view,
    copy_into,
    handle_records,
    record_problem,
    records_alike,
)
from gpupart.tiles.pool import ReceivePool
from gpupart.tiles.results import FutureSink, ResultList, futures_sharing_condition

__all__ = ["Runtime", "current", "init"]

logger = logging.getLogger("gpupart.runtime")

#: Batches with more tiles than this keep their bookkeeping in NumPy arrays.
_VECTOR_BATCH = 64
#: Most tiles in one request of a bulk call (requests are also cut every ``pack_limit`` bytes).
_CHUNK_ITEMS = 4096
#: A tile alone in its batch rides with the status (one message) up to this size; larger
#: ones are sent zero-copy in their own message.
_LONE_TILE_PACK = 8 << 10
#: Packs of at least this size are received into pooled host memory (smaller ones fault
#: little, and a pooled buffer costs ~3 us).
_POOLED_PACK = 1 << 20


class Runtime:
    """Membership of one process in a gpupart job (create it with :func:`gpupart.init`).

    A context manager with an idempotent :meth:`close`. ``rank``/``size`` place the process
    in the job, ``local_rank``/``local_size`` on its host; ``device`` is the bound GPU index
    (``None`` on CPU) and ``location`` this process's :class:`~gpupart.Location`.

    Tiles: :meth:`put` registers an array (no copy) and returns a :class:`Handle`;
    :meth:`fetch` / :meth:`get` bring any handle's tile here, straight from its owner's
    memory; the owner's progress thread serves requests without the owner calling anything.
    Collectives: :meth:`barrier`, :meth:`broadcast`, :meth:`allgather`, :meth:`allreduce`.
    """

    def __init__(self, spec: bootstrap.JobSpec, options: RuntimeOptions) -> None:
        self.options = options
        self.rank = spec.rank
        self.size = spec.size
        self.local_rank = spec.local_rank
        self.local_size = spec.local_size
        self.job_id = spec.job_id
        self.launcher = spec.launcher
        self._closed = False
        self._close_lock = threading.Lock()
        self._coordinator: Coordinator | None = None
        self._client: CoordinatorClient | None = None
        self._transport = None
        self._engine: ProgressEngine | None = None
        self._batches: dict[tuple[int, int], FetchBatch] = {}
        # Memory of packs received on the host, reused once the caller drops their tiles.
        self._receive_pool = ReceivePool(options.receive_pool_bytes)
        self._seq = itertools.count(1)
        self._seq_lock = threading.Lock()
        if spec.size > MAX_RANKS:
            raise GpupartError(f"size: at most {MAX_RANKS} ranks are supported, found {spec.size}")

        topo = topology.local()
        self.host = topo.hostname
        self.device, gpu = bind_process(spec.local_rank, topo, options)
        self.backend = backends.select(
            "cpu" if self.device is None else "cuda", device_id=self.device
        )
        self.backend.use()  # the CUDA context exists before UCX starts
        self.store = TileStore(self.rank)
        self.location = Location(
            ip=topo.primary_ip,
            pid=os.getpid(),
            device=self.backend.dlpack_device,
            host=self.host,
            rank=self.rank,
            pci_bus_id=gpu.pci_bus_id if gpu else None,
            device_uuid=gpu.uuid if gpu else None,
            numa_node=gpu.numa_node if gpu else _numa_of_this_cpu(topo),
            memory=self.backend.memory_kind,
            stream=None,
        )
        self.peers: list[Location] = [self.location]
        try:
            if self.size > 1:
                self._join(spec)
            self._collectives = Collectives(
                self.rank, self.size, self._transport, self._engine, timeout=options.timeout
            )
            if self._engine is not None and self._client is not None:
                self._engine.start()
                self._client.watch(self._on_lost)
                self.barrier(timeout=options.bootstrap_timeout)  # every endpoint is wired up
        except BaseException:
            self.close(_collective=False)
            raise

    # -- joining --------------------------------------------------------------------------

    def _join(self, spec: bootstrap.JobSpec) -> None:
        from gpupart.comm.ucx import UCXTransport

        options = self.options
        self._transport = transport = UCXTransport(config=dict(options.ucx_config))
        if spec.launcher == "mpi":
            spec = bootstrap.exchange_via_mpi(
                spec, self._serve_coordinator_for(spec), timeout=options.bootstrap_timeout
            )
        elif spec.serve_coordinator:
            self._serve_coordinator_for(spec)()
        if spec.coordinator is None or spec.token is None:
            raise GpupartError(f"{spec.launcher} job has no coordinator address or token")
        self._client = CoordinatorClient(
            spec.coordinator,
            spec.token,
            job_id=spec.job_id,
            rank=self.rank,
            timeout=options.bootstrap_timeout,
        )
        local_ip = self._client.connect()
        if not local_ip.startswith("127.") or _is_loopback(self.location.ip):
            self.location = self.location._replace(ip=local_ip)
        record = {
            "rank": self.rank,
            "address": transport.address,
            "location": self.location,
            "local_rank": self.local_rank,
        }
        table = self._client.join(record)
        if spec.serve_coordinator and spec.token_file:
            # Every rank proved the token to join: the secret need not stay on disk.
            with contextlib.suppress(OSError):
                os.unlink(spec.token_file)
        self.peers = [entry["location"] for entry in table]
        self._engine = engine = ProgressEngine(
            transport, rank=self.rank, spin=options.progress_spin
        )
        for entry in table:
            if entry["rank"] != self.rank:
                transport.connect(entry["rank"], entry["address"])
        self._server = TileServer(self.store, transport, engine)
        engine.on(Kind.RESPONSE, self._on_rejection)
        self._coordinator_rank = 0 if spec.launcher in ("slurm", "mpi") else COORDINATOR_RANK

    def _serve_coordinator_for(self, spec: bootstrap.JobSpec):
        def serve() -> tuple[str, int]:
            host = spec.bind_host or "127.0.0.1"
            port = spec.coordinator[1] if spec.coordinator else 0
            self._coordinator = Coordinator(
                spec.size,
                spec.token,
                job_id=spec.job_id,
                host=host,
                port=port,
                join_timeout=self.options.bootstrap_timeout,
            ).start()
            return self._coordinator.address

        return serve

    def _on_lost(self, rank: int, reason: str) -> None:
        engine = self._engine
        if engine is None or self._closed:
            return
        if rank == COORDINATOR_RANK:
            if self._coordinator_rank >= 0:
                engine.mark_lost(self._coordinator_rank, f"it hosted the job coordinator: {reason}")
            else:
                for peer in range(self.size):
                    if peer != self.rank:
                        engine.mark_lost(peer, f"the gpupart launcher is gone: {reason}")
            return
        engine.mark_lost(rank, reason)

    # -- tiles ----------------------------------------------------------------------------

    def put(self, array: Any, stream: Any = None) -> Handle:
        """Register a local NumPy/CuPy array as a tile (no copy) and return its handle.

        ``stream`` is the backend stream the array is still being written on: owners send
        a tile only after an event recorded on it has completed. For a CuPy array without
        a stream, the current CuPy stream is used. Non-contiguous arrays are made
        contiguous first (the one case that copies). The array must not be modified while
        it is registered; :meth:`free` releases it.
        """
        self._check_open()
        info = backends.buffer_info(array)  # TypeError names the argument for non-arrays
        dtype = np.dtype(info.dtype)
        if dtype.hasobject or dtype.fields is not None:
            raise TypeError(
                f"array: expected a plain numeric/bool dtype, found {dtype} (object and"
                " structured dtypes cannot be sent)"
            )
        if info.order is None:
            array = backends.array_namespace(array).ascontiguousarray(array)
            info = backends.buffer_info(array)
        order = "F" if info.order == "F" and len(info.shape) > 1 else "C"
        event = None
        stream_handle = None
        if stream is not None:
            stream = self._as_stream(stream)
            event = self.backend.create_event()
            event.record(stream)
            stream_handle = stream.handle
        elif backends.is_cuda_array(array):
            stream = self.backend.current_stream()
            event = self.backend.create_event()
            event.record(stream)
            stream_handle = stream.handle
        tile = Tile(
            array=array,
            data=byte_view(array),
            nbytes=int(info.nbytes),
            event=event,
            address=0 if backends.is_cuda_array(array) else info.ptr,
        )
        tile_id = self.store.add(tile)
        location = self.location._replace(
            stream=stream_handle or None, device=info.device, memory=info.memory
        )
        return Handle(
            owner=self.rank,
            tile_id=tile_id,
            dtype=dtype.str,
            shape=tuple(int(n) for n in info.shape),
            nbytes=int(info.nbytes),
            location=location,
            order=order,
            job=self.job_id,
        )

    def _as_stream(self, stream: Any) -> backends.Stream:
        """Accept a backend stream or a raw ``cupy.cuda.Stream`` of this rank's device."""
        if isinstance(stream, backends.Stream):
            return stream
        if type(stream).__module__.startswith("cupy") and self.backend.is_gpu:
            return backends.CudaStream(self.backend.device_id, stream, owned=False)
        raise TypeError(
            "stream: expected a gpupart stream (rt.backend.create_stream()) or a"
            f" cupy.cuda.Stream, found {type(stream).__name__}"
        )

    def free(self, handle: Handle) -> None:
        """Release a tile this rank owns (fetches already under way still complete)."""
        self._check_open()
        if not isinstance(handle, Handle):
            raise TypeError(f"handle: expected a gpupart.Handle, found {type(handle).__name__}")
        if handle.owner != self.rank:
            raise ValueError(
                f"handle: only the owner frees a tile; it is owned by rank {handle.owner},"
                f" this is rank {self.rank}"
            )
        self.store.remove(handle.tile_id)

    def fetch(self, handles: Handle | Sequence[Handle], out: Any = None) -> list[Future]:
        """Start fetching tiles; returns one :class:`concurrent.futures.Future` per handle.

        The consumer decides what and when: every call is one request per owner, and many
        may be in flight. Each tile lands directly in a buffer on this process's device:
        ``out[i]`` when given (same shape and dtype, contiguous) or a new one. A handle to
        a tile of this rank resolves to the tile itself (no copy) unless ``out`` is given.
        Small tiles (``pack_threshold``) travel packed: without ``out`` they are views of
        the received pack, with ``out`` they are copied from it. Errors (unknown or freed
        tile, lost owner, timeout) are set on the futures; waiting on a future progresses
        the transport from the waiting thread. ``Future.cancel()`` succeeds for a tile whose
        bytes are not yet being moved into its result (a packed tile until its pack has
        arrived; a larger tile is running as soon as its receive is posted): a cancelled
        tile's ``out`` buffer is left alone.
        """
        self._check_open()
        handles = [handles] if isinstance(handles, Handle) else list(handles)
        outs, records = self._check_fetch_args(handles, out)
        futures = futures_sharing_condition(len(handles), self._help_future)
        self._start_fetch(handles, outs, records, FutureSink(futures))
        return futures

    def _help_future(self, future: Future, timeout: float | None) -> None:
        """Progress from a thread waiting on ``future`` (see ``ProgressingFuture``)."""
        engine = self._engine
        if engine is None or self._closed:
            return  # nothing to progress: the plain wait (with its timeout) follows
        limit = self.options.fetch_timeout if timeout is None else timeout
        try:
            engine.help_until(future.done, time.monotonic() + limit, "fetch: waiting", limit)
        except CommTimeoutError:
            return  # Future.result raises its own TimeoutError after its own wait
        except GpupartError:
            return  # the engine stopped: the future carries (or will carry) the error

    def get(
        self, handles: Handle | Sequence[Handle], out: Any = None, timeout: float | None = None
    ) -> Any:
        """Fetch and wait: one array for one handle, a list for a sequence of handles.

        The calling thread progresses the transport while it waits (no hand-off to the
        progress thread), which is what makes small fetches fast. Raises the first error
        among the tiles, or :class:`~gpupart.CommTimeoutError` after ``timeout`` seconds
        (default ``fetch_timeout``).
        """
        self._check_open()
        single = isinstance(handles, Handle)
        handles = [handles] if single else list(handles)
        outs, records = self._check_fetch_args(handles, out)
        limit = self.options.fetch_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        results = ResultList(len(handles))
        engine = self._engine
        if engine is None:
            self._start_fetch(handles, outs, records, results)
        else:
            with engine.helping():  # this thread progresses: no hand-off to the engine thread
                ops = self._start_fetch(handles, outs, records, results)
                if len(ops) == 1:
                    (op,) = ops
                    done = lambda: op.finished  # noqa: E731 (the hot single-owner case)
                else:
                    done = lambda: all(op.finished for op in ops)  # noqa: E731
                engine.help_until(done, deadline, "get: waiting for tiles", limit)
        values = results.result()
        return values[0] if single else values

    def _start_fetch(
        self,
        handles: list[Handle],
        outs: list[Any] | None,
        records: np.ndarray | None,
        sink: Any,
    ) -> list[FetchBatch]:
        """Serve local handles now and send one request per remote owner (into ``sink``).

        ``records`` (many handles) are their :func:`~gpupart.tiles.handles.handle_records`.
        """
        groups: list[tuple[int, np.ndarray | None]]
        if records is None:  # few handles: group them in plain Python
            by_owner: dict[int, list[int]] = {}
            for i, h in enumerate(handles):
                by_owner.setdefault(h.owner, []).append(i)
            if len(by_owner) == 1:
                groups = [(handles[0].owner, None)] if handles else []
            else:
                groups = [(o, np.asarray(idx)) for o, idx in by_owner.items()]
        else:
            owners = records["owner"]
            if owners.min() == owners.max():  # one owner (the common case): no sort
                groups = [(int(owners[0]), None)]
            else:
                order = np.argsort(owners, kind="stable")
                sorted_owners = owners[order]
                cuts = np.flatnonzero(sorted_owners[1:] != sorted_owners[:-1]) + 1
                groups = [
                    (int(sorted_owners[run[0]]), order[run])
                    for run in np.split(np.arange(len(order)), cuts)
                ]
        ops = []
        with_outs = outs is not None
        if outs is None:
            outs = [None] * len(handles)
        for owner, where in groups:
            indices = range(len(handles)) if where is None else where.tolist()
            if owner == self.rank:
                for i in indices:
                    self._fetch_local(handles[i], outs[i], sink, i)
                continue
            if where is None:
                sub_handles, sub_outs, sub_records = handles, outs, records
            else:
                sub_handles = [handles[i] for i in indices]
                sub_outs = [outs[i] for i in indices]
                sub_records = records[where] if records is not None else None
            if sub_records is None or len(sub_handles) <= _VECTOR_BATCH:
                op = self._fetch_remote(owner, sub_handles, sub_outs, sink, where, with_outs)
                ops.extend([op] if op is not None else [])
                continue
            # Many tiles: one request per pack's worth, so the owner serves the first while
            # this thread plans the next, and this thread unpacks one while the owner copies
            # the next (measured: 10,000 x 4 KiB in one request 13-14 ms, in 5 requests 8 ms).
            # Tiles that travel alone count no bytes here: they need no pipelining, and a
            # request per 8 MiB of them only added requests (256 x 1 MiB: 9-10 GB/s in 32
            # requests, 10-11 GB/s in one).
            room = self.options.pack_limit - self.options.pack_threshold  # one pack each
            sizes = sub_records["nbytes"]
            packed_bytes = np.where(sizes <= self.options.pack_threshold, sizes, 0)
            bounds = _chunk_bounds(packed_bytes, max(room, 1), _CHUNK_ITEMS)
            for lo, hi in itertools.pairwise(bounds):
                part = np.arange(lo, hi) if where is None else where[lo:hi]
                op = self._fetch_remote(
                    owner,
                    sub_handles[lo:hi],
                    sub_outs[lo:hi],
                    sink,
                    part,
                    with_outs,
                    sub_records[lo:hi],
                )
                ops.extend([op] if op is not None else [])
        return ops

    def _check_fetch_args(
        self, handles: list[Any], out: Any
    ) -> tuple[list[Any] | None, np.ndarray | None]:
        """Check handles and ``out``; return the ``out`` list and (many handles) their records.

        The list is None when no ``out`` was given; the records (see
        :func:`~gpupart.tiles.handles.handle_records`) are None for a few handles.
        """
        records = None
        if len(handles) > _VECTOR_BATCH:  # whole-list checks; the loop below names a culprit
            records = handle_records(handles)
            if records is not None:
                job = records["job"]
                owners = records["owner"]
                if (
                    not ((job == hash("")) | (job == hash(self.job_id))).all()
                    or owners.min() < 0
                    or owners.max() >= self.size
                ):
                    records = None
        if records is None:
            self._check_each_handle(handles)
        if out is None:
            return None, records
        outs = [out] if not isinstance(out, (list, tuple)) else list(out)
        if len(outs) != len(handles):
            raise ValueError(
                f"out: expected {len(handles)} buffers (one per handle), found {len(outs)}"
            )
        if records is None or not _outs_fit(handles, outs, records):
            for i, (h, buf) in enumerate(zip(handles, outs, strict=True)):
                if buf is not None:
                    _check_out(i, h, buf)  # names the first buffer that does not fit
        return outs, records

    def _check_each_handle(self, handles: list[Any]) -> None:
        for i, h in enumerate(handles):
            if not isinstance(h, Handle):
                raise TypeError(
                    f"handles[{i}]: expected a gpupart.Handle, found {type(h).__name__}"
                )
            if h._record is None and (problem := record_problem(h)) is not None:
                raise ValueError(f"handles[{i}]{problem}")
            if h.job and h.job != self.job_id:
                raise ValueError(
                    f"handles[{i}]: expected a handle of job {self.job_id!r}, found one of job"
                    f" {h.job!r}"
                )
            if not 0 <= h.owner < self.size:
                raise ValueError(
                    f"handles[{i}].owner: expected a rank in 0..{self.size - 1}, found {h.owner}"
                )

    def _fetch_local(self, handle: Handle, out: Any, sink: Any, index: int) -> None:
        try:
            tile = self.store.get(handle.tile_id)
        except TileNotFoundError as exc:
            sink.set_exception(index, exc)
            return
        if tile.nbytes != handle.nbytes:  # the remote path refuses such handles too
            sink.set_exception(index, error_for(SIZE_MISMATCH, handle))
            return
        if out is None:
            sink.set_result(index, tile.array)
            return
        if tile.event is not None:
            tile.event.synchronize(self.options.fetch_timeout)
        sink.set_result(index, copy_into(out, tile.array))

    def _reserve(self, n: int) -> int:
        with self._seq_lock:
            first = next(self._seq)
            if n > 1:
                self._seq = itertools.count(first + n)
        return first

    def _fetch_remote(
        self,
        owner: int,
        handles: list[Handle],
        outs: list[Any],
        sink: Any,
        where: np.ndarray | None,
        with_outs: bool,
        records: np.ndarray | None = None,
    ) -> FetchBatch | None:
        """Request ``handles`` from ``owner``; ``records`` (many handles) plan it vectorised."""
        engine, transport = self._engine, self._transport
        lost = engine.lost_error(owner) if engine is not None else None
        if lost is not None:
            sink.fail_pending(range(len(handles)) if where is None else where.tolist(), lost)
            return None
        opts = self.options
        n = len(handles)
        # A host consumer reads the owner's status at the head of pack 0, so small tiles
        # and the status arrive as one message. A device consumer's packs live on the
        # device, so its status comes alone, and a pack of one would only add copies.
        # Bulk requests keep the status apart too: packs of tiles only can be sent straight
        # from the owner's memory when the tiles lie there back to back.
        status_in_pack = not self.backend.is_gpu and n <= _VECTOR_BATCH
        status_bytes = n if status_in_pack else 0
        alike = None
        if records is not None:  # large batches: vectorised planning, bookkeeping in arrays
            tile_ids: Any = np.ascontiguousarray(records["tile_id"])
            nbytes: Any = np.ascontiguousarray(records["nbytes"])
            alike = records_alike(records)
            eligible = (nbytes > 0) & (nbytes <= opts.pack_threshold)
            if np.count_nonzero(eligible) < 2:  # a pack of one only adds two copies
                eligible[:] = False
            pack_of, offsets, lengths = plan_packs_bulk(
                nbytes, eligible, opts.pack_limit, status_bytes
            )
            unpacked = np.flatnonzero(~eligible).tolist()
        else:
            tile_ids = [h.tile_id for h in handles]
            nbytes = [h.nbytes for h in handles]
            threshold = opts.pack_threshold
            eligible_list = [0 < size <= threshold for size in nbytes]
            if sum(eligible_list) < 2:  # a lone tile: packing saves a message, costs copies
                small = _LONE_TILE_PACK if status_in_pack else 0
                eligible_list = [
                    packed and size <= small
                    for packed, size in zip(eligible_list, nbytes, strict=True)
                ]
            pack_of, offsets, lengths = plan_packs(
                nbytes, eligible_list, opts.pack_limit, status_bytes
            )
            unpacked = [i for i, packed in enumerate(eligible_list) if not packed]
        packs = [self._pack_buffer(length) for length in lengths]
        alone = []
        for i in unpacked:
            h, result = handles[i], outs[i]
            if result is None:
                result = self.backend.empty(h.shape, np.dtype(h.dtype), h.order)
            alone.append(AloneItem(i, result, byte_view(result)))
        batch = self._reserve(1 + n + len(packs))
        key = (owner, batch)
        op = FetchBatch(
            owner,
            batch,
            handles,
            sink,
            where,
            outs,
            tile_ids,
            nbytes,
            pack_of,
            offsets,
            packs,
            alone,
            timeout=opts.fetch_timeout,
            on_finish=lambda _op: self._batches.pop(key, None),
            status_in_pack=status_in_pack,
            with_outs=with_outs,
            alike=alike,
        )
        self._batches[key] = op
        op.post(transport, self.rank, batch + 1, batch + 1 + n)
        engine.submit(op)
        return op

    def _pack_buffer(self, nbytes: int) -> Any:
        """Return a buffer to receive one pack into (large host packs: the receive pool)."""
        if nbytes >= _POOLED_PACK and not self.backend.is_gpu:
            return self._receive_pool.empty(nbytes)
        return self.backend.empty((nbytes,), np.uint8)

    def _on_rejection(self, owner: int, batch: int, payload: np.ndarray) -> None:
        op = self._batches.get((owner, batch))
        if op is None:
            logger.debug("late rejection from rank %d for batch %d ignored", owner, batch)
            return
        try:
            op.on_rejection(payload)
        except GpupartError as exc:
            op.fail(exc)

    # -- collectives ----------------------------------------------------------------------

    def barrier(self, timeout: float | None = None) -> None:
        """Wait until every rank has called ``barrier``."""
        self._check_open()
        self._collectives.barrier(timeout)

    def broadcast(self, obj: Any, root: int = 0, timeout: float | None = None) -> Any:
        """Return ``root``'s (picklable) ``obj`` on every rank."""
        self._check_open()
        return self._collectives.broadcast(obj, root, timeout)

    def allgather(self, obj: Any, timeout: float | None = None) -> list[Any]:
        """Return a list, indexed by rank, of every rank's (picklable) ``obj``."""
        self._check_open()
        return self._collectives.allgather(obj, timeout)

    def allreduce(self, array: Any, op: str = "sum", timeout: float | None = None) -> Any:
        """Reduce a small array elementwise over all ranks: ``'sum'|'prod'|'min'|'max'``."""
        self._check_open()
        return self._collectives.allreduce(array, op, timeout)

    # -- lifetime -------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise NotInitializedError("this gpupart runtime is closed; call gpupart.init() again")

    def close(self, *, _collective: bool = True) -> None:
        """Leave the job: a closing barrier (when healthy), then stop threads and endpoints.

        Idempotent. Leaves no threads, endpoints or coordinator behind.
        """
        with self._close_lock:
            if self._closed:
                return
            engine, opts = self._engine, self.options
            if _collective and engine is not None and engine.alive and not engine.lost:
                try:
                    self._collectives.barrier(opts.close_timeout, kind=Kind.FINALIZE)
                except GpupartError as exc:
                    logger.warning("rank %d: closing barrier failed: %s", self.rank, exc)
            self._closed = True
            if engine is not None:
                engine.drain(opts.close_timeout)
                if engine.alive and not engine.lost:  # a clean leave: close endpoints gracefully
                    closing = self._transport.close_endpoints()
                    deadline = time.monotonic() + opts.close_timeout
                    while not all(r.completed for r in closing) and time.monotonic() < deadline:
                        time.sleep(0.001)  # the engine thread progresses them
                    # Keep this worker up until every rank has closed its endpoints too.
                    if self._client is not None:
                        self._client.leave(max(deadline - time.monotonic(), 0.0))
            if self._client is not None:
                self._client.close(bye=True)
            if engine is not None:
                engine.close()
            if self._transport is not None:
                self._transport.close()
            self.store.clear()
            self._receive_pool.close()
            if self._coordinator is not None:
                self._coordinator.wait_all_left(opts.close_timeout)
                self._coordinator.close()
            _registry.forget(self)

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close(_collective=exc_type is None)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<gpupart.Runtime rank={self.rank}/{self.size} host={self.host!r}"
            f" device={self.device} launcher={self.launcher} {state}>"
        )


def _chunk_bounds(nbytes: np.ndarray, limit: int, max_items: int) -> list[int]:
    """Cut tiles, in order, into chunks of about ``limit`` bytes and at most ``max_items``.

    A chunk ends with the tile that reaches ``limit`` bytes (or the ``max_items``-th one).
    """
    ends = np.cumsum(nbytes)
    bounds, start, n = [0], 0, len(nbytes)
    while start < n:
        before = int(ends[start - 1]) if start else 0
        stop = int(np.searchsorted(ends, before + limit, side="left")) + 1
        start = min(max(stop, start + 1), start + max_items, n)
        bounds.append(start)
    return bounds


_SHAPE = operator.attrgetter("shape")
_DTYPE = operator.attrgetter("dtype")
_STRIDES = operator.attrgetter("strides")
_WRITEABLE = operator.attrgetter("flags.writeable")


def _outs_fit(handles: list[Handle], outs: list[Any], records: np.ndarray) -> bool:
    """Whether ``out`` buffers all fit their handles, checked a list at a time.

    Only for the common bulk case: tiles alike (one dtype, shape and order) and every
    buffer a writable NumPy array with their contiguous strides. False means "check each"
    (which accepts what this does not know, such as relaxed strides, and names a culprit).
    """
    if not records_alike(records) or set(map(type, outs)) != {np.ndarray}:
        return False
    h, n = handles[0], len(outs)
    dtype = np.dtype(h.dtype)
    strides = _contiguous_strides(h.shape, dtype.itemsize, h.order)
    return (
        list(map(_SHAPE, outs)).count(h.shape) == n
        and list(map(_DTYPE, outs)).count(dtype) == n
        and list(map(_STRIDES, outs)).count(strides) == n
        and all(map(_WRITEABLE, outs))
    )


def _contiguous_strides(shape: tuple[int, ...], itemsize: int, order: str) -> tuple[int, ...]:
    """Strides of a C- (or F-) contiguous array of ``shape``."""
    dims = shape if order == "F" else shape[::-1]
    strides, step = [], itemsize
    for dim in dims:
        strides.append(step)
        step *= dim
    return tuple(strides if order == "F" else strides[::-1])


def _check_out(i: int, h: Handle, buf: Any) -> None:
    """Check one ``out`` buffer against its handle (array attributes only: this is hot)."""
    if type(buf) is np.ndarray:  # the common case, without the generic probing below
        flags = buf.flags
        if (
            buf.shape == h.shape
            and buf.dtype.str == h.dtype
            and flags.writeable
            and (flags.c_contiguous if h.order == "C" or buf.ndim <= 1 else flags.f_contiguous)
        ):
            return
    if not (hasattr(buf, "__array_interface__") or hasattr(buf, "__cuda_array_interface__")):
        raise TypeError(
            f"out[{i}]: expected a NumPy/CuPy array or None, found {type(buf).__name__}"
        )
    shape, dtype = tuple(buf.shape), np.dtype(buf.dtype)
    if shape != h.shape or dtype.str != h.dtype:
        raise ValueError(
            f"out[{i}]: expected shape {h.shape} dtype {np.dtype(h.dtype)}, found shape {shape}"
            f" dtype {dtype}"
        )
    flags = buf.flags
    if isinstance(buf, np.ndarray) and not flags.writeable:
        raise ValueError(f"out[{i}]: expected a writable array, found a read-only one")
    c, f = bool(flags.c_contiguous), bool(flags.f_contiguous)
    ok = (c or f) if len(shape) <= 1 or buf.size <= 1 else (c if h.order == "C" else f)
    if not ok:
        found = "C-contiguous" if c else "F-contiguous" if f else "non-contiguous"
        raise ValueError(f"out[{i}]: expected a {h.order}-contiguous array, found {found}")


def _is_loopback(ip: str | None) -> bool:
    """Whether ``ip`` is missing or a loopback address."""
    return ip is None or ip.startswith("127.") or ip == "::1"


def _numa_of_this_cpu(topo: topology.HostTopology) -> int | None:
    """Return the NUMA node holding every CPU this process may run on, if there is one.

    Uses the topology already read (no second look at /sys); ``None`` when the allowed
    CPUs span several nodes or the host does not say.
    """
    allowed = os.sched_getaffinity(0)
    nodes = [node.id for node in topo.numa_nodes if allowed <= set(node.cpus)]
    return nodes[0] if len(nodes) == 1 else None


class _Registry:
    """The process's one runtime (one process per GPU: one runtime per process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runtime: Runtime | None = None
        self._atexit = False

    def get_or_start(self, options: dict[str, Any]) -> Runtime:
        with self._lock:
            rt = self._runtime
            if rt is not None and not rt.closed:
                if options:
                    logger.warning(
                        "gpupart.init: a runtime is already running; options %s ignored",
                        sorted(options),
                    )
                return rt
            resolved = RuntimeOptions.resolve(options)
            spec = bootstrap.detect()
            rt = Runtime(spec, resolved)
            self._runtime = rt
            if not self._atexit:
                atexit.register(self._close_at_exit)
                self._atexit = True
            return rt

    def current(self) -> Runtime:
        rt = self._runtime
        if rt is None or rt.closed:
            raise NotInitializedError("no gpupart runtime is running; call gpupart.init() first")
        return rt

    def forget(self, rt: Runtime) -> None:
        if self._runtime is rt:
            self._runtime = None

    def _close_at_exit(self) -> None:
        rt = self._runtime
        if rt is not None and not rt.closed:
            rt.close(_collective=False)


_registry = _Registry()


def init(**options: Any) -> Runtime:
    """Join this process's gpupart job (or return the runtime it already joined).

    Rank and size come from the gpupart launcher, Slurm, MPI, or default to a world of one
    process. Keyword options are those of :class:`~gpupart.options.RuntimeOptions`.
    """
    return _registry.get_or_start(options)


def current() -> Runtime:
    """Return the runtime :func:`init` started (:class:`~gpupart.NotInitializedError` if none)."""
    return _registry.current()
