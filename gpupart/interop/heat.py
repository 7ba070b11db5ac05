"""Heat's DNDarrays and gpupart's arrays in one MPI job, each rank's tile shared both ways.

Heat is SPMD over MPI: a ``DNDarray`` split along an axis holds one torch tensor per rank,
and its ``__partitioned__`` lists that tensor as the rank's one local partition, located
by the rank's number. In a job started by ``mpiexec`` gpupart's ranks are MPI's, so:

* :func:`from_heat` adopts each rank's tensor as its tile (``from_partitioned``; a NumPy
  view of the tensor's memory, no copy); an array Heat keeps whole on every rank
  (``split=None``) becomes a replicated array, each rank keeping its own copy.
* :func:`to_heat` hands each rank's tile to ``heat.from_partitioned`` (which wraps it with
  ``torch.from_numpy``, no copy) through :class:`HeatPartitioned`, the ``__partitioned__``
  Heat reads: rank ints as locations, exactly one local partition per rank, partitions
  in rank order along one axis, no rank holding all of it (Heat infers the split axis
  from where a rank's tensor is shorter). An array in another layout is first
  repartitioned to one block per rank along its first axis (a copy).

The memory stays shared: a write through either side is seen by the other. Both checks
that the communicator's ranks are the job's (:func:`gpupart.interop.mpi.check_comm`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpupart.containers.creation import runtime_or_init
from gpupart.containers.darray import REPLICATED, DistArray
from gpupart.errors import PartitionedError
from gpupart.interop.mpi import check_comm
from gpupart.protocol import Tiling

__all__ = ["HeatPartitioned", "from_heat", "to_heat"]


def from_heat(x: Any) -> DistArray:
    """Return a DistArray whose tiles are the DNDarray ``x``'s local tensors (collective).

    No copy: each rank's tile is a NumPy view of its tensor (CuPy on a GPU job). ``x``
    must live on ``MPI.COMM_WORLD`` of the job (or a communicator numbering the ranks the
    same way).
    """
    from gpupart.containers.partitioned import from_partitioned

    rt = check_comm(x.comm.handle)
    if x.split is not None:
        return from_partitioned(x)
    tile = rt.backend.xp.asarray(x.larray)
    tiling = Tiling.from_boundaries([[0, n] for n in x.gshape])
    owners = np.full(tiling.grid, REPLICATED, dtype=np.int32)
    return DistArray(rt, tiling, owners, tile.dtype, {(0,) * tile.ndim: tile})


class HeatPartitioned:
    """A DistArray's tiles as ``heat.from_partitioned`` takes them (see the module).

    ``__partitioned__``: ``shape``, ``partition_tiling``, ``partitions`` (``start``,
    ``shape``, ``data`` on the owning rank else ``None``, ``location`` ``[rank]``),
    ``locals`` (this rank's one position) and an identity ``get``. Build it on every rank
    with :meth:`of`.
    """

    def __init__(self, parted: dict[str, Any]) -> None:
        self._parted = parted

    @property
    def __partitioned__(self) -> dict[str, Any]:
        """The dict Heat reads (SPMD: this rank's view)."""
        return self._parted

    @classmethod
    def of(cls, x: DistArray) -> HeatPartitioned:
        """Describe ``x`` for Heat (collective only when ``x`` must be repartitioned)."""
        x = _heat_layout(x)
        rt = x.runtime
        tiling = x.tiling
        replicated = bool((x.owners == REPLICATED).all())
        partitions = {}
        for pos in np.ndindex(*tiling.grid):
            owner = rt.rank if replicated else int(x.owners[pos])
            partitions[pos] = {
                "start": tiling.start(pos),
                "shape": tiling.tile_shape(pos),
                "data": _for_heat(x.local_tiles[pos]) if owner == rt.rank else None,
                "location": [owner],
            }
        mine = [pos for pos, entry in partitions.items() if entry["data"] is not None]
        return cls(
            {
                "shape": x.shape,
                "partition_tiling": tiling.grid,
                "partitions": partitions,
                "locals": mine,
                "get": _identity,
            }
        )


def to_heat(x: DistArray, *, comm: Any = None) -> Any:
    """Return a Heat DNDarray whose local tensors are ``x``'s tiles (collective).

    No copy when ``x`` has one tile per rank along one axis in rank order (what
    ``from_local``, the default tiling and :func:`from_heat` give) or one tile on every
    rank; otherwise ``x`` is first repartitioned so. ``comm``: Heat's communicator
    (default Heat's, ``MPI.COMM_WORLD``).
    """
    import heat

    if not isinstance(x, DistArray):
        raise TypeError(f"x: expected a gpupart DistArray, found {type(x).__name__}")
    comm = heat.core.communication.sanitize_comm(comm)
    check_comm(comm.handle)
    return heat.from_partitioned(HeatPartitioned.of(x), comm=comm)


def _heat_layout(x: DistArray) -> DistArray:
    """``x`` when Heat can hold its tiles as they are, else repartitioned (see the module)."""
    rt = runtime_or_init()
    if math.prod(x.tiling.grid) == 1 and x.owners.reshape(-1)[0] == REPLICATED:
        return x
    if not _heat_can_hold(x, rt.size):
        x = x.repartition()
        if not _heat_can_hold(x, rt.size):
            raise PartitionedError(
                "x",
                "an array Heat can split over the ranks: more entries along its first axis"
                " than one rank's share",
                f"shape {x.shape} on {rt.size} ranks (Heat reads a rank holding the whole"
                " axis as not split)",
            )
    return x


def _heat_can_hold(x: DistArray, size: int) -> bool:
    """One tile per rank in rank order along at most one axis, no rank with all of it."""
    grid = x.tiling.grid
    split = [d for d, n in enumerate(grid) if n > 1]
    if len(split) > 1 or math.prod(grid) != size:
        return False
    if not np.array_equal(x.owners.reshape(-1), np.arange(size)):
        return False
    if not split:
        return True
    cuts = x.tiling.boundaries[split[0]]
    return all(cuts[r + 1] - cuts[r] < x.shape[split[0]] for r in range(size))


def _for_heat(tile: Any) -> Any:
    """Return a tile as Heat takes it: NumPy as it is, device memory as a torch tensor."""
    if isinstance(tile, np.ndarray):
        return tile
    import torch

    return torch.from_dlpack(tile)


def _identity(obj: Any) -> Any:
    """Heat's ``get``: the data is the rank's own tile."""
    return obj
