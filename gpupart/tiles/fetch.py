"""Consumer-scheduled tile fetch: request/response over UCX tags, payloads never pickled.

The consumer decides what to fetch and when. For each owner it sends one *request* naming a
batch of tiles and posts a receive for every reply straight into its destination (the
caller's ``out`` or a new buffer on the consumer's device). A batch of a few tiles is sent
first and its receives posted after, off the round trip (a reply that wins the race waits
in UCX's unexpected queue: a small one is copied once, a large one's rendezvous starts at
the post); a larger batch posts first, so nothing arrives unexpected. No reply ever needs
a probe: replies use a tag kind the progress engine does not probe for.
The owner's progress thread answers with a *status* message (one byte per tile) and then
sends each tile from the tile's own memory once the tile's ready event has completed: large
tiles one message each, zero-copy; small tiles (``<= pack_threshold`` bytes) gathered into
*packs* so that thousands of small tiles cost a few messages and a few vectorised copies,
not thousands of per-message Python steps. The consumer makes the views of a pack's tiles
while the owner works (they do not depend on the bytes), receives packs of 1 MiB or more
into memory from its :class:`~gpupart.tiles.pool.ReceivePool`, and delivers a pack that
lands with one assignment (``get``) or one lock (``fetch``: futures are claimed, i.e. made
running and no longer cancellable, before their ``out`` buffers are written).

Wire format (little-endian), tags from :mod:`gpupart.comm.tags`:

Request, tag ``(REQUEST, consumer, batch)``::

    header  magic b"GPRQ" | u16 version=1 | u16 flags | u32 n_items | u32 n_packs
            | u64 item_seq0 | u64 pack_seq0          (flags: 1 = STATUS_IN_PACK)
    items   n_items x (u64 tile_id | u64 nbytes | i32 pack (-1 = sent alone) | u64 offset)
    packs   n_packs x (u64 nbytes)

Packed items come in pack order and, within a pack, in offset order without overlapping;
the owner rejects any other layout.

Replies, all into posted receives:

* status: ``n_items`` bytes, one code per item (0 ok, 1 no such tile, 2 size mismatch,
  4 internal error). With ``STATUS_IN_PACK`` (host consumers, batches of up to 64 tiles)
  they are the first bytes of pack 0, whose items then start at the next aligned offset, so
  a small fetch is one message; otherwise they travel alone, first, tag ``(DATA, owner,
  batch)``;
* pack ``j``, tag ``(DATA, owner, pack_seq0 + j)``: exactly the announced length, each item
  at its offset (offsets are multiples of :data:`PACK_ALIGN`; padding and failed items'
  bytes are zeros);
* tile ``i`` sent alone, tag ``(DATA, owner, item_seq0 + i)``: its bytes; nothing is sent
  for a failed item, whose receive the consumer cancels after reading the status.

A request the owner cannot parse gets no status but a *rejection*, tag
``(RESPONSE, owner, batch)`` (found by probing): ``magic b"GPRJ" | utf-8 reason``. The
consumer then fails the batch and cancels its receives; the owner goes on serving.
"""

from __future__ import annotations

import collections
import itertools
import logging
import operator
import struct
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpupart.comm.engine import Operation, ProgressEngine, SendOperation
from gpupart.comm.tags import Kind, make_tag
from gpupart.comm.ucx import UCXTransport
from gpupart.errors import (
    FetchError,
    GpupartError,
    ProtocolViolationError,
    TileNotFoundError,
)
from gpupart.kernels.pack import gather_host
from gpupart.tiles.handles import Handle, TileStore, byte_view, copy_into
from gpupart.tiles.pool import HostBufferPool

logger = logging.getLogger("gpupart.fetch")

__all__ = [
    "AloneItem",
    "FetchBatch",
    "TileServer",
    "byte_view",
    "encode_request",
    "pack_runs",
    "parse_request",
    "plan_packs",
]

_REQ_HEADER = struct.Struct("<4sHHIIQQ")
_REQ_MAGIC, _REJECT_MAGIC, _VERSION = b"GPRQ", b"GPRJ", 1
_ITEM = np.dtype([("tile_id", "<u8"), ("nbytes", "<u8"), ("pack", "<i4"), ("offset", "<u8")])
_PACK = np.dtype("<u8")
#: Alignment of tiles inside a pack, so views into it are aligned for every dtype.
PACK_ALIGN = 64
_ZEROS = np.zeros(PACK_ALIGN, dtype=np.uint8)

OK, NOT_FOUND, SIZE_MISMATCH, INTERNAL = 0, 1, 2, 4


# -- wire format --------------------------------------------------------------------------


@dataclass(slots=True)
class Request:
    """A parsed request (see the module docstring): one sequence per item field.

    Lists for small requests; NumPy arrays above ``_SMALL`` items (``tile_ids`` uint64, the
    others int64), so large requests are served with vectorised steps.
    """

    tile_ids: Any
    nbytes: Any
    packs: Any
    offsets: Any
    pack_lengths: list[int]
    item_seq0: int
    pack_seq0: int
    flags: int = 0


#: Request flag: the status bytes lead pack 0 instead of travelling in their own message.
STATUS_IN_PACK = 1

_SMALL = 16  # requests with at most this many items are (de)coded with struct, not NumPy
_MAX_SIZE = 1 << 62  # larger item sizes or offsets in a request are refused
_ITEM_STRUCT = struct.Struct("<QQiQ")
_PACK_STRUCT = struct.Struct("<Q")


