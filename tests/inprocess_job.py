"""A job of N ranks inside this process, over the in-process transport, for fetch tests.

Each :class:`Rank` is wired the way ``gpupart.core.Runtime`` wires itself (transport ->
progress engine -> tile server, collectives, fetcher -> engine started), except that its
transport is one end of an :class:`~gpupart.comm.inprocess.InProcessHub` instead of UCX and
there is no coordinator: every transport is connected to every other one up front. A world
of one has no transport and no engine, as in the runtime. ``can_cancel=False`` gives every
rank a transport that cannot withdraw receives.

:meth:`InProcessJob.run` calls a function once per rank, each on its own thread, and returns
their results by rank; one rank failing marks it lost on the others (so their collectives
stop waiting for it, as a real job stops) and the first failure (the cause) is raised. :meth:`close`
stops every engine and transport and checks that no progress thread is left.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gpupart import backend as backends
from gpupart.comm.collectives import Collectives
from gpupart.comm.engine import ProgressEngine
from gpupart.comm.inprocess import InProcessHub, InProcessTransport
from gpupart.location import Location
from gpupart.options import RuntimeOptions
from gpupart.tiles.fetcher import Fetcher
from gpupart.tiles.handles import Handle
from gpupart.tiles.serve import TileServer
from gpupart.tiles.store import Tile, TileStore, byte_view
from gpupart.tiles.transfer import Transfer

__all__ = ["InProcessJob", "ManualEvent", "Rank"]

#: Limit for one rank's function in :meth:`InProcessJob.run` (operations inside use less).
RUN_TIMEOUT = 120.0
#: Limit for collectives and for stopping each engine.
COLLECTIVE_TIMEOUT = 60.0


class ManualEvent:
    """A ready event whose work completes when the test says so (``done`` until then False)."""

    def __init__(self) -> None:
        self.done = False
        self.waited = threading.Event()

    def complete(self) -> None:
        """Let the tile go out."""
        self.done = True
        self.waited.set()

    def synchronize(self, timeout: float) -> None:
        """Wait until :meth:`complete` (the local ``out=`` path waits on the event)."""
        if not self.waited.wait(timeout):
            raise TimeoutError(f"event not completed within {timeout}s")


class Rank:
    """One rank of an :class:`InProcessJob`: its store, server, fetcher and collectives."""

    def __init__(
        self,
        rank: int,
        size: int,
        transport: InProcessTransport | None,
        *,
        job_id: str,
        options: RuntimeOptions,
        serve_timeout: float,
    ) -> None:
        self.rank = rank
        self.size = size
        self.job_id = job_id
        self.options = options
        self.transport = transport
        self.backend = backends.select("cpu")
        self.store = TileStore(rank)
        self.location = Location(
            ip="127.0.0.1", pid=os.getpid(), device="kDLCPU", host="inprocess", rank=rank
        )
        self.engine = None if transport is None else ProgressEngine(transport, rank=rank)
        self.server = (
            None
            if transport is None
            else TileServer(self.store, transport, self.engine, serve_timeout=serve_timeout)
        )
        self.collectives = Collectives(
            rank, size, transport, self.engine, timeout=COLLECTIVE_TIMEOUT
        )
        self.fetcher = Fetcher(
            rank=rank,
            size=size,
            job_id=job_id,
            store=self.store,
            backend=self.backend,
            options=options,
            transport=transport,
            engine=self.engine,
        )

    # -- what Runtime offers, for NumPy arrays ----------------------------------------------

    def put(self, array: Any, event: Any = None) -> Handle:
        """Register a NumPy array as a tile, as ``Runtime.put`` does; returns its handle.

        ``event``, if given, is attached with ``TileStore.attach_event`` (the owner then
        sends the tile only once ``event.done``).
        """
        info = backends.buffer_info(array)
        if info.order is None:
            array = np.ascontiguousarray(array)
            info = backends.buffer_info(array)
        order = "F" if info.order == "F" and len(info.shape) > 1 else "C"
        tile = Tile(array=array, data=byte_view(array), nbytes=int(info.nbytes), address=info.ptr)
        tile_id = self.store.add(tile)
        if event is not None:
            self.store.attach_event(tile_id, event)
        return Handle(
            owner=self.rank,
            tile_id=tile_id,
            dtype=np.dtype(info.dtype).str,
            shape=tuple(int(n) for n in info.shape),
            nbytes=int(info.nbytes),
            location=self.location,
            order=order,
            job=self.job_id,
        )

    def free(self, handle: Handle) -> None:
        """Forget one of this rank's tiles."""
        self.store.remove(handle.tile_id)

    def fetch(self, handles: Sequence[Handle], out: Any = None) -> Transfer:
        """Start fetching, as ``Runtime.fetch``."""
        return self.fetcher.start(list(handles), out)

    def get(self, handles: Sequence[Handle], out: Any = None, timeout: float | None = None):
        """Fetch and wait, as ``Runtime.get`` with a list of handles."""
        return self.fetcher.get(list(handles), out, timeout)

    # -- lifetime ---------------------------------------------------------------------------

    def close(self, timeout: float) -> None:
        """Stop the engine, then release the transport, fetcher, server and tiles."""
        stopped = self.engine is None or self.engine.close(timeout)
        if self.transport is not None and stopped:  # never under a running engine
            self.transport.close()
        self.fetcher.close()
        if self.server is not None:
            self.server.close()
        self.store.clear()


