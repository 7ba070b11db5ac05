"""Exchanges under a small ``exchange_window`` (set by the test through the environment).

The exchange promises to keep at most ``exchange_window`` bytes of receive buffers allocated
but not yet filled. This script counts them from inside (it wraps the exchange's buffer
allocation and its wait for each fetch call: bytes allocated minus bytes delivered) and
emits ``@window`` per case with the most outstanding at any moment and the largest single
buffer (which must travel even when it alone is bigger than the window). Every piece is
checked as in ``exchange.py``; ``@done`` at the end.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from _mp import emit, expect
from exchange_data import array_piece, check, random_rows, rng

import gpupart

rt = gpupart.init()
rank, size = rt.rank, rt.size
window = rt.options.exchange_window
KiB, MiB = 1 << 10, 1 << 20

# Count receive buffers: allocated (private hook of the exchange) minus filled (the wait for
# each fetch call returns the filled buffers).
ex = rt._exchange
state = {"outstanding": 0, "most": 0, "largest": 0, "calls": 0}
allocate, wait = ex._allocate, ex._wait


def counted_allocate(*args: Any) -> Any:
    buf = allocate(*args)
    state["outstanding"] += buf.nbytes
    state["most"] = max(state["most"], state["outstanding"])
    state["largest"] = max(state["largest"], buf.nbytes)
    return buf


def counted_wait(*args: Any) -> list[Any]:
    values = wait(*args)
    state["calls"] += 1
    state["outstanding"] -= sum(v.nbytes for v in values)
    return values


ex._allocate, ex._wait = counted_allocate, counted_wait


def columns(case: str, s: int, d: int, count: int, low: int, high: int) -> tuple[dict, dict]:
    """``count`` float64 columns of ``low..high`` rows: many buffers per piece."""
    rows = int(rng(case, s, d).integers(low, high + 1))
    piece = {
        f"c{k}": array_piece(f"{case} {k}", s, d, np.float64, (rows,))[0] for k in range(count)
    }
    return piece, {name: col.copy() for name, col in piece.items()}


CASES = {
    "columns": lambda s, d: columns("columns", s, d, 8, 30_000, 80_000),  # 240-640 KB each
    "uneven": lambda s, d: array_piece(
        "uneven", s, d, np.uint8, (random_rows("uneven", s, d, 3 * MiB),)
    ),
    "pieces over the window": lambda s, d: array_piece("over", s, d, np.uint8, (4 * MiB,)),
    # From the first rank a consumer reads: 512 KiB; from the others: 4 MiB (over the window).
    "small, then over the window": lambda s, d: array_piece(
        "then", s, d, np.uint8, (512 * KiB if s == (d + 1) % size else 4 * MiB,)
    ),
    "small columns": lambda s, d: columns("small", s, d, 12, 2_000, 20_000),  # 16-160 KB
}

for case, make in CASES.items():
    for key in state:
        state[key] = 0
    pieces = [make(rank, d)[0] for d in range(size)]
    got = rt.exchange(pieces)
    expect(len(rt._store) == 0, f"{case}: {len(rt._store)} tiles still registered")
    expect(state["outstanding"] == 0, f"{case}: {state['outstanding']} bytes never delivered")
    received = sum(
        sum(c.nbytes for c in (p.values() if isinstance(p, dict) else [p]))
        for src, p in enumerate(got)
        if src != rank
    )
    for src in range(size):
        check(f"{case}: piece from rank {src}", got[src], make(src, rank)[1])
    emit(
        "window",
        rank=rank,
        case=case,
        window=window,
        most=state["most"],
        largest=state["largest"],
        received=received,
        calls=state["calls"],
    )

rt.barrier()
emit("done", rank=rank, size=size)
rt.close()
