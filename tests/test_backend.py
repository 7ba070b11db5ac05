"""gpupart.backend: selection, host and CUDA streams/events, arrays, buffer descriptions.

Tests marked ``gpu`` run CuPy on a real device and skip cleanly without one; the CUDA branches
of the array helpers also run on CPU through :class:`~gpupart.backend.testing.FakeCudaArray`.
"""

from __future__ import annotations

import pickle
import sys
import threading
import types

import numpy as np
import pytest

from gpupart import BootstrapError, CommTimeoutError, backend
from gpupart.backend import (
    BufferInfo,
    CudaBackend,
    CudaProbe,
    Event,
    HostBackend,
    HostEvent,
    HostStream,
    Stream,
)
from gpupart.backend import cuda as cuda_mod
from gpupart.backend.testing import FakeCudaArray


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv("GPUPART_DEVICE", raising=False)


def fake_probe(monkeypatch, count: int, reason: str | None = None) -> None:
    monkeypatch.setattr(cuda_mod, "probe", lambda: CudaProbe(count, reason))


# --------------------------------------------------------------------------- select


def test_select_default_matches_what_is_usable(no_env):
    chosen = backend.select()
    if backend.probe().count:
        assert isinstance(chosen, CudaBackend) and chosen.device_id == 0
    else:
        assert isinstance(chosen, HostBackend)
        assert backend.probe().reason


def test_select_auto_falls_back_to_host(monkeypatch, no_env):
    fake_probe(monkeypatch, 0, "no GPU")
    assert backend.select() == HostBackend()
    assert backend.select("auto") == HostBackend()


def test_select_auto_prefers_cuda(monkeypatch, no_env):
    fake_probe(monkeypatch, 2)
    assert backend.select() == CudaBackend(0)  # building one touches no device
    assert backend.select(device_id=1) == CudaBackend(1)
    assert backend.select("cuda:1") == CudaBackend(1)
    assert backend.select("cpu") == HostBackend()


@pytest.mark.parametrize(
    ("value", "expected"), [("cpu", "cpu"), ("CPU", "cpu"), (" cuda ", "cuda")]
)
def test_env_overrides_auto(monkeypatch, value, expected):
    fake_probe(monkeypatch, 1)
    monkeypatch.setenv("GPUPART_DEVICE", value)
    assert backend.select().name == expected


def test_env_cpu_wins_over_a_usable_gpu(monkeypatch):
    fake_probe(monkeypatch, 4)
    assert backend.select(environ={"GPUPART_DEVICE": "cpu"}, device_id=3) == HostBackend()
    assert backend.select(environ={"GPUPART_DEVICE": "cuda"}, device_id=3) == CudaBackend(3)
    assert backend.select(environ={"GPUPART_DEVICE": ""}) == CudaBackend(0)


@pytest.mark.parametrize("value", ["gpu", "cuda:x", "cpu:0", "cuda:-1", "auto:1"])
def test_bad_env_value_names_the_variable(monkeypatch, value):
    fake_probe(monkeypatch, 1)
    monkeypatch.setenv("GPUPART_DEVICE", value)
    with pytest.raises(BootstrapError, match="GPUPART_DEVICE") as info:
        backend.select()
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("value", ["gpu", "cuda0", "", 0])
def test_bad_device_argument_is_a_value_error(no_env, value):
    with pytest.raises(ValueError, match="device"):
        backend.select(value)  # type: ignore[arg-type]


def test_contradicting_ordinals(monkeypatch, no_env):
    fake_probe(monkeypatch, 2)
    with pytest.raises(ValueError, match="contradicts"):
        backend.select("cuda:1", device_id=0)


def test_cuda_requested_but_unusable(monkeypatch):
    fake_probe(monkeypatch, 0, "CuPy cannot be imported (ModuleNotFoundError)")
    with pytest.raises(BootstrapError, match=r"GPUPART_DEVICE='cuda'.*CuPy cannot be imported"):
        backend.select(environ={"GPUPART_DEVICE": "cuda"})
    with pytest.raises(BootstrapError, match="device='cuda:0'"):
        backend.select("cuda:0")


def test_cuda_ordinal_out_of_range(monkeypatch, no_env):
    fake_probe(monkeypatch, 2)
    with pytest.raises(BootstrapError, match=r"CUDA device 2.*sees 2"):
        backend.select("cuda", device_id=2)
    with pytest.raises(BootstrapError, match="CUDA device 5"):
        backend.select(device_id=5)  # auto, with GPUs present: no silent fall back to host


