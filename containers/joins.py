"""Joins and sorts of DistFrames: ``merge`` (hash or broadcast) and ``sort_values`` (sample sort).

**merge** (collective). Arguments are checked from the schemas alone, so bad ones raise the
same error on every rank before anything moves. Then one of two paths:

* *broadcast*: the small side is sent whole to every rank (one exchange, every rank sending
  its rows to all) and merged with each local partition of the big side, which does not move;
  the result keeps the big side's partition owners. The small side must be one whose
  unmatched rows are dropped: either side for ``inner``, the right for ``left``, the left for
  ``right``; never ``outer``. ``broadcast=None`` takes this path when the small side has under
  ``JoinLimits.broadcast_ratio`` of the other's rows and is under the row and byte bounds
  (one all-gather of the sides' local rows and bytes decides, the same on every rank);
  ``True``/``False`` force it or forbid it.
* *hash*: every row goes to the rank ``hash(keys) % size`` (``shuffle_rows``, one exchange per
  side), then each rank merges what it received (pandas/cuDF ``merge``). Keys of different
  dtypes on the two sides are cast to a common dtype before hashing (numbers to float64,
  datetimes to the finer unit in UTC), so equal keys meet; null keys meet null keys, as pandas
  matches NaN with NaN (pandas' own ``merge`` decides what matches on each rank). Before moving
  anything, one all-reduce adds up the rows each rank would receive; when the heaviest rank
  would get more than ``skew_factor`` times the mean (capped at ``(1 + size) / 2`` so that two
  or three ranks can be skewed too) and more than ``skew_min_rows``, every rank raises
  :class:`JoinSkewError` naming the heaviest key. ``salt=k`` spreads such keys instead: on the
  side with more rows (the *spread* side), keys holding more than ``hot_share`` of a rank's
  mean share of its rows give their rows a salt ``0..k-1`` by row position and go to rank
  ``(hash + salt) % size``; the other side's rows of those keys are copied once per salt the
  key has, and the salt joins the keys of the local merge. Where the join keeps the copied
  side's unmatched rows (outer, or left/right when that side is the copied one), one copy of
  each stands for it (an indicator column tells them apart). Salting spreads the rows the
  spread side sends; a key heavy on both sides still makes many output rows on each salt's
  rank. Choose ``k`` a multiple of the job size (or larger than it) for an even spread.

Paths are seen in the number of ``Runtime.exchange`` calls: hash 2, broadcast 1, and none on
one rank (both sides are already local). Result columns and dtypes are pandas': dtypes that
pandas gives from the data (an int column with unmatched rows becomes float64, bool becomes
object) are agreed with one all-gather of the local results' dtypes.

Row *order*: on one rank, pandas' order (the local partitions are merged as one frame). Else
not pandas': the hash path gives one partition per rank, rank ``r`` holding the rows whose
key hash is ``r`` modulo the job size, in the order pandas' merge of what the rank received
gives (received rows in source-rank order); the broadcast path keeps the big side's
partitions, each merged with the whole small side in pandas' order. Compare results sorted.

**sort_values** (collective): a sample sort whose result equals pandas'
``sort_values(by, ascending=..., kind='stable', na_position=...)`` in order. Each row carries
its global position as the last key (so equal keys keep their order and every key is
distinct); each rank sorts its rows, every rank all-gathers a regular, weighted sample of the
others' sorted keys and picks ``size - 1`` splitters at even shares of the rows; each rank
finds where the splitters fall in its sorted rows (binary search, comparing values
lexicographically with per-column direction and nulls placed per ``na_position``), one
``shuffle_rows`` sends each run to its rank, and each rank sorts what it received. A value
holding most rows is cut by position, so no rank receives everything. The result has one
partition per rank, in rank order = sorted order.
"""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from gpupart.containers import frame_columns
from gpupart.containers.darray import host_array
from gpupart.containers.dframe import DistFrame, DistSeries, Layout
from gpupart.containers.shuffle import shuffle_rows

from gpupart.errors import GpupartError
from gpupart.trace import ranged

__all__ = ["JoinLimits", "JoinSkewError", "merge", "series_sort_values", "sort_values"]

_HOWS = ("inner", "left", "right", "outer")


@dataclass(frozen=True)
class JoinLimits:
    """Bounds that choose the broadcast path and detect skew in :func:`merge`.

    ``broadcast_ratio``, ``broadcast_max_rows``, ``broadcast_max_bytes``: ``broadcast=None``
    sends the small side to every rank when its rows are at most this share of the other's
    and under both bounds. ``skew_factor``, ``skew_min_rows``: the hash path refuses (or salts)
    when one rank would receive more than this factor of the mean rows (capped at
    ``(1 + size) / 2``) and more than this many rows. ``hot_share``: with ``salt=k``, keys
    holding more than this share of a rank's mean rows of the spread side are salted.
    """

    broadcast_ratio: float = 0.1
    broadcast_max_rows: int = 2_000_000
    broadcast_max_bytes: int = 256 * 2**20
    skew_factor: float = 4.0
    skew_min_rows: int = 1_000_000
    hot_share: float = 0.5


class JoinSkewError(GpupartError, ValueError):
    """A hash join would send one rank far more rows than the others (raised on every rank)."""


