"""Fetch and collectives over the in-process transport, at 1, 2 and 3 ranks.

Every rank is a thread of this process with the runtime's own objects (``inprocess_job``):
the owner's tile server, the consumer's fetcher and its receives, the progress engines and
the collectives all run as they do over UCX, so protocol behaviour (packing, error replies,
cancellation, withdrawal on a timeout) is checked here without processes. The same
behaviour between processes is checked in ``test_cluster_mp.py``.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from concurrent.futures import CancelledError

import numpy as np
import pytest
from inprocess_job import InProcessJob, ManualEvent, Rank

import gpupart
from gpupart.comm.tags import Kind, make_tag
from gpupart.options import RuntimeOptions
from gpupart.tiles import wire
from gpupart.tiles.plan import plan_items
from gpupart.tiles.store import byte_view

SIZES = [1, 2, 3]
WAIT = 30.0  # bound for a wait that should end in milliseconds

#: (shape, dtype, order): packed and alone (default 64 KiB threshold), empty, 0-d, F-order.
SPECS = [
    ((10,), "int64", "C"),  # small: packed
    ((300, 300), "float64", "C"),  # 720 KB: alone
    ((0,), "float64", "C"),  # empty
    ((3, 0), "int32", "C"),  # empty, 2-d
    ((), "float32", "C"),  # 0-d
    ((3, 4), "float64", "F"),  # F order, packed
    ((200, 100), "float32", "F"),  # F order, alone
    ((17,), "uint8", "C"),  # odd size
    ((5, 7), "complex64", "C"),
    ((40, 40), "int16", "C"),
    ((33,), "bool", "C"),
    ((2, 3, 4), "int8", "F"),  # F order, 3-d
    ((6,), ">i4", "C"),  # big-endian
]

OPTIONS = {
    "default": RuntimeOptions(),
    # Small packs: many packs per request and many requests per call.
    "small-packs": RuntimeOptions(pack_threshold=512, pack_limit=2048),
}


def tile(owner: int, index: int, spec=None) -> np.ndarray:
    """The array ``owner`` puts as its tile ``index`` (any rank can make it again)."""
    shape, dtype, order = SPECS[index] if spec is None else spec
    n = int(np.prod(shape))
    values = np.arange(n) * 7 + 1000 * owner + 31 * index
    if dtype == "bool":
        values = values % 3 == 0
    return np.array(values.astype(dtype).reshape(shape), order=order)


def put_specs(rank: Rank) -> list[gpupart.Handle]:
    """Put every SPECS tile on ``rank``; returns its handles."""
    return [rank.put(tile(rank.rank, i)) for i in range(len(SPECS))]


def check_tile(got, owner: int, index: int, spec=None) -> None:
    want = tile(owner, index, spec)
    assert isinstance(got, np.ndarray), type(got)
    assert got.shape == want.shape and got.dtype == want.dtype, (owner, index)
    assert np.array_equal(got, want), (owner, index)
    if want.ndim > 1 and want.size > 1 and want.flags.f_contiguous != want.flags.c_contiguous:
        assert got.flags.f_contiguous == want.flags.f_contiguous, (owner, index, "order")


def sentinel(h: gpupart.Handle) -> np.ndarray:
    """An ``out`` buffer for ``h`` filled with a recognisable pattern."""
    buf = np.empty(h.shape, dtype=np.dtype(h.dtype), order=h.order)
    byte_view(buf)[...] = 0xA5
    return buf


def untouched(buf: np.ndarray) -> bool:
    """Whether every byte of ``buf`` still holds the :func:`sentinel` pattern."""
    return bool((byte_view(buf) == 0xA5).all())


@pytest.fixture
def make_job():
    """``make_job(size, **kwargs)``: an InProcessJob, closed after the test (no thread left)."""
    before = set(threading.enumerate())
    jobs: list[InProcessJob] = []

    def make(size: int, **kwargs) -> InProcessJob:
        job = InProcessJob(size, **kwargs)
        jobs.append(job)
        return job

    yield make
    for job in jobs:
        job.close()
    left = [t.name for t in set(threading.enumerate()) - before]
    assert not left, f"threads left behind: {left}"


# -- get and fetch ----------------------------------------------------------------------------


@pytest.mark.parametrize("options", list(OPTIONS), ids=list(OPTIONS))
@pytest.mark.parametrize("size", SIZES)
def test_every_rank_gets_every_tile(make_job, size, options):
    def main(rank: Rank):
        mine = put_specs(rank)
        everyone = rank.collectives.allgather(mine)
        # Owners interleaved, in a scrambled order: each owner's tiles at scattered indices.
        wanted = [(o, i) for i in range(len(SPECS)) for o in range(size)]
        order = np.random.default_rng(rank.rank).permutation(len(wanted))
        wanted = [wanted[k] for k in order]
        wanted += wanted[:5]  # the same tiles twice in one call
        handles = [everyone[o][i] for o, i in wanted]
        got = rank.get(handles, timeout=WAIT)
        assert len(got) == len(handles)
        for value, (o, i) in zip(got, wanted, strict=True):
            check_tile(value, o, i)
            if o == rank.rank:  # a tile of this rank without out=: the tile itself
                assert value is rank.store.get(mine[i].tile_id).array
        # fetch: the same tiles through a Transfer, taken as they land.
        transfer = rank.fetch(handles)
        assert sorted(transfer.as_completed(timeout=WAIT)) == list(range(len(handles)))
        for k, (o, i) in enumerate(wanted):
            check_tile(transfer[k].result(timeout=0), o, i)
        assert transfer.done() and "done" in repr(transfer) and "pending" not in repr(transfer)
        rank.collectives.barrier()  # keep the tiles until every rank has its copies

    make_job(size, options=OPTIONS[options]).run(main)


@pytest.mark.parametrize("options", list(OPTIONS), ids=list(OPTIONS))
@pytest.mark.parametrize("size", SIZES)
def test_ten_thousand_tiny_tiles_from_one_owner(make_job, size, options):
    n = 10_000
    owner, consumer = 0, size - 1
    spec = ((4,), "int32", "C")

    def main(rank: Rank):
        handles = None
        if rank.rank == owner:
            handles = [rank.put(tile(owner, i, spec)) for i in range(n)]
        handles = rank.collectives.broadcast(handles, root=owner)
        if rank.rank == consumer:
            got = rank.get(handles, timeout=WAIT)
            for i in range(0, n, 997):
                check_tile(got[i], owner, i, spec)
            assert np.array_equal(np.stack(got), np.stack([tile(owner, i, spec) for i in range(n)]))
            outs = [np.zeros(4, np.int32) for _ in range(n)]
            got = rank.get(handles, out=outs, timeout=WAIT)
            assert all(g is o for g, o in zip(got, outs, strict=True))
            assert np.array_equal(
                np.stack(outs), np.stack([tile(owner, i, spec) for i in range(n)])
            )
        rank.collectives.barrier()

    make_job(size, options=OPTIONS[options]).run(main)


@pytest.mark.parametrize("options", list(OPTIONS), ids=list(OPTIONS))
@pytest.mark.parametrize("size", SIZES)
def test_tiles_land_in_the_out_buffers(make_job, size, options):
    def main(rank: Rank):
        everyone = rank.collectives.allgather(put_specs(rank))
        source = (rank.rank + 1) % size  # ring: the next rank's tiles (its own at size 1)
        handles = everyone[source] + everyone[rank.rank]
        outs = [sentinel(h) for h in handles]
        outs[3] = None  # partial out=: this one gets a new array
        outs[len(SPECS) + 1] = None
        got = rank.get(handles, out=outs, timeout=WAIT)
        for k, (value, out) in enumerate(zip(got, outs, strict=True)):
            owner, index = (source, k) if k < len(SPECS) else (rank.rank, k - len(SPECS))
            check_tile(value, owner, index)
            if out is not None:
                assert value is out
        # A tile of this rank with out= is copied, not shared.
        mine = rank.store.get(handles[len(SPECS)].tile_id).array
        assert got[len(SPECS)] is not mine and not np.shares_memory(got[len(SPECS)], mine)
        # With fetch too, every out is written by the time the transfer is done.
        outs = [sentinel(h) for h in handles]
        transfer = rank.fetch(handles, out=outs)
        assert all(v is o for v, o in zip(transfer.result(timeout=WAIT), outs, strict=True))
        rank.collectives.barrier()

    make_job(size, options=OPTIONS[options]).run(main)


# -- tiles that cannot be sent ----------------------------------------------------------------


@pytest.mark.parametrize("options", list(OPTIONS), ids=list(OPTIONS))
@pytest.mark.parametrize("size", SIZES)
def test_freed_and_unknown_tiles_fail_exactly_their_tiles(make_job, size, options):
    freed = (1, 7)  # one that travels alone, one packed

    def main(rank: Rank):
        mine = put_specs(rank)
        everyone = rank.collectives.allgather(mine)
        for i in freed:
            rank.free(mine[i])
        rank.collectives.barrier()  # every free done before anyone fetches
        source = (rank.rank + 1) % size
        handles = list(everyone[source])
        unknown = dataclasses.replace(handles[0], tile_id=10**9)
        big_unknown = dataclasses.replace(handles[1], tile_id=10**9 + 1)
        # A handle whose size is not its tile's (stale or forged): shape and size agree.
        stale = dataclasses.replace(handles[0], shape=(11,), nbytes=88)
        handles += [unknown, stale, big_unknown]
        bad = {1: gpupart.TileNotFoundError, 7: gpupart.TileNotFoundError}
        bad |= {len(SPECS): gpupart.TileNotFoundError, len(SPECS) + 1: gpupart.FetchError}
        bad[len(SPECS) + 2] = gpupart.TileNotFoundError
        outs = [sentinel(h) for h in handles]
        transfer = rank.fetch(handles, out=outs)
        transfer.wait(WAIT)
        for k, out in enumerate(outs):
            if k in bad:
                error = transfer.error(k)
                assert isinstance(error, bad[k]), (k, error)
                assert untouched(out), k  # a failed tile's out is never written
            else:
                assert transfer.error(k) is None, (k, transfer.error(k))
                assert transfer.value(k) is out
                check_tile(out, source, k)
        assert "not the size" in str(transfer.error(len(SPECS) + 1))
        assert transfer.error(1).tile_id == handles[1].tile_id
        assert set(transfer.exceptions()) == set(bad)
        # get raises the first error by index; a call with only bad tiles raises too.
        with pytest.raises(gpupart.TileNotFoundError) as info:
            rank.get(handles, timeout=WAIT)
        assert info.value.tile_id == handles[1].tile_id
        only_bad = [handles[k] for k in sorted(bad)]
        outs = [sentinel(h) for h in only_bad]
        with pytest.raises(gpupart.TileNotFoundError):
            rank.get(only_bad, out=outs, timeout=WAIT)
        assert all(untouched(out) for out in outs)
        # Good tiles are still served afterwards.
        good = [k for k in range(len(SPECS)) if k not in bad]
        for value, k in zip(rank.get([handles[k] for k in good]), good, strict=True):
            check_tile(value, source, k)
        # Nothing is left in flight: the receives of failed tiles were withdrawn.
        assert rank.engine is None or rank.engine.drain(WAIT)
        rank.collectives.barrier()
        return sorted(type(e).__name__ for e in transfer.exceptions().values())

    kinds = ["FetchError"] + ["TileNotFoundError"] * 4
    assert make_job(size, options=OPTIONS[options]).run(main) == [kinds] * size


@pytest.mark.parametrize(
    "spec", [((10,), "int64", "C"), ((9000,), "float64", "C")], ids=["packed", "alone"]
)
@pytest.mark.parametrize("n", [wire.FEW, wire.FEW + 1])
def test_the_same_checks_on_both_sides_of_wire_few(make_job, n, spec):
    """Checks are plain comparisons for up to ``wire.FEW`` items, array ones above: same results.

    Calls of ``n`` handles whose last one is wrong: handles (another job, an owner out of
    range) and ``out`` buffers (wrong shape) on the consumer; a stale and a freed tile on
    the owner.
    """
    owner, consumer = 0, 1

    def main(rank: Rank):
        sent = None
        if rank.rank == owner:
            handles = [rank.put(tile(owner, i, spec)) for i in range(n + 2)]
            rank.free(handles[n + 1])
            stale = dataclasses.replace(handles[n], shape=(1,), nbytes=8)
            sent = (handles[:n], stale, handles[n + 1])
        good, stale, freed = rank.collectives.broadcast(sent, root=owner)
        if rank.rank == consumer:
            last = n - 1
            foreign = [*good[:-1], dataclasses.replace(good[-1], job="another-job")]
            with pytest.raises(ValueError, match=rf"handles\[{last}\]: .*another-job"):
                rank.get(foreign)
            stranger = [*good[:-1], dataclasses.replace(good[-1], owner=rank.size)]
            with pytest.raises(ValueError, match=rf"handles\[{last}\]\.owner"):
                rank.fetch(stranger)
            outs = [sentinel(h) for h in good]
            with pytest.raises(ValueError, match=rf"out\[{last}\]: expected shape"):
                rank.get(good, out=[*outs[:-1], np.empty(3)])
            handles = [*good[: n - 2], stale, freed]
            transfer = rank.fetch(handles, out=[*outs[: n - 2], sentinel(stale), sentinel(freed)])
            transfer.wait(WAIT)
            assert "not the size" in str(transfer.error(n - 2))
            assert isinstance(transfer.error(n - 1), gpupart.TileNotFoundError)
            assert set(transfer.exceptions()) == {n - 2, n - 1}
            for k, out in enumerate(outs[: n - 2]):
                assert transfer.value(k) is out
                check_tile(out, owner, k, spec)
            for value, out in zip(rank.get(good, out=outs), outs, strict=True):
                assert value is out
        rank.collectives.barrier()

    make_job(2).run(main)


# -- cancellation -----------------------------------------------------------------------------


@pytest.mark.parametrize("with_out", [True, False], ids=["out", "no-out"])
@pytest.mark.parametrize("size", [2, 3])
def test_cancelled_pending_tiles_leave_their_out_untouched(make_job, size, with_out):
    """Packed tiles stay pending while their owner waits for their ready event."""
    owner, consumer = 0, 1
    event = ManualEvent()
    packed = [0, 5, 7, 8]  # positions in SPECS of tiles that travel packed
    alone = [1, 6]

    def main(rank: Rank):
        handles = None
        if rank.rank == owner:
            handles = [rank.put(tile(owner, i), event) for i in range(len(SPECS))]
        handles = rank.collectives.broadcast(handles, root=owner)
        if rank.rank == consumer:
            outs = [sentinel(h) for h in handles] if with_out else None
            transfer = rank.fetch(handles, out=outs)
            assert all(transfer[i].running() for i in alone)  # receives posted into results
            assert not any(transfer[i].cancel() for i in alone)  # running: too late
            assert transfer.cancel(packed[:2]) == 2
            assert transfer[packed[2]].cancel() and transfer[packed[2]].cancelled()
            cancelled = packed[:3]
        rank.collectives.barrier()  # the consumer has cancelled: let the tiles go
        if rank.rank == owner:
            event.complete()
        if rank.rank == consumer:
            transfer.wait(WAIT)
            for i in range(len(SPECS)):
                if i in cancelled:
                    assert transfer[i].cancelled() and transfer.value(i) is None
                    assert isinstance(transfer[i].exception(), CancelledError)
                    if with_out:
                        assert untouched(outs[i]), i
                else:
                    check_tile(transfer[i].result(), owner, i)
                    if with_out:
                        assert transfer.value(i) is outs[i]
            with pytest.raises(CancelledError):
                transfer.result()
            assert "3 cancelled" in repr(transfer)
        rank.collectives.barrier()

    make_job(size).run(main)


# -- giving up --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [2, 3])
def test_a_get_that_times_out_withdraws_its_receives(make_job, size):
    """After ``get`` raises CommTimeoutError, the tiles' out buffers are never written.

    The owner holds the tiles (their ready event is not done) until the consumer has given
    up; then it sends them. The consumer's receives were withdrawn, so the late bytes go
    nowhere (they are drained) and a new get of the same tiles works.
    """
    owner, consumer = 0, 1
    event = ManualEvent()
    late = threading.Event()  # set once the owner's late sends have completed

    def main(rank: Rank):
        handles = None
        if rank.rank == owner:  # one tile that travels alone, two packed
            arrays = [tile(owner, 1), tile(owner, 0), tile(owner, 5)]
            handles = [rank.put(a, event) for a in arrays]
        handles = rank.collectives.broadcast(handles, root=owner)
        if rank.rank == consumer:
            outs = [sentinel(h) for h in handles]
            with pytest.raises(gpupart.CommTimeoutError):
                rank.get(handles, out=outs, timeout=0.5)
            assert all(untouched(out) for out in outs)
        rank.collectives.barrier()  # the consumer has given up
        if rank.rank == owner:
            event.complete()  # the owner sends now, into withdrawn receives
            # Its sends complete once the consumer has matched them (to a drain).
            assert rank.engine.drain(WAIT), "the owner's late sends never completed"
            late.set()
        if rank.rank == consumer:
            assert late.wait(WAIT)
            assert rank.engine.drain(WAIT)
            assert all(untouched(out) for out in outs), [untouched(o) for o in outs]
            got = rank.get(handles, out=outs, timeout=WAIT)
            for value, out, index in zip(got, outs, (1, 0, 5), strict=True):
                assert value is out
                check_tile(out, owner, index)
        rank.collectives.barrier()

    make_job(size).run(main)


def test_an_owner_gives_up_serving_a_request_at_its_serve_timeout(make_job):
    """A request whose tiles never become ready is dropped at the deadline, not held forever.

    The consumer gives up first; the owner's serving of the request (which holds the tiles
    and would hold the pack memory) must end within ``serve_timeout``.
    """
    owner, consumer = 0, 1
    event = ManualEvent()  # completed only at the end: the tiles are never ready before

    def main(rank: Rank):
        handles = None
        if rank.rank == owner:
            handles = [rank.put(tile(owner, i), event) for i in (0, 1, 5)]
        handles = rank.collectives.broadcast(handles, root=owner)
        if rank.rank == consumer:
            with pytest.raises(gpupart.CommTimeoutError):
                rank.get(handles, timeout=0.2)
        rank.collectives.barrier()
        if rank.rank == owner:
            started = time.monotonic()
            assert rank.engine.drain(5.0), "the owner still serves a request past its deadline"
            assert time.monotonic() - started < 2.0
        rank.collectives.barrier()
        event.complete()

    make_job(2, serve_timeout=0.5).run(main)


@pytest.mark.parametrize("size", [2, 3])
def test_get_has_withdrawn_its_receives_when_it_raises(make_job, size):
    """The withdrawal is get's own doing, before it raises (not a later deadline sweep).

    The consumer holds its progress engine (``exclusive``) from the moment get has raised,
    lets the owner send, and moves the late message itself: only what get withdrew
    before returning can keep it out of the ``out`` buffer.
    """
    owner, consumer = 0, 1
    event = ManualEvent()

    def main(rank: Rank):
        handles = None
        if rank.rank == owner:
            handles = [rank.put(tile(owner, 1), event)]  # travels alone: one message
        handles = rank.collectives.broadcast(handles, root=owner)
        if rank.rank == consumer:
            out = sentinel(handles[0])
            with pytest.raises(gpupart.CommTimeoutError):
                rank.get(handles, out=[out], timeout=0.5)
            with rank.engine.exclusive(timeout=WAIT):  # no engine round from here on
                event.complete()  # the owner's engine sends the tile now
                deadline = time.monotonic() + WAIT
                while not rank.transport.progress():  # until the late message is matched
                    assert time.monotonic() < deadline, "the owner never sent"
                    rank.transport.wait(0.01)
                assert untouched(out)
            got = rank.get(handles, out=[out], timeout=WAIT)
            assert got[0] is out
            check_tile(out, owner, 1)
        rank.collectives.barrier()

    make_job(size).run(main)


@pytest.mark.parametrize("size", [2, 3])
def test_a_wait_that_times_out_abandons_nothing(make_job, size):
    owner, consumer = 0, size - 1
    event = ManualEvent()

    def main(rank: Rank):
        handles = None
        if rank.rank == owner:
            handles = [rank.put(tile(owner, i), event) for i in (0, 1)]
        handles = rank.collectives.broadcast(handles, root=owner)
        if rank.rank == consumer:
            outs = [sentinel(h) for h in handles]
            transfer = rank.fetch(handles, out=outs)
            with pytest.raises(gpupart.CommTimeoutError):
                transfer.wait(0.2)
            with pytest.raises(gpupart.CommTimeoutError):
                transfer[0].result(timeout=0.1)
            assert not transfer.done()
        rank.collectives.barrier()
        if rank.rank == owner:
            event.complete()
        if rank.rank == consumer:
            got = transfer.result(WAIT)
            for value, out, index in zip(got, outs, (0, 1), strict=True):
                assert value is out
                check_tile(out, owner, index)
        rank.collectives.barrier()

    make_job(size).run(main)


@pytest.mark.parametrize("size", [2, 3])
def test_without_cancel_a_get_that_times_out_still_leaves_out_untouched(make_job, size):
    """A transport that cannot withdraw receives: fetch receives into its own buffers.

    ``get`` still raises CommTimeoutError at its timeout (not later, not another error), no
    byte reaches ``out`` when the owner sends afterwards (the late message lands in the
    private buffer, and the owner's send completes), a missing tile fails alone, and a new
    get delivers into ``out``.
    """
    owner, consumer = 0, 1
    event = ManualEvent()
    late = threading.Event()

    def main(rank: Rank):
        assert rank.transport.can_cancel is False
        handles = None
        if rank.rank == owner:  # one tile that travels alone, two packed
            arrays = [tile(owner, 1), tile(owner, 0), tile(owner, 5)]
            handles = [rank.put(a, event) for a in arrays]
        handles = rank.collectives.broadcast(handles, root=owner)
        if rank.rank == consumer:
            outs = [sentinel(h) for h in handles]
            started = time.monotonic()
            with pytest.raises(gpupart.CommTimeoutError):
                rank.get(handles, out=outs, timeout=0.5)
            assert time.monotonic() - started < 0.5 + 1.0  # no wait for a withdrawal
            assert all(untouched(out) for out in outs)
        rank.collectives.barrier()  # the consumer has given up
        if rank.rank == owner:
            event.complete()
            assert rank.engine.drain(WAIT), "the owner's late sends never completed"
            late.set()
        if rank.rank == consumer:
            assert late.wait(WAIT)
            assert all(untouched(out) for out in outs), [untouched(o) for o in outs]
            missing = dataclasses.replace(handles[0], tile_id=10**9)
            more = [*handles, missing]
            transfer = rank.fetch(more, out=[*outs, sentinel(missing)])
            transfer.wait(WAIT)
            assert isinstance(transfer.error(3), gpupart.TileNotFoundError)
            for k, (out, index) in enumerate(zip(outs, (1, 0, 5), strict=True)):
                assert transfer.value(k) is out
                check_tile(out, owner, index)
        rank.collectives.barrier()

    make_job(size, can_cancel=False).run(main)


def test_a_lost_owner_fails_its_tiles_and_leaves_out_untouched(make_job):
    owner = 0
    event = ManualEvent()
    fetched = threading.Event()

    def main(rank: Rank):
        handles = None
        if rank.rank == owner:
            handles = [rank.put(tile(owner, i), event) for i in (0, 1, 5)]
        handles = rank.collectives.broadcast(handles, root=owner)
        if rank.rank == owner:  # never completes the event; waits until the consumer is done
            assert fetched.wait(WAIT)
            return
        outs = [sentinel(h) for h in handles]
        transfer = rank.fetch(handles, out=outs)
        rank.engine.mark_lost(owner, "the test says so")
        with pytest.raises(gpupart.PeerLostError):
            transfer.result(WAIT)
        assert all(isinstance(e, gpupart.PeerLostError) for e in transfer.exceptions().values())
        assert len(transfer.exceptions()) == 3 and all(untouched(out) for out in outs)
        with pytest.raises(gpupart.PeerLostError):  # later calls fail at once
            rank.get(handles, timeout=WAIT)
        fetched.set()

    make_job(2).run(main)


# -- collectives ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_collectives_equal_numpy(make_job, size):
    def value(r: int) -> np.ndarray:
        return (np.arange(6, dtype=np.int64).reshape(2, 3) + 1) * (r + 2) - 3 * r

    def main(rank: Rank):
        c = rank.collectives
        c.barrier()
        for root in range(size):
            got = c.broadcast({"root": root, "a": np.arange(root + 3)}, root=root)
            assert got["root"] == root and np.array_equal(got["a"], np.arange(root + 3))
        gathered = c.allgather((rank.rank, value(rank.rank)))
        assert [g[0] for g in gathered] == list(range(size))
        assert all(np.array_equal(g[1], value(r)) for r, g in enumerate(gathered))
        stack = np.stack([value(r) for r in range(size)])
        expected = {"sum": stack.sum(0), "prod": stack.prod(0), "min": stack.min(0)}
        expected["max"] = stack.max(0)
        for op, want in expected.items():
            got = c.allreduce(value(rank.rank), op=op)
            assert got.dtype == want.dtype and np.array_equal(got, want), op
        assert c.allreduce(rank.rank + 0.5) == sum(r + 0.5 for r in range(size))
        assert c.allreduce(np.float32(rank.rank), op="max") == np.float32(size - 1)
        # Ranks passing different shapes all raise (at one rank, nothing can differ).
        mismatched = np.zeros(rank.rank + 1)
        if size > 1:
            with pytest.raises(gpupart.CollectiveError, match="same shape and dtype"):
                c.allreduce(mismatched)
        c.barrier()
        return rank.rank

    assert make_job(size).run(main) == list(range(size))


def test_one_rank_failing_stops_the_others(make_job):
    """The harness itself: a failing rank's error is raised, the others do not hang."""

    def main(rank: Rank):
        if rank.rank == 1:
            raise RuntimeError("rank 1 broke")
        rank.collectives.barrier()  # waits for rank 1, which is gone

    with pytest.raises(RuntimeError, match="rank 1 broke"):
        make_job(3).run(main)


# -- the owner, seen from a hand-written peer -------------------------------------------------


class RawPeer:
    """A bare in-process transport posing as rank ``me``: it speaks the wire format by hand."""

    def __init__(self, job: InProcessJob, me: int, owner: Rank) -> None:
        self.owner = owner.rank
        self.transport = job.hub.transport()
        owner.transport.connect(me, self.transport.address)
        self.transport.connect(owner.rank, owner.transport.address)
        self.me = me
        self.keep: list = []  # send buffers live until their sends complete

    def request(self, batch: int, payload: bytes):
        self.keep.append(payload)
        return self.transport.send(self.owner, make_tag(Kind.REQUEST, self.me, batch), payload)

    def recv(self, seq: int, nbytes: int):
        buf = np.full(nbytes, 0xEE, dtype=np.uint8)
        return buf, self.transport.recv(make_tag(Kind.DATA, self.owner, seq), buf)

    def settle(self, *requests) -> None:
        deadline = time.monotonic() + WAIT
        while not all(r.completed for r in requests):
            assert time.monotonic() < deadline, "the owner did not answer"
            if not self.transport.progress():
                self.transport.wait(0.01)

    def reply(self) -> tuple[int, np.ndarray]:
        """The next unexpected message (an error reply): its tag and bytes."""
        deadline = time.monotonic() + WAIT
        while (probed := self.transport.probe()) is None:
            assert time.monotonic() < deadline, "no error reply came"
            if not self.transport.progress():
                self.transport.wait(0.01)
        buf = np.empty(probed.length, dtype=np.uint8)
        self.settle(self.transport.recv_probed(probed, buf))
        return probed.tag, buf

    def close(self) -> None:
        self.transport.close()


def test_an_owner_answers_hand_made_requests_as_the_wire_format_says(make_job):
    job = make_job(2)
    owner = job.ranks[0]
    peer = RawPeer(job, 2, owner)
    try:
        a = np.arange(10, dtype=np.int64)
        b = np.arange(3, dtype=np.float32) + 0.5
        big = np.arange(30_000, dtype=np.int32)
        ha, hb, hbig = (owner.put(x) for x in (a, b, big))
        # Garbage: rejected with a reason, and the owner keeps serving.
        peer.request(5, b"nonsense")
        tag, raw = peer.reply()
        assert tag == make_tag(Kind.RESPONSE, owner.rank, 5)
        assert "at least 32 header bytes" in wire.parse_error_reply(raw, 1).rejection
        # Unknown and mismatched tiles, packed and alone, among good ones.
        ids = [ha.tile_id, 10**9, hb.tile_id, hbig.tile_id, 10**9 + 1, ha.tile_id]
        nbytes = [a.nbytes, 16, b.nbytes, big.nbytes, 2000, a.nbytes + 8]
        items, lengths = plan_items(np.array(ids, np.uint64), np.array(nbytes), 1024, 4096)
        # the second unknown one travels alone (too big to pack), as does the big tile
        assert items["pack"].tolist() == [0, 0, 0, -1, -1, 0] and len(lengths) == 1
        pack, pack_recv = peer.recv(200, int(lengths[0]))
        big_buf, big_recv = peer.recv(100 + 3, big.nbytes)
        lost_buf, lost_recv = peer.recv(100 + 4, 2000)
        peer.request(7, wire.encode_request(items, lengths, 100, 200))
        tag, raw = peer.reply()
        assert tag == make_tag(Kind.RESPONSE, owner.rank, 7)
        reply = wire.parse_error_reply(raw, len(ids))
        assert reply.indices.tolist() == [1, 4, 5]
        assert reply.codes.tolist() == [wire.NOT_FOUND, wire.NOT_FOUND, wire.SIZE_MISMATCH]
        peer.settle(pack_recv, big_recv)
        offsets = items["offset"].tolist()
        expected = np.zeros(int(lengths[0]), np.uint8)  # padding and failed rooms: zeros
        expected[offsets[0] : offsets[0] + a.nbytes] = a.view(np.uint8)
        expected[offsets[2] : offsets[2] + b.nbytes] = b.view(np.uint8)
        assert np.array_equal(pack, expected)
        assert np.array_equal(big_buf.view(np.int32), big)
        peer.transport.cancel(lost_recv)  # nothing is sent for a failed tile alone
        peer.settle(lost_recv)
        assert (lost_buf == 0xEE).all()
        assert owner.engine.drain(WAIT)  # every send of the owner completed
        # A request with every tile alone and one with no item at all.
        items, lengths = plan_items(
            np.array([hbig.tile_id], np.uint64), np.array([big.nbytes]), 64, 64
        )
        big_buf, big_recv = peer.recv(300, big.nbytes)
        peer.request(8, wire.encode_request(items, lengths, 300, 301))
        peer.settle(big_recv)
        assert np.array_equal(big_buf.view(np.int32), big)
        peer.request(9, wire.encode_request(items[:0], [], 400, 401))
        tag, raw = peer.reply()
        assert "expected 1..4096 items" in wire.parse_error_reply(raw, 1).rejection
    finally:
        peer.close()

    def main(rank: Rank):  # the job itself is unharmed
        handles = rank.collectives.broadcast([ha, hb, hbig] if rank.rank == 0 else None)
        for got, want in zip(rank.get(handles, timeout=WAIT), (a, b, big), strict=True):
            assert np.array_equal(got, want)

    job.run(main)
