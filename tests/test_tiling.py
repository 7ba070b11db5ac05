"""Tiling: regular and irregular block grids, their lazy partitions mapping, locate()."""

from __future__ import annotations

import itertools
import pickle
import tracemalloc
from collections.abc import Mapping

import numpy as np
import pytest

from gpupart import PartitionedError, PartitionedTypeError
from gpupart.protocol import RegularCuts, Tiling, TilingPartitions

# -- helpers ------------------------------------------------------------------------------


def coverage(t: Tiling) -> np.ndarray:
    """How many tiles cover each element (1 everywhere for an exact tiling)."""
    counts = np.zeros(t.shape, dtype=np.int64)
    for pos in t.partitions:
        counts[t.slices(pos)] += 1
    return counts


SMALL_TILINGS = [
    Tiling.regular((8, 8), (4, 4)),
    Tiling.regular((10,), (4,)),
    Tiling.regular((7, 5, 3), (2, 5, 1)),
    Tiling.from_boundaries([[0, 3, 8], [0, 8]]),
    Tiling.from_boundaries([[0, 1, 2, 6, 9], [0, 2, 5]]),
    Tiling.from_boundaries([[0, 4, 4, 8]]),
]


# -- regular ------------------------------------------------------------------------------


def test_regular_even_grid():
    t = Tiling.regular((8, 8), (4, 4))
    assert t.shape == (8, 8)
    assert t.grid == (2, 2)
    assert t.ndim == 2
    assert t.num_partitions == 4
    assert t.is_regular
    assert t.block_shape == (4, 4)
    assert t.boundaries == ([0, 4, 8], [0, 4, 8])
    assert t.partitions[(1, 0)] == {"start": (4, 0), "shape": (4, 4)}
    assert dict(t.partitions) == {
        (0, 0): {"start": (0, 0), "shape": (4, 4)},
        (0, 1): {"start": (0, 4), "shape": (4, 4)},
        (1, 0): {"start": (4, 0), "shape": (4, 4)},
        (1, 1): {"start": (4, 4), "shape": (4, 4)},
    }


def test_regular_uneven_last_block():
    t = Tiling.regular((10, 3), (4, 2))
    assert t.grid == (3, 2)
    assert [t.partitions[(i, 0)]["shape"] for i in range(3)] == [(4, 2), (4, 2), (2, 2)]
    assert t.partitions[(2, 1)] == {"start": (8, 2), "shape": (2, 1)}
    assert t.boundaries == ([0, 4, 8, 10], [0, 2, 3])
    assert t.tile_shape((2, 1)) == (2, 1)
    assert t.start((2, 1)) == (8, 2)


def test_regular_accepts_lists_and_numpy_ints():
    t = Tiling.regular([np.int64(10)], [np.int32(4)])
    assert t == Tiling.regular((10,), (4,))
    assert type(t.shape[0]) is int


def test_block_longer_than_dimension_leaves_it_uncut():
    t = Tiling.regular((8, 3), (100, 3))
    assert t.grid == (1, 1)
    assert t.block_shape == (8, 3)  # canonical: the shape of tile (0, 0)
    assert t == Tiling.regular((8, 3), (8, 3))
    assert hash(t) == hash(Tiling.regular((8, 3), (8, 3)))


def test_zero_size_dimension_has_one_empty_tile():
    t = Tiling.regular((0, 8), (4, 4))
    assert t.grid == (1, 2)
    assert t.num_partitions == 2
    assert t.partitions[(0, 1)] == {"start": (0, 4), "shape": (0, 4)}
    assert t.boundaries == ([0, 0], [0, 4, 8])
    assert t == Tiling.from_boundaries([[0, 0], [0, 4, 8]])
    assert t == Tiling.regular((0, 8), (0, 4))  # block 0 is fine for an empty dimension
    with pytest.raises(IndexError):
        t.locate((0, 0))