def encode_request(
    tile_ids: Sequence[int],
    nbytes: Sequence[int],
    packs: Sequence[int],
    offsets: Sequence[int],
    pack_lengths: Sequence[int],
    item_seq0: int,
    pack_seq0: int,
    flags: int = 0,
) -> bytes:
    """Serialise a request (see the module docstring)."""
    n = len(tile_ids)
    header = _REQ_HEADER.pack(
        _REQ_MAGIC, _VERSION, flags, n, len(pack_lengths), item_seq0, pack_seq0
    )
    if n == 1 and len(pack_lengths) <= 1:  # the latency-critical single tile
        item = _ITEM_STRUCT.pack(tile_ids[0], nbytes[0], packs[0], offsets[0])
        return header + item + b"".join(_PACK_STRUCT.pack(x) for x in pack_lengths)
    if n <= _SMALL:
        body = b"".join(
            _ITEM_STRUCT.pack(t, b, p, o)
            for t, b, p, o in zip(tile_ids, nbytes, packs, offsets, strict=True)
        )
    else:
        wire = np.empty(n, dtype=_ITEM)
        wire["tile_id"], wire["nbytes"], wire["pack"], wire["offset"] = (
            tile_ids,
            nbytes,
            packs,
            offsets,
        )
        body = wire.tobytes()
    return header + body + struct.pack(f"<{len(pack_lengths)}Q", *pack_lengths)


def parse_request(payload: np.ndarray | bytes) -> Request:
    """Parse and check a request; :class:`~gpupart.ProtocolViolationError` if malformed."""
    raw = memoryview(payload).cast("B")
    if len(raw) < _REQ_HEADER.size:
        raise ProtocolViolationError(
            f"request: expected at least {_REQ_HEADER.size} header bytes, found {len(raw)}"
        )
    magic, version, flags, n_items, n_packs, item_seq0, pack_seq0 = _REQ_HEADER.unpack_from(raw)
    if magic != _REQ_MAGIC or version != _VERSION:
        raise ProtocolViolationError(
            f"request: expected magic {_REQ_MAGIC!r} version {_VERSION}, found {magic!r} {version}"
        )
    want = _REQ_HEADER.size + n_items * _ITEM.itemsize + n_packs * _PACK.itemsize
    if len(raw) != want:
        raise ProtocolViolationError(
            f"request: expected {want} bytes for {n_items} items and {n_packs} packs,"
            f" found {len(raw)} (truncated or padded)"
        )
    if n_items == 0:
        raise ProtocolViolationError("request: expected at least one item, found none")
    if flags & ~STATUS_IN_PACK:
        raise ProtocolViolationError(f"request: unknown flags {flags:#x}")
    off = _REQ_HEADER.size
    pack_off = off + n_items * _ITEM.itemsize
    if n_items == 1:  # the latency-critical single tile: no loops, no NumPy
        tile_id, size, pack, offset = _ITEM_STRUCT.unpack_from(raw, off)
        pack_lengths = [_PACK_STRUCT.unpack_from(raw, pack_off)[0]] if n_packs else []
        request = Request([tile_id], [size], [pack], [offset], pack_lengths, item_seq0, pack_seq0)
    else:
        pack_lengths = list(struct.unpack_from(f"<{n_packs}Q", raw, pack_off))
        if n_items <= _SMALL:
            fields = list(zip(*_ITEM_STRUCT.iter_unpack(raw[off:pack_off]), strict=True))
            tile_ids, nbytes, packs, offsets = (list(f) for f in fields)
            request = Request(tile_ids, nbytes, packs, offsets, pack_lengths, item_seq0, pack_seq0)
        else:
            items = np.frombuffer(raw, dtype=_ITEM, count=n_items, offset=off)
            request = Request(
                items["tile_id"].copy(),
                items["nbytes"].copy(),
                items["pack"].astype(np.int64),
                items["offset"].copy(),
                pack_lengths,
                item_seq0,
                pack_seq0,
            )
    request.flags = flags
    # Items of pack 0 start after the status when it leads the pack.
    floor = n_items if flags & STATUS_IN_PACK else 0
    if floor and (not n_packs or pack_lengths[0] < floor):
        raise ProtocolViolationError(
            f"request: the status ({n_items} bytes) must lead pack 0, which is too small"
        )
    if n_items <= _SMALL:
        _check_layout_small(request, floor)
    else:
        _check_layout_bulk(request, floor)
    return request


def pack_runs(pack_of: np.ndarray, n_packs: int) -> tuple[np.ndarray, list[int]]:
    """Where each pack's items are, for items in pack order (the layout both sides keep).

    Returns the positions of the packed items (``pack_of >= 0``) and bounds such that pack
    ``j``'s items are ``packed[bounds[j]:bounds[j + 1]]``.
    """
    packed = np.flatnonzero(pack_of >= 0)
    return packed, np.searchsorted(pack_of[packed], np.arange(n_packs + 1)).tolist()


def _bad_item(pack: int, size: int, offset: int, length: int) -> ProtocolViolationError:
    return ProtocolViolationError(
        f"request: an item of {size} bytes at offset {offset} does not fit in pack {pack}"
        f" of {length} bytes"
    )


_OUT_OF_ORDER = (
    "request: packed items must come in pack order and, within a pack, in offset order"
    " without overlapping"
)


