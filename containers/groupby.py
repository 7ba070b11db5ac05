"""Grouping a :class:`DistFrame`: groupby-aggregate, transform, drop_duplicates, value_counts.

Rows are grouped by hashing their key columns (:mod:`gpupart.kernels.hashing`): all the state
of a key meets on rank ``hash(keys) % size``. Each operation moves *partial states* or key
columns in one hash shuffle (:func:`~gpupart.containers.shuffle.shuffle_rows`), never whole
rows, and every rank pre-reduces its own rows first, so a key holding most of the rows still
moves at most one state row per rank (skew costs nothing extra).

groupby-agg (one exchange)
    Each rank concatenates its partitions and aggregates them by key into one row of partial
    states per key: sum, count, min, max, size; ``(count, float sum, M2)`` for mean/std/var
    (merged with Chan's formula, ``M2 = sum M2_i + sum n_i (mean_i - mean)^2``); for
    first/last the first/last non-null value with its global position
    ``partition << 40 | row`` (the owner keeps the value of the smallest/largest position).
    ``nunique`` adds the rank's distinct ``(key, value)`` pairs as extra rows tagged with a
    kind column (their state columns repeat a valid state row and are ignored), so that
    states and pairs travel in the same exchange. The owner of each key merges the partials
    and finishes. Only ``sum`` of integers narrower than 64 bits adds an all-reduce of one
    flag: pandas widens such a sum to 64 bits exactly when a group overflows.
transform (two exchanges)
    As groupby-agg with each partial row tagged with its source rank; the owner of a key
    sends the finished value back to every rank that sent a partial for it (one row per key
    per rank), and each rank maps it onto its rows by key locally (group codes of the
    received keys and its own keys in one factorisation). Chosen over shuffling the rows out
    and back: only keys and states move, and rows never leave their rank, so the result
    lines up with the frame row for row. With ``dropna=True`` and keys that can be null, one
    all-reduce decides whether any row had a null key (pandas' result dtype then holds the
    null: ``int64`` becomes ``float64``).
drop_duplicates (two exchanges)
    Each rank drops its own duplicates first (keeping the occurrence ``keep`` names, with a
    flag for values seen more than once when ``keep=False``), then sends the subset columns
    and each row's global position to the owner of its hash (exchange 1: the subset columns
    plus 8 bytes a row, never the other columns); the owner decides and sends the kept
    positions back to the ranks holding those rows (exchange 2: 8 bytes a kept row); each
    rank filters its partitions in place. The result keeps the frame's partitions and the
    global row order, as pandas does.
value_counts (one exchange; a second for ``normalize``)
    A groupby-size over the columns; ``sort=True`` then orders the counts with the
    distributed sample sort (``joins.sort_values``: two all-gathers and one more exchange).
    Equal counts come in hash order, not in pandas' order (compare them as sets).

min/max of an object column (pandas 2's strings) may fail on values only (pandas 2 refuses
strings in a group that also holds nulls): a rank whose pre-reduction or merge fails says
so in the flags all-reduce (taken for such columns), and every rank raises ``TypeError``.
Null keys of object columns come back as ``NaN`` and an object column's first/last of a
group without values as ``None``, as pandas gives them.

Results of groupby-agg have one partition per rank, the keys as columns followed by the
aggregates (pandas' ``as_index=False``), in hash order with ``sort=False`` (the default, as
cuDF's); ``sort=True`` orders them by the keys, null keys last, as pandas does, with the
distributed sample sort (``joins.sort_values``: two all-gathers and one more exchange). A list of
aggregations for a column gives columns named ``"<column>_<aggregation>"`` where pandas gives
two-level column labels (a selected single column gives just the aggregation names, as
pandas). Result dtypes are pandas' (they are taken from pandas' aggregation of the empty
schema). Aggregating a key column is refused; ``sum`` of strings (pandas concatenates them)
and mean/std/var of datetimes are not provided.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from gpupart.containers.dframe import DistFrame, DistSeries, Layout, _check_columns, _is_pandas

from gpupart.trace import ranged

__all__ = [
    "AGGREGATIONS",
    "DistGroupBy",
    "drop_duplicates",
    "frame_value_counts",
    "groupby",
    "series_value_counts",
]

#: The aggregation names understood by :meth:`DistGroupBy.agg` and ``transform``.
AGGREGATIONS = (
    "count",
    "first",
    "last",
    "max",
    "mean",
    "min",
    "nunique",
    "size",
    "std",
    "sum",
    "var",
)
_POS_BITS = 40  # a row's global position: partition << 40 | row
_FAR = np.int64(1) << np.int64(62)  # the position of "no non-null value" for first


def groupby(df: DistFrame, by: Any, *, dropna: bool = True, sort: bool = False) -> DistGroupBy:
    """Group ``df``'s rows by the column(s) ``by`` (see the module docstring).

    ``dropna=True`` drops rows with a null key, as pandas; ``dropna=False`` keeps them as a
    group of their own. ``sort=True`` orders the result by the keys (one more sort).
    """
    keys = _as_columns(df.meta, by, "by")
    _check_flag(dropna, "dropna")
    _check_flag(sort, "sort")
    return DistGroupBy(df, keys, dropna=dropna, sort=sort)


@dataclass(frozen=True)
class _Output:
    """One result column: its label, the input column (None for size), the aggregation."""

    name: Any
    column: Any
    agg: str
    ddof: int = 1


class DistGroupBy:
    """``df.groupby(keys)``: aggregations and transforms of the groups (collective calls)."""

    def __init__(
        self,
        frame: DistFrame,
        keys: list[Any],
        *,
        dropna: bool,
        sort: bool = False,
        selection: Any = None,
    ) -> None:
        self._frame = frame
        self._keys = keys
        self._dropna = dropna
        self._sort = sort
        self._selection = selection  # None: every non-key column; a label; a list of labels

    def __repr__(self) -> str:
        return f"<gpupart.DistGroupBy by {self._keys!r} of {self._frame!r}>"

    def __getitem__(self, key: Any) -> DistGroupBy:
        """Select the column (a label) or columns (a list) to aggregate."""
        columns = key if isinstance(key, list) else [key]
        _check_columns(self._frame.meta, columns, "key")
        _not_keys(columns, self._keys, "key")
        return DistGroupBy(
            self._frame, self._keys, dropna=self._dropna, sort=self._sort, selection=key
        )

    @property
    def _columns(self) -> list[Any]:
        if self._selection is None:
            return [c for c in self._frame.columns if c not in self._keys]
        return self._selection if isinstance(self._selection, list) else [self._selection]

    @property
    def _single(self) -> bool:
        return self._selection is not None and not isinstance(self._selection, list)

    # -- aggregation -----------------------------------------------------------------------

    def agg(self, arg: Any = None, /, **named: Any) -> DistFrame:
        """Aggregate each group (collective; one exchange).

        ``arg`` is an aggregation name (for every selected column), a list of names, or a
        dict ``{column: name or list of names}``; or pass named aggregations
        ``out=(column, name)``. Names: see :data:`AGGREGATIONS`.
        """
        return self._run(self._outputs(arg, named))

    aggregate = agg

    def sum(self) -> DistFrame:
        """Sum of each column per group."""
        return self.agg("sum")

    def mean(self) -> DistFrame:
        """Mean of each column per group (``float64``, or ``Float64`` for nullable columns)."""
        return self.agg("mean")

    def count(self) -> DistFrame:
        """Non-null values of each column per group."""
        return self.agg("count")

    def size(self) -> DistFrame:
        """Rows per group, in a column ``"size"``."""
        return self.agg("size")

    def min(self) -> DistFrame:
        """Smallest non-null value of each column per group."""
        return self.agg("min")

    def max(self) -> DistFrame:
        """Largest non-null value of each column per group."""
        return self.agg("max")

    def std(self, ddof: int = 1) -> DistFrame:
        """Return the standard deviation of each column per group (``ddof`` as pandas)."""
        return self._run(self._outputs("std", {}, ddof=_check_ddof(ddof)))

    def var(self, ddof: int = 1) -> DistFrame:
        """Variance of each column per group (``ddof`` as pandas)."""
        return self._run(self._outputs("var", {}, ddof=_check_ddof(ddof)))

    def nunique(self) -> DistFrame:
        """Distinct non-null values of each column per group."""
        return self.agg("nunique")

    def first(self) -> DistFrame:
        """First non-null value of each column per group, in the frame's row order."""
        return self.agg("first")

    def last(self) -> DistFrame:
        """Last non-null value of each column per group, in the frame's row order."""
        return self.agg("last")

    def _run(self, outputs: list[_Output]) -> DistFrame:
        result = _Plan(self._frame, self._keys, self._dropna, outputs).aggregate()
        return _sorted(result, self._keys, ascending=True) if self._sort else result

    # -- transform -------------------------------------------------------------------------

    def transform(self, func: str, /) -> DistSeries | DistFrame:
        """Each row's group aggregate, lined up with the frame (collective; two exchanges).

        A selected single column gives a :class:`DistSeries`, otherwise a frame of the
        selected columns. ``func`` is an aggregation name (see :data:`AGGREGATIONS`).
        """
        name = _check_agg(func, "func")
        if name == "size":  # one value a row, not one a column: a series, as pandas
            plan = _Plan(self._frame, self._keys, self._dropna, [_Output("size", None, "size")])
            label = self._selection if self._single else None
            return plan.transform()["size"]._rowwise(lambda s: s.rename(label))
        outputs = [_Output(c, c, name) for c in self._columns]
        if not outputs:
            raise ValueError(
                f"transform: expected a column to transform, found only the keys {self._keys!r}"
            )
        plan = _Plan(self._frame, self._keys, self._dropna, outputs)
        result = plan.transform()
        return result[self._selection] if self._single else result

    # -- specification ---------------------------------------------------------------------

    def _outputs(self, arg: Any, named: Mapping[str, Any], ddof: int = 1) -> list[_Output]:
        """Turn ``agg``'s arguments into the result columns, checking every name."""
        meta = self._frame.meta
        if arg is None and not named:
            raise TypeError(
                "agg: expected an aggregation (a name, a list of names, a dict of column to"
                " names, or out=(column, name) keywords), found none"
            )
        if arg is not None and named:
            raise TypeError("agg: expected either a positional aggregation or keywords, found both")
        outputs: list[_Output] = []
        if named:
            for out, spec in named.items():
                if not (isinstance(spec, tuple) and len(spec) == 2):
                    raise TypeError(
                        f"agg: expected {out}=(column, aggregation name), found {spec!r}"
                    )
                column, agg = spec
                _check_columns(meta, [column], f"agg {out}")
                _not_keys([column], self._keys, f"agg {out}")
                outputs.append(_Output(out, column, _check_agg(agg, f"agg {out}")))
        elif isinstance(arg, str):
            name = _check_agg(arg, "agg")
            if name == "size":
                outputs.append(_Output("size", None, "size"))
            else:
                outputs.extend(_Output(c, c, name, ddof) for c in self._columns)
        elif isinstance(arg, list):
            names = [_check_agg(a, "agg") for a in arg]
            for c in self._columns:
                for a in names:
                    outputs.append(_Output(a if self._single else f"{c}_{a}", c, a))
        elif isinstance(arg, Mapping):
            _check_columns(meta, list(arg), "agg")
            _not_keys(list(arg), self._keys, "agg")
            for c, spec in arg.items():
                if isinstance(spec, list):
                    outputs.extend(
                        _Output(f"{c}_{a}", c, _check_agg(a, f"agg[{c!r}]")) for a in spec
                    )
                else:
                    outputs.append(_Output(c, c, _check_agg(spec, f"agg[{c!r}]")))
        else:
            raise TypeError(
                "agg: expected an aggregation name, a list of names or a dict of column to"
                f" names, found {type(arg).__name__}"
            )
        if not outputs:
            raise ValueError(
                f"agg: expected a column to aggregate, found only the keys {self._keys!r}"
            )
        labels = [o.name for o in outputs]
        clashes = sorted({repr(x) for x in labels if labels.count(x) > 1 or x in self._keys})
        if clashes:
            raise ValueError(
                f"agg: expected distinct result column names other than the keys, found"
                f" {', '.join(clashes)} more than once"
            )
        return outputs


