"""The typed encoding of collective payloads: exact round trips, refusals, hostile bytes."""

from __future__ import annotations

import ast
import collections
import dataclasses
import enum
import math
import random
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

from gpupart import Location, ProtocolViolationError
from gpupart.comm import codec
from gpupart.comm.codec import decode, encode
from gpupart.tiles.handles import Handle

HEADER = codec.MAGIC + bytes([codec.VERSION])
P = 2**61 - 1  # ints k * P all hash alike


def varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def message(*parts: bytes) -> bytes:
    return HEADER + b"".join(parts)


def dtype_bytes(text: str) -> bytes:
    return varint(len(text)) + text.encode()


def assert_same(out: Any, ref: Any, path: str = "obj") -> None:
    """``out`` has exactly the type, layout and value of ``ref`` (NaN equal to NaN)."""
    assert type(out) is type(ref), f"{path}: {type(out)} is not {type(ref)}"
    if isinstance(ref, np.ndarray):
        assert out.dtype == ref.dtype and out.dtype.str == ref.dtype.str, path
        assert out.shape == ref.shape, path
        if not ref.flags.c_contiguous and ref.flags.f_contiguous:
            assert out.flags.f_contiguous, path
        else:
            assert out.flags.c_contiguous, path
        assert out.flags.writeable and out.base is None, path
        assert out.tobytes() == np.ascontiguousarray(ref).tobytes(), path
    elif isinstance(ref, np.generic):
        assert out.dtype.str == ref.dtype.str and out.tobytes() == ref.tobytes(), path
    elif isinstance(ref, np.dtype):
        assert out == ref and out.str == ref.str, path
    elif isinstance(ref, float):
        assert struct.pack("<d", out) == struct.pack("<d", ref), path
    elif isinstance(ref, complex):
        assert struct.pack("<dd", out.real, out.imag) == struct.pack("<dd", ref.real, ref.imag)
    elif isinstance(ref, dict):
        assert len(out) == len(ref), path
        for (k_out, v_out), (k_ref, v_ref) in zip(out.items(), ref.items(), strict=True):
            assert_same(k_out, k_ref, f"{path}.keys()")
            assert_same(v_out, v_ref, f"{path}[{k_ref!r}]")
    elif isinstance(ref, set | frozenset):
        assert out == ref, path
        by_value = {item: item for item in out}
        for item in ref:
            assert_same(by_value[item], item, f"{path}{{{item!r}}}")
    elif isinstance(ref, list | tuple):  # Location included
        assert len(out) == len(ref), path
        for i, (a, b) in enumerate(zip(out, ref, strict=True)):
            assert_same(a, b, f"{path}[{i}]")
    elif isinstance(ref, slice):
        for name in ("start", "stop", "step"):
            assert_same(getattr(out, name), getattr(ref, name), f"{path}.{name}")
    elif isinstance(ref, Handle):
        for field in dataclasses.fields(Handle):
            if field.init:
                assert_same(getattr(out, field.name), getattr(ref, field.name), path)
        assert out._record == ref._record, f"{path}: __post_init__ did not run"
    else:
        assert out == ref, path


def round_trip(obj: Any) -> Any:
    data = encode(obj)
    assert isinstance(data, bytes)
    out = decode(data)
    assert_same(out, obj)
    return out


def full_location(**changes: Any) -> Location:
    loc = Location(
        ip="10.1.2.3",
        pid=4242,
        device="kDLCUDA:1",
        host="node-7",
        rank=5,
        pci_bus_id="0000:3b:00.0",
        device_uuid="GPU-12345678-90ab-cdef-1234-567890abcdef",
        numa_node=1,
        memory="device",
        stream=0x7F00_1234,
    )
    return loc._replace(**changes)


def handle(i: int = 0, **changes: Any) -> Handle:
    fields = {
        "owner": 5,
        "tile_id": 1000 + i,
        "dtype": "<f8",
        "shape": (100, 8 + i % 3),
        "nbytes": 800 * (8 + i % 3),
        "location": full_location(),
        "order": "C",
        "job": "job-abc",
    }
    fields.update(changes)
    return Handle(**fields)


