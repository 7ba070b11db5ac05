"""The CUDA backend: CuPy arrays, cuDF frames, CuPy streams and events on one device.

CuPy is imported on first use, never when this module is imported. CuPy itself imports on a
host without a GPU and fails on first use; :func:`probe` tells the two apart.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator
from types import ModuleType
from typing import Any, NamedTuple

from gpupart.backend.base import Backend, Event, Stream, check_order

__all__ = ["CudaBackend", "CudaEvent", "CudaProbe", "CudaStream", "probe"]

#: ``cudaStreamLegacy``: how the legacy default stream (CuPy's ``Stream.null``, pointer 0) is
#: exported, since 0 is not a valid CUDA Array Interface v3 stream.
_STREAM_LEGACY = 1


class CudaProbe(NamedTuple):
    """Whether CUDA is usable here: ``count`` visible devices, or ``reason`` it is not."""

    count: int
    reason: str | None = None


def probe() -> CudaProbe:
    """Count the CUDA devices CuPy can use; never raises.

    Usable means: ``cupy`` imports and ``cupy.cuda.runtime.getDeviceCount() > 0``. This
    initialises the CUDA driver (not a context) the first time.
    """
    try:
        cupy = importlib.import_module("cupy")
    except Exception as exc:  # ImportError, or a broken install failing while importing
        return CudaProbe(0, f"CuPy cannot be imported ({type(exc).__name__}: {exc})")
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:  # CUDARuntimeError (no device/driver) or a missing libcudart
        return CudaProbe(0, f"CUDA is not usable ({type(exc).__name__}: {exc})")
    if count <= 0:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        hint = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        return CudaProbe(0, f"CUDA reports no device{hint}")
    return CudaProbe(count)


def _cupy() -> Any:
    return importlib.import_module("cupy")


class CudaEvent(Event):
    """A CuPy event (timing disabled) of one device; made by :meth:`CudaBackend.create_event`."""

    def __init__(self, device_id: int, event: Any) -> None:
        self._device_id = device_id
        self._event = event

    @property
    def cupy_event(self) -> Any:
        """The underlying ``cupy.cuda.Event``."""
        return self._event

    @property
    def device_id(self) -> int:
        """The CUDA ordinal the event belongs to."""
        return self._device_id

    @property
    def handle(self) -> int:
        """The ``cudaEvent_t`` as an int."""
        return int(self._event.ptr)

    @property
    def done(self) -> bool:
        """``cudaEventQuery``: True once the recorded work finished (never blocks)."""
        return bool(self._event.done)

    def record(self, stream: Stream) -> CudaEvent:
        """Capture the work queued so far on ``stream`` (a stream of the same device)."""
        if not isinstance(stream, CudaStream):
            raise TypeError(
                f"stream: expected a CudaStream to record a CUDA event on, "
                f"found {type(stream).__name__}"
            )
        if stream.device_id != self._device_id:
            raise ValueError(
                f"stream: expected a stream of device {self._device_id}, "
                f"found one of device {stream.device_id}"
            )
        with _cupy().cuda.Device(self._device_id):
            self._event.record(stream.cupy_stream)
        return self

    def __repr__(self) -> str:
        return f"CudaEvent(device={self._device_id}, handle={self.handle:#x})"


class CudaStream(Stream):
    """A CuPy stream of one device; made by :meth:`CudaBackend.create_stream`.

    Also speaks the CUDA stream protocol (``__cuda_stream__``) for cuda.core and CuPy.
    """

    def __init__(self, device_id: int, stream: Any, *, owned: bool) -> None:
        self._device_id = device_id
        self._stream: Any = stream
        self._owned = owned

    @property
    def cupy_stream(self) -> Any:
        """The underlying ``cupy.cuda.Stream``; :class:`ValueError` once closed."""
        if self._stream is None:
            raise ValueError(f"stream of device {self._device_id} was closed")
        return self._stream

    @property
    def handle(self) -> int:
        """The ``cudaStream_t`` (1 for the legacy default stream)."""
        ptr = int(self.cupy_stream.ptr)
        return ptr if ptr != 0 else _STREAM_LEGACY

    @property
    def device_id(self) -> int:
        """The CUDA ordinal the stream belongs to."""
        return self._device_id

    @property
    def done(self) -> bool:
        """``cudaStreamQuery``: True if all queued work finished (never blocks)."""
        return bool(self.cupy_stream.done)

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._stream is None

    def wait_event(self, event: Event) -> None:
        """``cudaStreamWaitEvent``: later work on this stream waits for ``event``.

        A host event is always done, so there is nothing to wait for.
        """
        if isinstance(event, CudaEvent):
            with _cupy().cuda.Device(self._device_id):
                self.cupy_stream.wait_event(event.cupy_event)
        elif not isinstance(event, Event):
            raise TypeError(f"event: expected a gpupart Event, found {type(event).__name__}")

    def create_event(self) -> CudaEvent:
        """Create a new event on this stream's device."""
        return CudaBackend(self._device_id).create_event()

    @contextlib.contextmanager
    def as_current(self) -> Iterator[None]:
        """Make this stream's device and this stream current for CuPy/cuDF calls inside."""
        cupy = _cupy()
        with cupy.cuda.Device(self._device_id), self.cupy_stream:
            yield

    def close(self) -> None:
        """Drop the stream; CUDA destroys it once queued work completes.

        The default stream is never destroyed.
        """
        if self._owned:
            self._stream = None

    def _synchronize_blocking(self) -> None:
        with _cupy().cuda.Device(self._device_id):
            self.cupy_stream.synchronize()

    def __cuda_stream__(self) -> tuple[int, int]:
        return (0, self.handle)

    def __repr__(self) -> str:
        state = "closed" if self._stream is None else f"handle={self.handle:#x}"
        return f"CudaStream(device={self._device_id}, {state})"


