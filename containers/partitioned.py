"""``__partitioned__`` out of a :class:`DistArray`, and any producer's into one.

Out: the spec's dict (``shape``, ``partition_tiling``, ``partitions``, ``get``, ``locals``)
plus ``dtype``. An entry's ``data`` is the tile on the rank that owns it and a
:class:`~gpupart.Handle` elsewhere; ``get`` turns handles (one or a list) into arrays from
any rank; each ``location`` is a :class:`~gpupart.Location` (host, rank, PCI bus id, device,
UUID, NUMA node, memory kind, stream). Building it publishes the tiles' handles: collective.

In (:func:`from_partitioned`, collective): another gpupart array is taken as it is; SPMD
producers (``locals`` present: Heat, MPI programs) give each rank the tiles it lists, adopted
without a copy; Dask/Ray/Modin-style producers (futures as ``data``, no ``locals``) have each
tile resolved with ``get`` by the rank chosen to own it (the rank its location names when it
is one of this job's, else tiles in C order over the ranks). A malformed dict is the
validator's error on every rank.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gpupart.containers import layout
from gpupart.containers.creation import runtime_or_init
from gpupart.containers.darray import REPLICATED, DistArray

from gpupart import protocol
from gpupart.errors import GpupartError, PartitionedError
from gpupart.protocol import Tiling
from gpupart.tiles.handles import Handle

__all__ = ["HandleGetter", "export", "from_partitioned"]


def export(x: DistArray) -> dict[str, Any]:
    """Return ``x.__partitioned__`` (collective; see the module docstring; it pickles)."""
    rt = x.runtime
    table = x.handles()
    peers = rt.peers
    tiles = x.local_tiles
    data, location = {}, {}
    for pos in layout.positions(x.tiling):
        data[pos] = tiles[pos] if pos in tiles else table.get(pos)
        owner = x.owner_of(pos)
        if owner == REPLICATED:
            location[pos] = list(peers)
        else:
            handle = table.get(pos)
            location[pos] = [handle.location if handle is not None else peers[owner]]
    return protocol.build(
        x.shape,
        x.tiling,
        data,
        location,
        HandleGetter(),
        locals=list(tiles),
        lazy=False,
        dtype=x.dtype.str,
    )


class HandleGetter:
    """The ``get`` of a gpupart array's ``__partitioned__``: handles (one or a list) to arrays.

    Resolves through this process's runtime when called, so it pickles and works on any
    rank of the job; anything that is not a handle (a local tile) is returned as it is.
    """

    def __call__(self, handles: Any) -> Any:
        """Return the array of ``handles`` (or a list of arrays for a list)."""
        import gpupart

        rt = gpupart.runtime()
        if isinstance(handles, (list, tuple)):
            wanted = [h for h in handles if isinstance(h, Handle)]
            got = iter(rt.get(wanted)) if wanted else iter(())
            return [next(got) if isinstance(h, Handle) else h for h in handles]
        return rt.get(handles) if isinstance(handles, Handle) else handles

    def __eq__(self, other: object) -> bool:
        return type(other) is HandleGetter

    def __hash__(self) -> int:
        return hash(HandleGetter)


def from_partitioned(obj: Any) -> Any:
    """Adopt any producer's ``__partitioned__`` data (collective).

    A :class:`DistArray`, or a :class:`~gpupart.DistFrame` when the partitions are frames
    (see ``frame_partitioned``).
    """
    from gpupart.containers import frame_partitioned
    from gpupart.containers.dframe import DistFrame

    rt = runtime_or_init()
    if isinstance(obj, (DistArray, DistFrame)):
        return obj
    view, problem = None, None
    try:
        view = protocol.validate(obj)
    except (GpupartError, TypeError, ValueError) as exc:
        problem = exc
    problems = rt.allgather(None if problem is None else f"{type(problem).__name__}: {problem}")
    if problem is not None:
        raise problem
    bad = [(r, p) for r, p in enumerate(problems) if p is not None]
    if bad:
        rank, text = bad[0]
        raise PartitionedError(
            "obj", "a valid __partitioned__ structure on every rank", f"rank {rank}: {text}"
        )
    tiling = Tiling.from_boundaries([list(cuts) for cuts in view.boundaries])
    shapes = rt.allgather((tiling.shape, [list(c) for c in tiling.boundaries]))
    if any(other != shapes[0] for other in shapes):
        detail = ", ".join(f"rank {r}: shape {s}" for r, (s, _) in enumerate(shapes))
        raise PartitionedError(
            "obj", "the same shape and partitions on every rank", f"different ones ({detail})"
        )
    owners = _owners(rt, view, tiling)
    resolved, problem = {}, None
    try:
        resolved = resolve(view, tiling, owners, rt.rank)
    except (GpupartError, TypeError, ValueError) as exc:
        problem = exc
    frames = [hasattr(d, "columns") and hasattr(d, "iloc") for d in resolved.values()]
    if any(rt.allgather(any(frames) and problem is None)):
        if problem is not None:
            raise problem
        return frame_partitioned.from_partitioned_frame(rt, view, tiling, owners, resolved)
    tiles = {}
    try:
        if problem is None:
            tiles = _adopt(rt, view, resolved)
    except (GpupartError, TypeError, ValueError) as exc:
        problem = exc
    reports = rt.allgather(None if problem is None else f"{type(problem).__name__}: {problem}")
    if problem is not None:
        raise problem
    bad = [(r, p) for r, p in enumerate(reports) if p is not None]
    if bad:
        raise PartitionedError("obj", "data every rank can adopt", f"rank {bad[0][0]}: {bad[0][1]}")
    dtype = _agreed_dtype(rt, view, tiles)
    return DistArray(
        rt, tiling, owners, dtype, {p: t.astype(dtype, copy=False) for p, t in tiles.items()}
    )


def resolve(view: Any, tiling: Tiling, owners: np.ndarray, rank: int) -> dict:
    """Return the data of the partitions ``rank`` owns: its own, or what ``get`` resolves.

    Without ``locals`` (Dask/Ray/Modin-style producers), references (futures, ObjectRefs)
    are resolved with one ``get`` call; SPMD producers hand over the data itself.
    """
    mine = [pos for pos in layout.positions(tiling) if owners[pos] == rank]
    data = {pos: view.partitions[pos].data for pos in mine}
    missing = [pos for pos, d in data.items() if d is None]
    if missing:
        raise PartitionedError(
            f"partitions[{missing[0]!r}]['data']", "the data of a partition this rank owns", "None"
        )
    refs = {pos: d for pos, d in data.items() if not _is_data(d)}
    if refs and view.locals is None:  # SPMD producers (locals) hand over the data itself
        got = view.get(list(refs.values()))
        data.update(zip(refs, got, strict=True))
    return data


def _is_data(obj: Any) -> bool:
    """Whether ``obj`` is data itself (an array or a frame), not a reference to resolve."""
    return (
        hasattr(obj, "__array_interface__")
        or hasattr(obj, "__cuda_array_interface__")
        or hasattr(obj, "__dlpack__")
        or (hasattr(obj, "columns") and hasattr(obj, "iloc"))
    )


def _adopt(rt: Any, view: Any, resolved: dict) -> dict:
    """Return this rank's tiles as arrays of its device (no copy where they already are)."""
    xp = rt.backend.xp
    tiles = {}
    for pos, value in resolved.items():
        entry = view.partitions[pos]
        tile = xp.asarray(value)
        if tuple(tile.shape) != entry.shape:
            raise PartitionedError(
                f"partitions[{pos!r}]['data']",
                f"an array of shape {entry.shape}",
                f"shape {tuple(tile.shape)}",
            )
        if tile.dtype.hasobject:
            raise PartitionedError(
                f"partitions[{pos!r}]['data']", "a numeric array", f"dtype {tile.dtype}"
            )
        tiles[pos] = tile
    return tiles


