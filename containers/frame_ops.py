"""Per-partition operations of frames and series, and the reductions of a series.

What ``DistFrame``/``DistSeries`` bind here (see the end of ``dframe``):

* **row-keeping** operations (``astype``, ``rename``, ``drop``, ``fillna``, ``isna``, ``isin``,
  ``between``, ``clip``, ``round``, ``.str``, ``.dt``) run pandas/cuDF on every partition;
  the result shares the input's layout. Argument errors come from applying the operation to
  ``meta`` (the empty frame every rank holds), so every rank raises them.
* Where the result's **dtype depends on the values** (``astype`` and ``fillna`` may fail on
  one value; ``clip`` with a float bound, ``fillna`` with another type, ``.str.len()`` over
  nulls, ``.dt.year`` over ``NaT`` change the dtype only where such values are), one
  all-gather of each rank's outcome follows: a failure on any rank raises on every rank, and
  partitions are cast to the common dtype, the one pandas gives the whole column.
* **row-dropping** ones (``dropna``) give a new layout (sizes learnt when asked).
* **reductions** reduce each partition, then combine the ranks' partials with one
  collective: sum/prod/min/max/any/all by an all-gather of the partials (rebuilt as a
  column of the series' dtype and reduced by pandas, so types and empty results are
  pandas'), mean by (sum, count), var/std by an all-gather of per-partition
  ``(count, mean, M2)`` combined with Chan's formula; ``nunique``/``unique`` send every
  value to the rank its hash names (``shuffle_rows``) and count or deduplicate there.
  A partition pandas cannot reduce (strings with nulls in an object column, under pandas 2)
  raises pandas' error on every rank; an object column keeps its all-null partitions'
  partials (NaN, 0), so that pandas' rules for the whole column apply to the partials.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from gpupart.containers import frame_columns
from gpupart.containers.dframe import (
    DistFrame,
    DistSeries,
    Layout,
    _check_columns,
    _is_pandas,
    _Partitioned,
    _wrap,
)

__all__ = [
    "agreed",
    "datetime_methods",
    "frame_astype",
    "frame_drop",
    "frame_dropna",
    "frame_fillna",
    "frame_isna",
    "frame_notna",
    "frame_rename",
    "series_all",
    "series_any",
    "series_astype",
    "series_between",
    "series_clip",
    "series_dropna",
    "series_fillna",
    "series_isin",
    "series_isna",
    "series_notna",
    "series_nunique",
    "series_prod",
    "series_reduce",
    "series_round",
    "series_std",
    "series_unique",
    "series_var",
    "string_methods",
]

_UNSET: Any = object()
#: Errors an operation may raise on some values only (caught, agreed on, raised everywhere).
_VALUE_ERRORS = (TypeError, ValueError, OverflowError)


# == frames =====================================================================================


def frame_astype(df: DistFrame, dtype: Any) -> DistFrame:
    """Cast every column to ``dtype``, or the columns of a dict ``{column: dtype}``.

    A value that cannot be cast raises on every rank; ``'category'`` takes its categories
    from every rank's values (sorted, as pandas does; one more all-gather).
    """
    if isinstance(dtype, Mapping):
        _check_columns(df.meta, list(dtype), "dtype")
        targets = dict(dtype)
    else:
        targets = dict.fromkeys(df.columns, dtype)
    resolved = _categories_everywhere(df, targets)
    if any(resolved[c] is not targets[c] for c in targets):  # ('category' == a dtype)
        dtype = resolved
    return _agreed(df, lambda p: p.astype(dtype), "astype")


def frame_rename(df: DistFrame, columns: Any = None) -> DistFrame:
    """Relabel columns by a mapping (labels not in it stay) or a function of the label."""
    if columns is None:
        raise TypeError("columns: expected a mapping or a function of the label, found None")
    if isinstance(columns, Mapping):
        new = [columns.get(c, c) for c in df.columns]
    elif callable(columns):
        new = [columns(c) for c in df.columns]
    else:
        raise TypeError(
            f"columns: expected a mapping or a function of the label, found"
            f" {type(columns).__name__}"
        )
    seen: dict[str, list[Any]] = {}
    for old, label in zip(df.columns, new, strict=True):
        seen.setdefault(repr(label), []).append(old)
    clashes = {key: olds for key, olds in seen.items() if len(olds) > 1}
    if clashes:
        detail = "; ".join(f"{olds!r} -> {key}" for key, olds in clashes.items())
        raise ValueError(f"columns: expected distinct labels after renaming, found {detail}")

    def relabel(p: Any) -> Any:
        out = p.copy(deep=False)
        out.columns = new
        return out

    return df._rowwise(relabel)


def frame_drop(df: DistFrame, columns: Any) -> DistFrame:
    """Drop a column or a list of columns (each must exist)."""
    labels = list(columns) if isinstance(columns, (list, tuple)) else [columns]
    _check_columns(df.meta, labels, "columns")
    return df._rowwise(lambda p: p.drop(columns=labels))


def frame_dropna(df: DistFrame, subset: Sequence[Any] | None = None, how: str = "any") -> DistFrame:
    """Drop rows with a null in any (``how='any'``) or every (``'all'``) ``subset`` column."""
    if subset is not None:
        subset = list(subset) if isinstance(subset, (list, tuple)) else [subset]
        _check_columns(df.meta, subset, "subset")
    if how not in ("any", "all"):
        raise ValueError(f"how: expected 'any' or 'all', found {how!r}")
    return df.map_partitions(lambda p: p.dropna(subset=subset, how=how).reset_index(drop=True))


def frame_fillna(df: DistFrame, value: Any) -> DistFrame:
    """Fill nulls with a scalar, or per column with a dict ``{column: scalar}`` (as pandas)."""
    if isinstance(value, Mapping):
        bad = [k for k, v in value.items() if not _is_scalar(v)]
    else:
        bad = [] if _is_scalar(value) else [value]
    if bad:
        raise TypeError(
            f"value: expected a scalar or a dict of scalars, found {type(bad[0]).__name__}"
        )
    return _agreed(df, lambda p: p.fillna(value), "fillna")


def frame_isna(df: DistFrame) -> DistFrame:
    """Return a frame of bools: where values are null (``None``, ``NaN``, ``NaT``, ``NA``)."""
    return df._rowwise(lambda p: p.isna())


def frame_notna(df: DistFrame) -> DistFrame:
    """Return a frame of bools: where values are not null."""
    return df._rowwise(lambda p: p.notna())


# == series, row-keeping ========================================================================


def series_astype(series: DistSeries, dtype: Any) -> DistSeries:
    """Cast to ``dtype`` (see :func:`frame_astype`)."""
    frame = series.to_frame()
    dtype = _categories_everywhere(frame, {series.name: dtype})[series.name]
    return _agreed(series, lambda s: s.astype(dtype), "astype")


def series_fillna(series: DistSeries, value: Any) -> DistSeries:
    """Fill nulls with the scalar ``value``."""
    if not _is_scalar(value):
        raise TypeError(f"value: expected a scalar, found {type(value).__name__}")
    return _agreed(series, lambda s: s.fillna(value), "fillna")


def series_isna(series: DistSeries) -> DistSeries:
    """Return bools: where values are null."""
    return series._rowwise(lambda s: s.isna())


def series_notna(series: DistSeries) -> DistSeries:
    """Return bools: where values are not null."""
    return series._rowwise(lambda s: s.notna())


def series_dropna(series: DistSeries) -> DistSeries:
    """Return the non-null values (a new layout)."""
    return series.map_partitions(lambda s: s.dropna().reset_index(drop=True))


def series_isin(series: DistSeries, values: Any) -> DistSeries:
    """Return bools: whether each value is in ``values`` (a list or array, the same everywhere)."""
    if isinstance(values, _Partitioned):
        raise TypeError(
            "values: expected a list or array (the same on every rank), found a"
            f" {type(values).__name__}; gather it first (to_pandas)"
        )
    if isinstance(values, (str, bytes)) or (np.ndim(values) == 0 and not isinstance(values, set)):
        raise TypeError(f"values: expected a list or array, found {type(values).__name__}")
    return series._rowwise(lambda s: s.isin(values))


def series_between(
    series: DistSeries, left: Any, right: Any, inclusive: str = "both"
) -> DistSeries:
    """Return bools: ``left <= value <= right`` (``inclusive``: both, neither, left, right)."""
    if inclusive not in ("both", "neither", "left", "right"):
        raise ValueError(
            f"inclusive: expected 'both', 'neither', 'left' or 'right', found {inclusive!r}"
        )
    return series._rowwise(lambda s: s.between(left, right, inclusive=inclusive))


def series_clip(series: DistSeries, lower: Any = None, upper: Any = None) -> DistSeries:
    """Limit values to ``[lower, upper]`` (``None``: no limit on that side)."""
    for name, bound in (("lower", lower), ("upper", upper)):
        if bound is not None and not _is_scalar(bound):
            raise TypeError(f"{name}: expected a scalar or None, found {type(bound).__name__}")
    return _agreed(series, lambda s: s.clip(lower, upper), "clip")


def series_round(series: DistSeries, decimals: int = 0) -> DistSeries:
    """Round to ``decimals`` decimal places (half to even, as NumPy)."""
    if isinstance(decimals, bool) or not isinstance(decimals, (int, np.integer)):
        raise TypeError(f"decimals: expected an int, found {type(decimals).__name__}")
    return series._rowwise(lambda s: s.round(int(decimals)))


# == reductions =================================================================================


def series_reduce(series: DistSeries, name: str) -> Any:
    """Reduce to one value like pandas' ``Series.<name>()`` (collective; nulls skipped).

    ``name`` is one of sum, prod, min, max, mean, count, any, all. The result is the same
    on every rank, of pandas' type (a ``Timestamp`` for datetimes); what pandas cannot
    reduce raises pandas' error on every rank (it is tried on the empty ``meta`` first).
    """
    if name not in _REDUCERS:
        raise ValueError(f"name: expected one of {sorted(_REDUCERS)}, found {name!r}")
    meta = _host(series.meta)
    empty = getattr(meta, name)()  # pandas' result for no values; its TypeError, everywhere
    return _REDUCERS[name](series, meta, empty)


def series_prod(series: DistSeries) -> Any:
    """Product of the non-null values (collective)."""
    return series_reduce(series, "prod")


def series_any(series: DistSeries) -> Any:
    """Whether any non-null value is true (collective)."""
    return series_reduce(series, "any")


def series_all(series: DistSeries) -> Any:
    """Whether every non-null value is true (collective)."""
    return series_reduce(series, "all")


def series_var(series: DistSeries, ddof: int = 1) -> Any:
    """Return the variance of the non-null values, divided by ``count - ddof`` (collective).

    One all-gather of every partition's ``(count, mean, M2)``, combined with Chan et al.'s
    pairwise update (no sum of squares that cancels).
    """
    meta = _host(series.meta)
    if not (_is_numeric(meta.dtype) or meta.dtype == object):
        raise TypeError(f"var: expected a numeric or boolean column, found dtype {meta.dtype}")
    return _spread(series, meta, ddof, root=False)


def series_std(series: DistSeries, ddof: int = 1) -> Any:
    """Return the standard deviation of the non-null values (collective; as ``var``).

    Datetime and timedelta columns give a ``Timedelta``, as in pandas.
    """
    meta = _host(series.meta)
    if not (_is_numeric(meta.dtype) or _time_unit(meta.dtype) or meta.dtype == object):
        raise TypeError(
            f"std: expected a numeric, boolean, datetime or timedelta column, found dtype"
            f" {meta.dtype}"
        )
    return _spread(series, meta, ddof, root=True)


def _spread(series: DistSeries, meta: Any, ddof: Any, *, root: bool) -> Any:
    """Variance (or its square root) from every partition's ``(count, mean, M2)``."""
    if isinstance(ddof, bool) or not isinstance(ddof, (int, np.integer)):
        raise TypeError(f"ddof: expected an int, found {type(ddof).__name__}")
    unit = _time_unit(meta.dtype)
    local, rows, problem = [], False, None
    try:
        for p in series.local_partitions.values():
            rows = rows or len(p) > 0
            if len(p) and p.dtype == object:  # (pandas' error for strings)
                getattr(p, "std" if root else "var")(ddof=int(ddof))
            x = p.dropna()
            x = (x.astype("int64") if unit else x).astype("float64")
            if len(x):
                mean = float(x.mean())
                local.append((len(x), mean, float(((x - mean) ** 2).sum())))
    except _VALUE_ERRORS as exc:
        problem = _problem(exc)
    every = series.runtime.allgather((rows, local, problem))
    _raise_failed([p for _, _, p in every], "std" if root else "var")
    n, _, m2 = _chan([s for _, states, _ in every for s in states])
    if n - int(ddof) <= 0:  # pandas' missing value: of no rows, or of nulls (float32 NaN...)
        like = meta.reindex([0]) if any(r for r, _, _ in every) else meta
        return getattr(like, "std" if root else "var")(ddof=int(ddof))
    value = m2 / (n - int(ddof))
    value = math.sqrt(value) if root else value
    if unit:
        import pandas as pd

        return pd.Timedelta(np.timedelta64(round(value), unit))
    return _float_like(value, meta.dtype)


