"""Device-neutral helpers: one code path for host (NumPy/pandas) and GPU (CuPy/cuDF).

:func:`select` returns this process's :class:`Backend` (no module-global state: pass it
around). A backend makes arrays (``empty``, ``asarray``), streams and events; streams are
explicit arguments everywhere. The array helpers (:func:`buffer_info`, :func:`is_cuda_array`,
...) never import CuPy. Importing this package touches no device and imports no CuPy.
"""

from __future__ import annotations

from gpupart.backend.arrays import (
    BufferInfo,
    array_namespace,
    backend_for_array,
    buffer_info,
    dlpack_device_of,
    is_cuda_array,
)
from gpupart.backend.base import Backend, Event, Stream, wait_until
from gpupart.backend.cuda import CudaBackend, CudaEvent, CudaProbe, CudaStream, probe
from gpupart.backend.host import HostBackend, HostEvent, HostStream
from gpupart.backend.selection import ENV_DEVICE, select

__all__ = [
    "ENV_DEVICE",
    "Backend",
    "BufferInfo",
    "CudaBackend",
    "CudaEvent",
    "CudaProbe",
    "CudaStream",
    "Event",
    "HostBackend",
    "HostEvent",
    "HostStream",
    "Stream",
    "array_namespace",
    "backend_for_array",
    "buffer_info",
    "dlpack_device_of",
    "is_cuda_array",
    "probe",
    "select",
    "wait_until",
]