def _owners(rt: Any, view: Any, tiling: Tiling) -> np.ndarray:
    """Which rank takes each tile: the one listing it in ``locals``, else its location's."""
    owners = layout.assign_owners(tiling, rt.size)
    listed = rt.allgather(list(view.locals) if view.locals is not None else None)
    if any(part is not None for part in listed):
        claimed = np.full(tiling.grid, -2, dtype=np.int32)
        for rank, part in enumerate(listed):
            for pos in part or ():
                if claimed[pos] == -2:
                    claimed[pos] = rank
        missing = np.argwhere(claimed == -2)
        if len(missing):
            raise PartitionedError(
                f"partitions[{tuple(int(i) for i in missing[0])!r}]",
                "a partition some rank lists in its locals",
                "none does",
            )
        return claimed
    by_pid = {(loc.ip, loc.pid): r for r, loc in enumerate(rt.peers)}
    for pos in layout.positions(tiling):
        location = view.partitions[pos].location[0]
        rank = location.rank
        if rank is None:
            rank = by_pid.get((location.ip, location.pid))
        if rank is not None and 0 <= rank < rt.size:
            owners[pos] = rank
    return owners


def _agreed_dtype(rt: Any, view: Any, tiles: dict) -> np.dtype:
    """Return the one dtype of the data: the ``dtype`` key, else the tiles' (one for all)."""
    if "dtype" in view.extra:
        try:
            return np.dtype(view.extra["dtype"])
        except TypeError:
            pass  # a framework's dtype object (torch): use the data's
    mine = {t.dtype.str for t in tiles.values()}
    found = {d for part in rt.allgather(sorted(mine)) for d in part}
    if len(found) > 1:
        raise PartitionedError("partitions", "data of one dtype", f"dtypes {sorted(found)}")
    return np.dtype(found.pop()) if found else np.dtype(np.float64)
