"""Key columns that the host and the simulated CUDA hash kernels must hash alike.

Imported by ``hashing_cudasim.py`` (in a fresh interpreter with the CUDA simulator) and by
``tests/test_kernels_hashing.py`` (the host side); small, since the simulator is slow.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

SEEDS = (0, 0xDEADBEEF)
INTS = (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)


def _ints(rng: np.random.Generator, dtype: Any) -> np.ndarray:
    info = np.iinfo(dtype)
    extremes = np.array([info.min, info.max, 0, 1, info.max // 2, info.min // 2 + 1], dtype)
    return np.concatenate([extremes, rng.integers(info.min, info.max, 10, dtype)])


def _floats(rng: np.random.Generator, dtype: Any) -> np.ndarray:
    bits = np.dtype(f"u{np.dtype(dtype).itemsize}")
    ones = np.array([-1], np.int64).astype(bits)  # all bits set: a negative NaN
    quiet_low = ones >> bits.type(1)  # all but the sign: a positive NaN with a full payload
    nans = np.concatenate([np.array([np.nan, -np.nan], dtype), ones.view(dtype)])
    special = np.array([0.0, -0.0, np.inf, -np.inf, 1.5, -2.25], dtype)
    randoms = rng.standard_normal(6).astype(dtype)
    return np.concatenate([nans, quiet_low.view(dtype), special, randoms])


def cases() -> dict[str, list[Any]]:
    """Name -> key columns; the same on every call."""
    rng = np.random.default_rng(7)
    words = ["", "a", "ß", "日本語", "🙂 emoji", "x" * 65, "long " * 40, None, "abc", "abcd" * 8]
    words += ["k" * n for n in range(41)]  # every length through xxHash64's 32/8/4/1-byte steps
    strings = pa.array(words)
    n = 12
    found: dict[str, list[Any]] = {f"int-{np.dtype(t).name}": [_ints(rng, t)] for t in INTS}
    for t in (np.float16, np.float32, np.float64):
        found[f"float-{np.dtype(t).name}"] = [_floats(rng, t)]
    found |= {
        "bool": [np.array([True, False, True, True])],
        "datetime64[ns]": [np.array(["2024-01-01", "NaT", "1970-01-01", "2262-04-11"], "M8[ns]")],
        "timedelta64[s]": [np.array([0, -1, 86400, "NaT"], "m8[s]")],
        "int with validity": [(np.arange(6), np.array([1, 0, 1, 0, 1, 1], bool))],
        "strings": [strings],
        "large strings": [strings.cast(pa.large_string())],
        "sliced strings": [strings.slice(3, 20)],
        "sliced numbers with nulls": [pa.array([1, None, 3, 4, None, 6, 7]).slice(1, 5)],
        "sliced bools with nulls": [pa.array([True, None, False, True, None, True]).slice(1, 4)],
        "chunked strings": [pa.chunked_array([strings.slice(0, 5), strings.slice(7, 4)])],
        "binary": [pa.array([b"\x00", b"", b"\xff" * 9, None])],
        "strings as layout": [
            (np.array([0, 0, 3, 3, 9], np.int64), np.frombuffer(b"abcdefghi", np.uint8), None)
        ],
        "multi": [
            rng.integers(-5, 5, n),
            pa.array([None if i % 5 == 0 else f"key-{i % 3}" for i in range(n)]),
            np.where(np.arange(n) % 4 == 0, np.nan, rng.standard_normal(n)),
            np.arange(n) % 2 == 0,
        ],
    }
    return found