# == merge =====================================================================================


@dataclass(frozen=True)
class _Plan:
    """A checked merge: the keys of each side and pandas' merge arguments on those keys."""

    how: str
    left_keys: list[Any]
    right_keys: list[Any]
    kwargs: dict[str, Any]  # on= or left_on=/right_on=, suffixes=
    meta: Any  # the merge of the two schemas: pandas' columns, in order


@ranged("compute.merge")
def merge(
    left: DistFrame,
    right: DistFrame,
    on: Any = None,
    *,
    how: str = "inner",
    left_on: Any = None,
    right_on: Any = None,
    suffixes: tuple[Any, Any] = ("_x", "_y"),
    broadcast: bool | None = None,
    salt: int | None = None,
    limits: JoinLimits | None = None,
) -> DistFrame:
    """Join two frames on key columns as ``pandas.merge`` does (collective; see the module).

    Args:
        left: the left frame (``left.merge(right, ...)``).
        right: the right frame.
        on: key column(s) of both sides (default: the columns they have in common).
        left_on: key column(s) of the left side, instead of ``on``.
        right_on: key column(s) of the right side, as many as ``left_on``.
        how: ``'inner'``, ``'left'``, ``'right'`` or ``'outer'``.
        suffixes: added to overlapping non-key column names, as pandas.
        broadcast: ``True`` sends the small side to every rank, ``False`` hashes both sides,
            ``None`` decides from the sides' sizes (``limits``).
        salt: ``k >= 1`` spreads the rows of hot keys over ``k`` salts (hash path only).
        limits: the bounds for ``broadcast=None`` and the skew check (default
            :class:`JoinLimits()`).

    Returns:
        A frame with pandas' columns and dtypes; rows in pandas' order on one rank, else in
        another order (see the module docstring).

    Raises:
        TypeError: ``right`` is not a DistFrame.
        KeyError: a key is not a column of its side.
        ValueError: a bad ``how``, key arguments, ``broadcast``/``salt`` values, or key dtypes
            that cannot match (a string against a number).
        JoinSkewError: the hash path would overload one rank (pass ``salt=k``).
    """
    plan = _check_merge(left, right, on, how, left_on, right_on, suffixes)
    limits = JoinLimits() if limits is None else limits
    if broadcast not in (None, True, False):
        raise ValueError(f"broadcast: expected None, True or False, found {broadcast!r}")
    if salt is not None and (isinstance(salt, bool) or not isinstance(salt, int) or salt < 1):
        raise ValueError(f"salt: expected None or an int >= 1, found {salt!r}")
    if broadcast and salt is not None:
        raise ValueError("salt: expected None with broadcast=True (salting is for the hash path)")
    sides = _broadcastable(how)
    if broadcast and not sides:
        raise ValueError(
            f"broadcast: expected False or None for how={how!r} (an outer join keeps the"
            " unmatched rows of both sides), found True"
        )
    rt = left.runtime
    if rt.size == 1:
        lpart, rpart = _all_local(left), _all_local(right)
        merged = _local_merge(plan, lpart, rpart)
        return _finish(rt, plan.meta, {0: (merged, _score(merged, lpart, rpart))}, [0])
    small = None
    if broadcast is not False and sides:
        small = _choose_broadcast(left, right, sides, bool(broadcast), limits)
    if small is not None:
        return _broadcast_merge(plan, left, right, small)
    return _hash_merge(plan, left, right, salt, limits)


def _check_merge(
    left: Any, right: Any, on: Any, how: Any, left_on: Any, right_on: Any, suffixes: Any
) -> _Plan:
    """Check the arguments from the schemas (the same outcome on every rank)."""
    if not isinstance(right, DistFrame):
        raise TypeError(f"right: expected a DistFrame, found {type(right).__name__}")
    if right.runtime is not left.runtime:
        raise ValueError("right: expected a frame of the same runtime as left, found another")
    if how not in _HOWS:
        raise ValueError(f"how: expected one of {', '.join(map(repr, _HOWS))}, found {how!r}")
    if on is not None and (left_on is not None or right_on is not None):
        raise ValueError("on: expected either on= or left_on=/right_on=, found both")
    if (left_on is None) != (right_on is None):
        given, missing = ("left_on", "right_on") if right_on is None else ("right_on", "left_on")
        raise ValueError(f"{missing}: expected key column(s) to match {given}=, found None")
    if left_on is not None:
        lkeys, rkeys = _as_keys(left_on, "left_on"), _as_keys(right_on, "right_on")
        if len(lkeys) != len(rkeys):
            raise ValueError(
                f"right_on: expected as many keys as left_on ({len(lkeys)}), found {len(rkeys)}"
            )
        kwargs: dict[str, Any] = {"left_on": lkeys, "right_on": rkeys}
    else:
        if on is None:
            on = [c for c in left.columns if c in set(right.columns)]
            if not on:
                raise ValueError(
                    f"on: expected key columns (no column is common to left {list(left.columns)!r}"
                    f" and right {list(right.columns)!r}), found None"
                )
        lkeys = rkeys = _as_keys(on, "on")
        kwargs = {"on": lkeys}
    for keys, frame, what in ((lkeys, left, "left"), (rkeys, right, "right")):
        missing = [k for k in keys if k not in frame.columns]
        if missing:
            raise KeyError(
                f"{'on' if 'on' in kwargs else what + '_on'}: expected columns of the {what}"
                f" frame ({list(frame.columns)!r}), found {missing!r}"
            )
    for lk, rk in zip(lkeys, rkeys, strict=True):
        _hash_casts(left.meta[lk].dtype, right.meta[rk].dtype, lk if lk == rk else (lk, rk))
    kwargs["suffixes"] = suffixes
    meta = left.meta.merge(right.meta, how=how, **kwargs)  # pandas' checks (suffixes, dtypes)
    return _Plan(how, lkeys, rkeys, kwargs, meta)


