"""What the estimators see of their input: rows on their owners, checked the same on every rank.

:func:`check_X` turns any accepted input into :class:`Rows`: a 2-d float :class:`DistArray`
whose columns are whole (cut only by rows: repartitioned once if they were cut), this rank's
row blocks in order, and what came in (for ``output_type='input'``). :func:`check_y` brings
this rank the rows of ``y`` (or ``sample_weight``) that line up with its blocks of ``X``:
``y`` may be tiled differently, the rows are fetched from their owners (one
``fetch_regions``), never the whole of ``y``. Checks that depend on the data (NaN/inf) are
agreed with one all-reduce, so every rank raises the same scikit-learn-style error.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
from gpupart.containers.darray import DistArray
from gpupart.containers.dframe import DistFrame, DistSeries

from gpupart.protocol import Tiling

__all__ = ["CHUNK_ELEMENTS", "Rows", "check_X", "check_y", "row_chunks", "rows_like"]

Position = tuple[int, ...]

#: elements of a block the estimators process at a time (32 MiB of float64): their
#: temporaries stay bounded whatever a rank's share of the rows
CHUNK_ELEMENTS = 1 << 22


def row_chunks(n_rows: int, width: int) -> Iterator[slice]:
    """Slices of ``n_rows`` rows, each about :data:`CHUNK_ELEMENTS` for rows ``width`` wide."""
    step = max(1, CHUNK_ELEMENTS // max(width, 1))
    for lo in range(0, n_rows, step):
        yield slice(lo, min(lo + step, n_rows))


class Rows(NamedTuple):
    """A checked ``X``: rows cut across ranks, columns whole."""

    array: DistArray  #: 2-d, float32/float64, ``grid == (row blocks, 1)``
    blocks: list[tuple[Position, Any]]  #: this rank's counted tiles, in row order
    kind: str  #: ``'array'``, ``'frame'`` or ``'local'`` (what came in)
    feature_names: np.ndarray | None  #: column labels of a frame (strings), else None

    @property
    def n_samples(self) -> int:
        return self.array.shape[0]

    @property
    def n_features(self) -> int:
        return self.array.shape[1]

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    @property
    def runtime(self) -> Any:
        return self.array.runtime

    def starts(self) -> list[int]:
        """First global row of each of this rank's blocks."""
        return [self.array.tiling.start(pos)[0] for pos, _ in self.blocks]


def _runtime() -> Any:
    from gpupart.containers.creation import runtime_or_init

    return runtime_or_init()


def _as_distributed(obj: Any, what: str) -> tuple[Any, str]:
    """Return ``obj`` as a DistArray/DistFrame/DistSeries and the kind it came in as."""
    if isinstance(obj, (DistArray, DistFrame, DistSeries)):
        return obj, "frame" if isinstance(obj, (DistFrame, DistSeries)) else "array"
    if hasattr(obj, "__partitioned__"):
        from gpupart.containers.partitioned import from_partitioned

        out = from_partitioned(obj)
        return out, "frame" if isinstance(out, (DistFrame, DistSeries)) else "array"
    rt = _runtime()
    if rt.size > 1:
        raise TypeError(
            f"{what}: expected a gpupart DistArray/DistFrame or an object with __partitioned__"
            f" in a job of {rt.size} ranks, found {type(obj).__name__} (join each rank's rows"
            " with gpupart.from_local(piece), or pass the same array everywhere through"
            " gpupart.asarray)"
        )
    import gpupart

    if hasattr(obj, "columns") and hasattr(obj, "dtypes"):  # a pandas/cuDF frame
        return gpupart.from_pandas(obj), "local"
    if hasattr(obj, "name") and hasattr(obj, "dtype") and hasattr(obj, "to_frame"):
        return gpupart.from_pandas(obj.to_frame())[obj.to_frame().columns[0]], "local"
    if hasattr(obj, "tocsr") or hasattr(obj, "todense"):  # scipy.sparse
        raise TypeError(
            f"Sparse data was passed for {what}, but dense data is required. Use '.toarray()'"
            " to convert to a dense numpy array."
        )
    try:
        host = obj if hasattr(obj, "__array_namespace__") else np.asarray(obj)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what}: expected an array-like, found {type(obj).__name__}") from exc
    if np.dtype(host.dtype).kind == "O":  # numbers held as objects: as scikit-learn, convert
        host = np.asarray(host, dtype=np.float64)
    return gpupart.asarray(host), "local"


