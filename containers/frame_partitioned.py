"""``__partitioned__`` out of a :class:`DistFrame`, and any producer's frames into one.

Out: shape ``(rows, columns)`` with tiling ``(partitions, 1)``, plus the extra keys
``columns`` (labels) and ``dtypes`` (each a dtype name, or ``('category', categories,
ordered)``). An entry's ``data`` is the partition (a pandas/cuDF frame) on its owner and a
:class:`FramePart` elsewhere: the handles of the partition's column buffers, registered with
the runtime without a copy (strings as their Arrow offsets and bytes); ``get`` fetches them
from any rank (one batched fetch) and rebuilds the frame. Building it is collective.

In (:func:`from_partitioned_frame`, collective): a dict whose data are frames (SPMD
``locals``, gpupart's own) or references resolved with ``get`` (Dask/Ray/Modin-style). Rows
must be cut into ``(p, 1)`` partitions; every partition's columns must agree.
"""

from __future__ import annotations

import dataclasses
import weakref
from typing import Any

import numpy as np
from gpupart.containers import frame_columns
from gpupart.containers.dframe import DistFrame, Layout

from gpupart import protocol
from gpupart.errors import GpupartError, PartitionedError
from gpupart.protocol import Tiling
from gpupart.tiles import columns as column_buffers

__all__ = ["FrameGetter", "FramePart", "export", "from_partitioned_frame"]


@dataclasses.dataclass(frozen=True)
class FramePart:
    """A partition held by another rank: each encoded column's spec and buffer handles."""

    rows: int
    columns: tuple[tuple[str, Any, tuple[Any, ...]], ...]  # (key, spec, handles)


class FrameGetter:
    """The ``get`` of a gpupart frame's ``__partitioned__``: FrameParts (one or a list) to frames.

    Resolves through this process's runtime when called, so it pickles and works on any
    rank; anything that is not a :class:`FramePart` (a local frame) is returned as it is.
    """

    def __init__(self, schema: tuple[tuple[Any, Any], ...]) -> None:
        self.schema = schema

    def __call__(self, parts: Any) -> Any:
        """Return the frame of ``parts`` (or a list of frames for a list)."""
        import gpupart

        rt = gpupart.runtime()
        many = isinstance(parts, (list, tuple))
        items = list(parts) if many else [parts]
        wanted = [p for p in items if isinstance(p, FramePart)]
        handles = [h for p in wanted for _, _, hs in p.columns for h in hs]
        fetched = iter(rt.get(handles) if handles else [])
        module = rt.backend.dataframe_module()
        meta = frame_columns.empty_frame(self.schema, module)
        frames = {}
        for p in wanted:
            cols = {}
            for key, spec, hs in p.columns:
                cols[key] = column_buffers.rebuild(spec, [next(fetched) for _ in hs])
            frames[id(p)] = frame_columns.decode(cols, meta, module)
        out = [frames.get(id(p), p) if isinstance(p, FramePart) else p for p in items]
        return out if many else out[0]

    def __eq__(self, other: object) -> bool:
        return type(other) is FrameGetter and other.schema == self.schema

    def __hash__(self) -> int:
        return hash((FrameGetter, self.schema))


def export(df: DistFrame) -> dict[str, Any]:
    """Return ``df.__partitioned__`` (collective; see the module docstring)."""
    rt = df.runtime
    sizes = df.partition_sizes
    ncols = len(df.columns)
    cuts = [0]
    for size in sizes:
        cuts.append(cuts[-1] + size)
    tiling = Tiling.from_boundaries([cuts, [0, ncols]])
    table = _published(df)
    peers = rt.peers
    data, location = {}, {}
    for i, owner in enumerate(df.layout.owners):
        pos = (i, 0)
        data[pos] = df.local_partitions[i] if i in df.local_partitions else table[i]
        location[pos] = [peers[owner]]
    schema = frame_columns.schema(df.meta)
    return protocol.build(
        (cuts[-1], ncols),
        tiling,
        data,
        location,
        FrameGetter(schema),
        locals=[(i, 0) for i in sorted(df.local_partitions)],
        lazy=False,
        columns=[label for label, _ in schema],
        dtypes=[spec for _, spec in schema],
    )