def _check_layout_small(req: Request, floor: int) -> None:
    """Every packed item fits its pack, in order, without overlap (few items: plain loop)."""
    lengths, n_packs = req.pack_lengths, len(req.pack_lengths)
    last_pack, last_end = -1, 0
    for p, b, o in zip(req.packs, req.nbytes, req.offsets, strict=True):
        if p < -1 or p >= n_packs:
            raise ProtocolViolationError(f"request: an item names pack {p}; there are {n_packs}")
        if p < 0:
            continue
        if o + b > lengths[p] or (p == 0 and o < floor):
            raise _bad_item(p, b, o, lengths[p])
        if p < last_pack or (p == last_pack and o < last_end):
            raise ProtocolViolationError(_OUT_OF_ORDER)
        last_pack, last_end = p, o + b


def _check_layout_bulk(req: Request, floor: int) -> None:
    """Apply :func:`_check_layout_small`'s rules, vectorised (sizes become int64)."""
    n_packs = len(req.pack_lengths)
    too_big = (req.nbytes >= _MAX_SIZE) | (req.offsets >= _MAX_SIZE)
    if too_big.any():
        k = int(np.argmax(too_big))
        raise ProtocolViolationError(
            f"request: expected item sizes and offsets below 2**62, found {req.nbytes[k]}"
            f" bytes at offset {req.offsets[k]}"
        )
    req.nbytes = req.nbytes.astype(np.int64)
    req.offsets = req.offsets.astype(np.int64)
    packs = req.packs
    bad = (packs < -1) | (packs >= n_packs)
    if bad.any():
        p = int(packs[np.argmax(bad)])
        raise ProtocolViolationError(f"request: an item names pack {p}; there are {n_packs}")
    packed = np.flatnonzero(packs >= 0)
    if not packed.size:
        return
    p, b, o = packs[packed], req.nbytes[packed], req.offsets[packed]
    lengths = np.asarray(req.pack_lengths, dtype=np.uint64)[p]
    bad = (o.astype(np.uint64) + b.astype(np.uint64) > lengths) | ((p == 0) & (o < floor))
    if bad.any():
        k = int(np.argmax(bad))
        raise _bad_item(int(p[k]), int(b[k]), int(o[k]), int(lengths[k]))
    same = p[1:] == p[:-1]
    if (p[1:] < p[:-1]).any() or (same & (o[1:] < o[:-1] + b[:-1])).any():
        raise ProtocolViolationError(_OUT_OF_ORDER)


def encode_rejection(reason: str) -> bytes:
    """Serialise a rejection of an unparseable request."""
    return _REJECT_MAGIC + reason.encode("utf-8", errors="replace")[:4096]


def parse_rejection(payload: np.ndarray | bytes) -> str:
    """Return the reason carried by a rejection."""
    raw = bytes(memoryview(payload).cast("B"))
    if raw[:4] != _REJECT_MAGIC:
        raise ProtocolViolationError(
            f"rejection: expected magic {_REJECT_MAGIC!r}, found {raw[:4]!r}"
        )
    return raw[4:].decode("utf-8", errors="replace")


# -- owner side ---------------------------------------------------------------------------


_NBYTES = operator.attrgetter("nbytes")
_ADDRESS = operator.attrgetter("address")
#: Views of shared zero bytes for the padding runs between packed tiles.
_ZERO_RUNS = [_ZEROS[:n] for n in range(PACK_ALIGN + 1)]


class _HostRange:
    """Borrowed host memory as an array interface (the tiles that span it own it)."""

    __slots__ = ("__array_interface__",)

    def __init__(self, addresses: np.ndarray, length: int) -> None:
        data = (int(addresses[0]), True)  # read-only: it is the owner's tiles
        self.__array_interface__ = {"data": data, "shape": (length,), "typestr": "|u1"}
        self.__array_interface__["version"] = 3


def _spans_one_range(
    addresses: np.ndarray, offsets: np.ndarray, sizes: np.ndarray, length: int
) -> bool:
    """Whether tile ``i`` is at ``addresses[0] + offsets[i]`` for all, with no byte between."""
    if not len(addresses) or offsets[0] != 0 or int(offsets[-1] + sizes[-1]) != length:
        return False
    if not addresses.all():  # a failed item (address 0) needs zeros: gather
        return False
    shift = addresses.view(np.int64) - offsets
    return bool((shift == shift[0]).all() and (offsets[1:] == offsets[:-1] + sizes[:-1]).all())


def _zero_run(n: int) -> np.ndarray:
    """``n`` zero host bytes (a shared view for alignment-sized runs)."""
    return _ZERO_RUNS[n] if n <= PACK_ALIGN else np.zeros(n, dtype=np.uint8)


