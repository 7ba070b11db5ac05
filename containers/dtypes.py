"""Data types, type promotion and constants of the array-API namespace (NumPy's rules)."""

from __future__ import annotations

import builtins
import dataclasses
import math
from typing import Any

import numpy as np

__all__ = [
    "__array_api_version__",
    "__array_namespace_info__",
    "bool",
    "can_cast",
    "complex64",
    "complex128",
    "e",
    "finfo",
    "float32",
    "float64",
    "iinfo",
    "inf",
    "int8",
    "int16",
    "int32",
    "int64",
    "isdtype",
    "nan",
    "newaxis",
    "pi",
    "result_type",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
]

__array_api_version__ = "2024.12"

bool = np.dtype(np.bool_)
int8, int16, int32, int64 = (np.dtype(t) for t in (np.int8, np.int16, np.int32, np.int64))
uint8, uint16, uint32, uint64 = (np.dtype(t) for t in (np.uint8, np.uint16, np.uint32, np.uint64))
float32, float64 = np.dtype(np.float32), np.dtype(np.float64)
complex64, complex128 = np.dtype(np.complex64), np.dtype(np.complex128)

e, pi, inf, nan = math.e, math.pi, math.inf, math.nan
newaxis = None

_KINDS = {
    "bool": "b",
    "signed integer": "i",
    "unsigned integer": "u",
    "integral": "iu",
    "real floating": "f",
    "complex floating": "c",
    "numeric": "iufc",
}


def isdtype(dtype: Any, kind: Any) -> builtins.bool:
    """Return whether ``dtype`` is of ``kind`` (a dtype, a kind name, or a tuple of them)."""
    dtype = np.dtype(dtype)
    if isinstance(kind, tuple):
        return builtins.any(isdtype(dtype, k) for k in kind)
    if isinstance(kind, str):
        if kind not in _KINDS:
            raise ValueError(f"kind: expected a dtype or one of {sorted(_KINDS)}, found {kind!r}")
        return dtype.kind in _KINDS[kind]
    return dtype == np.dtype(kind)


def result_type(*arrays_and_dtypes: Any) -> np.dtype:
    """Return the dtype of an operation on these arrays / dtypes / scalars."""
    args = [
        a.dtype if hasattr(a, "dtype") and not isinstance(a, np.dtype) else a
        for a in arrays_and_dtypes
    ]
    return np.result_type(*args)


def can_cast(from_: Any, to: Any) -> builtins.bool:
    """Return whether ``from_`` casts to ``to`` under the standard's rules."""
    source = from_.dtype if hasattr(from_, "dtype") and not isinstance(from_, np.dtype) else from_
    return builtins.bool(np.can_cast(source, to))


@dataclasses.dataclass(frozen=True)
class FloatInfo:
    """Machine limits of a floating dtype as the standard's ``finfo`` has them (Python floats)."""

    bits: int
    eps: float
    max: float
    min: float
    smallest_normal: float
    dtype: np.dtype


def finfo(type: Any) -> FloatInfo:
    """Return machine limits of a floating dtype (of a complex one: of its real part)."""
    info = np.finfo(
        type.dtype if hasattr(type, "dtype") and not isinstance(type, np.dtype) else type
    )
    return FloatInfo(
        bits=int(info.bits),
        eps=float(info.eps),
        max=float(info.max),
        min=float(info.min),
        smallest_normal=float(info.smallest_normal),
        dtype=np.dtype(info.dtype),
    )


def iinfo(type: Any) -> Any:
    """Return machine limits of an integer dtype."""
    return np.iinfo(
        type.dtype if hasattr(type, "dtype") and not isinstance(type, np.dtype) else type
    )


class NamespaceInfo:
    """``__array_namespace_info__()``: what this namespace supports (2024.12 inspection API)."""

    def capabilities(self) -> dict[str, Any]:
        """Boolean indexing yes (masks over leading axes); data-dependent shapes yes."""
        return {"boolean indexing": True, "data-dependent shapes": True, "max dimensions": 64}

    def default_device(self) -> str:
        """Return the device of this rank's tiles (a DLPack device string)."""
        from gpupart.containers.creation import runtime_or_init

        return runtime_or_init().backend.dlpack_device

    def devices(self) -> list[str]:
        """One device per rank: this rank's."""
        return [self.default_device()]

    def default_dtypes(self, *, device: Any = None) -> dict[str, np.dtype]:
        """Return the dtypes creation functions default to."""
        return {
            "real floating": float64,
            "complex floating": complex128,
            "integral": int64,
            "indexing": int64,
        }

    def dtypes(self, *, device: Any = None, kind: Any = None) -> dict[str, np.dtype]:
        """Every dtype of the namespace, or those of ``kind`` (as :func:`isdtype` takes it)."""
        every = {
            "bool": bool,
            "int8": int8,
            "int16": int16,
            "int32": int32,
            "int64": int64,
            "uint8": uint8,
            "uint16": uint16,
            "uint32": uint32,
            "uint64": uint64,
            "float32": float32,
            "float64": float64,
            "complex64": complex64,
            "complex128": complex128,
        }
        if kind is None:
            return every
        return {name: dt for name, dt in every.items() if isdtype(dt, kind)}


def __array_namespace_info__() -> NamespaceInfo:
    """Return the namespace's inspection object."""
    return NamespaceInfo()