def _as_keys(value: Any, what: str) -> list[Any]:
    keys = list(value) if isinstance(value, (list, tuple)) else [value]
    if not keys:
        raise ValueError(f"{what}: expected at least one key column, found none")
    return keys


def _broadcastable(how: str) -> tuple[str, ...]:
    """Return the sides that may be sent whole: those whose unmatched rows the join drops."""
    return {"inner": ("left", "right"), "left": ("right",), "right": ("left",)}.get(how, ())


# -- key dtypes -----------------------------------------------------------------------------


def _family(dtype: Any) -> str:
    import pandas as pd
    from gpupart.containers.frame_columns import is_string_dtype

    if isinstance(dtype, pd.CategoricalDtype):
        return _family(dtype.categories.dtype)
    if is_string_dtype(dtype):
        return "string"
    if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype):
        return "number"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    if pd.api.types.is_timedelta64_dtype(dtype):
        return "timedelta"
    return str(dtype)


def _hash_casts(ldtype: Any, rdtype: Any, key: Any) -> tuple[Any, Any]:
    """Return what each side's key column is cast to before hashing (``None``: hashed as it is)."""
    lf, rf = _family(ldtype), _family(rdtype)
    if lf != rf:
        raise ValueError(
            f"key {key!r}: expected dtypes that can match on both sides, found {ldtype} (left)"
            f" and {rdtype} (right)"
        )
    lvalues, rvalues = _values_dtype(ldtype), _values_dtype(rdtype)
    if str(lvalues) == str(rvalues) or lf == "string":
        return (None, None)  # str, string and object strings hash alike
    if lf == "number":
        return ("float64", "float64")
    if lf in ("datetime", "timedelta"):
        unit = min(_unit(lvalues), _unit(rvalues), key=_UNITS.index)
        target = f"{'M' if lf == 'datetime' else 'm'}8[{unit}]"
        return (target, target)
    raise ValueError(
        f"key {key!r}: expected the same dtype on both sides for {lf} keys, found {ldtype} (left)"
        f" and {rdtype} (right)"
    )


_UNITS = ["ns", "us", "ms", "s"]


def _values_dtype(dtype: Any) -> Any:
    """Return a categorical's categories' dtype (keys are hashed by value), or ``dtype``."""
    import pandas as pd

    return dtype.categories.dtype if isinstance(dtype, pd.CategoricalDtype) else dtype


def _unit(dtype: Any) -> str:
    unit = getattr(dtype, "unit", None) or np.datetime_data(np.dtype(dtype))[0]
    return unit if unit in _UNITS else "ns"


def _cast_key(series: Any, target: Any) -> Any:
    """``series`` as ``target`` for hashing (nulls as NaN/NaT, tz-aware datetimes in UTC)."""
    import pandas as pd

    if isinstance(series.dtype, pd.CategoricalDtype):
        series = series.astype(series.dtype.categories.dtype)
    if target is None:
        return series
    if target == "float64":
        if _on_host(series):
            return pd.Series(series.to_numpy(dtype="float64", na_value=np.nan), copy=False)
        return series.astype("float64")
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    return series.astype(target)


def _key_hashes(frame: Any, keys: Sequence[Any]) -> Any:
    """Hash the rows of ``frame[keys]`` (``uint64``, :func:`gpupart.kernels.hashing.hash_columns`).

    The one place a join hashes: equal keys hash alike (nulls, NaN and NaT alike, -0.0 as 0.0)
    when each key column has one dtype on both sides (:func:`_hash_casts`). cuDF columns are
    hashed from host Arrow copies, as the groupby does, until the kernels take cuDF columns.
    """
    from gpupart.kernels.hashing import hash_columns

    if _on_host(frame):
        return hash_columns([frame[k] for k in keys])
    return hash_columns([frame[k].to_arrow() for k in keys])


def _hashes(plan: _Plan, frame: DistFrame, side: str, casts: list[Any]) -> dict[int, Any]:
    """Hash the keys of every row of this rank's partitions of one side."""
    import pandas as pd

    keys = plan.left_keys if side == "left" else plan.right_keys
    module = frame.runtime.backend.dataframe_module()
    as_is = all(c is None for c in casts) and not any(
        isinstance(frame.meta[k].dtype, pd.CategoricalDtype) for k in keys
    )
    out = {}
    for i, part in frame.local_partitions.items():
        if as_is:
            out[i] = _key_hashes(part, keys)
            continue
        cols = {j: _cast_key(part[k], casts[j]) for j, k in enumerate(keys)}
        out[i] = _key_hashes(module.DataFrame(cols), list(range(len(keys))))
    return out