def test_cuda_requested_on_this_host_without_gpu(no_env):
    if backend.probe().count:
        pytest.skip("this host has a usable GPU")
    with pytest.raises(BootstrapError, match="none is usable"):
        backend.select("cuda")


def test_select_caches_nothing(no_env):
    a, b = backend.select("cpu"), backend.select("cpu")
    assert a == b and a is not b


# --------------------------------------------------------------------------- backend objects


def test_host_backend_attributes():
    b = HostBackend()
    assert (b.name, b.is_gpu, b.device_id, b.memory_kind) == ("cpu", False, None, "host")
    assert b.xp is np and b.dlpack_device == "kDLCPU"
    assert b.dataframe_module().__name__ == "pandas"
    assert pickle.loads(pickle.dumps(b)) == b
    assert repr(b) == "HostBackend('kDLCPU')"
    b.use()
    b.synchronize()


def test_cuda_backend_is_cheap_and_checks_its_argument():
    b = CudaBackend(3)
    assert (b.name, b.is_gpu, b.device_id, b.memory_kind) == ("cuda", True, 3, "device")
    assert b.dlpack_device == "kDLCUDA:3"
    assert pickle.loads(pickle.dumps(b)) == b
    assert b != HostBackend() and b != CudaBackend(2) and hash(b) == hash(CudaBackend(3))
    with pytest.raises(ValueError, match="device_id"):
        CudaBackend(-1)
    with pytest.raises(TypeError, match="device_id"):
        CudaBackend(True)  # type: ignore[arg-type]


@pytest.mark.parametrize("order", ["C", "F"])
def test_host_empty(order):
    a = HostBackend().empty((3, 4), "float32", order=order)
    assert a.shape == (3, 4) and a.dtype == np.float32
    assert a.flags[f"{order}_CONTIGUOUS"]
    assert backend.buffer_info(a).order == order


def test_empty_rejects_bad_order():
    with pytest.raises(ValueError, match="order"):
        HostBackend().empty(4, "f8", order="A")


def test_host_asarray():
    b = HostBackend()
    x = np.arange(6)
    assert b.asarray(x) is x
    y = b.asarray([1, 2], dtype="float64", stream=b.default_stream())
    assert y.dtype == np.float64 and y.tolist() == [1.0, 2.0]
    with pytest.raises(TypeError, match="CUDA memory"):
        b.asarray(FakeCudaArray(x))


# --------------------------------------------------------------------------- host streams/events


def test_host_stream_and_event():
    b = HostBackend()
    with b.create_stream() as s:
        assert isinstance(s, HostStream) and isinstance(s, Stream)
        assert s.handle is None and s.device_id is None and s.done
        e = b.create_event()
        assert isinstance(e, HostEvent) and e.handle is None
        assert e.done and e.record(s) is e and e.done
        e.synchronize(0)
        s.wait_event(e)
        s.synchronize()
        s.synchronize(timeout=0)
        assert s.record_event().done
        with s.as_current():
            pass
    assert b.default_stream().handle is None
    assert b.current_stream().handle is None