class _ServeBatch(Operation):
    """Owner side of one request: wait for tiles to be ready, then send status and data."""

    def __init__(self, server: TileServer, consumer: int, batch: int, request: Request):
        self.server = server
        self.peer = consumer
        self.batch = batch
        self.request = request
        self.sends: list[Any] = []
        self.keep: list[Any] = []  # buffers that must outlive their sends
        self.pooled: list[Any] = []  # pack buffers to give back to the pool once sent
        self.started = False
        self._checked = 0  # sends before this index have completed and were checked
        self.tiles: list[Any] = server.store.lookup(request.tile_ids)
        n = len(self.tiles)
        if n <= _SMALL:
            status = bytearray(n)
            for i, (tile, size) in enumerate(zip(self.tiles, request.nbytes, strict=True)):
                if tile is None:
                    status[i] = NOT_FOUND
                elif tile.nbytes != size:
                    status[i] = SIZE_MISMATCH
                    self.tiles[i] = None
            self.status = np.frombuffer(status, dtype=np.uint8)
        else:
            try:  # every tile found: the common case, without a Python-level test per tile
                have = np.fromiter(map(_NBYTES, self.tiles), np.int64, n)
            except AttributeError:
                have = np.fromiter((-1 if t is None else t.nbytes for t in self.tiles), np.int64, n)
            missing = have < 0
            wrong = ~missing & (have != request.nbytes)
            self.status = np.where(missing, NOT_FOUND, np.where(wrong, SIZE_MISMATCH, OK))
            self.status = self.status.astype(np.uint8)
            for i in np.flatnonzero(wrong).tolist():
                self.tiles[i] = None
        # Only tiles whose producer registered an event can be not ready yet.
        self.pending = (
            [t for t in self.tiles if t is not None and t.event is not None]
            if server.store.has_events
            else []
        )

    @property
    def what(self) -> str:  # built only when an error needs it: this class is on the hot path
        """Describe the operation for error messages."""
        return f"serving fetch batch {self.batch} to rank {self.peer}"

    def poll(self) -> bool:
        if not self.started:
            if self.pending:
                self.pending = [t for t in self.pending if not t.ready()]
                if self.pending:
                    return False
            self.started = True
            if len(self.tiles) <= _SMALL:
                self._send_all()
            else:
                self._send_all_bulk()
        sends = self.sends
        while self._checked < len(sends) and sends[self._checked].completed:
            UCXTransport.check(sends[self._checked])
            self._checked += 1
        if self._checked < len(sends):
            return False
        sends.clear()
        self.keep.clear()
        self._release()
        return True

    def _send(self, seq: int, buffer: Any) -> None:
        tag = make_tag(Kind.DATA, self.server.store.owner, seq)
        self.keep.append(buffer)
        self.sends.append(self.server.transport.send(self.peer, tag, buffer))

    def _send_all(self) -> None:
        """Send the status, every tile sent alone, then every pack (few items: plain loops).

        The request's layout was checked, so packed items come in pack order and, within a
        pack, in offset order.
        """
        req = self.request
        status_in_pack = bool(req.flags & STATUS_IN_PACK)
        if not status_in_pack:
            self._send(self.batch, self.status)
        members: list[tuple[list[int], list[Any]]] = [([], []) for _ in req.pack_lengths]
        for i, (tile, pack) in enumerate(zip(self.tiles, req.packs, strict=True)):
            data = None if tile is None else tile.data
            if pack >= 0:
                members[pack][0].append(req.offsets[i])
                members[pack][1].append(data)
            elif data is not None and tile.nbytes:
                self._send(req.item_seq0 + i, data)
        for j, (offsets, pieces) in enumerate(members):
            self._send_pieces(
                j, self.status if j == 0 and status_in_pack else None, offsets, pieces
            )

    def _send_pieces(
        self, pack: int, head: np.ndarray | None, offsets: Sequence[int], pieces: list[Any]
    ) -> None:
        """Build pack ``pack`` and send it: ``head``, then ``pieces`` at ``offsets``.

        Pieces are flat byte arrays (None: a failed tile, whose room stays zero); the bytes
        between and after them are zeros.
        """
        length = self.request.pack_lengths[pack]
        if not length:
            return
        parts: list[Any] = [] if head is None else [head]
        cursor = 0 if head is None else len(head)
        on_device = False
        for offset, data in zip(offsets, pieces, strict=True):
            if data is None:
                continue  # its room stays zero (the status marks it failed)
            if offset > cursor:
                parts.append(_zero_run(offset - cursor))
            parts.append(data)
            cursor = offset + data.shape[0]
            on_device = on_device or type(data) is not np.ndarray
        if cursor < length:
            parts.append(_zero_run(length - cursor))
        self._send(self.request.pack_seq0 + pack, self._gather(parts, length, on_device))

    def _send_all_bulk(self) -> None:
        """:meth:`_send_all` for many items: per pack, not per tile, Python steps.

        Host packs are filled by a compiled gather (:func:`gpupart.kernels.pack.gather_host`),
        device packs by one concatenation. Each pack is sent before the next is gathered, so
        the consumer reads pack ``j`` while this side copies pack ``j + 1``.
        """
        req, tiles = self.request, self.tiles
        status_in_pack = bool(req.flags & STATUS_IN_PACK)
        if not status_in_pack:
            self._send(self.batch, self.status)
        packs = req.packs
        failed = self.status.any()
        on_device = self.server.store.has_device_tiles and any(
            t is not None and type(t.data) is not np.ndarray for t in tiles
        )
        n_packs = len(req.pack_lengths)
        packed, bounds = pack_runs(packs, n_packs)  # the layout was checked: pack order
        all_packed = len(packed) == len(packs)
        if on_device:
            datas = [None if t is None else t.data for t in tiles]
        elif failed:  # address 0: the gather writes zeros in a failed item's room
            addresses = np.fromiter((0 if t is None else t.address for t in tiles), np.uint64)
        else:
            addresses = np.fromiter(map(_ADDRESS, tiles), np.uint64, len(tiles))
        for j in range(n_packs):
            lo, hi = bounds[j], bounds[j + 1]
            members: Any = slice(lo, hi) if all_packed else packed[lo:hi]
            offsets, sizes = req.offsets[members], req.nbytes[members]
            head = self.status if j == 0 and status_in_pack else None
            if on_device:
                pieces = datas[lo:hi] if all_packed else [datas[i] for i in members.tolist()]
                self._send_pieces(j, head, offsets.tolist(), pieces)
            else:
                self._send_host_pack(j, addresses[members], offsets, sizes, head)
            self.server.transport.progress()  # let UCX move the packs already sent
        for i in np.flatnonzero(packs < 0).tolist():
            tile = tiles[i]
            if tile is not None and tile.nbytes:
                self._send(req.item_seq0 + i, tile.data)

    def _send_host_pack(
        self,
        pack: int,
        addresses: np.ndarray,
        offsets: np.ndarray,
        sizes: np.ndarray,
        head: np.ndarray | None,
    ) -> None:
        length = self.request.pack_lengths[pack]
        if not length:
            return
        if head is None and _spans_one_range(addresses, offsets, sizes, length):
            # The pack's tiles lie back to back in this process's memory exactly as the pack
            # lays them out (tiles cut from one array, asked for in order): send that memory
            # as it is, no copy. self.tiles keeps it alive until the send completes.
            self._send(self.request.pack_seq0 + pack, np.asarray(_HostRange(addresses, length)))
            return
        buffer = self.server.pool.acquire(length)
        self.pooled.append(buffer)
        start = 0
        if head is not None:
            start = len(head)
            buffer[:start] = head
        # self.tiles keeps every tile alive while the gather reads their addresses.
        gather_host(buffer, start, addresses, sizes, offsets)
        self._send(self.request.pack_seq0 + pack, buffer)

    def _gather(self, parts: list[Any], length: int, on_device: bool) -> Any:
        """Concatenate a pack's pieces (padding included) in one vectorised copy.

        Host packs go into a pooled buffer; a pack with any device tile is built on the
        device with one ``cupy.concatenate``.
        """
        if not on_device:
            pack = self.server.pool.acquire(length)
            np.concatenate(parts, out=pack)
            self.pooled.append(pack)
            return pack
        import cupy  # a non-NumPy tile on the owner is a CuPy one (CuPy pools device memory)

        pack = cupy.concatenate([cupy.asarray(p) for p in parts])
        # UCX reads the pack as soon as the send is posted: the gather kernel must be done.
        cupy.cuda.get_current_stream().synchronize()
        return pack

    def _release(self) -> None:
        for pack in self.pooled:
            self.server.pool.release(pack)
        self.pooled.clear()

    def fail(self, exc: BaseException) -> None:
        self.sends.clear()  # dropping the requests cancels them
        self.keep.clear()
        for pack in self.pooled:  # UCX may still touch them: never reuse
            self.server.pool.forget(pack)
        self.pooled.clear()


