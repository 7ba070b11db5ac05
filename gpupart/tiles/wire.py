"""The fetch wire format: what a consumer asks an owner for, and how the owner answers.

Little-endian; tags from :mod:`gpupart.comm.tags`. One request asks one owner for a batch of
tiles and names where each reply will land::

    request, tag (REQUEST, consumer, batch)
        header  magic b"GPRQ" | u16 version=2 | u16 flags=0 | u32 n_items | u32 n_packs
                | u64 item_seq0 | u64 pack_seq0
        items   n_items x (u64 tile_id | u64 nbytes | i32 pack (-1: sent alone) | u64 offset)
        packs   n_packs x u64 length

Packed items come in pack order and, within a pack, in offset order without overlapping;
offsets are multiples of :data:`PACK_ALIGN`; each pack is exactly as long as the end of its
last item. The owner answers with data only, each into a receive the consumer posted:

* pack ``j``, tag ``(DATA, owner, pack_seq0 + j)``: the announced length, each item at its
  offset; padding and the room of a failed item are zeros;
* item ``i`` sent alone, tag ``(DATA, owner, item_seq0 + i)``: its bytes; nothing for a
  failed item.

When something is wrong the owner first sends an *error reply*, tag ``(RESPONSE, owner,
batch)``, a kind the consumer's progress engine probes for; UCX matches one sender's
messages in the order they were sent, so the reply is seen before any data of its batch::

    error reply   magic b"GPER" | u8 what | body
        what = 1 (items failed): u32 count | count x u32 item index | count x u8 code
        what = 2 (request rejected, nothing follows): utf-8 reason (at most 4 KiB)

Item codes: 1 no such tile (unknown or freed), 2 size mismatch (a stale or forged handle).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gpupart.errors import ProtocolViolationError

__all__ = [
    "ITEM",
    "MAX_ITEMS",
    "NOT_FOUND",
    "PACK_ALIGN",
    "SIZE_MISMATCH",
    "ErrorReply",
    "Request",
    "encode_failures",
    "encode_rejection",
    "encode_request",
    "parse_error_reply",
    "parse_request",
]

#: One item of a request, as it is on the wire.
ITEM = np.dtype([("tile_id", "<u8"), ("nbytes", "<u8"), ("pack", "<i4"), ("offset", "<u8")])
#: Alignment of tiles inside a pack, so that views into it are aligned for every dtype.
PACK_ALIGN = 64
#: Most items in one request (a consumer cuts bigger calls into several requests).
MAX_ITEMS = 4096
#: Largest item size or offset a request may name.
MAX_SIZE = 1 << 62

NOT_FOUND, SIZE_MISMATCH = 1, 2
#: Requests of at most this many items are checked with plain comparisons, larger ones with
#: array operations: the same checks, each done the cheaper way (NumPy's fixed cost per
#: operation would otherwise dominate the one-tile requests that set a get's latency).
FEW = 16

_HEADER = struct.Struct("<4sHHIIQQ")
_REQUEST_MAGIC, _ERROR_MAGIC, _VERSION = b"GPRQ", b"GPER", 2
_FAILED, _REJECTED = 1, 2
_MAX_REASON = 4096


@dataclass(slots=True)
class Request:
    """A parsed, checked request: its items (an :data:`ITEM` array) and pack lengths."""

    items: np.ndarray
    pack_lengths: np.ndarray  # int64
    item_seq0: int
    pack_seq0: int


def encode_request(
    items: np.ndarray, pack_lengths: Sequence[int], item_seq0: int, pack_seq0: int
) -> bytes:
    """Serialise a request from its :data:`ITEM` array and pack lengths."""
    header = _HEADER.pack(
        _REQUEST_MAGIC, _VERSION, 0, len(items), len(pack_lengths), item_seq0, pack_seq0
    )
    return b"".join((header, items.tobytes(), struct.pack(f"<{len(pack_lengths)}Q", *pack_lengths)))


def parse_request(payload: np.ndarray | bytes) -> Request:
    """Parse and check a request; :class:`~gpupart.ProtocolViolationError` if malformed."""
    raw = memoryview(payload).cast("B")
    if len(raw) < _HEADER.size:
        raise ProtocolViolationError(
            f"request: expected at least {_HEADER.size} header bytes, found {len(raw)}"
        )
    magic, version, flags, n_items, n_packs, item_seq0, pack_seq0 = _HEADER.unpack_from(raw)
    if magic != _REQUEST_MAGIC or version != _VERSION:
        raise ProtocolViolationError(
            f"request: expected magic {_REQUEST_MAGIC!r} version {_VERSION}, found"
            f" {magic!r} {version}"
        )
    if flags:
        raise ProtocolViolationError(f"request: expected no flags, found {flags:#x}")
    if not 0 < n_items <= MAX_ITEMS:
        raise ProtocolViolationError(f"request: expected 1..{MAX_ITEMS} items, found {n_items}")
    want = _HEADER.size + n_items * ITEM.itemsize + n_packs * 8
    if len(raw) != want:
        raise ProtocolViolationError(
            f"request: expected {want} bytes for {n_items} items and {n_packs} packs,"
            f" found {len(raw)} (truncated or padded)"
        )
    # Views of the message, which the caller owns (a received request is never reused).
    items = np.frombuffer(raw, dtype=ITEM, count=n_items, offset=_HEADER.size)
    lengths = np.frombuffer(raw, dtype="<u8", count=n_packs, offset=want - n_packs * 8)
    _check_layout(items, lengths)
    return Request(items, lengths.view(np.int64), item_seq0, pack_seq0)


def _check_layout(items: np.ndarray, lengths: np.ndarray) -> None:
    """Sizes in range; packed items in order, inside their pack; packs exactly filled."""
    n_packs = len(lengths)
    if len(items) <= FEW and not n_packs:  # the few-tiles request with every tile alone
        for _, size, pack, offset in items.tolist():
            if size >= MAX_SIZE or offset >= MAX_SIZE:
                raise ProtocolViolationError(
                    f"request: expected item sizes and offsets below 2**62, found {size}"
                    f" bytes at offset {offset}"
                )
            if pack != -1:
                raise ProtocolViolationError(f"request: an item names pack {pack}; there are none")
        return
    sizes, offsets, packs = items["nbytes"], items["offset"], items["pack"]
    if (sizes | offsets).max() >= MAX_SIZE:
        k = int(np.argmax((sizes >= MAX_SIZE) | (offsets >= MAX_SIZE)))
        raise ProtocolViolationError(
            f"request: expected item sizes and offsets below 2**62, found {sizes[k]} bytes at"
            f" offset {offsets[k]}"
        )
    if not n_packs:  # every item travels alone
        if (packs != -1).any():
            raise ProtocolViolationError(
                f"request: an item names pack {int(packs[packs != -1][0])}; there are none"
            )
        return
    bad = (packs < -1) | (packs >= n_packs)
    if bad.any():
        raise ProtocolViolationError(
            f"request: an item names pack {int(packs[np.argmax(bad)])}; there are {n_packs}"
        )
    packed = np.flatnonzero(packs >= 0)
    p = packs[packed].astype(np.int64)
    start = offsets[packed].astype(np.int64)
    end = start + sizes[packed].astype(np.int64)
    if (start % PACK_ALIGN).any():
        raise ProtocolViolationError(
            f"request: packed items must start at multiples of {PACK_ALIGN} bytes"
        )
    same = p[1:] == p[:-1]
    if (p[1:] < p[:-1]).any() or (same & (start[1:] < end[:-1])).any():
        raise ProtocolViolationError(
            "request: packed items must come in pack order and, within a pack, in offset"
            " order without overlapping"
        )
    # Each pack is exactly as long as the end of its last item (packs with none are empty).
    extent = np.zeros(n_packs, dtype=np.int64)
    if len(packed):
        last = np.append(np.flatnonzero(~same), len(p) - 1)
        extent[p[last]] = end[last]
    wrong = extent != lengths.astype(np.int64)
    if wrong.any():
        j = int(np.argmax(wrong))
        raise ProtocolViolationError(
            f"request: pack {j} is announced as {int(lengths[j])} bytes, its items end at"
            f" {int(extent[j])}"
        )


@dataclass(slots=True)
class ErrorReply:
    """A parsed error reply: failed item indices and codes, or a rejection's reason."""

    indices: np.ndarray | None = None
    codes: np.ndarray | None = None
    rejection: str | None = None