# ---------------------------------------------------------------------------- round trips

SCALARS = [
    None,
    True,
    False,
    0,
    1,
    127,
    128,
    -1,
    2**63 - 1,
    -(2**63),
    2**63,
    -(2**63) - 1,
    2**64,
    3**200,
    -(3**200),
    0.0,
    -0.0,
    1.5,
    math.inf,
    -math.inf,
    math.nan,
    5e-324,
    complex(1.5, -2.0),
    complex(math.nan, -0.0),
    "",
    "plain",
    "héllo wörld ✓ 𝄞",
    "lone \ud800 surrogate",
    b"",
    b"\x00\xff" * 100,
    bytearray(b""),
    bytearray(b"abc"),
    [],
    (),
    {},
    set(),
    frozenset(),
    slice(None),
    slice(1, 10, 2),
    slice("a", [1, 2], None),
    range(0),
    range(-5, 100, 7),
    range(2**70, -(2**70), -(3**30)),
]


@pytest.mark.parametrize("obj", SCALARS, ids=repr)
def test_round_trip_builtins(obj: Any) -> None:
    round_trip(obj)


def test_round_trip_nested_keeps_types_and_dict_order() -> None:
    obj = {
        "z": [1, (2, 3.5), {4: "four"}, None],
        "a": ({"inner": [[[]]]}, frozenset({1, "x", (2, 3)})),
        3: {True, 2.5, b"k", ("t", None)},
        (1, "k"): slice(0, 5),
        None: range(3),
        frozenset({7}): bytearray(b"ba"),
        b"bytes-key": -(2**80),
        2.5: np.arange(3),
        "loc": full_location(),
        "handles": [handle(0), handle(1)],
    }
    out = round_trip(obj)
    assert list(out) == list(obj)
    assert list(out["a"][0]) == ["inner"]


def test_nesting_up_to_the_limit_round_trips() -> None:
    obj: Any = 0
    for i in range(codec.MAX_DEPTH):
        obj = [obj] if i % 2 else {"k": obj}
    round_trip(obj)


# ---------------------------------------------------------------------------------- arrays

ARRAY_DTYPES = [
    "?",
    "i1",
    "i2",
    "i4",
    "i8",
    "u1",
    "u2",
    "u4",
    "u8",
    "f2",
    "f4",
    "f8",
    "g",
    "c8",
    "c16",
    "G",
    ">i4",
    ">f8",
    ">c16",
    "M8[ns]",
    "M8[D]",
    "M8",
    "m8[s]",
    "m8[10ms]",
    ">M8[us]",
    "S1",
    "S5",
    "U1",
    "U3",
    ">U2",
]
SHAPES = [(), (0,), (1,), (5,), (2, 3), (0, 4), (4, 0), (2, 0, 3), (2, 3, 4), (1, 1, 1, 1, 2)]