class CudaBackend(Backend):
    """CuPy/cuDF on CUDA device ``device_id``.

    ``device_id`` is this process's ordinal (after ``CUDA_VISIBLE_DEVICES``). Building one
    touches no device: :meth:`use` does.
    """

    name = "cuda"
    is_gpu = True
    memory_kind = "device"

    def __init__(self, device_id: int = 0) -> None:
        if isinstance(device_id, bool) or not isinstance(device_id, int):
            raise TypeError(f"device_id: expected an int, found {type(device_id).__name__}")
        if device_id < 0:
            raise ValueError(f"device_id: expected a CUDA ordinal >= 0, found {device_id}")
        self._device_id = device_id

    @property
    def device_id(self) -> int:
        """The CUDA ordinal."""
        return self._device_id

    @property
    def xp(self) -> ModuleType:
        """``cupy`` (imported on first use)."""
        return _cupy()

    @property
    def dlpack_device(self) -> str:
        """``'kDLCUDA:N'``."""
        return f"kDLCUDA:{self._device_id}"

    def dataframe_module(self) -> ModuleType:
        """``cudf`` (imported on first call)."""
        return importlib.import_module("cudf")

    def _device(self) -> Any:
        return _cupy().cuda.Device(self._device_id)

    def empty(self, shape: int | tuple[int, ...], dtype: Any, order: str = "C") -> Any:
        """``cupy.empty`` on this device."""
        check_order(order)
        cupy = _cupy()
        with cupy.cuda.Device(self._device_id):
            return cupy.empty(shape, dtype=dtype, order=order)

    def asarray(self, obj: Any, dtype: Any = None, *, stream: Stream | None = None) -> Any:
        """``obj`` on this device: no copy if it already lives here with that dtype.

        Host data is copied in on ``stream``; a CuPy array of another device is copied across.
        """
        if stream is None:
            stream = self.default_stream()
        elif not isinstance(stream, CudaStream) or stream.device_id != self._device_id:
            raise ValueError(
                f"stream: expected a stream of CUDA device {self._device_id}, found {stream!r}"
            )
        cupy = _cupy()
        with stream.as_current():
            if isinstance(obj, cupy.ndarray) and obj.device.id != self._device_id:
                return cupy.array(obj, dtype=dtype, copy=True)
            return cupy.asarray(obj, dtype=dtype)

    def create_stream(self) -> CudaStream:
        """Create a non-blocking stream on this device."""
        cupy = _cupy()
        with cupy.cuda.Device(self._device_id):
            return CudaStream(self._device_id, cupy.cuda.Stream(non_blocking=True), owned=True)

    def create_event(self) -> CudaEvent:
        """Create an event (timing disabled) on this device."""
        cupy = _cupy()
        with cupy.cuda.Device(self._device_id):
            return CudaEvent(self._device_id, cupy.cuda.Event(disable_timing=True))

    def default_stream(self) -> CudaStream:
        """Return the legacy default stream (handle 1); closing it does nothing."""
        return CudaStream(self._device_id, _cupy().cuda.Stream.null, owned=False)

    def current_stream(self) -> CudaStream:
        """Return CuPy's current stream of this device in this thread (closing it does nothing).

        Only for work a caller queued outside gpupart; gpupart's calls take streams explicitly.
        """
        cupy = _cupy()
        with cupy.cuda.Device(self._device_id):
            return CudaStream(self._device_id, cupy.cuda.get_current_stream(), owned=False)

    def use(self) -> None:
        """Make the device current for this thread and create its primary context now."""
        cupy = _cupy()
        cupy.cuda.Device(self._device_id).use()
        cupy.cuda.runtime.free(0)  # cudaFree(NULL): the documented way to force the context

    def synchronize(self) -> None:
        """``cudaDeviceSynchronize`` on this device."""
        self._device().synchronize()
