"""The host backend: NumPy arrays, pandas frames, and a null stream whose events are done."""

from __future__ import annotations

import contextlib
import importlib
import sys
from types import ModuleType
from typing import Any

import numpy as np

from gpupart.backend.base import Backend, Event, Stream, check_order

__all__ = ["HostBackend", "HostEvent", "HostStream"]


class HostEvent(Event):
    """An event on the host: host work is synchronous, so it is always done."""

    @property
    def handle(self) -> None:
        """Always ``None``: there is no device event."""
        return None

    @property
    def done(self) -> bool:
        """Always True."""
        return True

    def record(self, stream: Stream) -> HostEvent:
        """Nothing to capture on the host; checks ``stream`` and returns ``self``."""
        if not isinstance(stream, Stream):
            raise TypeError(f"stream: expected a gpupart Stream, found {type(stream).__name__}")
        return self

    def __repr__(self) -> str:
        return "HostEvent()"


class HostStream(Stream):
    """The host's null stream: ``handle`` is ``None`` (CUDA Array Interface: nothing pending)."""

    @property
    def handle(self) -> None:
        """Always ``None``."""
        return None

    @property
    def device_id(self) -> None:
        """Always ``None``."""
        return None

    @property
    def done(self) -> bool:
        """Always True."""
        return True

    def wait_event(self, event: Event) -> None:
        """Host work is synchronous: only a host event can be waited on, and it is done."""
        if not isinstance(event, HostEvent):
            raise TypeError(
                f"event: a host stream can wait on a HostEvent, found {type(event).__name__}"
            )

    def create_event(self) -> HostEvent:
        """Create a host event."""
        return HostEvent()

    def as_current(self) -> contextlib.AbstractContextManager[None]:
        """Nothing to make current on the host."""
        return contextlib.nullcontext()

    def close(self) -> None:
        """Nothing to release."""

    def _synchronize_blocking(self) -> None:
        """Nothing is ever pending."""

    def __repr__(self) -> str:
        return "HostStream()"


class HostBackend(Backend):
    """NumPy/pandas in host memory (device string ``'kDLCPU'``)."""

    name = "cpu"
    is_gpu = False
    memory_kind = "host"

    @property
    def device_id(self) -> None:
        """Always ``None``."""
        return None

    @property
    def xp(self) -> ModuleType:
        """``numpy``."""
        return np

    @property
    def dlpack_device(self) -> str:
        """``'kDLCPU'``."""
        return "kDLCPU"

    def dataframe_module(self) -> ModuleType:
        """``pandas``."""
        return importlib.import_module("pandas")

    def empty(self, shape: int | tuple[int, ...], dtype: Any, order: str = "C") -> np.ndarray:
        """``numpy.empty``."""
        return np.empty(shape, dtype=dtype, order=check_order(order))  # type: ignore[call-overload]

    def asarray(self, obj: Any, dtype: Any = None, *, stream: Stream | None = None) -> np.ndarray:
        """``numpy.asarray``; a CuPy array is copied to the host on ``stream``."""
        cupy = sys.modules.get("cupy")
        if cupy is not None and isinstance(obj, cupy.ndarray):
            # Synchronous copy ordered after the work queued on ``stream``.
            with stream.as_current() if stream is not None else contextlib.nullcontext():
                host = cupy.asnumpy(obj)
            return host if dtype is None else host.astype(dtype, copy=False)
        if hasattr(obj, "__cuda_array_interface__"):
            raise TypeError(
                f"cannot copy a {type(obj).__name__} (CUDA memory) to the host: "
                "convert it to a CuPy array first"
            )
        return np.asarray(obj, dtype=dtype)

    def create_stream(self) -> HostStream:
        """Create a host (null) stream."""
        return HostStream()

    def create_event(self) -> HostEvent:
        """Create a host event (always done)."""
        return HostEvent()

    def default_stream(self) -> HostStream:
        """Return the host (null) stream."""
        return HostStream()

    def current_stream(self) -> HostStream:
        """Return the host (null) stream."""
        return HostStream()

    def use(self) -> None:
        """Nothing to make current on the host."""

    def synchronize(self) -> None:
        """Nothing is ever pending on the host."""
