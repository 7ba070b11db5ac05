"""protocol.validate and protocol.build: the spec's examples, real producers, malformed input."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import subprocess
import sys
import tracemalloc
from collections.abc import Mapping
from typing import Any

import pytest

from gpupart import Location, PartitionedError, PartitionedTypeError
from gpupart.protocol import (
    LazyPartitions,
    PartitionedView,
    PartitionEntry,
    Tiling,
    build,
    validate,
)

# -- stand-ins for other systems' handles ------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ObjectRef:
    """A Ray ObjectRef stand-in: an opaque handle resolved by ``ray_get``."""

    store: dict
    key: int


def ray_get(ref: ObjectRef | list[ObjectRef]) -> Any:
    if isinstance(ref, list):
        return [r.store[r.key] for r in ref]
    return ref.store[ref.key]


class Future:
    """A Dask future stand-in."""

    def __init__(self, value: Any) -> None:
        self._value = value

    def result(self) -> Any:
        return self._value


def gather(futures: Future | list[Future]) -> Any:
    """``client.gather``-like: one future or a list of them."""
    if isinstance(futures, list):
        return [f.result() for f in futures]
    return futures.result()


def identity(x: Any) -> Any:
    return x


class Producer:
    """Any object exposing ``__partitioned__`` as a property."""

    def __init__(self, parted: dict) -> None:
        self._parted = parted

    @property
    def __partitioned__(self) -> dict:
        return self._parted


# -- the spec's three examples -----------------------------------------------------------


def ray_example() -> dict:
    store = {i: list(range(16 * i, 16 * (i + 1))) for i in range(4)}
    return {
        "shape": (64,),
        "partition_tiling": (4,),
        "partitions": {
            (i,): {
                "start": (16 * i,),
                "shape": (16,),
                "data": ObjectRef(store, i),
                "location": [(f"1.1.1.{i + 1}", 7000 + i)],
            }
            for i in range(4)
        },
        "get": ray_get,
    }


def dask_example() -> dict:
    # Written in the spec's (reverse) order; block-cyclic over two workers.
    alice = ("1.1.1.1", 1234)
    bob = ("1.1.1.2", 5678, "kDLCUDA:0")
    return {
        "shape": (8, 8),
        "partition_tiling": (2, 2),
        "partitions": {
            (1, 1): {"start": (4, 4), "shape": (4, 4), "data": Future("d11"), "location": [alice]},
            (1, 0): {"start": (4, 0), "shape": (4, 4), "data": Future("d10"), "location": [bob]},
            (0, 1): {"start": (0, 4), "shape": (4, 4), "data": Future("d01"), "location": [alice]},
            (0, 0): {"start": (0, 0), "shape": (4, 4), "data": Future("d00"), "location": [bob]},
        },
        "get": gather,
    }


def mpi_example(rank: int) -> dict:
    hosts = [("1.1.1.1", 1000), ("1.1.1.2", 2000)]
    partitions = {}
    for i in range(4):
        owner = i % 2  # row-block-cyclic
        partitions[(i, 0)] = {
            "start": (2 * i, 0),
            "shape": (2, 8),
            "data": f"df{i}" if owner == rank else None,
            "location": [hosts[owner]],
        }
    return {
        "shape": (8, 8),
        "partition_tiling": (4, 1),
        "partitions": partitions,
        "get": lambda x: x,
        "locals": [(i, 0) for i in range(4) if i % 2 == rank],
    }


@pytest.mark.parametrize("strict", [False, True])
def test_spec_ray_example(strict):
    view = validate(Producer(ray_example()), strict=strict)
    assert isinstance(view, PartitionedView)
    assert view.shape == (64,)
    assert view.tiling == (4,)
    assert view.ndim == 1
    assert view.locals is None
    assert view.boundaries == ([0, 16, 32, 48, 64],)
    assert view.layout == Tiling.regular((64,), (16,))
    entry = view.partitions[(2,)]
    assert isinstance(entry, PartitionEntry)
    assert (entry.start, entry.shape, entry.stop) == ((32,), (16,), (48,))
    assert entry.location == (Location(ip="1.1.1.3", pid=7002),)
    assert view.get(entry.data) == list(range(32, 48))
    assert view.get([view.partitions[(0,)].data, entry.data])[1][0] == 32
    assert view.locate(50).start == (48,)


@pytest.mark.parametrize("strict", [False, True])
def test_spec_dask_example(strict):
    view = validate(dask_example(), strict=strict)
    assert view.shape == (8, 8)
    assert view.tiling == (2, 2)
    assert list(view.partitions) == [(0, 0), (0, 1), (1, 0), (1, 1)]  # normalised: C order
    assert [e.start for e in view.partitions.values()] == [(0, 0), (0, 4), (4, 0), (4, 4)]
    assert view.partitions[(0, 0)].location[0].device == "kDLCUDA:0"
    assert view.partitions[(0, 0)].location[0].memory == "device"
    assert view.get(view.partitions[(1, 0)].data) == "d10"
    assert view.get([e.data for e in view.partitions.values()]) == ["d00", "d01", "d10", "d11"]
    assert view.layout == Tiling.regular((8, 8), (4, 4))


@pytest.mark.parametrize("strict", [False, True])
def test_spec_mpi_example(strict):
    for rank in (0, 1):
        view = validate(mpi_example(rank), strict=strict)
        assert view.tiling == (4, 1)
        assert view.layout == Tiling.regular((8, 8), (2, 8))
        mine = [(0, 0), (2, 0)] if rank == 0 else [(1, 0), (3, 0)]
        assert view.locals == tuple(mine)
        assert [e.data for e in view.local_partitions()] == [f"df{p[0]}" for p in mine]
        others = [p for p in view.partitions if p not in mine]
        assert all(view.partitions[p].data is None for p in others)
        assert view.get("x") == "x"


def test_view_is_read_only():
    view = validate(dask_example())
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.shape = (9, 9)  # type: ignore[misc]
    with pytest.raises(TypeError):
        view.partitions[(0, 0)] = None  # type: ignore[index]
    with pytest.raises(TypeError):
        view.extra["dtype"] = "f8"  # type: ignore[index]
    entry = view.partitions[(0, 0)]
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.data = None  # type: ignore[misc]
    assert isinstance(entry.location, tuple)
    assert isinstance(view.partitions, Mapping)


def test_validate_does_not_mutate_its_input():
    parted = dask_example()
    before = copy.deepcopy({k: v for k, v in parted.items() if k != "get"})
    validate(parted)
    validate(parted, strict=True)
    assert {k: v for k, v in parted.items() if k != "get"}.keys() == before.keys()
    assert list(parted["partitions"]) == [(1, 1), (1, 0), (0, 1), (0, 0)]


def test_replicated_partition_and_empty_tiles():
    parted = ray_example()
    parted["partitions"][(1,)]["location"].append(Location(ip="1.1.1.9", pid=1, stream=2))
    view = validate(parted, strict=True)
    assert len(view.partitions[(1,)].location) == 2
    assert view.partitions[(1,)].location[1].stream == 2

    empty = {
        "shape": (8,),
        "partition_tiling": (3,),
        "partitions": {
            (0,): {"start": (0,), "shape": (4,), "data": 0, "location": [0]},
            (1,): {"start": (4,), "shape": (0,), "data": 1, "location": [1]},
            (2,): {"start": (4,), "shape": (4,), "data": 2, "location": [1]},
        },
        "get": identity,
    }
    view = validate(empty)
    assert view.boundaries == ((0, 4, 4, 8),)
    assert view.locate(4).data == 2


def test_zero_size_global_shape():
    parted = {
        "shape": (0, 3),
        "partition_tiling": (1, 1),
        "partitions": {(0, 0): {"start": (0, 0), "shape": (0, 3), "data": None, "location": [0]}},
        "get": identity,
    }
    assert validate(parted).layout == Tiling.regular((0, 3), (1, 3))


# -- real producers ----------------------------------------------------------------------


def heat_example(rank: int = 1) -> dict:
    """What Heat >= 1.3 emits for a (10, 4) array split along axis 0 over 3 ranks."""
    lshapes = [(4, 4), (3, 4), (3, 4)]
    starts = [(0, 0), (4, 0), (7, 0)]
    partitions = {
        (r, 0): {
            "start": starts[r],
            "shape": lshapes[r],
            "data": f"tensor{r}" if r == rank else None,
            "location": [r],
            "dtype": "torch.float32",
            "device": "cpu:0",
        }
        for r in range(3)
    }
    return {
        "shape": (10, 4),
        "partition_tiling": (3, 1),
        "partitions": partitions,
        "locals": [(rank, 0)],
        "get": lambda x: x,
        "dtype": "torch.float32",
        "device": "cpu:0",
    }


def modin_example(with_shape: bool = False) -> dict:
    """Modin's PR #3452: ObjectRef data, IP-string locations, no top-level shape."""
    store = {0: "df0", 1: "df1"}
    parted: dict[str, Any] = {
        "partition_tiling": (2, 1),
        "partitions": {
            (0, 0): {
                "start": (0, 0),
                "shape": (7, 3),
                "data": ObjectRef(store, 0),
                "location": ["10.0.0.1"],
            },
            (1, 0): {
                "start": (7, 0),
                "shape": (5, 3),
                "data": ObjectRef(store, 1),
                "location": ["10.0.0.2"],
            },
        },
        "get": ray_get,
    }
    if with_shape:
        parted["shape"] = (12, 3)
    return parted