def test_zero_dimensional_tiling():
    t = Tiling.regular((), ())
    assert t.grid == ()
    assert t.num_partitions == 1
    assert list(t.partitions) == [()]
    assert t.partitions[()] == {"start": (), "shape": ()}
    assert t.locate(()) == ()


@pytest.mark.parametrize(
    ("shape", "block", "exc", "path"),
    [
        ((8,), (0,), PartitionedError, "block_shape[0]"),
        ((8, 8), (4, -1), PartitionedError, "block_shape[1]"),
        ((8, 8), (4,), PartitionedError, "block_shape"),
        ((8, 8), (4, 2.5), PartitionedTypeError, "block_shape[1]"),
        ((8, 8), (4, True), PartitionedTypeError, "block_shape[1]"),
        ((-1,), (4,), PartitionedError, "shape[0]"),
        ("ab", (4,), PartitionedTypeError, "shape"),
        (8, (4,), PartitionedTypeError, "shape"),
        ((8,), None, PartitionedTypeError, "block_shape"),
    ],
    ids=[
        "zero-block",
        "negative-block",
        "block-ndim",
        "float-block",
        "bool-block",
        "negative-shape",
        "str-shape",
        "int-shape",
        "none-block",
    ],
)
def test_regular_rejects_bad_arguments(shape, block, exc, path):
    with pytest.raises(exc) as info:
        Tiling.regular(shape, block)
    assert type(info.value) is exc
    assert info.value.path == path
    assert str(info.value).startswith(f"{path}: expected ")


# -- from_boundaries ---------------------------------------------------------------------


def test_from_boundaries_irregular():
    t = Tiling.from_boundaries([[0, 3, 8], [0, 8]])
    assert t.shape == (8, 8)
    assert t.grid == (2, 1)
    assert not t.is_regular
    assert t.block_shape is None
    assert t.boundaries == ((0, 3, 8), [0, 8])
    assert t.partitions[(1, 0)] == {"start": (3, 0), "shape": (5, 8)}
    assert t.locate((2, 7)) == (0, 0)
    assert t.locate((3, 0)) == (1, 0)


def test_from_boundaries_canonicalises_regular_cuts():
    irregular_looking = Tiling.from_boundaries([[0, 4, 8, 10], (0, 5)])
    assert irregular_looking.is_regular
    assert irregular_looking == Tiling.regular((10, 5), (4, 5))
    assert hash(irregular_looking) == hash(Tiling.regular((10, 5), (4, 5)))
    assert Tiling.from_boundaries([[0, 4, 9]]) != Tiling.regular((9,), (4,))


def test_from_boundaries_round_trips_boundaries_of_a_huge_regular_tiling():
    t = Tiling.regular((10**12,), (1,))
    assert Tiling.from_boundaries(t.boundaries) == t


def test_empty_tiles_inside_a_dimension():
    t = Tiling.from_boundaries([[0, 4, 4, 8]])
    assert t.grid == (3,)
    assert t.partitions[(1,)] == {"start": (4,), "shape": (0,)}
    assert t.locate(4) == (2,)
    assert t.locate(3) == (0,)
    trailing = Tiling.from_boundaries([[0, 8, 8]])
    assert trailing.locate(7) == (0,)


@pytest.mark.parametrize(
    ("bounds", "exc", "path"),
    [
        ([[1, 4, 8]], PartitionedError, "boundaries[0][0]"),
        ([[0, 8], [0, 4, 2]], PartitionedError, "boundaries[1][2]"),
        ([[0]], PartitionedError, "boundaries[0]"),
        ([[0, 4.0]], PartitionedTypeError, "boundaries[0][1]"),
        ([[0, -4]], PartitionedError, "boundaries[0][1]"),
        (["08"], PartitionedTypeError, "boundaries[0]"),
        ("08", PartitionedTypeError, "boundaries"),
        (None, PartitionedTypeError, "boundaries"),
    ],
    ids=["nonzero-first", "decreasing", "one-point", "float", "negative", "str-dim", "str", "none"],
)
def test_from_boundaries_rejects_bad_cut_points(bounds, exc, path):
    with pytest.raises(exc) as info:
        Tiling.from_boundaries(bounds)
    assert type(info.value) is exc
    assert info.value.path == path


