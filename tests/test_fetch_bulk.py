"""The vectorised pieces of a bulk fetch: planning, request checks, the pack kernel, the
owner's and the consumer's pack buffers, handle records, ``out`` checks and the tile store.

What the old result sinks (``FutureSink``, ``ResultList``) were tested for is now tested on
:class:`~gpupart.tiles.transfer.Transfer` in ``test_transfer.py``.
"""

from __future__ import annotations

import concurrent.futures
import copy
import dataclasses
import gc
import itertools
import pickle

import numpy as np
import pytest
from gpupart.kernels.pack import gather_host

import gpupart
from gpupart.tiles import wire
from gpupart.tiles.fetcher import _check_out, _contiguous_strides, _outs_fit
from gpupart.tiles.handles import HANDLE_RECORD, handle_records, record_problem, records_alike
from gpupart.tiles.plan import plan_items, request_bounds
from gpupart.tiles.pool import POOLED_MIN, HostBufferPool, ReceivePool
from gpupart.tiles.receive import pack_views
from gpupart.tiles.serve import _HostRange, _spans_one_range
from gpupart.tiles.store import Tile, TileStore, byte_view, copy_into
from gpupart.tiles.transfer import Transfer

# -- planning ---------------------------------------------------------------------------------


def _check_plan(nbytes, threshold, limit, items, lengths):
    packs, offsets = items["pack"], items["offset"].astype(np.int64)
    packable = nbytes <= threshold
    largest = int(nbytes[packable].max(initial=0))
    assert (lengths <= max(limit, largest)).all()  # no pack over the limit (or one tile)
    if np.count_nonzero(packable & (nbytes > 0)) >= 2:
        assert ((packs >= 0) == packable).all()
    else:  # a lone tile with bytes travels alone; empty tiles are packed
        assert ((packs >= 0) == (nbytes == 0)).all()
    assert (items["nbytes"] == nbytes).all()
    last = (-1, 0)
    extent = np.zeros(len(lengths), dtype=np.int64)
    for i in np.flatnonzero(packs >= 0).tolist():
        p, o = int(packs[i]), int(offsets[i])
        assert o % wire.PACK_ALIGN == 0
        assert (p, o) >= last, "items in pack order, then offset order, without overlap"
        last = (p, o + int(nbytes[i]))
        extent[p] = o + int(nbytes[i])
    assert extent.tolist() == lengths.tolist()  # each pack as long as its last item's end
    assert set(packs[packs >= 0].tolist()) == set(range(len(lengths)))  # no empty packs


@pytest.mark.parametrize("threshold", [0, 100, 1000, 2000])
@pytest.mark.parametrize("limit", [64, 4096, 1 << 20, 8 << 20])  # 8 MiB: all in one pack
def test_bulk_plan_keeps_every_guarantee(threshold, limit):
    rng = np.random.default_rng(limit + threshold)
    nbytes = rng.integers(0, 1500, size=3000)
    nbytes[rng.integers(0, 3000, size=100)] = 0  # some empty tiles
    ids = np.arange(1, 3001, dtype=np.uint64)
    items, lengths = plan_items(ids, nbytes, threshold, limit)
    _check_plan(nbytes, threshold, limit, items, lengths)
    # It round-trips through the wire format and passes the owner's checks.
    req = wire.parse_request(wire.encode_request(items, lengths, 1, 2))
    assert np.array_equal(req.items, items) and req.pack_lengths.tolist() == lengths.tolist()