def test_heat_style_passes_leniently():
    view = validate(Producer(heat_example(rank=1)))
    assert view.shape == (10, 4)
    assert view.boundaries == ((0, 4, 7, 10), [0, 4])
    assert not view.layout.is_regular
    assert dict(view.extra) == {"dtype": "torch.float32", "device": "cpu:0"}
    (local,) = view.local_partitions()
    assert local.position == (1, 0)
    assert local.data == "tensor1"
    assert local.location[0].rank == 1
    assert dict(local.extra) == {"dtype": "torch.float32", "device": "cpu:0"}
    assert view.repairs == ()


def test_heat_style_fails_strictly_at_the_location():
    with pytest.raises(PartitionedTypeError) as info:
        validate(heat_example(), strict=True)
    assert info.value.path == "partitions[(0, 0)]['location'][0]"
    assert "rank int" in str(info.value)
    assert isinstance(info.value, TypeError)


def test_modin_style_passes_leniently_with_shape_repaired():
    view = validate(modin_example())
    assert view.shape == (12, 3)
    assert view.repairs == ("shape",)
    assert view.partitions[(1, 0)].location[0].ip == "10.0.0.2"
    assert view.get(view.partitions[(1, 0)].data) == "df1"


def test_modin_style_fails_strictly():
    with pytest.raises(PartitionedError) as info:
        validate(modin_example(), strict=True)
    assert info.value.path == "shape"
    assert "missing" in str(info.value)
    assert not isinstance(info.value, TypeError)
    with pytest.raises(PartitionedTypeError) as info:
        validate(modin_example(with_shape=True), strict=True)
    assert info.value.path == "partitions[(0, 0)]['location'][0]"
    assert "IP string" in str(info.value)


