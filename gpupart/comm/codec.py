"""A typed encoding for collective payloads: nothing that arrives from the network is unpickled.

:func:`encode` turns a Python object built from a fixed set of types into bytes, or refuses it
before anything is sent; :func:`decode` rebuilds it. The decoder only reads values of those
types: it never runs code, imports or looks up classes by name, and it checks every declared
length against the bytes that remain *before* it allocates, so a hostile or truncated message
costs at most a small constant times its own size and ends in
:class:`~gpupart.ProtocolViolationError`.

Supported types (exact types: subclasses such as ``IntEnum``, ``OrderedDict`` or a user's
NamedTuple are refused, so that what comes out is what went in):

``None``, ``bool``, ``int`` (any size), ``float``, ``complex``, ``str``, ``bytes``,
``bytearray``, ``list``, ``tuple``, ``dict`` (insertion order kept), ``set``, ``frozenset``,
``slice``, ``range``, ``numpy.ndarray`` (any shape; C or F order kept, other layouts sent in C
order), NumPy scalars, ``numpy.dtype``, :class:`gpupart.Location` and
:class:`gpupart.Handle`. Arrays, scalars and dtypes must be of a bool, integer, float, complex,
``datetime64``/``timedelta64`` or fixed-width ``S``/``U`` dtype without metadata; object,
structured, void and variable-width string dtypes are refused. A NumPy scalar comes back as
``np.dtype(its dtype).type``: the same class, except for platform aliases such as
``np.longlong``, which comes back as ``np.int64`` (equal dtype and value). Decoded arrays are
writable copies that share no memory with the message.

Wire format, version 1 (all integers little-endian)::

    message   = b"GPC" version:u8 value            (nothing may follow the value)
    value     = tag:u8 body
    varint    = unsigned LEB128, at most 10 bytes   (lengths, counts, array dimensions)
    dtype     = varint n, n ASCII bytes of numpy.dtype.str (e.g. "<f8", "|S5", "<M8[ns]")

    tag   type          body
    0x00  None          -
    0x01  False         -
    0x02  True          -
    0x03  int           i64                        (ints in -2**63 .. 2**63-1)
    0x04  int           varint n, n bytes of two's complement   (any other int)
    0x05  float         f64
    0x06  complex       f64 real, f64 imaginary
    0x07  str           varint n, n bytes of UTF-8 (lone surrogates kept)
    0x08  bytes         varint n, n bytes
    0x09  bytearray     varint n, n bytes
    0x0A  list          varint count, count values
    0x0B  tuple         varint count, count values
    0x0C  set           varint count, count values
    0x0D  frozenset     varint count, count values
    0x0E  dict          varint count, count (key value, value value) pairs
    0x0F  slice         start value, stop value, step value
    0x10  range         start value, stop value, step value (ints)
    0x11  ndarray       dtype, order:u8 (0 C, 1 F), varint ndim, ndim varints (shape),
                        itemsize * prod(shape) bytes in that order
    0x12  NumPy scalar  dtype, itemsize bytes           (not np.str_ / np.bytes_)
    0x13  np.str_       as str
    0x14  np.bytes_     as bytes
    0x15  numpy.dtype   dtype
    0x16  Location      its 10 fields as values, in field order
    0x17  Handle        its 8 constructor fields as values, in field order
    0x18  list of Handles  varint n, then per constructor field in order one column:
                        0x00, n i64s                          (all ints in int64)
                        0x01, list value (distinct values), n u32 codes into it
                        0x02, list value of the n values
    0x80-0xFF  int      the int tag - 0x80 (0 .. 127 in one byte)

A list whose items are all Handles (an allgather of 10,000 is common) is sent as columns,
tag 0x18: several times faster both ways than item by item, and the decoded Handles share the
column's distinct values. Only values that are equal only if their types are too, and cheap to
hash, are tabled: str, and tuples or Locations of at most 64 None, str and int64 items.

Limits the decoder enforces (and the encoder too, so that what it sends is accepted):
containers nest at most :data:`MAX_DEPTH` deep (a Location or Handle counts as a level); at
most 32 keys of one dict or set may repeat the hash of an earlier one (crafted collisions would
make building it quadratic); arrays have at most 64 dimensions; bool data is 0 or 1.
A change to the tags, or to the fields of ``Location`` or ``Handle``, needs a new version.
"""

from __future__ import annotations

import itertools
import math
import operator
import re
import struct
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NoReturn

import numpy as np

from gpupart.errors import ProtocolViolationError
from gpupart.location import Location
from gpupart.tiles.handles import Handle

