"""Fetch in pieces, without a transport: the wire format (requests and error replies), the
plan of one request, and the views a consumer makes of a received pack.

The whole path over a transport is tested in ``test_inprocess_job.py`` (threads) and
``test_cluster_mp.py`` (processes over UCX).
"""

from __future__ import annotations

import itertools
import struct

import numpy as np
import pytest

import gpupart
from gpupart.tiles import wire
from gpupart.tiles.plan import plan_items
from gpupart.tiles.receive import error_for, pack_views

HEADER = 32  # magic | version | flags | n_items | n_packs | item_seq0 | pack_seq0
ITEM = 28  # tile_id u64 | nbytes u64 | pack i32 | offset u64


# -- requests ---------------------------------------------------------------------------------


def _request(n: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """A planned request of ``n`` items: small ones packed, every fifth sent alone."""
    nbytes = np.array([(i * 37) % 200 if i % 5 != 4 else 3000 + i for i in range(n)])
    items, lengths = plan_items(np.arange(1000, 1000 + n, dtype=np.uint64), nbytes, 1024, 1024)
    return wire.encode_request(items, lengths, 77, 99), items, lengths


@pytest.mark.parametrize("n", [1, 3, 16, 17, 200, wire.MAX_ITEMS])
def test_request_round_trip(n):
    raw, items, lengths = _request(n)
    assert len(raw) == HEADER + ITEM * n + 8 * len(lengths)
    assert wire.ITEM.itemsize == ITEM
    for payload in (raw, np.frombuffer(raw, dtype=np.uint8)):
        req = wire.parse_request(payload)
        assert req.items.dtype == wire.ITEM and np.array_equal(req.items, items)
        assert req.pack_lengths.tolist() == lengths.tolist()
        assert (req.item_seq0, req.pack_seq0) == (77, 99)


def _patched(raw: bytes, offset: int, fmt: str, value: int) -> bytes:
    buf = bytearray(raw)
    struct.pack_into(fmt, buf, offset, value)
    return bytes(buf)


def _layout(nbytes, packs, offsets, lengths) -> bytes:
    """A request with exactly this layout (bypassing the planner)."""
    items = np.zeros(len(nbytes), dtype=wire.ITEM)
    items["tile_id"] = np.arange(1, len(nbytes) + 1)
    items["nbytes"] = nbytes
    items["pack"] = packs
    items["offset"] = offsets
    return wire.encode_request(items, np.asarray(lengths, np.int64), 1, 2)


def _malformed() -> list[tuple[str, bytes, str]]:
    raw, _, _ = _request(3)  # 3 items in one pack
    one = _layout([100], [0], [0], [100])  # one item in one pack of 100 bytes
    item0 = HEADER  # first item: tile_id +0 | nbytes +8 | pack +16 | offset +20
    return [
        ("empty", b"", "at least 32 header bytes"),
        ("short header", raw[:31], "at least 32 header bytes"),
        ("bad magic", b"XPRQ" + raw[4:], "magic"),
        ("old version", _patched(raw, 4, "<H", 1), "version"),
        ("new version", _patched(raw, 4, "<H", 3), "version"),
        ("flags", _patched(raw, 6, "<H", 0x80), "expected no flags, found 0x80"),
        ("truncated item", raw[:-9], "truncated or padded"),
        ("padded", raw + b"\0", "truncated or padded"),
        ("huge item count", _patched(raw, 8, "<I", 2**32 - 1), "expected 1..4096 items"),
        ("one item too many", _patched(raw, 8, "<I", wire.MAX_ITEMS + 1), "1..4096 items"),
        ("huge pack count", _patched(raw, 12, "<I", 10**6), "truncated or padded"),
        ("no items", _layout([], [], [], []), "expected 1..4096 items, found 0"),
        ("pack out of range", _patched(one, item0 + 16, "<i", 1), "names pack 1; there are 1"),
        ("pack below -1", _patched(one, item0 + 16, "<i", -2), "names pack -2"),
        ("a pack but none announced", _layout([8, 8], [-1, 0], [0, 0], []), "there are none"),
        ("pack -2, none announced", _layout([8], [-2], [0], []), "names pack -2"),
        ("item past its pack", _patched(one, item0 + 20, "<Q", 64), "its items end at 164"),
        ("item larger than its pack", _patched(one, item0 + 8, "<Q", 101), "end at 101"),
        ("pack longer than its items", _layout([100], [0], [0], [101]), "announced as 101"),
        ("misaligned", _layout([8, 8], [0, 0], [0, 8], [16]), "multiples of 64"),
        ("overlap", _layout([100, 8], [0, 0], [0, 64], [72]), "without overlapping"),
        ("backwards", _layout([8, 8], [0, 0], [64, 0], [72]), "without overlapping"),
        ("pack order", _layout([8, 8], [1, 0], [0, 0], [8, 8]), "in pack order"),
        ("an empty pack with bytes", _layout([8], [0], [0], [8, 64]), "pack 1 is announced"),
        ("huge size", _layout([2**62], [-1], [0], []), "below 2**62"),
        ("huge offset", _layout([8], [-1], [2**62], []), "below 2**62"),
        ("size wraps", _layout([2**64 - 8], [0], [0], [0]), "below 2**62"),
    ]


@pytest.mark.parametrize(("name", "payload", "needle"), _malformed(), ids=lambda v: str(v)[:24])
def test_malformed_requests_raise_protocol_violation(name, payload, needle):
    with pytest.raises(gpupart.ProtocolViolationError) as info:
        wire.parse_request(payload)
    assert needle in str(info.value), name
    assert isinstance(info.value, ValueError) and isinstance(info.value, gpupart.GpupartError)


def test_the_malformed_cases_differ_from_a_good_request_in_one_field_only():
    """The layout cases are built by hand: show the hand-built good one passes."""
    assert wire.parse_request(_layout([100], [0], [0], [100])).pack_lengths.tolist() == [100]
    good = _layout([8, 8, 5000, 0], [0, 0, -1, 1], [0, 64, 0, 0], [72, 0])
    assert wire.parse_request(good).items["pack"].tolist() == [0, 0, -1, 1]
    assert wire.parse_request(_layout([2**62 - 1], [-1], [0], [])).items["nbytes"][0] > 0


def _assert_consistent(req: wire.Request) -> None:
    """What the owner relies on once a request has parsed."""
    items, lengths = req.items, req.pack_lengths
    assert 0 < len(items) <= wire.MAX_ITEMS
    assert (items["nbytes"] < 2**62).all() and (items["offset"] < 2**62).all()
    packs = items["pack"]
    assert ((packs >= -1) & (packs < len(lengths))).all()
    extent = np.zeros(len(lengths), dtype=np.int64)
    last = (-1, 0)
    for p, b, o in zip(
        packs.tolist(), items["nbytes"].tolist(), items["offset"].tolist(), strict=True
    ):
        if p < 0:
            continue
        assert o % wire.PACK_ALIGN == 0
        assert (p, o) >= last, "in pack order, then offset order, without overlap"
        last = (p, o + b)
        extent[p] = o + b
    assert extent.tolist() == lengths.tolist()  # each pack exactly filled


@pytest.mark.parametrize("n", [2, 40])
def test_every_truncation_and_byte_flip_is_caught_or_harmless(n):
    raw, _, _ = _request(n)
    for cut in range(len(raw)):
        with pytest.raises(gpupart.ProtocolViolationError):
            wire.parse_request(raw[:cut])
    rng = np.random.default_rng(n)
    parsed = 0
    for _ in range(1000):
        buf = bytearray(raw)
        for pos in rng.integers(0, len(buf), size=rng.integers(1, 4)):
            buf[pos] ^= int(rng.integers(1, 256))
        try:
            req = wire.parse_request(bytes(buf))
        except gpupart.ProtocolViolationError:
            continue
        parsed += 1
        _assert_consistent(req)
    assert parsed  # some flips (tile ids, sequence numbers) are harmless
    for _ in range(200):
        garbage = rng.integers(0, 256, size=rng.integers(0, 300), dtype=np.uint8).tobytes()
        with pytest.raises(gpupart.ProtocolViolationError):
            wire.parse_request(garbage)


# -- error replies ----------------------------------------------------------------------------


def test_failure_reply_round_trip():
    raw = wire.encode_failures(np.array([0, 5, 2]), np.array([1, 2, 1]))
    assert len(raw) == 4 + 1 + 4 + 3 * 5
    for payload in (raw, np.frombuffer(raw, np.uint8)):
        reply = wire.parse_error_reply(payload, 6)
        assert reply.rejection is None
        assert reply.indices.tolist() == [0, 5, 2] and reply.codes.tolist() == [1, 2, 1]
    every = wire.encode_failures(np.arange(4096), np.full(4096, wire.NOT_FOUND))
    assert wire.parse_error_reply(every, 4096).indices.tolist() == list(range(4096))


def test_rejection_round_trip():
    raw = wire.encode_rejection("bad request ✗")
    for payload in (raw, np.frombuffer(raw, np.uint8)):
        reply = wire.parse_error_reply(payload, 3)
        assert reply.rejection == "bad request ✗" and reply.indices is None
    assert len(wire.encode_rejection("x" * 10_000)) == 5 + 4096  # the reason is capped
    assert wire.parse_error_reply(wire.encode_rejection(""), 1).rejection == ""
    # A reason cut inside a character still decodes (replacement character).
    cut = wire.parse_error_reply(wire.encode_rejection("✗" * 2000), 1).rejection
    assert len(cut.encode("utf-8", errors="replace")) <= 4096 + 3 and cut.startswith("✗")


def _failures(count: int, indices, codes) -> bytes:
    head = b"GPER" + struct.pack("<BI", 1, count)
    return head + np.asarray(indices, "<u4").tobytes() + np.asarray(codes, np.uint8).tobytes()


@pytest.mark.parametrize(
    ("name", "payload", "needle"),
    [
        ("empty", b"", "magic"),
        ("bad magic", b"GPRQ" + bytes([1]) + struct.pack("<I", 1) + b"\0" * 5, "magic"),
        ("magic only", b"GPER", "magic"),
        ("unknown kind", b"GPER" + bytes([3]) + struct.pack("<I", 1) + b"\0" * 5, "kind 3"),
        ("kind 0", b"GPER" + bytes([0]), "kind 0"),
        ("count cut", b"GPER" + bytes([1]) + b"\1\0\0", "kind 1"),
        ("no failures", _failures(0, [], []), "found 0"),
        ("more failures than items", _failures(5, range(5), [1] * 5), "1..4 failures"),
        ("truncated", _failures(2, [0, 1], [1, 1])[:-1], "found 2 in 18"),
        ("padded", _failures(2, [0, 1], [1, 1]) + b"\0", "found 2 in 20"),
        ("count larger than the body", _failures(3, [0, 1], [1, 1]), "found 3 in 19"),
        ("index out of range", _failures(1, [4], [1]), "out of range"),
        ("huge index", _failures(1, [2**32 - 1], [1]), "out of range"),
        ("code 0", _failures(2, [0, 1], [1, 0]), "out of range"),
    ],
    ids=lambda v: str(v)[:24],
)
def test_malformed_error_replies_raise_protocol_violation(name, payload, needle):
    with pytest.raises(gpupart.ProtocolViolationError) as info:
        wire.parse_error_reply(payload, 4)
    assert needle in str(info.value), name


def test_every_truncation_of_a_failure_reply_is_caught_and_flips_stay_in_range():
    raw = wire.encode_failures(np.array([3, 0, 7]), np.array([1, 2, 1]))
    for cut in range(len(raw)):
        with pytest.raises(gpupart.ProtocolViolationError):
            wire.parse_error_reply(raw[:cut], 8)
    rng = np.random.default_rng(5)
    for _ in range(1000):
        buf = bytearray(raw)
        for pos in rng.integers(0, len(buf), size=rng.integers(1, 3)):
            buf[pos] ^= int(rng.integers(1, 256))
        try:
            reply = wire.parse_error_reply(bytes(buf), 8)
        except gpupart.ProtocolViolationError:
            continue
        if reply.rejection is None:  # what a consumer indexes with is in range
            assert 0 < len(reply.indices) <= 8 and len(reply.codes) == len(reply.indices)
            assert ((reply.indices >= 0) & (reply.indices < 8)).all() and reply.codes.all()


def test_item_codes_become_errors_naming_the_tile():
    h = gpupart.Handle(3, 17, "<f8", (2,), 16, gpupart.Location.parse(3))
    missing = error_for(wire.NOT_FOUND, h)
    assert isinstance(missing, gpupart.TileNotFoundError) and isinstance(missing, LookupError)
    assert (missing.owner, missing.tile_id) == (3, 17)
    stale = error_for(wire.SIZE_MISMATCH, h)
    assert type(stale) is gpupart.FetchError and "stale or forged" in str(stale)
    assert "16 bytes" in str(stale)
    odd = error_for(9, h)
    assert type(odd) is gpupart.FetchError and "code 9" in str(odd) and "tile 17" in str(odd)


# -- planning one request ---------------------------------------------------------------------


def test_plan_items_layout():
    ids = np.arange(1, 6, dtype=np.uint64)
    items, lengths = plan_items(ids, np.array([10, 20, 500, 30, 0]), 100, 1000)
    assert items["tile_id"].tolist() == ids.tolist()
    assert items["nbytes"].tolist() == [10, 20, 500, 30, 0]
    assert items["pack"].tolist() == [0, 0, -1, 0, 0]  # above the threshold: alone
    assert items["offset"].tolist() == [0, 64, 0, 128, 192]  # aligned to PACK_ALIGN
    assert lengths.tolist() == [192]
    # A smaller limit cuts the line every (limit - largest packed tile) bytes.
    items, lengths = plan_items(ids, np.array([10, 20, 500, 30, 0]), 100, 100)
    assert items["pack"].tolist() == [0, 0, -1, 1, 2]
    assert items["offset"].tolist() == [0, 64, 0, 0, 0] and lengths.tolist() == [84, 30, 0]
    items, lengths = plan_items(ids[:2], np.array([5000, 6000]), 100, 1000)
    assert items["pack"].tolist() == [-1, -1] and lengths.tolist() == []
    items, lengths = plan_items(ids[:0], np.array([], np.int64), 100, 1000)
    assert len(items) == 0 and len(lengths) == 0


def test_plan_items_packs_one_tile_with_bytes_only_with_others():
    ids = np.arange(1, 4, dtype=np.uint64)
    # One small tile among big ones: alone (a pack of one only adds a copy each side) ...
    items, lengths = plan_items(ids[:2], np.array([5, 5000]), 100, 1000)
    assert items["pack"].tolist() == [-1, -1] and lengths.tolist() == []
    # ... but empty tiles are always packed (their room is empty).
    items, lengths = plan_items(ids[:2], np.array([5, 0]), 100, 1000)
    assert items["pack"].tolist() == [-1, 0] and lengths.tolist() == [0]
    items, lengths = plan_items(ids[:2], np.array([5, 5]), 100, 1000)
    assert items["pack"].tolist() == [0, 0] and lengths.tolist() == [69]


def test_plan_items_invariants_and_wire_round_trip():
    rng = np.random.default_rng(7)
    threshold, limit = 1000, 4096
    nbytes = rng.integers(0, 1500, size=2000)
    items, lengths = plan_items(np.arange(2000, dtype=np.uint64), nbytes, threshold, limit)
    assert ((items["pack"] >= 0) == (nbytes <= threshold)).all()
    assert (lengths <= limit).all()
    members: dict[int, list[int]] = {}
    for i, p in enumerate(items["pack"].tolist()):
        if p >= 0:
            assert items["offset"][i] % wire.PACK_ALIGN == 0
            members.setdefault(p, []).append(i)
    assert sorted(members) == list(range(len(lengths)))  # no pack without items
    for p, idx in members.items():
        spans = sorted((int(items["offset"][i]), int(items["offset"][i] + nbytes[i])) for i in idx)
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), p
        assert lengths[p] == max(end for _, end in spans)
    req = wire.parse_request(wire.encode_request(items, lengths, 1, 2))
    assert np.array_equal(req.items, items) and req.pack_lengths.tolist() == lengths.tolist()


