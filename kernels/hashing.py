"""Hash partitioning for the dataframe's shuffles: one row hash, the same on host and device.

A shuffle sends every row to partition ``row_hash(key columns) % nparts``. A frame read into
CuPy/cuDF columns and the same frame read into NumPy/pandas columns must shuffle identically,
so the hash is defined here exactly, and both paths compile the same scalar code
(:mod:`gpupart.kernels._hashing_spec`; host: ``numba.njit``, device: ``numba.cuda.jit``)::

    row_hash    = fold(combine, seed, [value_hash(column[row]) for column in key columns])
    combine(h, v) = mix64(rotl64(h, 27) ^ v)
    mix64(x)    = splitmix64's output for state x:  z = x + 0x9E3779B97F4A7C15
                  z = (z ^ z >> 30) * 0xBF58476D1CE4E5B9;  z = (z ^ z >> 27) * 0x94D049BB133111EB
                  return z ^ z >> 31                     (all uint64, wrapping)
    value_hash  = NULL_HASH (0x6A09E667F3BCC909) for a null (validity False), a NaN of any
                  payload or sign, and NaT (datetime64/timedelta64 and Arrow timestamp/duration);
                  mix64(bits zero-extended to 64) for fixed widths, with -0.0 read as +0.0;
                  xxHash64(bytes, seed=0) for strings and binary.
    partition   = row_hash % nparts

What follows from it: NaN, NaT and null keys all hash alike and so group together (as pandas'
``groupby(dropna=False)`` groups NaNs; a null float read by cuDF is a NaN once in pandas); 0.0 and
-0.0 hash alike; an empty string is not null. Values are hashed by their bits *at their dtype*:
bool, int8..int64 and uint8..uint64 values with the same zero-extended bits hash alike (so
non-negative integers agree across widths, negative ones do not), float32 and float64 never
agree, and datetime64 units differ. The frame code casts join keys to one common dtype first.

Streams: device work runs on ``stream`` (``None``: CuPy's current stream, else anything with
``__cuda_stream__``, a CuPy stream, or a ``cudaStream_t`` as an int). Inputs must be ready on
that stream; results are ordered on it and not synchronised, except where a check must read
data back (``partition_counts``/``partition_order`` read the range of ``parts``). For host
inputs ``stream`` is ignored: host work is synchronous.

Kernels are compiled on first use (a fraction of a second per dtype), never at import; this
module imports only NumPy (pyarrow and pandas inputs are recognised through ``sys.modules``).
"""

from __future__ import annotations

import contextlib
import importlib
import operator
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np
from gpupart.kernels._hashing_spec import (
    KIND_BITS,
    KIND_DATETIME,
    KIND_FLOAT16,
    KIND_FLOAT32,
    KIND_FLOAT64,
    NULL_HASH,
    FixedColumn,
    StringColumn,
)

__all__ = ["NULL_HASH", "hash_columns", "partition_counts", "partition_of", "partition_order"]

_FLOAT_KINDS = {2: KIND_FLOAT16, 4: KIND_FLOAT32, 8: KIND_FLOAT64}
_COLUMN_KINDS = (
    "a numeric, bool, datetime64 or timedelta64 array, (values, validity), a string column as"
    " (offsets, data, validity), a pyarrow Array/ChunkedArray or a pandas Series"
)


def hash_columns(columns: Sequence[Any], *, seed: int = 0, stream: Any = None) -> Any:
    """Return the ``uint64`` row hash of the key ``columns`` (NumPy or CuPy, like the columns).

    Args:
        columns: the key columns in order, all of one length and all on the host or all on a
            CUDA device. Each is a 1-d numeric/bool/datetime64/timedelta64 array; a pair
            ``(values, validity)``; a string column in Arrow layout ``(offsets, data,
            validity)`` (int32/int64 offsets of length n+1, uint8 data); or, on the host, a
            pyarrow ``Array``/``ChunkedArray``, a pandas ``Series``/``Index`` or a NumPy
            str/object array of strings. ``validity`` is a bool array (False: null) or None.
        seed: the fold's start, 0 <= seed < 2**64; another seed gives an unrelated hash.
        stream: device work's stream (see the module docstring); ignored on the host.

    Raises:
        TypeError: a column (named ``columns[i]``) of an unsupported type or dtype.
        ValueError: no columns, columns of different lengths, bad string offsets, a bad seed.
    """
    seed = _check_seed(seed)
    layouts, n, device = _layouts(columns)
    if not device:
        out = np.full(n, seed, dtype=np.uint64)
        _host_kernels().hash_into(layouts, out)
        return out
    cupy, handle = _cupy(), _stream_handle(stream)
    with _device_scope(cupy, _first_array(layouts), handle):
        out = cupy.full(n, seed, dtype=cupy.uint64)
        _cuda_kernels().hash_into(layouts, out, handle)
    return out