# -- the plan: partial states, the exchange, the merge ----------------------------------------


class _Plan:
    """The partial states ``outputs`` need, moved in one shuffle and merged on key owners.

    Partial frame (what is shuffled): the key columns, one column per nunique input
    (``u<j>``), the state columns (``s<i>``), a kind column (0: a state row, ``j + 1``: a
    distinct value of nunique input ``j``) when there are nunique outputs, and the source
    rank for transforms. Internal labels carry a prefix no column of the frame starts with.
    """

    def __init__(
        self, frame: DistFrame, keys: list[Any], dropna: bool, outputs: list[_Output]
    ) -> None:
        self.frame, self.keys, self.dropna, self.outputs = frame, keys, dropna, outputs
        self.rt = frame.runtime
        self.module = self.rt.backend.dataframe_module()
        self.xp = self.rt.backend.xp
        self.meta = frame.meta
        self.prefix = _free_prefix(frame.meta.columns)
        self.targets = _target_dtypes(self.meta, keys, dropna, outputs)
        self.unique_inputs = list(dict.fromkeys(o.column for o in outputs if o.agg == "nunique"))
        self.states: dict[tuple[str, Any], str] = {}
        for o in outputs:
            for kind in _STATES[o.agg]:
                key = (kind, None if kind == "size" else o.column)
                self.states.setdefault(key, self._label(f"s{len(self.states)}"))
        # min/max of object columns: pandas may refuse them for some values (agreed on)
        self.fallible = {
            label: key
            for key, label in self.states.items()
            if key[0] in ("min", "max") and _objects(self.meta[key[1]])
        }
        self.failed: set[str] = set()

    def _label(self, name: str) -> str:
        return f"{self.prefix}{name}"

    # -- on the rank that holds the rows -----------------------------------------------------

    def partials(self, local: Any, source: int | None) -> Any:
        """Pre-aggregate this rank's rows (one frame, in global order) into the partial frame."""
        xp, keys, n = self.xp, self.keys, len(local)
        row = self._label("row")
        work = {k: local[k] for k in keys}
        work[row] = xp.arange(n, dtype=xp.int64)
        named: dict[str, tuple[Any, str]] = {self._label("rep"): (row, "min")}
        helpers: dict[Any, str] = {}
        for (kind, column), label in self.states.items():
            if kind == "size":
                named[label] = (row, "size")
            elif kind in ("count", "sum", "min", "max"):
                work.setdefault(column, local[column])
                named[label] = (column, kind)
            elif kind in ("fsum", "fvar"):
                f = helpers.setdefault(column, self._label(f"f{len(helpers)}"))
                work[f] = local[column].astype("float64")
                named[label] = (f, "sum" if kind == "fsum" else "var")
            elif kind in ("first", "last"):
                valid = _array(local[column].notna(), xp)
                r = self._label(f"r{label}")
                work[r] = xp.where(valid, work[row], n if kind == "first" else -1)
                named[label] = (r, "min" if kind == "first" else "max")
        frame = self.module.DataFrame(work)
        grouped = frame.groupby(keys, sort=False, dropna=self.dropna, observed=True)
        states = _reduce(grouped, named, self.module, self.fallible, self.failed)
        out_states = self._finish_partials(local, states, n)
        rows = [_array(states[self._label("rep")], xp)]
        kinds = [xp.zeros(len(states), dtype=xp.int8)]
        for j, column in enumerate(self.unique_inputs):
            valid = local[column].notna()
            if self.dropna:
                for k in keys:
                    valid = valid & local[k].notna()
            pairs = local[[*keys, column]][valid].drop_duplicates()
            ids = _array(pairs.index.to_series(), xp).astype(xp.int64)
            rows.append(ids)
            kinds.append(xp.full(len(ids), j + 1, dtype=xp.int8))
        take = xp.concatenate(rows)
        state_rows = xp.zeros(len(take), dtype=xp.int64)
        state_rows[: len(states)] = xp.arange(len(states), dtype=xp.int64)
        moved: dict[Any, Any] = {k: _take(local[k], take) for k in keys}
        for j, column in enumerate(self.unique_inputs):
            moved[self._label(f"u{j}")] = _take(local[column], take)
        for label, series in out_states.items():
            moved[label] = _take(series, state_rows)
        if self.unique_inputs:
            moved[self._label("kind")] = xp.concatenate(kinds)
        if source is not None:
            moved[self._label("src")] = xp.full(len(take), source, dtype=xp.int64)
        return self.module.DataFrame(moved)

    def _finish_partials(self, local: Any, states: Any, n: int) -> dict[str, Any]:
        """Return the moved state columns of the local aggregation (same dtypes everywhere)."""
        out: dict[str, Any] = {}
        for (kind, column), label in self.states.items():
            got = states[label]
            if kind == "sum":
                got = got.astype(_sum_state_dtype(self.meta[column].dtype))
            elif kind in ("size", "count"):
                got = got.astype("Int64" if str(got.dtype) == "Int64" else "int64")
            elif kind == "fvar":  # M2 = var * (n - 1); 0 for groups of fewer than 2 values
                count = states[self.states[("count", column)]].astype("float64")
                got = (got.astype("float64") * (count - 1.0)).fillna(0.0)
            elif kind in ("first", "last"):
                idx = _array(got, self.xp).astype(self.xp.int64)
                valid = (idx < n) & (idx >= 0)
                safe = self.xp.where(valid, idx, 0)
                value = _take(local[column], safe)
                if not bool(valid.all()):  # pandas: None for objects, NaN, NaT or NA else
                    keep = self.module.Series(valid)
                    value = value.where(keep, None) if _objects(value) else value.where(keep)
                out[f"{label}v"] = value.astype(self.meta[column].dtype)
                sentinel = _FAR if kind == "first" else np.int64(-1)
                pos = self.xp.where(valid, self._positions()[safe] if n else safe, sentinel)
                got = self.module.Series(pos)
            out[label] = got
        return out

    def _positions(self) -> Any:
        """Global position ``partition << 40 | row`` of each local row, in local order."""
        xp = self.xp
        parts = sorted(self.frame.local_partitions.items())
        if not parts:
            return xp.zeros(0, dtype=xp.int64)
        return xp.concatenate(
            [xp.arange(len(p), dtype=xp.int64) + (i << _POS_BITS) for i, p in parts]
        )

    # -- on the rank that owns the keys ------------------------------------------------------

    def combine(self, received: Any) -> tuple[Any, dict[Any, Any], Any]:
        """Merge the partial frames received; return keys, output columns and the state rows."""
        xp, keys = self.xp, self.keys
        if self.unique_inputs:
            kind = _array(received[self._label("kind")], xp)
            rows = received[self.module.Series(kind == 0)].reset_index(drop=True)
        else:
            rows = received
        row = self._label("row")
        rows = rows.assign(**{row: xp.arange(len(rows), dtype=xp.int64)})
        named: dict[str, tuple[Any, str]] = {self._label("rep"): (row, "min")}
        terms: dict[Any, str] = {}
        for (kind, column), label in self.states.items():
            if kind in ("first", "last"):
                named[label] = (label, "idxmin" if kind == "first" else "idxmax")
            else:
                named[label] = (label, _MERGE[kind])
            if kind == "fvar":
                terms[column] = self._label(f"t{label}")
        if terms:
            rows = self._chan_terms(rows, terms)
            named.update({t: (t, "sum") for t in terms.values()})
        grouped = rows.groupby(keys, sort=False, dropna=False, observed=True)
        merged = _reduce(grouped, named, self.module, self.fallible, self.failed)
        rep = _array(merged[self._label("rep")], xp).astype(xp.int64)
        key_frame = _nan_keys(rows[keys].take(rep).reset_index(drop=True))
        columns = {}
        for o in self.outputs:
            columns[o.name] = self._finish(o, merged, rows, key_frame, received, terms)
        return key_frame, columns, rows

    def _chan_terms(self, rows: Any, terms: Mapping[Any, str]) -> Any:
        """``n_i (mean_i - mean)^2`` of each partial row, for Chan's merge of M2."""
        grouped = rows.groupby(self.keys, sort=False, dropna=False, observed=True)
        new = {}
        for column, label in terms.items():
            n_i = rows[self.states[("count", column)]].astype("float64")
            s_i = rows[self.states[("fsum", column)]].astype("float64")
            n = grouped[self.states[("count", column)]].transform("sum").astype("float64")
            s = grouped[self.states[("fsum", column)]].transform("sum").astype("float64")
            new[label] = (n_i * (s_i / n_i - s / n) ** 2).fillna(0.0)
        return rows.assign(**new)

    def _finish(
        self,
        o: _Output,
        merged: Any,
        rows: Any,
        key_frame: Any,
        received: Any,
        terms: Mapping[Any, str],
    ) -> Any:
        """One output column from the merged states (before the final dtype)."""
        state = self.states
        if o.agg in ("sum", "count", "min", "max"):
            return merged[state[(o.agg, o.column)]]
        if o.agg == "size":
            return merged[state[("size", None)]]
        if o.agg in ("first", "last"):
            label = state[(o.agg, o.column)]
            idx = _array(merged[label], self.xp).astype(self.xp.int64)
            return _take(rows[f"{label}v"], idx)
        if o.agg == "nunique":
            return self._distinct_counts(o.column, key_frame, received)
        count = merged[state[("count", o.column)]].astype("float64")
        if o.agg == "mean":
            return merged[state[("fsum", o.column)]].astype("float64") / count
        if o.agg in ("var", "std"):
            m2 = merged[state[("fvar", o.column)]] + merged[terms[o.column]]
            var = (m2 / (count - o.ddof)).where(count - o.ddof > 0)
            return var if o.agg == "var" else var**0.5
        raise AssertionError(o.agg)  # pragma: no cover (every name is handled above)

    def _distinct_counts(self, column: Any, key_frame: Any, received: Any) -> Any:
        """nunique: the distinct (key, value) rows received, counted per key of ``key_frame``."""
        j = self.unique_inputs.index(column)
        kind = _array(received[self._label("kind")], self.xp)
        value = self._label(f"u{j}")
        pairs = received[self.module.Series(kind == j + 1)][[*self.keys, value]].drop_duplicates()
        codes = _codes_against(key_frame, pairs, self.keys, self.module, self.xp)
        counts = self.xp.bincount(codes[codes >= 0], minlength=len(key_frame))
        return self.module.Series(counts[: len(key_frame)].astype(self.xp.int64))

    def _wide_flags(self, columns: Mapping[Any, Any]) -> list[bool]:
        """Which narrow integer sums overflow their dtype here (pandas then widens them)."""
        flags = []
        for o, target in zip(self.outputs, self.targets, strict=True):
            wide = False
            if o.agg == "sum" and _narrow_int(target) and len(columns[o.name]):
                info = np.iinfo(np.dtype(getattr(target, "numpy_dtype", target)))
                col = columns[o.name]
                wide = bool(col.min() < info.min or col.max() > info.max)
            flags.append(wide)
        return flags

    def _dtypes(self, flags: Sequence[bool]) -> list[Any]:
        return [_widened(t) if wide else t for t, wide in zip(self.targets, flags, strict=True)]

    def _needs_flags(self) -> bool:
        return bool(self.fallible) or any(
            o.agg == "sum" and _narrow_int(t)
            for o, t in zip(self.outputs, self.targets, strict=True)
        )

    def _failed_flags(self) -> list[bool]:
        """Which fallible states (min/max of objects) pandas refused here."""
        return [label in self.failed for label in self.fallible]

    def _raise_refused(self, flags: Sequence[bool]) -> None:
        """Raise on every rank (``flags`` are all-reduced) when pandas refused a min/max."""
        for (kind, column), failed in zip(self.fallible.values(), flags, strict=True):
            if failed:
                raise TypeError(
                    f"agg: {kind} of column {column!r} (dtype {self.meta[column].dtype}) failed"
                    f" on some rank: pandas refuses the {kind} of these values (pandas 2: strings"
                    " in a group that also holds nulls)"
                )

    def _local(self) -> Any:
        parts = [p for _, p in sorted(self.frame.local_partitions.items())]
        if not parts:
            return self.meta.iloc[:0]
        return parts[0] if len(parts) == 1 else self.module.concat(parts, ignore_index=True)

    def _shuffle(self, source: int | None) -> Any:
        """Partial frames to the owners of their keys: one exchange; the frame received."""
        from gpupart.containers.shuffle import shuffle_rows

        rt = self.rt
        meta = self.partials(self.meta.iloc[:0], source)
        mine = self.partials(self._local(), source)
        mine = _cast_like(mine, meta)
        moving = DistFrame(rt, meta, Layout(range(rt.size)), {rt.rank: mine})
        dest = _destinations(mine, self.keys, rt.size)
        return shuffle_rows(moving, {rt.rank: dest}).local_partitions[rt.rank]

    def _result_meta(self, dtypes: Sequence[Any]) -> Any:
        meta = self.meta[self.keys].iloc[:0].reset_index(drop=True)
        for o, dtype in zip(self.outputs, dtypes, strict=True):
            meta[o.name] = self.module.Series([], dtype=dtype)
        return meta

    @ranged("compute.groupby")
    def aggregate(self) -> DistFrame:
        """Run groupby-agg (see the module docstring)."""
        rt = self.rt
        key_frame, columns, _ = self.combine(self._shuffle(None))
        flags = [False] * len(self.outputs)
        if self._needs_flags():
            mine = [*self._wide_flags(columns), *self._failed_flags()]
            flags = [bool(f) for f in rt.allreduce(np.array(mine, np.int64), op="max")]
            self._raise_refused(flags[len(self.outputs) :])
        dtypes = self._dtypes(flags[: len(self.outputs)])
        result = key_frame
        for o, dtype in zip(self.outputs, dtypes, strict=True):
            result[o.name] = columns[o.name].reset_index(drop=True).astype(dtype)
        meta = self._result_meta(dtypes)
        return DistFrame(rt, meta, Layout(range(rt.size)), {rt.rank: result})

    @ranged("compute.groupby")
    def transform(self) -> DistFrame:
        """Run transform: aggregate, send each key's values back to its rows' ranks, map."""
        from gpupart.containers.shuffle import shuffle_rows

        rt, xp, keys = self.rt, self.xp, self.keys
        local = self._local()
        received = self._shuffle(rt.rank)
        key_frame, columns, rows = self.combine(received)
        nullable_keys = self.dropna and any(_can_be_null(self.meta[k].dtype) for k in keys)
        flags = [False] * (len(self.outputs) + 1)
        if self._needs_flags() or nullable_keys:
            null_keys = nullable_keys and bool(local[keys].isna().any(axis=1).any())
            mine = [*self._wide_flags(columns), null_keys, *self._failed_flags()]
            flags = [bool(f) for f in rt.allreduce(np.array(mine, np.int64), op="max")]
            self._raise_refused(flags[len(self.outputs) + 1 :])
            flags = flags[: len(self.outputs) + 1]
        dtypes = self._dtypes(flags[:-1])
        if flags[-1]:  # decided by the all-reduce: every rank raises alike
            _no_object_results(self.outputs, dtypes, self.module)
        # back to every rank that sent a partial for the key: one row per (key, rank)
        codes = _codes_against(key_frame, rows, keys, self.module, xp)
        labels = [self._label(f"o{i}") for i in range(len(self.outputs))]
        back = {k: rows[k] for k in keys}
        for o, label, dtype in zip(self.outputs, labels, dtypes, strict=True):
            back[label] = _take(columns[o.name].reset_index(drop=True), codes).astype(dtype)
        back_meta = self.meta[keys].iloc[:0].reset_index(drop=True)
        for label, dtype in zip(labels, dtypes, strict=True):
            back_meta[label] = self.module.Series([], dtype=dtype)
        frame = DistFrame(
            rt, back_meta, Layout(range(rt.size)), {rt.rank: self.module.DataFrame(back)}
        )
        source = _array(rows[self._label("src")], xp).astype(xp.int64)
        got = shuffle_rows(frame, {rt.rank: source}).local_partitions[rt.rank]
        # onto this rank's rows, by key
        codes = _codes_against(got, local, keys, self.module, xp)
        missing = codes < 0
        safe = xp.where(missing, 0, codes)
        out = {}
        for o, label in zip(self.outputs, labels, strict=True):
            col = (
                _take(got[label], safe)
                if len(got)
                else _empty_like(back_meta[label], len(local), self.module)
            )
            if flags[-1]:
                col = col.where(self.module.Series(~missing)) if len(col) else col
                col = col.astype(_with_null(back_meta[label]))
            out[o.name] = col
        whole = self.module.DataFrame(out)
        meta_columns = {}
        for o, label in zip(self.outputs, labels, strict=True):
            column = back_meta[label]
            meta_columns[o.name] = column.astype(_with_null(column)) if flags[-1] else column
        meta = self.module.DataFrame(meta_columns)
        whole = _cast_like(whole, meta)
        parts, at = {}, 0
        for i, p in sorted(self.frame.local_partitions.items()):
            parts[i] = whole.iloc[at : at + len(p)].reset_index(drop=True)
            at += len(p)
        return DistFrame(rt, meta, self.frame.layout, parts)


