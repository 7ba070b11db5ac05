"""The owner's side of fetch: answer requests for this rank's tiles from the progress thread.

:class:`TileServer` parses each request (:mod:`gpupart.tiles.wire`), looks its tiles up,
sends an error reply first when some are missing or mismatched, waits until the tiles'
ready events have completed, and sends every pack and every tile that travels alone. A
tile alone goes from its own memory. A host pack whose tiles lie back to back in this
process's memory exactly as the pack lays them out (tiles cut from one array, asked for in
order) is sent as that memory range; other host packs are filled by the compiled gather of
:mod:`gpupart.kernels.pack` into pooled memory, device packs by one ``cupy.concatenate``.
Each pack is sent before the next is filled, so the consumer reads one while this side
fills the next.
"""

from __future__ import annotations

import logging
import operator
import time
from typing import Any

import numpy as np

from gpupart.comm.engine import Operation, ProgressEngine
from gpupart.comm.tags import Kind, make_tag
from gpupart.comm.transport import Transport
from gpupart.errors import ProtocolViolationError
from gpupart.kernels.pack import gather_host
from gpupart.tiles import wire
from gpupart.tiles.pool import HostBufferPool
from gpupart.tiles.store import Tile, TileStore
from gpupart.tiles.traffic import Traffic
from gpupart.trace import annotate

__all__ = ["TileServer"]

logger = logging.getLogger("gpupart.fetch")

_NBYTES = operator.attrgetter("nbytes")
_NONE = np.zeros(0, dtype=np.int64)


class TileServer:
    """Answers requests for the tiles in ``store`` (see the module docstring).

    ``serve_timeout`` bounds how long one request may take, from arrival to its last send
    (a tile whose ready event never completes, a consumer that never receives).
    """

    def __init__(
        self,
        store: TileStore,
        transport: Transport,
        engine: ProgressEngine,
        *,
        serve_timeout: float,
        pack_threshold: int = 64 << 10,
        pool_bytes: int = 256 << 20,
        traffic: Traffic | None = None,
    ) -> None:
        self.store = store
        self.traffic = traffic  # bytes sent to each consumer, for the transfer summary
        self.pack_threshold = pack_threshold
        self.transport = transport
        self.engine = engine
        self.serve_timeout = serve_timeout
        self.pool = HostBufferPool(pool_bytes)
        engine.on(Kind.REQUEST, self.handle_request)

    def handle_request(self, consumer: int, batch: int, payload: np.ndarray) -> None:
        """Parse one request and start serving it; reject malformed ones, keep serving."""
        try:
            request = wire.parse_request(payload)
        except ProtocolViolationError as exc:
            logger.warning("rank %d sent a malformed request: %s", consumer, exc)
            self._send_reply(consumer, batch, wire.encode_rejection(str(exc)))
            return
        serve = _ServeRequest(self, consumer, batch, request)
        if serve.rejected is not None:
            logger.warning("rank %d sent a request beyond its bounds: %s", consumer, serve.rejected)
            self._send_reply(consumer, batch, wire.encode_rejection(serve.rejected))
            return
        if not serve.poll():  # ready tiles go out now, not on the next round
            self.engine.track(serve)

    def _send_reply(self, consumer: int, batch: int, reply: bytes) -> None:
        tag = make_tag(Kind.RESPONSE, self.store.owner, batch)
        self.engine.send_control(consumer, tag, reply, "an error reply")

    def close(self) -> None:
        """Drop the pooled pack memory."""
        self.pool.clear()