# -- paths ----------------------------------------------------------------------------------


def _choose_broadcast(
    left: DistFrame, right: DistFrame, sides: tuple[str, ...], forced: bool, limits: JoinLimits
) -> str | None:
    """Which side to send whole, or ``None`` (one all-gather of local rows and bytes)."""
    stats = np.zeros(4, np.int64)
    for k, frame in enumerate((left, right)):
        for part in frame.local_partitions.values():
            stats[2 * k] += len(part)
            stats[2 * k + 1] += int(part.memory_usage(index=False, deep=False).sum())
    total = np.sum(np.asarray(left.runtime.allgather(stats), dtype=np.int64), axis=0)
    rows = {"left": int(total[0]), "right": int(total[2])}
    nbytes = {"left": int(total[1]), "right": int(total[3])}
    small = min(sides, key=lambda s: (rows[s], s != "right"))
    if forced:
        return small
    big = "right" if small == "left" else "left"
    fits = (
        rows[small] <= limits.broadcast_ratio * rows[big]
        and rows[small] <= limits.broadcast_max_rows
        and nbytes[small] <= limits.broadcast_max_bytes
    )
    return small if fits else None


def _broadcast_merge(plan: _Plan, left: DistFrame, right: DistFrame, small: str) -> DistFrame:
    """Send the small side to every rank; merge it with each local partition of the other."""
    rt = left.runtime
    whole = (left if small == "left" else right)._collect(list(range(rt.size)))
    big = right if small == "left" else left
    results = {}
    for i, part in big.local_partitions.items():
        pair = (whole, part) if small == "left" else (part, whole)
        merged = _local_merge(plan, *pair)
        results[i] = (merged, _score(merged, *pair))
    return _finish(rt, plan.meta, results, big.layout.owners)


def _hash_merge(
    plan: _Plan, left: DistFrame, right: DistFrame, salt: int | None, limits: JoinLimits
) -> DistFrame:
    """Send every row to ``hash(keys) % size``; merge what arrives (see the module)."""
    rt = left.runtime
    casts = [
        _hash_casts(left.meta[lk].dtype, right.meta[rk].dtype, lk)
        for lk, rk in zip(plan.left_keys, plan.right_keys, strict=True)
    ]
    hashes = {
        "left": _hashes(plan, left, "left", [c[0] for c in casts]),
        "right": _hashes(plan, right, "right", [c[1] for c in casts]),
    }
    frames = {"left": left, "right": right}
    if salt is None:
        _check_skew(plan, frames, hashes, limits)
        dests = {s: {i: _ranks(h, rt.size) for i, h in hashes[s].items()} for s in frames}
        moved = {s: _shuffle(frames[s], dests[s]) for s in frames}
        merged = _local_merge(plan, moved["left"], moved["right"])
    else:
        moved, merged = _salted_merge(plan, frames, hashes, salt, limits)
    score = _score(merged, moved["left"], moved["right"])
    return _finish(rt, plan.meta, {rt.rank: (merged, score)}, list(range(rt.size)))


def _ranks(hashes: Any, size: int) -> Any:
    """Return the rank each row goes to: ``hash % size``, as every shuffle reads it."""
    from gpupart.kernels.hashing import partition_of

    return partition_of(hashes, size).astype(np.int64)


def _shuffle(frame: DistFrame, destinations: Mapping[int, Any]) -> Any:
    """``shuffle_rows`` and this rank's one partition of the result."""
    (part,) = shuffle_rows(frame, destinations).local_partitions.values()
    return part


# -- skew -----------------------------------------------------------------------------------


def _check_skew(
    plan: _Plan, frames: dict[str, DistFrame], hashes: dict[str, dict[int, Any]], limits: JoinLimits
) -> None:
    """Raise :class:`JoinSkewError` on every rank if one rank would receive too many rows."""
    rt = frames["left"].runtime
    size = rt.size
    counts = np.zeros(size, np.int64)
    for side in hashes.values():
        for h in side.values():
            counts += host_array(_bincount(_ranks(h, size), size))
    loads = np.asarray(rt.allreduce(counts, op="sum"), dtype=np.int64)
    heaviest, mean = int(np.argmax(loads)), float(loads.sum()) / size
    factor = min(limits.skew_factor, (1 + size) / 2)
    if not (loads[heaviest] > factor * mean and loads[heaviest] > limits.skew_min_rows):
        return
    going = [
        host_array(h)[host_array(_ranks(h, size)) == heaviest]
        for side in hashes.values()
        for h in side.values()
    ]
    local = np.concatenate(going) if going else np.zeros(0, np.uint64)
    top, top_counts = _frequent(rt, local, top=3)
    key, count = int(top[0]), int(top_counts[0])
    value = _key_value(plan, frames, hashes, key)
    broadcast = " or broadcast=True (when one side is small)" if _broadcastable(plan.how) else ""
    raise JoinSkewError(
        f"merge: expected the hash join to spread the rows over the ranks, found rank"
        f" {heaviest} would receive {int(loads[heaviest])} rows against a mean of {mean:.0f}"
        f" (limit {factor:g}x the mean and {limits.skew_min_rows} rows); the key {value} holds"
        f" {count} of them: pass salt=k (e.g. salt={size}) to spread the hot keys{broadcast}"
    )