#: The partial states each aggregation needs (fsum: the float sum for mean/std/var; fvar: M2).
_STATES: dict[str, tuple[str, ...]] = {
    "sum": ("sum",),
    "count": ("count",),
    "size": ("size",),
    "min": ("min",),
    "max": ("max",),
    "mean": ("count", "fsum"),
    "var": ("count", "fsum", "fvar"),
    "std": ("count", "fsum", "fvar"),
    "first": ("first",),
    "last": ("last",),
    "nunique": (),
}
#: How the owner merges each state's partials.
_MERGE = {
    "sum": "sum",
    "count": "sum",
    "size": "sum",
    "fsum": "sum",
    "fvar": "sum",
    "min": "min",
    "max": "max",
}


# -- drop_duplicates and value_counts ----------------------------------------------------------


def drop_duplicates(df: DistFrame, subset: Any = None, keep: Any = "first") -> DistFrame:
    """Return ``df`` without duplicate rows, in its row order (collective; two exchanges).

    ``subset``: the column(s) compared (default: all); ``keep``: ``'first'``, ``'last'`` or
    ``False`` (drop every duplicated row), as pandas. See the module docstring for the cost.
    """
    from gpupart.containers.shuffle import shuffle_rows

    columns = list(df.columns) if subset is None else _as_columns(df.meta, subset, "subset")
    if keep not in ("first", "last") and keep is not False:
        raise ValueError(f"keep: expected 'first', 'last' or False, found {keep!r}")
    rt, module = df.runtime, df.runtime.backend.dataframe_module()
    xp = rt.backend.xp
    prefix = _free_prefix(df.meta.columns)
    pos, multi = f"{prefix}pos", f"{prefix}multi"

    def candidates(local: Any, positions: Any) -> Any:
        """Return the local rows that may be kept, with their position (and repeat flag)."""
        work = local[columns].reset_index(drop=True)
        work[pos] = module.Series(positions)
        if keep is False:
            work[multi] = work.duplicated(columns, keep=False)
            return work[~work.duplicated(columns, keep="first")].reset_index(drop=True)
        return work[~work.duplicated(columns, keep=keep)].reset_index(drop=True)

    plan_parts = sorted(df.local_partitions.items())
    local = _concat([p for _, p in plan_parts], df.meta, module)
    positions = _global_positions(plan_parts, xp)
    meta = candidates(df.meta.iloc[:0], xp.zeros(0, dtype=xp.int64))
    mine = _cast_like(candidates(local, positions), meta)
    moving = DistFrame(rt, meta, Layout(range(rt.size)), {rt.rank: mine})
    got = shuffle_rows(moving, {rt.rank: _destinations(mine, columns, rt.size)})
    got = got.local_partitions[rt.rank].sort_values(pos).reset_index(drop=True)
    if keep is False:
        kept = got[~got.duplicated(columns, keep=False) & ~got[multi]]
    else:
        kept = got[~got.duplicated(columns, keep=keep)]
    kept = kept[[pos]].reset_index(drop=True)
    owners = xp.asarray(np.asarray(df.layout.owners, dtype=np.int64))
    where = _array(kept[pos], xp) >> _POS_BITS
    back = DistFrame(rt, meta[[pos]], Layout(range(rt.size)), {rt.rank: kept})
    returned = shuffle_rows(
        back, {rt.rank: owners[where] if len(kept) else xp.zeros(0, dtype=xp.int64)}
    )
    keep_pos = _array(returned.local_partitions[rt.rank][pos], xp)
    parts = {}
    for i, p in plan_parts:
        mask = xp.zeros(len(p), dtype=bool)
        rows_here = keep_pos[(keep_pos >> _POS_BITS) == i] & ((1 << _POS_BITS) - 1)
        mask[rows_here] = True
        parts[i] = p[module.Series(mask)].reset_index(drop=True) if len(p) else p
    return DistFrame(rt, df.meta, Layout(df.layout.owners), parts)