class TileServer:
    """Owner side: answers requests for the tiles in ``store`` from the progress thread."""

    def __init__(
        self,
        store: TileStore,
        transport: UCXTransport,
        engine: ProgressEngine,
        pool: HostBufferPool | None = None,
    ) -> None:
        self.store = store
        self.pool = pool or HostBufferPool()
        self.transport = transport
        self.engine = engine
        engine.on(Kind.REQUEST, self.handle_request)

    def handle_request(self, consumer: int, batch: int, payload: np.ndarray) -> None:
        """Parse one request and start serving it; reject malformed ones, keep serving."""
        try:
            request = parse_request(payload)
        except ProtocolViolationError as exc:
            logger.warning("rank %d sent a malformed request: %s", consumer, exc)
            rejection = encode_rejection(str(exc))
            tag = make_tag(Kind.RESPONSE, self.store.owner, batch)
            self.engine.track(
                SendOperation(
                    consumer,
                    self.transport.send(consumer, tag, rejection),
                    rejection,
                    "sending a rejection",
                )
            )
            return
        serve = _ServeBatch(self, consumer, batch, request)
        if not serve.poll():  # ready tiles go out now, not on the next round
            self.engine.track(serve)


# -- consumer side ------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class AloneItem:
    """A tile sent in its own message: where it lands and the receive bringing it."""

    index: int  # position in the batch
    result: Any  # the array handed to the caller
    target: Any  # flat byte view of ``result`` that receives the data
    request: Any = None