def _frequent(rt: Any, hashes: np.ndarray, *, top: int = 0, min_count: int = 0) -> tuple[Any, Any]:
    """Globally frequent hashes and their global counts, most frequent first (2 collectives).

    Candidates are each rank's ``top`` most frequent hashes, or those with at least
    ``min_count / size`` rows here (a hash with ``min_count`` rows in all has that many on
    some rank); their counts are then added up exactly and filtered by ``min_count``.
    """
    uniq, counts = np.unique(hashes, return_counts=True)
    if top:
        local = uniq[np.argsort(-counts, kind="stable")[:top]]
    else:
        local = uniq[counts >= max(1, math.ceil(min_count / rt.size))]
    candidates = np.unique(np.concatenate([np.asarray(c, np.uint64) for c in rt.allgather(local)]))
    if not len(candidates):
        return candidates, np.zeros(0, np.int64)
    at = np.minimum(np.searchsorted(uniq, candidates), max(len(uniq) - 1, 0))
    here = np.zeros(len(candidates), np.int64)
    if len(uniq):
        found = uniq[at] == candidates
        here[found] = counts[at[found]]
    total = np.asarray(rt.allreduce(here, op="sum"), dtype=np.int64)
    keep = total >= max(min_count, 1)
    order = np.argsort(-total[keep], kind="stable")
    return candidates[keep][order], total[keep][order]


def _key_value(
    plan: _Plan, frames: dict[str, DistFrame], hashes: dict[str, dict[int, Any]], key: int
) -> str:
    """Describe the key whose hash is ``key`` from any rank holding a row of it (collective)."""
    found = None
    for side, keys in (("left", plan.left_keys), ("right", plan.right_keys)):
        for i, h in hashes[side].items():
            rows = np.flatnonzero(host_array(h) == np.uint64(key))
            if found is None and len(rows):
                part = frames[side].local_partitions[i]
                row = int(rows[0])
                found = ", ".join(f"{k!r}={_shown(part[k].iloc[row])}" for k in keys)
    return next((f for f in frames["left"].runtime.allgather(found) if f), "?")


def _salted_merge(
    plan: _Plan,
    frames: dict[str, DistFrame],
    hashes: dict[str, dict[int, Any]],
    salt: int,
    limits: JoinLimits,
) -> tuple[dict[str, Any], Any]:
    """Spread the hot keys' rows of the bigger side over salts; copy the other side's rows.

    A hot key's rows on the *spread* side take salts ``0..salt-1`` by row position; one
    all-reduce learns which salts each hot key then has (its *present* salts), and the
    *copied* side's rows of that key are copied once per present salt (once, with salt 0,
    when the key has no row on the spread side). A row of the copied side matches in each
    copy what it would have matched in one, so its matches come out once; where the join
    keeps the copied side's unmatched rows, only the copy with the key's first present salt
    is kept. Returns what each side received and this rank's merge.
    """
    rt = frames["left"].runtime
    rows = rt.allreduce(np.array([_rows(frames["left"]), _rows(frames["right"])]), op="sum")
    spread = "left" if rows[0] >= rows[1] else "right"
    copied = "right" if spread == "left" else "left"
    local = [host_array(h) for h in hashes[spread].values()]
    share = math.ceil(limits.hot_share * int(rows[int(spread == "right")]) / rt.size)
    joined = np.concatenate(local) if local else np.zeros(0, np.uint64)
    hot, _ = _frequent(rt, joined, min_count=max(2, share))
    hot = np.sort(hot)
    taken = [*frames["left"].columns, *frames["right"].columns]
    name, keep = _unique_name(taken, "__salt__"), _unique_name(taken, "__keep__")
    salts = _spread_salts(rt, hashes[spread], hot, salt)
    present = np.zeros((len(hot), salt), np.int64)
    for i, h in hashes[spread].items():
        at = _hot_index(host_array(h), hot)
        present[at[at >= 0], salts[i][at >= 0]] = 1
    present = np.asarray(rt.allreduce(present, op="max"), dtype=bool) if len(hot) else present
    keeps_copied = plan.how in ("outer", copied)
    moved = {}
    for side in ("left", "right"):
        frame, parts, dests = frames[side], {}, {}
        for i, part in frame.local_partitions.items():
            h = host_array(hashes[side][i])
            if side == spread:
                chosen, s, first = np.arange(len(h)), salts[i], None
            else:
                chosen, s, first = _copies(_hot_index(h, hot), present)
                part = part.take(chosen).reset_index(drop=True)
            part = part.copy(deep=False)
            part[name] = s
            if side == copied and keeps_copied:
                part[keep] = first
            parts[i] = part
            dests[i] = (_ranks(h[chosen], rt.size) + s) % rt.size
        meta = _with_column(frame.meta, name, np.int64)
        if side == copied and keeps_copied:
            meta = _with_column(meta, keep, bool)
        moved[side] = _shuffle(DistFrame(rt, meta, frame.layout, parts), dests)
    kwargs = dict(plan.kwargs)
    if "on" in kwargs:
        kwargs["on"] = [*kwargs["on"], name]
    else:
        kwargs["left_on"] = [*kwargs["left_on"], name]
        kwargs["right_on"] = [*kwargs["right_on"], name]
    indicator = _unique_name(taken, "__side__")
    if keeps_copied:
        kwargs["indicator"] = indicator
    merged = moved["left"].merge(moved["right"], how=plan.how, **kwargs)
    if keeps_copied:  # a copied row's unmatched copies: kept once
        # (an unmatched row's flag is null: kept; pandas 2 warns about fillna on objects)
        drop = (merged[indicator] == f"{copied}_only") & merged[keep].eq(False).fillna(False)
        merged = merged[~drop].drop(columns=[indicator, keep])
    return moved, merged.drop(columns=[name]).reset_index(drop=True)