def partition_of(hashes: Any, nparts: int, *, stream: Any = None) -> Any:
    """Return each row's partition, ``hashes % nparts``, as ``int32`` (NumPy or CuPy).

    Raises :class:`TypeError` unless ``hashes`` is a 1-d ``uint64`` array and
    :class:`ValueError` unless ``1 <= nparts < 2**31``.
    """
    nparts = _check_nparts(nparts)
    xp, hashes = _namespace(hashes, "hashes")
    if hashes.ndim != 1 or hashes.dtype != np.uint64:
        raise TypeError(
            f"hashes: expected a 1-d uint64 array, found {hashes.ndim}-d {hashes.dtype}"
        )
    with _scope(xp, hashes, stream):
        return (hashes % xp.uint64(nparts)).astype(xp.int32)


def partition_counts(parts: Any, nparts: int, *, stream: Any = None) -> Any:
    """Return how many rows each partition gets: ``int64`` of length ``nparts``.

    Raises :class:`ValueError` if ``nparts < 1`` or a value of ``parts`` is outside
    ``[0, nparts)``; :class:`TypeError` unless ``parts`` is a 1-d integer array.
    """
    nparts = _check_nparts(nparts)
    xp, parts = _parts(parts)
    with _scope(xp, parts, stream):
        if xp is np:
            return _host_counts(parts, nparts)
        return _counts_on(xp, parts, nparts)