def test_bulk_plan_edges():
    ids = np.arange(1, 4, dtype=np.uint64)
    items, lengths = plan_items(ids[:2], np.array([5, 6]), 4, 64)  # nothing small enough
    assert items["pack"].tolist() == [-1, -1] and lengths.tolist() == []
    items, lengths = plan_items(ids[:1], np.array([5]), 64, 64)  # one tile: alone
    assert items["pack"].tolist() == [-1] and lengths.tolist() == []
    items, lengths = plan_items(ids, np.array([0, 0, 0]), 64, 64)  # only empty tiles
    assert items["pack"].tolist() == [0, 0, 0] and lengths.tolist() == [0]
    # Packs are cut every (limit - largest) bytes: below the alignment, one item per pack.
    items, lengths = plan_items(ids, np.full(3, 40), 40, 100)
    assert items["pack"].tolist() == [0, 1, 2] and items["offset"].tolist() == [0, 0, 0]
    assert lengths.tolist() == [40, 40, 40]
    items, lengths = plan_items(ids, np.full(3, 40), 40, 200)  # room for all: one pack
    assert items["pack"].tolist() == [0, 0, 0] and items["offset"].tolist() == [0, 64, 128]
    assert lengths.tolist() == [168]
    # A limit below the largest tile still makes progress: one tile per pack.
    items, lengths = plan_items(ids, np.full(3, 100), 100, 50)
    assert items["pack"].tolist() == [0, 1, 2] and lengths.tolist() == [100, 100, 100]


def test_bulk_calls_are_cut_into_requests_by_bytes_and_count():
    # Packed bytes: about one pack per request (room = limit - threshold); cut after crossing.
    assert request_bounds(np.full(10, 100), 150, 400) == [0, 3, 6, 9, 10]
    assert request_bounds(np.array([5, 500, 5, 5]), 100, 110) == [0, 3, 4]
    # Count: at most MAX_ITEMS tiles per request.
    assert request_bounds(np.ones(10_000, np.int64), 64, 1 << 20) == [0, 4096, 8192, 10_000]
    assert request_bounds(np.ones(wire.MAX_ITEMS, np.int64), 64, 1 << 20) == [0, 4096]
    # Tiles that travel alone count no bytes; a call that fits is one request.
    assert request_bounds(np.full(10, 10**6), 100, 1000) == [0, 10]
    assert request_bounds(np.full(10, 10), 100, 1000) == [0, 10]
    assert request_bounds(np.array([], np.int64), 100, 1000) == [0, 0]
    # A threshold at the limit leaves no room: still one tile at least per request.
    assert request_bounds(np.full(3, 8), 100, 100) == [0, 1, 2, 3]
    sizes = np.random.default_rng(1).integers(0, 5000, 20_000)
    threshold, limit = 4096, 24_576
    bounds = request_bounds(sizes, threshold, limit)
    assert bounds[0] == 0 and bounds[-1] == len(sizes)
    packed = np.where(sizes <= threshold, sizes, 0)
    for lo, hi in itertools.pairwise(bounds):
        assert 0 < hi - lo <= wire.MAX_ITEMS
        assert packed[lo:hi].sum() <= limit  # the room, plus the one tile that crosses it
        if hi < len(sizes) and hi - lo < wire.MAX_ITEMS:
            assert packed[lo:hi].sum() >= limit - threshold  # not cut early


# -- request checks ----------------------------------------------------------------------------


def _layout_request(packs, offsets, nbytes, lengths):
    items = np.zeros(len(packs), dtype=wire.ITEM)
    items["tile_id"] = np.arange(1, len(packs) + 1)
    items["nbytes"] = nbytes
    items["pack"] = packs
    items["offset"] = offsets
    return wire.encode_request(items, np.asarray(lengths, np.int64), 1, 2)