def _published(df: DistFrame) -> dict[int, FramePart]:
    """Register every local partition's column buffers once (collective); cached on ``df``."""
    cached = df.__dict__.get("_exported")
    if cached is not None:
        return cached
    rt = df.runtime
    mine: dict[int, Any] = {}  # plain values: they travel in an all-gather
    handles: list[Any] = []
    for i, part in df.local_partitions.items():
        cols = []
        for key, column in frame_columns.encode(part, f"partition {i}").items():
            spec, buffers = column_buffers.describe(column, f"partition {i} column {key}")
            hs = tuple(rt.put(b) for b in buffers)
            handles.extend(hs)
            cols.append((key, spec, hs))
        mine[i] = (len(part), tuple(cols))
    table: dict[int, FramePart] = {}
    for published in rt.allgather(mine):
        for i, (rows, cols) in published.items():
            table[i] = FramePart(rows, tuple((k, spec, tuple(hs)) for k, spec, hs in cols))
    if handles:
        weakref.finalize(df, _release, rt, handles)
    df.__dict__["_exported"] = table
    return table


def _release(rt: Any, handles: list[Any]) -> None:
    if rt.closed:
        return
    for h in handles:
        try:
            rt.free(h)
        except Exception:  # already released: nothing to do
            continue


def from_partitioned_frame(
    rt: Any, view: Any, tiling: Tiling, owners: Any, resolved: dict
) -> DistFrame:
    """Adopt a validated ``__partitioned__`` view of frames as a DistFrame (collective).

    ``resolved`` is this rank's partitions' data (``partitioned.resolve``).
    """
    from gpupart.containers.frame_creation import align_schemas

    parts, problem = {}, None
    try:
        parts = _adopt(view, tiling, resolved)
    except (GpupartError, TypeError, ValueError) as exc:
        problem = exc
    reports = rt.allgather(None if problem is None else f"{type(problem).__name__}: {problem}")
    if problem is not None:
        raise problem
    bad = [(r, p) for r, p in enumerate(reports) if p is not None]
    if bad:
        raise PartitionedError(
            "obj", "frames every rank can adopt", f"rank {bad[0][0]}: {bad[0][1]}"
        )
    meta, parts = align_schemas(rt, parts, "obj")
    cuts = list(tiling.boundaries[0])
    sizes = np.diff(cuts).tolist()
    layout = Layout([int(owners[(i, 0)]) for i in range(tiling.grid[0])], sizes)
    return DistFrame(rt, meta, layout, parts)


def _adopt(view: Any, tiling: Tiling, resolved: dict) -> dict[int, Any]:
    """Return this rank's partitions, checked to be frames of their entries' shapes."""
    if tiling.ndim != 2 or tiling.grid[1] != 1:
        raise PartitionedError(
            "partition_tiling", "rows cut into (p, 1) partitions for a frame", str(tiling.grid)
        )
    parts = {}
    for (i, _), frame in resolved.items():
        entry = view.partitions[(i, 0)]
        if frame is None or not _is_frame(frame):
            raise PartitionedError(
                f"partitions[({i}, 0)]['data']",
                "a DataFrame (or a reference get resolves to one)",
                type(frame).__name__,
            )
        if frame.shape != tuple(entry.shape):
            raise PartitionedError(
                f"partitions[({i}, 0)]['data']", f"shape {tuple(entry.shape)}", str(frame.shape)
            )
        parts[i] = frame
    return parts


def _is_frame(obj: Any) -> bool:
    return hasattr(obj, "columns") and hasattr(obj, "iloc")