def series_nunique(series: DistSeries, dropna: bool = True) -> int:
    """Count the distinct values (exact: equal values meet on the rank their hash names)."""
    rt = series.runtime
    local = _by_value(series)
    count = sum(int(s.nunique(dropna=dropna)) for s in local.local_partitions.values())
    return int(rt.allreduce(np.array([count], dtype=np.int64), op="sum")[0])


def series_unique(series: DistSeries) -> DistSeries:
    """Return the distinct values (nulls once), one partition per rank, in no set order."""
    local = _by_value(series)
    parts = {
        i: _named(s.drop_duplicates().reset_index(drop=True), series.name)
        for i, s in local.local_partitions.items()
    }
    return DistSeries(series.runtime, series.meta, Layout(local.layout.owners), parts)


def _sum_like(series: DistSeries, meta: Any, empty: Any, name: str) -> Any:
    partials, rows = _partials(series, name)
    if meta.dtype == object and _is_pandas(series.meta) and rows:
        return _objects_reduced(partials, name)
    if not partials:
        return _all_null(meta, name) if rows else empty
    total = partials[0]
    for value in partials[1:]:
        total = total * value if name == "prod" else total + value
    return _restore(total, meta)


def _extreme(series: DistSeries, meta: Any, empty: Any, name: str) -> Any:
    partials, rows = _partials(series, name)
    if meta.dtype == object and _is_pandas(series.meta) and rows:
        return _objects_reduced(partials, name)
    if not partials:
        return _all_null(meta, name) if rows else empty
    return getattr(_column_of(partials, meta), name)()