@pytest.mark.parametrize("n", [3, 40, wire.MAX_ITEMS])
@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("good", None),
        ("overlap", "without overlapping"),
        ("backwards", "without overlapping"),
        ("pack order", "pack order"),
        ("past end", "its items end at"),
        ("short pack", "its items end at"),
        ("pack range", "names pack 5"),
        ("misaligned", "multiples of 64"),
    ],
)
def test_layouts_the_owner_cannot_serve_are_rejected(n, case, needle):
    nbytes = [8] * n
    packs = [0] * (n - 1) + [1]
    offsets = [64 * i for i in range(n - 1)] + [0]
    lengths = [64 * (n - 2) + 8, 8]
    if case == "overlap":
        nbytes[0] = 100  # reaches past the next item's start
    elif case == "backwards":
        offsets[0], offsets[1] = offsets[1], offsets[0]
    elif case == "pack order":
        packs[0], packs[-1] = 1, 0
    elif case == "past end":
        offsets[n - 2] += 64
    elif case == "short pack":
        lengths[0] -= 1
    elif case == "pack range":
        packs[-1] = 5
    elif case == "misaligned":
        offsets[1] += 8
    raw = _layout_request(packs, offsets, nbytes, lengths)
    if needle is None:
        assert wire.parse_request(raw).items["pack"].tolist() == packs
        return
    with pytest.raises(gpupart.ProtocolViolationError, match=needle):
        wire.parse_request(raw)


def test_huge_sizes_in_a_bulk_request_are_rejected():
    n = 40
    for nbytes, offsets in (([8] * (n - 1) + [2**63 + 5], [0] * n), ([8] * n, [0] * 39 + [2**62])):
        raw = _layout_request([-1] * n, offsets, nbytes, [])
        with pytest.raises(gpupart.ProtocolViolationError, match=r"below 2\*\*62"):
            wire.parse_request(raw)


# -- the pack kernel ---------------------------------------------------------------------------


