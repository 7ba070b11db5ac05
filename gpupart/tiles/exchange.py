"""The all-to-all exchange that shuffles, repartitioning and joins are built on.

Every rank passes one *piece* per destination rank: an array, or a dict of equal-length
columns (:mod:`gpupart.tiles.columns`: fixed-width arrays, strings and binary in the Arrow
layout); each gets back the pieces addressed to it, from every rank, in rank order.

1. Each rank registers the buffers of the pieces for the others as tiles that only their
   destination may fetch, released after that one fetch (no copy: the tiles are the
   caller's arrays).
2. One all-to-all of metadata (:meth:`~gpupart.comm.collectives.Collectives.alltoall`):
   each rank tells each other rank the specs and handles of its piece (``O(size)``
   messages per rank). A rank whose pieces are wrong tells everyone, so every rank raises.
3. Each rank fetches what it is owed straight into new buffers, starting with the next
   rank up (so that not everyone reads the same owner at once), keeping at most
   ``exchange_window`` bytes of buffers allocated but not yet filled.
4. A rank returns once it has everything it is owed and every piece it sent has been
   fetched (the caller may then change its arrays). A peer lost meanwhile is a
   :class:`~gpupart.PeerLostError` on every rank that waits on it.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gpupart.comm.collectives import Collectives
from gpupart.comm.engine import ProgressEngine
from gpupart.errors import CollectiveError, CommTimeoutError, PeerLostError
from gpupart.tiles import columns
from gpupart.tiles.fetcher import Fetcher
from gpupart.tiles.handles import Handle
from gpupart.tiles.owner import TileOwner
from gpupart.tiles.pool import ReceivePool
from gpupart.tiles.store import TileStore
from gpupart.tiles.transfer import Transfer
from gpupart.trace import annotate

__all__ = ["Exchange"]

#: One fetch call of an exchange moves about this share of the window.
_CALLS_PER_WINDOW = 4


class Exchange:
    """Runs exchanges for one rank (see the module docstring)."""

    def __init__(
        self,
        *,
        rank: int,
        size: int,
        owner: TileOwner,
        store: TileStore,
        fetcher: Fetcher,
        collectives: Collectives,
        engine: ProgressEngine | None,
        backend: Any,
        window: int,
        timeout: float,
        pool_bytes: int = 256 << 20,
    ) -> None:
        self.rank = rank
        self.size = size
        self._owner = owner
        self._store = store
        self._fetcher = fetcher
        self._collectives = collectives
        self._engine = engine
        self._backend = backend
        self._window = window
        self._timeout = timeout
        self._pool = ReceivePool(pool_bytes)

    def run(self, pieces: Sequence[Any], timeout: float | None = None) -> list[Any]:
        """Exchange ``pieces`` (``pieces[d]`` for rank ``d``); return the pieces for here."""
        with annotate("exchange"):
            return self._run(pieces, timeout)

    def _run(self, pieces: Sequence[Any], timeout: float | None) -> list[Any]:
        limit = self._timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        problem: Exception | None = None
        described: list[tuple[dict, list[Any]]] = []
        sent: dict[int, int] = {}  # tile id of each piece for another rank -> that rank
        try:
            try:
                described = self._describe_all(pieces)
                outgoing = self._register(described, sent)
            except Exception as exc:  # whatever a piece does wrong, every rank must hear it
                problem = exc
                self._release(sent)
                outgoing = [{"error": f"rank {self.rank}: {_text(exc)}"}] * self.size
            inbox = self._collectives.alltoall(outgoing, _remaining(deadline, limit))
            _raise_reported(inbox, problem)
            received = self._fetch_all(inbox, deadline, limit)
            self._wait_fetched(sent, deadline, limit)
        except BaseException:
            self._release(sent)
            raise
        own_spec, own_buffers = described[self.rank]
        received[self.rank] = (own_spec, own_buffers)
        return [_rebuild(spec, buffers) for spec, buffers in received]

    def close(self) -> None:
        """Drop the pooled memory of earlier results."""
        self._pool.close()

    # -- steps ----------------------------------------------------------------------------

    def _describe_all(self, pieces: Sequence[Any]) -> list[tuple[dict, list[Any]]]:
        if isinstance(pieces, (str, bytes, Mapping)) or not isinstance(pieces, Sequence):
            raise TypeError(
                f"pieces: expected a sequence of {self.size} pieces (one per rank), found"
                f" {type(pieces).__name__}"
            )
        if len(pieces) != self.size:
            raise ValueError(
                f"pieces: expected {self.size} pieces (one per rank), found {len(pieces)}"
            )
        return [_describe(piece, f"pieces[{d}]") for d, piece in enumerate(pieces)]

    def _release(self, sent: dict[int, int]) -> None:
        """Drop the pieces registered for other ranks that are still here."""
        for tile_id in sent:
            if tile_id in self._store:
                self._store.remove(tile_id)
        sent.clear()

    def _register(
        self, described: list[tuple[dict, list[Any]]], sent: dict[int, int]
    ) -> list[dict]:
        """Put every other rank's buffers as tiles only it may fetch, once; return the metadata."""
        outgoing: list[dict] = []
        for dst, (spec, buffers) in enumerate(described):
            handles: list[Handle | None] = []
            if dst != self.rank:
                for buf in buffers:
                    if _nbytes(buf) == 0:
                        handles.append(None)  # nothing to move: made on arrival
                        continue
                    h = self._owner.put(buf, consumer=dst, uses=1)
                    sent[h.tile_id] = dst
                    handles.append(h)
            outgoing.append(
                {"spec": spec, "handles": handles, "buffers": _buffer_meta(spec, buffers)}
            )
        return outgoing

    def _fetch_all(
        self, inbox: list[dict], deadline: float, limit: float
    ) -> list[tuple[dict, list[Any]]]:
        """Fetch every buffer owed here, at most a window of bytes outstanding at a time."""
        received: list[tuple[dict, list[Any]]] = [({}, [])] * self.size
        wanted: list[tuple[int, int, Handle, bool]] = []
        for step in range(1, self.size):
            src = (self.rank + step) % self.size
            meta = inbox[src]
            slots: list[Any] = []
            for k, (h, buf) in enumerate(zip(meta["handles"], meta["buffers"], strict=True)):
                dtype, shape, order, on_host = buf
                if h is None:
                    slots.append(self._allocate(dtype, shape, order, on_host))
                else:
                    slots.append(None)
                    wanted.append((src, k, h, on_host))
            received[src] = (meta["spec"], slots)
        chunk = max(self._window // _CALLS_PER_WINDOW, 1)
        in_flight: collections.deque[tuple[Transfer, list[tuple[int, int]], int]] = (
            collections.deque()
        )
        outstanding = start = 0
        while start < len(wanted) or in_flight:
            while start < len(wanted):
                stop, size = start, 0  # the next call: about a chunk, at least one buffer
                while stop < len(wanted) and (
                    stop == start or size + wanted[stop][2].nbytes <= chunk
                ):
                    size += wanted[stop][2].nbytes
                    stop += 1
                if in_flight and outstanding + size > self._window:
                    break  # wait for room (a buffer larger than the window goes alone)
                part = wanted[start:stop]
                outs = [self._allocate(h.dtype, h.shape, h.order, host) for _, _, h, host in part]
                transfer = self._fetcher.start(
                    [h for _, _, h, _ in part], outs, _remaining(deadline, limit)
                )
                in_flight.append((transfer, [(src, k) for src, k, _, _ in part], size))
                outstanding += size
                start = stop
            transfer, places, size = in_flight.popleft()
            values = self._wait(transfer, deadline, limit)
            for (src, k), value in zip(places, values, strict=True):
                received[src][1][k] = value
            outstanding -= size
        return received

    def _wait(self, transfer: Transfer, deadline: float, limit: float) -> list[Any]:
        try:
            return transfer.result(_remaining(deadline, limit))
        except CommTimeoutError as exc:
            transfer.abort(exc)
            raise

    def _wait_fetched(self, sent: dict[int, int], deadline: float, limit: float) -> None:
        """Wait until every piece sent from here was fetched (or its consumer is lost).

        ``sent`` maps the tile id of each piece to the rank it is for; a lost rank fails the
        exchange only if a piece for it was still here.
        """
        if not sent or self._engine is None:
            return
        store, engine = self._store, self._engine

        def waiting() -> list[int]:
            return [rank for tile_id, rank in sent.items() if tile_id in store]

        def settled() -> bool:
            return all(engine.lost_error(rank) is not None for rank in waiting())

        engine.help_until(
            settled, deadline, "exchange: waiting for the pieces to be fetched", limit
        )
        for rank in waiting():
            err = engine.lost_error(rank)
            if err is not None:
                raise PeerLostError(rank, f"{err.reason} (during an exchange)")

    # -- buffers --------------------------------------------------------------------------

    def _allocate(self, dtype: str, shape: tuple[int, ...], order: str, on_host: bool) -> Any:
        """Return a buffer for one incoming buffer (:func:`_buffer_meta` says where).

        Host buffers come from a pool (large ones reuse the memory of earlier results once
        those are dropped: a shuffle repeated in a loop does not fault in fresh pages).
        """
        dt = np.dtype(dtype)
        if self._backend.is_gpu and not on_host:
            return self._backend.empty(shape, dt, order)
        nbytes = dt.itemsize * math.prod(shape)
        return self._pool.empty(nbytes).view(dt).reshape(shape, order=order)


def _describe(piece: Any, where: str) -> tuple[dict, list[Any]]:
    """Spec and buffers of one piece: an array (column) or a dict of equal-length columns."""
    if isinstance(piece, Mapping):
        names, specs, buffers = [], [], []
        length = None
        for name, column in piece.items():
            if not isinstance(name, str):
                raise TypeError(f"{where}: expected str column names, found {name!r}")
            path = f"{where}[{name!r}]"
            spec, bufs = columns.describe(column, path)
            n = columns.length_of(column)
            if length is not None and n != length:
                raise ValueError(
                    f"{path}: expected {length} rows like the columns before it, found {n}"
                )
            length = n
            names.append(name)
            specs.append(spec)
            buffers.extend(bufs)
        return {"piece": "columns", "names": names, "columns": specs}, buffers
    if not columns.is_column(piece):
        raise TypeError(
            f"{where}: expected an array or a dict of columns, found {type(piece).__name__}"
        )
    spec, buffers = columns.describe(piece, where)
    return {"piece": "array", "column": spec}, buffers


def _rebuild(spec: dict, buffers: list[Any]) -> Any:
    if spec["piece"] == "array":
        return columns.rebuild(spec["column"], buffers)
    out, k = {}, 0
    for name, column in zip(spec["names"], spec["columns"], strict=True):
        n = 1 if column["kind"] == "fixed" else 3 if column["nulls"] else 2
        out[name] = columns.rebuild(column, buffers[k : k + n])
        k += n
    return out


def _raise_reported(inbox: list[dict], problem: Exception | None) -> None:
    """Raise, on every rank alike, the problems ranks reported instead of their metadata."""
    errors = [m["error"] for m in inbox if "error" in m]
    if errors:
        raise CollectiveError(f"exchange: {'; '.join(errors)}") from problem


BufferMeta = tuple[str, tuple[int, ...], str, bool]


def _buffer_meta(spec: dict, buffers: list[Any]) -> list[BufferMeta]:
    """``(dtype, shape, order, on_host)`` of every buffer of a piece.

    Buffers of variable-length columns live on the host (they become Arrow arrays); those
    of arrays live on the receiving rank's device.
    """
    specs = [spec["column"]] if spec["piece"] == "array" else spec["columns"]
    host = []
    for column in specs:
        host += [False] if column["kind"] == "fixed" else [True] * (3 if column["nulls"] else 2)
    meta = []
    for buf, on_host in zip(buffers, host, strict=True):
        order = "F" if buf.ndim > 1 and not buf.flags.c_contiguous else "C"
        meta.append((np.dtype(buf.dtype).str, tuple(int(n) for n in buf.shape), order, on_host))
    return meta


def _nbytes(buffer: Any) -> int:
    return int(buffer.nbytes)


def _text(exc: Exception) -> str:
    """Describe an error for other ranks: its message, and its type unless that is plain."""
    return str(exc) if isinstance(exc, (TypeError, ValueError)) else f"{type(exc).__name__}: {exc}"


def _remaining(deadline: float, limit: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise CommTimeoutError("exchange", limit)
    return remaining