def _hot_index(hashes: np.ndarray, hot: np.ndarray) -> np.ndarray:
    """Each row's index in the sorted ``hot`` hashes, or -1 for a row of another key."""
    if not len(hot):
        return np.full(len(hashes), -1, np.int64)
    at = np.minimum(np.searchsorted(hot, hashes), len(hot) - 1)
    return np.where(hot[at] == hashes, at, -1)


def _spread_salts(rt: Any, hashes: dict[int, Any], hot: np.ndarray, salt: int) -> dict[int, Any]:
    """Salts of the spread side's rows: ``0..salt-1`` by position for hot keys, else 0."""
    out, counter = {}, rt.rank
    for i in sorted(hashes):
        h = host_array(hashes[i])
        out[i] = np.where(_hot_index(h, hot) >= 0, (counter + np.arange(len(h))) % salt, 0)
        counter += len(h)
    return out


def _copies(hot_at: np.ndarray, present: np.ndarray) -> tuple[Any, Any, Any]:
    """Copy the copied side's rows: one per present salt of a hot key, else one with salt 0.

    Returns the source row of each copy, its salt, and whether it is the copy that stands
    for the row when it matches nothing (the key's first present salt).
    """
    salts_of = [np.flatnonzero(p) if p.any() else np.zeros(1, np.int64) for p in present]
    lengths = np.array([len(s) for s in salts_of], np.int64)
    flat = np.concatenate([*salts_of, np.zeros(1, np.int64)])
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    is_hot = hot_at >= 0
    reps = np.where(is_hot, lengths[np.maximum(hot_at, 0)] if len(lengths) else 1, 1)
    rows = np.repeat(np.arange(len(hot_at)), reps)
    within = np.arange(len(rows)) - np.repeat(np.cumsum(reps) - reps, reps)
    hot_rows = is_hot[rows]
    at = np.where(hot_rows, starts[np.maximum(hot_at[rows], 0)] + within, len(flat) - 1)
    salts = np.where(hot_rows, flat[at], 0).astype(np.int64)
    return rows, salts, within == 0


# -- local merge and results ---------------------------------------------------------------


def _local_merge(plan: _Plan, left: Any, right: Any) -> Any:
    return left.merge(right, how=plan.how, **plan.kwargs).reset_index(drop=True)


def _score(merged: Any, left: Any, right: Any) -> int:
    """How much a local result's dtypes say about the whole's: rows 2, inputs 1, nothing 0."""
    return 2 if len(merged) else (1 if len(left) and len(right) else 0)


def _finish(rt: Any, meta: Any, results: dict[int, tuple[Any, int]], owners: Sequence[int]) -> Any:
    """Give every partition the dtypes pandas gives the whole (one all-gather) and wrap.

    ``meta`` is the merge of the two schemas (columns in pandas' order); ``results`` maps a
    partition to its merged frame and :func:`_score`. The dtypes of the partitions that say
    most are combined (int with float is float, bool with object is object).
    """
    from gpupart.containers import frame_columns

    mine = [(score, [spec for _, spec in frame_columns.schema(f)]) for f, score in results.values()]
    gathered = [entry for entries in rt.allgather(mine) for entry in entries]
    if gathered:
        best = max(score for score, _ in gathered)
        specs = [spec for score, spec in gathered if score == best]
        target = [_common(list(column)) for column in zip(*specs, strict=True)]
        meta = _cast_columns(meta, target)
        parts = {i: _cast_columns(frame, target) for i, (frame, _) in results.items()}
    else:
        parts = {}
    return DistFrame(rt, meta.iloc[:0], Layout(owners), parts)


def _common(specs: list[Any]) -> Any:
    """Return the dtype (schema spec) that holds every rank's values of one column.

    pandas' own rule: the dtype its ``concat`` gives empty columns of these dtypes (int with
    float is float, Int64 with float64 is Float64, bool with object is object).
    """
    import pandas as pd
    from gpupart.containers import frame_columns

    if all(s == specs[0] for s in specs):
        return specs[0]
    empties = [frame_columns.empty_frame(((0, s),), pd) for s in dict.fromkeys(specs)]
    ((_, spec),) = frame_columns.schema(pd.concat(empties, ignore_index=True))
    return spec


