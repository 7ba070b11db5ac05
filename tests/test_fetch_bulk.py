"""The vectorised pieces of a bulk fetch: planning, request checks, the pack kernel, sinks."""

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
from gpupart.tiles import fetch
from gpupart.tiles.handles import HANDLE_RECORD, handle_records, record_problem, records_alike
from gpupart.tiles.pool import HostBufferPool, ReceivePool
from gpupart.tiles.results import FutureSink, ResultList, futures_sharing_condition

# -- planning ---------------------------------------------------------------------------------


def _check_plan(nbytes, eligible, limit, status, packs, offsets, lengths):
    packs, offsets = np.asarray(packs), np.asarray(offsets)
    largest = max([n for n, ok in zip(nbytes, eligible, strict=True) if ok], default=0)
    assert all(length <= max(limit, largest, status) for length in lengths)
    if status:
        assert lengths and lengths[0] >= status
    assert ((packs >= 0) == np.asarray(eligible, dtype=bool)).all()
    last = (-1, 0)
    for i in np.flatnonzero(packs >= 0).tolist():
        p, o = int(packs[i]), int(offsets[i])
        assert o % fetch.PACK_ALIGN == 0
        assert o + nbytes[i] <= lengths[p]
        assert p > 0 or o >= status  # the status leads pack 0
        assert (p, o) >= last, "items in pack order, then offset order, without overlap"
        last = (p, o + nbytes[i])
    used = {int(p) for p in packs[packs >= 0]}
    assert used | ({0} if status else set()) == set(range(len(lengths)))  # no empty packs


@pytest.mark.parametrize("status", [0, 1, 700])
@pytest.mark.parametrize("limit", [64, 4096, 1 << 20, 8 << 20])  # 8 MiB: all in one pack
def test_bulk_plan_keeps_every_guarantee(status, limit):
    rng = np.random.default_rng(limit + status)
    nbytes = rng.integers(0, 1500, size=3000)
    eligible = (nbytes > 0) & (nbytes <= 1000)
    packs, offsets, lengths = fetch.plan_packs_bulk(nbytes, eligible, limit, status)
    _check_plan(nbytes.tolist(), eligible.tolist(), limit, status, packs, offsets, lengths)
    # It round-trips through the wire format and passes the owner's checks.
    flags = fetch.STATUS_IN_PACK if status == len(nbytes) else 0
    raw = fetch.encode_request(
        np.arange(1, 3001, dtype=np.uint64), nbytes, packs, offsets, lengths, 1, 2, flags
    )
    req = fetch.parse_request(raw)
    assert (req.packs == packs).all() and (req.offsets == offsets).all()


def test_bulk_plan_edges():
    packs, offsets, lengths = fetch.plan_packs_bulk(np.array([5, 6]), np.array([False] * 2), 64)
    assert packs.tolist() == [-1, -1] and lengths == []
    packs, _, lengths = fetch.plan_packs_bulk(np.array([5]), np.array([False]), 64, 3)
    assert packs.tolist() == [-1] and lengths == [3]  # the status alone in pack 0
    # A status longer than a pack's room gets pack 0 to itself.
    packs, offsets, lengths = fetch.plan_packs_bulk(np.full(3, 40), np.ones(3, bool), 200, 200)
    assert packs.tolist() == [1, 2, 2] and offsets.tolist() == [0, 0, 64]
    assert lengths == [200, 40, 104]
    # Packs are cut every (limit - largest) bytes: below the alignment, one item per pack.
    packs, offsets, lengths = fetch.plan_packs_bulk(np.full(3, 40), np.ones(3, bool), 100)
    assert packs.tolist() == [0, 1, 2] and offsets.tolist() == [0, 0, 0]
    assert lengths == [40, 40, 40]


