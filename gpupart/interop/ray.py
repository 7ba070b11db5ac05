"""Ray <-> gpupart: ObjectRefs of NumPy blocks or pandas frames.

How the processes meet: the Ray cluster (``ray start --head`` on one node, ``ray start
--address=...`` on others) and the gpupart job are two sets of processes; each gpupart rank
is a Ray *driver*: it calls ``ray.init(address=...)`` (the address given to the job as an
argument or in ``RAY_ADDRESS``, which ``ray.init()`` reads). ObjectRefs reach the ranks the
way they reach any Ray process: returned by a task or by a named actor
(``ray.get_actor(name)``) that the Ray program created. No Ray worker runs a gpupart rank.

In (:func:`to_partitioned`, then ``gpupart.from_partitioned``; every rank calls both): a
grid of ObjectRefs (a nested list: one level per cut dimension, a flat list for row blocks
or frames) is described as a Ray-style ``__partitioned__`` dict: the refs as ``data``, a
:class:`RayGet` (``ray.get``) as ``get``, each block's ``location`` the IP of every node
whose object store holds it (an object in a node's shared-memory store is readable without
communication by every process on that node, so there is no PID to name: Modin and
xgboost_ray use the same form). Shapes are given, or read by a small task per block placed
on the block's node (nothing moves). Each rank then ``ray.get``s only the blocks it owns; on
the block's node that is a read-only view of the object store (no copy) and it becomes the
rank's tile as it is: in-place writes to such a tile raise, as they do in Ray.

Out (:func:`to_ray`, collective): each rank ``ray.put``s the tiles it holds (one copy, into
its node's object store; Ray consumers on that node read them without a copy), and every
rank gets every ref, as a grid and as a Ray-style dict. Ray ties an object to the process
that put it (its owner): the objects are lost when their rank leaves Ray (``ray.shutdown()``
or exit; Ray 2.56 removed ``ray.put(_owner=...)``, which could hand them to an actor). Data
that must outlive the job are copied by a Ray process that stays, e.g. an actor that
``ray.get``s the refs and keeps (or ``ray.put``s) the values.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

from gpupart.errors import (
    FetchError,
    InteropError,
    PartitionedError,
    PartitionedTypeError,
)
from gpupart.interop._collective import step

__all__ = ["RayBlocks", "RayGet", "to_partitioned", "to_ray"]

#: Default limit (seconds) for one wait on the Ray cluster (metadata tasks, a get, a put).
TIMEOUT = 120.0

Position = tuple[int, ...]


def _require() -> Any:
    """Return the ``ray`` module connected to a cluster, or say what is missing."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError(
            f"gpupart.interop.ray needs ray: install it with pip install 'gpupart[interop]' ({exc})"
        ) from exc
    if not ray.is_initialized():
        raise InteropError(
            "Ray: expected this process connected to a Ray cluster (ray.init(address=...) on"
            " every rank, before gpupart.interop.ray), found none"
        )
    return ray


class RayGet:
    """The ``get`` of a Ray-style dict: ObjectRefs (one or a list) to their values.

    ``ray.get`` with a ``timeout``; a failure is a :class:`~gpupart.FetchError` naming the
    refs (so ``from_partitioned`` reports it on every rank). Stateless: it pickles.
    """

    def __init__(self, *, timeout: float = TIMEOUT) -> None:
        self.timeout = timeout

    def __call__(self, refs: Any) -> Any:
        """Return the values of ``refs`` (a list of values for a list)."""
        ray = _require()
        many = isinstance(refs, (list, tuple))
        items = list(refs) if many else [refs]
        try:
            got = ray.get(items, timeout=self.timeout)
        except Exception as exc:  # a foreign failure: translated at the boundary
            names = ", ".join(r.hex()[:16] for r in items[:3]) + (" ..." if len(items) > 3 else "")
            raise FetchError(
                f"ray.get of {len(items)} object(s) ({names}): {type(exc).__name__}: {exc}"
            ) from exc
        return got if many else got[0]

    def __eq__(self, other: object) -> bool:
        return type(other) is RayGet and other.timeout == self.timeout

    def __hash__(self) -> int:
        return hash((RayGet, self.timeout))


# == in: a grid of ObjectRefs as a __partitioned__ dict =======================================