# -- exact cover, locate, slices ---------------------------------------------------------


@pytest.mark.parametrize("t", SMALL_TILINGS, ids=repr)
def test_tiles_cover_every_element_exactly_once(t):
    assert (coverage(t) == 1).all()
    assert len(t.partitions) == t.num_partitions == len(list(t.partitions))


@pytest.mark.parametrize("t", SMALL_TILINGS, ids=repr)
def test_locate_finds_the_tile_holding_each_element(t):
    for index in itertools.product(*map(range, t.shape)):
        pos = t.locate(index)
        entry = t.partitions[pos]
        for i, s, n in zip(index, entry["start"], entry["shape"], strict=True):
            assert s <= i < s + n


def test_locate_negative_and_scalar_indices():
    t = Tiling.regular((10, 8), (4, 4))
    assert t.locate((-1, -1)) == (2, 1)
    assert t.locate((np.int64(5), 0)) == (1, 0)
    one_d = Tiling.regular((10,), (4,))
    assert one_d.locate(9) == (2,)
    assert one_d.locate(-10) == (0,)


@pytest.mark.parametrize(
    "index", [(10, 0), (0, 8), (-11, 0), (1,), (1, 2, 3), (1.0, 0), ("a", 0), 3]
)
def test_locate_rejects_indices_outside_the_shape(index):
    t = Tiling.regular((10, 8), (4, 4))
    with pytest.raises(IndexError):
        t.locate(index)


def test_slices_select_the_tile_from_an_array():
    x = np.arange(80).reshape(10, 8)
    t = Tiling.regular((10, 8), (4, 4))
    assert t.slices((2, 1)) == (slice(8, 10), slice(4, 8))
    np.testing.assert_array_equal(x[t.slices((2, 1))], x[8:10, 4:8])
    with pytest.raises(KeyError):
        t.slices((3, 0))


# -- the lazy partitions mapping ---------------------------------------------------------


def test_partitions_is_a_read_only_mapping():
    parts = Tiling.regular((8, 8), (4, 4)).partitions
    assert isinstance(parts, Mapping)
    assert isinstance(parts, TilingPartitions)
    with pytest.raises(TypeError):
        parts[(0, 0)] = {"start": (0, 0), "shape": (1, 1)}  # type: ignore[index]
    entry = parts[(0, 0)]
    entry["start"] = (9, 9)
    assert parts[(0, 0)]["start"] == (0, 0)  # each lookup builds a fresh entry


def test_partitions_iterates_in_c_order():
    t = Tiling.regular((4, 6), (2, 2))
    assert list(t.partitions) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert list(t.partitions.keys())[-1] == (1, 2)


@pytest.mark.parametrize(
    ("key", "present"),
    [
        ((0, 0), True),
        ((1, 2), True),
        ((np.int64(1), 2), True),
        ((2, 0), False),
        ((0, -1), False),
        ((0,), False),
        ([0, 0], False),
        ((True, 0), False),
        ("00", False),
        (None, False),
    ],
)
def test_partitions_contains_and_getitem(key, present):
    parts = Tiling.regular((4, 6), (2, 2)).partitions
    assert (key in parts) is present
    if present:
        assert parts[key]["shape"] == (2, 2)
    else:
        with pytest.raises(KeyError):
            parts[key]


def test_partitions_equality_and_pickle():
    t = Tiling.regular((10, 8), (4, 4))
    assert t.partitions == t.partitions
    assert t.partitions == dict(t.partitions)
    assert t.partitions != Tiling.regular((10, 8), (5, 4)).partitions
    restored = pickle.loads(pickle.dumps(t.partitions))
    assert isinstance(restored, TilingPartitions)
    assert restored.tiling == t


