"""An mpi4py program and gpupart in one job: ranks agree, arrays go both ways without copies.

Run as ``mpiexec -n N python mpi_cases.py``; mpi4py is imported before gpupart, as an MPI
program does. Each rank's piece (its values depend on the rank, lengths uneven, a rank
with no rows at 3 ranks) goes to gpupart with ``from_local`` and comes back with
``local_array`` as the same memory; gpupart's results agree with MPI's own collectives on
the same pieces. Every rank emits ``@plan``, ``@case`` after each case passes, ``@done``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from _interop import Cases
from _mp import expect, raises
from mpi4py import MPI  # before gpupart, as an mpi4py program would

import gpupart
from gpupart.interop import mpi as gpmpi

cases = Cases()
case = cases.case
comm = MPI.COMM_WORLD


def piece_of(rank: int, width: int = 3) -> np.ndarray:
    """Rank ``rank``'s rows: ``rank + 2`` of them, none for rank 2 (uneven, one empty)."""
    n = 0 if rank == 2 else rank + 2
    return (np.arange(n * width, dtype=np.float64).reshape(n, width) + 1000.0 * rank) / 7.0


@case
def ranks_are_mpi_ranks(rt: Any) -> None:
    expect(rt is gpmpi.check_comm(), "check_comm returns the running runtime")
    expect((rt.rank, rt.size) == (comm.Get_rank(), comm.Get_size()), "rank and size")
    expect(rt.location.rank == comm.Get_rank(), f"location.rank {rt.location.rank}")
    expect([p.rank for p in rt.peers] == list(range(rt.size)), f"peers {rt.peers}")
    gpmpi.check_comm(comm.Dup())  # a congruent communicator is as good


@case
def tile_locations_name_the_mpi_rank(rt: Any) -> None:
    x = gpupart.from_local(piece_of(rt.rank))
    parted = x.__partitioned__
    for pos, entry in parted["partitions"].items():
        expect(entry["location"][0].rank == pos[0], f"{pos}: {entry['location']}")
    expect(parted["locals"] == [(rt.rank, 0)], f"locals {parted['locals']}")


@case
def from_local_and_back_share_memory(rt: Any) -> None:
    piece = piece_of(rt.rank)
    x = gpupart.from_local(piece)
    mine = gpmpi.local_array(x)
    expect(mine is piece, "local_array returns the rank's own array")
    expect(next(iter(x.local_tiles.values())) is piece, "the tile is the piece")
    whole = np.concatenate(comm.allgather(piece))
    np.testing.assert_array_equal(x.to_numpy(), whole)
    expect(x.shape == whole.shape, f"shape {x.shape}")
    piece[...] += 1.0  # the MPI program writes: gpupart sees it, nothing was copied
    total = float(x.__array_namespace__().sum(x))
    expect(abs(total - comm.allreduce(float(piece.sum()))) < 1e-9, f"sum {total}")


@case
def results_come_back_to_mpi(rt: Any) -> None:
    piece = piece_of(rt.rank)
    x = gpupart.from_local(piece)
    y = x * 2.0 + 1.0
    mine = gpmpi.local_array(y)
    np.testing.assert_array_equal(mine, piece * 2.0 + 1.0)
    expect(mine is next(iter(y.local_tiles.values())), "no copy out")
    sums = np.zeros(3)
    comm.Allreduce(np.ascontiguousarray(mine.sum(axis=0)), sums, op=MPI.SUM)
    np.testing.assert_allclose(sums, y.__array_namespace__().sum(y, axis=0).to_numpy())


@case
def columns_joined_along_axis_1(rt: Any) -> None:
    piece = np.ascontiguousarray(piece_of(rt.rank, 4)[:2].T) if rt.rank != 2 else np.zeros((4, 0))
    x = gpupart.from_local(piece, axis=1)
    expect(gpmpi.local_array(x) is piece, "axis-1 piece handed back as it is")
    np.testing.assert_array_equal(x.to_numpy(), np.concatenate(comm.allgather(piece), axis=1))


@case
def several_tiles_are_joined_and_none_is_empty(rt: Any) -> None:
    whole = np.arange(48, dtype=np.int64).reshape(12, 4)
    x = gpupart.asarray(whole, tiles=(2, 4))  # 6 tiles in runs per rank
    mine = gpmpi.local_array(x)
    starts = [x.tiling.start(p)[0] for p in sorted(x.local_tiles)]
    lo = min(starts)
    np.testing.assert_array_equal(mine, whole[lo : lo + mine.shape[0]])
    expect(mine.shape[0] == 2 * len(x.local_tiles), f"rows {mine.shape}")
    few = gpupart.asarray(np.arange(2.0), tiles=(1,))  # 2 tiles: at 3 ranks one has none
    got = gpmpi.local_array(few)
    if not few.local_tiles:
        expect(got.shape == (0,) and got.dtype == np.float64, f"empty {got.shape} {got.dtype}")
    elif len(few.local_tiles) == 1:
        expect(got is next(iter(few.local_tiles.values())), "one tile: itself")
    else:
        np.testing.assert_array_equal(got, np.arange(2.0))
    grid = gpupart.asarray(np.arange(24.0).reshape(4, 6), grid=(2, 3))  # 6 tiles, C order
    held = np.array(sorted(grid.local_tiles))
    box = int(np.prod(held.max(axis=0) - held.min(axis=0) + 1)) == len(held)
    if rt.size == 3:  # ranks hold (0,0)(0,1) / (0,2)(1,0) / (1,1)(1,2): rank 1 has no box
        expect(box == (rt.rank != 1), f"rank {rt.rank} holds {held.tolist()}")
    if box:
        lo = held.min(axis=0) * np.array([2, 2])
        got = gpmpi.local_array(grid)
        want = np.arange(24.0).reshape(4, 6)[
            lo[0] : lo[0] + got.shape[0], lo[1] : lo[1] + got.shape[1]
        ]
        np.testing.assert_array_equal(got, want)
    else:
        raises(gpupart.PartitionedError, lambda: gpmpi.local_array(grid), "one box")
    raises(TypeError, lambda: gpmpi.local_array(np.arange(3)), "DistArray")


@case
def frames_both_ways(rt: Any) -> None:
    n = 0 if rt.rank == 2 else 3 + rt.rank
    frame = pd.DataFrame({"a": np.arange(n) + 100 * rt.rank, "b": np.linspace(0, 1, n)})
    df = gpupart.from_local_frames(frame)
    mine = gpmpi.local_frame(df)
    pd.testing.assert_frame_equal(mine, frame)
    if n:
        expect(np.shares_memory(mine["b"].to_numpy(), frame["b"].to_numpy()), "rows not copied")
    whole = pd.concat(comm.allgather(frame), ignore_index=True)
    pd.testing.assert_frame_equal(df.to_pandas(), whole)
    raises(TypeError, lambda: gpmpi.local_frame(frame), "DistFrame")


@case
def a_renumbered_communicator_is_refused(rt: Any) -> None:
    if rt.size == 1:
        return
    backwards = comm.Split(0, rt.size - 1 - rt.rank)  # the same processes, numbered backwards
    try:
        raises(
            gpupart.InteropError, lambda: gpmpi.check_comm(backwards), "gpupart rank 0 is MPI rank"
        )
    finally:
        backwards.Free()


def main() -> None:
    rt = gpupart.init(timeout=60)
    cases.run(rt)
    rt.close()


if __name__ == "__main__":
    main()
