"""The device-neutral interfaces: :class:`Backend`, :class:`Stream` and :class:`Event`.

The rest of gpupart is written once against these; :class:`~gpupart.backend.HostBackend`
(NumPy/pandas) and :class:`~gpupart.backend.CudaBackend` (CuPy/cuDF) implement them. A backend
is the factory of its streams and events (never construct those directly) and streams are
always explicit arguments: nothing in this API reads a hidden "current stream".
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from gpupart.errors import CommTimeoutError

__all__ = ["Backend", "Event", "Stream", "check_order", "wait_until"]

#: Sleep between polls of a pending event: starts short, doubles up to the cap.
_POLL_FIRST_S = 20e-6
_POLL_MAX_S = 1e-3
_ORDERS = ("C", "F")


def wait_until(done: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``done()`` with short sleeps until it is true; raise on expiry.

    Raises :class:`~gpupart.CommTimeoutError` (naming ``what``) when ``timeout`` seconds pass
    first. ``done`` is always called at least once, even with ``timeout=0``.
    """
    if timeout < 0:
        raise ValueError(f"timeout: expected seconds >= 0, found {timeout!r}")
    deadline = time.monotonic() + timeout
    pause = _POLL_FIRST_S
    while not done():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise CommTimeoutError(what, timeout)
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, _POLL_MAX_S)


def check_order(order: str) -> str:
    """Return ``order`` if it is ``'C'`` or ``'F'``; raise :class:`ValueError` otherwise."""
    if order not in _ORDERS:
        raise ValueError(f"order: expected 'C' or 'F', found {order!r}")
    return order


class Event(abc.ABC):
    """A point in a stream's work: recorded on a stream, then queried or waited on.

    ``done`` never blocks; :meth:`synchronize` always takes a timeout.
    """

    @property
    @abc.abstractmethod
    def handle(self) -> int | None:
        """The raw ``cudaEvent_t`` as an int, or ``None`` for a host event."""

    @property
    @abc.abstractmethod
    def done(self) -> bool:
        """True once all work captured by the last :meth:`record` has finished (non-blocking).

        An event never recorded is done.
        """

    @abc.abstractmethod
    def record(self, stream: Stream) -> Event:
        """Capture the work queued so far on ``stream``; returns ``self``."""

    def synchronize(self, timeout: float) -> None:
        """Block until :attr:`done`, polling; :class:`~gpupart.CommTimeoutError` on expiry."""
        wait_until(lambda: self.done, timeout, f"waiting for {self!r}")


class Stream(abc.ABC):
    """An ordered queue of device work. On the host it is a null stream: work is synchronous.

    Use as a context manager to :meth:`close` it on exit. :meth:`as_current` is the only bridge
    to libraries (CuPy, cuDF) that launch on a thread-local current stream.
    """

    @property
    @abc.abstractmethod
    def handle(self) -> int | None:
        """The ``cudaStream_t`` as an int (never 0: the legacy default stream is 1), else None.

        This is the value a producer exports as the CUDA Array Interface v3 ``stream`` and as
        :attr:`gpupart.Location.stream`; it means something only inside this process.
        """

    @property
    @abc.abstractmethod
    def device_id(self) -> int | None:
        """The CUDA ordinal the stream belongs to, ``None`` on the host."""

    @abc.abstractmethod
    def wait_event(self, event: Event) -> None:
        """Make work queued on this stream from now on wait for ``event`` (host does not block)."""

    @abc.abstractmethod
    def create_event(self) -> Event:
        """Create a new, unrecorded event for this stream's device."""

    @abc.abstractmethod
    def as_current(self) -> Any:
        """Return a context manager making this stream and its device current for CuPy/cuDF."""

    @property
    @abc.abstractmethod
    def done(self) -> bool:
        """True if all work queued on the stream has finished (non-blocking)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the stream; queued work still completes. Closing twice is harmless."""

    def record_event(self) -> Event:
        """Record a new event on this stream and return it."""
        return self.create_event().record(self)

    def synchronize(self, timeout: float | None = None) -> None:
        """Block until the stream's queued work is done.

        With ``timeout`` (seconds), polls and raises :class:`~gpupart.CommTimeoutError` on
        expiry; ``None`` blocks in the driver until done.
        """
        if timeout is None:
            self._synchronize_blocking()
        else:
            self.record_event().synchronize(timeout)

    @abc.abstractmethod
    def _synchronize_blocking(self) -> None:
        """Wait in the driver for all queued work."""

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Backend(abc.ABC):
    """One device's array/dataframe modules and its stream/event factory.

    Cheap to build and picklable (only ``device_id`` is stored); building one touches no
    device. :meth:`use` makes the device current for the calling thread.
    """

    #: ``'cpu'`` or ``'cuda'``.
    name: str
    #: True for a CUDA device.
    is_gpu: bool
    #: Where :meth:`empty` and :meth:`asarray` put data: ``'host'`` or ``'device'``.
    memory_kind: str

    @property
    @abc.abstractmethod
    def device_id(self) -> int | None:
        """The CUDA ordinal (in this process's numbering), or ``None`` on the host."""

    @property
    @abc.abstractmethod
    def xp(self) -> ModuleType:
        """The array module: ``numpy`` or ``cupy``."""

    @property
    @abc.abstractmethod
    def dlpack_device(self) -> str:
        """The spec's DLPack device string: ``'kDLCPU'`` or ``'kDLCUDA:N'``."""

    @abc.abstractmethod
    def dataframe_module(self) -> ModuleType:
        """Return the dataframe module, imported on first call: ``pandas`` or ``cudf``."""

    @abc.abstractmethod
    def empty(self, shape: int | tuple[int, ...], dtype: Any, order: str = "C") -> Any:
        """Allocate an uninitialised array on this device (``order`` ``'C'`` or ``'F'``)."""

    @abc.abstractmethod
    def asarray(self, obj: Any, dtype: Any = None, *, stream: Stream | None = None) -> Any:
        """``obj`` as an array on this device; no copy when it already is one of the dtype.

        A copy between host and device runs on ``stream`` (the default stream if ``None``).
        """

    @abc.abstractmethod
    def create_stream(self) -> Stream:
        """Create a stream (CUDA: non-blocking, i.e. not ordered with the legacy default one)."""

    @abc.abstractmethod
    def create_event(self) -> Event:
        """Create a new, unrecorded event (CUDA: timing disabled)."""

    @abc.abstractmethod
    def default_stream(self) -> Stream:
        """Return the device's default stream (CUDA: the legacy default stream, handle 1)."""

    @abc.abstractmethod
    def current_stream(self) -> Stream:
        """Return the stream CuPy/cuDF would launch on now in this thread (not owned).

        Only for the boundary with user code, e.g. to order after work a caller queued on
        CuPy's current stream; gpupart's own calls always take a stream explicitly.
        """

    @abc.abstractmethod
    def use(self) -> None:
        """Make the device current for the calling thread and create its context if needed."""

    @abc.abstractmethod
    def synchronize(self) -> None:
        """Wait for all work on the device (a device-wide barrier: prefer stream events)."""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Backend):
            return NotImplemented
        return type(self) is type(other) and self.device_id == other.device_id

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.device_id))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.dlpack_device!r})"