class FetchBatch(Operation):
    """Consumer side of one request to one owner: delivers each tile to the call's sink.

    Tiles are kept as parallel arrays (handles, ``out`` buffers, ids, sizes, pack and offset
    per tile) rather than one object each, so that a batch of thousands of small tiles is
    planned, encoded and delivered with vectorised steps. The sink is shared by every batch
    of one call (a :class:`~gpupart.tiles.results.FutureSink` for ``Runtime.fetch``, a
    :class:`~gpupart.tiles.results.ResultList` for ``Runtime.get``) and indexed by position
    in the call; ``where[i]`` is that position for this batch's item ``i`` (``None``: the
    same).
    """

    def __init__(
        self,
        owner: int,
        batch: int,
        handles: list[Handle],
        sink: Any,
        where: np.ndarray | None,
        outs: list[Any],
        tile_ids: Any,
        nbytes: Any,
        pack_of: np.ndarray | list[int],  # arrays for large batches, plain lists otherwise
        offsets: np.ndarray | list[int],
        packs: list[Any],
        alone: list[AloneItem],
        *,
        timeout: float,
        on_finish: Callable[[FetchBatch], None],
        status_in_pack: bool = False,
        with_outs: bool = True,
        alike: bool | None = None,
    ):
        self.peer = owner
        self.with_outs = with_outs  # False: every ``outs[i]`` is None
        self.status_in_pack = status_in_pack
        self.batch = batch
        self.handles = handles
        self.sink = sink
        self.where = where
        self.outs = outs
        self.tile_ids = tile_ids
        self.nbytes = nbytes
        self.pack_of = pack_of
        self.offsets = offsets
        self.packs = packs
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.status: np.ndarray | None = None  # set by post(): its own buffer, or pack 0's head
        self.rejection: str | None = None
        self._status_request: Any = None
        self._pack_requests: list[Any] = []
        self._pack_members: list[Any] = []
        self._alike = alike  # whether all tiles share dtype, shape and order (None: unknown)
        self._unpacked: list[Any] = []  # per pack: (sink indices, views), or None
        self._alone: collections.deque[AloneItem] = collections.deque(alone)
        self._send: Any = None
        self._request_bytes = b""
        self._on_finish = on_finish
        self.finished = False

    @property
    def what(self) -> str:  # built only when an error needs it: this class is on the hot path
        """Describe the operation for error messages."""
        return f"fetching {len(self.handles)} tile(s) from rank {self.peer}"

    def _global(self, index: int) -> int:
        return index if self.where is None else int(self.where[index])

    def post(self, transport: UCXTransport, me: int, item_seq0: int, pack_seq0: int) -> None:
        """Post a receive for every reply and send the request (see the module docstring)."""
        owner = self.peer
        self._request_bytes = encode_request(
            self.tile_ids,
            self.nbytes,
            self.pack_of,
            self.offsets,
            [b.shape[0] for b in self.packs],
            item_seq0,
            pack_seq0,
            STATUS_IN_PACK if self.status_in_pack else 0,
        )
        tag = make_tag(Kind.REQUEST, me, self.batch)
        # Few tiles: send first, post after (off the round trip). Many: post first, so no
        # reply arrives unexpected (measured 5-8% more bandwidth at 1-4 MiB tiles).
        send_first = len(self.handles) <= _SMALL
        if send_first:
            self._send = transport.send(owner, tag, self._request_bytes)
        if self.status_in_pack:  # the status leads pack 0 (a host buffer): no message of its own
            self.status = self.packs[0][: len(self.handles)]
        else:
            self.status = np.empty(len(self.handles), dtype=np.uint8)
            self._status_request = transport.recv(
                make_tag(Kind.DATA, owner, self.batch), self.status
            )
        for j, buf in enumerate(self.packs):
            self._pack_requests.append(
                transport.recv(make_tag(Kind.DATA, owner, pack_seq0 + j), buf)
            )
        for item in self._alone:
            if item.target.shape[0]:
                item.request = transport.recv(
                    make_tag(Kind.DATA, owner, item_seq0 + item.index), item.target
                )
        if self._alone and self.sink.cancellable:  # their bytes are on the way: running
            self.sink.claim([self._global(item.index) for item in self._alone])
        if self.status_in_pack:
            self._status_request = self._pack_requests[0]
        if not send_first:
            self._send = transport.send(owner, tag, self._request_bytes)
        if not self.packs:  # every tile travels alone
            self._pack_members = []
        elif isinstance(self.pack_of, np.ndarray):  # large batches: vectorised bookkeeping
            packed, bounds = pack_runs(self.pack_of, len(self.packs))
            self._pack_members = [packed[lo:hi] for lo, hi in itertools.pairwise(bounds)]
        else:
            members: list[list[int]] = [[] for _ in self.packs]
            for i, pack in enumerate(self.pack_of):
                if pack >= 0:
                    members[pack].append(i)
            self._pack_members = members
        # While the owner works: the views of each pack's tiles (the pack is not written
        # yet, but its views do not depend on its bytes), so a pack that lands is delivered
        # with one assignment.
        self._unpacked = [self._unpack(j) for j in range(len(self._pack_members))]

    def _unpack(self, j: int) -> tuple[Sequence[int], list[Any]] | None:
        """Sink indices and views of pack ``j``'s tiles (None: none, or odd handles)."""
        members = self._pack_members[j]
        if not len(members):
            return None
        if self._alike is None:
            self._alike = len(self.handles) > 1 and _all_alike(self.handles)
        try:
            views = _pack_views(self.packs[j], members, self.handles, self.offsets, self._alike)
        except (ValueError, TypeError):  # a handle whose shape, dtype and size disagree
            return None
        if self.where is None:
            return members if isinstance(members, list) else _as_run(members), views
        return _as_run(self.where[members]), views

    def on_rejection(self, payload: np.ndarray) -> None:
        """Record that the owner could not parse the request (on a progressing thread)."""
        self.rejection = parse_rejection(payload)

    def poll(self) -> bool:
        """Deliver what has arrived; True once every tile is resolved."""
        if self.rejection is not None:
            raise FetchError(f"rank {self.peer} rejected the request: {self.rejection}")
        if not self._status_request.completed:
            return False
        if self._send is not None:  # first poll after the status arrived
            UCXTransport.check(self._send)
            UCXTransport.check(self._status_request)
            self._send = None
            self._request_bytes = b""
            self._fail_reported()
        for j, members in enumerate(self._pack_members):
            request = self._pack_requests[j]
            if members is None or request is None or not request.completed:
                continue
            UCXTransport.check(request)
            self._pack_requests[j] = None
            if len(members):
                self._deliver_pack(j, members)
            self._pack_members[j] = None
        alone = self._alone
        # The owner sends in order and UCX completes mostly in order: deliver from the front
        # and stop at the first transfer still running, instead of scanning every pending
        # tile on every round (which cost as much as the transfers for 1 MiB tiles).
        sink = self.sink
        while alone:
            item = alone[0]
            if item.request is not None:
                if not item.request.completed:
                    break
                UCXTransport.check(item.request)
                item.request = None
            # (a no-op for a failed tile; a cancelled future is reported to its waiters)
            sink.set_result(self._global(item.index), item.result)
            alone.popleft()
        if alone or any(m is not None for m in self._pack_members):
            return False
        self._done()
        return True

    def _fail_reported(self) -> None:
        """Fail the tiles the owner's status marks as failed; cancel their receives."""
        status = self.status
        if not (status.any() if len(status) > _SMALL else any(status.data)):  # all ok
            return
        failed = np.flatnonzero(self.status).tolist()
        for index in failed:
            error = error_for(int(self.status[index]), self.handles[index])
            self.sink.set_exception(self._global(index), error)
        bad = set(failed)
        keep = collections.deque()
        for item in self._alone:
            if item.index in bad:
                item.request = None  # cancels the receive: nothing will be sent for it
            else:
                keep.append(item)
        self._alone = keep

    def _deliver_pack(self, j: int, members: Any) -> None:
        """Hand every tile of completed pack ``j`` to the sink (views of the pack, or out=)."""
        unpacked = self._unpacked[j] if j < len(self._unpacked) else None
        if unpacked is None:  # odd handles: the views raise here, failing the batch
            views = _pack_views(self.packs[j], members, self.handles, self.offsets)
            targets = _as_run(np.asarray(members if self.where is None else self.where[members]))
        else:
            targets, views = unpacked
            self._unpacked[j] = None
        sink, outs = self.sink, self.outs
        if not self.with_outs:
            sink.set_results(targets, views)
            return
        index_list = members.tolist() if isinstance(members, np.ndarray) else members
        chosen = [outs[i] for i in index_list]
        # Keep the tiles still wanted. Futures are claimed (running: no longer cancellable;
        # cancelled ones are reported to their waiters); a get's tiles end early only when
        # the owner failed them.
        if sink.cancellable:
            keep = sink.claim(targets)
        elif self.status[members].any():
            keep = [k for k, target in enumerate(targets) if not sink.done(target)]
        else:
            keep = None
        if keep is not None and len(keep) < len(chosen):
            if not keep:
                return
            targets, chosen, views = ([seq[k] for k in keep] for seq in (targets, chosen, views))
        if type(views[0]) is np.ndarray and set(map(type, chosen)) == {np.ndarray}:
            for out, view in zip(chosen, views, strict=True):  # the common case: host copies
                out[...] = view
            sink.set_results(targets, chosen)
            return
        values = []
        for out, view in zip(chosen, views, strict=True):
            if out is None:
                values.append(view)
            elif type(out) is np.ndarray and type(view) is np.ndarray:
                out[...] = view
                values.append(out)
            else:
                values.append(copy_into(out, view))
        sink.set_results(targets, values)

    def _done(self) -> None:
        if not self.finished:
            self.finished = True
            self._on_finish(self)

    def fail(self, exc: BaseException) -> None:
        """Fail every tile not yet delivered (owner lost, timeout, transport error)."""
        n = len(self.handles)
        self.sink.fail_pending(range(n) if self.where is None else self.where.tolist(), exc)
        for item in self._alone:
            item.request = None
        self._pack_requests.clear()
        self._alone.clear()
        self._pack_members = []
        self._unpacked = []
        self._done()