def test_xgboost_ray_style_passes_leniently():
    parted = {
        "shape": (424, 31),
        "partition_tiling": (4, 1),
        "get": ray_get,
        "partitions": {
            (i, 0): {
                "start": (i * 106, 0),
                "shape": (106, 31),
                "data": ObjectRef({}, i),
                "location": [f"10.0.0.{i}"],
            }
            for i in range(4)
        },
    }
    assert validate(parted).layout == Tiling.regular((424, 31), (106, 31))


def test_strict_accepts_a_location_with_ip_and_pid_and_rejects_one_without():
    parted = ray_example()
    parted["partitions"][(0,)]["location"] = [Location(ip="h", pid=1, rank=0, numa_node=1)]
    assert validate(parted, strict=True).partitions[(0,)].location[0].numa_node == 1
    parted["partitions"][(3,)]["location"] = [Location(ip=None, pid=None, rank=3)]
    assert validate(parted).partitions[(3,)].location[0].rank == 3
    with pytest.raises(PartitionedError) as info:
        validate(parted, strict=True)
    assert info.value.path == "partitions[(3,)]['location'][0]"


def test_strict_rejects_locals_none_lenient_reads_it_as_absent():
    parted = ray_example()
    parted["locals"] = None
    assert validate(parted).locals is None
    with pytest.raises(PartitionedTypeError) as info:
        validate(parted, strict=True)
    assert info.value.path == "locals"