def _float_dtype(dtype: Any, keep_float32: bool) -> np.dtype:
    dt = np.dtype(dtype)
    if dt == np.float32 and keep_float32:
        return dt
    return np.dtype(np.float64)


def _check_numeric(dtype: Any, what: str) -> None:
    kind = getattr(np.dtype(dtype), "kind", "O") if _is_numpy_dtype(dtype) else "O"
    if kind == "c":
        raise ValueError(f"Complex data not supported ({what} has dtype {dtype})")
    if kind not in "biuf":
        raise TypeError(f"{what}: expected numbers (bool, int or float), found dtype {dtype}")


def _is_numpy_dtype(dtype: Any) -> bool:
    try:
        np.dtype(dtype)
    except TypeError:
        return False
    return True


def counted_blocks(x: DistArray) -> list[tuple[Position, Any]]:
    """Return this rank's tiles that count towards statistics, in grid order.

    A tile every rank holds (owner ``-1``) counts on rank 0 only, so sums count it once.
    """
    rank = x.runtime.rank
    out = []
    for pos in sorted(x.local_tiles):
        owner = int(x.owners[pos])
        if owner == rank or (owner == -1 and rank == 0):
            out.append((pos, x.local_tiles[pos]))
    return out


def _columns_whole(x: DistArray) -> DistArray:
    """``x`` itself when its columns are whole, else repartitioned by rows (one exchange)."""
    if x.tiling.grid[1] == 1:
        return x
    rows = x.tiling.boundaries[0]
    tiling = Tiling.from_boundaries([list(rows), [0, x.shape[1]]])
    return x.repartition(tiling)


def check_finite(blocks: list[Any], xp: Any, rt: Any, what: str, dtype: Any) -> None:
    """Raise scikit-learn's ValueError on every rank if any block holds NaN or infinity."""
    flags = np.zeros(2, dtype=np.int64)
    for b in blocks:
        if b.size:
            finite = xp.isfinite(b)
            if not bool(xp.all(finite)):
                flags[0] |= int(bool(xp.any(xp.isnan(b))))
                flags[1] |= int(bool(xp.any(xp.isinf(b))))
    nan, inf = rt.allreduce(flags, op="max").tolist()
    if nan:
        raise ValueError(f"Input {what} contains NaN.")
    if inf:
        raise ValueError(f"Input {what} contains infinity or a value too large for {dtype!r}.")


def check_X(X: Any, *, what: str = "X", keep_float32: bool = True, finite: bool = True) -> Rows:
    """Check ``X`` (collective) and return it as :class:`Rows`.

    Raises ``TypeError`` for inputs that are not arrays/frames or not numeric (naming the
    column of a frame), ``ValueError`` for 1-d input, no rows or no columns, and (with
    ``finite``) NaN or infinity, on every rank.
    """
    obj, kind = _as_distributed(X, what)
    names = None
    if isinstance(obj, DistSeries):  # scikit-learn's error for 1-d X is a ValueError
        raise ValueError(  # noqa: TRY004
            f"Expected 2D array, got 1D array instead ({what} is one column). Reshape your"
            " data: pass a frame of one column (series.to_frame())."
        )
    if isinstance(obj, DistFrame):
        for col, dtype in zip(obj.columns, obj.meta.dtypes, strict=True):
            _check_numeric(dtype, f"{what}[{col!r}]")
        names = np.asarray([str(c) for c in obj.columns], dtype=object)
        common = np.result_type(*[np.dtype(d) for d in obj.meta.dtypes]) if names.size else float
        arr = obj.to_array(dtype=_float_dtype(common, keep_float32))
    else:
        arr = obj
        if arr.ndim != 2:
            raise ValueError(
                f"Expected 2D array, got {arr.ndim}D array instead ({what} has shape"
                f" {arr.shape}). Reshape your data either using array.reshape(-1, 1) if your"
                " data has a single feature or array.reshape(1, -1) if it contains a single"
                " sample."
            )
        _check_numeric(arr.dtype, what)
        target = _float_dtype(arr.dtype, keep_float32)
        if arr.dtype != target:
            arr = arr.map_tiles(lambda t: t.astype(target), target)
    n, m = arr.shape
    if n == 0:
        raise ValueError(
            f"Found array with 0 sample(s) (shape={arr.shape}) while a minimum of 1 is required."
        )
    if m == 0:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={arr.shape}) while a minimum of 1 is required."
        )
    arr = _columns_whole(arr)
    blocks = counted_blocks(arr)
    if finite:
        check_finite([b for _, b in blocks], arr.xp, arr.runtime, what, arr.dtype)
    return Rows(arr, blocks, kind, names)


