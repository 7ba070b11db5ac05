"""Location: parsing the three formats met in the wild, field checks, helpers."""

from __future__ import annotations

import pickle

import pytest

from gpupart import Location, PartitionedError, PartitionedTypeError
from gpupart.location import DLPACK_DEVICE_TYPES, MEMORY_KINDS, dlpack_device_string

# -- the formats -------------------------------------------------------------------------


def test_parse_rank_int_heat_format():
    loc = Location.parse(3)
    assert loc.rank == 3
    assert loc.ip is None
    assert loc.pid is None
    assert loc.device == "kDLCPU"
    assert loc.memory == "host"


def test_parse_ip_string_modin_format():
    loc = Location.parse("10.0.0.7")
    assert loc.ip == "10.0.0.7"
    assert loc.pid is None
    assert loc.rank is None


def test_parse_spec_tuple_without_device_defaults_to_cpu():
    loc = Location.parse(("10.0.0.7", 4242))
    assert loc.spec == ("10.0.0.7", 4242, "kDLCPU")
    assert loc.memory == "host"
    assert not loc.is_cuda


@pytest.mark.parametrize(
    ("device", "memory", "is_cuda"),
    [
        ("kDLCPU", "host", False),
        ("kDLCUDA:1", "device", True),
        ("kDLCUDAHost", "pinned", False),
        ("kDLCUDAManaged:0", "managed", True),
        ("kDLROCM:0", "device", False),
        ("kDLOneAPI:2", "device", False),
    ],
)
def test_parse_spec_tuple_with_device(device, memory, is_cuda):
    loc = Location.parse(("10.0.0.7", 4242, device))
    assert loc.device == device
    assert loc.memory == memory
    assert loc.is_cuda is is_cuda


def test_spec_consumers_read_the_first_three_fields():
    loc = Location(ip="10.0.0.7", pid=99, device="kDLCUDA:0", rank=5, numa_node=1, stream=7)
    assert (loc[0], loc[1], loc[2]) == ("10.0.0.7", 99, "kDLCUDA:0")
    assert loc.spec == ("10.0.0.7", 99, "kDLCUDA:0")
    assert isinstance(loc, tuple)


def test_parse_returns_a_valid_location_unchanged():
    loc = Location(ip="h", pid=1, device="kDLCUDA:3", memory="device", stream=2)
    assert Location.parse(loc) is loc


def test_location_pickles():
    loc = Location(ip="h", pid=1, device="kDLCUDA:3", rank=2, memory="device", stream=2)
    assert pickle.loads(pickle.dumps(loc)) == loc


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "exc", "path"),
    [
        (True, PartitionedTypeError, "loc"),
        (-1, PartitionedError, "loc"),
        ("", PartitionedError, "loc"),
        (("h",), PartitionedError, "loc"),
        (("h", 1, "kDLCPU", "x"), PartitionedError, "loc"),
        ((1, 1), PartitionedTypeError, "loc[0]"),
        (("h", "1"), PartitionedTypeError, "loc[1]"),
        (("h", True), PartitionedTypeError, "loc[1]"),
        (("h", 1, 2), PartitionedTypeError, "loc[2]"),
        (("h", 1, "cuda:0"), PartitionedError, "loc[2]"),
        (("h", 1, "kDLFoo:0"), PartitionedError, "loc[2]"),
        (["h", 1], PartitionedTypeError, "loc"),
        (1.5, PartitionedTypeError, "loc"),
        (None, PartitionedTypeError, "loc"),
    ],
    ids=[
        "bool",
        "negative-rank",
        "empty-ip",
        "short-tuple",
        "long-tuple",
        "ip-not-str",
        "pid-str",
        "pid-bool",
        "device-int",
        "device-unknown-format",
        "device-unknown-type",
        "list",
        "float",
        "none",
    ],
)
def test_parse_rejects_with_path_and_type(value, exc, path):
    with pytest.raises(exc) as info:
        Location.parse(value, path="loc")
    assert type(info.value) is exc
    assert info.value.path == path
    assert str(info.value).startswith(f"{path}: expected ")


def test_parse_default_path_is_location():
    with pytest.raises(PartitionedTypeError, match=r"^location: expected"):
        Location.parse(2.5)


@pytest.mark.parametrize(
    ("fields", "exc", "path"),
    [
        ({"ip": 1, "pid": 1}, PartitionedTypeError, "loc.ip"),
        ({"ip": "h", "pid": "1"}, PartitionedTypeError, "loc.pid"),
        ({"ip": "h", "pid": 1, "device": "gpu"}, PartitionedError, "loc.device"),
        ({"ip": "h", "pid": 1, "rank": -2}, PartitionedError, "loc.rank"),
        ({"ip": "h", "pid": 1, "memory": "vram"}, PartitionedError, "loc.memory"),
        ({"ip": "h", "pid": 1, "stream": 0}, PartitionedError, "loc.stream"),
        ({"ip": "h", "pid": 1, "stream": True}, PartitionedError, "loc.stream"),
    ],
    ids=["ip", "pid", "device", "rank", "memory", "stream-0", "stream-bool"],
)
def test_checked_rejects_bad_fields(fields, exc, path):
    loc = Location(**fields)
    with pytest.raises(exc) as info:
        Location.parse(loc, path="loc")
    assert type(info.value) is exc
    assert info.value.path == path


def test_memory_kinds_cover_the_spilling_cases():
    assert {"device", "host", "pinned", "disk"} <= MEMORY_KINDS


# -- helpers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [((1,), "kDLCPU"), ((1, 3), "kDLCPU"), ((2, 3), "kDLCUDA:3"), ((3, 0), "kDLCUDAHost:0")],
)
def test_dlpack_device_string(args, expected):
    assert dlpack_device_string(*args) == expected


def test_dlpack_device_string_rejects_unknown_types():
    assert 99 not in DLPACK_DEVICE_TYPES
    with pytest.raises(PartitionedError) as info:
        dlpack_device_string(99)
    assert info.value.path == "device_type"


def test_every_dlpack_device_string_is_accepted_by_parse():
    for code in DLPACK_DEVICE_TYPES:
        device = dlpack_device_string(code, 1)
        assert Location.parse(("h", 1, device)).device == device


def test_same_process():
    a = Location(ip="10.0.0.1", pid=10)
    assert a.same_process(Location(ip="10.0.0.1", pid=10, device="kDLCUDA:0"))
    assert not a.same_process(Location(ip="10.0.0.1", pid=11))
    assert not a.same_process(Location(ip="10.0.0.2", pid=10))
    assert Location.parse(2).same_process(Location.parse(2))
    assert not Location.parse(2).same_process(Location.parse(3))
    on_host = Location(ip=None, pid=None, host="n1", rank=2)
    assert not on_host.same_process(Location(ip=None, pid=None, host="n2", rank=2))
    assert not Location.parse("10.0.0.1").same_process(Location.parse("10.0.0.1"))