class InProcessJob:
    """``size`` ranks in this process (see the module docstring); a context manager."""

    def __init__(
        self,
        size: int,
        *,
        options: RuntimeOptions | None = None,
        serve_timeout: float = 60.0,
        job_id: str = "inprocess-job",
        can_cancel: bool = True,
    ) -> None:
        self.size = size
        self.options = RuntimeOptions() if options is None else options
        self.hub = InProcessHub()
        transports: list[InProcessTransport | None]
        if size > 1:
            transports = [self.hub.transport(can_cancel=can_cancel) for _ in range(size)]
            for me, transport in enumerate(transports):
                for peer, other in enumerate(transports):
                    if peer != me:
                        transport.connect(peer, other.address)
        else:
            transports = [None]  # a world of one: no messages, as in the runtime
        self.ranks = [
            Rank(
                r,
                size,
                transports[r],
                job_id=job_id,
                options=self.options,
                serve_timeout=serve_timeout,
            )
            for r in range(size)
        ]
        for rank in self.ranks:
            if rank.engine is not None:
                rank.engine.start()
        self._closed = False

    def run(self, fn: Callable[[Rank], Any], timeout: float = RUN_TIMEOUT) -> list[Any]:
        """Call ``fn(rank)`` for every rank on its own thread; return the results by rank."""
        results: list[Any] = [None] * self.size
        errors: list[BaseException] = []  # in the order they happened: the first is the cause
        lock = threading.Lock()

        def main(rank: Rank) -> None:
            try:
                results[rank.rank] = fn(rank)
            except BaseException as exc:
                with lock:
                    errors.append(exc)
                for other in self.ranks:  # one rank failing stops the job
                    if other is not rank and other.engine is not None:
                        other.engine.mark_lost(rank.rank, f"it failed: {exc!r}")

        threads = [
            threading.Thread(target=main, args=(rank,), name=f"rank-{rank.rank}", daemon=True)
            for rank in self.ranks
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        stuck = [t.name for t in threads if t.is_alive()]
        if stuck:
            self.close()  # stops the engines: the stuck ranks' waits end
            raise TimeoutError(f"{stuck} still running after {timeout}s")
        if errors:
            raise errors[0]
        return results

    def close(self, timeout: float = COLLECTIVE_TIMEOUT) -> None:
        """Close every rank; fails if a progress thread is still running. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for rank in self.ranks:
            rank.close(timeout)
        alive = [r.rank for r in self.ranks if r.engine is not None and r.engine.alive]
        if alive:
            raise RuntimeError(f"the progress threads of ranks {alive} did not stop")

    def __enter__(self) -> InProcessJob:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