def test_host_stream_rejects_foreign_objects():
    s = HostBackend().create_stream()
    with pytest.raises(TypeError, match="HostEvent"):
        s.wait_event(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Stream"):
        HostEvent().record(object())  # type: ignore[arg-type]


class NeverDone(Event):
    """An event that never completes: the timeout path, without a GPU."""

    handle = None

    @property
    def done(self) -> bool:
        return False

    def record(self, stream: Stream) -> Event:
        return self


class DoneLater(NeverDone):
    def __init__(self) -> None:
        self.flag = threading.Event()

    @property
    def done(self) -> bool:
        return self.flag.is_set()


def test_event_wait_times_out():
    with pytest.raises(CommTimeoutError, match=r"waiting for .*0\.05 s") as info:
        NeverDone().synchronize(0.05)
    assert info.value.timeout == 0.05
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is CommTimeoutError and again.timeout == 0.05


def test_event_wait_returns_when_done():
    ev = DoneLater()
    timer = threading.Timer(0.02, ev.flag.set)
    timer.start()
    try:
        ev.synchronize(5)
    finally:
        timer.cancel()
    assert ev.done


def test_wait_until_checks_timeout():
    with pytest.raises(ValueError, match="timeout"):
        backend.wait_until(lambda: True, -1, "x")
    backend.wait_until(lambda: True, 0, "x")  # done is asked before the deadline


# --------------------------------------------------------------------------- buffer_info


def test_buffer_info_c_order():
    a = np.arange(12, dtype=np.float64).reshape(3, 4)
    info = backend.buffer_info(a)
    assert info == BufferInfo(
        ptr=a.ctypes.data,
        nbytes=96,
        dtype=np.dtype("float64"),
        shape=(3, 4),
        strides=(32, 8),
        order="C",
        device="kDLCPU",
        memory="host",
        readonly=False,
    )
    assert info.contiguous and not info.is_cuda


def test_buffer_info_f_order_and_non_contiguous():
    a = np.asfortranarray(np.zeros((3, 4), dtype=np.int32))
    info = backend.buffer_info(a)
    assert (info.order, info.strides, info.nbytes) == ("F", (4, 12), 48)
    sliced = np.zeros((4, 6))[:, ::2]
    info = backend.buffer_info(sliced)
    assert info.order is None and not info.contiguous
    assert info.strides == (48, 16) and info.nbytes == 4 * 3 * 8
    offset = np.zeros(10)[3:]
    assert backend.buffer_info(offset).ptr == offset.ctypes.data


def test_buffer_info_edge_shapes():
    scalar = np.array(3.5)
    info = backend.buffer_info(scalar)
    assert (info.shape, info.strides, info.order, info.nbytes) == ((), (), "C", 8)
    empty = np.empty((0, 5), dtype=np.int16)
    info = backend.buffer_info(empty)
    assert (info.shape, info.nbytes, info.order) == ((0, 5), 0, "C")
    column = np.zeros((5, 1))[:, :1]
    assert backend.buffer_info(column).order == "C"  # size-1 dims do not break contiguity
    readonly = np.zeros(3)
    readonly.flags.writeable = False
    assert backend.buffer_info(readonly).readonly


def test_buffer_info_structured_dtype_and_buffers():
    rec = np.zeros(2, dtype=[("a", "<i4"), ("b", "<f8")])
    assert backend.buffer_info(rec).dtype == rec.dtype
    info = backend.buffer_info(b"abcd")
    assert (info.dtype, info.shape, info.readonly) == (np.dtype("uint8"), (4,), True)
    assert not backend.buffer_info(bytearray(3)).readonly


@pytest.mark.parametrize("thing", [[1, 2], 3.0, object(), "text"])
def test_buffer_info_rejects_non_arrays(thing):
    with pytest.raises(TypeError, match="expected an array"):
        backend.buffer_info(thing)


# ----------------------------------------------------------------- the CUDA branches, faked


def test_fake_cuda_array_takes_the_cuda_branch():
    host = np.arange(6, dtype=np.float32).reshape(2, 3)
    fake = FakeCudaArray(host, device_id=1, stream=0x7F00)
    assert backend.is_cuda_array(fake) and not backend.is_cuda_array(host)
    info = backend.buffer_info(fake)
    assert (info.device, info.memory, info.stream) == ("kDLCUDA:1", "device", 0x7F00)
    assert (info.ptr, info.shape, info.order, info.nbytes) == (host.ctypes.data, (2, 3), "C", 24)
    assert info.is_cuda
    assert backend.dlpack_device_of(fake) == "kDLCUDA:1"


def test_fake_cuda_array_layouts():
    f = FakeCudaArray(np.asfortranarray(np.zeros((3, 2))))
    assert backend.buffer_info(f).order == "F"
    strided = FakeCudaArray(np.zeros((4, 4))[::2])
    assert backend.buffer_info(strided).order is None
    scalar = backend.buffer_info(FakeCudaArray(np.float64(2.0)))
    assert scalar.shape == () and scalar.order == "C"
    assert backend.buffer_info(FakeCudaArray(np.zeros(3), readonly=True)).readonly


def test_fake_cuda_array_without_dlpack_has_unknown_ordinal():
    fake = FakeCudaArray(np.zeros(3), dlpack=False)
    info = backend.buffer_info(fake)
    assert (info.device, info.memory) == ("kDLCUDA", "device")
    assert backend.dlpack_device_of(fake) == "kDLCUDA"


@pytest.mark.parametrize(
    ("device_type", "device", "memory"),
    [(13, "kDLCUDAManaged:0", "managed"), (3, "kDLCUDAHost:0", "pinned")],
)
def test_fake_cuda_memory_kinds(device_type, device, memory):
    info = backend.buffer_info(FakeCudaArray(np.zeros(2), device_type=device_type))
    assert (info.device, info.memory) == (device, memory)


def test_masked_cuda_array_is_refused():
    class Masked(FakeCudaArray):
        @property
        def __cuda_array_interface__(self):
            return dict(super().__cuda_array_interface__, mask=object())

    with pytest.raises(ValueError, match="mask"):
        backend.buffer_info(Masked(np.zeros(2)))


def test_dlpack_device_of_host_and_rejects():
    assert backend.dlpack_device_of(np.zeros(2)) == "kDLCPU"
    assert backend.dlpack_device_of(b"xy") == "kDLCPU"
    with pytest.raises(TypeError, match="object"):
        backend.dlpack_device_of(object())


def test_backend_for_array():
    assert backend.backend_for_array(np.zeros(1)) == HostBackend()
    with pytest.raises(TypeError, match="FakeCudaArray"):
        backend.backend_for_array(FakeCudaArray(np.zeros(1)))
    with pytest.raises(TypeError, match="list"):
        backend.backend_for_array([1.0])


def test_array_namespace():
    xp = backend.array_namespace(np.zeros(2), np.ones(3))
    assert xp.asarray([1, 2]).shape == (2,)
    with pytest.raises(TypeError, match="object"):
        backend.array_namespace(object())


# --------------------------------------------------------------------------- real GPU


@pytest.fixture
def gpu():
    """A CUDA backend on device 0, or a clean skip without a usable GPU."""
    found = backend.probe()
    if found.count == 0:
        pytest.skip(f"no usable CUDA GPU: {found.reason}")
    b = CudaBackend(0)
    b.use()
    yield b
    b.synchronize()


def _spin(b: CudaBackend, stream, seconds: float) -> None:
    """Keep ``stream`` busy for about ``seconds`` with a one-thread clock64 loop."""
    cp = b.xp
    kernel = cp.RawKernel(
        r"""
        extern "C" __global__ void spin(long long cycles) {
            long long start = clock64();
            while (clock64() - start < cycles) { }
        }
        """,
        "spin",
    )
    cycles = int(seconds * 2e9)  # H100 boost is under 2 GHz: at least ``seconds``
    with stream.as_current():
        kernel((1,), (1,), (cp.int64(cycles),))


@pytest.mark.gpu
def test_gpu_select_and_attributes(gpu, no_env):
    assert backend.select() == gpu
    assert backend.select("cuda") == gpu
    assert gpu.xp.__name__ == "cupy" and gpu.dlpack_device == "kDLCUDA:0"


@pytest.mark.gpu
def test_gpu_streams_and_events(gpu):
    with gpu.create_stream() as s:
        assert isinstance(s.handle, int) and s.handle not in (0, 1, 2)
        assert s.device_id == 0 and s.__cuda_stream__() == (0, s.handle)
        ev = gpu.create_event()
        assert isinstance(ev.handle, int) and ev.done  # never recorded: done
        _spin(gpu, s, 0.5)
        ev.record(s)
        assert not ev.done and not s.done
        with pytest.raises(CommTimeoutError):
            ev.synchronize(0.01)
        other = gpu.create_stream()
        other.wait_event(ev)  # does not block the host
        marker = other.record_event()
        assert not marker.done
        marker.synchronize(30)
        assert ev.done and s.done
        other.close()
        with pytest.raises(ValueError, match="closed"):
            other.synchronize()
    assert s.closed


@pytest.mark.gpu
def test_gpu_stream_synchronize_with_timeout(gpu):
    s = gpu.create_stream()
    _spin(gpu, s, 0.3)
    with pytest.raises(CommTimeoutError):
        s.synchronize(timeout=0.01)
    s.synchronize(timeout=30)
    assert s.done
    s.close()


@pytest.mark.gpu
def test_gpu_default_stream(gpu):
    d = gpu.default_stream()
    assert d.handle == 1  # legacy default stream, never 0
    d.synchronize(timeout=30)
    d.close()  # not ours: nothing happens
    assert not d.closed
    assert gpu.current_stream().handle in (1, 2)  # legacy or per-thread default stream
    with gpu.create_stream() as s, s.as_current():
        assert gpu.current_stream().handle == s.handle


@pytest.mark.gpu
@pytest.mark.parametrize("order", ["C", "F"])
def test_gpu_empty_and_buffer_info(gpu, order):
    cp = gpu.xp
    a = gpu.empty((4, 3), "float32", order=order)
    assert isinstance(a, cp.ndarray) and a.device.id == 0
    assert a.flags[f"{order}_CONTIGUOUS"]
    info = backend.buffer_info(a)
    assert (info.ptr, info.nbytes, info.order) == (a.data.ptr, 48, order)
    assert (info.device, info.memory) == ("kDLCUDA:0", "device")
    assert backend.is_cuda_array(a) and backend.dlpack_device_of(a) == "kDLCUDA:0"
    assert backend.backend_for_array(a) == gpu
    assert backend.buffer_info(a[:, ::2]).order is None
    assert backend.array_namespace(a).__name__.endswith("cupy")


@pytest.mark.gpu
def test_gpu_round_trip_on_a_stream(gpu):
    host = np.arange(10, dtype=np.int64)
    with gpu.create_stream() as s:
        dev = gpu.asarray(host, stream=s)
        assert gpu.asarray(dev) is dev
        with s.as_current():
            dev *= 2
        back = HostBackend().asarray(dev, stream=s)
    assert back.tolist() == (host * 2).tolist()


@pytest.mark.gpu
def test_gpu_dataframe_module(gpu):
    pytest.importorskip("cudf")
    assert gpu.dataframe_module().__name__ == "cudf"


# ----------------------------------------------------------------- CudaBackend over a fake CuPy


def make_fake_cupy(count: int = 2) -> types.ModuleType:
    """Just enough of CuPy's API, recording calls, for the CUDA backend's logic on CPU CI.

    Real behaviour is checked by the ``gpu`` tests; this catches wrong calls and wiring.
    """
    cp = types.ModuleType("cupy")
    cp.log = []
    state = types.SimpleNamespace(device=0, stream=None)
    ptrs = iter(range(0x7000, 0x8000, 0x10))

    class Device:
        def __init__(self, device_id: int | None = None) -> None:
            self.id = state.device if device_id is None else device_id

        def __enter__(self):
            self.saved = state.device
            state.device = self.id
            return self

        def __exit__(self, *exc):
            state.device = self.saved

        def use(self):
            state.device = self.id
            cp.log.append(("use", self.id))

        def synchronize(self):
            cp.log.append(("device_sync", self.id))

    class Stream:
        def __init__(self, null: bool = False, non_blocking: bool = False) -> None:
            self.ptr = 0 if null else next(ptrs)
            self.device_id = -1 if null else state.device
            self.non_blocking = non_blocking
            self.busy = False

        @property
        def done(self):
            return not self.busy

        def synchronize(self):
            self.busy = False

        def wait_event(self, event):
            cp.log.append(("wait", self.ptr, event.ptr))

        def __enter__(self):
            assert self.device_id in (-1, state.device), "stream used on another device"
            self.saved = state.stream
            state.stream = self
            return self

        def __exit__(self, *exc):
            state.stream = self.saved

    class Event:
        def __init__(self, disable_timing: bool = False) -> None:
            assert disable_timing
            self.ptr = next(ptrs)
            self.device = state.device
            self.stream = None

        @property
        def done(self):
            return self.stream is None or not self.stream.busy

        def record(self, stream=None):
            assert stream is not None, "gpupart always names the stream"
            assert self.device == state.device
            self.stream = stream

    class ndarray:  # nothing is a fake-CuPy array
        pass

    def empty(shape, dtype=None, order="C"):
        cp.log.append(("empty", state.device, state.stream and state.stream.ptr))
        return np.empty(shape, dtype=dtype, order=order)

    def asarray(obj, dtype=None):
        cp.log.append(("asarray", state.device, state.stream and state.stream.ptr))
        return np.asarray(obj, dtype=dtype)

    Stream.null = Stream(null=True)
    runtime = types.SimpleNamespace(
        getDeviceCount=lambda: count, free=lambda ptr: cp.log.append(("free", ptr))
    )
    cp.cuda = types.SimpleNamespace(
        Device=Device,
        Stream=Stream,
        Event=Event,
        runtime=runtime,
        get_current_stream=lambda: state.stream or Stream.null,
    )
    cp.ndarray, cp.empty, cp.asarray, cp.state = ndarray, empty, asarray, state
    return cp


@pytest.fixture
def fake_cupy(monkeypatch):
    cp = make_fake_cupy()
    monkeypatch.setitem(sys.modules, "cupy", cp)
    return cp


def test_probe_and_select_with_fake_cupy(fake_cupy, no_env):
    assert backend.probe() == CudaProbe(2)
    assert backend.select() == CudaBackend(0)
    assert backend.select("cuda:1").xp is fake_cupy
    fake_cupy.cuda.runtime.getDeviceCount = lambda: 1 / 0  # CuPy imports, CUDA fails
    found = backend.probe()
    assert found.count == 0 and "ZeroDivisionError" in found.reason
    assert backend.select() == HostBackend()


def test_fake_cuda_use_creates_the_context(fake_cupy):
    CudaBackend(1).use()
    assert fake_cupy.log == [("use", 1), ("free", 0)]
    assert fake_cupy.state.device == 1
    CudaBackend(1).synchronize()
    assert fake_cupy.log[-1] == ("device_sync", 1)


def test_fake_cuda_streams_events(fake_cupy):
    b = CudaBackend(1)
    s = b.create_stream()
    assert s.cupy_stream.non_blocking and s.cupy_stream.device_id == 1
    assert s.handle == s.cupy_stream.ptr and s.device_id == 1
    assert fake_cupy.state.device == 0  # creation did not leave device 1 current
    ev = b.create_event()
    assert ev.done and ev.device_id == 1
    s.cupy_stream.busy = True
    assert ev.record(s) is ev and not ev.done and not s.done
    with pytest.raises(CommTimeoutError):
        ev.synchronize(0.01)
    with pytest.raises(CommTimeoutError):
        s.synchronize(timeout=0.01)
    other = b.create_stream()
    other.wait_event(ev)
    other.wait_event(HostEvent())  # always done: nothing to do
    assert fake_cupy.log == [("wait", other.handle, ev.handle)]
    s.synchronize()
    assert ev.done
    ev.synchronize(0)
    with pytest.raises(TypeError, match="Event"):
        other.wait_event(object())  # type: ignore[arg-type]


def test_fake_cuda_event_refuses_wrong_streams(fake_cupy):
    ev = CudaBackend(0).create_event()
    with pytest.raises(ValueError, match="device 0"):
        ev.record(CudaBackend(1).create_stream())
    with pytest.raises(TypeError, match="CudaStream"):
        ev.record(HostStream())


def test_fake_cuda_default_stream_and_close(fake_cupy):
    b = CudaBackend(0)
    d = b.default_stream()
    assert d.handle == 1 and d.__cuda_stream__() == (0, 1)
    d.close()
    assert not d.closed and d.done
    with b.create_stream() as s:
        assert not s.closed
    assert s.closed and "closed" in repr(s)
    with pytest.raises(ValueError, match="closed"):
        s.handle  # noqa: B018


def test_fake_cuda_arrays_go_to_the_right_device_and_stream(fake_cupy):
    b = CudaBackend(1)
    s = b.create_stream()
    b.empty((2, 3), "f4", order="F")
    b.asarray([1, 2], stream=s)
    b.asarray([3])
    assert fake_cupy.log == [("empty", 1, None), ("asarray", 1, s.handle), ("asarray", 1, 0)]
    with s.as_current():
        assert (fake_cupy.state.device, fake_cupy.state.stream) == (1, s.cupy_stream)
        current = b.current_stream()
        assert current.handle == s.handle
        current.close()  # not ours
        assert not current.closed
    assert b.current_stream().handle == 1  # CuPy's default: the legacy stream
    assert (fake_cupy.state.device, fake_cupy.state.stream) == (0, None)
    with pytest.raises(ValueError, match="device 1"):
        b.asarray([1], stream=HostStream())
    with pytest.raises(ValueError, match="device 1"):
        b.asarray([1], stream=CudaBackend(0).create_stream())
    with pytest.raises(ValueError, match="order"):
        b.empty(3, "f4", order="K")