def _truth(series: DistSeries, meta: Any, empty: Any, name: str) -> Any:
    local = [bool(getattr(p, name)()) for p in series.local_partitions.values() if len(p)]
    every = [v for vs in series.runtime.allgather(local) for v in vs]
    return type(empty)(any(every) if name == "any" else all(every))


def _count(series: DistSeries, meta: Any, empty: Any, name: str) -> Any:
    local = sum(int(p.count()) for p in series.local_partitions.values())
    total = series.runtime.allreduce(np.array([local], dtype=np.int64), op="sum")[0]
    return type(empty)(total)  # pandas' type (np.int64)


def _mean(series: DistSeries, meta: Any, empty: Any, name: str) -> Any:
    dtype = meta.dtype
    timelike = _time_unit(dtype)
    local, problem = [], None
    try:
        for p in series.local_partitions.values():
            count = int(p.count())
            if count and dtype == object:  # noqa: E721 (pandas' error for strings)
                p.mean()
            if count:
                local.append((count, _ticks(p.mean(), timelike) if timelike else _float_sum(p)))
    except _VALUE_ERRORS as exc:
        problem = _problem(exc)
    every = series.runtime.allgather((local, problem))
    _raise_failed([p for _, p in every], "mean")
    states = [s for states, _ in every for s in states]
    n = sum(c for c, _ in states)
    if n == 0:
        return empty
    if not timelike:
        return _float_like(sum(t for _, t in states) / n, dtype)
    first = states[0][1]  # exact in Python ints: counts times offsets from the first mean
    ticks = first + round(sum(c * (t - first) for c, t in states) / n)
    return _restore(ticks, meta, ticks=True)


