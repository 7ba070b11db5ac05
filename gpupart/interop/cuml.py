"""A rank's rows for single-GPU cuML estimators: its CuPy tile itself, no copy.

cuML reads any object with ``__cuda_array_interface__`` by reference, so a rank of a job on
GPUs hands its tile straight to a single-GPU estimator (``cuml.KMeans().fit(local_array(X))``):
:func:`local_array` returns the rank's rows of a DistArray as one CuPy array (the tile itself
when the rank holds one, as with ``from_local`` or ``rebalance``), :func:`local_rows` the
rank's rows of ``X`` with the matching rows of ``y`` (fetched where ``y`` is cut
differently). Whether cuML then works in place depends on the estimator: each asks its input
in one memory order (``KMeans``: C, the order of gpupart tiles; ``LinearRegression``: F, and
it copies ``X`` anyway unless ``copy_X=False``, because its solver overwrites the input).

Multi-GPU cuML (``cuml.dask``) takes a dask array of CuPy chunks on a dask-cuda cluster:
:func:`gpupart.interop.dask.to_dask` makes one from a DistArray (one copy into the workers).
No cuML import happens here; the functions check only that the tiles are on the GPU.
"""

from __future__ import annotations

from typing import Any

from gpupart.errors import InteropError

__all__ = ["local_array", "local_rows"]


def local_array(x: Any) -> Any:
    """Return this rank's tiles of ``x`` as one CuPy array (the tile itself when it holds one).

    Local, no communication. Several tiles on a rank are joined (a copy).

    Raises:
        InteropError: the tiles are not in GPU memory (a job on the CPU).
        PartitionedError: the rank's tiles do not form one box of the tile grid.
    """
    from gpupart.interop._local import local_block

    return _on_gpu(local_block(x), "x")


def local_rows(X: Any, y: Any = None) -> tuple[Any, Any]:
    """Return this rank's rows of ``X`` and the rows of ``y`` that line up (collective).

    ``X`` is a 2-d DistArray or DistFrame (or a ``__partitioned__`` producer), cast to
    float64 unless float32; ``y`` (1-d or 2-d, any tiling, or ``None``) has its matching
    rows fetched. With one row block per rank, ``X``'s rows are its tile, not a copy.

    Raises:
        InteropError: the rows are not in GPU memory (a job on the CPU).
    """
    from gpupart.interop._local import local_rows as rows_of

    local_x, targets = rows_of(X, y=y)[:2]
    target = targets["y"]
    return _on_gpu(local_x, "X"), None if target is None else _on_gpu(target, "y")


def _on_gpu(array: Any, name: str) -> Any:
    """Return ``array`` if it lives in GPU memory, else raise naming ``name``."""
    if not hasattr(array, "__cuda_array_interface__"):
        raise InteropError(
            f"cuML: expected {name}'s tiles in GPU memory (a job on GPUs: GPUPART_DEVICE=cuda"
            f" or gpupart.init(device='cuda')), found {type(array).__module__}."
            f"{type(array).__name__}"
        )
    return array
