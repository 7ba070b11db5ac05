"""``DistFrame`` and ``DistSeries``: tables whose rows are cut into partitions across ranks.

A frame is a sequence of partitions (pandas frames on the CPU, cuDF on a GPU), each owned by
one rank; the global row order is partition order, then row order within each. Every rank
holds the same object in the SPMD sense: the schema (``meta``, an empty frame of the right
columns and dtypes), the owner of each partition and its own partitions. Operations are
collective (every rank calls them, in the same order).

A frame has no index: rows are numbered by position, every partition has a default
``RangeIndex`` (so partitions that line up also align in pandas), and results that pandas
indexes by keys (``groupby``) carry the keys as columns (pandas' ``as_index=False``);
``to_pandas`` gives a ``RangeIndex``.

Partition sizes are known after operations that keep rows and unknown after those that drop
or move them; :attr:`DistFrame.partition_sizes` learns them with one all-gather when asked.
Two frames or series line up row for row when one was derived from the other by
row-keeping operations (they share a *layout token*); otherwise their partition lengths are
compared (collectively) before they are combined.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np
from gpupart.containers.darray import host_array

__all__ = ["DistFrame", "DistSeries", "Layout", "row_view"]


class Layout:
    """Which rank owns each partition, and the partitions' lengths when known.

    Frames derived row for row share one ``Layout`` object: identity means aligned.
    """

    def __init__(self, owners: Sequence[int], sizes: Sequence[int] | None = None) -> None:
        self.owners = tuple(int(o) for o in owners)
        self._sizes = None if sizes is None else tuple(int(s) for s in sizes)

    @property
    def npartitions(self) -> int:
        """Number of partitions."""
        return len(self.owners)

    def mine(self, rank: int) -> list[int]:
        """Return the partitions ``rank`` owns, in order."""
        return [i for i, o in enumerate(self.owners) if o == rank]

    def sizes(self, rt: Any, parts: Mapping[int, Any]) -> tuple[int, ...]:
        """Every partition's length (one all-gather the first time, when unknown)."""
        if self._sizes is None:
            known: dict[int, int] = {}
            for table in rt.allgather({i: len(p) for i, p in parts.items()}):
                known.update(table)
            self._sizes = tuple(known[i] for i in range(self.npartitions))
        return self._sizes


class _Partitioned:
    """What frames and series share: runtime, layout, local partitions, moving them out."""

    def __init__(self, runtime: Any, layout: Layout, parts: Mapping[int, Any]) -> None:
        self._rt = runtime
        self.layout = layout
        self._parts = dict(parts)

    @property
    def runtime(self) -> Any:
        """The :class:`~gpupart.Runtime` the data belongs to."""
        return self._rt

    @property
    def npartitions(self) -> int:
        """Number of partitions (global)."""
        return self.layout.npartitions

    @property
    def partition_sizes(self) -> tuple[int, ...]:
        """Rows of every partition, in order (collective the first time when unknown)."""
        return self.layout.sizes(self._rt, self._parts)

    @property
    def local_partitions(self) -> Mapping[int, Any]:
        """Map of this rank's partitions by global number (read-only; the data itself)."""
        return MappingProxyType(self._parts)

    def __len__(self) -> int:
        return sum(self.partition_sizes)

    def _module(self) -> Any:
        return self._rt.backend.dataframe_module()

    def _aligned(self, other: _Partitioned, what: str) -> None:
        """Raise on every rank unless ``other`` lines up with this row for row."""
        if other.layout is self.layout:
            return
        if other.layout.owners != self.layout.owners or (
            self.partition_sizes != other.partition_sizes
        ):
            raise ValueError(
                f"{what}: expected data partitioned like this one (the same rows), found"
                f" {other.npartitions} partition(s) of sizes {other.partition_sizes} against"
                f" {self.partition_sizes}; derive both from one frame, or rebalance() both"
            )