def sample(dtype: str, shape: tuple[int, ...], order: str = "C") -> np.ndarray:
    dt = np.dtype(dtype)
    n = math.prod(shape)
    if dt.kind in "SU":
        base = np.array(
            [str(i * 37)[: dt.itemsize // (4 if dt.kind == "U" else 1)] for i in range(n)]
        )
        values = base.astype(dt)
    elif dt.kind in "mM":
        values = (np.arange(n) * 1000 - 7).astype(f"{dt.byteorder}i8").view(dt)
        if n > 1:
            values[1] = np.datetime64("NaT") if dt.kind == "M" else np.timedelta64("NaT")
    elif dt.kind == "b":
        values = np.arange(n) % 3 == 0
    else:
        values = (np.arange(n) * 7 - 3).astype(dt)
        if dt.kind in "fc" and n > 2:
            values[2] = np.nan
    return np.asarray(values.reshape(shape), dtype=dt, order=order)


@pytest.mark.parametrize("dtype", ARRAY_DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("order", ["C", "F"])
def test_round_trip_arrays(dtype: str, shape: tuple[int, ...], order: str) -> None:
    round_trip(sample(dtype, shape, order))


def test_array_layouts() -> None:
    f = np.asfortranarray(np.arange(24.0).reshape(4, 6))
    out = round_trip(f)
    assert out.flags.f_contiguous and not out.flags.c_contiguous
    view = np.arange(40).reshape(5, 8)[::2, 1::3]  # neither C nor F: sent in C order
    out = decode(encode(view))
    assert out.flags.c_contiguous and np.array_equal(out, view)
    read_only = np.arange(3)
    read_only.flags.writeable = False
    out = decode(encode(read_only))
    assert out.flags.writeable
    out[0] = 9  # a copy, nothing shared with the message or the sender
    assert read_only[0] == 0


# ---------------------------------------------------------------------- NumPy scalars, dtypes

NP_SCALARS = [
    np.bool_(True),
    np.bool_(False),
    np.int8(-3),
    np.int16(-300),
    np.int32(2**31 - 1),
    np.int64(-(2**63)),
    np.uint8(255),
    np.uint16(7),
    np.uint32(2**32 - 1),
    np.uint64(2**64 - 1),
    np.float16(1.5),
    np.float32(np.nan),
    np.float64(-0.0),
    np.longdouble(1.25),
    np.complex64(1 + 2j),
    np.complex128(complex(3, -4)),
    np.clongdouble(1 - 1j),
    np.datetime64("2024-02-29T12:34:56.789", "ns"),
    np.datetime64("2024-02", "M"),
    np.datetime64("NaT"),
    np.timedelta64(5, "s"),
    np.timedelta64(-3, "10ms"),
    np.str_(""),
    np.str_("ab\x00"),
    np.str_("wörld"),
    np.bytes_(b"x\x00"),
    np.bytes_(b""),
]


@pytest.mark.parametrize("obj", NP_SCALARS, ids=repr)
def test_round_trip_numpy_scalars(obj: np.generic) -> None:
    out = round_trip(obj)
    if isinstance(obj, str | bytes):
        assert out == obj


def test_platform_alias_scalars_come_back_as_the_canonical_class() -> None:
    for cls in (np.longlong, np.ulonglong, np.intc, np.int_):
        obj = cls(42)
        out = decode(encode(obj))
        assert type(out) is np.dtype(np.dtype(cls).str).type
        assert out == obj and out.dtype == obj.dtype


DTYPES = ["f8", ">i2", "?", "M8[us]", "m8", "S0", "S3", "U0", "U7", "c16", "u1", "g"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_dtypes(dtype: str) -> None:
    round_trip(np.dtype(dtype))


# ------------------------------------------------------------------------ Location, Handle


def test_location_and_handle_fields_are_the_ones_the_codec_sends() -> None:
    # A new field changes the wire format: send it, and bump codec.VERSION.
    assert Location._fields == (
        "ip",
        "pid",
        "device",
        "host",
        "rank",
        "pci_bus_id",
        "device_uuid",
        "numa_node",
        "memory",
        "stream",
    )
    init = tuple(f.name for f in dataclasses.fields(Handle) if f.init)
    assert init == ("owner", "tile_id", "dtype", "shape", "nbytes", "location", "order", "job")


@pytest.mark.parametrize(
    "loc",
    [full_location(), Location(ip=None, pid=None), Location("h", 1, rank=0, stream=None)],
    ids=repr,
)
def test_round_trip_location(loc: Location) -> None:
    round_trip(loc)
    round_trip([loc, loc])


def test_round_trip_handle() -> None:
    h = handle()
    out = round_trip(h)
    assert out == h and out.location == h.location
    round_trip(handle(order="F", job="", shape=(), nbytes=8))
    round_trip((h, h))


def test_round_trip_lists_of_handles() -> None:
    handles = [handle(i) for i in range(1000)]
    data = encode(handles)
    assert data[len(HEADER)] == 0x18  # sent as columns
    out = round_trip(handles)
    assert out == handles
    assert out[0].location is out[1].location  # distinct values decoded once, shared
    for n in (1, 2):
        round_trip(handles[:n])
    round_trip([*handles[:3], "not a handle"])
    round_trip([])


ODD_HANDLE_LISTS = {
    "ints beyond int64": [handle(0, tile_id=2**64 - 1), handle(1, owner=-(2**70))],
    "bool and int alike": [handle(0, shape=(1, True)), handle(1, shape=(1, 1))],
    "int and bool alike": [handle(0, shape=(1, 1)), handle(1, shape=(1, True))],
    "pid True and 1": [
        handle(0, location=full_location(pid=True)),
        handle(1, location=full_location(pid=1)),
    ],
    "pid 1 and True": [
        handle(0, location=full_location(pid=1)),
        handle(1, location=full_location(pid=True)),
    ],
    "float field": [handle(0, nbytes=8.0), handle(1)],
    "mixed shape types": [handle(0, shape=[1, 2]), handle(1, shape=(1, 2))],
    "long shape": [handle(0, shape=(1,) * 70), handle(1, shape=(1,) * 70)],
    "big int in shape": [handle(0, shape=(2**64,)), handle(1, shape=(2**64,))],
    "numpy fields": [handle(0, owner=np.int64(3), shape=(np.int64(2),), dtype=np.dtype("f8"))],
    "np.str_ fields": [handle(0, order=np.str_("C")), handle(1)],
    "location tuple": [handle(0, location=("10.0.0.1", 3)), handle(1, location=("10.0.0.1", 3))],
}


@pytest.mark.parametrize("handles", ODD_HANDLE_LISTS.values(), ids=ODD_HANDLE_LISTS.keys())
def test_round_trip_lists_of_odd_handles(handles: list[Handle]) -> None:
    out = round_trip(handles)
    for a, b in zip(out, handles, strict=True):
        assert_same(a, b)


# ------------------------------------------------------------------------------ refusals


class Color(enum.IntEnum):
    RED = 1


class Pair(NamedTuple):
    a: int
    b: int


class Foo:
    pass


class MyFloat(np.float64):
    pass


class MyArray(np.ndarray):
    pass


UNSUPPORTED = {
    "lambda": (lambda: 0, "obj", "function"),
    "custom class": (Foo(), "obj", "Foo"),
    "IntEnum": (Color.RED, "obj", "Color"),
    "user NamedTuple": (Pair(1, 2), "obj", "Pair"),
    "OrderedDict": (collections.OrderedDict(a=1), "obj", "OrderedDict"),
    "str subclass": ([np.str_("ok"), type("S", (str,), {})("x")], "obj[1]", "S"),
    "numpy scalar subclass": ({"x": MyFloat(1.0)}, "obj['x']", "MyFloat"),
    "ndarray subclass": (np.arange(3).view(MyArray), "obj", "MyArray"),
    "object array": ({"rows": [1, 2, 3, np.array([None])]}, "obj['rows'][3]", "dtype('O')"),
    "structured array": (np.zeros(2, "i4,f8"), "obj", "dtype"),
    "void scalar": (np.zeros(1, "V4")[0], "obj", "dtype"),
    "string dtype": (np.array(["a"], np.dtypes.StringDType()), "obj", "StringDType"),
    "dtype metadata": (np.dtype("f8", metadata={"a": 1}), "obj", "metadata"),
    "object dtype": (np.dtype(object), "obj", "dtype('O')"),
    "nested in dict in list": ([{"a": 1}, {"b": [0, Foo()]}], "obj[1]['b'][1]", "Foo"),
    "set item": ({"s": {1, Foo()}}, "list(obj['s'])[", "Foo"),
    "dict key": ({1: 2, Foo(): 3}, "list(obj)[1]", "Foo"),
    "tuple in dict key": ({(1, Foo()): 3}, "list(obj)[0][1]", "Foo"),
    "Location field": (Location(ip=Foo(), pid=1), "obj.ip", "Foo"),
    "Handle field": (handle(owner=Foo()), "obj.owner", "Foo"),
    "Handle in list": ([handle(0), handle(1, job=Foo())], "obj[1].job", "Foo"),
    "Handle location field": (
        [handle(0), handle(1, location=full_location(host=Foo()))],
        "obj[1].location.host",
        "Foo",
    ),
    "slice field": (slice(1, Foo()), "obj.stop", "Foo"),
    "memoryview": (memoryview(b"x"), "obj", "memoryview"),
}


@pytest.mark.parametrize(("obj", "path", "name"), UNSUPPORTED.values(), ids=UNSUPPORTED.keys())
def test_unsupported_types_are_refused_naming_the_path(obj: Any, path: str, name: str) -> None:
    with pytest.raises(TypeError) as info:
        encode(obj)
    text = str(info.value)
    assert text.startswith(path), text
    assert "cannot be sent between ranks" in text
    assert name in text


def test_too_deep_and_cyclic_objects_are_refused() -> None:
    obj: Any = 0
    for _ in range(codec.MAX_DEPTH + 1):
        obj = [obj]
    with pytest.raises(ValueError, match=r"^obj(\[0\]){100}: .*nested deeper than 100"):
        encode(obj)
    cycle: list = []
    cycle.append(cycle)
    with pytest.raises(ValueError, match="nested deeper"):
        encode(cycle)
    loop: dict = {}
    loop["self"] = loop
    with pytest.raises(ValueError, match=r"^obj\['self'\]\['self'\]"):
        encode(loop)


def test_keys_that_collide_are_refused_by_the_encoder() -> None:
    keys = [k * P for k in range(1, 40)]
    with pytest.raises(ValueError, match=r"^obj\['d'\]: .*share a hash"):
        encode({"d": dict.fromkeys(keys)})
    with pytest.raises(ValueError, match="share a hash"):
        encode(set(keys))
    round_trip(dict.fromkeys(keys[:33]))  # 32 collisions: still accepted


# --------------------------------------------------------------------------- hostile bytes


def complex_object() -> Any:
    return {
        "rows": [1, -1, 2**40, 2**70, 1.5, "ü", b"raw", bytearray(b"ba"), None, True],
        "long": "x" * 300,  # a two-byte length
        "nested": ({"k": (1, 2)}, frozenset({3}), {4, 5}),
        "slice": slice(1, None, -1),
        "range": range(3, 30, 4),
        "array": np.arange(6, dtype=np.float32).reshape(2, 3, order="F"),
        "bools": np.array([True, False]),
        "scalar": np.int16(-5),
        "dtype": np.dtype("M8[ns]"),
        "npstr": np.str_("s"),
        "handles": [handle(0), handle(1)],
        "handle": handle(2),
    }


def test_every_truncation_is_refused() -> None:
    data = encode(complex_object())
    for n in range(len(data)):
        with pytest.raises(ProtocolViolationError):
            decode(data[:n])


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(ProtocolViolationError, match="end of the message"):
        decode(encode([1, 2]) + b"\x00")


def test_random_mutations_raise_protocol_violations_or_decode() -> None:
    rng = random.Random(20240229)
    seeds = [encode(complex_object()), encode([handle(i) for i in range(5)]), encode(SCALARS)]
    decoded = refused = 0
    for trial in range(4000):
        data = bytearray(seeds[trial % len(seeds)])
        for _ in range(rng.randint(1, 4)):
            action = rng.random()
            pos = rng.randrange(len(HEADER), len(data))
            if action < 0.6:
                data[pos] = rng.randrange(256)
            elif action < 0.8:
                data[pos] ^= 1 << rng.randrange(8)
            elif action < 0.9:
                del data[pos : pos + rng.randint(1, 8)]
            else:
                data[pos:pos] = rng.randbytes(rng.randint(1, 8))
        try:
            decode(bytes(data))
        except ProtocolViolationError:
            refused += 1
        else:
            decoded += 1
    assert refused > 1000 and decoded > 10  # both outcomes were exercised


def test_header_is_checked() -> None:
    good = encode(1)
    for bad, match in [
        (b"", "magic"),
        (b"GP", "magic"),
        (b"XPC\x01\x81", "magic"),
        (b"GPC", "version"),
        (b"GPC\x02\x81", "expected version 1, found 2"),
    ]:
        with pytest.raises(ProtocolViolationError, match=match):
            decode(bad)
    assert decode(good) == 1


@pytest.mark.parametrize("tag", [0x19, 0x20, 0x7F])
def test_unknown_type_codes_are_refused(tag: int) -> None:
    with pytest.raises(ProtocolViolationError, match=f"unknown type code 0x{tag:02x}"):
        decode(message(bytes([tag])))


HUGE = 2**62
NEEDS = f"{HUGE} needs"
HUGE_DECLARATIONS = {
    "str": (message(b"\x07", varint(HUGE), b"abc"), f"str of length {NEEDS}"),
    "bytes": (message(b"\x08", varint(HUGE), b"abc"), f"bytes of length {NEEDS}"),
    "bytearray": (message(b"\x09", varint(HUGE), b"abc"), f"bytearray of length {NEEDS}"),
    "bigint": (message(b"\x04", varint(HUGE), b"abc"), f"int of length {NEEDS}"),
    "list": (message(b"\x0a", varint(HUGE), b"\x00\x00"), f"list of length {NEEDS}"),
    "set": (message(b"\x0c", varint(HUGE), b"\x00\x00"), f"set of length {NEEDS}"),
    "dict": (message(b"\x0e", varint(HUGE), b"\x00\x00"), f"dict of length {NEEDS}"),
    "dict pairs": (message(b"\x0e\x02\x81\x82\x83"), "dict of length 2 needs 4 bytes"),
    "array": (
        message(b"\x11", dtype_bytes("<f8"), b"\x00\x02", varint(2**31), varint(2**31)),
        f"{2**62} items of <f8 needs {2**65} bytes",
    ),
    "array with no items": (
        message(b"\x11", dtype_bytes("<f8"), b"\x00\x02\x00", varint(HUGE)),
        "array is too big",
    ),
    "array ndim": (
        message(b"\x11", dtype_bytes("<f8"), b"\x00", varint(65), b"\x01" * 65),
        "ndim: expected at most 64, found 65",
    ),
    "array of 'S' items": (
        message(b"\x11", dtype_bytes("|S1000000000"), b"\x00\x01\x02"),
        "2 items of |S1000000000 needs 2000000000 bytes",
    ),
    "dtype string": (message(b"\x15", varint(HUGE), b"<f8"), "expected at most 32 bytes"),
    "handle list": (
        message(b"\x18", varint(HUGE), b"\x00" * 64),
        f"Handles of length {NEEDS} {8 * HUGE} bytes",
    ),
    "handle int column": (message(b"\x18", varint(100), b"\x00" * 1000), "100 items of <i8"),
    "handle table codes": (
        message(b"\x18\x64", b"\x00" * 801, b"\x01\x0a\x01\x07\x01x", b"\x00" * 10),
        "100 items of <u4 needs 400 bytes",
    ),
}


@pytest.mark.parametrize(
    ("data", "match"), HUGE_DECLARATIONS.values(), ids=HUGE_DECLARATIONS.keys()
)
def test_huge_declared_sizes_are_refused_without_allocating(data: bytes, match: str) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolViolationError, match=match):
            decode(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20


def test_max_bytes_bounds_the_message() -> None:
    data = encode(["x" * 100, np.zeros(10)])
    assert_same(decode(data, max_bytes=len(data)), ["x" * 100, np.zeros(10)])
    with pytest.raises(ProtocolViolationError, match=f"at most {len(data) - 1} bytes"):
        decode(data, max_bytes=len(data) - 1)


def test_any_buffer_can_be_decoded() -> None:
    data = encode({"a": [1, 2.5]})
    for buffer in (bytearray(data), memoryview(data), np.frombuffer(data, np.uint8)):
        assert decode(buffer) == {"a": [1, 2.5]}


def test_long_varints_are_refused() -> None:
    with pytest.raises(ProtocolViolationError, match="varint longer than 10 bytes"):
        decode(message(b"\x07", b"\x80" * 10, b"\x00"))
    assert decode(message(b"\x07", b"\x80" * 9, b"\x00")) == ""  # padded but in bounds


def test_excessive_nesting_is_refused() -> None:
    assert decode(message(b"\x0a\x01" * codec.MAX_DEPTH, b"\x00")) is not None
    for depth in (codec.MAX_DEPTH + 1, 100_000):
        with pytest.raises(ProtocolViolationError, match="nested deeper than 100"):
            decode(message(b"\x0a\x01" * depth, b"\x00"))
    for record in (b"\x16", b"\x17", b"\x0f"):  # Location, Handle, slice fields nest too
        with pytest.raises(ProtocolViolationError, match="nested deeper"):
            decode(message(b"\x0a\x01" * codec.MAX_DEPTH, record, b"\x00" * 10))
    with pytest.raises(ProtocolViolationError, match="nested deeper"):
        decode(message(b"\x0a\x01" * codec.MAX_DEPTH, b"\x18\x00"))


BAD_DTYPES = [
    "<f3",
    "O",
    "|O8",
    "|V8",
    "i4,i4",
    "<f8 ",
    "=i4",
    "|i4",
    "<b1",
    "<M8[xx]",
    "<m8[generic]",
    "(2,)f8",
    "\xff",
    "<U",
    "<i8" * 12,
    "|S99999999999999999999",
]


@pytest.mark.parametrize("text", BAD_DTYPES)
@pytest.mark.parametrize("tag", [0x11, 0x12, 0x15])
def test_invalid_dtypes_are_refused(text: str, tag: int) -> None:
    raw = text.encode("latin-1")
    with pytest.raises(ProtocolViolationError, match="dtype"):
        decode(message(bytes([tag]), varint(len(raw)), raw, b"\x00\x01\x01" + b"\x00" * 16))


def test_items_of_no_bytes_are_refused() -> None:
    with pytest.raises(ProtocolViolationError, match="no bytes per item"):
        decode(message(b"\x11", dtype_bytes("|S0"), b"\x00\x01\x03"))
    with pytest.raises(ProtocolViolationError, match="no bytes per item"):
        decode(message(b"\x12", dtype_bytes("<U0")))


def test_bool_data_must_be_zero_or_one() -> None:
    with pytest.raises(ProtocolViolationError, match="bool data"):
        decode(message(b"\x11", dtype_bytes("|b1"), b"\x00\x01\x03\x01\x00\x02"))
    with pytest.raises(ProtocolViolationError, match="bool data"):
        decode(message(b"\x12", dtype_bytes("|b1"), b"\xff"))
    assert decode(message(b"\x12", dtype_bytes("|b1"), b"\x01")) is np.True_


def test_array_order_must_be_c_or_f() -> None:
    with pytest.raises(ProtocolViolationError, match="array order"):
        decode(message(b"\x11", dtype_bytes("|u1"), b"\x02\x01\x01\x07"))


def test_unhashable_keys_are_refused() -> None:
    for body in (b"\x0e\x01\x0a\x00\x00", b"\x0c\x01\x0a\x00", b"\x0d\x01\x0e\x00"):
        with pytest.raises(ProtocolViolationError, match="hashable"):
            decode(message(body))


def test_colliding_keys_are_refused() -> None:
    keys = [k * P for k in range(1, 1000)]
    items = b"".join(encode(k)[len(HEADER) :] for k in keys)
    nones = b"".join(encode(k)[len(HEADER) :] + b"\x00" for k in keys)
    for body in (b"\x0c" + varint(len(keys)) + items, b"\x0e" + varint(len(keys)) + nones):
        with pytest.raises(ProtocolViolationError, match="sharing a hash"):
            decode(message(body))


def test_bad_utf8_is_refused() -> None:
    for tag in (b"\x07", b"\x13"):
        with pytest.raises(ProtocolViolationError, match="UTF-8"):
            decode(message(tag, b"\x02\xc3\x28"))


@pytest.mark.parametrize(
    "fields",
    [b"\x80\x81\x80", b"\x80\x05" + struct.pack("<d", 1.0) + b"\x81", b"\x00\x81\x81"],
    ids=["step 0", "float stop", "None start"],
)
def test_bad_ranges_are_refused(fields: bytes) -> None:
    with pytest.raises(ProtocolViolationError, match="range"):
        decode(message(b"\x10", fields))


def handle_list(n: int, *columns: bytes) -> bytes:
    return message(b"\x18", varint(n), *columns)


INT_COLUMN = b"\x00" + struct.pack("<q", 1)
STR_TABLE = b"\x01\x0a\x01\x07\x02<f" + struct.pack("<I", 0)
LOC_VALUES = b"\x02\x0a\x01\x16" + b"\x00" * 10
BAD_COLUMNS = {
    "unknown kind": (b"\x03", "expected kind 0, 1 or 2"),
    "code beyond the table": (b"\x01\x0a\x01\x07\x01x" + struct.pack("<I", 1), "a code beyond"),
    "table not a list": (b"\x01\x0b\x01\x07\x01x" + struct.pack("<I", 0), "expected a list"),
    "values not a list": (b"\x02\x0b\x01\x80", "expected a list"),
    "too few values": (b"\x02\x0a\x00", "expected 1 values"),
    "long tuple in a table": (
        b"\x01\x0a\x01\x0b" + varint(65) + b"\x80" * 65 + struct.pack("<I", 0),
        "small tuples",
    ),
    "big int in a table": (
        b"\x01\x0a\x01\x0b\x01\x04\x09" + b"\x00" * 8 + b"\x01" + struct.pack("<I", 0),
        "small tuples",
    ),
    "list in a table": (b"\x01\x0a\x01\x0a\x00" + struct.pack("<I", 0), "small tuples"),
}


@pytest.mark.parametrize(("column", "match"), BAD_COLUMNS.values(), ids=BAD_COLUMNS.keys())
def test_bad_handle_columns_are_refused(column: bytes, match: str) -> None:
    good = [INT_COLUMN, INT_COLUMN, STR_TABLE, LOC_VALUES, INT_COLUMN, LOC_VALUES]
    good += [STR_TABLE, STR_TABLE]
    assert type(decode(handle_list(1, *good))[0]) is Handle
    with pytest.raises(ProtocolViolationError, match=match):
        decode(handle_list(1, *good[:3], column, *good[4:]))


def test_a_handle_the_constructor_refuses_is_a_protocol_violation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    single, many = encode(handle()), encode([handle(0), handle(1)])

    def refuse(self: Handle) -> None:
        raise ValueError("a field that disagrees")

    monkeypatch.setattr(Handle, "__post_init__", refuse)
    for data in (single, many):
        with pytest.raises(ProtocolViolationError, match="constructor refuses"):
            decode(data)


def test_the_codec_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "import gpupart.comm.codec\n"
        "heavy = {'cupy', 'cupyx', 'cudf', 'rmm', 'ucxx', 'ucp'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]"


def test_the_codec_has_no_way_to_run_code() -> None:
    tree = ast.parse(Path(codec.__file__).read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.alias):
            names.add(node.name.split(".")[0])
        elif isinstance(node, ast.keyword) and node.arg:
            names.add(node.arg)
    forbidden = {"pickle", "marshal", "eval", "exec", "importlib", "__import__", "getattr"}
    forbidden |= {"globals", "load", "loads", "allow_pickle", "ctypes"}
    assert names & forbidden == set()
