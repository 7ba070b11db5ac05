"""Transfer and TileFuture (gpupart/tiles/transfer.py) driven by hand, without a transport.

The receive side's calls (``claim``, ``deliver``, ``deliver_one``, ``fail``) are made here
directly; ``progress`` is a stand-in that records how callers wait. Over a real transport
the same objects are tested in ``test_inprocess_job.py``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import threading
import time
from concurrent.futures import CancelledError

import numpy as np
import pytest

import gpupart
from gpupart.tiles.transfer import TileFuture, Transfer


def states(transfer: Transfer) -> list[str]:
    """Each tile's state, from TileFuture's point of view."""
    out = []
    for f in transfer:
        if f.cancelled():
            out.append("cancelled")
        elif f.done():
            out.append("failed" if transfer.error(f._index) is not None else "done")
        else:
            out.append("running" if f.running() else "pending")
    return out


class Helper:
    """A ``progress`` stand-in: records each wait, runs ``step`` (if any) until done."""

    def __init__(self, step=None) -> None:
        self.calls: list[tuple[str, float]] = []
        self.step = step

    def __call__(self, done, deadline, what, timeout) -> None:
        self.calls.append((what, timeout))
        while not done():
            if self.step is None or not self.step():
                raise gpupart.CommTimeoutError(what, timeout)


# -- states -----------------------------------------------------------------------------------


def test_tiles_go_from_pending_to_running_to_done():
    t = Transfer(4, None, 1.0)
    assert len(t) == 4 and states(t) == ["pending"] * 4 and not t.done()
    assert repr(t) == "<gpupart.Transfer of 4 tiles: 4 pending>"
    assert t.claim([0, 1]).tolist() == [True, True]
    assert t.claim([1, 2]).tolist() == [False, True]  # 1 was already running
    assert states(t) == ["running", "running", "running", "pending"]
    assert t.pending([0, 3]).tolist() == [True, True]  # still wanted
    t.deliver_one(0, "a")
    assert states(t)[0] == "done" and t.value(0) == "a" and t.error(0) is None
    assert t.claim([0]).tolist() == [False]  # a settled tile is never claimed again
    assert t.pending([0, 1]).tolist() == [False, True]
    assert repr(t) == "<gpupart.Transfer of 4 tiles: 1 pending, 2 running, 1 done>"
    assert repr(t[0]) == "<gpupart.TileFuture 0: done>"
    assert repr(t[-1]) == "<gpupart.TileFuture 3: pending>"
    assert repr(Transfer(0, None, 1.0)) == "<gpupart.Transfer of 0 tiles: none>"
    assert Transfer(0, None, 1.0).done() and Transfer(0, None, 1.0).result() == []


def test_indexing_and_iteration():
    t = Transfer(3, None, 1.0)
    assert [f._index for f in t] == [0, 1, 2] and isinstance(t[1], TileFuture)
    assert t[-3]._index == 0 and t[2]._index == 2
    for bad in (3, -4):
        with pytest.raises(IndexError, match=r"expected -3\.\.2"):
            t[bad]


def test_cancel_only_pending_tiles():
    t = Transfer(6, None, 1.0)
    t.claim([1])
    t.deliver_one(2, "c")
    t.fail([3], KeyError("3"))
    assert t.cancel([0, 1, 2, 3, 0]) == 1  # only 0 was pending (counted once)
    assert states(t) == ["cancelled", "running", "done", "failed", "pending", "pending"]
    assert t.error(0) is not None and isinstance(t.error(0), CancelledError)
    assert not t[1].cancel() and t[1].running()  # running: too late
    assert not t[2].cancel() and not t[3].cancel()
    assert t[4].cancel() and t[4].cancel()  # True again once cancelled
    assert t.cancel() == 1  # the rest: only 5 was pending
    assert t.cancel() == 0 and t.cancel(np.array([], np.int64)) == 0
    assert states(t)[4:] == ["cancelled", "cancelled"]
    # A cancelled tile is never written: delivery and failure leave it cancelled.
    t.deliver([0, 1], ["late", "b"])
    t.deliver_one(4, "late")
    assert t.fail([5], RuntimeError("late")) == []
    assert states(t) == ["cancelled", "done", "done", "failed", "cancelled", "cancelled"]
    assert t.value(0) is None and t.value(1) == "b" and t.done()
    assert "3 cancelled" in repr(t) and "2 done" in repr(t) and "1 failed" in repr(t)


def test_cancel_takes_negative_indices_like_indexing():
    """``cancel([-1])`` is the last tile, as ``transfer[-1]`` is: its error is under its index.

    A negative index must not be kept as a second name of a tile: the tile's own future
    would not see its CancelledError, and naming one tile both ways would count it twice
    as settled (``done()`` true while a tile is still pending).
    """
    t = Transfer(3, None, 1.0)
    assert t.cancel([-1]) == 1
    assert t[2].cancelled() and isinstance(t.error(2), CancelledError)
    with pytest.raises(CancelledError):
        t[2].result(timeout=0)
    assert t.exceptions().keys() == {2}
    t = Transfer(3, None, 1.0)
    assert t.cancel([2, -1]) == 1  # one tile, named twice
    t.deliver_one(0, "a")
    assert not t.done()  # tile 1 is still pending
    assert list(itertools.islice(t.as_completed(timeout=0), 2)) == [2, 0]


# -- delivery ---------------------------------------------------------------------------------


def test_deliver_takes_runs_and_scattered_indices():
    t = Transfer(7, None, 1.0)
    t.deliver(range(1, 3), ["b", "c"])
    t.deliver(np.array([5, 0]), ["f", "a"])
    t.deliver([3], ["d"])
    t.deliver_one(4, "e")
    assert not t.done()
    t.deliver(np.array([6]), ["g"])
    assert t.done() and t.result() == ["a", "b", "c", "d", "e", "f", "g"]
    # A list whose ends look like a run is still placed item by item.
    t = Transfer(4, None, 1.0)
    t.deliver([0, 2, 1, 3], ["a", "c", "b", "d"])
    assert t.result() == ["a", "b", "c", "d"]
    # A run over tiles some of which are settled keeps their outcome.
    t = Transfer(5, None, 1.0)
    t.cancel([1])
    t.fail([3], KeyError("3"))
    t.deliver(range(5), ["a", "b", "c", "d", "e"])
    assert states(t) == ["done", "cancelled", "done", "failed", "done"]
    assert [t.value(i) for i in range(5)] == ["a", None, "c", None, "e"]
    assert t.done()


def test_fail_keeps_the_first_outcome():
    t = Transfer(4, None, 1.0)
    first = KeyError("first")
    assert t.fail([2, 2], first) == [2]
    assert t.fail([2, 3], KeyError("late")) == [3]
    assert t.error(2) is first and isinstance(t[2].exception(), KeyError)
    t.deliver([2, 3], ["x", "y"])
    t.deliver_one(2, "x")
    assert t.value(2) is None and t.error(2) is first
    t.deliver_one(0, "a")
    assert t.fail([0, 1], RuntimeError("late")) == [1]
    assert t.value(0) == "a" and t.error(0) is None
    assert set(t.exceptions()) == {1, 2, 3}


def test_result_raises_the_first_error_by_index():
    t = Transfer(6, None, 1.0)
    t.deliver(range(0, 2), ["a", "b"])
    t.fail([4], KeyError("4"))
    t.fail([2], KeyError("2"))  # settled later, but earlier in the call
    t.deliver([3, 5], ["d", "f"])
    with pytest.raises(KeyError, match="2"):
        t.result()
    assert t[0].result() == "a" and t[3].result() == "d"
    with pytest.raises(KeyError, match="4"):
        t[4].result()
    # A cancelled tile raises CancelledError, from the transfer and from its future.
    t = Transfer(3, None, 1.0)
    t[1].cancel()
    t.deliver([0, 2], ["a", "c"])
    with pytest.raises(CancelledError):
        t.result()
    with pytest.raises(CancelledError):
        t[1].result()
    assert isinstance(t[1].exception(), CancelledError) and t[1].cancelled()
    assert t[0].exception() is None and t[2].result() == "c"


# -- waiting ----------------------------------------------------------------------------------


def test_waiting_progresses_through_the_callback_with_the_right_timeout():
    helper = Helper()
    t = Transfer(3, helper, 7.0)
    t.deliver_one(0, "tile")
    assert t[0].result() == "tile" and helper.calls == []  # done: no progress needed
    with pytest.raises(gpupart.CommTimeoutError):
        t[1].result(timeout=0.01)
    assert helper.calls == [("fetch: waiting for tile 1", 0.01)]
    with pytest.raises(gpupart.CommTimeoutError):
        t.wait()  # the transfer's default timeout
    assert helper.calls[-1] == ("fetch: waiting for tiles", 7.0)
    with pytest.raises(TimeoutError):  # CommTimeoutError is a TimeoutError
        t.result(timeout=-5)
    assert helper.calls[-1][1] == 0.0  # a negative timeout is no time at all
    t.fail([2], gpupart.TileNotFoundError(0, 9))
    assert isinstance(t[2].exception(), gpupart.TileNotFoundError)
    with pytest.raises(gpupart.TileNotFoundError):
        t[2].result()
    assert len(helper.calls) == 3  # settled tiles never wait
    # A timeout abandons nothing: the tile can still land and be read.
    t.deliver_one(1, "late")
    assert t[1].result(timeout=0) == "late" and t.done()


def test_without_a_transport_an_unsettled_tile_times_out_at_once():
    t = Transfer(2, None, 100.0)
    t.deliver_one(0, "a")
    with pytest.raises(gpupart.CommTimeoutError, match="waiting for tiles"):
        t.wait()
    with pytest.raises(gpupart.CommTimeoutError, match="tile 1"):
        t[1].exception()


def test_wait_returns_once_the_progress_settles_everything():
    t = Transfer(3, None, 5.0)
    left = [2, 0, 1]

    def step() -> bool:
        t.deliver_one(left.pop(0), "x")
        return True

    t._progress = Helper(step)
    assert t.result() == ["x", "x", "x"]


# -- as_completed -----------------------------------------------------------------------------


def test_as_completed_yields_in_the_order_tiles_settle():
    t = Transfer(5, None, 1.0)
    t.deliver_one(3, "d")
    t.cancel([0])
    t.fail([4], KeyError("4"))
    order = [1, 2]

    def step() -> bool:  # the rest settle while the caller iterates
        if not order:
            return False
        t.deliver_one(order.pop(0), "x")
        return True

    t._progress = Helper(step)
    assert list(t.as_completed()) == [3, 0, 4, 1, 2]
    assert list(t.as_completed()) == [3, 0, 4, 1, 2]  # again: everything at once


def test_as_completed_times_out_without_progress_and_keeps_what_it_yielded():
    t = Transfer(3, Helper(), 1.0)
    t.deliver(range(2), ["a", "b"])
    seen = []
    with pytest.raises(gpupart.CommTimeoutError, match="as_completed"):
        for i in t.as_completed(timeout=0.01):
            seen.append(i)
    assert seen == [0, 1]


def test_as_completed_with_a_thread_delivering():
    t = Transfer(200, None, 30.0)
    t._progress = Helper(lambda: time.sleep(0.001) or True)
    order = np.random.default_rng(3).permutation(200).tolist()

    def deliver():
        for i in order:
            t.deliver_one(i, i)

    thread = threading.Thread(target=deliver)
    thread.start()
    try:
        assert list(t.as_completed()) == order
    finally:
        thread.join()


# -- abort ------------------------------------------------------------------------------------


def test_abort_withdraws_then_fails_what_is_unsettled():
    t = Transfer(4, None, 1.0)
    calls = []
    t.on_abort = lambda error: calls.append((error, states(t)))
    t.deliver_one(0, "a")
    t.claim([1])
    error = gpupart.CommTimeoutError("fetch", 1.0)
    t.abort(error)
    assert calls == [(error, ["done", "running", "pending", "pending"])]  # before failing
    assert states(t) == ["done", "failed", "failed", "failed"]
    assert all(t.error(i) is error for i in (1, 2, 3)) and t.value(0) == "a"
    Transfer(1, None, 1.0).abort(error)  # no on_abort: just fails


# -- the concurrent.futures bridge ------------------------------------------------------------


def test_futures_bridge_completes_standard_futures():
    t = Transfer(5, None, 1.0)
    t.deliver_one(0, "a")  # settled before the bridge exists
    t.cancel([1])
    futures = t.futures()
    assert all(isinstance(f, concurrent.futures.Future) for f in futures)
    assert futures[0].result(timeout=0) == "a"
    with pytest.raises(CancelledError):
        futures[1].result(timeout=0)
    assert [f.running() for f in futures[2:]] == [True] * 3
    assert not futures[2].cancel()  # cancel through the transfer, not the bridge
    calls = []
    futures[2].add_done_callback(lambda f: calls.append(f.result()))
    waiting = concurrent.futures.as_completed(futures[2:], timeout=5)
    t.deliver(range(2, 4), ["c", "d"])
    t.fail([4], gpupart.TileNotFoundError(0, 4))
    assert {futures.index(f) for f in waiting} == {2, 3, 4}
    assert futures[2].result() == "c" and futures[3].result() == "d"
    assert isinstance(futures[4].exception(), gpupart.TileNotFoundError)
    assert calls == ["c"]  # callbacks run, once
    assert t.futures() == futures  # the same futures on a second call
    assert not concurrent.futures.wait(futures, timeout=5).not_done
    # Settling again changes nothing (and does not raise InvalidStateError).
    t.deliver_one(2, "again")
    t.fail([3], RuntimeError("late"))
    assert futures[2].result() == "c" and futures[3].result() == "d"


def test_futures_made_after_every_tile_settled_are_done():
    t = Transfer(3, None, 1.0)
    t.deliver(np.array([2, 0]), ["c", "a"])
    t.fail([1], KeyError("1"))
    futures = t.futures()
    assert all(f.done() for f in futures)
    assert futures[0].result() == "a" and futures[2].result() == "c"
    assert isinstance(futures[1].exception(), KeyError)


def test_futures_bridge_with_a_thread_delivering():
    t = Transfer(500, None, 1.0)
    futures = t.futures()

    def deliver():
        for lo in range(0, 500, 50):
            t.deliver(range(lo, lo + 50), list(range(lo, lo + 50)))

    thread = threading.Thread(target=deliver)
    thread.start()
    try:
        not_done = concurrent.futures.wait(futures, timeout=30).not_done
    finally:
        thread.join()
    assert not not_done and [f.result() for f in futures] == list(range(500))


class _SteppedLock:
    """A lock that runs a thread's hook right after that thread releases it (a schedule)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.after_release: dict[int, object] = {}

    def __enter__(self) -> _SteppedLock:
        self._lock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()
        hook = self.after_release.pop(threading.get_ident(), None)
        if hook is not None:
            hook()