class DistFrame(_Partitioned):
    """A distributed table (see the module docstring).

    Make one with ``gpupart.read_parquet``, ``gpupart.from_pandas`` or
    ``gpupart.from_local_frames``, not directly.
    """

    def __init__(self, runtime: Any, meta: Any, layout: Layout, parts: Mapping[int, Any]) -> None:
        super().__init__(runtime, layout, parts)
        self.meta = meta

    # -- description ----------------------------------------------------------------------

    @property
    def columns(self) -> Any:
        """Column labels (a pandas ``Index``)."""
        return self.meta.columns

    @property
    def dtypes(self) -> Any:
        """Column dtypes (a pandas ``Series``)."""
        return self.meta.dtypes

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, columns)`` (collective when the row count is unknown)."""
        return (len(self), len(self.columns))

    def __repr__(self) -> str:
        sizes = "unknown" if self.layout._sizes is None else sum(self.layout._sizes)
        return (
            f"<gpupart.DistFrame {sizes} rows x {len(self.columns)} columns"
            f" {list(self.columns)!r} in {self.npartitions} partition(s),"
            f" rank {self._rt.rank} holds {len(self._parts)}>"
        )

    # -- building results -----------------------------------------------------------------

    def map_partitions(self, fn: Callable[[Any], Any], *, keeps_rows: bool = False) -> Any:
        """Apply ``fn`` to every local partition (and to ``meta`` for the result's schema).

        ``fn`` must give every partition the same schema (a frame or a series); with
        ``keeps_rows`` it must keep each partition's rows, so the result lines up with this
        frame (a new layout otherwise, sizes unknown).
        """
        out_meta = fn(self.meta)
        layout = self.layout if keeps_rows else Layout(self.layout.owners)
        parts = {i: fn(p) for i, p in self._parts.items()}
        return _wrap(self._rt, out_meta, layout, parts)

    def _rowwise(self, fn: Callable[[Any], Any]) -> Any:
        return self.map_partitions(fn, keeps_rows=True)

    # -- selection --------------------------------------------------------------------------

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, DistSeries):
            return self._filter(key)
        if isinstance(key, list):
            _check_columns(self.meta, key, "key")
            return self._rowwise(lambda p: p[key])
        _check_columns(self.meta, [key], "key")
        return self._rowwise(lambda p: p[key])

    def __getattr__(self, name: str) -> DistSeries:
        meta = self.__dict__.get("meta")
        if meta is not None and not name.startswith("_") and name in meta.columns:
            return self[name]
        raise AttributeError(f"'DistFrame' object has no attribute {name!r}")

    def _filter(self, mask: DistSeries) -> DistFrame:
        if mask.meta.dtype != bool and str(mask.meta.dtype) != "boolean":
            raise TypeError(f"key: expected a boolean DistSeries, found dtype {mask.meta.dtype}")
        self._aligned(mask, "key")
        parts = {
            i: p[mask._parts[i].fillna(False)].reset_index(drop=True)
            for i, p in self._parts.items()
        }
        return DistFrame(self._rt, self.meta, Layout(self.layout.owners), parts)

    def __setitem__(self, key: Any, value: Any) -> None:
        """``df[col] = series or scalar``: adds or replaces a column on every partition."""
        new = self.assign(**{key: value}) if isinstance(key, str) else self._assign({key: value})
        self.meta, self._parts = new.meta, new._parts

    def assign(self, **columns: Any) -> DistFrame:
        """Return a copy with columns added or replaced (DistSeries lined up with it, scalars)."""
        return self._assign(columns)

    def _assign(self, columns: Mapping[Any, Any]) -> DistFrame:
        series: dict[Any, DistSeries] = {}
        for name, value in columns.items():
            if isinstance(value, DistSeries):
                self._aligned(value, f"{name}")
                series[name] = value
            elif isinstance(value, _Partitioned) or np.ndim(value) != 0:
                raise TypeError(
                    f"{name}: expected a DistSeries or a scalar, found {type(value).__name__}"
                )

        def put(frame: Any, i: int | None) -> Any:
            frame = frame.copy(deep=False)
            for name, value in columns.items():
                if name in series:
                    value = series[name].meta if i is None else series[name]._parts[i]
                frame[name] = value
            return frame

        meta = put(self.meta, None)
        parts = {i: put(p, i) for i, p in self._parts.items()}
        return DistFrame(self._rt, meta, self.layout, parts)

    # -- moving rows between ranks -----------------------------------------------------------

    def rebalance(self) -> DistFrame:
        """Return the same rows in order, one partition per rank, even lengths (collective)."""
        from gpupart.containers import shuffle

        return shuffle.rebalance(self)

    def repartition(self, npartitions: int) -> DistFrame:
        """Return the same rows in order in ``npartitions`` even partitions (collective)."""
        from gpupart.containers import shuffle

        return shuffle.repartition(self, npartitions)

    # -- moving data out --------------------------------------------------------------------

    def to_pandas(self) -> Any:
        """Return the whole frame on every rank as one pandas frame (collective)."""
        return _host_frame(self._collect(list(range(self._rt.size))))

    def gather(self, root: int = 0) -> Any:
        """Return the whole frame on ``root`` (pandas), ``None`` elsewhere (collective)."""
        _check_rank(self._rt, root, "root")
        whole = self._collect([root])
        return _host_frame(whole) if self._rt.rank == root else None

    def head(self, n: int = 5) -> Any:
        """Return the first ``n`` rows on every rank, as pandas (collective)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n: expected an int >= 0, found {n!r}")
        sizes, wanted, left = self.partition_sizes, {}, n
        for i, size in enumerate(sizes):
            if left <= 0:
                break
            wanted[i] = min(size, left)
            left -= wanted[i]
        return _host_frame(self._collect(list(range(self._rt.size)), rows=wanted))

    def _collect(self, to: list[int], rows: Mapping[int, int] | None = None) -> Any:
        """Send every partition (or its first ``rows[i]`` rows) to the ranks ``to``; concat."""
        from gpupart.containers import frame_columns

        rt, module = self._rt, self._module()
        mine = sorted(i for i in self._parts if rows is None or i in rows)
        pieces: list[Any] = [{} for _ in range(rt.size)]
        if mine:
            chosen = [
                self._parts[i] if rows is None else self._parts[i].iloc[: rows[i]] for i in mine
            ]
            local = frame_columns.concat(chosen, module) if len(chosen) > 1 else chosen[0]
            encoded = frame_columns.encode(local)
            # each row's partition number: a rank may own partitions that are not adjacent
            order = np.repeat(np.asarray(mine, np.int64), [len(c) for c in chosen])
            for dest in to:
                pieces[dest] = {"order": order, **encoded}
        got = rt.exchange(pieces)
        if rt.rank not in to:
            return None
        received = [p for p in got if p and len(p["order"])]
        if not received:
            return self.meta.iloc[:0].reset_index(drop=True)
        decoded = [frame_columns.decode(p, self.meta, module) for p in received]
        whole = frame_columns.concat(decoded, module) if len(decoded) > 1 else decoded[0]
        order = np.concatenate([host_array(p["order"]) for p in received])
        if np.any(order[1:] < order[:-1]):  # stable: rows keep their order within a partition
            whole = whole.take(np.argsort(order, kind="stable")).reset_index(drop=True)
        return whole

    def to_array(self, columns: Sequence[Any] | None = None, dtype: Any = None) -> Any:
        """Return columns as a 2-d :class:`~gpupart.DistArray` (rows as they are; collective).

        Each rank's partitions become its block of rows (one tile per rank: a copy, the
        columns interleaved); when ranks own partitions out of rank order, each partition
        becomes a tile, so rows keep the frame's order. ``dtype`` defaults to the columns'
        common type.
        """
        from gpupart.containers.creation import from_local
        from gpupart.containers.darray import DistArray

        from gpupart.protocol import Tiling

        cols = list(self.columns if columns is None else columns)
        _check_columns(self.meta, cols, "columns")
        if dtype is None:
            dt = np.result_type(*[np.dtype(self.meta[c].dtype) for c in cols])
        else:
            dt = np.dtype(dtype)
        xp = self._rt.backend.xp
        owners = self.layout.owners
        if any(b < a for a, b in itertools.pairwise(owners)):
            # partitions not in rank order: one tile per partition keeps the frame's row order
            cuts = np.concatenate([[0], np.cumsum(self.partition_sizes)]).tolist()
            tiling = Tiling.from_boundaries([cuts, [0, len(cols)]])
            tiles = {
                (i, 0): xp.ascontiguousarray(_values(p[cols], dt)) for i, p in self._parts.items()
            }
            return DistArray(self._rt, tiling, np.asarray(owners).reshape(-1, 1), dt, tiles)
        blocks = [_values(self._parts[i][cols], dt) for i in sorted(self._parts)]
        local = xp.concatenate(blocks) if blocks else xp.empty((0, len(cols)), dtype=dt)
        return from_local(xp.ascontiguousarray(local), axis=0)


class DistSeries(_Partitioned):
    """One distributed column (see the module docstring): ``df[name]``."""

    def __init__(self, runtime: Any, meta: Any, layout: Layout, parts: Mapping[int, Any]) -> None:
        super().__init__(runtime, layout, parts)
        self.meta = meta

    @property
    def name(self) -> Any:
        """The column's label."""
        return self.meta.name

    @property
    def dtype(self) -> Any:
        """The column's dtype."""
        return self.meta.dtype

    def __repr__(self) -> str:
        return (
            f"<gpupart.DistSeries {self.name!r} dtype={self.dtype} in {self.npartitions}"
            f" partition(s), rank {self._rt.rank} holds {len(self._parts)}>"
        )

    def map_partitions(self, fn: Callable[[Any], Any], *, keeps_rows: bool = False) -> Any:
        """Apply ``fn`` to every local partition (see :meth:`DistFrame.map_partitions`)."""
        out_meta = fn(self.meta)
        layout = self.layout if keeps_rows else Layout(self.layout.owners)
        return _wrap(self._rt, out_meta, layout, {i: fn(p) for i, p in self._parts.items()})

    def _rowwise(self, fn: Callable[[Any], Any]) -> Any:
        return self.map_partitions(fn, keeps_rows=True)

    def to_frame(self) -> DistFrame:
        """Return a one-column frame."""
        return self._rowwise(lambda s: s.to_frame())

    def to_pandas(self) -> Any:
        """Return the whole column on every rank as a pandas Series (collective)."""
        return self._named(self.to_frame().to_pandas().iloc[:, 0])

    def gather(self, root: int = 0) -> Any:
        """Return the whole column on ``root`` (pandas), ``None`` elsewhere (collective)."""
        whole = self.to_frame().gather(root)
        return None if whole is None else self._named(whole.iloc[:, 0])

    def head(self, n: int = 5) -> Any:
        """Return the first ``n`` values on every rank, as pandas (collective)."""
        return self._named(self.to_frame().head(n).iloc[:, 0])

    def _named(self, series: Any) -> Any:
        """``series`` with this column's name (``None`` too: a frame's column is named 0)."""
        series.name = self.meta.name
        return series

    def to_array(self, dtype: Any = None) -> Any:
        """Return the column as a 1-d :class:`~gpupart.DistArray` (collective)."""
        return self.to_frame().to_array(dtype=dtype)[:, 0]

    # -- elementwise ------------------------------------------------------------------------

    def _binary(self, other: Any, op: Callable[[Any, Any], Any], name: str) -> DistSeries:
        if isinstance(other, DistSeries):
            self._aligned(other, "other")

            def apply(p: Any, i: int | None) -> Any:
                return _keep_name(op(p, other.meta if i is None else other._parts[i]), self.meta)

        elif isinstance(other, _Partitioned):
            raise TypeError(f"other: expected a DistSeries or a scalar for {name}, found a frame")
        elif np.ndim(other) != 0:
            raise TypeError(
                f"other: expected a DistSeries or a scalar for {name}, found {type(other).__name__}"
            )
        else:

            def apply(p: Any, i: int | None) -> Any:
                return op(p, other)

        meta = apply(self.meta, None)
        if name in ("floordiv", "mod", "pow") and _may_widen(meta.dtype):
            # a zero divisor makes pandas' results float64, a negative power of ints raises:
            # only where such values are, so the ranks agree on the outcome (one all-gather)
            from gpupart.containers import frame_ops

            return frame_ops.agreed(self, apply, name)
        parts = {i: apply(p, i) for i, p in self._parts.items()}
        return DistSeries(self._rt, meta, self.layout, parts)

    def __invert__(self) -> DistSeries:
        return self._rowwise(operator.invert)

    def __neg__(self) -> DistSeries:
        return self._rowwise(operator.neg)

    def __abs__(self) -> DistSeries:
        return self._rowwise(abs)

    def __bool__(self) -> bool:
        raise TypeError(
            "the truth value of a DistSeries is ambiguous: use .any(), .all(), or & | ~"
            " between conditions"
        )

    __hash__ = None  # type: ignore[assignment]  (== is elementwise)

    # -- reductions -------------------------------------------------------------------------

    def _reduce(self, name: str) -> Any:
        """Reduce like pandas' ``Series.<name>()`` (collective; see ``frame_ops``)."""
        from gpupart.containers import frame_ops

        return frame_ops.series_reduce(self, name)

    def sum(self) -> Any:
        """Sum of the non-null values (collective; one all-gather of the partitions' sums)."""
        return self._reduce("sum")

    def count(self) -> Any:
        """Return the number of non-null values (a NumPy int64, as pandas; collective)."""
        return self._reduce("count")

    def min(self) -> Any:
        """Smallest non-null value (collective)."""
        return self._reduce("min")

    def max(self) -> Any:
        """Largest non-null value (collective)."""
        return self._reduce("max")

    def mean(self) -> Any:
        """Mean of the non-null values (collective)."""
        return self._reduce("mean")


_OPERATORS = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "truediv": operator.truediv,
    "floordiv": operator.floordiv,
    "mod": operator.mod,
    "pow": operator.pow,
    "and": operator.and_,
    "or": operator.or_,
    "xor": operator.xor,
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}


