"""Helpers for the rank scripts (imported from the script's own directory).

Tile values are derived from ``(owner rank, index)`` so that a tile delivered to the wrong
place, a swapped pair or a corrupted byte is detected. Scripts report to the test with
:func:`emit` (``@kind {json}`` lines, see ``tests/conftest.py``) and check with
:func:`expect`, which raises with a message (scripts may run under ``python -O``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

#: (dtype, shape, layout) of the tiles every rank puts; layout 'C', 'F' or 'strided'
#: (a non-contiguous view, which ``put`` copies). Sizes span packed (<= 64 KiB) and alone.
SPECS: list[tuple[str, tuple[int, ...], str]] = [
    ("float64", (), "C"),  # 0-d
    ("complex128", (), "C"),  # 0-d complex
    ("int8", (0,), "C"),  # empty
    ("float64", (3, 0), "F"),  # empty 2-d
    ("bool", (17,), "C"),
    ("int8", (1000,), "C"),
    ("complex128", (7, 5), "C"),
    ("float64", (6, 9), "F"),
    ("float32", (5, 4), "strided"),
    ("bool", (4, 5), "F"),
    ("int64", (1, 1, 1), "C"),
    ("uint16", (32768,), "C"),  # exactly 64 KiB: still packed
    ("uint8", (65537,), "C"),  # one byte over: sent alone
    ("float64", (300, 300), "F"),  # ~700 KiB, F order, alone
    ("complex64", (129, 130), "strided"),  # ~131 KiB from a non-contiguous view
    ("int32", (40, 30), "strided"),  # small, non-contiguous
    ("float64", (1024, 1024), "C"),  # 8 MiB
]


def values(owner: int, index: int, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """A C-contiguous array of ``shape`` whose values depend on ``(owner, index)``."""
    rng = np.random.default_rng([owner, index, 12345])
    size = int(np.prod(shape, dtype=np.int64))
    dt = np.dtype(dtype)
    if dt == np.bool_:
        flat = rng.integers(0, 2, size).astype(bool)
    elif dt.kind in "iu":
        info = np.iinfo(dt)
        flat = rng.integers(info.min, info.max, size, endpoint=True, dtype=dt)
    elif dt.kind == "f":
        flat = rng.standard_normal(size).astype(dt)
    elif dt.kind == "c":
        flat = (rng.standard_normal(size) + 1j * rng.standard_normal(size)).astype(dt)
    else:
        raise ValueError(dtype)
    return flat.reshape(shape)


def make_tile(owner: int, index: int) -> np.ndarray:
    """Tile ``index`` of rank ``owner`` as it is passed to ``put`` (maybe non-contiguous)."""
    dtype, shape, layout = SPECS[index]
    if layout == "C":
        return values(owner, index, dtype, shape)
    if layout == "F":
        return np.asfortranarray(values(owner, index, dtype, shape))
    # strided: the wanted values sit at every other row of a wider array
    base = np.zeros((2 * shape[0], shape[1] + 1), dtype=dtype)
    base[::2, 1:] = values(owner, index, dtype, shape)
    view = base[::2, 1:]
    expect(not view.flags.c_contiguous and not view.flags.f_contiguous, "a strided view")
    return view


def expected(owner: int, index: int) -> np.ndarray:
    dtype, shape, _ = SPECS[index]
    return values(owner, index, dtype, shape)


def small_tile(owner: int, index: int) -> np.ndarray:
    """Small tiles (0-22 elements, six dtypes) for the many-tiles tests; cheap to build."""
    dtypes = ("uint8", "int16", "float32", "float64", "bool", "complex64")
    n = index % 23
    k = np.arange(1, n + 1, dtype=np.int64) * (owner * 7919 + index * 104729 + 1)
    return (k % 251).astype(dtypes[index % len(dtypes)])


def check_tile(where: str, got: Any, want: np.ndarray, order: str = "C") -> None:
    """Same type, shape, dtype, values (and memory order for multi-element 2-d+ tiles)."""
    expect(isinstance(got, np.ndarray), f"{where}: expected a NumPy array, got {type(got)}")
    expect(got.shape == want.shape, f"{where}: shape {got.shape} != {want.shape}")
    expect(got.dtype == want.dtype, f"{where}: dtype {got.dtype} != {want.dtype}")
    expect(np.array_equal(got, want), f"{where}: contents differ from the owner's tile")
    if got.ndim > 1 and got.size > 1:
        flag = got.flags.f_contiguous if order == "F" else got.flags.c_contiguous
        expect(flag, f"{where}: expected a {order}-contiguous array")


def expect(condition: object, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def raises(exc_type: type[BaseException], fn: Callable[[], Any], *needles: str) -> BaseException:
    """Call ``fn``; it must raise ``exc_type`` whose message contains every needle."""
    try:
        fn()
    except exc_type as exc:
        for needle in needles:
            expect(needle in str(exc), f"{exc_type.__name__} {str(exc)!r} lacks {needle!r}")
        return exc
    raise AssertionError(f"expected {exc_type.__name__} containing {needles}, nothing raised")


def records_in(output: str, kind: str) -> list[dict[str, Any]]:
    """The ``@kind {json}`` records in another process's output."""
    prefix = f"@{kind} "
    return [
        json.loads(line[len(prefix) :]) for line in output.splitlines() if line.startswith(prefix)
    ]


def emit(kind: str, **data: Any) -> None:
    print(f"@{kind} {json.dumps(data, sort_keys=True)}", flush=True)
