"""Runtime.exchange and Runtime.alltoall at any job size; every result checked.

Each rank sends ``pieces[d]`` to every rank ``d`` and checks what arrives against what
NumPy/pyarrow say the sender's piece is (``exchange_data``): empty pieces, uneven random
sizes, many dtypes, 2-d/3-d, F-ordered, strided and reversed arrays, dicts of int, float,
bool, string (nulls, empty strings, sliced), large_string, binary and object-array columns,
a 64 MiB piece, and several exchanges in a row. After every exchange no tile is left
registered here (each piece is released once its destination fetched it) and the sender
overwrites what it sent (the exchange returned, so every piece was fetched). Then
``alltoall`` of small objects, and wrong pieces on one rank: the same
:class:`~gpupart.CollectiveError` on every rank (``@refused``), then a good exchange.

Emits ``@refused`` per error case and ``@done`` with counts.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from _mp import emit, expect, raises
from exchange_data import (
    array_piece,
    check,
    edge_strings_piece,
    random_rows,
    rng,
    scribble,
    table_piece,
)

import gpupart

rt = gpupart.init()
rank, size = rt.rank, rt.size
MiB = 1 << 20
counts = {"exchanges": 0, "pieces": 0, "bytes_in": 0}


def nbytes(piece: Any) -> int:
    if isinstance(piece, dict):
        return sum(nbytes(c) for c in piece.values())
    return int(piece.nbytes) if hasattr(piece, "nbytes") else 0


def run_case(case: str, make) -> list[Any]:
    """Exchange ``make(rank, d)[0]`` for every ``d``; check ``make(s, rank)[1]`` from each ``s``."""
    pieces = [make(rank, d)[0] for d in range(size)]
    got = rt.exchange(pieces)
    scribble(pieces, rank)  # exchange returned: every piece sent from here was fetched
    expect(len(rt._store) == 0, f"{case}: {len(rt._store)} tiles still registered after it")
    expect(isinstance(got, list) and len(got) == size, f"{case}: expected a list of {size}")
    for src in range(size):
        check(f"{case}: piece from rank {src}", got[src], make(src, rank)[1])
        counts["bytes_in"] += nbytes(got[src]) if src != rank else 0
    counts["exchanges"] += 1
    counts["pieces"] += size
    return got


# -- arrays -----------------------------------------------------------------------------------

run_case("empty", lambda s, d: (np.empty(0), np.empty(0)))
run_case("empty 2-d", lambda s, d: (np.zeros((0, 6), np.int16), np.zeros((0, 6), np.int16)))
run_case("0-d", lambda s, d: array_piece("0-d", s, d, np.complex128, ()))
run_case(
    "uneven int32",
    lambda s, d: array_piece("uneven", s, d, np.int32, (random_rows("uneven", s, d, 200_000),)),
)
DTYPES = [
    "bool",
    "int8",
    "uint16",
    "int64",
    ">i4",  # byte-swapped
    "float16",
    "float32",
    ">f8",
    "complex64",
    "complex128",
    "datetime64[ns]",
    "datetime64[D]",
    "timedelta64[ms]",
    "<U5",
    "S4",
]
for dt in DTYPES:
    case = f"dtype {dt}"
    run_case(
        case,
        lambda s, d, dt=dt, case=case: array_piece(
            case, s, d, dt, (random_rows(case, s, d, 5000),)
        ),
    )
LAYOUTS = [
    ("2-d C", np.float64, 7, "C"),
    ("2-d F", np.complex128, 5, "F"),
    ("3-d F", np.int16, (3, 4), "F"),
    ("2-d bool F", np.bool_, 9, "F"),
    ("strided", np.float32, 4, "strided"),
    ("reversed", np.uint64, None, "reversed"),
]
for case, dt, tail, layout in LAYOUTS:
    extra = () if tail is None else tail if isinstance(tail, tuple) else (tail,)
    run_case(
        case,
        lambda s, d, case=case, dt=dt, extra=extra, layout=layout: array_piece(
            case, s, d, dt, (random_rows(case, s, d, 3000), *extra), layout
        ),
    )

# One piece of 64 MiB, to the next rank up (to itself at size 1); empty pieces elsewhere.
big_rows = 64 * MiB // 8


def big(s: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    if d != (s + 1) % size:
        return np.empty(0), np.empty(0)
    piece = np.arange(big_rows, dtype=np.float64) * (s + 1) + d
    return piece, piece  # the receiver builds its own copy to compare with


run_case("64 MiB", big)

# Several exchanges in a row, sizes changing every time.
for step in range(6):
    case = f"series {step}"
    run_case(
        case,
        lambda s, d, case=case: array_piece(
            case, s, d, np.uint8, (random_rows(case, s, d, 2 * MiB),)
        ),
    )

# -- dicts of columns -------------------------------------------------------------------------

for round_ in range(2):
    run_case(f"table {round_}", lambda s, d, r=round_: table_piece(f"table {r}", s, d))
run_case("table, no rows", lambda s, d: table_piece("table, no rows", s, d, rows=0))
run_case("strings without bytes", lambda s, d: edge_strings_piece("edge", s, d))
run_case("no columns", lambda s, d: ({}, {}))
run_case(
    "one string column",
    lambda s, d: (
        pa.array([f"{s}->{d}"] * (s + d), pa.large_string()),
        pa.array([f"{s}->{d}"] * (s + d), pa.large_string()),
    ),
)
# A mix: arrays for some ranks, dicts for others, in the same exchange.
run_case(
    "mixed kinds",
    lambda s, d: (
        table_piece("mixed", s, d)
        if (s + d) % 2
        else array_piece("mixed", s, d, np.int64, (random_rows("mixed", s, d, 1000), 2), "F")
    ),
)

# -- alltoall of small objects ----------------------------------------------------------------


def small(s: int, d: int) -> Any:
    gen = rng("alltoall", s, d)
    return {
        "from": s,
        "to": d,
        "text": "é" * d + "x" * s,
        "ints": [int(v) for v in gen.integers(0, 100, s + d)],
        "none": None,
        "tuple": (s, d, 2.5),
        "array": np.arange(s + d, dtype=np.int16),
    }


for _ in range(3):
    got = rt.alltoall([small(rank, d) for d in range(size)])
    expect(isinstance(got, list) and len(got) == size, "alltoall gives a list by rank")
    for src, item in enumerate(got):
        want = small(src, rank)
        expect(
            {k: v for k, v in item.items() if k != "array"}
            == {k: v for k, v in want.items() if k != "array"},
            f"alltoall from {src}: {item!r}",
        )
        expect(np.array_equal(item["array"], want["array"]), f"alltoall array from {src}")
        expect(item["array"].dtype == np.int16, f"alltoall dtype from {src}")
expect(rt.alltoall(list(range(size))) == [rank] * size, "alltoall of ints")
expect(
    rt.alltoall(tuple(f"{rank}{d}" for d in range(size))) == [f"{s}{rank}" for s in range(size)],
    "alltoall of a tuple of str",
)

# -- wrong pieces on one rank: the same CollectiveError everywhere, then a good exchange -------

bad = size - 1  # the rank that passes wrong pieces (0 at size 1)
good = [np.arange(3, dtype=np.int8) + rank for _ in range(size)]


def refused(case: str, mine: Any, *needles: str, call=None) -> None:
    """``mine`` on rank ``bad``, good pieces elsewhere: CollectiveError naming ``bad``."""
    call = call or rt.exchange
    err = raises(
        gpupart.CollectiveError,
        lambda: call(mine if rank == bad else good),
        f"rank {bad}",
        *needles,
    )
    expect(len(rt._store) == 0, f"{case}: {len(rt._store)} tiles left registered")
    emit("refused", rank=rank, case=case, message=str(err))
    got = rt.exchange(good)  # the job goes on
    expect(len(rt._store) == 0, f"after {case}: {len(rt._store)} tiles left registered")
    for src, piece in enumerate(got):
        check(f"after {case}: piece from {src}", piece, np.arange(3, dtype=np.int8) + src)


unequal = {"a": np.zeros(3), "b": pa.array(["x", "y"])}
refused("too many", [*good, good[0]], f"expected {size} pieces", f"found {size + 1}")
refused("too few", good[:-1], f"expected {size} pieces", f"found {size - 1}")
refused("not a sequence", {d: good[d] for d in range(size)}, "sequence", "dict")
refused("a list piece", [*good[:-1], [1, 2, 3]], f"pieces[{size - 1}]", "list")
refused("unequal columns", [*good[:-1], unequal], f"pieces[{size - 1}]['b']", "3 rows", "found 2")
refused("int arrow column", [*good[:-1], {"i": pa.array([1, 2])}], "int64")
refused("column name", [*good[:-1], {1: np.zeros(2)}], "str column names")
refused("2-d strings", [*good[:-1], np.array([["a"]], dtype=object)], "1-d")
refused("structured", [*good[:-1], np.zeros(2, dtype="i4,f8")], "structured")
# Two ranks wrong at once: one message naming both, the same on every rank.
if size > 1:
    err = raises(
        gpupart.CollectiveError,
        lambda: rt.exchange(good[:-1] if rank in (0, bad) else good),
        "rank 0",
        f"rank {bad}",
    )
    emit("refused", rank=rank, case="two ranks", message=str(err))
    expect(len(rt._store) == 0, "two ranks wrong: tiles left registered")
# alltoall: a wrong count, and (where it must be pickled) an object that cannot be sent.
refused("alltoall count", [0] * (size + 1), "expected", call=rt.alltoall)
if size > 1:
    refused("alltoall pickle", [lambda: 0] * size, "could not send", call=rt.alltoall)

rt.barrier()
emit("done", rank=rank, size=size, **counts)
rt.close()