def check_y(
    y: Any,
    rows: Rows,
    *,
    what: str = "y",
    ndim: tuple[int, ...] = (1,),
    numeric: bool = True,
    finite: bool = True,
    dtype: Any = None,
) -> list[Any]:
    """Bring this rank the rows of ``y`` lined up with its blocks of ``X`` (collective).

    ``y`` is any input :func:`check_X` takes, 1-d (or 2-d where ``ndim`` allows; a frame of
    one column counts as 1-d). Its length must equal ``X``'s number of rows. Returns one
    piece per block of ``rows.blocks``; with ``dtype`` the pieces are cast to it.
    """
    obj, _ = _as_distributed(y, what)
    if isinstance(obj, DistFrame):
        obj = obj[obj.columns[0]] if len(obj.columns) == 1 and 1 in ndim else obj.to_array()
    if isinstance(obj, DistSeries):
        if numeric:
            _check_numeric(obj.dtype, what)
        obj = obj.to_array()
    arr: DistArray = obj
    if arr.ndim == 2 and arr.shape[1] == 1 and 2 not in ndim:
        arr = arr[:, 0]
    if arr.ndim not in ndim:
        raise ValueError(
            f"{what}: expected a {' or '.join(f'{d}-d' for d in ndim)} array, found shape"
            f" {arr.shape}"
        )
    if numeric:
        _check_numeric(arr.dtype, what)
    if arr.shape[0] != rows.n_samples:
        raise ValueError(
            "Found input variables with inconsistent numbers of samples:"
            f" [{rows.n_samples}, {arr.shape[0]}] ({what} against X)"
        )
    boxes = []
    for pos, block in rows.blocks:
        start = rows.array.tiling.start(pos)[0]
        stop = start + block.shape[0]
        boxes.append(((start, *([0] * (arr.ndim - 1))), (stop, *arr.shape[1:])))
    pieces = arr.fetch_regions(boxes)
    if dtype is not None:
        pieces = [p.astype(dtype, copy=False) for p in pieces]
    if finite and numeric:
        check_finite(pieces, arr.xp, arr.runtime, what, arr.dtype)
    return pieces


def rows_like(rows: Rows, pieces: list[Any], dtype: Any) -> DistArray:
    """Return a DistArray of ``pieces`` (one per block of ``X``, their rows) lined up with ``X``.

    The result is cut by ``X``'s row cuts and owned as ``X``'s row blocks are: it lines up
    with ``X`` row for row (what ``predict``/``transform`` return).
    """
    x = rows.array
    trailing = tuple(pieces[0].shape[1:]) if pieces else None
    shapes = x.runtime.allgather(None if trailing is None else list(trailing))
    found = [tuple(s) for s in shapes if s is not None]
    trailing = found[0] if found else ()
    cuts = [list(x.tiling.boundaries[0])] + [[0, d] for d in trailing]
    tiling = Tiling.from_boundaries(cuts)
    owners = np.where(x.owners[:, 0] == -1, 0, x.owners[:, 0])  # counted on rank 0 only
    owners = owners.reshape(owners.shape + (1,) * len(trailing))
    tiles = {
        (pos[0],) + (0,) * len(trailing): p for (pos, _), p in zip(rows.blocks, pieces, strict=True)
    }
    return DistArray(x.runtime, tiling, owners, np.dtype(dtype), tiles)
