"""Pieces for the exchange scripts, and what each must look like on arrival.

Every piece is derived from ``(case, source rank, destination rank)`` by a seeded generator,
so the receiver rebuilds what it must get without asking the sender. A piece is an array or a
dict of columns (:mod:`gpupart.tiles.columns`); what comes back is the same array (same dtype,
shape, bytes; F order kept for F-ordered input) or, for strings and binary, the ``pyarrow``
array that ``pyarrow.array`` makes of the input (a NumPy object array of ``str`` becomes
``string``). :func:`check` compares a received piece with :func:`expected`.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
from _mp import expect

#: Strings that exercise UTF-8, empty strings and a long value.
WORDS = ["", "a", "bc", "héllo", "日本語", "emoji 🎉", "x" * 300, "tab\tnew\nline", "ü"]
BLOBS = [b"", b"\x00", b"\xff\xfe", b"bytes", b"\x00" * 40]


def rng(case: str, src: int, dst: int, salt: int = 0) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(case.encode()), src, dst, salt, 20261201])


def fill(gen: np.random.Generator, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A C-ordered array of ``shape`` with random values of ``dtype`` (any fixed-width kind)."""
    dt = np.dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64))
    native = dt.newbyteorder("=")
    if dt.kind == "b":
        flat = gen.integers(0, 2, size).astype(bool)
    elif dt.kind in "iu":
        info = np.iinfo(native)
        flat = gen.integers(info.min, info.max, size, endpoint=True, dtype=native)
    elif dt.kind == "f":
        flat = gen.standard_normal(size).astype(native)
        flat[gen.random(size) < 0.05] = np.nan  # NaN: compared bytewise below
    elif dt.kind == "c":
        flat = (gen.standard_normal(size) + 1j * gen.standard_normal(size)).astype(native)
    elif dt.kind in "mM":
        flat = gen.integers(-(10**15), 10**15, size).astype(native)
        flat[gen.random(size) < 0.05] = np.array("NaT", dtype=native)
    elif dt.kind in "US":
        words = [w[: dt.itemsize // (4 if dt.kind == "U" else 1)] for w in WORDS if w.isascii()]
        flat = np.array([words[i] for i in gen.integers(0, len(words), size)], dtype=native)
    else:
        raise ValueError(f"fill: unsupported dtype {dt}")
    return flat.astype(dt).reshape(shape)


# -- pieces: each maker returns (piece, expected) for (src, dst) ------------------------------


def strings(gen: np.random.Generator, n: int, null_share: float = 0.15) -> list[str | None]:
    picks = gen.integers(0, len(WORDS), n)
    nulls = gen.random(n) < null_share
    return [None if null else WORDS[i] for i, null in zip(picks, nulls, strict=True)]


def blobs(gen: np.random.Generator, n: int) -> list[bytes | None]:
    picks = gen.integers(0, len(BLOBS), n)
    nulls = gen.random(n) < 0.15
    return [None if null else BLOBS[i] for i, null in zip(picks, nulls, strict=True)]


def table_piece(case: str, src: int, dst: int, rows: int | None = None) -> tuple[dict, dict]:
    """A dict of int, float (NaN), bool, 2-d, string (nulls, empty), large_string, binary and
    object-array columns; ``rows`` random (0 for some pairs) unless given."""
    gen = rng(case, src, dst)
    if rows is None:
        rows = 0 if (src + 2 * dst) % 4 == 1 else int(gen.integers(1, 3000))
    ids = np.arange(rows, dtype=np.int64) + 1_000_000 * src + 1000 * dst
    x = fill(gen, np.float64, (rows,))
    flag = fill(gen, bool, (rows,))
    vec = np.asfortranarray(fill(gen, np.float32, (rows, 3)))
    s = strings(gen, rows)
    s_wide = strings(gen, rows + 7)  # sliced below: the column does not start at offset 0
    large = strings(gen, rows, null_share=0.3)
    obj = [w if w is not None else "" for w in strings(gen, rows)]  # str objects, no None
    obj_nulls = strings(gen, rows)
    b = blobs(gen, rows)
    piece = {
        "id": ids,
        "x": x,
        "flag": flag,
        "vec": vec,
        "s": pa.array(s, pa.string()),
        "sliced": pa.array(s_wide, pa.string()).slice(5, rows),
        "large": pa.array(large, pa.large_string()),
        "obj": np.array(obj, dtype=object),
        "obj_nulls": np.array(obj_nulls, dtype=object),
        "bin": pa.array(b, pa.binary()),
    }
    want = {
        "id": ids.copy(),
        "x": x.copy(),
        "flag": flag.copy(),
        "vec": vec.copy(order="F"),
        "s": pa.array(s, pa.string()),
        "sliced": pa.array(s_wide[5 : 5 + rows], pa.string()),
        "large": pa.array(large, pa.large_string()),
        "obj": pa.array(obj, pa.string()),
        "obj_nulls": pa.array(obj_nulls, pa.string()),
        "bin": pa.array(b, pa.binary()),
    }
    return piece, want


def edge_strings_piece(case: str, src: int, dst: int) -> tuple[dict, dict]:
    """0-2 rows of only empty strings, only nulls, empty object arrays: no data bytes at all."""
    rows = (src + dst) % 3
    piece = {
        "empty": pa.array([""] * rows, pa.string()),
        "nulls": pa.array([None] * rows, pa.string()),
        "large_nulls": pa.array([None] * rows, pa.large_string()),
        "obj_empty": np.array([""] * rows, dtype=object),
        "obj_none": np.array([None] * rows, dtype=object),
        "bin_empty": pa.array([b""] * rows, pa.large_binary()),
        "n": np.full(rows, src, dtype=np.uint8),
    }
    want = {
        "empty": pa.array([""] * rows, pa.string()),
        "nulls": pa.array([None] * rows, pa.string()),
        "large_nulls": pa.array([None] * rows, pa.large_string()),
        "obj_empty": pa.array([""] * rows, pa.string()),
        "obj_none": pa.array([None] * rows, pa.string()),
        "bin_empty": pa.array([b""] * rows, pa.large_binary()),
        "n": np.full(rows, src, dtype=np.uint8),
    }
    return piece, want


def array_piece(
    case: str, src: int, dst: int, dtype: Any, shape: tuple[int, ...], layout: str = "C"
) -> tuple[np.ndarray, np.ndarray]:
    """An array of ``dtype`` and ``shape`` as ``layout`` ('C', 'F', 'strided', 'reversed')."""
    want = fill(rng(case, src, dst), dtype, shape)
    if layout == "C":
        piece = want.copy()
    elif layout == "F":
        piece = np.asfortranarray(want)
        want = piece.copy(order="F")
    elif layout == "strided":  # every other row of a wider array: not contiguous
        base = np.zeros((2 * shape[0], *shape[1:-1], shape[-1] + 1), dtype=want.dtype)
        base[::2, ..., 1:] = want
        piece = base[::2, ..., 1:]
        if shape[0] > 1:
            expect(not piece.flags.c_contiguous and not piece.flags.f_contiguous, "strided view")
    elif layout == "reversed":  # negative stride
        piece = want[::-1].copy()[::-1]
    else:
        raise ValueError(layout)
    return piece, want


def random_rows(case: str, src: int, dst: int, high: int) -> int:
    """A random length in ``0..high`` (0 for some pairs, so empty pieces mix with full ones)."""
    if (3 * src + dst) % 5 == 2:
        return 0
    return int(rng(case, src, dst, salt=1).integers(0, high + 1))


# -- checks -----------------------------------------------------------------------------------


def check_array(where: str, got: Any, want: np.ndarray) -> None:
    """Same type, dtype, shape, bytes; F order kept for F-ordered multi-element arrays."""
    expect(type(got) is np.ndarray, f"{where}: expected a NumPy array, got {type(got)}")
    expect(got.dtype == want.dtype, f"{where}: dtype {got.dtype} != {want.dtype}")
    expect(got.shape == want.shape, f"{where}: shape {got.shape} != {want.shape}")
    expect(got.tobytes() == want.tobytes(), f"{where}: contents differ from the sender's")
    if got.ndim > 1 and got.size > 1:
        fortran = want.flags.f_contiguous and not want.flags.c_contiguous
        flag = got.flags.f_contiguous if fortran else got.flags.c_contiguous
        expect(flag, f"{where}: expected a {'F' if fortran else 'C'}-contiguous array")


def check(where: str, got: Any, want: Any) -> None:
    """Compare a received piece (array, pyarrow array or dict of columns) with ``want``."""
    if isinstance(want, dict):
        expect(isinstance(got, dict), f"{where}: expected a dict, got {type(got)}")
        expect(list(got) == list(want), f"{where}: columns {list(got)} != {list(want)}")
        for name, column in want.items():
            check(f"{where}[{name!r}]", got[name], column)
    elif isinstance(want, pa.Array):
        expect(isinstance(got, pa.Array), f"{where}: expected a pyarrow array, got {type(got)}")
        expect(got.type == want.type, f"{where}: type {got.type} != {want.type}")
        got.validate(full=True)
        expect(got.null_count == want.null_count, f"{where}: {got.null_count} nulls")
        expect(got.equals(want), f"{where}: {got.to_pylist()[:5]}... != {want.to_pylist()[:5]}")
    else:
        check_array(where, got, want)


def scribble(pieces: list[Any], rank: int) -> None:
    """Overwrite every NumPy buffer sent to another rank (allowed once exchange returned)."""
    for d, piece in enumerate(pieces):
        if d == rank:
            continue
        for column in piece.values() if isinstance(piece, dict) else [piece]:
            if isinstance(column, np.ndarray) and column.dtype.kind not in "OT" and column.size:
                garbage = np.frombuffer(b"\xa5" * column.dtype.itemsize, dtype=column.dtype)
                np.copyto(column, garbage.reshape(()))


Maker = Callable[[int, int], tuple[Any, Any]]