def row_view(frame: Any, start: int | None = None, stop: int | None = None) -> Any:
    """Rows ``start:stop`` of a pandas/cuDF frame or series, numbered from 0, without a copy.

    ``reset_index(drop=True)`` copies every column under pandas 2 (no copy-on-write), so the
    new index is set on a shallow copy of the slice instead (which pandas 2 does not flag as
    a slice of the caller's frame); the caller's object is left as it was.
    """
    view = frame.iloc[start:stop].copy(deep=False)
    view.index = _range_index(frame, len(view))
    return view


def _range_index(frame: Any, length: int) -> Any:
    module = type(frame).__module__.split(".")[0]
    if module == "cudf":
        import cudf

        return cudf.RangeIndex(length)
    import pandas

    return pandas.RangeIndex(length)


def _operator(name: str, op: Callable[[Any, Any], Any], reflected: bool) -> Any:
    def method(self: DistSeries, other: Any) -> DistSeries:
        return self._binary(other, (lambda a, b: op(b, a)) if reflected else op, name)

    method.__name__ = f"__{'r' if reflected else ''}{name}__"
    return method


for _name, _op in _OPERATORS.items():
    setattr(DistSeries, f"__{_name}__", _operator(_name, _op, reflected=False))
    if _name not in ("eq", "ne", "lt", "le", "gt", "ge"):
        setattr(DistSeries, f"__r{_name}__", _operator(_name, _op, reflected=True))


