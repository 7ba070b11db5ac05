"""DistArray's stream contract: work runs on the first operand's stream, ordered by events.

On the CPU the backend's streams are null streams, so these tests give arrays recording
streams (host streams with a handle that log what is asked of them) and check what gpupart
asks: the operand stream made current, a wait on every other operand's ``ready`` event
(never a device synchronisation), a fresh ``ready`` after in-place writes, and exports
registered with the array's stream. The GPU test at the end runs the same on CuPy streams.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import gpupart
from gpupart.backend.host import HostStream

_LAUNCH_PREFIXES = ("GPUPART_", "SLURM_", "PMI_", "PMIX_", "OMPI_", "MPI_", "MV2_")
_HANDLES = itertools.count(1000)
#: The recording streams made current, innermost last (what CuPy's current stream would be).
CURRENT: list[Any] = []


class RecordingStream(HostStream):
    """A host stream with a handle of its own that logs waits and current-stream entries."""

    def __init__(self) -> None:
        self.number = next(_HANDLES)
        self.waited: list[Any] = []
        self.entered = 0
        self.synchronized = 0

    @property
    def handle(self) -> int:  # type: ignore[override]
        return self.number

    def wait_event(self, event: Any) -> None:
        super().wait_event(event)
        self.waited.append(event)

    @contextlib.contextmanager
    def as_current(self) -> Iterator[None]:
        self.entered += 1
        CURRENT.append(self)
        try:
            yield
        finally:
            CURRENT.pop()

    def _synchronize_blocking(self) -> None:
        self.synchronized += 1


@pytest.fixture
def rt(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in list(os.environ):
        if name.startswith(_LAUNCH_PREFIXES):
            monkeypatch.delenv(name)
    runtime = gpupart.init(device="cpu")
    monkeypatch.setattr(
        runtime.backend, "current_stream", lambda: CURRENT[-1] if CURRENT else HostStream()
    )
    yield runtime
    runtime.close()


def on_stream(x: gpupart.DistArray) -> RecordingStream:
    """Give ``x`` a recording stream (as if its tiles had been produced on it)."""
    x.stream = RecordingStream()
    x.ready = x.stream.record_event()
    return x.stream


def test_operations_run_on_the_first_operand_stream_after_the_others_events(rt):
    xp = gpupart.array_api
    x, y = gpupart.arange(12.0), gpupart.ones(12)
    sx, sy = on_stream(x), on_stream(y)
    z = x + y
    assert z.stream is sx and sx.waited == [y.ready] and sx.entered == 1
    assert sy.waited == [] and sy.entered == 0
    w = xp.multiply(y, x)  # the namespace too: y's stream waits on x
    assert w.stream is sy and sy.waited == [x.ready]
    np.testing.assert_array_equal(w.to_numpy(), np.arange(12.0))
    total = xp.sum(z)
    assert float(total) == 78.0 and total.stream is sx
    assert sx.synchronized == 0 and sy.synchronized == 0  # events, never a whole-stream wait


def test_arrays_on_one_stream_do_not_wait_on_each_other(rt):
    x, y = gpupart.arange(6.0), gpupart.arange(6.0)
    s = on_stream(x)
    y.stream, y.ready = s, s.record_event()
    _ = x * y
    _ = gpupart.array_api.concat([x, y])  # operands inside a list count too
    assert s.waited == []


def test_in_place_writes_record_a_new_ready_event(rt):
    x, y = gpupart.zeros(8), gpupart.ones(8)
    sx, _ = on_stream(x), on_stream(y)
    before = x.ready
    x += y
    assert x.ready is not before and sx.waited == [y.ready]
    after_add = x.ready
    x[2:4] = 5.0
    assert x.ready is not after_add
    np.testing.assert_array_equal(x.to_numpy(), [1, 1, 5, 5, 1, 1, 1, 1])


def test_methods_and_numpy_calls_run_on_the_array_stream(rt):
    x = gpupart.arange(10.0)
    s = on_stream(x)
    entered = s.entered
    x.to_numpy()
    np.exp(x)
    x.repartition(tiles=(3,))
    assert s.entered >= entered + 3
    assert x.repartition(tiles=(3,)).stream is s


def test_exports_register_tiles_with_the_array_stream(rt):
    x = gpupart.arange(10.0)
    s = on_stream(x)
    parts = x.__partitioned__
    for entry in parts["partitions"].values():
        assert entry["location"][0].stream == s.handle


def test_results_of_creation_take_the_current_stream(rt):
    x = gpupart.zeros(4)
    assert x.stream.handle == rt.backend.current_stream().handle
    assert x.ready.done


# -- on a GPU ----------------------------------------------------------------------------------


@pytest.mark.gpu
def test_cupy_operands_on_different_streams_are_ordered(monkeypatch):
    if gpupart.backend.probe().count == 0:
        pytest.skip("needs a CUDA GPU with CuPy")
    import cupy

    for name in list(os.environ):
        if name.startswith(_LAUNCH_PREFIXES):
            monkeypatch.delenv(name)
    with gpupart.init(device="cuda") as runtime:
        slow = runtime.backend.create_stream()
        with slow.as_current():  # y's tiles are produced by a long chain of kernels on `slow`
            y = gpupart.zeros(1 << 24)
            for _ in range(50):
                y += 1.0
        assert y.stream.handle == slow.handle
        x = gpupart.ones(1 << 24)  # on the default stream
        z = x + y  # runs on x's stream, after y.ready
        assert float(gpupart.array_api.min(z)) == 51.0
        assert isinstance(next(iter(z.local_tiles.values())), cupy.ndarray)
        slow.synchronize(timeout=60)