def frame_value_counts(
    df: DistFrame,
    subset: Any = None,
    normalize: bool = False,
    sort: bool = True,
    ascending: bool = False,
    dropna: bool = True,
) -> DistFrame:
    """Rows per distinct combination of ``subset`` (default: all columns), as a frame.

    The result holds the columns then ``"count"`` (``"proportion"`` with ``normalize``), like
    pandas' ``df.value_counts().reset_index()``; in hash order, or ordered
    by count with ``sort`` (largest first unless ``ascending``; equal counts in hash order).
    Collective; one exchange (and one all-reduce with ``normalize``), plus the sort's.
    """
    columns = list(df.columns) if subset is None else _as_columns(df.meta, subset, "subset")
    for flag, name in (
        (normalize, "normalize"),
        (sort, "sort"),
        (ascending, "ascending"),
        (dropna, "dropna"),
    ):
        _check_flag(flag, name)
    plan = _Plan(df, columns, dropna, [_Output("count", None, "size")])
    counts = plan.aggregate()
    if sort:
        counts = _sorted(counts, ["count"], ascending=ascending)
    if not normalize:
        return counts
    rt = df.runtime
    (part,) = counts.local_partitions.values()
    total = int(rt.allreduce(np.array([int(part["count"].sum())], np.int64), op="sum")[0])

    def share(frame: Any) -> Any:
        out = frame[columns].copy()
        out["proportion"] = frame["count"].astype("float64") / (total or 1)
        return out

    return counts.map_partitions(share, keeps_rows=True)