# -- helpers ----------------------------------------------------------------------------------


def _wrap(rt: Any, meta: Any, layout: Layout, parts: dict[int, Any]) -> Any:
    """Return a DistFrame or a DistSeries, as ``meta`` is a frame or a series."""
    if hasattr(meta, "columns"):
        return DistFrame(rt, meta, layout, parts)
    if hasattr(meta, "dtype") and hasattr(meta, "name"):
        return DistSeries(rt, meta, layout, parts)
    raise TypeError(
        f"fn: expected a function returning a frame or a series, found {type(meta).__name__}"
    )


def _is_pandas(obj: Any) -> bool:
    return type(obj).__module__.split(".")[0] == "pandas"


def _keep_name(result: Any, like: Any) -> Any:
    """Binary results keep the left operand's name (pandas drops it when names differ)."""
    if getattr(result, "name", None) != like.name:
        result = result.rename(like.name)
    return result


def _may_widen(dtype: Any) -> bool:
    """Numbers but float64: pandas may widen them value by value (a zero divisor)."""
    return getattr(dtype, "kind", "") in ("i", "u", "f") and dtype != np.float64


def _values(frame: Any, dtype: np.dtype) -> Any:
    """Return a frame's values as one 2-d array of ``dtype`` on its device."""
    if _is_pandas(frame):
        return frame.to_numpy(dtype=dtype)
    return frame.to_cupy(dtype=dtype)