def test_status_sized_request_round_trips_with_status_in_pack():
    n = 500
    nbytes = np.full(n, 4096)
    packs, offsets, lengths = fetch.plan_packs_bulk(nbytes, nbytes > 0, 1 << 20, n)
    raw = fetch.encode_request(
        np.arange(n, dtype=np.uint64), nbytes, packs, offsets, lengths, 1, 2, fetch.STATUS_IN_PACK
    )
    req = fetch.parse_request(raw)
    assert req.pack_lengths == lengths and int(req.offsets[0]) >= n


def test_bulk_calls_are_cut_into_requests_by_bytes_and_count():
    from gpupart.core import _chunk_bounds

    assert _chunk_bounds(np.full(10, 100), 250, 1000) == [0, 3, 6, 9, 10]
    assert _chunk_bounds(np.full(10, 1), 1 << 20, 4) == [0, 4, 8, 10]
    assert _chunk_bounds(np.array([5, 500, 5, 5]), 100, 10) == [0, 2, 4]  # cut after crossing
    sizes = np.random.default_rng(1).integers(0, 5000, 3000)
    bounds = _chunk_bounds(sizes, 20_000, 100)
    assert bounds[0] == 0 and bounds[-1] == 3000
    for lo, hi in itertools.pairwise(bounds):
        assert 0 < hi - lo <= 100
        assert sizes[lo:hi].sum() <= 20_000 + 5000  # one tile may cross the cut


# -- request checks (both the struct and the NumPy path) ---------------------------------------


def _layout_request(n, packs, offsets, nbytes, lengths):
    return fetch.encode_request(list(range(1, n + 1)), nbytes, packs, offsets, lengths, 1, 2)


@pytest.mark.parametrize("n", [3, 40])  # struct path, NumPy path
@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("overlap", "without overlapping"),
        ("backwards", "without overlapping"),
        ("pack order", "pack order"),
        ("past end", "does not fit"),
        ("pack range", "names pack 5"),
    ],
)
def test_layouts_the_owner_cannot_serve_are_rejected(n, case, needle):
    nbytes = [8] * n
    packs = [0] * n
    offsets = [64 * i for i in range(n)]
    lengths = [64 * n, 64]
    if case == "overlap":
        offsets[2] = offsets[1] + 4
    elif case == "backwards":
        offsets[1], offsets[2] = offsets[2], offsets[1]
    elif case == "pack order":
        packs[1], offsets[1] = 1, 0
    elif case == "past end":
        offsets[-1] = 64 * n - 4
    else:
        packs[-1] = 5
    with pytest.raises(gpupart.ProtocolViolationError, match=needle):
        fetch.parse_request(_layout_request(n, packs, offsets, nbytes, lengths))


def test_huge_sizes_in_a_bulk_request_are_rejected():
    n = 40
    raw = _layout_request(n, [-1] * n, [0] * n, [8] * (n - 1) + [2**63 + 5], [])
    with pytest.raises(gpupart.ProtocolViolationError, match="below 2\\*\\*62"):
        fetch.parse_request(raw)


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


# -- sinks -------------------------------------------------------------------------------------


def test_future_sink_completes_many_futures_like_set_result():
    futures = futures_sharing_condition(6)
    calls = []
    futures[1].add_done_callback(lambda f: calls.append(f.result()))
    assert futures[2].cancel()
    futures[3].set_exception(gpupart.TileNotFoundError(0, 3))
    sink = FutureSink(futures)
    waiting = concurrent.futures.as_completed(futures[:2] + futures[4:], timeout=5)
    sink.set_results([0, 1, 2, 3, 4, 5], ["a", "b", "c", "d", "e", "f"])
    assert sorted(f.result() for f in waiting) == ["a", "b", "e", "f"]
    assert calls == ["b"]  # callbacks run, once
    assert futures[2].cancelled() and isinstance(futures[3].exception(), LookupError)
    sink.fail_pending(range(6), RuntimeError("late"))  # nothing pending is left: no effect
    assert [f.result() for f in (futures[0], futures[5])] == ["a", "f"]
    # The cancelled one was reported to wait() too (an executor's job), which otherwise hangs.
    assert not concurrent.futures.wait(futures, timeout=5).not_done


