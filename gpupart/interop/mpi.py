"""mpi4py programs and gpupart in one job: the same ranks, each rank's arrays shared both ways.

A job started by ``mpiexec`` takes MPI's ranks (``gpupart.init()`` reads the launcher's
variables and meets the other ranks over ``MPI.COMM_WORLD``), so rank ``r`` of gpupart is
rank ``r`` of MPI and every tile's location names it. An mpi4py program hands each rank's
array to gpupart with ``gpupart.from_local(piece)`` (no copy: the piece is the rank's
tile) and gets it back with :func:`local_array` (the same memory), or a frame's rows with
:func:`local_frame`. :func:`check_comm` confirms that a communicator's ranks are the job's.

::

    from mpi4py import MPI
    import gpupart
    from gpupart.interop import mpi as gpmpi

    rt = gpmpi.check_comm(MPI.COMM_WORLD)          # rt.rank == MPI.COMM_WORLD.Get_rank()
    x = gpupart.from_local(piece)                  # this rank's piece, no copy
    y = x * 2 + 1                                  # any gpupart operation
    mine = gpmpi.local_array(y)                    # this rank's part, back to MPI code
"""

from __future__ import annotations

from typing import Any

from gpupart.containers.creation import runtime_or_init
from gpupart.containers.darray import DistArray
from gpupart.errors import InteropError
from gpupart.interop._local import local_block

__all__ = ["check_comm", "local_array", "local_frame"]


def check_comm(comm: Any = None) -> Any:
    """Return gpupart's runtime after checking that ``comm``'s ranks are the job's (collective).

    ``comm`` is an mpi4py communicator (default ``MPI.COMM_WORLD``); it must hold every
    rank of the job with the same numbers, as ``COMM_WORLD`` does for a job started by
    ``mpiexec``. Otherwise every rank raises :class:`~gpupart.InteropError` saying
    which rank has which number where. Starts gpupart (``gpupart.init()``) if needed.
    """
    if comm is None:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    rt = runtime_or_init()
    mpi_rank, mpi_size = int(comm.Get_rank()), int(comm.Get_size())
    seen = rt.allgather((mpi_rank, mpi_size))
    wrong = [
        f"gpupart rank {r} is MPI rank {m} of {s}"
        for r, (m, s) in enumerate(seen)
        if (m, s) != (r, rt.size)
    ]
    if wrong:
        raise InteropError(
            f"check_comm: expected the communicator to number the job's {rt.size} ranks as"
            f" gpupart does, found {'; '.join(wrong)} (use MPI.COMM_WORLD of a job started by"
            " mpiexec, or a communicator congruent with it)"
        )
    return rt


def local_array(x: DistArray) -> Any:
    """Return this rank's part of ``x`` as one array, sharing memory where it is one tile.

    For an array made by ``gpupart.from_local(piece)`` this is ``piece`` itself; for one
    block per rank (the default tiling) it is the rank's tile. Several tiles forming one
    box are joined (a copy); a rank holding none gets an empty array. No communication.
    """
    if not isinstance(x, DistArray):
        raise TypeError(f"x: expected a gpupart DistArray, found {type(x).__name__}")
    return local_block(x)


def local_frame(df: Any) -> Any:
    """Return this rank's rows of a DistFrame as one pandas/cuDF frame (no communication).

    The rank's partition itself when it holds one (as ``gpupart.from_local_frames`` makes),
    its partitions concatenated in order when several, an empty frame of the columns when
    none.
    """
    from gpupart.containers.dframe import DistFrame

    if not isinstance(df, DistFrame):
        raise TypeError(f"df: expected a gpupart DistFrame, found {type(df).__name__}")
    parts = [df.local_partitions[i] for i in sorted(df.local_partitions)]
    if len(parts) == 1:
        return parts[0]
    module = df.runtime.backend.dataframe_module()
    if not parts:
        return df.meta.iloc[:0]
    return module.concat(parts, ignore_index=True)
