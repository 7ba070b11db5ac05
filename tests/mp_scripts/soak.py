"""Soak: every rank runs 4 threads of mixed get / fetch / out= / cancel for SECONDS (argv[1]).

Tiles of many sizes (packed and alone) on every rank; each call checks every tile it gets.
Memory is tracked: RSS at half time and at the end (``@soak``).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np
from _mp import emit, expect

import gpupart

SECONDS = float(sys.argv[1])
SIZES = [0, 8, 100, 4000, 65536, 70000, 300_000, 2 << 20]
rt = gpupart.init(timeout=120, fetch_timeout=120)
rank, size = rt.rank, rt.size


def tile(owner: int, i: int) -> np.ndarray:
    n = SIZES[i % len(SIZES)] // 4
    return (np.arange(n, dtype=np.uint32) * 2654435761 + owner * 97 + i).astype(np.uint32)


N = 64
mine = [tile(rank, i) for i in range(N)]
table = rt.allgather([rt.put(t) for t in mine])
rt.barrier()


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


calls = [0] * 4
errors: list[str] = []


def work(k: int, stop: float) -> None:
    rng = np.random.default_rng([rank, k])
    while time.monotonic() < stop:
        picks = [
            (int(rng.integers(size)), int(rng.integers(N))) for _ in range(rng.integers(1, 200))
        ]
        handles = [table[o][i] for o, i in picks]
        want = [tile(o, i) for o, i in picks]
        mode = int(rng.integers(4))
        outs = [np.full(w.shape, 1, w.dtype) for w in want] if mode in (1, 3) else None
        try:
            if mode < 2:
                got = rt.get(handles, out=outs, timeout=60)
                ok = all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))
            else:
                transfer = rt.fetch(handles, out=outs)
                cancelled = {
                    j for j in range(len(picks)) if rng.integers(8) == 0 and transfer[j].cancel()
                }
                transfer.wait(timeout=60)
                ok = True
                for j, f in enumerate(transfer):
                    if j in cancelled:
                        ok &= f.cancelled() and (outs is None or bool((outs[j] == 1).all()))
                    else:
                        ok &= np.array_equal(f.result(), want[j])
            if not ok:
                errors.append(f"thread {k}: wrong contents (mode {mode})")
        except Exception as exc:  # reported, then the test fails
            errors.append(f"thread {k}: {type(exc).__name__}: {exc}")
            return
        calls[k] += 1


def run(seconds: float) -> None:
    stop = time.monotonic() + seconds
    threads = [threading.Thread(target=work, args=(k, stop)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# Memory is judged over the second half: the first fills pools, caches and the allocator's
# arenas (one per thread); a leak keeps growing after that.
run(SECONDS / 2)
warm = rss_mib()
run(SECONDS / 2)
end = rss_mib()
rt.barrier()
expect(not errors, "; ".join(errors[:5]))
emit("soak", rank=rank, calls=sum(calls), rss_warm=round(warm, 1), rss_end=round(end, 1))
rt.barrier()
emit("done", rank=rank, size=size)
rt.close()