@pytest.mark.parametrize("shared", [True, False])
def test_claimed_futures_cannot_be_cancelled_and_skip_failed_ones(shared):
    futures = (
        futures_sharing_condition(5) if shared else [concurrent.futures.Future() for _ in range(5)]
    )
    sink = FutureSink(futures)
    assert futures[1].cancel()
    futures[2].set_exception(gpupart.TileNotFoundError(0, 2))
    assert sink.claim([0, 1, 2, 3]) == [0, 3]  # positions of the live ones
    assert futures[0].running() and not futures[0].cancel()  # claimed: too late to cancel
    assert futures[4].cancel()  # not claimed
    sink.set_results([0, 3], ["a", "d"])
    assert [futures[0].result(), futures[3].result()] == ["a", "d"]
    sink.fail_pending(range(5), RuntimeError("late"))
    assert futures[1].cancelled() and isinstance(futures[2].exception(), LookupError)
    assert not concurrent.futures.wait(futures, timeout=5).not_done


def test_result_list_takes_runs_and_scattered_indices_and_raises_the_first_error():
    results = ResultList(6)
    results.set_results([1, 2, 3], ["b", "c", "d"])
    results.set_results([5, 0], ["f", "a"])
    assert results.result() == ["a", "b", "c", "d", None, "f"]
    results.set_exception(4, KeyError("4"))
    results.fail_pending(range(6), KeyError("late"))
    results.set_exception(2, KeyError("2"))
    with pytest.raises(KeyError, match="2"):
        results.result()
    assert results.done(4) and results.done(0)
    # A run is a range; a list whose ends look like a run is still placed item by item.
    results = ResultList(5)
    results.set_results(range(1, 3), ["b", "c"])
    results.set_results([0, 4, 3], ["a", "e", "d"])
    assert results.result() == ["a", "b", "c", "d", "e"]
    results = ResultList(4)
    results.set_results([0, 2, 1, 3], ["a", "c", "b", "d"])
    assert results.result() == ["a", "b", "c", "d"]


# -- pack buffers ------------------------------------------------------------------------------


def test_spans_one_range_only_for_back_to_back_tiles():
    block = np.zeros(4 * 128, dtype=np.uint8)
    base = block.ctypes.data
    addresses = np.array([base, base + 128, base + 256], dtype=np.uint64)
    offsets = np.array([0, 128, 256])
    sizes = np.full(3, 128)
    assert fetch._spans_one_range(addresses, offsets, sizes, 384)
    assert not fetch._spans_one_range(addresses, offsets, sizes, 400)  # padding at the end
    assert not fetch._spans_one_range(addresses[::-1].copy(), offsets, sizes, 384)
    assert not fetch._spans_one_range(addresses, offsets, np.array([100, 128, 128]), 384)
    failed = addresses.copy()
    failed[1] = 0
    assert not fetch._spans_one_range(failed, offsets, sizes, 384)
    view = np.asarray(fetch._HostRange(addresses, 384))
    assert view.ctypes.data == base and view.shape == (384,) and not view.flags.writeable


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
    pack = pool.empty(100)
    with pool._blocks.lock:  # as when a collection under the lock drops a pack's last view
        del pack  # the finalizer returns the block on this thread, here and now
    assert pool.kept == 1 << 16


def test_receive_pool_takes_blocks_back_from_many_threads():
    pool = ReceivePool(capacity=1 << 30)

    def churn(_):
        arrays = [pool.empty((1 << 16) * (1 + i % 3)) for i in range(50)]
        for a in arrays:
            a[:8] = 1
        return len(arrays)

    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        assert sum(ex.map(churn, range(8))) == 400
    gc.collect()
    assert pool.kept % (1 << 16) == 0 and 0 < pool.kept <= 400 * (1 << 18)


