"""Transfer summary, rank-prefixed logs and NVTX ranges in a real job (any size).

Run with ``GPUPART_TRANSFER_SUMMARY=<path>`` and ``GPUPART_LOG_LEVEL=INFO``. A fake ``nvtx``
(``_fake_nvtx``) records every range. Each rank puts three tiles whose sizes depend on its
rank (two packed, one sent alone), gets every rank's tiles (its own are local: not counted),
fetches the next rank's first tile again with ``fetch``, and runs one exchange whose piece
sizes depend on (source, destination). Emits ``@moved`` (the bytes it asked each peer for),
logs through the ``gpupart`` loggers, closes (the last rank seconds after the others), then
emits ``@closed`` (the loggers as close left them) and ``@ranges`` (names and balance).
"""

from __future__ import annotations

import logging
import time

from _fake_nvtx import install

nvtx = install()  # before gpupart looks for nvtx

import numpy as np  # noqa: E402
from _mp import emit, expect  # noqa: E402

import gpupart  # noqa: E402


def tile_sizes(owner: int) -> list[int]:
    """Bytes of each tile rank ``owner`` puts: two packed (<= 64 KiB), one sent alone."""
    return [800 + 8 * owner, 24_000 + owner, 200_000 + 1000 * owner]


def piece_bytes(src: int, dst: int) -> int:
    """Bytes of the exchange piece rank ``src`` sends rank ``dst``."""
    return 1000 * (src + 1) + 10 * dst + 5


rt = gpupart.init()
rank, size = rt.rank, rt.size
handles = [rt.put(np.full(n, rank, np.uint8)) for n in tile_sizes(rank)]
table = rt.allgather(handles)
for owner in range(size):
    got = rt.get(table[owner], timeout=60)
    expect([a.nbytes for a in got] == tile_sizes(owner), f"sizes of rank {owner}'s tiles")
    expect(all(int(a[-1]) == owner for a in got), f"values of rank {owner}'s tiles")
after = (rank + 1) % size
again = rt.fetch(table[after][:1]).result(60)
expect(again[0].nbytes == tile_sizes(after)[0], "fetch of the next rank's first tile")
pieces = [np.full(piece_bytes(rank, d), rank, np.uint8) for d in range(size)]
received = rt.exchange(pieces)
expect([p.nbytes for p in received] == [piece_bytes(s, rank) for s in range(size)], "exchange")

moved = {}
for peer in range(size):
    if peer != rank:
        moved[peer] = sum(tile_sizes(peer)) + piece_bytes(peer, rank)
        if peer == after:
            moved[peer] += tile_sizes(peer)[0]
emit("moved", rank=rank, size=size, received=moved)

logging.getLogger("gpupart.fetch").info("probe from rank %d", rank)
gpupart.init(timeout=30.0)  # a real warning of gpupart.runtime: options ignored
ours = [
    logger
    for name, logger in logging.Logger.manager.loggerDict.items()
    if name.startswith("gpupart") and isinstance(logger, logging.Logger)
]
unfiltered = sorted(lg.name for lg in ours if not lg.filters)
expect(not unfiltered, f"gpupart loggers without the rank filter: {unfiltered}")

if rank == size - 1:
    time.sleep(4.0)  # ranks close apart: the summary's gather waits (collectives' timeout)
rt.close()
emit(
    "closed",
    rank=rank,
    filters=sorted(lg.name for lg in ours if lg.filters),
    handlers=len(logging.getLogger("gpupart").handlers),
    level=logging.getLogger("gpupart").level,
)
emit("ranges", rank=rank, names=nvtx.names(), unbalanced=nvtx.unbalanced())