_REDUCERS: dict[str, Callable[[DistSeries, Any, Any], Any]] = {
    "sum": lambda s, m, e: _sum_like(s, m, e, "sum"),
    "prod": lambda s, m, e: _sum_like(s, m, e, "prod"),
    "min": lambda s, m, e: _extreme(s, m, e, "min"),
    "max": lambda s, m, e: _extreme(s, m, e, "max"),
    "any": lambda s, m, e: _truth(s, m, e, "any"),
    "all": lambda s, m, e: _truth(s, m, e, "all"),
    "count": lambda s, m, e: _count(s, m, e, "count"),
    "mean": lambda s, m, e: _mean(s, m, e, "mean"),
}


def _partials(series: DistSeries, name: str) -> tuple[list[Any], bool]:
    """Return the partitions' ``name`` reductions (global order) and if any rows exist.

    Missing partials are left out (all-null rows reduce like pandas' all-null column, no rows
    like its empty one), except for object columns (see :func:`_objects_reduced`). A
    partition pandas cannot reduce raises its error on every rank.
    """
    objects = series.meta.dtype == object and _is_pandas(series.meta)  # (cuDF skips nulls)
    local, rows, problem = [], False, None
    try:
        for i, p in series.local_partitions.items():
            if len(p):
                rows = True
                value = getattr(p, name)()
                if objects or not _missing(value):
                    local.append((i, value if objects else _plain(value)))
    except _VALUE_ERRORS as exc:
        problem = _problem(exc)
    every = series.runtime.allgather((rows, local, problem))
    _raise_failed([p for _, _, p in every], name)
    found = sorted((pair for _, vs, _ in every for pair in vs), key=lambda pair: pair[0])
    return [v for _, v in found], any(r for r, _, _ in every)