def _check_columns(meta: Any, keys: Sequence[Any], what: str) -> None:
    missing = [k for k in keys if k not in meta.columns]
    if missing:
        raise KeyError(
            f"{what}: expected columns of the frame ({list(meta.columns)!r}), found {missing!r}"
        )


def _check_rank(rt: Any, root: Any, what: str) -> None:
    if isinstance(root, bool) or not isinstance(root, int) or not 0 <= root < rt.size:
        raise ValueError(f"{what}: expected a rank in 0..{rt.size - 1}, found {root!r}")


def _host_frame(frame: Any) -> Any:
    return frame.to_pandas() if hasattr(frame, "to_pandas") and not _is_pandas(frame) else frame


def _method(module: str, name: str) -> Any:
    """Make a method that calls ``gpupart.containers.<module>.<name>(self, ...)``."""

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        import importlib

        fn = getattr(importlib.import_module(f"gpupart.containers.{module}"), name)
        return fn(self, *args, **kwargs)

    method.__name__ = name
    return method


def _accessor(module: str, name: str) -> Any:
    """Make a property that returns ``gpupart.containers.<module>.<name>(self)``."""
    return property(_method(module, name))


# Methods whose code lives in the modules of their family (one module, one job):
# frame_ops (per-partition operations), groupby, joins (merge, sort), frame_io (parquet),
# frame_partitioned (__partitioned__).
for _name in ("astype", "rename", "drop", "dropna", "fillna", "isna", "notna"):
    setattr(DistFrame, _name, _method("frame_ops", f"frame_{_name}"))
