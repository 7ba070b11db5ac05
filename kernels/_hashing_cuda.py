"""The CUDA kernels of :mod:`gpupart.kernels.hashing` (imports numba.cuda; loaded on first use).

``numba.cuda.jit`` grid-stride loops over the same scalar functions as the host kernels
(:mod:`gpupart.kernels._hashing_spec`), compiled on first launch. They also run in numba's CUDA
simulator (``NUMBA_ENABLE_CUDASIM=1``) with NumPy arrays standing in for device arrays, which is
how CPU CI checks that both paths hash alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gpupart.kernels._hashing_spec import FixedColumn, StringColumn, build
from numba import cuda

__all__ = ["hash_into"]

#: Threads per block, and the most blocks one launch uses (the loops stride over the rest).
_THREADS = 256
_MAX_BLOCKS = 4096

_ops = build(cuda.jit(device=True))
_combine, _fixed_row, _string_row = _ops.combine, _ops.fixed_row, _ops.string_row


@cuda.jit
def _hash_fixed(values, kind, validity, out):  # pragma: no cover (compiled)
    for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        out[i] = _combine(out[i], _fixed_row(values, kind, validity, i))


@cuda.jit
def _hash_strings(offsets, data, validity, out):  # pragma: no cover (compiled)
    for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        out[i] = _combine(out[i], _string_row(offsets, data, validity, i))


def _kernel_arg(a: Any) -> Any:
    """Wrap a device array for numba without syncing its producer stream (we launch on ours)."""
    if hasattr(a, "__cuda_array_interface__"):
        return cuda.as_cuda_array(a, sync=False)
    return a  # a NumPy array in the simulator


def hash_into(columns: Sequence[FixedColumn | StringColumn], out: Any, stream: int) -> None:
    """Fold each column's value hashes into ``out`` (uint64, filled with the seed), in order.

    Launches on the CUDA stream whose handle is ``stream`` (0: the default stream); every
    input must be ready on that stream.
    """
    n = out.shape[0]
    if n == 0:
        return
    launch_stream = cuda.external_stream(stream) if stream else 0
    blocks = min(_MAX_BLOCKS, -(-n // _THREADS))
    d_out = _kernel_arg(out)
    for col in columns:
        if isinstance(col, StringColumn):
            kernel, args = _hash_strings, (col.offsets, col.data, col.validity)
        else:
            kernel, args = _hash_fixed, (col.values, col.kind, col.validity)
        kernel[blocks, _THREADS, launch_stream](*map(_kernel_arg, args), d_out)