__all__ = ["MAGIC", "MAX_DEPTH", "VERSION", "decode", "encode"]

MAGIC = b"GPC"
VERSION = 1
#: Deepest nesting of containers that is encoded or decoded.
MAX_DEPTH = 100

_HEADER = MAGIC + bytes([VERSION])
(
    _NONE,
    _FALSE,
    _TRUE,
    _INT64,
    _BIGINT,
    _FLOAT,
    _COMPLEX,
    _STR,
    _BYTES,
    _BYTEARRAY,
    _LIST,
    _TUPLE,
    _SET,
    _FROZENSET,
    _DICT,
    _SLICE,
    _RANGE,
    _NDARRAY,
    _NPSCALAR,
    _NPSTR,
    _NPBYTES,
    _DTYPE,
    _LOCATION,
    _HANDLE,
    _HANDLE_LIST,
) = range(25)
_FIXINT = 0x80
_COLUMN_INT, _COLUMN_TABLE, _COLUMN_VALUES = range(3)

_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")
_C128 = struct.Struct("<dd")
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
_VARINT_MAX_BYTES = 10
_MAX_NDIM = 64  # NumPy's NPY_MAXDIMS
_MAX_DTYPE_STR = 32
#: Most keys of one dict or set that may share a hash (more would make building it quadratic).
_MAX_COLLISIONS = 32

_DTYPE_KINDS = frozenset("biufcmMSU")
_DTYPE_RE = re.compile(
    r"[<>|][biufcmMSU][0-9]{1,10}"
    r"(\[[0-9]{0,10}(Y|M|W|D|h|m|s|ms|us|ns|ps|fs|as|generic)\])?"
)
_LOCATION_FIELDS = Location._fields
_HANDLE_FIELDS = ("owner", "tile_id", "dtype", "shape", "nbytes", "location", "order", "job")
_HANDLE_GETTERS = tuple(operator.attrgetter(name) for name in _HANDLE_FIELDS)
_HANDLE_VALUES = operator.attrgetter(*_HANDLE_FIELDS)
_I8 = np.dtype("<i8")
_U4 = np.dtype("<u4")
# Values of these exact types are equal only if their types are too, so a column whose items
# (or whose tuples' and Locations' items) are all of them may be sent as distinct values.
_TABLE_ITEM_TYPES = frozenset({str, int, type(None)})

_SUPPORTED = (
    "None, bool, int, float, complex, str, bytes, bytearray, list, tuple, dict, set,"
    " frozenset, slice, range, numpy.ndarray, a NumPy scalar, numpy.dtype, gpupart.Location"
    " or gpupart.Handle (exact types: convert subclasses first, e.g. int(x), dict(x))"
)
_DTYPES_SUPPORTED = (
    "bool, integer, float, complex, datetime64, timedelta64 or fixed-width S/U without metadata"
)


# --------------------------------------------------------------------------------- encoding