def test_pack_views_with_a_known_layout():
    handles = [gpupart.Handle(0, i, "<f8", (2, 3), 48, gpupart.Location.parse(0)) for i in range(5)]
    pack = np.arange(5 * 64, dtype=np.uint8)
    offsets = np.arange(5) * 64
    views = fetch._pack_views(pack, [1, 2, 4], handles, offsets, alike=True)
    for view, i in zip(views, [1, 2, 4], strict=True):
        assert view.shape == (2, 3) and np.shares_memory(view, pack)
        np.testing.assert_array_equal(view.view(np.uint8).ravel(), pack[64 * i : 64 * i + 48])
    assert all(view.dtype == np.float64 for view in views)


def _handle(tile_id: int, dtype: str = "<f8", shape=(2, 3), order: str = "C", job: str = ""):
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return gpupart.Handle(3, tile_id, dtype, shape, nbytes, gpupart.Location.parse(3), order, job)


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
    cases = [
        (dataclasses.replace(good, tile_id=-1), ".tile_id: expected an integer in 0.."),
        (dataclasses.replace(good, tile_id=2**64), ".tile_id: expected an integer in 0.."),
        (dataclasses.replace(good, nbytes=1.5), ".nbytes: expected an integer, found float"),
        (dataclasses.replace(good, owner=2**63), ".owner: expected an integer in"),
        (dataclasses.replace(good, shape=[2, 3]), "expected a hashable dtype, shape and order"),
    ]
    for odd, needle in cases:
        assert odd._record is None and needle in record_problem(odd)
        assert handle_records([good, odd]) is None
    assert record_problem(good) is None
    assert handle_records([good, "not a handle"]) is None
    assert handle_records([good, None]) is None
    assert len(handle_records([])) == 0


def test_out_buffers_are_checked_a_list_at_a_time_only_when_all_fit():
    from gpupart.core import _outs_fit

    def handles(specs):
        out = []
        for i, (shape, dtype, order) in enumerate(specs):
            nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
            loc = gpupart.Location.parse(0)
            out.append(gpupart.Handle(1, i, np.dtype(dtype).str, shape, nbytes, loc, order))
        return out

    c_tiles = handles([((4, 3), "float64", "C")] * 70)
    f_tiles = handles([((4, 3), "float64", "F")] * 70)
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
    ]
    for bad in odd:
        assert not _outs_fit(c_tiles, [*fits[:69], bad], handle_records(c_tiles)), bad
    mixed = handles([((4, 3), "float64", "C")] * 69 + [((12,), "float64", "C")])
    assert not _outs_fit(mixed, [*fits[:69], np.empty(12)], handle_records(mixed))


def test_attaching_an_event_makes_owners_check_readiness():
    from gpupart.tiles.handles import Tile, TileStore

    store = TileStore(owner=0)
    array = np.arange(4)
    tile_id = store.add(Tile(array, array.view(np.uint8), array.nbytes))
    assert not store.has_events  # owners skip the readiness scan

    class Pending:
        done = False

    store.attach_event(tile_id, Pending())
    assert store.has_events and not store.get(tile_id).ready()
    with pytest.raises(gpupart.TileNotFoundError):
        store.attach_event(tile_id + 1, Pending())


def test_pack_runs_find_each_packs_items():
    pack_of = np.array([-1, 0, 0, -1, 1, 3, 3, -1])  # -1: sent alone; pack 2 has no item
    packed, bounds = fetch.pack_runs(pack_of, 4)
    assert packed.tolist() == [1, 2, 4, 5, 6]
    assert [packed[lo:hi].tolist() for lo, hi in itertools.pairwise(bounds)] == [
        [1, 2],
        [4],
        [],
        [5, 6],
    ]
    packed, bounds = fetch.pack_runs(np.full(3, -1), 0)
    assert packed.size == 0 and bounds == [0]