_SHAPE = operator.attrgetter("shape")
_DTYPE = operator.attrgetter("dtype")
_ORDER = operator.attrgetter("order")


def _all_alike(handles: list[Handle]) -> bool:
    """Whether every handle has the first one's dtype, shape and (for n-d tiles) order."""
    first, n = handles[0], len(handles)
    if list(map(_SHAPE, handles)).count(first.shape) != n:
        return False
    if list(map(_DTYPE, handles)).count(first.dtype) != n:
        return False
    return len(first.shape) <= 1 or list(map(_ORDER, handles)).count(first.order) == n


def _as_run(indices: np.ndarray) -> Sequence[int]:
    """Return ``indices`` as a ``range`` if consecutive and ascending, else as a list."""
    n = len(indices)
    if n and int(indices[-1]) - int(indices[0]) == n - 1 and (np.diff(indices) == 1).all():
        return range(int(indices[0]), int(indices[0]) + n)
    return indices.tolist()


def _pack_views(
    pack: Any, idx: Sequence[int], handles: list[Handle], offsets: Any, alike: bool | None = None
) -> list:
    """Return views of a pack's tiles (one strided view split up when they are all alike).

    ``idx`` (a list or an integer array) are the tiles' positions in ``handles`` and
    ``offsets``; ``alike`` says all of ``handles`` share dtype, shape and order (``None``:
    check these).
    """
    k = len(idx)
    first = handles[int(idx[0])]
    if alike is None:
        alike = _all_alike([handles[i] for i in idx])
    offs = np.asarray(offsets)[idx] if k > 1 else None
    if alike and k > 1 and (first.order == "C" or len(first.shape) <= 1):
        steps = np.diff(offs)
        stride = int(steps[0])
        if stride >= first.nbytes and (steps == stride).all():
            xp = sys.modules[type(pack).__module__.split(".")[0]]
            rows = xp.lib.stride_tricks.as_strided(
                pack[int(offs[0]) :], shape=(k, first.nbytes), strides=(stride, 1)
            )
            return list(rows.view(first.dtype).reshape((k, *first.shape)))
    offs_list = offs.tolist() if offs is not None else [int(offsets[int(idx[0])])]
    views = []
    for i, off in zip(np.asarray(idx).tolist(), offs_list, strict=True):
        h = handles[i]
        views.append(pack[off : off + h.nbytes].view(h.dtype).reshape(h.shape, order=h.order))
    return views


