"""The row hash of :mod:`gpupart.kernels.hashing`, written once and compiled for each target.

:func:`build` takes a jit decorator (``numba.njit`` for the host, ``numba.cuda.jit(device=True)``
for CUDA) and returns every scalar function of the hash compiled with it, so the host and the
device kernels share each line of arithmetic and cannot drift apart. Only NumPy is imported here;
numba is imported by the kernel modules that call :func:`build`, on first use.

All arithmetic is on ``uint64`` and wraps modulo 2**64; every constant is a ``uint64`` so numba
never promotes to ``int64`` or ``float64``.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "KIND_BITS",
    "KIND_DATETIME",
    "KIND_FLOAT16",
    "KIND_FLOAT32",
    "KIND_FLOAT64",
    "NULL_HASH",
    "FixedColumn",
    "StringColumn",
    "build",
]

#: How a fixed-width column's bits are read (see :func:`build`'s ``fixed_hash``).
KIND_BITS, KIND_FLOAT16, KIND_FLOAT32, KIND_FLOAT64, KIND_DATETIME = range(5)

#: The hash of a null key (validity False, NaN, NaT): an arbitrary fixed constant.
NULL_HASH = 0x6A09E667F3BCC909

_U = np.uint64
_NULL = _U(NULL_HASH)
_ZERO = _U(0)
# splitmix64's increment and multipliers
_GAMMA, _SM1, _SM2 = _U(0x9E3779B97F4A7C15), _U(0xBF58476D1CE4E5B9), _U(0x94D049BB133111EB)
# xxHash64's primes
_P1, _P2, _P3 = _U(0x9E3779B185EBCA87), _U(0xC2B2AE3D27D4EB4F), _U(0x165667B19E3779F9)
_P4, _P5 = _U(0x85EBCA77C2B2AE63), _U(0x27D4EB2F165667C5)
# IEEE 754: magnitude mask and +inf (anything above it is a NaN), by width
_ABS64, _INF64 = _U(0x7FFFFFFFFFFFFFFF), _U(0x7FF0000000000000)
_ABS32, _INF32 = _U(0x7FFFFFFF), _U(0x7F800000)
_ABS16, _INF16 = _U(0x7FFF), _U(0x7C00)
_NAT = _U(0x8000000000000000)  # NumPy's NaT: int64's minimum
# shift counts (a uint64 shifted by an int64 would be promoted)
_S1, _S7, _S8, _S11, _S12 = _U(1), _U(7), _U(8), _U(11), _U(12)
_S16, _S18, _S23, _S24, _S27 = _U(16), _U(18), _U(23), _U(24), _U(27)
_S29, _S30, _S31, _S32, _S33, _S64 = _U(29), _U(30), _U(31), _U(32), _U(33), _U(64)


class FixedColumn(NamedTuple):
    """A fixed-width key column as the kernels take it.

    ``values`` holds the raw bits as ``uint8``/``16``/``32``/``64``; ``kind`` is a ``KIND_*``;
    ``validity`` is a bool array (False: null), empty when every row is valid.
    """

    values: Any
    kind: int
    validity: Any


class StringColumn(NamedTuple):
    """A variable-length key column in Arrow layout (``validity`` as in :class:`FixedColumn`)."""

    offsets: Any
    data: Any
    validity: Any


def build(jit: Callable[[Callable[..., Any]], Any]) -> types.SimpleNamespace:
    """Return the hash's scalar functions, each compiled with ``jit``.

    ``mix64(x)``: splitmix64's output function, a bijection on 64-bit words.
    ``combine(h, v)``: ``mix64(rotl(h, 27) ^ v)``, folding a column's value hash into the row's.
    ``fixed_hash(bits, kind)``: ``mix64`` of the zero-extended bits after making -0.0 into
    0.0; ``NULL_HASH`` for NaN (any payload or sign) and, for ``KIND_DATETIME``, NaT.
    ``xxh64(data, start, end, seed)``: xxHash64 of ``data[start:end]`` (uint8).
    ``fixed_row``/``string_row``: the value hash of row ``i`` of a column, ``NULL_HASH`` for null.
    """

    @jit
    def rotl(x, r):  # pragma: no cover (compiled)
        return (x << r) | (x >> (_S64 - r))

    @jit
    def mix64(x):  # pragma: no cover (compiled)
        z = x + _GAMMA
        z = (z ^ (z >> _S30)) * _SM1
        z = (z ^ (z >> _S27)) * _SM2
        return z ^ (z >> _S31)

    @jit
    def combine(h, v):  # pragma: no cover (compiled)
        return mix64(rotl(h, _S27) ^ v)

    @jit
    def fixed_hash(bits, kind):  # pragma: no cover (compiled)
        if kind == KIND_FLOAT64:
            mag = bits & _ABS64
            if mag > _INF64:
                return _NULL
            if mag == _ZERO:
                bits = _ZERO
        elif kind == KIND_FLOAT32:
            mag = bits & _ABS32
            if mag > _INF32:
                return _NULL
            if mag == _ZERO:
                bits = _ZERO
        elif kind == KIND_FLOAT16:
            mag = bits & _ABS16
            if mag > _INF16:
                return _NULL
            if mag == _ZERO:
                bits = _ZERO
        elif kind == KIND_DATETIME and bits == _NAT:
            return _NULL
        return mix64(bits)

    @jit
    def read(data, p, size):  # pragma: no cover (compiled)
        """Read ``size`` bytes from ``data[p]`` on as a little-endian word (any alignment)."""
        word = _ZERO
        for k in range(size):
            word |= _U(data[p + k]) << _U(8 * k)
        return word

    @jit
    def xround(acc, lane):  # pragma: no cover (compiled)
        return rotl(acc + lane * _P2, _S31) * _P1

    @jit
    def merge(acc, v):  # pragma: no cover (compiled)
        return (acc ^ xround(_ZERO, v)) * _P1 + _P4

    @jit
    def xxh64(data, start, end, seed):  # pragma: no cover (compiled)
        p = start
        if end - start >= 32:
            v1 = seed + _P1 + _P2
            v2 = seed + _P2
            v3 = seed
            v4 = seed - _P1
            while p + 32 <= end:
                v1 = xround(v1, read(data, p, 8))
                v2 = xround(v2, read(data, p + 8, 8))
                v3 = xround(v3, read(data, p + 16, 8))
                v4 = xround(v4, read(data, p + 24, 8))
                p += 32
            h = rotl(v1, _S1) + rotl(v2, _S7) + rotl(v3, _S12) + rotl(v4, _S18)
            h = merge(merge(merge(merge(h, v1), v2), v3), v4)
        else:
            h = seed + _P5
        h += _U(end - start)
        while p + 8 <= end:
            h = rotl(h ^ xround(_ZERO, read(data, p, 8)), _S27) * _P1 + _P4
            p += 8
        if p + 4 <= end:
            h = rotl(h ^ (read(data, p, 4) * _P1), _S23) * _P2 + _P3
            p += 4
        while p < end:
            h = rotl(h ^ (_U(data[p]) * _P5), _S11) * _P1
            p += 1
        h = (h ^ (h >> _S33)) * _P2
        h = (h ^ (h >> _S29)) * _P3
        return h ^ (h >> _S32)

    @jit
    def fixed_row(values, kind, validity, i):  # pragma: no cover (compiled)
        if validity.shape[0] != 0 and not validity[i]:
            return _NULL
        return fixed_hash(_U(values[i]), kind)

    @jit
    def string_row(offsets, data, validity, i):  # pragma: no cover (compiled)
        if validity.shape[0] != 0 and not validity[i]:
            return _NULL
        return xxh64(data, offsets[i], offsets[i + 1], _ZERO)

    return types.SimpleNamespace(
        mix64=mix64,
        combine=combine,
        fixed_hash=fixed_hash,
        xxh64=xxh64,
        fixed_row=fixed_row,
        string_row=string_row,
    )