def test_gather_host_copies_tiles_and_zeroes_the_rest():
    rng = np.random.default_rng(3)
    tiles = [rng.integers(1, 255, size=int(n), dtype=np.uint8) for n in rng.integers(1, 300, 50)]
    sizes = np.array([t.nbytes for t in tiles])
    offsets = 100 + np.cumsum(-(-sizes // 64) * 64) - (-(-sizes // 64) * 64)
    addresses = np.array([t.ctypes.data for t in tiles], dtype=np.uint64)
    addresses[7] = 0  # a failed item: zeros in its room
    pack = np.full(int(offsets[-1] + sizes[-1] + 30), 0xAB, dtype=np.uint8)
    gather_host(pack, 100, addresses, sizes, offsets)
    assert (pack[:100] == 0xAB).all()  # before start: untouched
    expected = np.zeros_like(pack[100:])
    for i, (t, o) in enumerate(zip(tiles, offsets.tolist(), strict=True)):
        if i != 7:
            expected[o - 100 : o - 100 + t.nbytes] = t
    np.testing.assert_array_equal(pack[100:], expected)


def test_gather_host_refuses_ranges_outside_the_pack():
    tile = np.ones(10, dtype=np.uint8)
    pack = np.zeros(64, dtype=np.uint8)
    address = np.array([tile.ctypes.data], dtype=np.uint64)
    with pytest.raises(ValueError, match="offsets"):
        gather_host(pack, 0, address, np.array([10]), np.array([60]))
    with pytest.raises(ValueError, match="offsets"):
        gather_host(pack, 8, address, np.array([10]), np.array([4]))
    with pytest.raises(ValueError, match="pack"):
        gather_host(pack.view(np.int64), 0, address, np.array([1]), np.array([0]))
    with pytest.raises(ValueError, match="sizes, offsets"):
        gather_host(pack, 0, address, np.array([1, 2]), np.array([0]))


# -- the owner's pack buffers ------------------------------------------------------------------


def test_spans_one_range_only_for_back_to_back_tiles():
    block = np.zeros(4 * 128, dtype=np.uint8)
    base = block.ctypes.data
    addresses = np.array([base, base + 128, base + 256], dtype=np.uint64)
    offsets = np.array([0, 128, 256], dtype=np.uint64)
    sizes = np.full(3, 128, dtype=np.uint64)
    assert _spans_one_range(addresses, offsets, sizes, 384)
    assert not _spans_one_range(addresses, offsets, sizes, 400)  # padding at the end
    assert not _spans_one_range(addresses[::-1].copy(), offsets, sizes, 384)
    assert not _spans_one_range(addresses, offsets, np.array([100, 128, 128], np.uint64), 384)
    assert not _spans_one_range(addresses + np.uint64(1), offsets + np.uint64(1), sizes, 384)
    assert not _spans_one_range(addresses[:0], offsets[:0], sizes[:0], 0)
    gap = np.array([base, base + 192, base + 320], dtype=np.uint64)  # tiles 64 bytes apart
    assert not _spans_one_range(gap, np.array([0, 192, 320], np.uint64), sizes, 448)
    failed = addresses.copy()
    failed[1] = 0
    assert not _spans_one_range(failed, offsets, sizes, 384)
    view = np.asarray(_HostRange(base, 384))
    assert view.ctypes.data == base and view.shape == (384,) and view.dtype == np.uint8
    assert not view.flags.writeable


# -- the consumer's pack buffers -------------------------------------------------------------


def test_forgotten_pack_buffers_are_never_lent_again():
    pool = HostBufferPool()
    a = pool.acquire(3 << 20)
    pool.release(a)
    b = pool.acquire(4 << 20)  # same 4 MiB class
    assert np.shares_memory(a, b)
    pool.forget(b)  # e.g. its send failed: UCX may still touch it
    pool.release(b)
    assert not np.shares_memory(pool.acquire(4 << 20), b)


def test_received_pack_memory_comes_back_only_when_no_view_is_left():
    pool = ReceivePool(capacity=32 << 20)
    pack = pool.empty(3 << 20)
    assert pack.shape == (3 << 20,) and pack.dtype == np.uint8 and pack.flags.writeable
    pack[:] = 7
    tile = pack[1000:5096].view(np.int32).reshape(32, 32)  # what a caller holds
    tail = np.asarray(pack[-10:])
    del pack
    gc.collect()
    assert pool.kept == 0  # views alive: the block is not free
    other = pool.empty(3 << 20)
    assert not np.shares_memory(other, tile) and not np.shares_memory(other, tail)
    other[:] = 1
    assert (tile.view(np.uint8) == 7).all() and (tail == 7).all()  # untouched
    del tile
    assert pool.kept == 0  # ``tail`` still reaches the block
    del tail
    assert pool.kept == 4 << 20  # a 4 MiB size class, free
    again = pool.empty(4 << 20)
    assert pool.kept == 0 and (again[1000:1100] == 7).all()  # the same memory, reused
    del other, again


def test_receive_pool_keeps_at_most_its_capacity_and_nothing_after_close():
    pool = ReceivePool(capacity=8 << 20)
    packs = [pool.empty(4 << 20) for _ in range(3)]
    del packs
    assert pool.kept == 8 << 20  # two of the three blocks kept
    held = pool.empty(1 << 20)
    pool.close()
    assert pool.kept == 0
    del held
    assert pool.kept == 0  # coming back after close: dropped
    assert ReceivePool(capacity=0).empty(100).shape == (100,)


def test_a_block_can_come_back_while_its_pool_is_locked_by_the_same_thread():
    pool = ReceivePool()
    pack = pool.empty(POOLED_MIN)
    with pool._blocks.lock:  # as when a collection under the lock drops a pack's last view
        del pack  # the finalizer returns the block on this thread, here and now
    assert pool.kept == POOLED_MIN


def test_receive_pool_takes_blocks_back_from_many_threads():
    pool = ReceivePool(capacity=1 << 30)

    def churn(_):
        arrays = [pool.empty(POOLED_MIN * (1 + i % 3)) for i in range(50)]
        for a in arrays:
            a[:8] = 1
        return len(arrays)

    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        assert sum(ex.map(churn, range(8))) == 400
    gc.collect()
    # blocks are power-of-two classes: 1, 2 and 4 MiB for the three sizes asked for
    assert pool.kept % POOLED_MIN == 0 and 0 < pool.kept <= 400 * 4 * POOLED_MIN


# -- handles -----------------------------------------------------------------------------------


def _handle(tile_id: int, dtype: str = "<f8", shape=(2, 3), order: str = "C", job: str = ""):
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return gpupart.Handle(3, tile_id, dtype, shape, nbytes, gpupart.Location.parse(3), order, job)


def test_pack_views_with_a_known_layout():
    handles = [_handle(i) for i in range(5)]
    pack = np.arange(5 * 64, dtype=np.uint8)
    offsets = np.arange(5, dtype=np.uint64) * 64
    for idx in ([1, 2, 4], [0, 1, 2, 3, 4]):  # uneven steps; one strided view, split
        views = pack_views(pack, np.array(idx), handles, offsets)
        for view, i in zip(views, idx, strict=True):
            assert view.shape == (2, 3) and np.shares_memory(view, pack)
            np.testing.assert_array_equal(view.view(np.uint8).ravel(), pack[64 * i : 64 * i + 48])
        assert all(view.dtype == np.float64 for view in views)


def test_handle_records_hold_the_fields_and_the_kind():
    handles = [
        _handle(7),
        _handle(8),
        _handle(9, "<i8"),  # same size, another dtype
        _handle(10, shape=(3, 2)),  # same size, another shape
        _handle(11, order="F"),
        _handle(2**64 - 1, job="job-a"),
    ]
    records = handle_records(handles)
    assert records.dtype == HANDLE_RECORD and len(records) == len(handles)
    assert records["owner"].tolist() == [3] * 6
    assert records["tile_id"].tolist() == [7, 8, 9, 10, 11, 2**64 - 1]
    assert records["nbytes"].tolist() == [48] * 6
    assert records["job"].tolist() == [hash("")] * 5 + [hash("job-a")]
    kinds = records["kind"].tolist()
    assert kinds[0] == kinds[1] == kinds[5] and len(set(kinds[1:5])) == 4
    assert records_alike(records[[0, 1, 5]]) and not records_alike(records[[0, 2]])
    assert not records_alike(handle_records([_handle(1, shape=(6,)), _handle(2, shape=(7,))]))


def test_handle_records_are_made_again_in_each_copy_and_stay_out_of_eq_and_repr():
    h = _handle(5, job="j")
    for twin in (pickle.loads(pickle.dumps(h)), copy.deepcopy(h), copy.copy(h)):
        assert twin == h and hash(twin) == hash(h) and twin._record == h._record
    moved = dataclasses.replace(h, tile_id=6)
    assert handle_records([moved])["tile_id"].tolist() == [6]
    assert "_record" not in repr(h)
    # A pickle never carries the record: the receiving process hashes with its own seed.
    assert h._record not in pickle.dumps(h)


def test_odd_handles_have_no_record_and_say_why():
    good = _handle(1)
    plain = ": expected a plain dtype string and a shape of non-negative ints"
    cases = [
        (dataclasses.replace(good, tile_id=-1), ".tile_id: expected an integer in 0.."),
        (dataclasses.replace(good, tile_id=2**64), ".tile_id: expected an integer in 0.."),
        (dataclasses.replace(good, nbytes=1.5), ".nbytes: expected an integer, found float"),
        (dataclasses.replace(good, owner=2**63), ".owner: expected an integer in"),
        (dataclasses.replace(good, shape=[2, 3]), plain),
        (dataclasses.replace(good, shape=(2, -3), nbytes=-48), plain),
        (dataclasses.replace(good, shape=(2, 3.0)), plain),
        (dataclasses.replace(good, dtype="O"), plain),
        (dataclasses.replace(good, dtype="not a dtype"), plain),
        (dataclasses.replace(good, dtype=np.float64), plain),  # a dtype, not its string
        # Fields that disagree: the size is what travels, so it must match the shape.
        (dataclasses.replace(good, nbytes=40), ".nbytes: expected 48 (shape (2, 3) of <f8)"),
        (dataclasses.replace(good, shape=(3, 3)), ".nbytes: expected 72"),
        (dataclasses.replace(good, dtype="<f4"), ".nbytes: expected 24"),
        (dataclasses.replace(good, order="A"), ".order: expected 'C' or 'F', found 'A'"),
        (dataclasses.replace(good, job=["x"]), "expected hashable fields"),
    ]
    for odd, needle in cases:
        assert odd._record is None, needle
        assert needle in record_problem(odd), (record_problem(odd), needle)
        assert handle_records([good, odd]) is None
    assert record_problem(good) is None
    assert record_problem(_handle(2, shape=(0, 3))) is None  # empty and 0-d are fine
    assert record_problem(_handle(3, shape=())) is None
    assert handle_records([good, "not a handle"]) is None
    assert handle_records([good, None]) is None
    assert len(handle_records([])) == 0


# -- out buffers -------------------------------------------------------------------------------


def _handles(specs):
    out = []
    for i, (shape, dtype, order) in enumerate(specs):
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        loc = gpupart.Location.parse(0)
        out.append(gpupart.Handle(1, i, np.dtype(dtype).str, shape, nbytes, loc, order))
    return out


class _Subclass(np.ndarray):
    pass


def test_out_buffers_are_checked_a_list_at_a_time_only_when_all_fit():
    c_tiles = _handles([((4, 3), "float64", "C")] * 70)
    f_tiles = _handles([((4, 3), "float64", "F")] * 70)
    fits = [np.empty((4, 3)) for _ in range(70)]
    assert _outs_fit(c_tiles, fits, handle_records(c_tiles))
    fortran = [np.asfortranarray(b) for b in fits]
    assert _outs_fit(f_tiles, fortran, handle_records(f_tiles))
    assert not _outs_fit(c_tiles, fortran, handle_records(c_tiles))  # F buffers for C tiles
    readonly = np.empty((4, 3))
    readonly.setflags(write=False)
    odd = [
        None,  # partial out=: checked one by one
        readonly,
        np.empty((3, 4)),
        np.empty((4, 3), np.float32),
        np.empty((4, 6))[:, ::2],  # not contiguous
        np.empty(12).reshape(4, 3).view(np.int64),  # another dtype, same bytes
        np.empty((4, 3)).view(_Subclass),  # not exactly an ndarray: checked one by one
    ]
    for bad in odd:
        assert not _outs_fit(c_tiles, [*fits[:69], bad], handle_records(c_tiles)), bad
    mixed = _handles([((4, 3), "float64", "C")] * 69 + [((12,), "float64", "C")])
    assert not _outs_fit(mixed, [*fits[:69], np.empty(12)], handle_records(mixed))


def test_contiguous_strides():
    assert _contiguous_strides((4, 3), 8, "C") == (24, 8)
    assert _contiguous_strides((4, 3), 8, "F") == (8, 32)
    assert _contiguous_strides((2, 3, 5), 2, "C") == (30, 10, 2)
    assert _contiguous_strides((2, 3, 5), 2, "F") == (2, 4, 12)
    assert _contiguous_strides((), 4, "C") == ()
    for shape, order in (((4, 3), "C"), ((4, 3), "F"), ((7,), "C"), ((2, 3, 5), "F")):
        assert _contiguous_strides(shape, 8, order) == np.empty(shape, order=order).strides


def test_check_out_names_the_buffer_and_what_is_wrong():
    h, f = _handles([((4, 3), "float64", "C"), ((4, 3), "float64", "F")])
    one = _handles([((1, 5), "int16", "F")])[0]
    readonly = np.empty((4, 3))
    readonly.setflags(write=False)
    _check_out(0, h, np.empty((4, 3)))
    _check_out(0, f, np.empty((4, 3), order="F"))
    _check_out(0, one, np.empty((1, 5), np.int16))  # one row: C and F alike
    _check_out(0, _handles([((0, 3), "float64", "F")])[0], np.empty((0, 3)))  # empty
    cases = [
        (h, [1, 2], TypeError, "out[3]: expected a NumPy/CuPy array or None, found list"),
        (h, np.empty((3, 4)), ValueError, "out[3]: expected shape (4, 3) dtype float64"),
        (h, np.empty((4, 3), np.float32), ValueError, "found shape (4, 3) dtype float32"),
        (h, readonly, ValueError, "out[3]: expected a writable array"),
        (h, np.empty((4, 3), order="F"), ValueError, "expected a C-contiguous array, found F"),
        (f, np.empty((4, 3)), ValueError, "expected a F-contiguous array, found C"),
        (h, np.empty((4, 6))[:, ::2], ValueError, "found non-contiguous"),
    ]
    for handle, buf, error, needle in cases:
        with pytest.raises(error) as info:
            _check_out(3, handle, buf)
        assert needle in str(info.value), needle


# -- the tile store ----------------------------------------------------------------------------


class Pending:
    done = False


def test_attaching_an_event_makes_owners_check_readiness():
    store = TileStore(owner=0)
    array = np.arange(4)
    tile_id = store.add(Tile(array, byte_view(array), array.nbytes, address=array.ctypes.data))
    assert not store.has_events  # owners skip the readiness scan
    assert not store.has_device_tiles  # a host address: packs are gathered on the host
    assert store.get(tile_id).ready()
    event = Pending()
    store.attach_event(tile_id, event)
    assert store.has_events and not store.get(tile_id).ready()
    event.done = True
    assert store.get(tile_id).ready()
    with pytest.raises(gpupart.TileNotFoundError):
        store.attach_event(tile_id + 1, Pending())
    store.add(Tile(array, byte_view(array), array.nbytes))  # no host address: device memory
    assert store.has_device_tiles


def test_store_lookup_remove_and_clear():
    store = TileStore(owner=2)
    arrays = [np.full(3, i) for i in range(3)]
    ids = [store.add(Tile(a, byte_view(a), a.nbytes, address=a.ctypes.data)) for a in arrays]
    assert len(set(ids)) == 3 and len(store) == 3
    found = store.lookup(np.array([ids[2], 999, ids[0]], dtype=np.uint64))
    assert found[0].array is arrays[2] and found[1] is None and found[2].array is arrays[0]
    assert store.lookup([ids[1]])[0].array is arrays[1]
    assert store.remove(ids[1]).array is arrays[1]
    with pytest.raises(gpupart.TileNotFoundError) as info:
        store.remove(ids[1])
    assert (info.value.owner, info.value.tile_id) == (2, ids[1])
    with pytest.raises(gpupart.TileNotFoundError):
        store.get(ids[1])
    assert store.add(Tile(arrays[1], byte_view(arrays[1]), 24)) not in ids  # ids never reused
    store.clear()
    assert len(store) == 0


def test_byte_view_and_copy_into():
    c = np.arange(12, dtype=np.int16).reshape(3, 4)
    f = np.asfortranarray(c)
    for array in (c, f, np.array(1.5, np.float32), np.zeros((0, 3))):
        flat = byte_view(array)
        assert flat.dtype == np.uint8 and flat.ndim == 1 and flat.size == array.nbytes
        assert array.size == 0 or np.shares_memory(flat, array)
        assert flat.tobytes() == array.tobytes(order="A")
    with pytest.raises(ValueError, match="contiguous"):
        byte_view(c[:, ::2])
    out = np.zeros((3, 4), np.int16)
    assert copy_into(out, f) is out and np.array_equal(out, c)


# -- a bulk transfer ---------------------------------------------------------------------------


def test_a_transfer_of_ten_thousand_tiles_settles_in_runs():
    n = 10_000
    t = Transfer(n, None, 1.0)
    futures = t.futures()
    order = np.random.default_rng(2).permutation(n // 100)
    for k in order.tolist():  # packs of 100 tiles landing out of order
        t.deliver(range(100 * k, 100 * k + 100), list(range(100 * k, 100 * k + 100)))
    assert t.done() and t.result() == list(range(n))
    assert list(t.as_completed()) == [
        i for k in order.tolist() for i in range(100 * k, 100 * k + 100)
    ]
    assert not concurrent.futures.wait(futures, timeout=5).not_done
    assert [f.result() for f in futures[:3]] == [0, 1, 2]
