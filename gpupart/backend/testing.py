"""Test doubles for the GPU paths, usable on CPU-only CI (mpi4py's habit).

:class:`FakeCudaArray` exposes host memory through ``__cuda_array_interface__`` so that code
branching on CUDA arrays (:func:`gpupart.backend.buffer_info`, :func:`is_cuda_array`, ...)
runs without a GPU. Its pointer is a host pointer: never hand it to real CUDA code.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["FakeCudaArray"]


class FakeCudaArray:
    """A NumPy array posing as CUDA memory (CUDA Array Interface v3).

    ``device_type``/``device_id`` are reported through ``__dlpack_device__`` (DLPack codes:
    2 CUDA, 3 CUDA host, 13 CUDA managed) unless ``dlpack=False``, which leaves only the CUDA
    Array Interface (like Numba device arrays). ``stream`` is the exported producer stream.
    """

    def __init__(
        self,
        array: Any,
        *,
        device_id: int = 0,
        device_type: int = 2,
        stream: int | None = None,
        dlpack: bool = True,
        readonly: bool = False,
    ) -> None:
        self.host = np.asarray(array)
        self.device_id = device_id
        self.device_type = device_type
        self.stream = stream
        self.readonly = readonly
        if dlpack:
            self.__dlpack_device__ = self._dlpack_device

    def _dlpack_device(self) -> tuple[int, int]:
        return (self.device_type, self.device_id)

    @property
    def shape(self) -> tuple[int, ...]:
        """The array's shape."""
        return self.host.shape

    @property
    def dtype(self) -> np.dtype:
        """The array's dtype."""
        return self.host.dtype

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        ai = self.host.__array_interface__
        iface: dict[str, Any] = {
            "shape": ai["shape"],
            "typestr": ai["typestr"],
            "data": (ai["data"][0], self.readonly or ai["data"][1]),
            "strides": ai["strides"],
            "version": 3,
            "stream": self.stream,
        }
        if self.host.dtype.names is not None:
            iface["descr"] = ai["descr"]
        return iface

    def __repr__(self) -> str:
        return f"FakeCudaArray(shape={self.shape}, dtype={self.dtype}, device={self.device_id})"
