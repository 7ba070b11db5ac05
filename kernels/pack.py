"""Pack kernel: gather many small host tiles into one message buffer in one compiled loop.

An owner answering a request for thousands of small tiles copies them into a few *packs*
(see :mod:`gpupart.tiles.serve`). ``numpy.concatenate`` spends bookkeeping per
piece; this loop is a ``memcpy`` per tile and a ``memset`` per padding run, with the GIL
released. It works on raw addresses, so the caller keeps every tile alive while it runs
and passes only ranges it has checked. Compiled on first use and cached on disk by numba
(the loop lives in ``_pack_host``, imported only then).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

__all__ = ["gather_host"]


def _compiled() -> Callable[..., None]:
    from gpupart.kernels._pack_host import gather  # imports numba: only when first needed

    return gather


def gather_host(
    pack: np.ndarray, start: int, addresses: np.ndarray, sizes: np.ndarray, offsets: np.ndarray
) -> None:
    """Fill ``pack`` (contiguous ``uint8``) from ``start`` on: tile ``i`` at ``offsets[i]``.

    ``addresses[i]`` is the host address of tile ``i``'s ``sizes[i]`` bytes (0: write zeros
    instead); offsets ascend and the ranges do not overlap or leave ``pack``. Bytes between
    tiles and after the last one are zeroed; ``pack[:start]`` is left alone.
    """
    if not (pack.dtype == np.uint8 and pack.ndim == 1 and pack.flags.c_contiguous):
        raise ValueError("pack: expected a contiguous 1-d uint8 array")
    n = len(addresses)
    if not (len(sizes) == len(offsets) == n):
        raise ValueError(
            f"sizes, offsets: expected {n} entries like addresses, found {len(sizes)} and"
            f" {len(offsets)}"
        )
    if n:
        ends = offsets.astype(np.int64) + sizes
        if offsets[0] < start or ends[-1] > len(pack) or (offsets[1:] < ends[:-1]).any():
            raise ValueError(
                f"offsets: expected ascending, non-overlapping ranges inside pack[{start}:"
                f"{len(pack)}]"
            )
    as_u64 = functools.partial(np.ascontiguousarray, dtype=np.uint64)
    _compiled()(
        np.uint64(pack.ctypes.data),
        np.uint64(len(pack)),
        np.uint64(start),
        as_u64(addresses),
        as_u64(sizes),
        as_u64(offsets),
    )
