"""``train_test_split`` of distributed data, decided row by row, with no row moved.

A row's side depends only on its global index and the seed, never on the job size or the
layout: with ``shuffle=True`` every index gets a key, a seeded 64-bit hash (splitmix64's
mixer: a bijection, so keys never tie), and the ``n_test`` rows of smallest key form the
test set, the next ``n_train`` the train set. The two cut-off keys are found by an 8-round
radix selection over 256 bins: each rank histograms the keys of its own rows, one all-reduce
per round (both cut-offs packed together). With ``shuffle=False`` the first ``n_train`` rows
train and the next ``n_test`` test, as in scikit-learn.

Every array is then filtered where it lives: each tile/partition keeps its own rows of each
side, so nothing moves between ranks and each output keeps its input's owners and global row
order. Outputs are therefore lined up with each other row for row (the same indices, in
index order; arrays tiled alike stay tiled alike). Sizes follow scikit-learn's rounding
(``ceil`` for a float ``test_size``, ``floor`` for a float ``train_size``). Unlike
scikit-learn, which rows are drawn differs (a hash, not NumPy's permutation) and each side
keeps the original row order rather than a shuffled one.
"""

from __future__ import annotations

import secrets
from math import ceil, floor
from typing import Any

import numpy as np
from gpupart.containers.darray import DistArray
from gpupart.containers.dframe import DistFrame, DistSeries, Layout
from gpupart.ml._data import _as_distributed
from gpupart.ml._reduce import packed_sum

from gpupart.protocol import Tiling

__all__ = ["train_test_split"]

_MASK64 = (1 << 64) - 1
_GOLDEN, _M1, _M2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _mix(z: Any) -> Any:
    """splitmix64's finaliser on a uint64 array (wrapping arithmetic; a bijection)."""
    z = z ^ (z >> np.uint64(30))
    z = z * np.uint64(_M1)
    z = z ^ (z >> np.uint64(27))
    z = z * np.uint64(_M2)
    return z ^ (z >> np.uint64(31))


def _mix_int(z: int) -> int:
    z &= _MASK64
    z = ((z ^ (z >> 30)) * _M1) & _MASK64
    z = ((z ^ (z >> 27)) * _M2) & _MASK64
    return z ^ (z >> 31)


def _keys(xp: Any, start: int, stop: int, offset: int) -> Any:
    """Return the keys of global rows ``start..stop``: ``mix(index + offset)``, all distinct."""
    with np.errstate(over="ignore"):
        return _mix(xp.arange(start, stop, dtype=np.uint64) + np.uint64(offset))


class _Item:
    """One of the arrays: its rows as (global start, local piece) and how to rebuild it."""

    def __init__(self, obj: Any, what: str, rt_size: int) -> None:
        self.local = None
        if (
            rt_size == 1
            and not isinstance(obj, (DistArray, DistFrame, DistSeries))
            and not (hasattr(obj, "__partitioned__"))
        ):
            self.local = obj
            self.n = _local_length(obj, what)
            return
        self.obj, _ = _as_distributed(obj, what)
        if isinstance(self.obj, DistArray):
            if self.obj.ndim == 0:
                raise TypeError(f"{what}: expected an array with rows, found a 0-d array")
            self.n = self.obj.shape[0]
        else:
            self.n = len(self.obj)

    def counted_ranges(self, rank: int) -> list[tuple[int, int]]:
        """Global row ranges this rank counts (each row counted by one rank only)."""
        if self.local is not None:
            return [(0, self.n)]
        if isinstance(self.obj, DistArray):
            x = self.obj
            out = []
            for pos in sorted(x.local_tiles):
                owner = int(x.owners[pos])
                if any(pos[1:]) or not (owner == rank or (owner == -1 and rank == 0)):
                    continue
                start = x.tiling.start(pos)[0]
                out.append((start, start + x.local_tiles[pos].shape[0]))
            return out
        offs = np.concatenate([[0], np.cumsum(self.obj.partition_sizes)]).astype(int)
        return [(int(offs[i]), int(offs[i + 1])) for i in sorted(self.obj.local_partitions)]

    def split(self, sides: Any) -> list[Any]:
        """``[train, test]`` of this array; ``sides(xp, start, stop)`` gives both row masks."""
        if self.local is not None:
            train, test = sides(np, 0, self.n)
            return [_take_local(self.local, np.flatnonzero(m)) for m in (train, test)]
        if isinstance(self.obj, DistArray):
            return _split_array(self.obj, sides)
        return _split_frame(self.obj, sides)


