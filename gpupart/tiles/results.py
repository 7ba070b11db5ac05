"""Where fetched tiles are delivered: standard futures, made and completed cheaply, or a list.

``Runtime.fetch`` must return :class:`concurrent.futures.Future` objects; creating one costs a
``threading.Condition`` each, which for thousands of small tiles is the dominant cost. The
futures of one call therefore share one condition (CPython's ``Future`` only uses it as a
lock and a wait queue, so sharing it changes no behaviour), and a pack's worth of them is
completed under one acquisition of it with one wake-up (:class:`FutureSink`).
``Runtime.get`` needs no futures at all: its tiles go straight into a list
(:class:`ResultList`).

Both sinks take *global* indices (positions in the caller's list of handles), so every
per-owner batch of one call writes into the same sink.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures._base import CANCELLED, FINISHED, PENDING, RUNNING
from typing import Any

__all__ = ["FutureSink", "ProgressingFuture", "ResultList", "futures_sharing_condition"]

logger = logging.getLogger("gpupart.fetch")

_FUTURE_FIELDS = ("_condition", "_state", "_result", "_exception", "_waiters", "_done_callbacks")


class ProgressingFuture(Future):
    """A future whose waiter progresses the transport instead of sleeping until woken.

    Waking a sleeping thread costs a GIL hand-off per completion; a waiter that progresses
    UCX itself (as ``Runtime.get`` does) sees its tile as soon as it lands. ``_help`` is
    ``help(future, timeout)``, set by the runtime; without it this is a plain future.
    """

    _help: Callable[[Future, float | None], None] | None = None

    def result(self, timeout: float | None = None) -> Any:
        """Return the tile, progressing while it is not there yet."""
        if self._state == FINISHED and self._exception is None:
            return self._result  # a terminal state: no need for the condition's lock
        if self._help is not None and not self.done():
            self._help(self, timeout)
            timeout = None if timeout is None else 0.0  # the help already waited that long
        return super().result(timeout=timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Return the error (or None), progressing while the tile is not there yet."""
        if self._help is not None and not self.done():
            self._help(self, timeout)
            timeout = None if timeout is None else 0.0
        return super().exception(timeout=timeout)


def futures_sharing_condition(
    n: int, helper: Callable[[Future, float | None], None] | None = None
) -> list[Future]:
    """``n`` pending futures that share one condition (plain futures on unknown Pythons)."""
    probe = Future()
    if not all(hasattr(probe, name) for name in _FUTURE_FIELDS):
        return [probe] + [Future() for _ in range(n - 1)] if n else []
    condition = threading.Condition()
    shared = {
        "_help": helper,
        "_condition": condition,
        "_state": probe._state,  # PENDING
        "_result": None,
        "_exception": None,
    }
    futures = []
    new = ProgressingFuture.__new__
    for _ in range(n):
        fut = new(ProgressingFuture)
        attrs = fut.__dict__
        attrs.update(shared)
        attrs["_waiters"] = []
        attrs["_done_callbacks"] = []
        futures.append(fut)
    return futures


def _notify_cancelled(fut: Future) -> None:
    """Tell ``wait``/``as_completed`` about a future its caller cancelled.

    That is an executor's job (``set_running_or_notify_cancel``): until it is done, a
    cancelled future counts as pending there and ``concurrent.futures.wait`` would hang.
    """
    if getattr(fut, "_state", None) == CANCELLED:
        fut.set_running_or_notify_cancel()


