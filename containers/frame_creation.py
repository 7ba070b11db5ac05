"""Making a :class:`DistFrame`: from one pandas/cuDF frame, or from each rank's piece.

A frame has no index (see ``dframe``): the index of what is passed in is dropped (call
``df.reset_index()`` first to keep it as a column).
"""

from __future__ import annotations

from typing import Any

from gpupart.containers.creation import runtime_or_init
from gpupart.containers.dframe import DistFrame, Layout, row_view
from gpupart.containers.frame_columns import empty_frame, schema

from gpupart.errors import CollectiveError

__all__ = ["align_schemas", "from_local_frames", "from_pandas", "owners_for"]


def owners_for(npartitions: int, size: int) -> list[int]:
    """Owner of each of ``npartitions`` partitions: runs in order, as even as possible."""
    return [(i * size) // max(npartitions, 1) for i in range(npartitions)]


def _as_frame(rt: Any, obj: Any, what: str) -> Any:
    """``obj`` as a frame of this rank's dataframe module, index dropped (or a TypeError)."""
    module = rt.backend.dataframe_module()
    kind = type(obj).__module__.split(".")[0]
    if not hasattr(obj, "columns") or kind not in ("pandas", "cudf"):
        raise TypeError(f"{what}: expected a pandas or cuDF DataFrame, found {type(obj).__name__}")
    if kind != module.__name__:
        obj = module.DataFrame(obj) if kind == "pandas" else obj.to_pandas()
    if len(set(map(repr, obj.columns))) != len(obj.columns):
        raise ValueError(f"{what}: expected distinct column labels, found {list(obj.columns)!r}")
    return row_view(obj)


def from_local_frames(piece: Any) -> DistFrame:
    """Join each rank's frame into one (collective; rank order; no copy of the rows).

    Every rank's piece becomes its one partition. Pieces must have the same columns; an
    empty piece takes the others' dtypes; otherwise every rank raises
    :class:`~gpupart.CollectiveError` naming the rank and the column that differ.
    """
    rt = runtime_or_init()
    meta, parts = align_schemas(rt, {rt.rank: piece}, "piece")
    sizes = rt.allgather(len(parts[rt.rank]))
    return DistFrame(rt, meta, Layout(range(rt.size), sizes), parts)


def align_schemas(rt: Any, pieces: dict[int, Any], what: str) -> tuple[Any, dict[int, Any]]:
    """Check that every rank's frames (by partition number) share one schema (collective).

    Returns the schema's empty frame and the frames as this rank's dataframe module's, index
    dropped; an empty frame with the same columns takes the others' dtypes. Anything else
    raises :class:`~gpupart.CollectiveError` on every rank naming the rank and the column.
    """
    frames: dict[int, Any] = {}
    problem = None
    try:
        for i, piece in pieces.items():
            frames[i] = _as_frame(rt, piece, what)
    except (TypeError, ValueError) as exc:
        problem = str(exc)
    infos = rt.allgather(problem or [(len(f), schema(f)) for f in frames.values()])
    _raise_problems(what, infos)
    every = [(r, n, cols) for r, info in enumerate(infos) for n, cols in info]
    if not every:
        raise CollectiveError(f"{what}: expected at least one frame on some rank, found none")
    reference = next((cols for _, n, cols in every if n), every[0][2])
    mismatched = sorted(
        {
            f"rank {r}: {_difference(reference, cols)}"
            for r, n, cols in every
            if cols != reference and not (n == 0 and _labels(cols) == _labels(reference))
        }
    )
    if mismatched:
        raise CollectiveError(
            f"{what}: expected the same columns and dtypes on every rank, found"
            f" {'; '.join(mismatched)}"
        )
    meta = empty_frame(reference, rt.backend.dataframe_module())
    for i, frame in frames.items():
        if schema(frame) != reference:  # an empty frame: the others' dtypes
            frames[i] = meta
    return meta, frames


def from_pandas(df: Any, npartitions: int | None = None, *, root: int | None = None) -> DistFrame:
    """Cut one frame into ``npartitions`` row blocks (default: one per rank; collective).

    Without ``root`` every rank passes the same frame and keeps views of its blocks (no
    data moves; lengths and schemas are checked to agree). With ``root``, only that rank's
    frame counts (the others may pass ``None``) and its blocks are sent to their owners.
    """
    rt = runtime_or_init()
    if npartitions is None:
        npartitions = rt.size
    if isinstance(npartitions, bool) or not isinstance(npartitions, int) or npartitions < 1:
        raise ValueError(f"npartitions: expected an int >= 1, found {npartitions!r}")
    if root is not None:
        return _from_root(rt, df, npartitions, root)
    problem, frame = None, None
    try:
        frame = _as_frame(rt, df, "df")
    except (TypeError, ValueError) as exc:
        problem = str(exc)
    infos = rt.allgather(problem or (len(frame), schema(frame)))
    _raise_problems("from_pandas", infos)
    if len(set(infos)) != 1:
        detail = ", ".join(f"rank {r}: {n} rows" for r, (n, _) in enumerate(infos))
        raise CollectiveError(
            f"from_pandas: expected the same frame on every rank (or root=), found {detail}"
            " (or different columns/dtypes)"
        )
    bounds = _even_bounds(len(frame), npartitions)
    owners = owners_for(npartitions, rt.size)
    parts = {
        i: row_view(frame, bounds[i], bounds[i + 1])
        for i in range(npartitions)
        if owners[i] == rt.rank
    }
    sizes = [bounds[i + 1] - bounds[i] for i in range(npartitions)]
    return DistFrame(rt, frame.iloc[:0], Layout(owners, sizes), parts)


def _from_root(rt: Any, df: Any, npartitions: int, root: int) -> DistFrame:
    from gpupart.containers import frame_columns

    if isinstance(root, bool) or not isinstance(root, int) or not 0 <= root < rt.size:
        raise ValueError(f"root: expected a rank in 0..{rt.size - 1}, found {root!r}")
    problem, frame = None, None
    if rt.rank == root:
        try:
            frame = _as_frame(rt, df, "df")
        except (TypeError, ValueError) as exc:
            problem = str(exc)
    head = rt.broadcast((problem, None if frame is None else (len(frame), schema(frame))), root)
    if head[0] is not None:
        raise CollectiveError(f"from_pandas: rank {root}: {head[0]}")
    rows, columns = head[1]
    meta = (
        frame.iloc[:0] if frame is not None else empty_frame(columns, rt.backend.dataframe_module())
    )
    bounds = _even_bounds(rows, npartitions)
    owners = owners_for(npartitions, rt.size)
    pieces: list[Any] = [{} for _ in range(rt.size)]
    if rt.rank == root:
        for dest in range(rt.size):
            blocks = [i for i in range(npartitions) if owners[i] == dest]
            if blocks:
                block = frame.iloc[bounds[blocks[0]] : bounds[blocks[-1] + 1]]
                pieces[dest] = frame_columns.encode(block)
    got = rt.exchange(pieces)[root]
    module = rt.backend.dataframe_module()
    mine = frame_columns.decode(got, meta, module) if got else meta
    parts, at = {}, bounds[next((i for i, o in enumerate(owners) if o == rt.rank), 0)]
    for i in range(npartitions):
        if owners[i] == rt.rank:
            lo, hi = bounds[i] - at, bounds[i + 1] - at
            parts[i] = row_view(mine, lo, hi)
    sizes = [bounds[i + 1] - bounds[i] for i in range(npartitions)]
    return DistFrame(rt, meta, Layout(owners, sizes), parts)


def _even_bounds(rows: int, parts: int) -> list[int]:
    base, extra = divmod(rows, parts)
    bounds = [0]
    for i in range(parts):
        bounds.append(bounds[-1] + base + (1 if i < extra else 0))
    return bounds


def _raise_problems(what: str, infos: list[Any]) -> None:
    problems = [f"rank {r}: {p}" for r, p in enumerate(infos) if isinstance(p, str)]
    if problems:
        raise CollectiveError(f"{what}: {'; '.join(problems)}")


def _difference(want: tuple, found: tuple) -> str:
    names_w, names_f = [c for c, _ in want], [c for c, _ in found]
    if names_w != names_f:
        return f"columns {names_f} instead of {names_w}"
    pairs = zip(want, found, strict=True)
    return ", ".join(f"{c!r} is {f} (expected {w})" for (c, w), (_, f) in pairs if w != f)


def _labels(columns: tuple) -> list[Any]:
    return [label for label, _ in columns]