def partition_order(parts: Any, nparts: int, *, stream: Any = None) -> tuple[Any, Any]:
    """Group rows by partition: a stable permutation and where each partition starts.

    Returns ``(order, offsets)``, both ``int64``: ``order[offsets[p]:offsets[p + 1]]`` are the
    rows of partition ``p`` in their original order, so ``column[order]`` lays out each
    destination's rows contiguously. The host runs a counting sort; the device CuPy's argsort
    (which is always stable) and ``bincount``. Errors as :func:`partition_counts`.
    """
    nparts = _check_nparts(nparts)
    xp, parts = _parts(parts)
    with _scope(xp, parts, stream):
        if xp is not np:
            return _order_on(xp, parts, nparts)
        counts = _host_counts(parts, nparts)
        offsets = np.zeros(nparts + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        order = np.empty(len(parts), dtype=np.int64)
        _host_kernels().order_parts(parts, offsets[:-1].copy(), order)
        return order, offsets


# -- partitions --------------------------------------------------------------------------------


def _check_nparts(nparts: Any) -> int:
    try:
        if isinstance(nparts, bool):
            raise TypeError  # noqa: TRY301 (the same message as any other non-int)
        value = operator.index(nparts)
    except TypeError:
        raise TypeError(f"nparts: expected an int, found {type(nparts).__name__}") from None
    if not 1 <= value < 2**31:
        raise ValueError(f"nparts: expected an int in [1, 2**31), found {nparts!r}")
    return value


def _parts(parts: Any) -> tuple[ModuleType, Any]:
    xp, parts = _namespace(parts, "parts")
    if parts.ndim != 1 or parts.dtype.kind not in "iu":
        raise TypeError(f"parts: expected a 1-d integer array, found {parts.ndim}-d {parts.dtype}")
    return xp, parts


def _out_of_range(nparts: int, found: str) -> ValueError:
    return ValueError(f"parts: expected values in [0, {nparts}), found {found}")


def _host_counts(parts: np.ndarray, nparts: int) -> np.ndarray:
    counts = np.zeros(nparts, dtype=np.int64)
    bad = _host_kernels().count_parts(parts, counts)
    if bad >= 0:
        raise _out_of_range(nparts, f"parts[{bad}] = {parts[bad]}")
    return counts


def _counts_on(xp: ModuleType, parts: Any, nparts: int) -> Any:
    """Count rows per partition on the device path, on any array namespace (tests pass NumPy)."""
    if len(parts) == 0:
        return xp.zeros(nparts, dtype=xp.int64)
    low, high = int(parts.min()), int(parts.max())  # reads back: the one sync of this path
    if low < 0 or high >= nparts:
        raise _out_of_range(nparts, f"values from {low} to {high}")
    return xp.bincount(parts, minlength=nparts).astype(xp.int64, copy=False)


def _order_on(xp: ModuleType, parts: Any, nparts: int) -> tuple[Any, Any]:
    """Run the device path's :func:`partition_order` on any namespace (CuPy sorts stably)."""
    counts = _counts_on(xp, parts, nparts)
    stable = {"kind": "stable"} if xp is np else {}
    order = xp.argsort(parts, **stable).astype(xp.int64, copy=False)
    offsets = xp.zeros(nparts + 1, dtype=xp.int64)
    offsets[1:] = xp.cumsum(counts)
    return order, offsets


# -- columns -----------------------------------------------------------------------------------


def _check_seed(seed: Any) -> np.uint64:
    try:
        value = operator.index(seed)
    except TypeError:
        raise TypeError(f"seed: expected an int, found {type(seed).__name__}") from None
    if not 0 <= value < 2**64:
        raise ValueError(f"seed: expected an int in [0, 2**64), found {seed!r}")
    return np.uint64(value)


def _on_device(col: Any) -> bool:
    parts = col if isinstance(col, tuple) else (col,)
    return any(hasattr(a, "__cuda_array_interface__") for a in parts)


def _layouts(columns: Any) -> tuple[list[FixedColumn | StringColumn], int, bool]:
    """Return the kernels' layouts of ``columns``, the row count, and whether on a device."""
    if not isinstance(columns, (list, tuple)):
        raise TypeError(
            "columns: expected a list or tuple of key columns, found"
            f" {type(columns).__name__} (wrap a single column in a list)"
        )
    if not columns:
        raise ValueError("columns: expected at least one key column, found none")
    where = [_on_device(col) for col in columns]
    device = where[0]
    if any(w != device for w in where):
        place = {True: "on a CUDA device", False: "on the host"}
        other = where.index(not device)
        raise TypeError(
            f"columns[{other}]: expected all key columns {place[device]} like columns[0],"
            f" found it {place[not device]}"
        )
    xp = _cupy() if device else np
    layouts = [_layout(col, f"columns[{i}]", xp) for i, col in enumerate(columns)]
    lengths = [_length(layout) for layout in layouts]
    for i, length in enumerate(lengths):
        if length != lengths[0]:
            raise ValueError(
                f"columns[{i}]: expected {lengths[0]} rows like columns[0], found {length}"
            )
    return layouts, lengths[0], device


def _length(layout: FixedColumn | StringColumn) -> int:
    if isinstance(layout, StringColumn):
        return len(layout.offsets) - 1
    return len(layout.values)


def _layout(col: Any, where: str, xp: ModuleType) -> FixedColumn | StringColumn:
    if isinstance(col, tuple):
        if len(col) == 3:
            return _strings(*col, where, xp)
        if len(col) == 2:
            return _fixed(xp.asarray(col[0]), col[1], where, xp)
        raise TypeError(f"{where}: expected {_COLUMN_KINDS}, found a tuple of {len(col)}")
    if xp is np:
        pa, pd = sys.modules.get("pyarrow"), sys.modules.get("pandas")
        if pa is not None and isinstance(col, (pa.Array, pa.ChunkedArray)):
            return _from_arrow(col, where)
        if pd is not None and isinstance(col, (pd.Series, pd.Index)):
            return _from_pandas(col, where)
    if not hasattr(col, "__cuda_array_interface__") and not hasattr(col, "__array__"):
        raise TypeError(f"{where}: expected {_COLUMN_KINDS}, found {type(col).__name__}")
    values = xp.asarray(col)
    if xp is np and values.dtype.kind in "USO":
        return _from_arrow(_to_arrow(values, where), where)
    return _fixed(values, None, where, xp)


def _validity(validity: Any, n: int, where: str, xp: ModuleType) -> Any:
    if validity is None:
        return xp.empty(0, dtype=bool)
    validity = xp.asarray(validity)
    if validity.ndim != 1 or validity.dtype != np.bool_ or len(validity) != n:
        raise TypeError(
            f"{where} validity: expected None or a 1-d bool array of {n} entries, found"
            f" {validity.ndim}-d {validity.dtype} of {validity.size}"
        )
    return validity


def _fixed(values: Any, validity: Any, where: str, xp: ModuleType) -> FixedColumn:
    dtype = values.dtype
    if dtype.kind in "biu":
        kind = KIND_BITS
    elif dtype.kind == "f" and dtype.itemsize in _FLOAT_KINDS:
        kind = _FLOAT_KINDS[dtype.itemsize]
    elif dtype.kind in "mM":
        kind = KIND_DATETIME
    else:
        raise TypeError(f"{where}: expected {_COLUMN_KINDS}, found an array of dtype {dtype}")
    if values.ndim != 1:
        raise ValueError(f"{where}: expected a 1-d array, found shape {values.shape}")
    if not dtype.isnative:
        values = values.astype(dtype.newbyteorder("="))
    bits = values.view(np.dtype(f"u{dtype.itemsize}"))
    return FixedColumn(bits, kind, _validity(validity, len(values), where, xp))


def _strings(offsets: Any, data: Any, validity: Any, where: str, xp: ModuleType) -> StringColumn:
    offsets, data = xp.asarray(offsets), xp.asarray(data)
    if offsets.ndim != 1 or offsets.dtype not in (np.int32, np.int64) or len(offsets) < 1:
        raise TypeError(
            f"{where} offsets: expected a 1-d int32 or int64 array of n+1 entries, found"
            f" {offsets.ndim}-d {offsets.dtype} of {offsets.size}"
        )
    if data.ndim != 1 or data.dtype != np.uint8:
        raise TypeError(
            f"{where} data: expected a 1-d uint8 array, found {data.ndim}-d {data.dtype}"
        )
    # The device path trusts its offsets (reading them back would cost a sync), as cuDF does.
    if xp is np and (offsets[0] < 0 or offsets[-1] > len(data) or (np.diff(offsets) < 0).any()):
        raise ValueError(
            f"{where} offsets: expected non-decreasing offsets within the {len(data)} data"
            f" bytes, found offsets from {offsets.min()} to {offsets.max()}"
        )
    return StringColumn(offsets, data, _validity(validity, len(offsets) - 1, where, xp))


def _to_arrow(values: Any, where: str) -> Any:
    """Convert a host array or pandas column to pyarrow; object columns must hold strings."""
    import pyarrow as pa

    try:
        arr = pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as exc:
        raise TypeError(
            f"{where}: expected {_COLUMN_KINDS}, found values pyarrow cannot type: {exc}"
        ) from exc
    object_like = getattr(values, "dtype", None) == np.dtype(object)
    if object_like and not (_is_text(arr.type) or pa.types.is_null(arr.type)):
        raise TypeError(
            f"{where}: expected an object column to hold strings or bytes, found {arr.type}"
        )
    return arr


def _from_pandas(col: Any, where: str) -> FixedColumn | StringColumn:
    dtype = col.dtype
    if isinstance(dtype, np.dtype) and dtype.kind != "O":
        return _fixed(col.to_numpy(), None, where, np)
    return _from_arrow(_to_arrow(col, where), where)


def _is_text(t: Any) -> bool:
    import pyarrow.types as pat

    return pat.is_string(t) or pat.is_large_string(t) or pat.is_binary(t) or pat.is_large_binary(t)


def _from_arrow(arr: Any, where: str) -> FixedColumn | StringColumn:
    import pyarrow as pa
    import pyarrow.types as pat

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pat.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pat.is_string_view(arr.type):
        arr = arr.cast(pa.large_string())
    elif pat.is_binary_view(arr.type):
        arr = arr.cast(pa.large_binary())
    t, n, start = arr.type, len(arr), arr.offset
    validity = arr.is_valid().to_numpy(zero_copy_only=False) if arr.null_count else None
    buffers = arr.buffers()
    if _is_text(t):
        large = pat.is_large_string(t) or pat.is_large_binary(t)
        offsets = np.zeros(1, dtype=np.int64 if large else np.int32)
        if n:
            offsets = np.frombuffer(buffers[1], dtype=offsets.dtype, count=start + n + 1)[start:]
        data = np.empty(0, dtype=np.uint8)
        if buffers[2] is not None:
            data = np.frombuffer(buffers[2], dtype=np.uint8)
        return StringColumn(offsets, data, _validity(validity, n, where, np))
    if pat.is_null(t):
        return FixedColumn(np.zeros(n, np.uint8), KIND_BITS, np.zeros(n, dtype=bool))
    if pat.is_boolean(t):
        return _fixed(arr.fill_null(False).to_numpy(zero_copy_only=False), validity, where, np)
    if pat.is_integer(t) or pat.is_floating(t) or pat.is_date(t) or pat.is_time(t):
        kind = _FLOAT_KINDS[t.bit_width // 8] if pat.is_floating(t) else KIND_BITS
    elif pat.is_timestamp(t) or pat.is_duration(t):
        kind = KIND_DATETIME
    else:
        raise TypeError(f"{where}: expected {_COLUMN_KINDS}, found a pyarrow array of {t}")
    bits = np.zeros(0, dtype=f"u{t.bit_width // 8}")
    if n:
        bits = np.frombuffer(buffers[1], dtype=bits.dtype, count=start + n)[start:]
    return FixedColumn(bits, kind, _validity(validity, n, where, np))


# -- devices and streams -----------------------------------------------------------------------


def _namespace(a: Any, name: str) -> tuple[ModuleType, Any]:
    """``(numpy, a as ndarray)`` for host data, ``(cupy, a as cupy array)`` for device data."""
    if hasattr(a, "__cuda_array_interface__"):
        cupy = _cupy()
        return cupy, cupy.asarray(a)
    if not hasattr(a, "__array__"):
        raise TypeError(f"{name}: expected a NumPy or CuPy array, found {type(a).__name__}")
    return np, np.asarray(a)


def _cupy() -> ModuleType:
    try:
        return importlib.import_module("cupy")
    except ImportError as exc:
        raise TypeError(
            "columns: device arrays need CuPy (install gpupart with the cuda12 or cuda13 extra)"
        ) from exc


def _stream_handle(stream: Any) -> int:
    """Return the ``cudaStream_t`` of ``stream`` as an int; ``None``: CuPy's current stream."""
    if stream is None:
        cupy = sys.modules.get("cupy")
        return int(cupy.cuda.get_current_stream().ptr) if cupy is not None else 0
    protocol = getattr(stream, "__cuda_stream__", None)
    if protocol is not None:
        return int(protocol()[1])
    if getattr(stream, "ptr", None) is not None:
        return int(stream.ptr)
    if isinstance(stream, int) and not isinstance(stream, bool) and stream >= 0:
        return stream
    raise TypeError(
        "stream: expected None, a CUDA stream (with __cuda_stream__ or CuPy's .ptr) or a"
        f" cudaStream_t as an int, found {stream!r}"
    )


def _first_array(layouts: list[FixedColumn | StringColumn]) -> Any:
    first = layouts[0]
    return first.offsets if isinstance(first, StringColumn) else first.values


def _device_scope(cupy: ModuleType, array: Any, handle: int) -> contextlib.ExitStack:
    """Make ``array``'s device and the stream ``handle`` current for CuPy inside."""
    scope = contextlib.ExitStack()
    scope.enter_context(array.device)
    scope.enter_context(cupy.cuda.ExternalStream(handle) if handle else cupy.cuda.Stream.null)
    return scope


def _scope(xp: ModuleType, array: Any, stream: Any) -> Any:
    if xp is np:
        return contextlib.nullcontext()
    return _device_scope(xp, array, _stream_handle(stream))


def _host_kernels() -> ModuleType:
    from gpupart.kernels import _hashing_host  # imports numba: only when first needed

    return _hashing_host


def _cuda_kernels() -> ModuleType:
    from gpupart.kernels import _hashing_cuda  # imports numba.cuda: only when first needed

    return _hashing_cuda