# -- malformed structures ----------------------------------------------------------------


def base() -> dict:
    """A valid 8x8 dict on a 2x2 grid (C order), to break one rule at a time."""
    return {
        "shape": (8, 8),
        "partition_tiling": (2, 2),
        "partitions": {
            (i, j): {
                "start": (4 * i, 4 * j),
                "shape": (4, 4),
                "data": None,
                "location": [("10.0.0.1", 100 + 2 * i + j)],
            }
            for i in range(2)
            for j in range(2)
        },
        "get": identity,
        "locals": [(0, 0), (1, 1)],
    }


def _set(path: tuple, value: Any):
    def mutate(d: dict) -> dict:
        target = d
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return d

    return mutate


def _delete(path: tuple):
    def mutate(d: dict) -> dict:
        target = d
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
        return d

    return mutate


def _rekey(old: Any, new: Any):
    def mutate(d: dict) -> dict:
        d["partitions"][new] = d["partitions"].pop(old)
        return d

    return mutate


def _both(*mutations):
    def mutate(d: dict) -> dict:
        for m in mutations:
            d = m(d)
        return d

    return mutate


P = "partitions"
TYPE, VALUE = PartitionedTypeError, PartitionedError

MALFORMED = [
    # id, mutation, exception type, exact path
    ("not-partitioned", lambda d: object(), TYPE, "__partitioned__"),
    ("property-not-dict", lambda d: Producer([("shape", (8, 8))]), TYPE, "__partitioned__"),
    ("tiling-missing", _delete(("partition_tiling",)), VALUE, "partition_tiling"),
    ("tiling-list", _set(("partition_tiling",), [2, 2]), TYPE, "partition_tiling"),
    ("tiling-zero", _set(("partition_tiling",), (2, 0)), VALUE, "partition_tiling[1]"),
    ("tiling-str-item", _set(("partition_tiling",), ("2", 2)), TYPE, "partition_tiling[0]"),
    ("shape-ndim", _set(("shape",), (8, 8, 1)), VALUE, "shape"),
    ("shape-negative", _set(("shape",), (-8, 8)), VALUE, "shape[0]"),
    ("shape-list", _set(("shape",), [8, 8]), TYPE, "shape"),
    ("get-missing", _delete(("get",)), VALUE, "get"),
    ("get-not-callable", _set(("get",), "gather"), TYPE, "get"),
    ("partitions-missing", _delete((P,)), VALUE, P),
    ("partitions-list", _set((P,), [{}, {}, {}, {}]), TYPE, P),
    ("key-short", _rekey((1, 1), (3,)), VALUE, "partitions[(3,)]"),
    ("key-not-tuple", _rekey((1, 1), 3), TYPE, "partitions[3]"),
    ("key-outside-grid", _rekey((1, 1), (2, 1)), VALUE, "partitions[(2, 1)]"),
    ("key-negative", _rekey((1, 1), (-1, 1)), VALUE, "partitions[(-1, 1)]"),
    ("key-bool", _rekey((1, 0), (True, 0)), TYPE, "partitions[(True, 0)]"),
    ("position-missing", _delete((P, (1, 1))), VALUE, "partitions[(1, 1)]"),
    ("entry-not-dict", _set((P, (1, 0)), [(4, 0), (4, 4)]), TYPE, "partitions[(1, 0)]"),
    ("start-missing", _delete((P, (0, 1), "start")), VALUE, "partitions[(0, 1)]['start']"),
    ("data-missing", _delete((P, (0, 1), "data")), VALUE, "partitions[(0, 1)]['data']"),
    ("location-missing", _delete((P, (0, 0), "location")), VALUE, "partitions[(0, 0)]['location']"),
    ("start-list", _set((P, (1, 0), "start"), [4, 0]), TYPE, "partitions[(1, 0)]['start']"),
    ("start-float", _set((P, (0, 1), "start"), (0, 4.0)), TYPE, "partitions[(0, 1)]['start'][1]"),
    ("shape-ndim-entry", _set((P, (1, 0), "shape"), (4,)), VALUE, "partitions[(1, 0)]['shape']"),
    (
        "shape-negative-entry",
        _set((P, (1, 0), "shape"), (-4, 4)),
        VALUE,
        "partitions[(1, 0)]['shape'][0]",
    ),
    (
        "beyond-global-shape",
        _set((P, (1, 1), "shape"), (4, 5)),
        VALUE,
        "partitions[(1, 1)]['shape'][1]",
    ),
    (
        "start-beyond-global",
        _set((P, (1, 1), "start"), (9, 4)),
        VALUE,
        "partitions[(1, 1)]['start'][0]",
    ),
    (
        "gap-between-rows",
        _both(
            _set((P, (1, 0), "start"), (5, 0)),
            _set((P, (1, 0), "shape"), (3, 4)),
            _set((P, (1, 1), "start"), (5, 4)),
            _set((P, (1, 1), "shape"), (3, 4)),
        ),
        VALUE,
        "partitions[(1, 0)]['start'][0]",
    ),
    (
        "overlap-between-rows",
        _both(
            _set((P, (1, 0), "start"), (3, 0)),
            _set((P, (1, 0), "shape"), (5, 4)),
            _set((P, (1, 1), "start"), (3, 4)),
            _set((P, (1, 1), "shape"), (5, 4)),
        ),
        VALUE,
        "partitions[(1, 0)]['start'][0]",
    ),
    (
        "row-start-mismatch",
        _set((P, (1, 1), "start"), (3, 4)),
        VALUE,
        "partitions[(1, 1)]['start'][0]",
    ),
    (
        "row-height-mismatch",
        _set((P, (1, 1), "shape"), (3, 4)),
        VALUE,
        "partitions[(1, 1)]['shape'][0]",
    ),
    (
        "grid-order-not-start-order",
        _both(
            _set((P, (0, 0), "start"), (4, 0)),
            _set((P, (0, 1), "start"), (4, 4)),
            _set((P, (1, 0), "start"), (0, 0)),
            _set((P, (1, 1), "start"), (0, 4)),
        ),
        VALUE,
        "partitions[(0, 0)]['start'][0]",
    ),
    ("gap-at-the-end", _set(("shape",), (9, 8)), VALUE, "partitions[(1, 0)]['shape'][0]"),
    (
        "location-str",
        _set((P, (0, 0), "location"), "10.0.0.1"),
        TYPE,
        "partitions[(0, 0)]['location']",
    ),
    (
        "location-tuple",
        _set((P, (0, 0), "location"), ("h", 1)),
        TYPE,
        "partitions[(0, 0)]['location']",
    ),
    ("location-empty", _set((P, (0, 0), "location"), []), VALUE, "partitions[(0, 0)]['location']"),
    (
        "location-item-float",
        _set((P, (0, 1), "location"), [("h", 1), 2.5]),
        TYPE,
        "partitions[(0, 1)]['location'][1]",
    ),
    (
        "location-bad-device",
        _set((P, (0, 0), "location"), [("h", 1, "cuda:0")]),
        VALUE,
        "partitions[(0, 0)]['location'][0][2]",
    ),
    (
        "location-item-list",
        _set((P, (1, 1), "location"), [["h", 1]]),
        TYPE,
        "partitions[(1, 1)]['location'][0]",
    ),
    ("locals-str", _set(("locals",), "(0, 0)"), TYPE, "locals"),
    ("locals-outside-grid", _set(("locals",), [(0, 0), (2, 0)]), VALUE, "locals[1]"),
    ("locals-item-list", _set(("locals",), [(0, 0), (1, 1), [1, 0]]), TYPE, "locals[2]"),
    ("locals-item-short", _set(("locals",), [(0,)]), VALUE, "locals[0]"),
    ("locals-duplicate", _set(("locals",), [(0, 0), (1, 1), (0, 0)]), VALUE, "locals[2]"),
]


