"""The result of one fetch call: every tile's state, value or error, as the tiles land.

A :class:`Transfer` is what ``Runtime.fetch`` returns (``Runtime.get`` waits on one). It
keeps the state of each tile in one small array instead of one future per tile, so a call
for ten thousand tiles costs a few array operations per pack, and it offers the usual ways
to use results: wait for all (:meth:`Transfer.result`), take them as they land
(:meth:`Transfer.as_completed`), look at or cancel one (``transfer[i]``, a
:class:`TileFuture`), or hand :class:`concurrent.futures.Future` objects to code that wants
them (:meth:`Transfer.futures`).

A tile is *pending* until its bytes start moving into the array that will be its result
(for a tile sent alone: when its receive is posted; for a packed tile: when its pack has
arrived and it is being copied or viewed), then *running*, then *done*, *failed* or
*cancelled*. Only a pending tile can be cancelled; a cancelled or failed tile's ``out``
buffer is never written.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import CancelledError, Future, InvalidStateError
from typing import Any

import numpy as np

from gpupart.errors import CommTimeoutError

__all__ = ["TileFuture", "Transfer"]

PENDING, RUNNING, DONE, FAILED, CANCELLED = 0, 1, 2, 3, 4
_UNSETTLED = RUNNING  # states <= this are still in flight

#: ``progress(done, deadline, what, timeout)``: progress the job until ``done()`` (raising
#: CommTimeoutError at the deadline), from the calling thread.
Progress = Callable[[Callable[[], bool], float, str, float], None]

Indices = Sequence[int] | np.ndarray


class Transfer:
    """The tiles of one fetch call, in the order of its handles (see module docstring)."""

    def __init__(self, n: int, progress: Progress | None, default_timeout: float) -> None:
        self._state = np.zeros(n, dtype=np.uint8)
        self._values: list[Any] = [None] * n
        self._errors: dict[int, BaseException] = {}
        self._settled: list[int] = []  # indices in the order they settled (as_completed)
        self._lock = threading.Lock()
        self._progress = progress
        self._timeout = default_timeout
        self._bridge: list[Future] | None = None
        #: ``time.monotonic()`` by which the call that made it must be over.
        self.deadline = time.monotonic() + default_timeout
        #: Called with the error when the call is abandoned (a timeout): withdraws receives.
        self.on_abort: Callable[[BaseException], None] | None = None
        #: Whether anyone can cancel tiles (False for a ``get``'s own transfer): tiles whose
        #: bytes start moving need then not be marked running.
        self.cancellable = True

    # -- what callers use -----------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._values)

    def __getitem__(self, index: int) -> TileFuture:
        n = len(self._values)
        if not -n <= index < n:
            raise IndexError(f"index: expected -{n}..{n - 1}, found {index}")
        return TileFuture(self, index % n)

    def __iter__(self) -> Iterator[TileFuture]:
        return (TileFuture(self, i) for i in range(len(self._values)))

    def done(self) -> bool:
        """Whether every tile is done, failed or cancelled."""
        return len(self._settled) == len(self._values)

    def wait(self, timeout: float | None = None) -> None:
        """Progress until every tile is settled; :class:`~gpupart.CommTimeoutError` if not.

        A timeout here abandons nothing: the tiles stay in flight.
        """
        self._wait_for(self.done, timeout, "fetch: waiting for tiles")

    def result(self, timeout: float | None = None) -> list[Any]:
        """Wait, then return every tile; raises the error of the first failed tile.

        A cancelled tile raises :class:`concurrent.futures.CancelledError`.
        """
        self.wait(timeout)
        with self._lock:
            if self._errors:
                raise self._errors[min(self._errors)]
            return list(self._values)

    def exceptions(self) -> dict[int, BaseException]:
        """Return the errors of the tiles that failed or were cancelled so far, by index."""
        with self._lock:
            return dict(self._errors)

    def cancel(self, indices: Indices | None = None) -> int:
        """Cancel the pending tiles among ``indices`` (default all); returns how many."""
        n = len(self._values)
        idx = np.arange(n) if indices is None else np.asarray(indices, np.int64).reshape(-1)
        if len(idx) and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"indices: expected values in -{n}..{n - 1}, found {idx.tolist()}")
        idx = idx % n if n else idx
        with self._lock:
            state = self._state[idx]
            hit = np.unique(idx[state == PENDING])
            if not len(hit):
                return 0
            self._state[hit] = CANCELLED
            error = CancelledError()
            for i in hit.tolist():
                self._errors[i] = error
            self._settled.extend(hit.tolist())
        self._notify(hit.tolist())
        return len(hit)

    def as_completed(self, timeout: float | None = None) -> Iterator[int]:
        """Yield tile indices as the tiles settle (done, failed or cancelled)."""
        limit = self._timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        seen = 0
        while seen < len(self._values):
            if seen == len(self._settled):
                remaining = deadline - time.monotonic()
                self._wait_for(_more_than(self._settled, seen), remaining, "as_completed")
            settled = self._settled[seen:]
            seen += len(settled)
            yield from settled

    def futures(self) -> list[Future]:
        """One standard future per tile, completed as the tiles settle (made on first call).

        They are running from the start: cancel tiles through the transfer, not them.
        """
        with self._lock:
            if self._bridge is None:
                bridge = [Future() for _ in self._values]
                for future in bridge:
                    future.set_running_or_notify_cancel()
                self._bridge = bridge
                settled = list(self._settled)
            else:
                return list(self._bridge)
        self._notify(settled)
        return list(bridge)

    def __repr__(self) -> str:
        counts = np.bincount(self._state, minlength=5)
        names = ("pending", "running", "done", "failed", "cancelled")
        parts = ", ".join(f"{c} {name}" for c, name in zip(counts, names, strict=True) if c)
        return f"<gpupart.Transfer of {len(self._values)} tiles: {parts or 'none'}>"

    # -- the receive side (progressing threads) -------------------------------------------

    def claim(self, indices: Indices) -> np.ndarray:
        """Make the pending tiles among ``indices`` running; return a mask of which were."""
        idx = np.asarray(indices, dtype=np.int64)
        if len(idx) == 1:  # one tile (a one-tile get): a scalar test costs a third
            i = int(idx[0])
            with self._lock:
                ok = self._state[i] == PENDING
                if ok:
                    self._state[i] = RUNNING
            return np.array([ok])
        with self._lock:
            mask = self._state[idx] == PENDING
            self._state[idx[mask]] = RUNNING
        return mask

    def deliver(self, indices: Indices, values: Sequence[Any]) -> None:
        """Settle tiles with their values (tiles already settled keep their outcome)."""
        if isinstance(indices, range):
            lo, hi = indices.start, indices.stop
            with self._lock:
                if (self._state[lo:hi] <= _UNSETTLED).all():
                    self._values[lo:hi] = values
                    self._state[lo:hi] = DONE
                    self._settled.extend(indices)
                    settled: list[int] = list(indices) if self._bridge is not None else []
                else:
                    settled = self._deliver_some(np.arange(lo, hi), values)
        else:
            with self._lock:
                settled = self._deliver_some(np.asarray(indices, np.int64), values)
        if self._bridge is not None:
            self._notify(settled)

    def _deliver_some(self, idx: np.ndarray, values: Sequence[Any]) -> list[int]:
        keep = np.flatnonzero(self._state[idx] <= _UNSETTLED)
        chosen = idx[keep].tolist()
        target = self._values
        for i, k in zip(chosen, keep.tolist(), strict=True):
            target[i] = values[k]
        self._state[chosen] = DONE
        self._settled.extend(chosen)
        return chosen

    def deliver_one(self, index: int, value: Any) -> None:
        """Settle one tile with its value (ignored if it is already settled)."""
        with self._lock:
            if self._state[index] > _UNSETTLED:
                return
            self._values[index] = value
            self._state[index] = DONE
            self._settled.append(index)
        if self._bridge is not None:
            self._notify([index])

    def fail(self, indices: Indices, error: BaseException) -> list[int]:
        """Settle the unsettled tiles among ``indices`` with ``error``; returns them."""
        idx = np.asarray(indices, dtype=np.int64)
        with self._lock:
            chosen = np.unique(idx[self._state[idx] <= _UNSETTLED]).tolist()
            self._state[chosen] = FAILED
            for i in chosen:
                self._errors[i] = error
            self._settled.extend(chosen)
        self._notify(chosen)
        return chosen

    def pending(self, indices: Indices) -> np.ndarray:
        """Mask of the tiles among ``indices`` that are still wanted (pending or running)."""
        return self._state[np.asarray(indices, dtype=np.int64)] <= _UNSETTLED

    def state(self, index: int) -> int:
        """Return the state code of one tile."""
        return int(self._state[index])

    def value(self, index: int) -> Any:
        """Return the value of a done tile (None otherwise)."""
        return self._values[index]

    def error(self, index: int) -> BaseException | None:
        """Return the error of a failed or cancelled tile (None otherwise)."""
        return self._errors.get(index)

    def abort(self, error: BaseException) -> None:
        """Give up the call: withdraw what is in flight and fail every unsettled tile."""
        if self.on_abort is not None:
            self.on_abort(error)
        self.fail(np.arange(len(self._values)), error)

    # -- helpers --------------------------------------------------------------------------

    def _notify(self, indices: list[int]) -> None:
        """Settle the bridge futures of ``indices`` (outside the lock: callbacks run here)."""
        bridge = self._bridge
        if bridge is None:
            return
        for i in indices:
            future = bridge[i]
            error = self._errors.get(i)
            try:  # a tile settled while the bridge was made is set by whichever comes first
                if error is None:
                    future.set_result(self._values[i])
                else:
                    future.set_exception(error)
            except InvalidStateError:
                continue

    def _wait_for(self, done: Callable[[], bool], timeout: float | None, what: str) -> None:
        if done():
            return
        limit = self._timeout if timeout is None else max(timeout, 0.0)
        if self._progress is None:
            raise CommTimeoutError(what, limit)  # nothing can move: no transport
        self._progress(done, time.monotonic() + limit, what, limit)


def _more_than(settled: list[int], count: int) -> Callable[[], bool]:
    return lambda: len(settled) > count


class TileFuture:
    """One tile of a :class:`Transfer`, with the methods of a future."""

    __slots__ = ("_index", "_transfer")

    def __init__(self, transfer: Transfer, index: int) -> None:
        self._transfer = transfer
        self._index = index

    def done(self) -> bool:
        """Whether the tile is done, failed or cancelled."""
        return self._transfer.state(self._index) > _UNSETTLED

    def running(self) -> bool:
        """Whether the tile's bytes are moving into its result."""
        return self._transfer.state(self._index) == RUNNING

    def cancelled(self) -> bool:
        """Whether the tile was cancelled."""
        return self._transfer.state(self._index) == CANCELLED

    def cancel(self) -> bool:
        """Cancel the tile if it is still pending (or already cancelled)."""
        return bool(self._transfer.cancel([self._index])) or self.cancelled()

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the tile and return it, or raise its error."""
        error = self.exception(timeout)
        if error is not None:
            raise error
        return self._transfer.value(self._index)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Wait for the tile and return its error (None if it is done)."""
        transfer, index = self._transfer, self._index
        transfer._wait_for(self.done, timeout, f"fetch: waiting for tile {index}")
        return transfer.error(index)

    def __repr__(self) -> str:
        names = ("pending", "running", "done", "failed", "cancelled")
        return f"<gpupart.TileFuture {self._index}: {names[self._transfer.state(self._index)]}>"
