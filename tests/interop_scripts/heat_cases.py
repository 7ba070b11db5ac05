"""Heat and gpupart in one MPI job (``gpupart.interop.heat``): tiles shared both ways.

Run as ``mpiexec -n N python heat_cases.py`` with Heat installed (``tests/heat_venv.sh``).
Heat's arrays (split along rows, along columns, uneven, not split) become gpupart arrays
whose tiles are the very memory of Heat's local tensors (NumPy's data pointer equals
torch's ``data_ptr``), and gpupart's arrays become Heat's the same way; values are checked
against NumPy on the gathered whole, writes through one side are seen by the other, a
layout Heat cannot hold is repartitioned (or refused on every rank when no layout works),
and a Heat communicator numbering the ranks differently is refused. Every rank emits
``@plan``, ``@case`` after each case passes, ``@done``.
"""

from __future__ import annotations

from typing import Any

import heat as ht
import numpy as np
from _interop import Cases
from _mp import expect, raises
from mpi4py import MPI

import gpupart
from gpupart.interop import heat as gh

cases = Cases()
case = cases.case
comm = MPI.COMM_WORLD


def ptr(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


def only_tile(x: gpupart.DistArray) -> np.ndarray:
    tiles = list(x.local_tiles.values())
    expect(len(tiles) == 1, f"rank holds {len(tiles)} tiles")
    return tiles[0]


def piece_of(rank: int) -> np.ndarray:
    """Rank ``rank``'s rows: ``rank + 2`` of them, 3 wide, values naming the rank."""
    n = rank + 2
    return np.arange(n * 3, dtype=np.float64).reshape(n, 3) + 100.0 * rank


@case
def ranks_are_heats(rt: Any) -> None:
    a = ht.zeros((4,), split=0)
    expect((a.comm.rank, a.comm.size) == (rt.rank, rt.size), "Heat's comm is the job's")
    expect(gpupart.interop.mpi.check_comm(a.comm.handle) is rt, "check_comm")


@case
def heat_rows_become_tiles_without_copy(rt: Any) -> None:
    for dtype in (ht.float64, ht.float32, ht.int64):
        n = 5 * rt.size + 2  # uneven: Heat gives the first ranks one more
        a = ht.arange(n * 4, dtype=dtype, split=0).reshape((n, 4))
        x = gh.from_heat(a)
        tile = only_tile(x)
        expect(ptr(tile) == a.larray.data_ptr(), f"{dtype}: the tile is Heat's tensor")
        expect(tile.shape == tuple(a.lshape) and x.shape == (n, 4), f"{tile.shape} {x.shape}")
        expect(x.dtype == a.larray.numpy().dtype, f"dtype {x.dtype}")
        np.testing.assert_array_equal(x.to_numpy(), a.numpy())


@case
def heat_columns_become_tiles_without_copy(rt: Any) -> None:
    a = ht.random.randn(6, 2 * rt.size + 1, split=1, dtype=ht.float64)
    x = gh.from_heat(a)
    expect(x.tiling.grid == (1, rt.size), f"grid {x.tiling.grid}")
    expect(ptr(only_tile(x)) == a.larray.data_ptr(), "the tile is Heat's tensor")
    np.testing.assert_array_equal(x.to_numpy(), a.numpy())


@case
def writes_are_seen_both_ways(rt: Any) -> None:
    a = ht.zeros((3 * rt.size, 2), split=0, dtype=ht.float64)
    x = gh.from_heat(a)
    a.larray += rt.rank + 1.0  # Heat writes, in place
    expect(float(x.__array_namespace__().sum(x)) == 6.0 * sum(range(1, rt.size + 1)), "seen")
    only_tile(x)[...] = -1.0  # gpupart's tile is written
    expect(float(a.sum().item()) == -6.0 * rt.size, "Heat sees gpupart's write")


@case
def pieces_become_heat_without_copy(rt: Any) -> None:
    piece = piece_of(rt.rank)
    x = gpupart.from_local(piece)
    a = gh.to_heat(x)
    expect(isinstance(a, ht.DNDarray) and a.split == 0, f"{type(a)} split {a.split}")
    expect(a.larray.data_ptr() == ptr(piece), "Heat's tensor is the piece")
    expect(tuple(a.gshape) == x.shape and tuple(a.lshape) == piece.shape, f"{a.gshape}")
    whole = np.concatenate(comm.allgather(piece))
    np.testing.assert_array_equal(a.numpy(), whole)
    np.testing.assert_allclose(ht.mean(a, axis=0).numpy(), whole.mean(axis=0))
    expect(not a.balanced, "uneven pieces: Heat knows the array is not balanced")


@case
def round_trips_keep_the_memory(rt: Any) -> None:
    piece = piece_of(rt.rank)
    back = gh.from_heat(gh.to_heat(gpupart.from_local(piece)))
    expect(only_tile(back) is piece or np.shares_memory(only_tile(back), piece), "gpupart")
    a = ht.arange(4 * rt.size, dtype=ht.float32, split=0)
    again = gh.to_heat(gh.from_heat(a))
    expect(again.larray.data_ptr() == a.larray.data_ptr(), "Heat's tensor came back")
    np.testing.assert_array_equal(again.numpy(), a.numpy())
    cols = gpupart.from_local(np.ascontiguousarray(piece.T), axis=1)
    c = gh.to_heat(cols)
    expect(c.split == 1 and c.larray.data_ptr() == ptr(only_tile(cols)), f"split {c.split}")


@case
def unsplit_arrays_are_replicated(rt: Any) -> None:
    a = ht.arange(12, dtype=ht.float64).reshape((4, 3))  # split=None: whole on every rank
    x = gh.from_heat(a)
    expect((x.owners == -1).all(), f"owners {x.owners}")
    expect(ptr(only_tile(x)) == a.larray.data_ptr(), "each rank's copy is Heat's own")
    np.testing.assert_array_equal(x.to_numpy(), np.arange(12.0).reshape(4, 3))
    b = gh.to_heat(x)
    expect(b.split is None and b.larray.data_ptr() == a.larray.data_ptr(), f"{b.split}")


@case
def other_layouts_are_repartitioned_or_refused(rt: Any) -> None:
    whole = np.arange(40, dtype=np.int64).reshape(20, 2)
    x = gpupart.asarray(whole, tiles=(3, 2))  # several tiles per rank: repartitioned
    a = gh.to_heat(x)
    expect(a.split == 0, f"split {a.split}")
    np.testing.assert_array_equal(a.numpy(), whole)
    lopsided = gpupart.from_local(whole if rt.rank == 0 else whole[:0])  # rank 0 holds all
    np.testing.assert_array_equal(gh.to_heat(lopsided).numpy(), whole)
    if rt.size > 1:  # one row cannot be split: Heat would read rank 0's tensor as whole
        one = gpupart.asarray(np.ones((1, 3)))
        raises(gpupart.PartitionedError, lambda: gh.to_heat(one), "Heat")
    raises(TypeError, lambda: gh.to_heat(whole), "DistArray")


@case
def a_renumbered_heat_communicator_is_refused(rt: Any) -> None:
    if rt.size == 1:
        return
    backwards = comm.Split(0, rt.size - 1 - rt.rank)
    a = ht.zeros((2 * rt.size,), split=0, comm=ht.MPICommunication(backwards))
    raises(gpupart.InteropError, lambda: gh.from_heat(a), "gpupart rank 0 is MPI rank")
    backwards.Free()


def main() -> None:
    rt = gpupart.init(timeout=60)
    cases.run(rt)
    rt.close()


if __name__ == "__main__":
    main()