@pytest.mark.parametrize(
    ("mutate", "exc", "path"),
    [pytest.param(m, e, p, id=i) for i, m, e, p in MALFORMED],
)
@pytest.mark.parametrize("strict", [False, True], ids=["lenient", "strict"])
def test_malformed_structures_are_rejected(mutate, exc, path, strict):
    with pytest.raises(PartitionedError) as info:
        validate(mutate(base()), strict=strict)
    err = info.value
    assert type(err) is exc
    assert isinstance(err, TypeError) is (exc is PartitionedTypeError)
    assert isinstance(err, ValueError)
    assert err.path == path
    assert f"{path}: expected " in str(err)
    assert ", found " in str(err)


def test_at_least_25_distinct_malformed_cases():
    assert len({case[0] for case in MALFORMED}) == len(MALFORMED) >= 25


def test_negative_rank_is_a_value_error_leniently_and_a_type_error_strictly():
    parted = _set((P, (1, 1), "location"), [-1])(base())
    with pytest.raises(PartitionedError) as info:
        validate(parted)
    assert type(info.value) is PartitionedError
    assert info.value.path == "partitions[(1, 1)]['location'][0]"
    with pytest.raises(PartitionedTypeError) as info:
        validate(parted, strict=True)
    assert info.value.path == "partitions[(1, 1)]['location'][0]"


