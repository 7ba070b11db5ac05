"""Array helpers that work on NumPy, CuPy or any CUDA Array Interface object, importing neither.

Type checks go through ``sys.modules`` (the array-api-compat way): if CuPy is not imported, no
object can be a CuPy array, so it is never imported here. Buffers are described from
``__array_interface__`` / ``__cuda_array_interface__`` (v3) and ``__dlpack_device__``.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

from gpupart.backend.base import Backend
from gpupart.backend.cuda import CudaBackend
from gpupart.backend.host import HostBackend
from gpupart.location import dlpack_device_string

__all__ = [
    "BufferInfo",
    "array_namespace",
    "backend_for_array",
    "buffer_info",
    "dlpack_device_of",
    "is_cuda_array",
]

#: DLPack device type -> memory kind (as in :attr:`gpupart.Location.memory`).
_MEMORY_OF_DLPACK = {1: "host", 2: "device", 3: "pinned", 13: "managed"}
#: ``cudaMemoryType`` from ``cudaPointerGetAttributes`` -> (DLPack device type, memory kind).
_CUDA_MEMORY_TYPES = {1: (3, "pinned"), 2: (2, "device"), 3: (13, "managed")}


@dataclass(frozen=True)
class BufferInfo:
    """Where an array's bytes are and how they are laid out.

    ``strides`` are in bytes (computed for C order when the interface omits them); ``order`` is
    ``'C'`` or ``'F'`` for a contiguous buffer (``'C'`` when both hold, e.g. 1-d, 0-d or
    empty) and ``None`` otherwise. ``device`` is a DLPack device string (``'kDLCUDA'`` with no
    ordinal when a CUDA buffer's device cannot be told); ``memory`` a memory kind as in
    :attr:`gpupart.Location.memory`. ``stream`` is the CUDA Array Interface v3 stream the
    producer exported (``None``: nothing pending, and always ``None`` for host buffers).
    """

    ptr: int
    nbytes: int
    dtype: np.dtype
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    order: str | None
    device: str
    memory: str
    readonly: bool
    stream: int | None = None

    @property
    def contiguous(self) -> bool:
        """True if the elements fill ``nbytes`` bytes from ``ptr`` without gaps."""
        return self.order is not None

    @property
    def is_cuda(self) -> bool:
        """True for CUDA device or managed memory (as :attr:`gpupart.Location.is_cuda`)."""
        return self.memory in ("device", "managed")


def _type_name(x: Any) -> str:
    cls = type(x)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def is_cuda_array(x: Any) -> bool:
    """Tell whether ``x`` exposes ``__cuda_array_interface__`` (CuPy, Numba, PyTorch, ...)."""
    return hasattr(x, "__cuda_array_interface__")


def array_namespace(*arrays: Any) -> ModuleType:
    """Return the array-API namespace of ``arrays`` (``array_api_compat.array_namespace``).

    Raises :class:`TypeError` naming the types when they are not arrays of one known library.
    """
    try:
        return array_api_compat.array_namespace(*arrays)
    except TypeError as exc:
        names = ", ".join(sorted({_type_name(a) for a in arrays})) or "no arrays"
        raise TypeError(
            f"expected arrays of one array library (NumPy, CuPy), found {names}"
        ) from exc


def _contiguity(shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int) -> str | None:
    if 0 in shape:
        return "C"
    c = f = True
    expected = itemsize
    for dim, stride in zip(reversed(shape), reversed(strides), strict=True):
        if dim != 1 and stride != expected:
            c = False
            break
        expected *= dim
    expected = itemsize
    for dim, stride in zip(shape, strides, strict=True):
        if dim != 1 and stride != expected:
            f = False
            break
        expected *= dim
    return "C" if c else "F" if f else None


def _c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    strides = []
    step = itemsize
    for dim in reversed(shape):
        strides.append(step)
        step *= max(dim, 1)
    return tuple(reversed(strides))


def _dtype_of(iface: dict[str, Any]) -> np.dtype:
    descr = iface.get("descr")
    if descr and (len(descr) > 1 or descr[0][0]):
        return np.dtype(descr)  # a structured dtype: the typestr alone loses the fields
    return np.dtype(iface["typestr"])


def _cuda_device(x: Any, ptr: int) -> tuple[str, str]:
    """DLPack device string and memory kind of a CUDA buffer."""
    dev = getattr(x, "__dlpack_device__", None)
    if dev is not None:
        dev_type, dev_id = dev()
        memory = _MEMORY_OF_DLPACK.get(int(dev_type), "device")
        return dlpack_device_string(dev_type, dev_id), memory
    cupy = sys.modules.get("cupy")
    if cupy is not None and ptr:
        try:
            attrs = cupy.cuda.runtime.pointerGetAttributes(ptr)
            dev_type, memory = _CUDA_MEMORY_TYPES[int(attrs.type)]
            return dlpack_device_string(dev_type, attrs.device), memory
        except Exception:  # unregistered or foreign pointer: the device stays unknown
            pass
    return "kDLCUDA", "device"


def _from_interface(x: Any, iface: dict[str, Any], *, cuda: bool) -> BufferInfo:
    name = "__cuda_array_interface__" if cuda else "__array_interface__"
    if iface.get("mask") is not None:
        raise ValueError(f"{_type_name(x)}: masked arrays ({name} 'mask') are not supported")
    data = iface.get("data")
    if not isinstance(data, tuple) or len(data) != 2:
        raise TypeError(f"{_type_name(x)}: {name} 'data' is not a (pointer, readonly) tuple")
    dtype = _dtype_of(iface)
    shape = tuple(int(n) for n in iface["shape"])
    raw_strides = iface.get("strides")
    strides = (
        _c_strides(shape, dtype.itemsize)
        if raw_strides is None
        else tuple(int(s) for s in raw_strides)
    )
    ptr = int(data[0] or 0) + int(iface.get("offset", 0) or 0)
    if cuda:
        device, memory = _cuda_device(x, ptr)
        stream = iface.get("stream") if int(iface.get("version", 0)) >= 3 else None
    else:
        device, memory, stream = "kDLCPU", "host", None
    return BufferInfo(
        ptr=ptr,
        nbytes=dtype.itemsize * math.prod(shape),
        dtype=dtype,
        shape=shape,
        strides=strides,
        order=_contiguity(shape, strides, dtype.itemsize),
        device=device,
        memory=memory,
        readonly=bool(data[1]),
        stream=None if stream is None else int(stream),
    )


def buffer_info(x: Any) -> BufferInfo:
    """Describe ``x``'s buffer: pointer, size, dtype, layout, device, memory kind.

    Reads ``__cuda_array_interface__`` first, then ``__array_interface__``, then the Python
    buffer protocol. Raises :class:`TypeError` naming the type for anything else, and
    :class:`ValueError` for masked CUDA arrays.
    """
    cai = getattr(x, "__cuda_array_interface__", None)
    if cai is not None:
        return _from_interface(x, cai, cuda=True)
    ai = getattr(x, "__array_interface__", None)
    if ai is None:
        try:
            ai = np.asarray(memoryview(x)).__array_interface__
        except TypeError:
            raise TypeError(
                f"expected an array (__array_interface__, __cuda_array_interface__ or a "
                f"buffer), found {_type_name(x)}"
            ) from None
    return _from_interface(x, ai, cuda=False)


def dlpack_device_of(x: Any) -> str:
    """Return the DLPack device string of ``x`` (``'kDLCPU'``, ``'kDLCUDA:0'``, ...).

    Uses ``__dlpack_device__`` when present; else the CUDA Array Interface (device found via
    CuPy if loaded, ``'kDLCUDA'`` if unknown); else host. :class:`TypeError` for non-arrays.
    """
    dev = getattr(x, "__dlpack_device__", None)
    if dev is not None:
        dev_type, dev_id = dev()
        return dlpack_device_string(dev_type, dev_id)
    return buffer_info(x).device


def backend_for_array(x: Any) -> Backend:
    """Return the backend that owns ``x``: a host backend for NumPy, a CUDA one for CuPy.

    Raises :class:`TypeError` naming the type for anything else.
    """
    if isinstance(x, np.ndarray):
        return HostBackend()
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(x, cupy.ndarray):
        return CudaBackend(int(x.device.id))
    raise TypeError(f"expected a NumPy or CuPy array, found {_type_name(x)}")