def test_million_tile_regular_grid_costs_o_ndim():
    tracemalloc.start()
    try:
        t = Tiling.regular((1000, 1000), (1, 1))
        parts = t.partitions
        n = len(parts)
        last = parts[(999, 999)]
        first = next(iter(parts))
        inside = (500, 7) in parts
        cuts = t.boundaries
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == t.num_partitions == 10**6
    assert last == {"start": (999, 999), "shape": (1, 1)}
    assert first == (0, 0)
    assert inside
    assert len(cuts[0]) == 1001
    assert peak < 64 * 1024
    assert len(pickle.dumps(t)) < 1024


def test_iteration_over_a_huge_grid_is_lazy():
    t = Tiling.regular((10**12, 3), (1, 1))
    parts = t.partitions
    assert list(itertools.islice(parts, 4)) == [(0, 0), (0, 1), (0, 2), (1, 0)]
    big = Tiling.from_boundaries([list(range(70_000)), [0, 1, 2]])
    assert list(itertools.islice(big.partitions, 3)) == [(0, 0), (0, 1), (1, 0)]
    assert list(big.partitions)[-1] == (69_998, 1)
    assert len(list(big.partitions)) == len(big.partitions) == 69_999 * 2


# -- RegularCuts -------------------------------------------------------------------------


def test_regular_cuts_sequence():
    cuts = Tiling.regular((10,), (4,)).boundaries[0]
    assert isinstance(cuts, RegularCuts)
    assert len(cuts) == 4
    assert list(cuts) == [0, 4, 8, 10]
    assert cuts[-1] == 10
    assert cuts[1:3] == (4, 8)
    assert cuts == (0, 4, 8, 10)
    assert cuts == [0, 4, 8, 10]
    assert cuts != [0, 4, 8]
    assert cuts != "0,4"
    assert 8 in cuts
    assert 10 in cuts
    assert 6 not in cuts
    assert 12 not in cuts
    assert hash(cuts) == hash((0, 4, 8, 10))
    assert pickle.loads(pickle.dumps(cuts)) == cuts
    with pytest.raises(IndexError):
        cuts[4]


def test_regular_cuts_are_canonical_and_checked():
    assert RegularCuts(8, 100) == RegularCuts(8, 8) == [0, 8]
    assert hash(RegularCuts(8, 100)) == hash(RegularCuts(8, 8))
    assert list(RegularCuts(0, 5)) == [0, 0]
    with pytest.raises(PartitionedError) as info:
        RegularCuts(8, 0)
    assert info.value.path == "block"
    with pytest.raises(PartitionedError) as info:
        RegularCuts(-1, 2)
    assert info.value.path == "size"
    with pytest.raises(PartitionedTypeError):
        RegularCuts(8, 2.0)


# -- value semantics ---------------------------------------------------------------------


def test_tiling_is_immutable_and_not_constructed_directly():
    t = Tiling.regular((8,), (4,))
    with pytest.raises(AttributeError):
        t.shape = (9,)  # type: ignore[misc]
    with pytest.raises(AttributeError):
        t._axes = ()
    with pytest.raises(TypeError):
        Tiling((8,), (4,))


@pytest.mark.parametrize("t", SMALL_TILINGS, ids=repr)
def test_pickle_hash_equality_and_repr_round_trip(t):
    restored = pickle.loads(pickle.dumps(t))
    assert restored == t
    assert hash(restored) == hash(t)
    assert eval(repr(t), {"Tiling": Tiling}) == t
    assert len({t, restored}) == 1


def test_equality_against_other_types_and_tilings():
    t = Tiling.regular((8, 8), (4, 4))
    assert t != (8, 8)
    assert t != Tiling.regular((8, 8), (4, 8))
    assert t != Tiling.regular((8, 9), (4, 4))
    assert repr(t) == "Tiling.regular((8, 8), (4, 4))"


def test_repr_of_a_large_irregular_tiling_is_short():
    t = Tiling.from_boundaries([[0, *range(3, 3000, 3), 3001]])
    assert not t.is_regular
    assert len(repr(t)) < 100
    assert "grid=(1000,)" in repr(t)