for _name in (
    "astype",
    "fillna",
    "isna",
    "notna",
    "dropna",
    "isin",
    "between",
    "clip",
    "round",
    "std",
    "var",
    "prod",
    "any",
    "all",
    "nunique",
    "unique",
):
    setattr(DistSeries, _name, _method("frame_ops", f"series_{_name}"))
DistSeries.str = _accessor("frame_ops", "string_methods")  # type: ignore[attr-defined]
DistSeries.dt = _accessor("frame_ops", "datetime_methods")  # type: ignore[attr-defined]
DistFrame.groupby = _method("groupby", "groupby")  # type: ignore[attr-defined]
DistFrame.drop_duplicates = _method("groupby", "drop_duplicates")  # type: ignore[attr-defined]
DistFrame.value_counts = _method("groupby", "frame_value_counts")  # type: ignore[attr-defined]
DistSeries.value_counts = _method("groupby", "series_value_counts")  # type: ignore[attr-defined]
DistFrame.merge = _method("joins", "merge")  # type: ignore[attr-defined]
DistFrame.sort_values = _method("joins", "sort_values")  # type: ignore[attr-defined]
DistSeries.sort_values = _method("joins", "series_sort_values")  # type: ignore[attr-defined]
DistFrame.to_parquet = _method("frame_io", "to_parquet")  # type: ignore[attr-defined]
DistFrame.__partitioned__ = _accessor("frame_partitioned", "export")  # type: ignore[attr-defined]