def _objects_reduced(partials: list[Any], name: str) -> Any:
    """Reduce an object column's partials (every non-empty partition's) as pandas does.

    pandas' object reductions depend on nulls as well as values (pandas 2 refuses the min of
    strings next to a null, pandas 3 skips it; a sum of nulls is 0): an all-null partition's
    partial (NaN, 0) stands for its nulls, so pandas gives the whole column's result or error.
    """
    import pandas as pd

    return getattr(pd.Series(partials, dtype=object), name)()


def _problem(exc: BaseException) -> tuple[bool, str]:
    """Describe a local failure for the ranks' agreement (whether a TypeError, the message)."""
    return isinstance(exc, TypeError), f"{type(exc).__name__}: {exc}"


def _raise_failed(problems: Sequence[tuple[bool, str] | None], what: str) -> None:
    """Raise on every rank when some rank's local work failed (``problems`` by rank).

    A ``TypeError`` stays one, the rest become ``ValueError``s; the message names the ranks.
    """
    failed = [(r, p) for r, p in enumerate(problems) if p is not None]
    if failed:
        is_type, message = failed[0][1]
        ranks = ", ".join(str(r) for r, _ in failed)
        error = TypeError if is_type else ValueError
        raise error(f"{what}: failed on rank(s) {ranks}; rank {failed[0][0]}: {message}")


def _all_null(meta: Any, name: str) -> Any:
    """Pandas' ``name`` of a column of ``meta``'s dtype holding one null.

    Not that of no rows: float32 gives a float32 NaN here, a Python float there.
    """
    return getattr(meta.reindex([0]), name)()


def _float_sum(part: Any) -> float:
    """Sum in float64, as pandas' mean (integers would wrap around; uint64 near 2**64)."""
    return float(part.dropna().astype("float64").sum())


def _chan(states: list[tuple[int, float, float]]) -> tuple[int, float, float]:
    """Combine ``(count, mean, M2)`` states (Chan, Golub and LeVeque's pairwise update)."""
    n, mean, m2 = 0, 0.0, 0.0
    for nb, mb, m2b in states:
        total = n + nb
        delta = mb - mean
        mean += delta * nb / total
        m2 += m2b + delta * delta * n * nb / total
        n = total
    return n, mean, m2


# == accessors ==================================================================================


def string_methods(series: DistSeries) -> StringMethods:
    """``series.str``: pandas' string methods on every partition (a column of strings only)."""
    dtype = series.meta.dtype
    strings = frame_columns.is_string_dtype(dtype) or (
        _is_categorical(dtype) and frame_columns.is_string_dtype(dtype.categories.dtype)
    )
    if not strings:
        raise AttributeError(
            f"str: expected a column of strings (or a categorical of strings), found dtype {dtype}"
        )
    return StringMethods(series)


def datetime_methods(series: DistSeries) -> DatetimeMethods:
    """``series.dt``: datetime fields and rounding on every partition (a datetime column only)."""
    if _time_unit(_host(series.meta).dtype, datetimes_only=True) is None:
        raise AttributeError(
            f"dt: expected a datetime64 column (tz-aware or not), found dtype {series.meta.dtype}"
        )
    return DatetimeMethods(series)