def _local_length(obj: Any, what: str) -> int:
    if hasattr(obj, "shape") and len(obj.shape) > 0:
        return int(obj.shape[0])
    try:
        return len(obj)
    except TypeError as exc:
        raise TypeError(
            f"{what}: expected an array-like with rows, found {type(obj).__name__}"
        ) from exc


def _take_local(obj: Any, index: np.ndarray) -> Any:
    """scikit-learn's indexing of a local input: pandas by position, lists stay lists."""
    if hasattr(obj, "iloc"):
        return obj.iloc[index]
    if isinstance(obj, list):
        return [obj[i] for i in index]
    if hasattr(obj, "__array_namespace__") or isinstance(obj, np.ndarray):
        return obj[index]
    return np.asarray(obj)[index]


def _split_array(x: DistArray, sides: Any) -> list[DistArray]:
    xp, rt = x.xp, x.runtime
    kept: list[dict[Any, Any]] = [{}, {}]
    counts: list[dict[int, int]] = [{}, {}]
    for pos, tile in x.local_tiles.items():
        start = x.tiling.start(pos)[0]
        for side, mask in enumerate(sides(xp, start, start + tile.shape[0])):
            kept[side][pos] = tile[mask]
            counts[side][pos[0]] = int(kept[side][pos].shape[0])
    tables = rt.allgather(counts)
    out = []
    for side in (0, 1):
        per_block: dict[int, int] = {}
        for table in tables:
            per_block.update(table[side])
        lengths = [per_block[i] for i in range(x.tiling.grid[0])]
        cuts = [0, *np.cumsum(lengths).tolist()]
        bounds = [cuts] + [list(b) for b in x.tiling.boundaries[1:]]
        tiling = Tiling.from_boundaries(bounds)
        out.append(DistArray(rt, tiling, x.owners.copy(), x.dtype, kept[side]))
    return out


def _split_frame(obj: Any, sides: Any) -> list[Any]:
    rt = obj.runtime
    xp = rt.backend.xp
    offs = np.concatenate([[0], np.cumsum(obj.partition_sizes)]).astype(int)
    parts: list[dict[int, Any]] = [{}, {}]
    for i, p in obj.local_partitions.items():
        for side, mask in enumerate(sides(xp, int(offs[i]), int(offs[i + 1]))):
            parts[side][i] = p[mask].reset_index(drop=True)
    return [type(obj)(rt, obj.meta, Layout(obj.layout.owners), parts[s]) for s in (0, 1)]


def _sizes(n: int, test_size: Any, train_size: Any) -> tuple[int, int]:
    """scikit-learn's ``(n_train, n_test)`` for ``n`` rows, with its errors."""
    if test_size is None and train_size is None:
        test_size = 0.25
    test_kind = np.asarray(test_size).dtype.kind
    train_kind = np.asarray(train_size).dtype.kind
    for name, value, kind in (
        ("test_size", test_size, test_kind),
        ("train_size", train_size, train_kind),
    ):
        if (kind == "i" and (value >= n or value <= 0)) or (kind == "f" and not 0 < value < 1):
            raise ValueError(
                f"{name}={value} should be either positive and smaller than the number of"
                f" samples {n} or a float in the (0, 1) range"
            )
        if value is not None and kind not in ("i", "f"):
            raise ValueError(f"Invalid value for {name}: {value}")
    if train_kind == "f" and test_kind == "f" and train_size + test_size > 1:
        raise ValueError(
            f"The sum of test_size and train_size = {train_size + test_size}, should be in the"
            " (0, 1) range. Reduce test_size and/or train_size."
        )
    n_test = ceil(test_size * n) if test_kind == "f" else test_size
    n_train = floor(train_size * n) if train_kind == "f" else train_size
    if train_size is None:
        n_train = n - n_test
    elif test_size is None:
        n_test = n - n_train
    if n_train + n_test > n:
        raise ValueError(
            f"The sum of train_size and test_size = {int(n_train + n_test)}, should be smaller"
            f" than the number of samples {n}. Reduce test_size and/or train_size."
        )
    if int(n_train) == 0:
        raise ValueError(
            f"With n_samples={n}, test_size={test_size} and train_size={train_size}, the"
            " resulting train set will be empty. Adjust any of the aforementioned parameters."
        )
    return int(n_train), int(n_test)