def to_partitioned(
    blocks: Sequence[Any], *, shapes: Sequence[Any] | None = None, timeout: float = TIMEOUT
) -> dict[str, Any]:
    """Describe a grid of ObjectRefs (NumPy blocks or pandas frames) as a Ray-style dict.

    ``blocks`` is a nested list of refs, one level per cut dimension (dimensions past the
    nesting are not cut; frames: a flat list of row blocks). ``shapes`` gives each block's
    shape as a tuple, nested like ``blocks``; without it a task per block reads it where the
    block lives. ``location`` is the IP of each node holding the block; ``get`` is
    :class:`RayGet`. The dict holds the refs, so the objects live while it does.

    Raises:
        PartitionedTypeError: ``blocks`` is not a nested list of ObjectRefs.
        PartitionedError: the blocks' shapes do not form a grid.
    """
    ray = _require()
    refs, grid = _grid(blocks, ray.ObjectRef)
    if shapes is None:
        sizes = _read_shapes(ray, refs, timeout)
    else:
        sizes = _given_shapes(shapes, refs, grid)
    tiling = _tiling(sizes, grid)
    location = _locations(ray, refs, timeout)
    from gpupart import protocol

    def full(pos: Position) -> Position:  # dimensions past the nesting are not cut
        return pos + (0,) * (tiling.ndim - len(pos))

    return protocol.build(
        tiling.shape,
        tiling,
        {full(p): r for p, r in refs.items()},
        {full(p): loc for p, loc in location.items()},
        RayGet(timeout=timeout),
        lazy=False,
    )


def _grid(blocks: Any, ref_type: type) -> tuple[dict[Position, Any], tuple[int, ...]]:
    """Return each ref by grid position and the grid's shape (checked to be rectangular)."""
    if not isinstance(blocks, (list, tuple)) or not blocks:
        raise PartitionedTypeError(
            "blocks", "a non-empty (nested) list of ray.ObjectRef", _short(blocks)
        )
    refs = dict(_leaves(blocks, (), ref_type))
    depth = {len(p) for p in refs}
    grid = tuple(max(p[d] for p in refs) + 1 for d in range(max(depth)))
    if len(depth) != 1 or len(refs) != math.prod(grid):
        raise PartitionedError("blocks", f"a rectangular grid of refs ({grid})", "ragged lists")
    return refs, grid


def _leaves(item: Any, prefix: Position, ref_type: type) -> Iterator[tuple[Position, Any]]:
    for i, sub in enumerate(item):
        pos = (*prefix, i)
        if isinstance(sub, (list, tuple)):
            yield from _leaves(sub, pos, ref_type)
        elif isinstance(sub, ref_type):
            yield pos, sub
        else:
            path = "blocks" + "".join(f"[{k}]" for k in pos)
            raise PartitionedTypeError(path, "a ray.ObjectRef (or a list of them)", _short(sub))


def _given_shapes(shapes: Any, refs: dict, grid: tuple[int, ...]) -> dict[Position, tuple]:
    """``shapes`` (nested like ``blocks``, a tuple per block) by grid position."""
    out = {}
    for pos in refs:
        item = shapes
        try:
            for k in pos:
                item = item[k]
            shape = tuple(int(n) for n in item)
        except (IndexError, KeyError, TypeError, ValueError) as exc:
            path = "shapes" + "".join(f"[{k}]" for k in pos)
            raise PartitionedError(path, "a tuple of ints (one per block)", "none") from exc
        out[pos] = shape
    return out


def _read_shapes(ray: Any, refs: dict, timeout: float) -> dict[Position, tuple]:
    """Read each block's shape with a task on the block's node (no data moves)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0)
    def shape_of(block: Any) -> tuple[int, ...]:
        return tuple(int(n) for n in block.shape)

    nodes = ray.experimental.get_object_locations(list(refs.values()), int(timeout * 1000))
    tasks = {}
    for pos, ref in refs.items():
        held = nodes.get(ref, {}).get("node_ids") or []
        options = {}
        if held:
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(held[0], soft=True)
        tasks[pos] = shape_of.options(**options).remote(ref)
    shapes = RayGet(timeout=timeout)(list(tasks.values()))
    return dict(zip(tasks, shapes, strict=True))


def _tiling(sizes: dict[Position, tuple], grid: tuple[int, ...]) -> Any:
    """Return the tiling the blocks form: cuts from the first row/column, then checked."""
    from gpupart.protocol import Tiling

    origin = (0,) * len(grid)
    ndim = len(sizes[origin])
    if ndim < len(grid):
        raise PartitionedError(
            "blocks", f"blocks of at least {len(grid)} dimensions (the nesting)", f"{ndim}-d"
        )
    cuts = []
    for d in range(ndim):
        steps = grid[d] if d < len(grid) else 1
        lengths = [
            sizes[tuple(i if k == d else 0 for k in range(len(grid)))][d] for i in range(steps)
        ]
        cuts.append(np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).tolist())
    tiling = Tiling.from_boundaries(cuts)
    for pos, shape in sizes.items():
        full = pos + (0,) * (ndim - len(pos))
        if shape != tuple(tiling.tile_shape(full)):
            path = "blocks" + "".join(f"[{k}]" for k in pos)
            raise PartitionedError(
                path, f"shape {tuple(tiling.tile_shape(full))} (to fit the grid)", str(shape)
            )
    return tiling


def _locations(ray: Any, refs: dict, timeout: float) -> dict[Position, list[str]]:
    """Each block's holders: the IP of every node whose object store has it."""
    found = ray.experimental.get_object_locations(list(refs.values()), int(timeout * 1000))
    ips = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")}
    here = ray.util.get_node_ip_address()
    out = {}
    for pos, ref in refs.items():
        held = [ips[n] for n in found.get(ref, {}).get("node_ids") or [] if n in ips]
        out[pos] = sorted(set(held)) or [here]
    return out