def series_value_counts(
    s: DistSeries,
    normalize: bool = False,
    sort: bool = True,
    ascending: bool = False,
    bins: Any = None,
    dropna: bool = True,
) -> DistFrame:
    """Occurrences of each distinct value, as a frame of the value column and ``"count"``.

    Like pandas' ``s.value_counts().reset_index()`` (the value column is named like the
    series, ``"index"`` when it has no name); see :func:`frame_value_counts`. ``bins`` is not
    provided.
    """
    if bins is not None:
        raise NotImplementedError("bins: value_counts with bins is not provided; pass bins=None")
    label = "index" if s.name is None else s.name
    frame = s._rowwise(lambda p: p.rename(label).to_frame())
    counts = frame_value_counts(frame, None, normalize, sort, ascending, dropna)
    if not hasattr(frame.meta[label].dtype, "numpy_dtype"):
        return counts
    # pandas counts the values of a nullable (masked) series in a nullable column
    column = "proportion" if normalize else "count"
    nullable = {column: "Float64" if normalize else "Int64"}
    return counts.map_partitions(lambda p: p.astype(nullable), keeps_rows=True)


# -- helpers ------------------------------------------------------------------------------------


def _key_hashes(frame: Any, keys: Sequence[Any]) -> Any:
    """``uint64`` hash of each row's keys (the one place that hashes; see kernels.hashing).

    cuDF key columns go through the host as Arrow arrays until the hashing kernels take
    cuDF columns directly.
    """
    from gpupart.kernels import hashing

    if _is_pandas(frame):
        return hashing.hash_columns([frame[k] for k in keys])
    return hashing.hash_columns([frame[k].to_arrow() for k in keys])


