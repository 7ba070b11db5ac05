"""Consumer-scheduled tile fetch: request/response over UCX tags, payloads never pickled.

The consumer decides what to fetch and when. For each owner it sends one *request* naming a
batch of tiles, after posting a receive for every payload straight into its destination
buffer (the caller's ``out`` or a new buffer on the consumer's device). The owner's progress
thread answers with one *response* (a status per tile) and then sends each tile from the
tile's own memory once the tile's ready event has completed: large tiles one message each,
zero-copy; small tiles (``<= pack_threshold`` bytes) gathered into *packs* so that thousands
of small tiles cost a few messages, not thousands of per-message Python steps.

Wire format (little-endian), tags from :mod:`gpupart.cluster.tags`:

Request, tag ``(REQUEST, consumer, batch)``::

    header  magic b"GPRQ" | u16 version=1 | u16 flags=0 | u32 n_items | u32 n_packs
            | u64 item_seq0 | u64 pack_seq0
    items   n_items x (u64 tile_id | u64 nbytes | i32 pack (-1 = sent alone) | u64 offset)
    packs   n_packs x (u64 nbytes)

Response, tag ``(RESPONSE, owner, batch)``::

    header  magic b"GPRS" | u16 version=1 | u16 flags=0 | u32 n_items | u32 batch_status
    status  n_items x u8   (0 ok, 1 no such tile, 2 size mismatch, 3 malformed, 4 internal)
    errors  u32 n | n x (u32 item | u32 length | utf-8 text)   (batch error: item 0xFFFFFFFF)

Data, tag ``(DATA, owner, item_seq0 + i)`` for tile ``i`` sent alone and
``(DATA, owner, pack_seq0 + j)`` for pack ``j``: raw bytes. A pack always has the length the
consumer announced (failed items leave their region unwritten), and no message is sent for
a failed item sent alone, whose posted receive the consumer cancels on reading the response.
A request the owner cannot parse gets a response with ``batch_status = 3`` and no data.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpupart.cluster.engine import Operation, ProgressEngine
from gpupart.cluster.tags import Kind, make_tag
from gpupart.cluster.tiles import Handle, TileStore, byte_view
from gpupart.cluster.transport import UCXTransport
from gpupart.errors import (
    FetchError,
    GpupartError,
    ProtocolViolationError,
    TileNotFoundError,
)

__all__ = [
    "FetchBatch",
    "FetchItem",
    "TileServer",
    "byte_view",
    "encode_request",
    "parse_request",
    "plan_packs",
]

_REQ_HEADER = struct.Struct("<4sHHIIQQ")
_RESP_HEADER = struct.Struct("<4sHHII")
_REQ_MAGIC, _RESP_MAGIC, _VERSION = b"GPRQ", b"GPRS", 1
_ITEM = np.dtype([("tile_id", "<u8"), ("nbytes", "<u8"), ("pack", "<i4"), ("offset", "<u8")])
_PACK = np.dtype("<u8")
_BATCH_ITEM = 0xFFFFFFFF
#: Alignment of tiles inside a pack, so views into it are aligned for every dtype.
PACK_ALIGN = 64

OK, NOT_FOUND, SIZE_MISMATCH, MALFORMED, INTERNAL = range(5)


# -- wire format --------------------------------------------------------------------------


@dataclass(slots=True)
class Request:
    """A parsed request (see the module docstring)."""

    items: np.ndarray
    packs: np.ndarray
    item_seq0: int
    pack_seq0: int


def encode_request(items: np.ndarray, packs: np.ndarray, item_seq0: int, pack_seq0: int) -> bytes:
    """Serialise a request; ``items`` has the wire item dtype, ``packs`` u64 lengths."""
    header = _REQ_HEADER.pack(
        _REQ_MAGIC, _VERSION, 0, len(items), len(packs), item_seq0, pack_seq0
    )
    return header + items.astype(_ITEM, copy=False).tobytes() + packs.astype(_PACK).tobytes()


def parse_request(payload: np.ndarray | bytes) -> Request:
    """Parse and check a request; :class:`~gpupart.ProtocolViolationError` if malformed."""
    raw = memoryview(payload).cast("B")
    if len(raw) < _REQ_HEADER.size:
        raise ProtocolViolationError(
            f"request: expected at least {_REQ_HEADER.size} header bytes, found {len(raw)}"
        )
    magic, version, _flags, n_items, n_packs, item_seq0, pack_seq0 = _REQ_HEADER.unpack_from(raw)
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
    off = _REQ_HEADER.size
    items = np.frombuffer(raw, dtype=_ITEM, count=n_items, offset=off)
    packs = np.frombuffer(raw, dtype=_PACK, count=n_packs, offset=off + n_items * _ITEM.itemsize)
    in_pack = items["pack"] >= 0
    if np.any(items["pack"][in_pack] >= n_packs) or np.any(items["pack"] < -1):
        raise ProtocolViolationError("request: an item names a pack that does not exist")
    if np.any(in_pack):
        ends = items["offset"][in_pack] + items["nbytes"][in_pack]
        if np.any(ends > packs[items["pack"][in_pack]]):
            raise ProtocolViolationError("request: an item does not fit inside its pack")
    return Request(items=items, packs=packs, item_seq0=item_seq0, pack_seq0=pack_seq0)


def encode_response(status: np.ndarray, errors: dict[int, str], batch_status: int = OK) -> bytes:
    """Serialise a response."""
    parts = [
        _RESP_HEADER.pack(_RESP_MAGIC, _VERSION, 0, len(status), batch_status),
        status.astype(np.uint8).tobytes(),
        struct.pack("<I", len(errors)),
    ]
    for index, text in errors.items():
        blob = text.encode("utf-8", errors="replace")[:4096]
        parts.append(struct.pack("<II", index, len(blob)))
        parts.append(blob)
    return b"".join(parts)


def parse_response(payload: np.ndarray | bytes) -> tuple[np.ndarray, dict[int, str], int]:
    """Parse a response into ``(status per item, error texts, batch status)``."""
    raw = memoryview(payload).cast("B")
    try:
        magic, version, _flags, n_items, batch_status = _RESP_HEADER.unpack_from(raw)
        if magic != _RESP_MAGIC or version != _VERSION:
            raise ProtocolViolationError(f"response: bad magic/version {magic!r} {version}")
        off = _RESP_HEADER.size
        status = np.frombuffer(raw, dtype=np.uint8, count=n_items, offset=off).copy()
        off += n_items
        (n_err,) = struct.unpack_from("<I", raw, off)
        off += 4
        errors: dict[int, str] = {}
        for _ in range(n_err):
            index, length = struct.unpack_from("<II", raw, off)
            off += 8
            errors[index] = bytes(raw[off : off + length]).decode("utf-8", errors="replace")
            off += length
    except (struct.error, ValueError) as exc:
        raise ProtocolViolationError(f"response: malformed ({exc})") from exc
    return status, errors, batch_status


# -- owner side ---------------------------------------------------------------------------


class _ServeBatch(Operation):
    """Owner side of one request: wait for tiles to be ready, then send response and data."""

    def __init__(self, server: TileServer, consumer: int, batch: int, request: Request):
        self.server = server
        self.peer = consumer
        self.batch = batch
        self.request = request
        self.what = f"serving fetch batch {batch} to rank {consumer}"
        self.tiles: list[Any] = []
        self.status = np.zeros(len(request.items), dtype=np.uint8)
        self.errors: dict[int, str] = {}
        self.sends: list[Any] = []
        self.keep: list[Any] = []  # buffers that must outlive their sends
        self.started = False
        self._checked = 0  # sends before this index have completed and were checked
        store = server.store
        for i, (tile_id, nbytes, _pack, _off) in enumerate(request.items.tolist()):
            try:
                tile = store.get(tile_id)
            except TileNotFoundError as exc:
                self.status[i], self.errors[i] = NOT_FOUND, str(exc)
                self.tiles.append(None)
                continue
            if tile.nbytes != nbytes:
                self.status[i] = SIZE_MISMATCH
                self.errors[i] = (
                    f"tile {tile_id} on rank {store.owner}: expected {nbytes} bytes (as the"
                    f" handle says), found {tile.nbytes}"
                )
                self.tiles.append(None)
                continue
            self.tiles.append(tile)

    def poll(self) -> bool:
        if not self.started:
            if not all(t is None or t.ready() for t in self.tiles):
                return False
            self._send_all()
            self.started = True
        while self._checked < len(self.sends) and self.sends[self._checked].completed:
            UCXTransport.check(self.sends[self._checked])
            self._checked += 1
        if self._checked < len(self.sends):
            return False
        self.sends.clear()
        self.keep.clear()
        return True

    def _send_all(self) -> None:
        transport, me = self.server.transport, self.server.store.owner
        response = encode_response(self.status, self.errors)
        self.keep.append(response)
        self.sends.append(transport.send(self.peer, make_tag(Kind.RESPONSE, me, self.batch), response))
        req = self.request
        items = req.items
        packs: list[Any] = [None] * len(req.packs)
        for i, tile in enumerate(self.tiles):
            if tile is None or tile.nbytes == 0:
                continue
            pack = int(items["pack"][i])
            if pack < 0:
                tag = make_tag(Kind.DATA, me, req.item_seq0 + i)
                self.keep.append(tile.data)
                self.sends.append(transport.send(self.peer, tag, tile.data))
                continue
            if packs[pack] is None:
                packs[pack] = self.server.allocate_pack(int(req.packs[pack]), tile.data)
            start = int(items["offset"][i])
            _copy_bytes(packs[pack], start, tile.data)
        for j, buf in enumerate(packs):
            if buf is None:
                if int(req.packs[j]) == 0:
                    continue
                buf = np.zeros(int(req.packs[j]), dtype=np.uint8)  # all items failed
            self.keep.append(buf)
            self.sends.append(transport.send(self.peer, make_tag(Kind.DATA, me, req.pack_seq0 + j), buf))

    def fail(self, exc: BaseException) -> None:
        self.sends.clear()  # dropping the requests cancels them
        self.keep.clear()


def _copy_bytes(dst: Any, start: int, src: Any) -> None:
    """Copy the flat byte view ``src`` into ``dst[start:]`` across host/device as needed."""
    n = src.shape[0]
    if type(dst) is type(src):
        dst[start : start + n] = src
    elif isinstance(dst, np.ndarray):  # device tile into a host pack
        dst[start : start + n] = src.get()
    else:  # host tile into a device pack
        dst[start : start + n].set(src)


class TileServer:
    """Owner side: answers requests for the tiles in ``store`` from the progress thread."""

    def __init__(
        self,
        store: TileStore,
        transport: UCXTransport,
        engine: ProgressEngine,
        allocate_pack: Callable[[int, Any], Any] | None = None,
    ) -> None:
        self.store = store
        self.transport = transport
        self.engine = engine
        self.allocate_pack = allocate_pack or _allocate_like
        engine.on(Kind.REQUEST, self.handle_request)

    def handle_request(self, consumer: int, batch: int, payload: np.ndarray) -> None:
        """Parse one request and start serving it; reject malformed ones with a response."""
        try:
            request = parse_request(payload)
        except ProtocolViolationError as exc:
            me = self.store.owner
            response = encode_response(
                np.zeros(0, dtype=np.uint8), {_BATCH_ITEM: str(exc)}, batch_status=MALFORMED
            )
            send = self.transport.send(consumer, make_tag(Kind.RESPONSE, me, batch), response)
            self.engine.submit(_Sent(consumer, send, response))
            return
        self.engine.submit(_ServeBatch(self, consumer, batch, request))


def _allocate_like(nbytes: int, example: Any) -> Any:
    """A pack buffer in the same kind of memory as ``example`` (a tile's byte view)."""
    if isinstance(example, np.ndarray):
        return np.empty(nbytes, dtype=np.uint8)
    import cupy  # a non-NumPy tile on the owner is a CuPy one

    return cupy.empty(nbytes, dtype=cupy.uint8)


class _Sent(Operation):
    """Keeps a send's buffer alive until UCX is done with it."""

    what = "sending a response"

    def __init__(self, peer: int, request: Any, buffer: Any):
        self.peer = peer
        self.request = request
        self.buffer = buffer

    def poll(self) -> bool:
        return bool(self.request.completed)

    def fail(self, exc: BaseException) -> None:
        self.request = None


# -- consumer side ------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class FetchItem:
    """One tile of a batch as the consumer sees it."""

    handle: Handle
    future: Future
    result: Any  # the array handed to the caller
    target: Any  # flat byte view receiving the data (result's, or None when packed)
    out: Any = None  # caller's buffer when the item is packed and must be copied out
    pack: int = -1
    offset: int = 0
    request: Any = None
    done: bool = False


class FetchBatch(Operation):
    """Consumer side of one request to one owner: completes each item's future."""

    def __init__(
        self,
        owner: int,
        batch: int,
        items: list[FetchItem],
        packs: list[Any],
        *,
        timeout: float,
        on_finish: Callable[[FetchBatch], None],
    ):
        self.peer = owner
        self.batch = batch
        self.items = items
        self.packs = packs
        self.pack_requests: list[Any] = []
        self.send_request: Any = None
        self.request_bytes: bytes = b""
        self.response: tuple[np.ndarray, dict[int, str], int] | None = None
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.what = f"fetching {len(items)} tile(s) from rank {owner}"
        self._on_finish = on_finish
        self._pending = len(items)

    def post(self, transport: UCXTransport, me: int, item_seq0: int, pack_seq0: int) -> None:
        """Post every receive, then the request (so no payload can arrive unexpected)."""
        wire = np.zeros(len(self.items), dtype=_ITEM)
        for i, item in enumerate(self.items):
            wire[i] = (item.handle.tile_id, item.handle.nbytes, item.pack, item.offset)
            if item.pack < 0 and item.handle.nbytes:
                item.request = transport.recv(make_tag(Kind.DATA, self.peer, item_seq0 + i), item.target)
        for j, buf in enumerate(self.packs):
            self.pack_requests.append(transport.recv(make_tag(Kind.DATA, self.peer, pack_seq0 + j), buf))
        lengths = np.array([b.shape[0] for b in self.packs], dtype=_PACK)
        self.request_bytes = encode_request(wire, lengths, item_seq0, pack_seq0)
        self.send_request = transport.send(
            self.peer, make_tag(Kind.REQUEST, me, self.batch), self.request_bytes
        )

    def on_response(self, payload: np.ndarray) -> None:
        """Record the owner's response (called from the engine thread)."""
        self.response = parse_response(payload)

    def poll(self) -> bool:
        if self.response is None:
            return False
        status, errors, batch_status = self.response
        if batch_status != OK:
            raise FetchError(
                f"rank {self.peer} rejected the request as malformed: {errors.get(_BATCH_ITEM, '')}"
            )
        if len(status) != len(self.items):
            raise ProtocolViolationError(
                f"response from rank {self.peer}: expected {len(self.items)} statuses,"
                f" found {len(status)}"
            )
        packs_done = [r is None or r.completed for r in self.pack_requests]
        for i, item in enumerate(self.items):
            if item.done:
                continue
            code = int(status[i])
            if code != OK:
                item.request = None  # cancels the receive: nothing will be sent for it
                self._finish(item, exc=_error_for(code, item.handle, errors.get(i, "")))
                continue
            if item.pack >= 0:
                if not packs_done[item.pack]:
                    continue
                UCXTransport.check(self.pack_requests[item.pack])
                view = self.packs[item.pack][item.offset : item.offset + item.handle.nbytes]
                self._finish(item, value=_shape(view, item))
            elif item.request is None or item.request.completed:
                if item.request is not None:
                    UCXTransport.check(item.request)
                    item.request = None
                self._finish(item, value=item.result)
        if self._pending:
            return False
        self._on_finish(self)
        return True

    def _finish(self, item: FetchItem, *, value: Any = None, exc: BaseException | None = None) -> None:
        item.done = True
        self._pending -= 1
        if item.future.cancelled():
            return
        if exc is not None:
            item.future.set_exception(exc)
        else:
            item.future.set_result(value)

    def fail(self, exc: BaseException) -> None:
        for item in self.items:
            item.request = None
            if not item.done:
                self._finish(item, exc=exc)
        self.pack_requests.clear()
        self._on_finish(self)


def _shape(view: Any, item: FetchItem) -> Any:
    """Turn a pack's byte range into the item's array (or copy it into the caller's ``out``)."""
    h = item.handle
    arr = view.view(np.dtype(h.dtype)).reshape(h.shape, order=h.order)
    if item.out is None:
        return arr
    item.out[...] = arr
    return item.out


def _error_for(code: int, handle: Handle, text: str) -> GpupartError:
    if code == NOT_FOUND:
        return TileNotFoundError(handle.owner, handle.tile_id, "")
    return FetchError(f"rank {handle.owner} could not send tile {handle.tile_id}: {text}")


def plan_packs(
    nbytes: Sequence[int], eligible: Sequence[bool], pack_limit: int
) -> tuple[list[int], list[int], list[int]]:
    """Assign eligible items to packs of at most ``pack_limit`` bytes.

    Returns ``(pack index per item or -1, offset per item, length per pack)``; offsets are
    aligned to :data:`PACK_ALIGN`.
    """
    pack_of = [-1] * len(nbytes)
    offset = [0] * len(nbytes)
    lengths: list[int] = []
    cursor = 0
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

