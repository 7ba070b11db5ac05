"""Where fetched tiles are delivered: standard futures, made cheaply, or bare result slots.

``Runtime.fetch`` must return :class:`concurrent.futures.Future` objects; creating one costs a
``threading.Condition`` each, which for thousands of small tiles is the dominant cost. The
futures of one call therefore share one condition (CPython's ``Future`` only uses it as a
lock and a wait queue, so sharing it changes no behaviour). ``Runtime.get`` needs no futures
at all and uses :class:`ResultSlot`, which has the part of the future API the fetch
machinery calls.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

__all__ = ["ProgressingFuture", "ResultSlot", "futures_sharing_condition"]

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
    state = probe._state  # PENDING
    futures = []
    new = ProgressingFuture.__new__
    for _ in range(n):
        fut = new(ProgressingFuture)
        fut._help = helper
        fut._condition = condition
        fut._state = state
        fut._result = None
        fut._exception = None
        fut._waiters = []
        fut._done_callbacks = []
        futures.append(fut)
    return futures


class ResultSlot:
    """A one-shot result holder with the subset of the future API that fetching uses."""

    __slots__ = ("_done", "_exception", "_value")

    def __init__(self) -> None:
        self._done = False
        self._value: Any = None
        self._exception: BaseException | None = None

    def done(self) -> bool:
        """Whether a result or an exception was set."""
        return self._done

    def set_result(self, value: Any) -> None:
        """Deliver the value."""
        self._value = value
        self._done = True

    def set_exception(self, exc: BaseException) -> None:
        """Deliver an error."""
        self._exception = exc
        self._done = True

    def result(self) -> Any:
        """Return the value, or raise the error (only once done)."""
        if self._exception is not None:
            raise self._exception
        return self._value