def _destinations(frame: Any, keys: Sequence[Any], size: int) -> np.ndarray:
    """Return the rank each row of ``frame`` goes to: ``hash(keys) % size``."""
    from gpupart.kernels import hashing

    if len(frame) == 0:
        return np.zeros(0, dtype=np.int64)
    return hashing.partition_of(_key_hashes(frame, keys), size)


def _reduce(
    grouped: Any,
    named: Mapping[str, tuple[Any, str]],
    module: Any,
    fallible: Mapping[str, Any] | None = None,
    failed: set[str] | None = None,
) -> Any:
    """``grouped.agg(**named)`` without the keys, one column reduction at a time.

    Faster than pandas' named aggregation on small frames (the grouping is computed once
    and shared); every result is in the grouping's group order. A ``fallible`` label whose
    reduction pandas refuses (``TypeError``) is added to ``failed`` and holds nulls.
    """
    out = {}
    for label, (column, func) in named.items():
        try:
            got = grouped.size() if func == "size" else getattr(grouped[column], func)()
        except TypeError:
            if failed is None or label not in (fallible or {}):
                raise
            failed.add(label)
            got = grouped.size().astype(object)
            got[:] = None
        out[label] = got.reset_index(drop=True)
    return module.DataFrame(out)


def _codes_against(ref: Any, other: Any, keys: list[Any], module: Any, xp: Any) -> Any:
    """For each row of ``other``, the row of ``ref`` (distinct keys) with its keys, or -1."""
    if len(other) == 0:
        return xp.zeros(0, dtype=xp.int64)
    if len(ref) == 0:
        return xp.full(len(other), -1, dtype=xp.int64)
    both = module.concat([ref[keys], other[keys]], ignore_index=True)
    codes = both.groupby(keys, sort=False, dropna=False, observed=True).ngroup()
    codes = _array(codes, xp).astype(xp.int64)
    lookup = xp.full(len(both), -1, dtype=xp.int64)
    lookup[codes[: len(ref)]] = xp.arange(len(ref), dtype=xp.int64)
    return lookup[codes[len(ref) :]]