def error_for(code: int, handle: Handle) -> GpupartError:
    """Return the consumer-side error for an owner's status code."""
    if code == NOT_FOUND:
        return TileNotFoundError(handle.owner, handle.tile_id)
    if code == SIZE_MISMATCH:
        return FetchError(
            f"tile {handle.tile_id} on rank {handle.owner} is not the size its handle says"
            f" ({handle.nbytes} bytes): the handle is stale or forged"
        )
    return FetchError(f"rank {handle.owner} could not send tile {handle.tile_id} (code {code})")


def plan_packs(
    nbytes: Sequence[int], eligible: Sequence[bool], pack_limit: int, status_bytes: int = 0
) -> tuple[list[int], list[int], list[int]]:
    """Assign eligible items, in order, to packs of at most ``pack_limit`` bytes.

    Returns ``(pack index per item or -1, offset per item, length per pack)``; offsets are
    aligned to :data:`PACK_ALIGN`. With ``status_bytes``, pack 0 exists whatever happens and
    opens with that many bytes of status (its items start at the next aligned offset).
    """
    pack_of = [-1] * len(nbytes)
    offset = [0] * len(nbytes)
    lengths: list[int] = []
    cursor = 0
    if status_bytes:
        lengths.append(status_bytes)
        cursor = -(-status_bytes // PACK_ALIGN) * PACK_ALIGN
    for i, (n, ok) in enumerate(zip(nbytes, eligible, strict=True)):
        if not ok:
            continue
        if not lengths or cursor + n > pack_limit:
            lengths.append(0)
            cursor = 0
        pack_of[i] = len(lengths) - 1
        offset[i] = cursor
        cursor += n
        lengths[-1] = cursor
        cursor = -(-cursor // PACK_ALIGN) * PACK_ALIGN
    return pack_of, offset, lengths


def plan_packs_bulk(
    nbytes: np.ndarray, eligible: np.ndarray, pack_limit: int, status_bytes: int = 0
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """:func:`plan_packs` for many items, vectorised: the same guarantees, arrays out.

    Eligible items are laid out back to back (aligned) on one line, which is cut into packs
    every ``pack_limit - largest item`` bytes; an item goes to the pack its start falls in,
    so no pack exceeds ``pack_limit`` (packs are at least ``pack_limit - largest`` bytes
    apart, not filled greedily). Returns ``(pack per item or -1, offset per item, length
    per pack)`` with int64 arrays for the first two.
    """
    n = len(nbytes)
    pack_of = np.full(n, -1, dtype=np.int64)
    offsets = np.zeros(n, dtype=np.int64)
    idx = np.flatnonzero(eligible)
    if not idx.size:
        return pack_of, offsets, [status_bytes] if status_bytes else []
    sizes = np.asarray(nbytes, dtype=np.int64)[idx]
    aligned = -(-sizes // PACK_ALIGN) * PACK_ALIGN
    base = -(-status_bytes // PACK_ALIGN) * PACK_ALIGN
    starts = np.cumsum(aligned)
    starts -= aligned
    starts += base
    end = int(starts[-1]) + int(sizes[-1])
    if end <= pack_limit:  # everything fits one pack (a bulk call's usual chunk): no cutting
        offsets[idx] = starts
        pack_of[idx] = 0
        return pack_of, offsets, [end]
    span = max(pack_limit - int(sizes.max()), 1)
    cut = starts // span  # non-decreasing: the piece of the line each item starts in
    first = np.empty(len(cut), dtype=bool)
    first[0] = True
    np.not_equal(cut[1:], cut[:-1], out=first[1:])
    group = np.cumsum(first) - 1  # dense pack numbers of the items' packs
    pack_start = starts[first]
    shift = 0
    if status_bytes:
        if cut[0] == 0:
            pack_start[0] = 0  # the status opens the first items' pack
        else:
            shift = 1  # the status has pack 0 to itself
    offsets[idx] = starts - pack_start[group]
    pack_of[idx] = group + shift
    last = np.append(np.flatnonzero(first)[1:] - 1, len(cut) - 1)
    lengths = (starts[last] + sizes[last] - pack_start).tolist()
    if shift:
        lengths.insert(0, status_bytes)
    return pack_of, offsets, lengths