class StringMethods:
    """Pandas' ``.str`` methods applied partition by partition (rows kept)."""

    def __init__(self, series: DistSeries) -> None:
        self._series = series

    def _apply(self, fn: Callable[[Any], Any], what: str) -> DistSeries:
        return _per_value(self._series, fn, f"str.{what}")

    def len(self) -> DistSeries:
        """Length of each string (nulls stay null)."""
        return self._apply(lambda s: s.str.len(), "len")

    def contains(
        self, pat: str, case: bool = True, flags: int = 0, na: Any = _UNSET, regex: bool = True
    ) -> DistSeries:
        """Whether each string contains ``pat`` (a regular expression unless ``regex=False``)."""
        if regex:
            _check_pattern(pat, flags | (0 if case else re.IGNORECASE))
        extra = {} if na is _UNSET else {"na": na}
        return self._apply(
            lambda s: s.str.contains(pat, case=case, flags=flags, regex=regex, **extra),
            "contains",
        )

    def match(self, pat: str, case: bool = True, flags: int = 0, na: Any = _UNSET) -> DistSeries:
        """Whether each string starts with a match of the regular expression ``pat``."""
        _check_pattern(pat, flags | (0 if case else re.IGNORECASE))
        extra = {} if na is _UNSET else {"na": na}
        return self._apply(lambda s: s.str.match(pat, case=case, flags=flags, **extra), "match")

    def startswith(self, pat: str | tuple[str, ...], na: Any = _UNSET) -> DistSeries:
        """Whether each string starts with ``pat`` (a string or a tuple of them)."""
        _check_text(pat, "pat")
        extra = {} if na is _UNSET else {"na": na}
        return self._apply(lambda s: s.str.startswith(pat, **extra), "startswith")

    def endswith(self, pat: str | tuple[str, ...], na: Any = _UNSET) -> DistSeries:
        """Whether each string ends with ``pat`` (a string or a tuple of them)."""
        _check_text(pat, "pat")
        extra = {} if na is _UNSET else {"na": na}
        return self._apply(lambda s: s.str.endswith(pat, **extra), "endswith")

    def lower(self) -> DistSeries:
        """Lower-cased strings."""
        return self._apply(lambda s: s.str.lower(), "lower")

    def upper(self) -> DistSeries:
        """Upper-cased strings."""
        return self._apply(lambda s: s.str.upper(), "upper")

    def strip(self, to_strip: str | None = None) -> DistSeries:
        """Strings without leading and trailing ``to_strip`` characters (whitespace)."""
        return self._apply(lambda s: s.str.strip(to_strip), "strip")

    def lstrip(self, to_strip: str | None = None) -> DistSeries:
        """Strings without leading ``to_strip`` characters (whitespace)."""
        return self._apply(lambda s: s.str.lstrip(to_strip), "lstrip")

    def rstrip(self, to_strip: str | None = None) -> DistSeries:
        """Strings without trailing ``to_strip`` characters (whitespace)."""
        return self._apply(lambda s: s.str.rstrip(to_strip), "rstrip")

    def replace(
        self,
        pat: str,
        repl: str,
        n: int = -1,
        case: bool | None = None,
        flags: int = 0,
        regex: bool = False,
    ) -> DistSeries:
        """Replace occurrences of ``pat`` (literal unless ``regex=True``) with ``repl``."""
        if regex:
            _check_pattern(pat, flags | (re.IGNORECASE if case is False else 0))
        return self._apply(
            lambda s: s.str.replace(pat, repl, n=n, case=case, flags=flags, regex=regex),
            "replace",
        )

    def slice(
        self, start: int | None = None, stop: int | None = None, step: int | None = None
    ) -> DistSeries:
        """Substrings ``[start:stop:step]`` of every string."""
        return self._apply(lambda s: s.str.slice(start, stop, step), "slice")


class DatetimeMethods:
    """Pandas' ``.dt`` fields and methods applied partition by partition (rows kept)."""

    def __init__(self, series: DistSeries) -> None:
        self._series = series

    def _field(self, name: str) -> DistSeries:
        return _per_value(self._series, lambda s: getattr(s.dt, name), f"dt.{name}")

    year = property(lambda self: self._field("year"), doc="The year of each value.")
    month = property(lambda self: self._field("month"), doc="The month (1-12).")
    day = property(lambda self: self._field("day"), doc="The day of the month (1-31).")
    hour = property(lambda self: self._field("hour"), doc="The hour (0-23).")
    minute = property(lambda self: self._field("minute"), doc="The minute (0-59).")
    second = property(lambda self: self._field("second"), doc="The second (0-59).")
    day_of_week = property(
        lambda self: self._field("day_of_week"), doc="The day of the week, Monday 0."
    )
    dayofweek = day_of_week

    def floor(self, freq: str) -> DistSeries:
        """Round down to a multiple of ``freq`` (``'h'``, ``'D'``, ``'15min'`` ...)."""
        return _per_value(self._series, lambda s: s.dt.floor(freq), "dt.floor")

    def ceil(self, freq: str) -> DistSeries:
        """Round up to a multiple of ``freq``."""
        return _per_value(self._series, lambda s: s.dt.ceil(freq), "dt.ceil")

    def normalize(self) -> DistSeries:
        """Midnight of each value's day (its date, as a datetime)."""
        return _per_value(self._series, lambda s: s.dt.normalize(), "dt.normalize")

    def strftime(self, fmt: str) -> DistSeries:
        """Format each value with ``fmt`` (``NaT`` stays null)."""
        _check_text(fmt, "fmt")
        return _per_value(self._series, lambda s: s.dt.strftime(fmt), "dt.strftime")


# == helpers ====================================================================================