def test_a_huge_grid_with_few_partitions_is_rejected_without_allocating_the_grid():
    parted = ray_example()
    parted["partition_tiling"] = (10**12,)
    tracemalloc.start()
    try:
        with pytest.raises(PartitionedError) as info:
            validate(parted)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.path == "partitions[(4,)]"
    assert info.value.found == "missing"
    assert peak < 1024 * 1024


def test_zero_dimensional_structure():
    parted = {
        "shape": (),
        "partition_tiling": (),
        "partitions": {(): {"start": (), "shape": (), "data": 3.5, "location": [("h", 1)]}},
        "get": identity,
    }
    view = validate(parted, strict=True)
    assert view.ndim == 0
    assert view.partitions[()].data == 3.5
    assert view.locate(()).size == 1


def test_base_is_valid():
    view = validate(base(), strict=True)
    assert view.locals == ((0, 0), (1, 1))


def test_error_messages_say_expected_and_found():
    with pytest.raises(PartitionedError) as info:
        validate(_set(("shape",), (9, 8))(base()))
    assert "shape[0] = 9" in info.value.expected
    assert "ends at 8" in info.value.found
    with pytest.raises(PartitionedError) as info:
        validate(_set((P, (1, 1), "start"), (3, 4))(base()))
    assert "partitions[(1, 0)]" in info.value.expected  # names the partition it disagrees with
    assert info.value.found == "3"


# -- build -------------------------------------------------------------------------------


def test_build_round_trip_with_mappings():
    positions = [(i, j) for i in range(3) for j in range(2)]
    data = {p: f"tile{p}" for p in positions if p[0] != 1}
    locations = {p: [("10.0.0.1", 10 + p[0])] for p in positions}
    parted = build((10, 8), (4, 4), data, locations, identity, locals=[(0, 0), [2, 1]], dtype="f8")
    assert parted["shape"] == (10, 8)
    assert parted["partition_tiling"] == (3, 2)
    assert parted["locals"] == [(0, 0), (2, 1)]
    assert parted["dtype"] == "f8"
    assert isinstance(parted["partitions"], LazyPartitions)
    assert parted["partitions"][(2, 1)] == {
        "start": (8, 4),
        "shape": (2, 4),
        "data": "tile(2, 1)",
        "location": [("10.0.0.1", 12)],
    }
    assert parted["partitions"][(1, 0)]["data"] is None  # absent from the data mapping
    view = validate(parted, strict=True)
    assert view.extra["dtype"] == "f8"
    assert view.lazy
    assert [e.data for e in view.local_partitions()] == ["tile(0, 0)", "tile(2, 1)"]
    assert view.partitions[(2, 0)].location == (Location(ip="10.0.0.1", pid=12),)
    # the same thing materialised as a plain dict validates eagerly to the same view
    eager = validate(build((10, 8), (4, 4), data, locations, identity, lazy=False), strict=True)
    assert not eager.lazy
    assert type(build((10, 8), (4, 4), data, locations, identity, lazy=False)[P]) is dict
    for pos in positions:
        a, b = view.partitions[pos], eager.partitions[pos]
        assert (a.start, a.shape, a.data, a.location) == (b.start, b.shape, b.data, b.location)
    assert eager.layout == view.layout


