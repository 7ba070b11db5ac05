"""Columns as flat buffers and back: what an exchange moves for arrays and table columns.

A *fixed-width* column (NumPy or CuPy array of a numeric, bool, datetime64, timedelta64 or
fixed-width bytes/str dtype, any shape) is one buffer: the array itself, made contiguous.
A *variable-length* column (strings or binary: a ``pyarrow`` array, or a NumPy array of
Python ``str``/``bytes`` objects or of NumPy's ``StringDType``) uses the Arrow layout:
offsets (int32 or int64, rebased to start at 0), the data bytes, and a validity bitmap
(LSB first) when it has nulls. :func:`describe` gives a column's spec (plain values only,
so it can travel in collectives) and its buffers; :func:`rebuild` makes the column again
from the spec and buffers: the same array, or a ``pyarrow`` array of the same type.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

__all__ = ["describe", "is_column", "length_of", "rebuild"]

_ARROW_TYPES = ("string", "large_string", "binary", "large_binary")


def is_column(value: Any) -> bool:
    """Whether ``value`` is something :func:`describe` takes."""
    return (
        hasattr(value, "__array_interface__")
        or hasattr(value, "__cuda_array_interface__")
        or _is_arrow_array(value)
    )


def length_of(value: Any) -> int:
    """Return the number of rows (first-axis length) of a column."""
    if _is_arrow_array(value):
        return len(value)
    shape = value.shape
    return int(shape[0]) if shape else 1


def describe(column: Any, where: str) -> tuple[dict[str, Any], list[Any]]:
    """Return ``(spec, buffers)`` of a column; ``where`` names it in errors."""
    if _is_arrow_array(column):
        return _describe_arrow(column, where)
    if isinstance(column, np.ma.MaskedArray):
        raise TypeError(
            f"{where}: expected an array, found a masked array (its mask would be lost): pass"
            " its data and mask as two columns, or .filled(...)"
        )
    if hasattr(column, "__cuda_array_interface__"):
        if type(column).__module__.split(".")[0] != "cupy":
            import cupy  # another CUDA array: CuPy views it without a copy

            column = cupy.asarray(column)
    elif hasattr(column, "__array_interface__"):
        if type(column) is not np.ndarray:
            column = np.asarray(column)  # an array-like of another library: viewed, not copied
    else:
        raise TypeError(
            f"{where}: expected a NumPy/CuPy array or a pyarrow string/binary array, found"
            f" {type(column).__name__}"
        )
    dtype = np.dtype(column.dtype)
    if dtype.kind in "OT":  # Python strings or bytes, or NumPy's StringDType
        import pyarrow as pa

        try:
            converted = pa.array(np.asarray(column).ravel(), from_pandas=True)
            if converted.type == pa.null():  # empty, or only None: strings with nulls
                converted = converted.cast(pa.string())
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise TypeError(
                f"{where}: expected an array of str or bytes objects, found {exc}"
            ) from exc
        if column.ndim != 1:
            raise ValueError(f"{where}: expected a 1-d array of strings, found {column.ndim}-d")
        return _describe_arrow(converted, where)
    if dtype.fields is not None or dtype.kind == "V":
        raise TypeError(f"{where}: expected a plain dtype, found structured dtype {dtype}")
    xp = sys.modules[type(column).__module__.split(".")[0]]
    if not (column.flags.c_contiguous or column.flags.f_contiguous):
        column = xp.ascontiguousarray(column)
    order = "F" if column.ndim > 1 and not column.flags.c_contiguous else "C"
    spec = {"kind": "fixed", "dtype": dtype.str, "shape": tuple(column.shape), "order": order}
    return spec, [column]


def _describe_arrow(column: Any, where: str) -> tuple[dict[str, Any], list[Any]]:
    import pyarrow as pa

    kind = str(column.type)
    if kind == "utf8":
        kind = "string"
    if kind not in _ARROW_TYPES:
        raise TypeError(
            f"{where}: expected a pyarrow array of one of {', '.join(_ARROW_TYPES)} (or a"
            f" NumPy array), found one of {column.type}"
        )
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    large = kind.startswith("large_")
    offsets = np.frombuffer(
        column.buffers()[1],
        dtype=np.int64 if large else np.int32,
        count=len(column) + 1,
        offset=column.offset * (8 if large else 4),
    )
    start, stop = (int(offsets[0]), int(offsets[-1])) if len(offsets) else (0, 0)
    data_buffer = column.buffers()[2]
    data = (
        np.frombuffer(data_buffer, dtype=np.uint8)[start:stop]
        if data_buffer is not None
        else np.zeros(0, dtype=np.uint8)
    )
    buffers = [offsets - start if start else offsets, data]
    nulls = column.null_count
    if nulls:
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        buffers.append(np.packbits(valid, bitorder="little"))
    spec = {"kind": "var", "type": kind, "length": len(column), "nulls": int(nulls)}
    return spec, buffers


def rebuild(spec: dict[str, Any], buffers: list[Any]) -> Any:
    """Make the column described by ``spec`` from its received ``buffers``."""
    if spec["kind"] == "fixed":
        return buffers[0]
    import pyarrow as pa

    offsets, data = buffers[0], buffers[1]
    validity = pa.py_buffer(np.ascontiguousarray(buffers[2])) if spec["nulls"] else None
    return pa.Array.from_buffers(
        pa.type_for_alias(spec["type"]),
        spec["length"],
        [validity, pa.py_buffer(np.ascontiguousarray(offsets)), pa.py_buffer(data)],
        null_count=spec["nulls"],
    )


def _is_arrow_array(value: Any) -> bool:
    """Whether ``value`` is a pyarrow Array or ChunkedArray (by module: no import needed)."""
    module = type(value).__module__
    return module.startswith("pyarrow") and (hasattr(value, "buffers") or hasattr(value, "chunks"))