class _ServeRequest(Operation):
    """One request being served: wait for its tiles to be ready, then send everything."""

    def __init__(self, server: TileServer, consumer: int, batch: int, request: wire.Request):
        self.server = server
        self.peer = consumer
        self.batch = batch
        self.request = request
        self.timeout = server.serve_timeout
        self.deadline = time.monotonic() + self.timeout
        self.sends: list[Any] = []
        self.keep: list[Any] = []  # buffers that must outlive their sends
        self.pooled: list[Any] = []  # pack buffers to give back once sent
        self.started = False
        self._checked = 0  # sends before this index completed and were checked
        items = request.items
        self.tiles: list[Tile | None] = server.store.lookup(items["tile_id"])
        self.failed = _NONE
        self.pending: list[Tile] = []
        self.rejected: str | None = None
        have = self._found_sizes(consumer)
        if len(request.pack_lengths):
            self.rejected = self._beyond_bounds(np.asarray(have, np.int64))
            if self.rejected is not None:
                return
        if len(have) <= wire.FEW:  # plain comparisons for a few tiles (see wire.FEW)
            announced = items["nbytes"].tolist()
            wrong = [i for i, (h, a) in enumerate(zip(have, announced, strict=True)) if h != a]
            failed = np.array(wrong, np.int64) if wrong else _NONE
        else:  # a size of 2**63 or more reads negative: never equal to a tile's
            failed = np.flatnonzero(have != items["nbytes"].view(np.int64))
        if len(failed):
            self.failed = failed
            missing = np.asarray(have, np.int64)[failed] < 0
            for i in failed.tolist():
                self.tiles[i] = None
            codes = np.where(missing, wire.NOT_FOUND, wire.SIZE_MISMATCH)
            server._send_reply(consumer, batch, wire.encode_failures(failed, codes))
        # Only tiles whose producer registered an event can be not ready yet.
        self.pending = (
            [t for t in self.tiles if t is not None and t.event is not None]
            if server.store.has_events
            else []
        )

    def _found_sizes(self, consumer: int) -> Any:
        """Each tile's size here, -1 where it is unknown (or meant for another rank)."""
        tiles = self.tiles
        if len(tiles) <= wire.FEW:
            have = [-1 if t is None else t.nbytes for t in tiles]
        else:
            try:  # every tile found: the common case, without a test per tile
                have = np.fromiter(map(_NBYTES, tiles), np.int64, len(tiles))
            except AttributeError:
                have = np.fromiter((-1 if t is None else t.nbytes for t in tiles), np.int64)
        if self.server.store.has_consumers:  # tiles meant for one rank are unknown to others
            for i, t in enumerate(tiles):
                if t is not None and t.consumer not in (None, consumer):
                    have[i] = -1
        return have

    def _beyond_bounds(self, have: np.ndarray) -> str | None:
        """Why the packs this request announces exceed what its tiles need (None: they do not).

        A pack holds its tiles at their announced sizes; a tile that is missing or not the
        size announced still takes its room, so that room is bounded by the pack threshold:
        packs cannot make this rank gather more than its tiles plus padding.
        """
        items = self.request.items
        packed = items["pack"] >= 0
        announced = items["nbytes"].view(np.int64)[packed]
        real = have[packed]
        room = np.where(real == announced, real, np.minimum(announced, self.server.pack_threshold))
        allowed = int(room.sum()) + wire.PACK_ALIGN * int(packed.sum())
        asked = int(self.request.pack_lengths.sum())
        if asked <= allowed:
            return None
        return (
            f"request: packs of {asked} bytes announced for packed tiles that need at most"
            f" {allowed} bytes"
        )

    @property
    def what(self) -> str:  # built only when an error needs it: this class is on the hot path
        """Describe the operation for error messages."""
        return f"serving fetch batch {self.batch} to rank {self.peer}"

    def poll(self) -> bool:
        """Send once every tile is ready; True once every send has completed."""
        if not self.started:
            if self.pending:
                self.pending = [t for t in self.pending if not t.ready()]
                if self.pending:
                    return False
            self.started = True
            if self.server.traffic is not None:
                self.server.traffic.count(self.peer, self._sent_bytes())
            with annotate("fetch.serve"):
                self._send_all()
        sends = self.sends
        while self._checked < len(sends) and sends[self._checked].completed:
            self.server.transport.check(sends[self._checked])
            self._checked += 1
        if self._checked < len(sends):
            return False
        sends.clear()
        self.keep.clear()
        for pack in self.pooled:
            self.server.pool.release(pack)
        self.pooled.clear()
        if self.server.store.has_uses:
            served = [i for i, t in enumerate(self.tiles) if t is not None and t.uses_left]
            if served:
                self.server.store.used(self.request.items["tile_id"][served].tolist())
        return True

    def _sent_bytes(self) -> int:
        """Bytes of the tiles this request sends (those found at their announced size)."""
        nbytes = self.request.items["nbytes"]
        total = int(nbytes.sum())
        return total - int(nbytes[self.failed].sum()) if len(self.failed) else total

    def _send(self, seq: int, buffer: Any) -> None:
        tag = make_tag(Kind.DATA, self.server.store.owner, seq)
        self.keep.append(buffer)
        self.sends.append(self.server.transport.send(self.peer, tag, buffer))

    def _send_all(self) -> None:
        """Send every pack (each before the next is filled), then every tile alone."""
        req, tiles = self.request, self.tiles
        items = req.items
        packs = items["pack"]
        if len(req.pack_lengths):
            self._send_packs(packs)
            alone = np.flatnonzero(packs < 0).tolist()
        else:
            alone = range(len(tiles))
        for i in alone:
            tile = tiles[i]
            if tile is not None:
                self._send(req.item_seq0 + i, tile.data)

    def _send_packs(self, packs: np.ndarray) -> None:
        req, tiles, items = self.request, self.tiles, self.request.items
        packed = np.flatnonzero(packs >= 0)  # in pack order: the layout was checked
        bounds = np.searchsorted(packs[packed], np.arange(len(req.pack_lengths) + 1)).tolist()
        on_device = self.server.store.has_device_tiles and any(
            t is not None and type(t.data) is not np.ndarray for t in tiles
        )
        if not on_device:
            addresses = np.fromiter(
                (0 if t is None else t.address for t in tiles), np.uint64, len(tiles)
            )
        for j, length in enumerate(req.pack_lengths.tolist()):
            members = packed[bounds[j] : bounds[j + 1]]
            offsets, sizes = items["offset"][members], items["nbytes"][members]
            seq = req.pack_seq0 + j
            if on_device:
                self._send(seq, self._device_pack(length, members, offsets))
            else:
                self._send(seq, self._host_pack(length, addresses[members], offsets, sizes))
            self.server.transport.progress()  # let the packs already sent move

    def _host_pack(
        self, length: int, addresses: np.ndarray, offsets: np.ndarray, sizes: np.ndarray
    ) -> np.ndarray:
        if _spans_one_range(addresses, offsets, sizes, length):
            # self.tiles keeps that memory alive until the send completes.
            return np.asarray(_HostRange(int(addresses[0]), length))
        pack = self.server.pool.acquire(length)
        self.pooled.append(pack)
        gather_host(pack, 0, addresses, sizes, offsets)  # self.tiles keeps every tile alive
        return pack

    def _device_pack(self, length: int, members: np.ndarray, offsets: np.ndarray) -> Any:
        """One ``cupy.concatenate`` of the pack's tiles and zero padding."""
        import cupy  # a non-NumPy tile on the owner is a CuPy one

        parts: list[Any] = []
        cursor = 0
        for i, offset in zip(members.tolist(), offsets.tolist(), strict=True):
            tile = self.tiles[i]
            if tile is None:
                continue  # its room stays zero (the error reply names it)
            if offset > cursor:
                parts.append(cupy.zeros(offset - cursor, dtype=cupy.uint8))
            parts.append(cupy.asarray(tile.data))
            cursor = offset + tile.nbytes
        if cursor < length or not parts:
            parts.append(cupy.zeros(length - cursor, dtype=cupy.uint8))
        pack = cupy.concatenate(parts)
        # UCX reads the pack as soon as the send is posted: the copy must be done.
        cupy.cuda.get_current_stream().synchronize()
        return pack

    def fail(self, exc: BaseException) -> None:
        """Give up (consumer lost, deadline passed, closing); pooled packs are not reused."""
        logger.debug("%s failed: %s", self.what, exc)
        self.sends.clear()
        self.keep.clear()
        for pack in self.pooled:  # the transport may still read them
            self.server.pool.forget(pack)
        self.pooled.clear()


class _HostRange:
    """Borrowed host memory as an array interface (the tiles that span it own it)."""

    __slots__ = ("__array_interface__",)

    def __init__(self, address: int, length: int) -> None:
        self.__array_interface__ = {
            "data": (address, True),  # read-only: it is the owner's tiles
            "shape": (length,),
            "typestr": "|u1",
            "version": 3,
        }


def _spans_one_range(
    addresses: np.ndarray, offsets: np.ndarray, sizes: np.ndarray, length: int
) -> bool:
    """Whether tile ``i`` is at ``addresses[0] + offsets[i]`` for all, with no byte between."""
    if not len(addresses) or offsets[0] != 0 or int(offsets[-1] + sizes[-1]) != length:
        return False
    if not addresses.all():  # a failed item (address 0) needs zeros: gather
        return False
    shift = addresses.view(np.int64) - offsets.astype(np.int64)
    return bool((shift == shift[0]).all() and (offsets[1:] == offsets[:-1] + sizes[:-1]).all())