def test_build_round_trip_with_callables():
    calls: list = []

    def data(pos):
        calls.append(pos)
        return sum(pos)

    tiling = Tiling.from_boundaries([[0, 3, 8], [0, 2, 5]])
    parted = build((8, 5), tiling, data, lambda p: [p[0], ("h", 100 + p[1])], identity)
    view = validate(parted)
    assert calls == []
    entry = view.partitions[(1, 1)]
    assert (entry.start, entry.shape, entry.data) == ((3, 2), (5, 3), 2)
    assert entry.location[0].rank == 1
    assert entry.location[1] == Location(ip="h", pid=101)
    assert calls == [(1, 1)]
    assert view.boundaries == ((0, 3, 8), (0, 2, 5))


@pytest.mark.parametrize(
    ("locations", "expected"),
    [
        (Location(ip="h", pid=1, device="kDLCUDA:0", memory="device"), 1),
        (("h", 1), 1),
        ("h", 1),
        (0, 1),
        ([("h", 1), ("g", 2, "kDLCPU")], 2),
    ],
    ids=["Location", "spec-tuple", "ip", "rank", "replicas"],
)
def test_build_with_one_location_for_every_partition(locations, expected):
    parted = build((6,), (2,), None, locations, identity)
    for pos in [(0,), (1,), (2,)]:
        entry = parted[P][pos]
        assert entry["data"] is None
        assert isinstance(entry["location"], list)
        assert len(entry["location"]) == expected
    assert all(len(e.location) == expected for e in validate(parted).partitions.values())
    parted[P][(0,)]["location"].append("mutated")
    assert len(parted[P][(0,)]["location"]) == expected  # entries are fresh


def test_build_passes_strict_validation_only_with_spec_locations():
    assert validate(build((6,), (2,), None, ("h", 1), identity), strict=True)
    with pytest.raises(PartitionedTypeError) as info:
        validate(build((6,), (2,), None, 3, identity), strict=True)
    assert info.value.path == "partitions[(0,)]['location'][0]"


def test_lazy_entries_are_checked_when_looked_up():
    bad_at_3 = build((8,), (2,), None, lambda p: [2.5] if p == (3,) else [0], identity)
    view = validate(bad_at_3)  # (3,) is neither (0,) nor local: not visited
    assert view.partitions[(2,)].location[0].rank == 0
    with pytest.raises(PartitionedTypeError) as info:
        view.partitions[(3,)]
    assert info.value.path == "partitions[(3,)]['location'][0]"
    with pytest.raises(PartitionedTypeError) as info:
        validate(build((8,), (2,), None, lambda p: [2.5] if p == (3,) else [0], identity, [(3,)]))
    assert info.value.path == "partitions[(3,)]['location'][0]"
    with pytest.raises(KeyError):
        view.partitions[(4,)]


class CountingData:
    """A picklable data callable that records the positions it was asked for."""

    def __init__(self) -> None:
        self.calls: list = []

    def __call__(self, pos: tuple) -> tuple:
        self.calls.append(pos)
        return pos


