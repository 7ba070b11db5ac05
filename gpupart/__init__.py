"""gpupart: GPU-first distributed arrays and dataframes speaking ``__partitioned__``.

Importing gpupart is cheap and side-effect free: it imports no CuPy, cuDF, UCX or numba,
touches no CUDA device and opens no socket. Those happen in :func:`gpupart.init`.
"""

from __future__ import annotations

import importlib
from typing import Any

from gpupart._version import __version__
from gpupart.errors import (
    AuthenticationError,
    BootstrapError,
    CollectiveError,
    CommTimeoutError,
    FetchError,
    GpupartError,
    InteropError,
    LaunchError,
    NotInitializedError,
    PartitionedError,
    PartitionedTypeError,
    PeerLostError,
    ProtocolViolationError,
    TileNotFoundError,
    TransportError,
    UCXLibraryError,
)
from gpupart.location import Location

__all__ = [
    "AuthenticationError",
    "BootstrapError",
    "CollectiveError",
    "CommTimeoutError",
    "DistArray",
    "DistFrame",
    "DistSeries",
    "FetchError",
    "GpupartError",
    "Handle",
    "InteropError",
    "LaunchError",
    "Location",
    "NotInitializedError",
    "PartitionedError",
    "PartitionedTypeError",
    "PeerLostError",
    "ProtocolViolationError",
    "Runtime",
    "TileNotFoundError",
    "TransportError",
    "UCXLibraryError",
    "__version__",
    "arange",
    "array_api",
    "asarray",
    "backend",
    "empty",
    "eye",
    "from_local",
    "from_local_frames",
    "from_pandas",
    "from_partitioned",
    "full",
    "init",
    "linspace",
    "ml",
    "ones",
    "protocol",
    "random",
    "read_parquet",
    "runtime",
    "topology",
    "zeros",
]

# Public names resolved on first use, so that `import gpupart` stays light.
_LAZY = {
    "protocol": ("gpupart.protocol", None),
    "ml": ("gpupart.ml", None),
    "topology": ("gpupart.topology", None),
    "backend": ("gpupart.backend", None),
    "init": ("gpupart.core", "init"),
    "runtime": ("gpupart.core", "current"),
    "Runtime": ("gpupart.core", "Runtime"),
    "Handle": ("gpupart.tiles.handles", "Handle"),
    "DistArray": ("gpupart.containers.darray", "DistArray"),
    "DistFrame": ("gpupart.containers.dframe", "DistFrame"),
    "DistSeries": ("gpupart.containers.dframe", "DistSeries"),
    "from_pandas": ("gpupart.containers.frame_creation", "from_pandas"),
    "from_local_frames": ("gpupart.containers.frame_creation", "from_local_frames"),
    "read_parquet": ("gpupart.containers.frame_io", "read_parquet"),
    "asarray": ("gpupart.containers.creation", "asarray"),
    "from_local": ("gpupart.containers.creation", "from_local"),
    "zeros": ("gpupart.containers.creation", "zeros"),
    "ones": ("gpupart.containers.creation", "ones"),
    "full": ("gpupart.containers.creation", "full"),
    "empty": ("gpupart.containers.creation", "empty"),
    "arange": ("gpupart.containers.creation", "arange"),
    "linspace": ("gpupart.containers.creation", "linspace"),
    "eye": ("gpupart.containers.creation", "eye"),
    "from_partitioned": ("gpupart.containers.partitioned", "from_partitioned"),
    "random": ("gpupart.containers.random", None),
    "array_api": ("gpupart.containers.namespace", None),
}


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'gpupart' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    return module if attr is None else getattr(module, attr)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