def _short(obj: Any) -> str:
    text = repr(obj)
    return f"{type(obj).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


# == out: a gpupart container as ObjectRefs ==================================================


class RayBlocks(NamedTuple):
    """What :func:`to_ray` returns: the refs as a grid, and the same as a Ray-style dict."""

    refs: list[Any]
    """Nested list of ObjectRefs, one level per grid dimension (a frame's: a flat list)."""
    partitioned: dict[str, Any]
    """The Ray-style ``__partitioned__`` dict of the refs (``to_partitioned(refs)``)."""


def to_ray(x: Any, *, timeout: float = TIMEOUT) -> RayBlocks:
    """Put a gpupart array's tiles (a frame's partitions) in Ray's object store (collective).

    Each rank puts the tiles it holds; the refs meet in a short-lived actor, so every rank
    returns every ref (borrowed, as Ray counts them). The objects live while the rank that
    put each one is connected to Ray (see the module docstring).

    Raises:
        PartitionedTypeError: ``x`` is not a DistArray or DistFrame.
        CollectiveError: a step failed on some rank (every rank raises, naming it).
    """
    from gpupart.containers import layout
    from gpupart.containers.darray import DistArray
    from gpupart.containers.dframe import DistFrame

    if isinstance(x, DistArray):
        tiles = dict(x.counted_tiles())
        grid = x.tiling.grid
        shapes = {pos: tuple(x.tiling.tile_shape(pos)) for pos in layout.positions(x.tiling)}
    elif isinstance(x, DistFrame):
        ncols = len(x.columns)
        tiles = {(i,): p for i, p in x.local_partitions.items()}
        grid = (x.npartitions,)
        shapes = {(i,): (n, ncols) for i, n in enumerate(x.partition_sizes)}
    else:
        raise PartitionedTypeError("x", "a gpupart DistArray or DistFrame", type(x).__name__)
    rt = x.runtime
    ray = step(rt, "to_ray: connecting to Ray", timeout, _require)
    mine = step(
        rt,
        "to_ray: ray.put",
        timeout,
        lambda: {pos: ray.put(t) for pos, t in tiles.items()},
    )
    refs = _meet(ray, rt, mine, timeout)
    nested, shape_list = _nest(refs, grid, ()), _nest(shapes, grid, ())
    return RayBlocks(nested, to_partitioned(nested, shapes=shape_list, timeout=timeout))


def _meet(ray: Any, rt: Any, mine: dict[Position, Any], timeout: float) -> dict[Position, Any]:
    """Every rank's refs on every rank, through an actor (Ray counts the borrowers)."""

    @ray.remote(num_cpus=0)
    class Meeting:
        def __init__(self) -> None:
            self.refs: dict = {}

        def add(self, refs: dict) -> None:  # refs nested in a dict travel as refs
            self.refs.update(refs)

        def all(self) -> dict:
            return self.refs

    token = rt.broadcast(uuid.uuid4().hex if rt.rank == 0 else None, timeout=timeout)
    name = f"gpupart-to-ray-{token}"
    where = {"name": name, "namespace": "gpupart"}

    def open_it() -> Any:
        if rt.rank != 0:
            return None
        handle = Meeting.options(**where).remote()  # lives while rank 0 holds the handle
        ray.get(handle.all.remote(), timeout=timeout)
        return handle

    def send() -> Any:
        meeting = ray.get_actor(**where)
        ray.get(meeting.add.remote(mine), timeout=timeout)
        return meeting

    def receive() -> dict[Position, Any]:
        return ray.get(meeting.all.remote(), timeout=timeout)

    opened = step(rt, "to_ray: starting the meeting actor", timeout, open_it)
    meeting = step(rt, "to_ray: sending the refs", timeout, send)
    refs = step(rt, "to_ray: receiving the refs", timeout, receive)
    if opened is not None:  # every rank has the refs (the step's all-gather)
        ray.kill(opened)
    return refs


def _nest(items: dict[Position, Any], grid: tuple[int, ...], prefix: Position) -> Any:
    """``items`` by position as nested lists in grid order."""
    if len(prefix) == len(grid):
        return items[prefix]
    return [_nest(items, grid, (*prefix, i)) for i in range(grid[len(prefix)])]
