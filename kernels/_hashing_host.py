"""The host kernels of :mod:`gpupart.kernels.hashing` (imports numba; loaded on first use).

``numba.njit`` loops over the scalar functions of :mod:`gpupart.kernels._hashing_spec`, with the
GIL released. The loops are module-level functions cached on disk (numba's cache, with the scalar
functions compiled into them), so a process compiles them only when this file or numba changed:
numba does not see edits to ``_hashing_spec``, so delete ``kernels/__pycache__/_hashing_host*``
after changing it (a fresh checkout, as CI's, has no cache).
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np
from gpupart.kernels._hashing_spec import FixedColumn, StringColumn, build

__all__ = ["count_parts", "hash_into", "order_parts"]

_scalar = numba.njit(nogil=True)  # built in a closure: compiled into each caching caller
_jit = numba.njit(nogil=True, cache=True)
_ops = build(_scalar)
_combine, _fixed_row, _string_row = _ops.combine, _ops.fixed_row, _ops.string_row


@_jit
def _hash_fixed(values, kind, validity, out):  # pragma: no cover (compiled)
    for i in range(out.shape[0]):
        out[i] = _combine(out[i], _fixed_row(values, kind, validity, i))


@_jit
def _hash_strings(offsets, data, validity, out):  # pragma: no cover (compiled)
    for i in range(out.shape[0]):
        out[i] = _combine(out[i], _string_row(offsets, data, validity, i))


def hash_into(columns: Sequence[FixedColumn | StringColumn], out: np.ndarray) -> None:
    """Fold each column's value hashes into ``out`` (uint64, filled with the seed), in order."""
    for col in columns:
        if isinstance(col, StringColumn):
            _hash_strings(col.offsets, col.data, col.validity, out)
        else:
            _hash_fixed(col.values, col.kind, col.validity, out)


@_jit
def count_parts(parts, counts):  # pragma: no cover (compiled)
    """Add each row's partition to ``counts``; return the first row outside it, or -1."""
    nparts = counts.shape[0]
    for i in range(parts.shape[0]):
        p = parts[i]
        if p < 0 or p >= nparts:
            return i
        counts[p] += 1
    return -1


@_jit
def order_parts(parts, starts, order):  # pragma: no cover (compiled)
    """Stable counting-sort scatter: row ``i`` goes to ``order[starts[parts[i]]++]``."""
    for i in range(parts.shape[0]):
        p = parts[i]
        order[starts[p]] = i
        starts[p] += 1
