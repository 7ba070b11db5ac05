"""The per-process runtime: join the job, own tiles, fetch any tile, run collectives."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from gpupart import backend as backends
from gpupart import topology
from gpupart.comm.auth import MessageSeal, job_key
from gpupart.comm.collectives import Collectives
from gpupart.comm.engine import ProgressEngine
from gpupart.comm.tags import MAX_RANKS, Kind
from gpupart.comm.transport import Transport
from gpupart.errors import GpupartError, NotInitializedError
from gpupart.job import bootstrap
from gpupart.job.binding import bind_process
from gpupart.job.coordinator import COORDINATOR_RANK, Coordinator, CoordinatorClient
from gpupart.location import Location
from gpupart.logs import RankLogging
from gpupart.options import RuntimeOptions
from gpupart.tiles.exchange import Exchange
from gpupart.tiles.fetcher import Fetcher
from gpupart.tiles.handles import Handle
from gpupart.tiles.owner import TileOwner
from gpupart.tiles.serve import TileServer
from gpupart.tiles.store import TileStore
from gpupart.tiles.transfer import Transfer
from gpupart.transfer_summary import TransferLog

__all__ = ["Runtime", "current", "init"]

logger = logging.getLogger("gpupart.runtime")


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
        self._transport: Transport | None = None
        self._engine: ProgressEngine | None = None
        self._server: TileServer | None = None
        self._fetcher: Fetcher | None = None
        self._exchange: Exchange | None = None
        self._logging: RankLogging | None = None
        self._transfers: TransferLog | None = None
        if spec.size > MAX_RANKS:
            raise GpupartError(f"size: at most {MAX_RANKS} ranks are supported, found {spec.size}")

        self._logging = RankLogging(self.rank, options.log_level)  # binding logs too
        try:
            topo = topology.local()
            self.host = topo.hostname
            self.device, gpu = bind_process(spec.local_rank, topo, options)
            self.backend = backends.select(
                "cpu" if self.device is None else "cuda", device_id=self.device
            )
            self.backend.use()  # the CUDA context exists before UCX starts
        except BaseException:
            self._logging.close()
            raise
        self._store = TileStore(self.rank)
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
            if options.transfer_summary:
                self._transfers = TransferLog(
                    rank=self.rank,
                    size=self.size,
                    job_id=self.job_id,
                    host=self.host,
                    target=options.transfer_summary,
                )
            if self.size > 1:
                self._join(spec)
                self._logging.attach()  # the loggers of the modules _join imported
            self._collectives = Collectives(
                self.rank, self.size, self._transport, self._engine, timeout=options.timeout
            )
            self._owner = TileOwner(
                self._store,
                self.backend,
                rank=self.rank,
                job_id=self.job_id,
                location=self.location,
            )
            self._fetcher = Fetcher(
                rank=self.rank,
                size=self.size,
                job_id=self.job_id,
                store=self._store,
                backend=self.backend,
                options=options,
                transport=self._transport,
                engine=self._engine,
                traffic=None if self._transfers is None else self._transfers.received,
            )
            self._exchange = Exchange(
                rank=self.rank,
                size=self.size,
                owner=self._owner,
                store=self._store,
                fetcher=self._fetcher,
                collectives=self._collectives,
                engine=self._engine,
                backend=self.backend,
                window=options.exchange_window,
                timeout=options.timeout,
                pool_bytes=options.receive_pool_bytes,
            )
            if self._engine is not None and self._client is not None:
                self._engine.start()
                self._client.watch(self._on_lost)
                self.barrier(timeout=options.bootstrap_timeout)  # every endpoint is wired up
        except BaseException:
            self._close(failure=None, collective=False)
            raise

    # -- joining --------------------------------------------------------------------------

    def _join(self, spec: bootstrap.JobSpec) -> None:
        from gpupart.comm.ucx import UCXTransport, job_devices, load_ucx

        options = self.options
        load_ucx()  # before MPI: an MPI imported later then binds to this UCX, not its own
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
        # UCX listens only where the job talks: the interface this rank reaches the
        # coordinator through (loopback for a one-machine job), plus InfiniBand ports.
        self._transport = transport = UCXTransport(
            config=dict(options.ucx_config), devices=job_devices(local_ip)
        )
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
            transport,
            rank=self.rank,
            spin=options.progress_spin,
            seal=MessageSeal(job_key(spec.token, spec.job_id), self.rank),
            max_message=options.max_message_bytes,
        )
        for entry in table:
            if entry["rank"] != self.rank:
                transport.connect(entry["rank"], entry["address"])
        self._server = TileServer(
            self._store,
            transport,
            engine,
            serve_timeout=options.fetch_timeout,
            pack_threshold=options.pack_threshold,
            traffic=None if self._transfers is None else self._transfers.sent,
        )
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

    def put(self, array: Any, stream: Any = None, *, release_after: int | None = None) -> Handle:
        """Register a local NumPy/CuPy array as a tile (no copy) and return its handle.

        ``stream`` is the backend stream (or ``cupy.cuda.Stream``) the array may still be
        written on: owners send a tile only after an event recorded on it has completed;
        for a CuPy array without one, the current CuPy stream is used. A non-contiguous
        array is copied into a contiguous one first (the only case that copies). The array
        must not be modified while it is registered. :meth:`free` releases it; with
        ``release_after=k`` it is also released once other ranks have fetched it ``k``
        times (fetches by this rank do not count).
        """
        self._check_open()
        return self._owner.put(array, stream, uses=release_after)

    def free(self, handle: Handle) -> None:
        """Release a tile this rank owns (fetches already under way still complete)."""
        self._check_open()
        self._owner.free(handle)

    def fetch(self, handles: Handle | Sequence[Handle], out: Any = None) -> Transfer:
        """Start fetching tiles; returns a :class:`~gpupart.tiles.transfer.Transfer`.

        The consumer decides what and when: each call sends a few requests per owner, and
        many calls may be in flight. Each tile lands directly in a buffer on this process's
        device: ``out[i]`` when given (same shape and dtype, contiguous) or a new one. A
        handle to a tile of this rank resolves to the tile itself (no copy) unless ``out``
        is given. Small tiles (``pack_threshold``) travel packed: without ``out`` they are
        views of the received pack, with ``out`` they are copied from it. Errors (unknown or
        freed tile, lost owner, ``fetch_timeout``) are set on the tiles; waiting progresses
        the transport from the waiting thread. ``transfer[i].cancel()`` succeeds while a
        tile's bytes are not yet moving into its result; a cancelled or failed tile's
        ``out`` buffer is left alone.
        """
        self._check_open()
        return self._fetcher.start([handles] if isinstance(handles, Handle) else handles, out)

    def get(
        self, handles: Handle | Sequence[Handle], out: Any = None, timeout: float | None = None
    ) -> Any:
        """Fetch and wait: one array for one handle, a list for a sequence of handles.

        The calling thread progresses the transport while it waits. Raises the first error
        among the tiles, or :class:`~gpupart.CommTimeoutError` after ``timeout`` seconds
        (default ``fetch_timeout``); a call that times out has withdrawn what it started,
        and leaves the ``out`` buffers of the tiles it did not deliver untouched.
        """
        self._check_open()
        single = isinstance(handles, Handle)
        if single and out is not None:
            out = [out]
        values = self._fetcher.get([handles] if single else handles, out, timeout)
        return values[0] if single else values

    def exchange(self, pieces: Sequence[Any], timeout: float | None = None) -> list[Any]:
        """All-to-all: send ``pieces[d]`` to rank ``d``; return the pieces sent here, by rank.

        Called by every rank. A piece is an array (NumPy/CuPy; or strings/binary as a
        ``pyarrow`` array or a NumPy array of ``str``) or a dict of equal-length such
        columns, possibly empty. Pieces come back as the same kind: arrays (on this rank's
        device), ``pyarrow`` arrays for strings, dicts of columns. Metadata travels in one
        all-to-all; each rank fetches what it is owed straight into new buffers, at most
        ``exchange_window`` bytes outstanding. Returns once every piece sent from here has
        been fetched (the caller may then change what it sent; the piece a rank addresses to
        itself comes back as it was passed, not copied). Wrong pieces on any rank raise
        :class:`~gpupart.CollectiveError` on every rank; a lost peer,
        :class:`~gpupart.PeerLostError`.
        """
        self._check_open()
        return self._exchange.run(pieces, timeout)

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

    def alltoall(self, objs: Sequence[Any], timeout: float | None = None) -> list[Any]:
        """Send small ``objs[d]`` to rank ``d``; return what every rank sent here, by rank."""
        self._check_open()
        return self._collectives.alltoall(objs, timeout)

    def allreduce(self, array: Any, op: str = "sum", timeout: float | None = None) -> Any:
        """Reduce a small array elementwise over all ranks: ``'sum'|'prod'|'min'|'max'``."""
        self._check_open()
        return self._collectives.allreduce(array, op, timeout)

    @property
    def bytes_fetched(self) -> int:
        """Bytes this rank has asked other ranks for so far (``get``, ``fetch``, ``exchange``).

        Tiles of this rank itself do not count; a benchmark's difference before and after
        an operation is what the operation moved to this rank.
        """
        return 0 if self._fetcher is None else self._fetcher.fetched_bytes

    # -- lifetime -------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise NotInitializedError("this gpupart runtime is closed; call gpupart.init() again")

    def close(self) -> None:
        """Leave the job: a closing barrier, then stop threads and endpoints.

        Idempotent. Leaves no threads, endpoints or coordinator behind.
        """
        self._close(failure=None)

    def _close(self, failure: str | None, *, collective: bool = True) -> None:
        """Close; with ``failure`` (the error this rank fails with) tell the job and go fast.

        A failing rank reports its error to the coordinator, which tells every other rank
        at once (they raise :class:`~gpupart.PeerLostError` quoting it) and the launcher
        (which names this rank); it then stops without waiting for anyone.
        """
        with self._close_lock:
            if self._closed:
                return
            engine, opts = self._engine, self.options
            deadline = time.monotonic() + opts.close_timeout  # for the whole of close()
            healthy = failure is None and engine is not None and engine.alive and not engine.lost
            if failure is not None and self._client is not None:
                self._client.report_failure(failure, timeout=min(opts.close_timeout, 2.0))
            if self._transfers is not None:  # before any endpoint closes
                gather = self._collectives.allgather if healthy and collective else None
                self._transfers.publish(self._transport, gather, opts.timeout)
            if healthy and collective:
                try:
                    self._collectives.barrier(0.5 * opts.close_timeout, kind=Kind.FINALIZE)
                except GpupartError as exc:
                    logger.warning("rank %d: closing barrier failed: %s", self.rank, exc)
                healthy = engine.alive and not engine.lost
            self._closed = True
            if healthy:  # a clean leave: last sends, then close endpoints gracefully
                engine.drain(max(deadline - time.monotonic(), 0.0))
                closing = self._transport.close_endpoints()
                while not all(r.completed for r in closing) and time.monotonic() < deadline:
                    time.sleep(0.001)  # the engine thread progresses them
                # Keep this worker up until every rank has closed its endpoints too.
                if self._client is not None:
                    self._client.leave(max(deadline - time.monotonic(), 0.0))
            if self._client is not None:
                self._client.close(bye=failure is None)
            stopped = True
            if engine is not None:
                stopped = engine.close(max(deadline - time.monotonic(), 0.1))
            if self._fetcher is not None:
                self._fetcher.close()
            if self._exchange is not None:
                self._exchange.close()
            if self._server is not None:
                self._server.close()
            if self._transport is not None and stopped:
                self._transport.close()  # never under a progress thread that still runs
            self._store.clear()
            if self._coordinator is not None:
                if failure is None:
                    self._coordinator.wait_all_left(max(deadline - time.monotonic(), 0.0))
                self._coordinator.close()
            if self._logging is not None:
                self._logging.close()
            _registry.forget(self)

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._close(failure=_describe_failure(exc))

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"<gpupart.Runtime rank={self.rank}/{self.size} host={self.host!r}"
            f" device={self.device} launcher={self.launcher} {state}>"
        )


def _describe_failure(exc: object) -> str:
    """How a failing rank names its error to the job: type and message."""
    return f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else str(exc)


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
            # An uncaught exception (already printed) is this rank's failure; otherwise the
            # program ended without closing: leave without waiting for the others.
            error = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
            rt._close(failure=None if error is None else _describe_failure(error), collective=False)


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