def test_a_tile_settling_while_futures_are_made_completes_its_future_once(monkeypatch):
    """futures() on one thread while deliver_one() settles a tile on another.

    The schedule is forced: the delivering thread settles tile 0 and releases the lock;
    futures() then makes the bridge (tile 0 is settled, so it completes future 0); the
    delivering thread, finding the bridge, completes future 0 too. Both must not set it:
    the second ``set_result`` raises ``InvalidStateError`` on whichever thread it is (the
    caller of futures(), or the progress thread delivering tiles).
    """
    both_checked = threading.Barrier(2, timeout=2)

    class CheckedTogether(concurrent.futures.Future):
        """A future whose first done() check waits for a second thread's (the race)."""

        def done(self) -> bool:
            result = super().done()
            if not result:
                with contextlib.suppress(threading.BrokenBarrierError):
                    both_checked.wait()
            return result

    monkeypatch.setattr("gpupart.tiles.transfer.Future", CheckedTogether)
    t = Transfer(1, None, 1.0)
    t._lock = lock = _SteppedLock()
    delivered, bridged = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    made: list = []

    def deliver() -> None:
        def pause() -> None:  # between settling the tile and looking for the bridge
            delivered.set()
            assert bridged.wait(5)

        lock.after_release[threading.get_ident()] = pause
        try:
            t.deliver_one(0, "a")
        except BaseException as exc:
            errors.append(exc)

    def bridge() -> None:
        assert delivered.wait(5)
        lock.after_release[threading.get_ident()] = bridged.set
        try:
            made.extend(t.futures())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=deliver), threading.Thread(target=bridge)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert made and made[0].result(timeout=0) == "a"