def _cast_columns(frame: Any, target: Sequence[Any]) -> Any:
    from gpupart.containers import frame_columns

    specs = [spec for _, spec in frame_columns.schema(frame)]
    changes = {
        frame.columns[j]: frame_columns.dtype_of(t)
        for j, (s, t) in enumerate(zip(specs, target, strict=True))
        if s != t
    }
    return frame.astype(changes) if changes else frame


# == sort_values ===============================================================================


@ranged("compute.sort_values")
def sort_values(
    df: DistFrame,
    by: Any,
    *,
    ascending: bool | Sequence[bool] = True,
    kind: str = "stable",
    na_position: str = "last",
) -> DistFrame:
    """Sort rows by columns ``by`` as pandas' stable sort does (collective; see the module).

    Args:
        df: the frame.
        by: a column label or a list of them (compared lexicographically).
        ascending: one flag, or one per column of ``by``.
        kind: pandas' sort algorithm names, accepted for compatibility; the sort is always
            stable (a valid order for every kind).
        na_position: ``'last'`` or ``'first'``: where nulls go (whatever the direction).

    Returns:
        One partition per rank, in rank order; equals
        ``df.sort_values(by, ascending=..., kind='stable', na_position=...)``.

    Raises:
        KeyError: a column of ``by`` is not in ``df``.
        TypeError: ``ascending`` is not a bool or a list of bools.
        ValueError: ``ascending`` of another length than ``by``, a bad ``kind`` or
            ``na_position``.
    """
    keys = _as_keys(by, "by")
    missing = [k for k in keys if k not in df.columns]
    if missing:
        raise KeyError(
            f"by: expected columns of the frame ({list(df.columns)!r}), found {missing!r}"
        )
    flags = _flags(ascending, len(keys))
    _check_kind(kind)
    if na_position not in ("last", "first"):
        raise ValueError(f"na_position: expected 'last' or 'first', found {na_position!r}")
    rt = df.runtime
    pos = _unique_name(list(df.columns), "__position__")
    sizes = df.partition_sizes
    starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
    parts = []
    for i in sorted(df.local_partitions):
        part = df.local_partitions[i].copy(deep=False)
        part[pos] = np.arange(starts[i], starts[i + 1], dtype=np.int64)
        parts.append(part)
    meta = _with_column(df.meta, pos, np.int64)
    module = rt.backend.dataframe_module()
    local = frame_columns.concat(parts, module) if parts else meta
    local = _sort(local, keys, flags, na_position)  # in position order: stable = by (keys, pos)
    if rt.size > 1:
        order = _Order(flags, na_position)
        splitters = _splitters(rt, local, keys, pos, order)
        rows = _RowKeys(local, keys, pos)
        cuts = [0] + [_upper_bound(rows, s, order) for s in splitters] + [len(local)]
        dest = np.repeat(np.arange(rt.size), np.diff(cuts))
        mine = DistFrame(rt, meta, Layout(range(rt.size)), {rt.rank: local})
        local = _sort(_shuffle(mine, {rt.rank: dest}), [*keys, pos], [*flags, True], na_position)
    result = local.drop(columns=[pos]).reset_index(drop=True)
    owners = list(range(rt.size)) if rt.size > 1 else [0]
    return DistFrame(rt, df.meta, Layout(owners), {rt.rank: result})


def series_sort_values(
    s: DistSeries, *, ascending: bool = True, kind: str = "stable", na_position: str = "last"
) -> DistSeries:
    """Sort a series' values as pandas' stable sort does (collective; see :func:`sort_values`)."""
    if not isinstance(ascending, (bool, np.bool_)):
        raise TypeError(f"ascending: expected a bool, found {ascending!r}")
    frame = s.to_frame()
    label = frame.columns[0]
    ordered = sort_values(
        frame, [label], ascending=bool(ascending), kind=kind, na_position=na_position
    )
    return ordered.map_partitions(functools.partial(_column, name=s.name), keeps_rows=True)


def _column(frame: Any, name: Any) -> Any:
    column = frame.iloc[:, 0]
    column.name = name
    return column


_KINDS = ("stable", "mergesort", "quicksort", "heapsort")


def _check_kind(kind: Any) -> None:
    if kind not in _KINDS:
        raise ValueError(f"kind: expected one of {', '.join(map(repr, _KINDS))}, found {kind!r}")


def _flags(ascending: Any, n: int) -> list[bool]:
    if isinstance(ascending, (bool, np.bool_)):
        return [bool(ascending)] * n
    if isinstance(ascending, (list, tuple)) and all(
        isinstance(a, (bool, np.bool_)) for a in ascending
    ):
        if len(ascending) != n:
            raise ValueError(
                f"ascending: expected {n} flag(s), one per column of by, found {len(ascending)}"
            )
        return [bool(a) for a in ascending]
    raise TypeError(f"ascending: expected a bool or a list of bools, found {ascending!r}")


def _sort(frame: Any, keys: list[Any], flags: list[bool], na_position: str) -> Any:
    """Stable sort of a local frame (pandas' ``kind='stable'``; cuDF's sort is stable)."""
    extra = {"kind": "stable"} if _on_host(frame) else {}
    by = keys[0] if len(keys) == 1 else keys
    asc = flags[0] if len(flags) == 1 else flags
    out = frame.sort_values(by, ascending=asc, na_position=na_position, **extra)
    return out.reset_index(drop=True)