def _array(series: Any, xp: Any) -> Any:
    """Return a column of non-null numbers or bools as an array on its device."""
    if _is_pandas(series):
        return series.to_numpy()
    return xp.asarray(series.values)


def _take(series: Any, rows: Any) -> Any:
    """``series`` at positions ``rows``, with a fresh RangeIndex."""
    return series.take(rows).reset_index(drop=True)


def _concat(parts: list[Any], meta: Any, module: Any) -> Any:
    if not parts:
        return meta.iloc[:0]
    return (
        parts[0].reset_index(drop=True)
        if len(parts) == 1
        else module.concat(parts, ignore_index=True)
    )


def _global_positions(parts: list[tuple[int, Any]], xp: Any) -> Any:
    if not parts:
        return xp.zeros(0, dtype=xp.int64)
    return xp.concatenate([xp.arange(len(p), dtype=xp.int64) + (i << _POS_BITS) for i, p in parts])


def _cast_like(frame: Any, meta: Any) -> Any:
    """``frame`` with ``meta``'s dtypes (a local result whose dtypes depend on its data)."""
    wrong = {c: meta[c].dtype for c in meta.columns if frame[c].dtype != meta[c].dtype}
    return frame.astype(wrong) if wrong else frame


def _empty_like(series: Any, n: int, module: Any) -> Any:
    return series.reindex(range(n)).reset_index(drop=True)


def _objects(series: Any) -> bool:
    """Whether ``series`` is a pandas object column (pandas 2's strings; cuDF's are not)."""
    return _is_pandas(series) and series.dtype == object


def _nan_keys(keys: Any) -> Any:
    """Group keys with the nulls of object columns as ``NaN``, as pandas' groupby gives them."""
    for k in keys.columns:
        column = keys[k]
        if _objects(column) and bool(column.isna().any()):
            keys[k] = column.where(column.notna(), np.nan)
    return keys


def _with_null(series: Any) -> Any:
    """Return the dtype ``series`` takes with a null (pandas: int to float, bool to object)."""
    return series.iloc[:0].reindex(range(1)).dtype


def _no_object_results(outputs: Sequence[_Output], dtypes: Sequence[Any], module: Any) -> None:
    """Refuse transforms whose rows without a group would turn a column into objects."""
    for o, dtype in zip(outputs, dtypes, strict=True):
        becomes = _with_null(module.Series([], dtype=dtype))
        if becomes == np.dtype(object) and dtype != becomes:  # (object strings stay objects)
            raise NotImplementedError(
                f"transform: {o.agg} of column {o.name!r} (dtype {dtype}) gives rows with a null"
                " key object values (pandas fills them with NaN), which a frame cannot move;"
                " cast the column to a nullable dtype first (e.g. 'boolean')"
            )


def _free_prefix(columns: Any) -> str:
    """Return a prefix for internal labels that no string label of ``columns`` starts with."""
    prefix = "__gpupart_"
    while any(isinstance(c, str) and c.startswith(prefix) for c in columns):
        prefix += "_"
    return prefix