def encode_failures(indices: np.ndarray, codes: np.ndarray) -> bytes:
    """Serialise an error reply naming the failed items of a request and why."""
    head = _ERROR_MAGIC + struct.pack("<BI", _FAILED, len(indices))
    return b"".join(
        (head, np.asarray(indices, "<u4").tobytes(), np.asarray(codes, np.uint8).tobytes())
    )


def encode_rejection(reason: str) -> bytes:
    """Serialise an error reply rejecting a whole request."""
    body = reason.encode("utf-8", errors="replace")[:_MAX_REASON]
    return _ERROR_MAGIC + bytes([_REJECTED]) + body


def parse_error_reply(payload: np.ndarray | bytes, n_items: int) -> ErrorReply:
    """Parse an error reply to a request of ``n_items`` items."""
    raw = bytes(memoryview(payload).cast("B"))
    if raw[:4] != _ERROR_MAGIC or len(raw) < 5:
        raise ProtocolViolationError(
            f"error reply: expected magic {_ERROR_MAGIC!r}, found {raw[:4]!r}"
        )
    what = raw[4]
    if what == _REJECTED:
        return ErrorReply(rejection=raw[5 : 5 + _MAX_REASON].decode("utf-8", errors="replace"))
    if what != _FAILED or len(raw) < 9:
        raise ProtocolViolationError(f"error reply: unknown kind {what}")
    (count,) = struct.unpack_from("<I", raw, 5)
    if len(raw) != 9 + 5 * count or not 0 < count <= n_items:
        raise ProtocolViolationError(
            f"error reply: expected 1..{n_items} failures in {9 + 5 * count} bytes, found"
            f" {count} in {len(raw)}"
        )
    indices = np.frombuffer(raw, "<u4", count, 9).astype(np.int64)
    codes = np.frombuffer(raw, np.uint8, count, 9 + 4 * count).copy()
    if (indices >= n_items).any() or (codes == 0).any():
        raise ProtocolViolationError("error reply: an index or code out of range")
    return ErrorReply(indices=indices, codes=codes)