class _Order:
    """Compare sort keys (tuples of plain values, the position last) as the sort orders them."""

    def __init__(self, flags: list[bool], na_position: str) -> None:
        self.flags = [*flags, True]
        self.null = 1 if na_position == "last" else -1

    def compare(self, a: tuple, b: tuple) -> int:
        for x, y, up in zip(a, b, self.flags, strict=True):
            if x is None or y is None:
                if x is None and y is None:
                    continue
                return self.null if x is None else -self.null
            if x == y:
                continue
            less = bool(x < y)
            return (-1 if less else 1) if up else (1 if less else -1)
        return 0


class _RowKeys(Sequence):
    """A sorted local frame's rows as sort keys (plain values), read on demand."""

    def __init__(self, frame: Any, keys: list[Any], pos: Any) -> None:
        self.columns = [_comparable(frame[k]) for k in keys] + [frame[pos]]
        self.n = len(frame)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: Any) -> tuple:
        return tuple(_plain(c.iloc[i]) for c in self.columns)


def _comparable(column: Any) -> Any:
    """Return a column whose values compare as the sort orders them (categoricals: codes)."""
    import pandas as pd

    if isinstance(column.dtype, pd.CategoricalDtype):
        codes = column.cat.codes
        return codes.astype("float64").where(codes >= 0)
    return column


def _shown(value: Any) -> str:
    """``repr`` of a key value as a user wrote it (``77``, not ``np.int64(77)``; nulls ``null``)."""
    import pandas as pd

    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return "null"
    if isinstance(value, np.generic) and not isinstance(value, (np.datetime64, np.timedelta64)):
        value = value.item()
    return repr(value)


def _plain(value: Any) -> Any:
    """Return a scalar as a plain value that travels in collectives and compares (nulls: None)."""
    import pandas as pd

    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_datetime64()
    if isinstance(value, pd.Timedelta):
        return value.to_timedelta64()
    if isinstance(value, np.generic) and not isinstance(value, (np.datetime64, np.timedelta64)):
        return value.item()
    return value


def _splitters(rt: Any, local: Any, keys: list[Any], pos: Any, order: _Order) -> list[tuple | None]:
    """``size - 1`` sort keys cutting the rows into even shares (one all-gather of samples).

    Each rank samples its sorted rows regularly; a sample stands for ``rows / samples`` rows,
    so ranks holding more rows weigh more. Splitter ``j`` is the first sample at which the
    samples' running weight reaches ``j / size`` of all rows.
    """
    n = len(local)
    count = min(n, 64 * rt.size, 4096)
    rows = _RowKeys(local, keys, pos)
    at = ((np.arange(count) + 0.5) * n / max(count, 1)).astype(np.int64)
    samples = [(rows[int(i)], n / count) for i in at]
    gathered = [s for per_rank in rt.allgather(samples) for s in per_rank]
    gathered = [(tuple(key), weight) for key, weight in gathered]
    gathered.sort(key=lambda s: functools.cmp_to_key(order.compare)(s[0]))
    if not gathered:  # no rows anywhere
        return [None] * (rt.size - 1)
    weights = np.cumsum([w for _, w in gathered])
    out = []
    for j in range(1, rt.size):
        k = int(np.searchsorted(weights, j * weights[-1] / rt.size))
        out.append(gathered[min(k, len(gathered) - 1)][0])
    return out


def _upper_bound(rows: _RowKeys, splitter: tuple | None, order: _Order) -> int:
    """Return the first row of ``rows`` (sorted) that sorts after ``splitter`` (``None``: none)."""
    if splitter is None:
        return len(rows)
    key = functools.cmp_to_key(order.compare)
    return bisect.bisect_right(rows, key(splitter), key=key)


# == helpers ===================================================================================


def _all_local(frame: DistFrame) -> Any:
    """Return this rank's partitions as one frame (or an empty one of the schema)."""
    parts = [frame.local_partitions[i] for i in sorted(frame.local_partitions)]
    if not parts:
        return frame.meta
    if len(parts) == 1:
        return parts[0]
    return frame_columns.concat(parts, frame.runtime.backend.dataframe_module())


def _rows(frame: DistFrame) -> int:
    return sum(len(p) for p in frame.local_partitions.values())


def _with_column(meta: Any, name: Any, dtype: Any) -> Any:
    out = meta.copy(deep=False)
    out[name] = np.zeros(0, dtype=dtype)
    return out


def _unique_name(columns: Sequence[Any], base: str) -> str:
    name, taken = base, set(map(repr, columns))
    while repr(name) in taken:
        name = f"_{name}_"
    return name


def _on_host(obj: Any) -> bool:
    return type(obj).__module__.split(".")[0] in ("pandas", "numpy")


def _bincount(ranks: Any, size: int) -> Any:
    xp = np if isinstance(ranks, np.ndarray) else _array_module(ranks)
    return xp.bincount(ranks, minlength=size)


def _array_module(array: Any) -> Any:
    import importlib

    return importlib.import_module(type(array).__module__.split(".")[0])