def _per_value(series: DistSeries, fn: Callable[[Any], Any], what: str) -> DistSeries:
    """``fn`` on every partition: agreed on when nulls may change its dtype (ints, bools)."""
    meta = fn(series.meta)
    dtype = meta.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "biuO":
        return _agreed(series, fn, what)
    return series._rowwise(fn)


def _agreed(obj: Any, fn: Callable[[Any], Any], what: str) -> Any:
    """:func:`agreed` for a function of the partition alone."""
    return agreed(obj, lambda part, _: fn(part), what)


def agreed(obj: Any, fn: Callable[[Any, int | None], Any], what: str) -> Any:
    """Apply ``fn(partition, number)`` everywhere; agree on failures and dtypes (one all-gather).

    ``fn(meta, None)`` runs first (argument errors raise on every rank). A value that makes
    ``fn`` fail on one rank raises on every rank (``TypeError`` stays one, the rest are
    ``ValueError``s) naming the rank; dtypes that differ between partitions (nulls or zero
    divisors met on some only) become their common dtype, as pandas gives for the whole
    column. The result lines up with ``obj``.
    """
    rt = obj.runtime
    meta = fn(obj.meta, None)
    problem, parts = None, {}
    try:
        parts = {i: fn(p, i) for i, p in obj.local_partitions.items()}
    except _VALUE_ERRORS as exc:
        problem = _problem(exc)
    schemas = [_schema(r) for r in parts.values() if len(r)]
    infos = rt.allgather((problem, schemas))
    _raise_failed([p for p, _ in infos], what)
    every = [_schema(meta), *(s for _, found in infos for s in found)]
    casts = {}
    for j, (label, spec) in enumerate(every[0]):
        specs = [s[j][1] for s in every]
        if any(s != spec for s in specs):
            casts[label] = _common_dtype(specs)
    if casts:
        meta = _cast(meta, casts)
        parts = {i: _cast(p, casts) for i, p in parts.items()}
    return _wrap(rt, meta, obj.layout, parts)


def _categories_everywhere(df: DistFrame, targets: dict[Any, Any]) -> dict[Any, Any]:
    """Give ``'category'`` targets the sorted union of every rank's values as categories."""
    import pandas as pd

    open_ = [
        c
        for c, d in targets.items()
        if (isinstance(d, str) and d == "category")
        or (isinstance(d, pd.CategoricalDtype) and d.categories is None)
    ]
    open_ = [c for c in open_ if not _is_categorical(df.meta[c].dtype)]  # pandas keeps those
    if not open_:
        return targets
    local: dict[Any, list[Any]] = {c: [] for c in open_}
    for p in df.local_partitions.values():
        for c in open_:
            local[c] += [_plain(v) for v in _host(p[c].dropna().unique())]
    every = df.runtime.allgather([local[c] for c in open_])
    resolved = dict(targets)
    for j, c in enumerate(open_):
        values = _column_of([v for found in every for v in found[j]], _host(df.meta[c]))
        categories = pd.Index(values).unique()
        with contextlib.suppress(TypeError):  # mixed objects: first seen first, as pandas
            categories = categories.sort_values()
        ordered = bool(getattr(targets[c], "ordered", False))
        resolved[c] = pd.CategoricalDtype(categories, ordered=ordered)
    return resolved


def _schema(result: Any) -> tuple[tuple[Any, Any], ...]:
    if hasattr(result, "columns"):
        return frame_columns.schema(result)
    return frame_columns.schema(result.to_frame(name=0))


def _common_dtype(specs: list[Any]) -> Any:
    """Return the dtype pandas gives a concatenation of columns of these dtypes."""
    import pandas as pd

    columns = [frame_columns.empty_frame((("c", spec),), pd)["c"] for spec in specs]
    return pd.concat(columns).dtype


def _cast(result: Any, casts: Mapping[Any, Any]) -> Any:
    if hasattr(result, "columns"):
        return result.astype(dict(casts))
    (dtype,) = casts.values()
    return result.astype(dtype)


def _by_value(series: DistSeries) -> DistFrame:
    """Send each value to the rank its hash names (one exchange); one partition per rank."""
    from gpupart.containers.shuffle import shuffle_rows
    from gpupart.kernels.hashing import partition_of

    frame = series.map_partitions(lambda s: s.to_frame(name="value"), keeps_rows=True)
    size = series.runtime.size
    destinations = {
        i: partition_of(_key_hashes(p, ["value"]), size) for i, p in frame.local_partitions.items()
    }
    moved = shuffle_rows(frame, destinations)
    return moved.map_partitions(lambda p: p["value"], keeps_rows=True)