class FutureSink:
    """Delivers tiles to one future each (``Runtime.fetch``); cancelled futures are skipped."""

    __slots__ = ("_shared", "futures")
    #: Callers may cancel a tile (its future) while it is in flight.
    cancellable = True

    def __init__(self, futures: list[Future]) -> None:
        self.futures = futures
        # futures_sharing_condition makes all of them ProgressingFutures or none.
        self._shared = len(futures) > 1 and isinstance(futures[0], ProgressingFuture)

    def done(self, index: int) -> bool:
        """Whether tile ``index`` already has a result, an error, or was cancelled."""
        return self.futures[index].done()

    def set_result(self, index: int, value: Any) -> None:
        """Deliver one tile (ignored if its future is already done or cancelled)."""
        self._settle(index, Future.set_result, value)

    def set_exception(self, index: int, exc: BaseException) -> None:
        """Fail one tile (ignored if its future is already done or cancelled)."""
        self._settle(index, Future.set_exception, exc)

    def _settle(self, index: int, setter: Callable[[Future, Any], None], arg: Any) -> None:
        fut = self.futures[index]
        if fut.done():
            _notify_cancelled(fut)
        else:
            setter(fut, arg)

    def claim(self, indices: Sequence[int]) -> list[int]:
        """Mark the still-pending tiles of ``indices`` running; return their positions.

        A running future can no longer be cancelled, so a tile claimed here may be copied
        into its caller's ``out`` buffer; failed and cancelled ones are left out.
        """
        futures = self.futures
        claimed = []
        if not self._shared:
            for k, index in enumerate(indices):
                fut = futures[index]
                if not fut.done() and fut.set_running_or_notify_cancel():
                    claimed.append(k)
                else:
                    _notify_cancelled(fut)
            return claimed
        with futures[0]._condition:
            for k, index in enumerate(indices):
                fut = futures[index]
                if fut._state == PENDING:
                    fut._state = RUNNING
                    claimed.append(k)
                elif fut._state == CANCELLED:
                    fut.set_running_or_notify_cancel()
        return claimed

    def set_results(self, indices: Sequence[int], values: Sequence[Any]) -> None:
        """Deliver many tiles: under one hold of the shared condition, with one wake-up."""
        futures = self.futures
        if not self._shared:
            for index, value in zip(indices, values, strict=True):
                self.set_result(index, value)
            return
        finished = []
        condition = futures[0]._condition
        with condition:
            for index, value in zip(indices, values, strict=True):
                fut = futures[index]
                if fut._state != PENDING and fut._state != RUNNING:  # failed, cancelled, done
                    if fut._state == CANCELLED:
                        fut.set_running_or_notify_cancel()
                    continue
                fut._result = value
                fut._state = FINISHED
                for waiter in fut._waiters:  # concurrent.futures.wait / as_completed
                    waiter.add_result(fut)
                if fut._done_callbacks:
                    finished.append(fut)
            condition.notify_all()
        for fut in finished:
            for callback in fut._done_callbacks:
                try:
                    callback(fut)
                except Exception:
                    logger.exception("exception calling callback for %r", fut)

    def fail_pending(self, indices: Sequence[int], exc: BaseException) -> None:
        """Fail every tile of ``indices`` that is still pending."""
        for index in indices:
            self.set_exception(index, exc)


class ResultList:
    """The tiles of one ``Runtime.get``: values and errors by index, no object per tile."""

    __slots__ = ("errors", "values")
    #: Nothing cancels a tile of a ``get``: only failures end one early.
    cancellable = False

    def __init__(self, n: int) -> None:
        self.values: list[Any] = [None] * n
        self.errors: dict[int, BaseException] = {}

    def done(self, index: int) -> bool:
        """Whether tile ``index`` has a value or an error."""
        return self.values[index] is not None or index in self.errors

    def set_result(self, index: int, value: Any) -> None:
        """Deliver one tile."""
        self.values[index] = value

    def set_exception(self, index: int, exc: BaseException) -> None:
        """Fail one tile (the first error of a tile is kept)."""
        self.errors.setdefault(index, exc)

    def set_results(self, indices: Sequence[int], values: Sequence[Any]) -> None:
        """Deliver many tiles (one slice assignment when the indices are a ``range`` run)."""
        if isinstance(indices, range) and indices.step == 1:
            self.values[indices.start : indices.stop] = values
            return
        target = self.values
        for index, value in zip(indices, values, strict=True):
            target[index] = value

    def fail_pending(self, indices: Sequence[int], exc: BaseException) -> None:
        """Fail every tile of ``indices`` that has neither a value nor an error."""
        for index in indices:
            if not self.done(index):
                self.errors[index] = exc

    def result(self) -> list[Any]:
        """Return the values in order, or raise the error of the first failed tile."""
        if self.errors:
            raise self.errors[min(self.errors)]
        return self.values
