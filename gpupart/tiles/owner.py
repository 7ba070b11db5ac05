"""Registering this rank's arrays as tiles, and releasing them."""

from __future__ import annotations

from typing import Any

import numpy as np

from gpupart import backend as backends
from gpupart.location import Location
from gpupart.tiles.handles import Handle
from gpupart.tiles.store import Tile, TileStore, byte_view

__all__ = ["TileOwner"]


class TileOwner:
    """Puts arrays into a rank's :class:`TileStore` and makes their handles."""

    def __init__(
        self, store: TileStore, backend: Any, *, rank: int, job_id: str, location: Location
    ) -> None:
        self.store = store
        self.backend = backend
        self.rank = rank
        self.job_id = job_id
        self.location = location  # this rank's; each handle's says where its tile lives

    def put(
        self,
        array: Any,
        stream: Any = None,
        *,
        consumer: int | None = None,
        uses: int | None = None,
    ) -> Handle:
        """Register ``array`` (see ``Runtime.put``); ``consumer`` alone may fetch it."""
        if isinstance(array, np.ma.MaskedArray):
            raise TypeError(
                "array: expected a NumPy/CuPy array, found a masked array (its mask would be"
                " lost): put array.filled(...) or the data and the mask as two tiles"
            )
        if not (type(array) is np.ndarray or backends.is_cuda_array(array)):
            hint = (
                " (wrap bytes with numpy.frombuffer)"
                if isinstance(array, (bytes, bytearray, memoryview))
                else ""
            )
            raise TypeError(
                f"array: expected a NumPy or CuPy array, found {type(array).__name__}{hint}"
            )
        info = backends.buffer_info(array)
        dtype = np.dtype(info.dtype)
        if dtype.hasobject or dtype.fields is not None:
            raise TypeError(
                f"array: expected a plain numeric/bool dtype, found {dtype} (object and"
                " structured dtypes cannot be sent)"
            )
        if uses is not None and (isinstance(uses, bool) or not isinstance(uses, int) or uses < 1):
            raise ValueError(f"release_after: expected None or an int >= 1, found {uses!r}")
        if info.order is None:
            array = backends.array_namespace(array).ascontiguousarray(array)
            info = backends.buffer_info(array)
        order = "F" if info.order == "F" and len(info.shape) > 1 else "C"
        event = stream_handle = None
        on_device = backends.is_cuda_array(array)
        if stream is not None or on_device:
            stream = self.backend.current_stream() if stream is None else self._as_stream(stream)
            event = self.backend.create_event()
            event.record(stream)
            stream_handle = stream.handle
        tile = Tile(
            array=array,
            data=byte_view(array),
            nbytes=int(info.nbytes),
            event=event,
            address=0 if on_device else info.ptr,
            consumer=consumer,
            uses_left=uses,
        )
        tile_id = self.store.add(tile)
        location = self.location._replace(
            stream=stream_handle or None, device=info.device, memory=info.memory
        )
        return Handle(
            owner=self.rank,
            tile_id=tile_id,
            dtype=dtype.str,
            shape=tuple(int(n) for n in info.shape),
            nbytes=int(info.nbytes),
            location=location,
            order=order,
            job=self.job_id,
        )

    def _as_stream(self, stream: Any) -> backends.Stream:
        """Accept a backend stream or a raw ``cupy.cuda.Stream`` of this rank's device."""
        if isinstance(stream, backends.Stream):
            return stream
        if type(stream).__module__.startswith("cupy") and self.backend.is_gpu:
            return backends.CudaStream(self.backend.device_id, stream, owned=False)
        raise TypeError(
            "stream: expected a gpupart stream (rt.backend.create_stream()) or a"
            f" cupy.cuda.Stream, found {type(stream).__name__}"
        )

    def free(self, handle: Handle) -> None:
        """Release a tile this rank owns (fetches already under way still complete)."""
        if not isinstance(handle, Handle):
            raise TypeError(f"handle: expected a gpupart.Handle, found {type(handle).__name__}")
        if handle.owner != self.rank:
            raise ValueError(
                f"handle: only the owner frees a tile; it is owned by rank {handle.owner},"
                f" this is rank {self.rank}"
            )
        self.store.remove(handle.tile_id)