# -- views of a received pack -----------------------------------------------------------------


def _handle(tile_id: int, shape: tuple[int, ...], dtype: str, order: str = "C") -> gpupart.Handle:
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return gpupart.Handle(
        0, tile_id, np.dtype(dtype).str, shape, nbytes, gpupart.Location.parse(0), order
    )


@pytest.mark.parametrize(
    "specs",
    [
        [((4, 3), "float64")] * 5,  # alike and evenly spaced: one strided view, split
        [((7,), "int16")] * 3,
        [((4, 3), "float64"), ((5,), "int8"), ((2, 2), "complex64")],  # mixed: one by one
        [((3, 2), "float32", "F")] * 4,  # F order: one by one
        [((0,), "float64")] * 3 + [((), "int32")],  # empty and 0-d
    ],
)
def test_pack_views_match_the_bytes_of_each_tile(specs):
    handles = [_handle(i, *spec) for i, spec in enumerate(specs)]
    nbytes = np.array([h.nbytes for h in handles])
    items, lengths = plan_items(np.arange(len(handles), dtype=np.uint64), nbytes, 1 << 20, 1 << 20)
    if (nbytes > 0).sum() < 2:  # a lone tile with bytes is not packed: lay it out by hand
        items["pack"] = 0
        items["offset"] = np.arange(len(handles)) * 64
        lengths = np.array([int(items["offset"][-1] + nbytes[-1])])
    offsets = items["offset"]
    pack = np.zeros(int(lengths[0]), dtype=np.uint8)
    expected = []
    for h, off in zip(handles, offsets.tolist(), strict=True):
        arr = (np.arange(np.prod(h.shape)) + 10 * h.tile_id).astype(h.dtype)
        arr = arr.reshape(h.shape, order=h.order)
        pack[off : off + h.nbytes] = arr.ravel(order="K").view(np.uint8)
        expected.append(arr)
    views = pack_views(pack, np.arange(len(handles)), handles, offsets)
    for got, want, h in zip(views, expected, handles, strict=True):
        assert got.shape == h.shape and got.dtype == np.dtype(h.dtype)
        np.testing.assert_array_equal(got, want)
        assert got.size == 0 or np.shares_memory(got, pack)  # views, not copies
        if h.order == "F" and got.ndim > 1:
            assert got.flags.f_contiguous


def test_pack_views_of_some_tiles_at_uneven_offsets():
    handles = [_handle(i, (2, 3), "float64") for i in range(5)]
    pack = np.arange(5 * 64, dtype=np.uint8)
    offsets = np.arange(5, dtype=np.uint64) * 64
    for idx in ([1, 2, 4], [0, 1, 2]):  # uneven steps: one by one; even: one strided view
        views = pack_views(pack, np.array(idx), handles, offsets)
        for view, i in zip(views, idx, strict=True):
            assert view.shape == (2, 3) and view.dtype == np.float64
            assert np.shares_memory(view, pack)
            np.testing.assert_array_equal(view.view(np.uint8).ravel(), pack[64 * i : 64 * i + 48])