def _key_hashes(frame: Any, keys: Sequence[Any]) -> Any:
    """Hash each row's ``keys`` to ``uint64`` (the one place a shuffle's hash is chosen).

    cuDF columns are hashed from host Arrow copies (``kernels.hashing`` takes device strings
    only as raw buffers); every rank hashes alike, which is all a shuffle needs.
    """
    from gpupart.kernels.hashing import hash_columns

    columns = [frame[k] if _is_pandas(frame) else frame[k].to_arrow() for k in keys]
    return hash_columns(columns)


def _host(obj: Any) -> Any:
    """``obj`` on the host (pandas objects and NumPy arrays, as pandas 2's ``unique()``, as is)."""
    return obj if _is_pandas(obj) or isinstance(obj, np.ndarray) else obj.to_pandas()


def _named(series: Any, name: Any) -> Any:
    out = series.copy(deep=False)
    out.name = name
    return out


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, (_Partitioned, Mapping)) and np.ndim(value) == 0


def _is_categorical(dtype: Any) -> bool:
    return str(dtype) == "category"


def _is_numeric(dtype: Any) -> bool:
    kind = getattr(getattr(dtype, "numpy_dtype", dtype), "kind", "")
    return isinstance(kind, str) and kind in "biuf" and not _is_categorical(dtype)


def _time_unit(dtype: Any, *, datetimes_only: bool = False) -> str | None:
    """Return the unit of a datetime64 (tz-aware or not) or timedelta64 dtype, else None."""
    import pandas as pd

    if isinstance(dtype, pd.DatetimeTZDtype):
        return dtype.unit
    if isinstance(dtype, np.dtype) and dtype.kind in ("M" if datetimes_only else "Mm"):
        return np.datetime_data(dtype)[0]
    return None


def _missing(value: Any) -> bool:
    import pandas as pd

    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _plain(value: Any) -> Any:
    """Return a partial result as a value collectives carry (datetimes: UTC datetime64)."""
    import pandas as pd

    if isinstance(value, pd.Timestamp):
        if value.tz is not None:
            value = value.tz_convert("UTC").tz_localize(None)
        return value.to_datetime64()
    if isinstance(value, pd.Timedelta):
        return value.to_timedelta64()
    return value


def _ticks(value: Any, unit: str) -> int:
    """Return a datetime or timedelta as an int count of ``unit`` (UTC when tz-aware)."""
    plain = _plain(value)
    kind = "datetime64" if isinstance(plain, np.datetime64) else "timedelta64"
    return int(plain.astype(f"{kind}[{unit}]").astype(np.int64))


def _column_of(values: list[Any], meta: Any) -> Any:
    """Return a pandas column of ``meta``'s dtype holding plain partial values."""
    import pandas as pd

    dtype = meta.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        naive = pd.Series(np.array(values)).astype(f"datetime64[{dtype.unit}]")
        return naive.dt.tz_localize("UTC").dt.tz_convert(dtype.tz)
    return pd.Series(values, dtype=dtype)


def _restore(value: Any, meta: Any, *, ticks: bool = False) -> Any:
    """Return a combined plain value as pandas' scalar for ``meta``'s dtype."""
    import pandas as pd

    unit = _time_unit(meta.dtype)
    if unit is None:
        return value
    datetime = _time_unit(meta.dtype, datetimes_only=True) is not None
    if ticks:
        value = np.datetime64(value, unit) if datetime else np.timedelta64(value, unit)
    if not datetime:
        return pd.Timedelta(value)
    stamp = pd.Timestamp(value)
    tz = getattr(meta.dtype, "tz", None)
    return stamp.tz_localize("UTC").tz_convert(tz) if tz is not None else stamp


def _float_like(value: float, dtype: Any) -> Any:
    """``value`` as pandas types it for a column of ``dtype`` (float32 stays float32)."""
    return np.float32(value) if dtype == np.float32 else np.float64(value)


def _check_pattern(pat: Any, flags: int) -> None:
    """Raise on every rank for a bad regular expression (pandas compiles it only for values)."""
    if not isinstance(pat, str):
        raise TypeError(f"pat: expected a string, found {type(pat).__name__}")
    try:
        re.compile(pat, flags)
    except re.error as exc:
        raise ValueError(f"pat: expected a regular expression, found {pat!r} ({exc})") from None


def _check_text(value: Any, what: str) -> None:
    ok = isinstance(value, str) or (
        isinstance(value, tuple) and all(isinstance(v, str) for v in value)
    )
    if not ok:
        raise TypeError(f"{what}: expected a string, found {type(value).__name__}")