class _Refused(Exception):
    """An object cannot be encoded; ``steps`` collects the path as the error unwinds."""

    def __init__(self, kind: type[Exception], reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.steps: list[str | int] = []  # innermost first; an int i means "list(...)[i]"

    def error(self) -> Exception:
        path = "obj"
        for step in reversed(self.steps):
            path = f"list({path})[{step}]" if isinstance(step, int) else path + step
        return self.kind(f"{path}: cannot be sent between ranks: {self.reason}")


def encode(obj: Any) -> bytes:
    """Encode ``obj`` (built from the types in the module docstring) as one message.

    The whole object is encoded before anything is returned, so a refusal happens before
    anything is sent. Raises :class:`TypeError` for an unsupported type or dtype and
    :class:`ValueError` for nesting deeper than :data:`MAX_DEPTH` (a cycle, for instance);
    both name the path of the culprit inside ``obj``, e.g. ``obj['rows'][3]``.
    """
    out = bytearray(_HEADER)
    try:
        _encode_value(out, obj, 0)
    except _Refused as refused:
        raise refused.error() from None
    return bytes(out)


def _encode_value(out: bytearray, obj: Any, depth: int) -> None:
    encoder = _ENCODERS.get(type(obj))
    if encoder is None:
        encoder = _fallback_encoder(obj)
    encoder(out, obj, depth)


def _fallback_encoder(obj: Any) -> Callable[[bytearray, Any, int], None]:
    """Find the encoder of an object whose exact type is not in the table (NumPy's types)."""
    cls = type(obj)
    if isinstance(obj, np.generic) and np.dtype(cls).type is cls:  # not a user's subclass
        return _encode_npscalar
    if isinstance(obj, np.dtype):
        return _encode_dtype_object
    raise _Refused(TypeError, f"type {cls.__qualname__} is not one of {_SUPPORTED}")


def _uvarint(out: bytearray, n: int) -> None:
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _encode_none(out: bytearray, obj: None, depth: int) -> None:
    out.append(_NONE)


def _encode_bool(out: bytearray, obj: bool, depth: int) -> None:
    out.append(_TRUE if obj else _FALSE)


def _encode_int(out: bytearray, obj: int, depth: int) -> None:
    if 0 <= obj < 0x80:
        out.append(_FIXINT | obj)
    elif _I64_MIN <= obj <= _I64_MAX:
        out.append(_INT64)
        out += _I64.pack(obj)
    else:
        raw = obj.to_bytes(obj.bit_length() // 8 + 1, "little", signed=True)
        out.append(_BIGINT)
        _uvarint(out, len(raw))
        out += raw


def _encode_float(out: bytearray, obj: float, depth: int) -> None:
    out.append(_FLOAT)
    out += _F64.pack(obj)


def _encode_complex(out: bytearray, obj: complex, depth: int) -> None:
    out.append(_COMPLEX)
    out += _C128.pack(obj.real, obj.imag)


def _encode_text(out: bytearray, tag: int, text: str) -> None:
    raw = text.encode("utf-8", "surrogatepass")
    out.append(tag)
    _uvarint(out, len(raw))
    out += raw


def _encode_str(out: bytearray, obj: str, depth: int) -> None:
    _encode_text(out, _STR, obj)


def _encode_raw(out: bytearray, tag: int, raw: bytes | bytearray) -> None:
    out.append(tag)
    _uvarint(out, len(raw))
    out += raw


def _encode_bytes(out: bytearray, obj: bytes, depth: int) -> None:
    _encode_raw(out, _BYTES, obj)


def _encode_bytearray(out: bytearray, obj: bytearray, depth: int) -> None:
    _encode_raw(out, _BYTEARRAY, obj)


def _collisions(keys: Any) -> int:
    """Count the keys that share a hash with an earlier one (0 unless there are many keys)."""
    if len(keys) <= _MAX_COLLISIONS:
        return 0
    return len(keys) - len(set(map(hash, keys)))


def _check_collisions(keys: Any) -> None:
    if _collisions(keys) > _MAX_COLLISIONS:
        raise _Refused(
            ValueError,
            f"more than {_MAX_COLLISIONS} keys share a hash (the receiver refuses them:"
            " building such a dict or set takes quadratic time)",
        )


def _check_depth(depth: int) -> None:
    if depth >= MAX_DEPTH:
        raise _Refused(ValueError, f"containers nested deeper than {MAX_DEPTH} levels")


def _encode_items(out: bytearray, tag: int, items: Any, depth: int, indexed: bool) -> None:
    """Encode a sized iterable's items; a failure names the item (``[i]`` or ``list(..)[i]``)."""
    _check_depth(depth)
    out.append(tag)
    _uvarint(out, len(items))
    depth += 1
    get = _ENCODERS.get
    i = 0
    try:
        for i, item in enumerate(items):  # noqa: B007 (i names the culprit below)
            encoder = get(type(item)) or _fallback_encoder(item)
            encoder(out, item, depth)
    except _Refused as refused:
        refused.steps.append(f"[{i}]" if indexed else i)
        raise


def _encode_list(out: bytearray, obj: list, depth: int) -> None:
    if obj and type(obj[0]) is Handle and set(map(type, obj)) == {Handle}:
        start = len(out)
        try:
            _encode_handle_list(out, obj, depth)
        except _Refused:
            del out[start:]  # encoded again item by item below, which names the culprit
        else:
            return
    _encode_items(out, _LIST, obj, depth, True)


def _encode_handle_list(out: bytearray, obj: list[Handle], depth: int) -> None:
    """Encode a list of Handles as eight columns: one pass per field instead of per value."""
    _check_depth(depth)
    out.append(_HANDLE_LIST)
    _uvarint(out, len(obj))
    for getter in _HANDLE_GETTERS:
        _encode_column(out, list(map(getter, obj)), depth + 1)


def _encode_column(out: bytearray, column: list, depth: int) -> None:
    """Encode one field of many Handles: as int64s, as distinct values and codes, or as is."""
    types = set(map(type, column))
    if types == {int}:
        try:
            raw = np.array(column, _I8).tobytes()
        except OverflowError:
            pass  # an int beyond int64: sent as values
        else:
            out.append(_COLUMN_INT)
            out += raw
            return
    if len(types) == 1 and (
        types == {str}
        or (
            types <= {tuple, Location}
            and _TABLE_ITEM_TYPES.issuperset(map(type, itertools.chain.from_iterable(column)))
        )
    ):
        table = dict.fromkeys(column)
        if all(map(_table_entry, table)):
            for code, value in enumerate(table):
                table[value] = code
            out.append(_COLUMN_TABLE)
            _encode_items(out, _LIST, list(table), depth, True)
            out += np.array(list(map(table.__getitem__, column)), _U4).tobytes()
            return
    out.append(_COLUMN_VALUES)
    _encode_items(out, _LIST, column, depth, True)


def _table_entry(value: Any) -> bool:
    """Whether ``value`` may be shared by many decoded Handles (hashing it is cheap).

    A str (its hash is cached), or a tuple or Location of at most 64 items, each None, a str
    or an int in int64 (the Handle constructor hashes its shape tuple: once per Handle).
    """
    if type(value) is str:
        return True
    if type(value) not in (tuple, Location) or len(value) > _MAX_NDIM:
        return False
    for item in value:
        if type(item) is int:
            if not _I64_MIN <= item <= _I64_MAX:
                return False
        elif item is not None and type(item) is not str:
            return False
    return True


def _encode_tuple(out: bytearray, obj: tuple, depth: int) -> None:
    _encode_items(out, _TUPLE, obj, depth, True)


def _encode_set(out: bytearray, obj: set, depth: int) -> None:
    _check_collisions(obj)
    _encode_items(out, _SET, obj, depth, False)


def _encode_frozenset(out: bytearray, obj: frozenset, depth: int) -> None:
    _check_collisions(obj)
    _encode_items(out, _FROZENSET, obj, depth, False)


def _encode_dict(out: bytearray, obj: dict, depth: int) -> None:
    _check_depth(depth)
    _check_collisions(obj)
    out.append(_DICT)
    _uvarint(out, len(obj))
    depth += 1
    key: Any = None
    in_key = True
    i = 0
    try:
        for i, (key, value) in enumerate(obj.items()):  # noqa: B007
            in_key = True
            _encode_value(out, key, depth)
            in_key = False
            _encode_value(out, value, depth)
    except _Refused as refused:
        refused.steps.append(i if in_key else f"[{_short_repr(key)}]")
        raise


def _short_repr(obj: Any) -> str:
    text = repr(obj)
    return text if len(text) <= 60 else text[:57] + "..."


def _encode_fields(out: bytearray, values: tuple, names: tuple[str, ...], depth: int) -> None:
    """Encode a record's fields in order; a failure names the field (``.name``)."""
    _check_depth(depth)
    depth += 1
    name = ""
    try:
        for name, value in zip(names, values, strict=True):  # noqa: B007
            _encode_value(out, value, depth)
    except _Refused as refused:
        refused.steps.append(f".{name}")
        raise


def _encode_slice(out: bytearray, obj: slice, depth: int) -> None:
    out.append(_SLICE)
    _encode_fields(out, (obj.start, obj.stop, obj.step), ("start", "stop", "step"), depth)


def _encode_range(out: bytearray, obj: range, depth: int) -> None:
    out.append(_RANGE)
    _encode_fields(out, (obj.start, obj.stop, obj.step), ("start", "stop", "step"), depth)


def _encode_location(out: bytearray, obj: Location, depth: int) -> None:
    out.append(_LOCATION)
    _encode_fields(out, obj, _LOCATION_FIELDS, depth)


def _encode_handle(out: bytearray, obj: Handle, depth: int) -> None:
    out.append(_HANDLE)
    _encode_fields(out, _HANDLE_VALUES(obj), _HANDLE_FIELDS, depth)


def _wire_dtype(dtype: np.dtype) -> bytes:
    """Return the dtype's ``.str`` as sent, after checking that the decoder accepts it."""
    text = dtype.str
    if (
        dtype.kind not in _DTYPE_KINDS
        or dtype.metadata is not None
        or _DTYPE_RE.fullmatch(text) is None
    ):
        raise _Refused(TypeError, f"dtype {dtype!r} is not {_DTYPES_SUPPORTED}")
    return text.encode("ascii")


def _encode_dtype(out: bytearray, dtype: np.dtype) -> None:
    raw = _wire_dtype(dtype)
    _uvarint(out, len(raw))
    out += raw


def _encode_dtype_object(out: bytearray, obj: np.dtype, depth: int) -> None:
    out.append(_DTYPE)
    _encode_dtype(out, obj)


def _encode_npscalar(out: bytearray, obj: np.generic, depth: int) -> None:
    if type(obj) is np.str_:
        _encode_text(out, _NPSTR, obj)  # (str(obj) would drop trailing NULs)
    elif type(obj) is np.bytes_:
        _encode_raw(out, _NPBYTES, bytes(obj))
    else:
        out.append(_NPSCALAR)
        _encode_dtype(out, obj.dtype)
        out += obj.tobytes()


def _encode_ndarray(out: bytearray, obj: np.ndarray, depth: int) -> None:
    # C unless only F-contiguous; a layout that is neither is sent (copied) in C order.
    order = "F" if obj.flags.f_contiguous and not obj.flags.c_contiguous else "C"
    out.append(_NDARRAY)
    _encode_dtype(out, obj.dtype)
    out.append(order == "F")
    _uvarint(out, obj.ndim)
    for n in obj.shape:
        _uvarint(out, n)
    out += obj.tobytes(order=order)


_ENCODERS: Mapping[type, Callable[[bytearray, Any, int], None]] = MappingProxyType(
    {
        type(None): _encode_none,
        bool: _encode_bool,
        int: _encode_int,
        float: _encode_float,
        complex: _encode_complex,
        str: _encode_str,
        bytes: _encode_bytes,
        bytearray: _encode_bytearray,
        list: _encode_list,
        tuple: _encode_tuple,
        set: _encode_set,
        frozenset: _encode_frozenset,
        dict: _encode_dict,
        slice: _encode_slice,
        range: _encode_range,
        np.ndarray: _encode_ndarray,
        Location: _encode_location,
        Handle: _encode_handle,
    }
)


# --------------------------------------------------------------------------------- decoding


def decode(data: bytes | bytearray | memoryview, *, max_bytes: int | None = None) -> Any:
    """Rebuild the object of a message made by :func:`encode` (any bytes-like object).

    ``max_bytes`` refuses longer messages before reading them; every length inside is checked
    against what remains before anything is allocated. The result shares no memory with
    ``data`` (arrays are writable copies). Raises :class:`~gpupart.ProtocolViolationError` for
    anything malformed, and no other error whatever the bytes.
    """
    view = memoryview(data)
    if max_bytes is not None and view.nbytes > max_bytes:
        raise ProtocolViolationError(
            f"collective payload: expected at most {max_bytes} bytes, found {view.nbytes}"
        )
    raw = data if type(data) is bytes else view.tobytes()
    decoder = _Decoder(raw)
    if raw[: len(MAGIC)] != MAGIC:
        decoder.fail(0, f"expected the magic {MAGIC!r}, found {raw[: len(MAGIC)]!r}")
    if len(raw) <= len(MAGIC) or raw[len(MAGIC)] != VERSION:
        found = raw[len(MAGIC)] if len(raw) > len(MAGIC) else "nothing"
        decoder.fail(
            len(MAGIC),
            f"expected version {VERSION}, found {found} (do all ranks run one gpupart?)",
        )
    obj, pos = decoder.value(len(_HEADER), 0)
    if pos != len(raw):
        decoder.fail(pos, f"expected the end of the message, found {len(raw) - pos} more bytes")
    return obj


class _Decoder:
    """Reads values from one message; every method takes and returns a byte position."""

    __slots__ = ("data", "dtypes", "end")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.end = len(data)
        self.dtypes: dict[bytes, np.dtype] = {}  # wire dtype -> parsed, for this message

    def fail(self, pos: int, what: str) -> NoReturn:
        raise ProtocolViolationError(f"collective payload, byte {pos}: {what}")

    def need(self, pos: int, n: int, what: str) -> None:
        """Fail unless ``n`` bytes of ``what`` remain at ``pos``."""
        if n > self.end - pos:
            self.fail(pos, f"{what} needs {n} bytes, only {self.end - pos} remain (truncated?)")

    def varint(self, pos: int, what: str) -> tuple[int, int]:
        data, end = self.data, self.end
        if pos >= end:
            self.fail(pos, f"expected {what}, found the end of the message")
        byte = data[pos]
        if byte < 0x80:
            return byte, pos + 1
        start = pos
        n, shift = 0, 0
        while byte >= 0x80:
            n |= (byte & 0x7F) << shift
            shift += 7
            pos += 1
            if pos - start >= _VARINT_MAX_BYTES:
                self.fail(start, f"{what}: a varint longer than {_VARINT_MAX_BYTES} bytes")
            if pos >= end:
                self.fail(pos, f"{what}: a varint cut short by the end of the message")
            byte = data[pos]
        return n | (byte << shift), pos + 1

    def length(self, pos: int, what: str, unit: int = 1) -> tuple[int, int]:
        """Read a count of ``unit``-byte (at least) items and check that they can fit."""
        n, pos = self.varint(pos, what)
        self.need(pos, n * unit, f"{what} {n}")
        return n, pos

    def value(self, pos: int, depth: int) -> tuple[Any, int]:
        if pos >= self.end:
            self.fail(pos, "expected a value, found the end of the message (truncated?)")
        tag = self.data[pos]
        if tag >= _FIXINT:
            return tag - _FIXINT, pos + 1
        return _DECODERS[tag](self, pos + 1, depth)

    def items(self, pos: int, depth: int, what: str, per_item: int = 1) -> tuple[list, int]:
        """Read a count and that many values (``per_item`` values each)."""
        if depth >= MAX_DEPTH:
            self.fail(pos, f"containers nested deeper than {MAX_DEPTH} levels")
        n, pos = self.length(pos, what, per_item)
        items = []
        append, value = items.append, self.value
        depth += 1
        for _ in range(n * per_item):
            item, pos = value(pos, depth)
            append(item)
        return items, pos

    def fields(self, pos: int, depth: int, count: int) -> tuple[list, int]:
        if depth >= MAX_DEPTH:
            self.fail(pos, f"containers nested deeper than {MAX_DEPTH} levels")
        items = []
        depth += 1
        for _ in range(count):
            item, pos = self.value(pos, depth)
            items.append(item)
        return items, pos

    def column(self, pos: int, depth: int, n: int, name: str) -> tuple[list, int]:
        """Read one field of ``n`` Handles (see :func:`_encode_column`)."""
        self.need(pos, 1, f"Handle column {name}")
        kind = self.data[pos]
        pos += 1
        if kind == _COLUMN_INT:
            return self.buffer(pos, _I8, n).tolist(), pos + 8 * n
        if kind not in (_COLUMN_TABLE, _COLUMN_VALUES):
            self.fail(pos - 1, f"Handle column {name}: expected kind 0, 1 or 2, found {kind}")
        values, pos = self.value(pos, depth)
        if type(values) is not list:
            self.fail(pos, f"Handle column {name}: expected a list, found {type(values).__name__}")
        if kind == _COLUMN_VALUES:
            if len(values) != n:
                self.fail(pos, f"Handle column {name}: expected {n} values, found {len(values)}")
            return values, pos
        if not all(map(_table_entry, values)):
            self.fail(pos, f"Handle column {name}: expected str, or small tuples of str and int")
        codes = self.buffer(pos, _U4, n)
        if n and codes.max() >= len(values):
            self.fail(pos, f"Handle column {name}: a code beyond its {len(values)} values")
        return list(map(values.__getitem__, codes.tolist())), pos + 4 * n

    def raw(self, pos: int, what: str) -> tuple[bytes, int]:
        n, pos = self.length(pos, what)
        return self.data[pos : pos + n], pos + n

    def text(self, pos: int, what: str) -> tuple[str, int]:
        raw, end = self.raw(pos, what)
        try:
            return raw.decode("utf-8", "surrogatepass"), end
        except UnicodeDecodeError as exc:
            self.fail(pos, f"{what}: expected UTF-8, found {exc.reason}")

    def dtype(self, pos: int) -> tuple[np.dtype, int]:
        n, pos = self.varint(pos, "dtype length")
        if n > _MAX_DTYPE_STR:
            self.fail(pos, f"dtype: expected at most {_MAX_DTYPE_STR} bytes, found {n}")
        self.need(pos, n, "dtype")
        raw = self.data[pos : pos + n]
        dtype = self.dtypes.get(raw)
        if dtype is None:
            dtype = self.dtypes[raw] = self.parse_dtype(pos, raw)
        return dtype, pos + n

    def parse_dtype(self, pos: int, raw: bytes) -> np.dtype:
        text = raw.decode("ascii", "replace")
        if _DTYPE_RE.fullmatch(text) is None:
            self.fail(pos, f"dtype: expected {_DTYPES_SUPPORTED}, found {text!r}")
        try:
            dtype = np.dtype(text)
        except (TypeError, ValueError, OverflowError) as exc:
            self.fail(pos, f"dtype: NumPy refuses {text!r} ({exc})")
        if dtype.str != text or dtype.kind not in _DTYPE_KINDS:
            self.fail(pos, f"dtype: expected {_DTYPES_SUPPORTED}, found {text!r}")
        return dtype

    def buffer(self, pos: int, dtype: np.dtype, count: int) -> np.ndarray:
        """Return ``count`` items of ``dtype`` at ``pos`` (a read-only view; bools checked)."""
        if dtype.itemsize == 0:
            self.fail(pos, f"dtype {dtype.str!r} has no bytes per item")
        self.need(pos, count * dtype.itemsize, f"{count} items of {dtype.str}")
        flat = np.frombuffer(self.data, dtype, count, pos)
        if dtype.kind == "b" and count and flat.view(np.uint8).max() > 1:
            self.fail(pos, "bool data: expected bytes 0 or 1, found another value")
        return flat


def _decode_unknown(d: _Decoder, pos: int, depth: int) -> NoReturn:
    d.fail(pos - 1, f"unknown type code 0x{d.data[pos - 1]:02x}")


def _decode_none(d: _Decoder, pos: int, depth: int) -> tuple[None, int]:
    return None, pos


def _decode_false(d: _Decoder, pos: int, depth: int) -> tuple[bool, int]:
    return False, pos


def _decode_true(d: _Decoder, pos: int, depth: int) -> tuple[bool, int]:
    return True, pos


def _decode_int64(d: _Decoder, pos: int, depth: int) -> tuple[int, int]:
    d.need(pos, 8, "an int")
    return _I64.unpack_from(d.data, pos)[0], pos + 8


def _decode_bigint(d: _Decoder, pos: int, depth: int) -> tuple[int, int]:
    raw, pos = d.raw(pos, "an int of length")
    return int.from_bytes(raw, "little", signed=True), pos


def _decode_float(d: _Decoder, pos: int, depth: int) -> tuple[float, int]:
    d.need(pos, 8, "a float")
    return _F64.unpack_from(d.data, pos)[0], pos + 8


def _decode_complex(d: _Decoder, pos: int, depth: int) -> tuple[complex, int]:
    d.need(pos, 16, "a complex")
    real, imag = _C128.unpack_from(d.data, pos)
    return complex(real, imag), pos + 16


def _decode_str(d: _Decoder, pos: int, depth: int) -> tuple[str, int]:
    return d.text(pos, "a str of length")


def _decode_bytes(d: _Decoder, pos: int, depth: int) -> tuple[bytes, int]:
    return d.raw(pos, "bytes of length")


def _decode_bytearray(d: _Decoder, pos: int, depth: int) -> tuple[bytearray, int]:
    raw, pos = d.raw(pos, "a bytearray of length")
    return bytearray(raw), pos


def _decode_list(d: _Decoder, pos: int, depth: int) -> tuple[list, int]:
    return d.items(pos, depth, "a list of length")


def _decode_tuple(d: _Decoder, pos: int, depth: int) -> tuple[tuple, int]:
    items, pos = d.items(pos, depth, "a tuple of length")
    return tuple(items), pos


def _hashed(d: _Decoder, pos: int, build: Callable[[Any], Any], keys: list, items: Any) -> Any:
    """Build a dict or set from ``items`` after checking that its ``keys`` hash well."""
    try:
        collisions = _collisions(keys)
        if collisions <= _MAX_COLLISIONS:
            return build(items)
    except TypeError as exc:  # an unhashable key (a list, an array)
        d.fail(pos, f"{build.__name__}: expected hashable keys, found {exc}")
    d.fail(
        pos,
        f"{build.__name__}: expected at most {_MAX_COLLISIONS} keys sharing a hash,"
        f" found {collisions}",
    )


def _decode_set(d: _Decoder, pos: int, depth: int) -> tuple[set, int]:
    items, end = d.items(pos, depth, "a set of length")
    return _hashed(d, pos, set, items, items), end


def _decode_frozenset(d: _Decoder, pos: int, depth: int) -> tuple[frozenset, int]:
    items, end = d.items(pos, depth, "a frozenset of length")
    return _hashed(d, pos, frozenset, items, items), end


def _decode_dict(d: _Decoder, pos: int, depth: int) -> tuple[dict, int]:
    items, end = d.items(pos, depth, "a dict of length", 2)
    keys = items[::2]
    return _hashed(d, pos, dict, keys, zip(keys, items[1::2], strict=True)), end


def _decode_slice(d: _Decoder, pos: int, depth: int) -> tuple[slice, int]:
    (start, stop, step), pos = d.fields(pos, depth, 3)
    return slice(start, stop, step), pos


def _decode_range(d: _Decoder, pos: int, depth: int) -> tuple[range, int]:
    values, end = d.fields(pos, depth, 3)
    if any(type(v) is not int for v in values) or values[2] == 0:
        d.fail(pos, f"range: expected ints and a step other than 0, found {_short_repr(values)}")
    return range(*values), end


def _decode_ndarray(d: _Decoder, pos: int, depth: int) -> tuple[np.ndarray, int]:
    dtype, pos = d.dtype(pos)
    d.need(pos, 1, "array order")
    order = d.data[pos]
    if order > 1:
        d.fail(pos, f"array order: expected 0 (C) or 1 (F), found {order}")
    ndim, pos = d.varint(pos + 1, "array ndim")
    if ndim > _MAX_NDIM:
        d.fail(pos, f"array ndim: expected at most {_MAX_NDIM}, found {ndim}")
    shape = []
    for _ in range(ndim):
        n, pos = d.varint(pos, "array dimension")
        shape.append(n)
    count = math.prod(shape)
    layout = "F" if order else "C"
    try:
        if count == 0:
            return np.empty(shape, dtype, order=layout), pos
        flat = d.buffer(pos, dtype, count)
        array = flat.reshape(shape, order=layout).copy(order=layout)
    except ValueError as exc:  # a shape NumPy cannot index ("array is too big")
        d.fail(pos, f"array of shape {tuple(shape)} and dtype {dtype.str}: {exc}")
    return array, pos + count * dtype.itemsize


def _decode_npscalar(d: _Decoder, pos: int, depth: int) -> tuple[np.generic, int]:
    dtype, pos = d.dtype(pos)
    return d.buffer(pos, dtype, 1)[0], pos + dtype.itemsize


def _decode_npstr(d: _Decoder, pos: int, depth: int) -> tuple[np.str_, int]:
    text, pos = d.text(pos, "a numpy.str_ of length")
    return np.str_(text), pos


def _decode_npbytes(d: _Decoder, pos: int, depth: int) -> tuple[np.bytes_, int]:
    raw, pos = d.raw(pos, "a numpy.bytes_ of length")
    return np.bytes_(raw), pos


def _decode_dtype(d: _Decoder, pos: int, depth: int) -> tuple[np.dtype, int]:
    return d.dtype(pos)


def _decode_location(d: _Decoder, pos: int, depth: int) -> tuple[Location, int]:
    values, pos = d.fields(pos, depth, len(_LOCATION_FIELDS))
    return Location(*values), pos


def _decode_handle(d: _Decoder, pos: int, depth: int) -> tuple[Handle, int]:
    values, end = d.fields(pos, depth, len(_HANDLE_FIELDS))
    try:
        return Handle(*values), end
    except Exception as exc:  # whatever the constructor refuses is malformed
        d.fail(pos, f"Handle: its constructor refuses {_short_repr(values)}: {exc}")


def _decode_handle_list(d: _Decoder, pos: int, depth: int) -> tuple[list[Handle], int]:
    if depth >= MAX_DEPTH:
        d.fail(pos, f"containers nested deeper than {MAX_DEPTH} levels")
    start = pos
    # Each Handle takes at least one byte in each column.
    n, pos = d.length(pos, "a list of Handles of length", len(_HANDLE_FIELDS))
    columns = []
    for name in _HANDLE_FIELDS:
        column, pos = d.column(pos, depth + 1, n, name)
        columns.append(column)
    try:
        return list(map(Handle, *columns)), pos
    except Exception as exc:  # whatever the constructor refuses is malformed
        d.fail(start, f"list of Handles: the Handle constructor refuses one: {exc}")


_Decode = Callable[[_Decoder, int, int], tuple[Any, int]]
_KNOWN: Mapping[int, _Decode] = MappingProxyType(
    {
        _NONE: _decode_none,
        _FALSE: _decode_false,
        _TRUE: _decode_true,
        _INT64: _decode_int64,
        _BIGINT: _decode_bigint,
        _FLOAT: _decode_float,
        _COMPLEX: _decode_complex,
        _STR: _decode_str,
        _BYTES: _decode_bytes,
        _BYTEARRAY: _decode_bytearray,
        _LIST: _decode_list,
        _TUPLE: _decode_tuple,
        _SET: _decode_set,
        _FROZENSET: _decode_frozenset,
        _DICT: _decode_dict,
        _SLICE: _decode_slice,
        _RANGE: _decode_range,
        _NDARRAY: _decode_ndarray,
        _NPSCALAR: _decode_npscalar,
        _NPSTR: _decode_npstr,
        _NPBYTES: _decode_npbytes,
        _DTYPE: _decode_dtype,
        _LOCATION: _decode_location,
        _HANDLE: _decode_handle,
        _HANDLE_LIST: _decode_handle_list,
    }
)
#: Decoder of each type code below the one-byte ints.
_DECODERS: tuple[_Decode, ...] = tuple(_KNOWN.get(tag, _decode_unknown) for tag in range(_FIXINT))