def _as_columns(meta: Any, by: Any, what: str) -> list[Any]:
    columns = list(by) if isinstance(by, list) else [by]
    if not columns:
        raise ValueError(f"{what}: expected at least one column, found none")
    _check_columns(meta, columns, what)
    if len(set(map(repr, columns))) != len(columns):
        raise ValueError(f"{what}: expected distinct columns, found {columns!r}")
    return columns


def _not_keys(columns: Sequence[Any], keys: Sequence[Any], what: str) -> None:
    both = [c for c in columns if c in keys]
    if both:
        raise ValueError(
            f"{what}: expected columns other than the group keys {list(keys)!r}, found {both!r}"
            " (a key column cannot be aggregated)"
        )


def _check_agg(name: Any, what: str) -> str:
    if callable(name):
        raise TypeError(
            f"{what}: expected an aggregation name ({', '.join(AGGREGATIONS)}), found a function"
            " (functions are not provided)"
        )
    if not isinstance(name, str) or name not in AGGREGATIONS:
        raise ValueError(
            f"{what}: expected an aggregation name ({', '.join(AGGREGATIONS)}), found {name!r}"
        )
    return name


def _check_flag(value: Any, what: str) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{what}: expected True or False, found {value!r}")


def _check_ddof(ddof: Any) -> int:
    if isinstance(ddof, bool) or not isinstance(ddof, int) or ddof < 0:
        raise ValueError(f"ddof: expected an int >= 0, found {ddof!r}")
    return ddof


def _sorted(frame: DistFrame, by: list[Any], *, ascending: bool) -> DistFrame:
    """Return ``frame`` ordered by ``by``, nulls last (the distributed sample sort of joins)."""
    from gpupart.containers.joins import sort_values

    return sort_values(frame, by, ascending=ascending, na_position="last")


def _numeric(dtype: Any) -> bool:
    """Whether ``dtype`` holds numbers or bools (NumPy or nullable), for sum/mean/std/var."""
    base = getattr(dtype, "numpy_dtype", dtype)
    try:
        return np.dtype(base).kind in "biuf" and not hasattr(dtype, "categories")
    except TypeError:
        return False


def _target_dtypes(meta: Any, keys: list[Any], dropna: bool, outputs: list[_Output]) -> list[Any]:
    """Return the dtypes pandas gives ``outputs`` (its aggregation of the empty schema).

    Raises TypeError where pandas does; NotImplementedError for what pandas allows and this
    module does not provide (sum of strings, mean/std/var of dates and times).
    """
    for o in outputs:
        if o.column is None:
            continue
        dtype = meta[o.column].dtype
        timedelta_sum = o.agg == "sum" and str(dtype).startswith("timedelta")
        if o.agg in ("sum", "mean", "std", "var") and not (_numeric(dtype) or timedelta_sum):
            _pandas_dtypes(meta, keys, dropna, [o])  # pandas' TypeError first, where it has one
            if _objects(meta[o.column]):  # pandas 2's strings: refused for values only
                _refused_for_strings(o)
            raise NotImplementedError(
                f"agg: {o.agg} of column {o.column!r} is provided for numeric and bool columns"
                f" (and sum of timedeltas), found dtype {dtype}"
            )
    try:
        return _pandas_dtypes(meta, keys, dropna, outputs)
    except TypeError:
        for o in outputs:  # name the aggregation pandas refuses
            _pandas_dtypes(meta, keys, dropna, [o])
        raise


def _refused_for_strings(o: _Output) -> None:
    """Raise pandas' TypeError when it refuses ``o`` for strings in an object column.

    An empty object column gives pandas nothing to refuse (pandas 2 keeps strings as
    objects); the strings an object column holds here make it refuse mean/std/var.
    """
    import pandas as pd

    try:
        pd.Series([""], dtype=object).groupby([0]).agg(o.agg)
    except TypeError as exc:
        raise TypeError(
            f"agg: {o.agg} of column {o.column!r} (dtype object) is not defined for strings: {exc}"
        ) from None


def _pandas_dtypes(meta: Any, keys: list[Any], dropna: bool, outputs: list[_Output]) -> list[Any]:
    named = {f"o{i}": (o.column, o.agg) for i, o in enumerate(outputs) if o.column is not None}
    got = meta.iloc[:0]
    if named:
        columns = list(dict.fromkeys(c for c, _ in named.values()))
        grouped = meta[[*keys, *columns]].groupby(keys, dropna=dropna, observed=True)
        try:
            got = grouped.agg(**named)
        except TypeError as exc:
            if len(outputs) > 1:
                raise
            (o,) = outputs
            raise TypeError(
                f"agg: {o.agg} of column {o.column!r} (dtype {meta[o.column].dtype}) is not"
                f" defined: {exc}"
            ) from None
    return [
        np.dtype("int64") if o.column is None else got[f"o{i}"].dtype for i, o in enumerate(outputs)
    ]


def _sum_state_dtype(dtype: Any) -> Any:
    """Return the dtype partial sums travel in: 64 bits (local sums may be narrower)."""
    base = np.dtype(getattr(dtype, "numpy_dtype", dtype)) if _numeric(dtype) else None
    if base is None:
        return dtype
    masked = hasattr(dtype, "numpy_dtype")
    kind = {"b": "int64", "i": "int64", "u": "uint64", "f": "float64"}[base.kind]
    return kind.capitalize().replace("Uint", "UInt") if masked else np.dtype(kind)


def _narrow_int(dtype: Any) -> bool:
    base = getattr(dtype, "numpy_dtype", dtype)
    try:
        base = np.dtype(base)
    except TypeError:
        return False
    return base.kind in "iu" and base.itemsize < 8


def _widened(dtype: Any) -> Any:
    base = np.dtype(getattr(dtype, "numpy_dtype", dtype))
    wide = "int64" if base.kind == "i" else "uint64"
    return (
        wide.capitalize().replace("Uint", "UInt")
        if hasattr(dtype, "numpy_dtype")
        else np.dtype(wide)
    )


def _can_be_null(dtype: Any) -> bool:
    try:
        return np.dtype(dtype).kind not in "biu"
    except TypeError:
        return True
