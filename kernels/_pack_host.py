"""The compiled part of :mod:`gpupart.kernels.pack` (imports numba; loaded on first use).

Kept at module level so numba's on-disk cache finds it again in every process (a kernel
built inside a function is a new object each time, and was recompiled and re-cached by
every process).
"""

from __future__ import annotations

import numba
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_BYTE_PTR = ir.IntType(8).as_pointer()


@intrinsic
def _copy_bytes(typingctx, dst, src, n):
    """``memcpy(dst, src, n)`` on raw addresses."""

    def codegen(context, builder, signature, args):
        d, s = (builder.inttoptr(a, _BYTE_PTR) for a in args[:2])
        cgutils.raw_memcpy(builder, d, s, args[2], 1)
        return context.get_dummy_value()

    return types.void(types.uint64, types.uint64, types.uint64), codegen


@intrinsic
def _zero_bytes(typingctx, dst, n):
    """``memset(dst, 0, n)`` on a raw address."""

    def codegen(context, builder, signature, args):
        cgutils.memset(builder, builder.inttoptr(args[0], _BYTE_PTR), args[1], 0)
        return context.get_dummy_value()

    return types.void(types.uint64, types.uint64), codegen


@numba.njit(nogil=True, cache=True)
def gather(dst, length, cursor, addresses, sizes, offsets):  # pragma: no cover (compiled)
    """Copy tile ``i`` to ``dst + offsets[i]``; zero the gaps and failed (address 0) tiles."""
    for i in range(addresses.shape[0]):
        offset = offsets[i]
        if offset > cursor:
            _zero_bytes(dst + cursor, offset - cursor)
        if addresses[i]:
            _copy_bytes(dst + offset, addresses[i], sizes[i])
        else:
            _zero_bytes(dst + offset, sizes[i])
        cursor = offset + sizes[i]
    if length > cursor:
        _zero_bytes(dst + cursor, length - cursor)