def test_million_tile_lazy_structure_validates_without_per_tile_work():
    data = CountingData()
    calls = data.calls

    tracemalloc.start()
    try:
        tiling = Tiling.regular((1000, 1000), (1, 1))
        loc = Location(ip="10.0.0.1", pid=77, device="kDLCUDA:0", memory="device")
        parted = build((1000, 1000), tiling, data, loc, identity, locals=[(3, 4)], dtype="f4")
        view = validate(Producer(parted), strict=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert calls == []  # no entry was materialised
    assert peak < 1024 * 1024
    assert len(view.partitions) == view.num_partitions == 10**6
    assert view.local_partitions()[0].data == (3, 4)
    assert view.partitions[(999, 998)].start == (999, 998)
    assert calls == [(3, 4), (999, 998)]
    assert len(pickle.dumps(parted[P])) < 2048  # the description stays O(ndim) on the wire


def test_bare_tiling_partitions_are_recognised_but_lack_data():
    tiling = Tiling.regular((10**6,), (1,))
    parted = {"shape": (10**6,), "partition_tiling": (10**6,), "partitions": tiling.partitions}
    parted["get"] = identity
    with pytest.raises(PartitionedError) as info:
        validate(parted)
    assert info.value.path == "partitions[(0,)]['data']"


@pytest.mark.parametrize(
    ("key", "value", "path"),
    [("shape", (8, 9), "shape"), ("partition_tiling", (2, 1), "partition_tiling")],
)
def test_lazy_partitions_must_agree_with_shape_and_grid(key, value, path):
    parted = build((8, 8), (4, 4), None, ("h", 1), identity)
    parted[key] = value
    with pytest.raises(PartitionedError) as info:
        validate(parted)
    assert info.value.path == path


def test_lazy_partitions_repair_missing_shape_leniently():
    parted = build((8, 8), (4, 4), None, ("h", 1), identity)
    del parted["shape"]
    assert validate(parted).shape == (8, 8)
    assert validate(parted).repairs == ("shape",)
    with pytest.raises(PartitionedError):
        validate(parted, strict=True)


def test_build_output_pickles_when_its_parts_do():
    parted = build((6, 4), (2, 4), {(1, 0): "x"}, {(i, 0): [i] for i in range(3)}, identity)
    restored = pickle.loads(pickle.dumps(parted))
    assert restored[P] == parted[P]
    view = validate(restored)
    assert view.partitions[(1, 0)].data == "x"
    assert view.partitions[(2, 0)].location[0].rank == 2


@pytest.mark.parametrize(
    ("kwargs", "exc", "path"),
    [
        ({"shape": (8, -1)}, VALUE, "shape[1]"),
        ({"tiling": Tiling.regular((8, 9), (4, 4))}, VALUE, "tiling"),
        ({"tiling": (4, 0)}, VALUE, "tiling[1]"),
        ({"tiling": 4}, TYPE, "tiling"),
        ({"data": ["a", "b"]}, TYPE, "data"),
        ({"data": {(9, 0): "a"}}, VALUE, "data[(9, 0)]"),
        ({"locations": {(0, 0): [0], (0, 1): [0], (1, 0): [0]}}, VALUE, "locations[(1, 1)]"),
        (
            {"locations": {(0, 0): [2.5], (0, 1): [0], (1, 0): [0], (1, 1): [0]}},
            TYPE,
            "locations[(0, 0)][0]",
        ),
        ({"locations": []}, VALUE, "locations"),
        ({"locations": None}, TYPE, "locations"),
        ({"locations": [("h", "pid")]}, TYPE, "locations[0][1]"),
        ({"get": None}, TYPE, "get"),
        ({"locals": [(0, 0), (2, 0)]}, VALUE, "locals[1]"),
        ({"locals": [(0, 0), (0, 0)]}, VALUE, "locals[1]"),
        ({"locals": 3}, TYPE, "locals"),
        ({"locals": [(0, 0), "00"]}, TYPE, "locals[1]"),
        ({"partitions": {}}, VALUE, "partitions"),
    ],
    ids=[
        "shape",
        "tiling-shape",
        "tiling-block",
        "tiling-type",
        "data-type",
        "data-key",
        "locations-missing",
        "locations-value",
        "locations-empty",
        "locations-none",
        "location-pid",
        "get",
        "locals-outside",
        "locals-duplicate",
        "locals-type",
        "locals-item-type",
        "protocol-key-as-extra",
    ],
)
def test_build_rejects_bad_arguments(kwargs, exc, path):
    args = {
        "shape": (8, 8),
        "tiling": (4, 4),
        "data": None,
        "locations": ("h", 1),
        "get": identity,
    }
    args.update(kwargs)
    with pytest.raises(PartitionedError) as info:
        build(**args)
    assert type(info.value) is exc
    assert info.value.path == path


def test_callable_location_results_are_checked_by_lazy_partitions():
    parts = LazyPartitions(Tiling.regular((4,), (2,)), None, lambda p: {"bad": 1})
    with pytest.raises(PartitionedTypeError) as info:
        parts[(1,)]
    assert info.value.path == "partitions[(1,)]['location']"
    assert parts.data_of((1,)) is None
    with pytest.raises(KeyError):
        parts.location_of((2,))


def test_import_stays_light():
    code = (
        "import sys, gpupart, gpupart.protocol\n"
        "heavy = {'numpy', 'pandas', 'cupy', 'numba', 'ucxx', 'pyarrow'} & set(sys.modules)\n"
        "print(sorted(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