def _seed(random_state: Any, rt: Any) -> int:
    """Return a 64-bit seed every rank agrees on (an int as it is, else rank 0's draw)."""
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        return int(random_state) & _MASK64
    if random_state is None:
        mine = secrets.randbits(63) if rt.rank == 0 else None
    elif isinstance(random_state, np.random.RandomState):
        mine = int(random_state.randint(0, 2**31 - 1)) if rt.rank == 0 else None
    else:
        raise ValueError(
            f"random_state: expected None, an int or a numpy RandomState, found {random_state!r}"
        )
    return int(rt.broadcast(mine, root=0)) if rt.size > 1 else int(mine)


def _cutoffs(rt: Any, xp: Any, keys: Any, targets: list[int], n: int) -> list[int | None]:
    """For each ``k``: the key with exactly ``k`` keys below it (None when ``k == n``)."""
    live = [k < n for k in targets]
    prefix = [0] * len(targets)
    remaining = list(targets)
    candidates = [keys] * len(targets)
    for shift in range(56, -8, -8):
        hists = []
        digits = []
        for t, cand in enumerate(candidates):
            d = ((cand >> np.uint64(shift)) & np.uint64(255)).astype(np.int64)
            digits.append(d)
            hists.append(xp.bincount(d, minlength=256) if live[t] else xp.zeros(256))
        (total,) = packed_sum(rt, [xp.stack(hists)])
        for t in range(len(targets)):
            if not live[t]:
                continue
            cum = np.cumsum(total[t])
            b = int(np.searchsorted(cum, remaining[t], side="right"))
            remaining[t] -= int(cum[b - 1]) if b else 0
            prefix[t] |= b << shift
            candidates[t] = candidates[t][digits[t] == b]
    return [p if alive else None for p, alive in zip(prefix, live, strict=True)]


def train_test_split(
    *arrays: Any,
    test_size: Any = None,
    train_size: Any = None,
    random_state: Any = None,
    shuffle: bool = True,
) -> list[Any]:
    """Split arrays into train and test rows (collective), as scikit-learn's function does.

    Returns ``[a_train, a_test, b_train, b_test, ...]``: DistArrays/DistFrames/DistSeries for
    distributed input (each on its input's owners, in row order, lined up with each other),
    NumPy/pandas/lists for local input in a one-process run. See the module docstring for
    how rows are chosen and how this differs from scikit-learn.
    """
    if not arrays:
        raise ValueError("At least one array required as input")
    from gpupart.containers.creation import runtime_or_init

    rt = runtime_or_init()
    items = [_Item(a, f"arrays[{i}]", rt.size) for i, a in enumerate(arrays)]
    lengths = [it.n for it in items]
    if len(set(lengths)) > 1:
        raise ValueError(f"Found input variables with inconsistent numbers of samples: {lengths}")
    n = lengths[0]
    n_train, n_test = _sizes(n, test_size, train_size)
    if not shuffle:

        def sides(xp: Any, start: int, stop: int) -> tuple[Any, Any]:
            idx = xp.arange(start, stop)
            return idx < n_train, (idx >= n_train) & (idx < n_train + n_test)

    else:
        offset = _mix_int(_seed(random_state, rt) * _GOLDEN)
        xp = rt.backend.xp
        ranges = items[0].counted_ranges(rt.rank)
        pieces = [_keys(xp, a, b, offset) for a, b in ranges]
        keys = xp.concatenate(pieces) if pieces else xp.zeros(0, dtype=np.uint64)
        low, high = _cutoffs(rt, xp, keys, [n_test, n_test + n_train], n)

        def sides(xp: Any, start: int, stop: int) -> tuple[Any, Any]:
            k = _keys(xp, start, stop, offset)
            test = k < np.uint64(low) if low is not None else xp.ones(k.shape, dtype=bool)
            below_high = k < np.uint64(high) if high is not None else xp.ones(k.shape, bool)
            return below_high & ~test, test

    out: list[Any] = []
    for it in items:
        out.extend(it.split(sides))
    return out
